"""The SHT3x itself, emulated: the chip's side of the I2C protocol, with no I/O.

Attach :class:`SHT3xModel` to a :class:`drivers.emulation.i2c.FakeBus`::

    >>> from drivers.emulation.i2c import FakeBus
    >>> bus = FakeBus({0x44: SHT3xModel(DiurnalClimate(seed=1))})

Behaviour (sensor-protocols.md section 4a, Sensirion SHT3x-DIS datasheet):

* power-up in single-shot idle; status register 0x8010 (alert pending, reset detected);
* single-shot commands: without clock stretching (0x2400/0x240B/0x2416) a read
  before the measurement time has elapsed is NACKed, and so is any other
  transfer while the chip measures; with clock stretching (0x2C06/0x2C0D/0x2C10)
  an early read is held: :attr:`SHT3xModel.stretch_s` is set to the remaining
  time and the bus turns that into elapsed time;
* a result or reply is read once; a read with nothing to read is NACKed;
* periodic mode (0x2032...0x2737, ART), fetch data (0xE000) and break (0x3093);
  single-shot commands are refused in periodic mode;
* status register: alert, heater, reset detected, command and write-checksum
  status; clear status (0x3041); heater on/off (0x306D/0x3066) warms the
  sensor by a few °C, which lowers its relative humidity accordingly;
* soft reset (0x30A2) and the general-call reset: busy for 1.5 ms, then idle,
  heater off, status as after power-up.

Values come from a *climate source* (:mod:`drivers.emulation.climate`, shared
with the BME280 emulator): :class:`DiurnalClimate` makes up a plausible day of
outdoor temperature, humidity and pressure. The sources are re-exported here.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import NoReturn

from ..emulation.climate import (
    Climate,
    ClimateLike,
    ClimateSource,
    DiurnalClimate,
    as_climate_source,
    constant_climate,
    rh_at,
    saturation_hpa,
)
from ..emulation.i2c import Nack
from ..sensirion import crc8, pack_words
from .codec import (
    ART,
    BREAK,
    CLEAR_STATUS,
    FETCH_DATA,
    HEATER_OFF,
    HEATER_ON,
    MEASURE_TIME_S,
    PERIODIC,
    POWER_UP_TIME_S,
    READ_SERIAL,
    READ_SERIAL_STRETCH,
    READ_STATUS,
    SOFT_RESET,
    SOFT_RESET_TIME_S,
    ST_CHECKSUM,
    ST_CLEARABLE,
    ST_COMMAND,
    ST_HEATER,
    ST_POWER_UP,
    raw_to_rh,
    raw_to_temp,
    repeatability,
    rh_to_raw,
    stretches,
    temp_to_raw,
)

__all__ = [  # the climate sources are re-exported for compatibility
    "Climate",
    "ClimateLike",
    "ClimateSource",
    "DiurnalClimate",
    "Measured",
    "SHT3xModel",
    "as_climate_source",
    "constant_climate",
    "rh_at",
    "saturation_hpa",
]

# -- the chip ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measured:
    """What the model measured and sent: when, the values encoded, and the air's truth."""

    t: float
    temp: float  # as encoded (after the heater's warming and rounding to the raw word)
    rh: float
    raw_t: int
    raw_rh: int
    heater: bool
    truth: Climate


class SHT3xModel:
    """Device side of an SHT3x (implements :class:`drivers.emulation.i2c.I2CModel`).

    ``heater_delta_c`` is how much the heater warms the sensor. ``measure_time_s``
    overrides the single-shot durations (by repeatability) of the datasheet.
    State (:attr:`status`, :attr:`heater`, :attr:`mode`, :attr:`measured`,
    :attr:`stats`) is public so tests and the simulator can look at it.
    """

    def __init__(
        self,
        source: ClimateLike | None = None,
        *,
        seed: int | None = 0,
        heater_delta_c: float = 3.0,
        measure_time_s: dict[str, float] | None = None,
        serial: int = 0x0A1B2C3D,
        keep: int = 1000,
    ) -> None:
        self.source = as_climate_source(source, seed)
        self.heater_delta_c = heater_delta_c
        self.measure_time_s = {**MEASURE_TIME_S, **(measure_time_s or {})}
        self.serial = serial & 0xFFFFFFFF
        self.measured: deque[Measured] = deque(maxlen=keep)
        self.stats = {"transfers": 0, "commands": 0, "measurements": 0, "nacks": 0,
                      "stretches": 0, "bad_commands": 0, "bad_checksums": 0, "resets": 0}
        self.stretch_s = 0.0
        self.status = ST_POWER_UP
        self.heater = False
        self.mode = "idle"  # or "periodic"
        self._busy_until = float("-inf")
        self._pending: tuple[float, bool, bytes] | None = None  # ready at, stretch, reply
        self._reply: bytes | None = None  # status or serial number, read once
        self._periodic: tuple[float, float] | None = None  # start, measurements per second
        self._fetched = 0

    # -- I2CModel ---------------------------------------------------------------------
    def transfer(self, parts: list[tuple[str, bytes | int]], now: float) -> list[bytes]:
        self.stretch_s = 0.0
        self.stats["transfers"] += 1
        if now < self._busy_until:
            self._nack()  # powering up or resetting
        out: list[bytes] = []
        for kind, val in parts:
            if self._pending is not None and now < self._pending[0]:
                ready, stretch, _ = self._pending
                if kind == "r" and stretch:
                    # Clock stretching: the chip holds SCL low until the result is ready.
                    self.stats["stretches"] += 1
                    self.stretch_s = ready - now
                else:
                    self._nack()  # measuring: the chip does not acknowledge
            if kind == "w":
                self._write(bytes(val), now)  # type: ignore[arg-type]
            else:
                out.append(self._read(int(val), now))  # type: ignore[arg-type]
        return out

    # -- power and the general call -------------------------------------------------------
    def power_cycle(self, now: float) -> None:
        """Supply cut and restored (brown-out): idle, heater off, status 0x8010."""
        self._reset(now, POWER_UP_TIME_S)

    def general_call_reset(self, now: float) -> None:
        """Address 0x00, byte 0x06: resets every chip on the bus that supports it."""
        self._reset(now, SOFT_RESET_TIME_S)

    # -- internals ------------------------------------------------------------------------
    def _nack(self) -> NoReturn:
        self.stats["nacks"] += 1
        raise Nack()

    def _reset(self, now: float, busy_s: float) -> None:
        self.status = ST_POWER_UP
        self.heater = False
        self.mode = "idle"
        self._pending = None
        self._reply = None
        self._periodic = None
        self._busy_until = now + busy_s
        self.stats["resets"] += 1

    def _write(self, data: bytes, now: float) -> None:
        if not data:
            return  # an address probe: acknowledged, nothing happens
        if len(data) not in (2, 5):
            self._bad_command()
            return
        if len(data) == 5:
            if crc8(data[2:4]) != data[4]:
                self.stats["bad_checksums"] += 1
                self.status |= ST_CHECKSUM | ST_COMMAND
                return
            # Commands with an argument (alert limits) are not modelled.
            self._bad_command()
            return
        self.status &= ~(ST_CHECKSUM | ST_COMMAND)
        self._command(int.from_bytes(data, "big"), now)

    def _bad_command(self) -> None:
        self.stats["bad_commands"] += 1
        self.status |= ST_COMMAND

    def _command(self, code: int, now: float) -> None:
        self.stats["commands"] += 1
        self._reply = None
        rep = repeatability(code)
        periodic = self.mode == "periodic"
        if rep is not None and not periodic:
            ready = now + self.measure_time_s[rep]
            self._pending = (ready, stretches(code), self._measure(now))
        elif code in PERIODIC.values() or code == ART:
            mps = 4.0 if code == ART else next(m for m, c in PERIODIC.items() if c == code)
            self.mode = "periodic"
            self._periodic = (now, mps)
            self._fetched = 0
        elif code == FETCH_DATA and periodic and self._periodic is not None:
            start, mps = self._periodic
            done = math.floor((now - start) * mps)
            if done > self._fetched:
                self._fetched = done
                self._reply = self._measure(start + done / mps)
        elif code == BREAK:
            self.mode = "idle"
            self._periodic = None
        elif code == SOFT_RESET:
            self._reset(now, SOFT_RESET_TIME_S)
        elif code in (HEATER_ON, HEATER_OFF):
            self.heater = code == HEATER_ON
            self.status = self.status | ST_HEATER if self.heater else self.status & ~ST_HEATER
        elif code == READ_STATUS:
            self._reply = pack_words([self.status])
        elif code == CLEAR_STATUS:
            self.status &= ~ST_CLEARABLE
        elif code in (READ_SERIAL, READ_SERIAL_STRETCH) and not periodic:
            self._reply = pack_words([self.serial >> 16, self.serial & 0xFFFF])
        else:
            self.stats["commands"] -= 1
            self._bad_command()

    def _read(self, n: int, now: float) -> bytes:
        if self._pending is not None:
            reply = self._pending[2]
            self._pending = None
        elif self._reply is not None:
            reply, self._reply = self._reply, None
        else:
            self._nack()  # nothing to read
        # The host may stop early (T only); past the data the bus reads 0xFF.
        return (reply + b"\xff" * n)[:n]

    def _measure(self, now: float) -> bytes:
        truth = self.source(now)
        temp, rh = truth.temp, truth.rh
        if self.heater:
            rh = rh_at(rh, temp, temp + self.heater_delta_c)
            temp += self.heater_delta_c
        raw_t, raw_rh = temp_to_raw(temp), rh_to_raw(rh)
        self.measured.append(Measured(now, raw_to_temp(raw_t), raw_to_rh(raw_rh), raw_t, raw_rh,
                                      self.heater, truth))
        self.stats["measurements"] += 1
        return pack_words([raw_t, raw_rh])
