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

Values come from a *climate source*: :class:`DiurnalClimate` makes up a
plausible day of outdoor temperature, humidity and pressure (the BME280
emulator uses the same sources).
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

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

# -- climate sources ------------------------------------------------------------------


class Climate(NamedTuple):
    """Air at the sensor: °C, %RH, hPa."""

    temp: float
    rh: float
    pressure: float = 1013.25


#: A source is called with the model's clock and returns the air's state.
ClimateSource = Callable[[float], Climate]
ClimateLike = ClimateSource | Callable[[float], tuple[float, ...]] | Iterable[tuple[float, ...]]


def saturation_hpa(temp_c: float) -> float:
    """Saturation vapour pressure over water (Magnus, WMO coefficients), hPa."""
    return 6.112 * math.exp(17.62 * temp_c / (243.12 + temp_c))


def rh_at(rh: float, temp_c: float, new_temp_c: float) -> float:
    """Relative humidity of the same air warmed (or cooled) from temp_c to new_temp_c."""
    return min(100.0, rh * saturation_hpa(temp_c) / saturation_hpa(new_temp_c))


def _ou(x: float, dt: float, tau: float, sigma: float, rng: random.Random) -> float:
    """One exact step of an Ornstein-Uhlenbeck process (mean 0, stationary sd ``sigma``)."""
    if dt <= 0:
        return x
    a = math.exp(-dt / tau)
    return x * a + sigma * math.sqrt(1 - a * a) * rng.gauss(0.0, 1.0)


class DiurnalClimate:
    """Made-up but plausible outdoor air: a daily cycle, weather drift and noise.

    Temperature follows a skewed daily curve (coldest near 5 am, warmest near
    3 pm, ``swing_c`` apart) around ``mean_c``, plus weather drift over hours
    and sensor-scale noise over a minute. The dew point drifts slowly a few
    degrees below the mean, so relative humidity runs opposite to temperature
    (high at dawn, low in the afternoon), as it does outside. Pressure drifts
    with the weather around ``pressure_hpa`` and carries the semidiurnal
    atmospheric tide (about ±0.6 hPa, peaks near 10 am and 10 pm). Seeded, so
    a run can be repeated; ``speed`` makes simulated time run faster.
    """

    def __init__(
        self,
        seed: int | None = 0,
        *,
        mean_c: float = 12.0,
        swing_c: float = 8.0,
        dew_point_depression_c: float = 4.0,
        pressure_hpa: float = 1013.25,
        noise_c: float = 0.05,
        noise_rh: float = 0.3,
        start_hour: float | None = None,
        speed: float = 1.0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.seed = seed
        self.rng = random.Random(seed)
        self.mean_c = mean_c
        self.swing_c = swing_c
        self.dew_point_depression_c = dew_point_depression_c
        self.pressure_hpa = pressure_hpa
        self.noise_c = noise_c
        self.noise_rh = noise_rh
        self.speed = speed
        if start_hour is None:
            lt = time.localtime()
            start_hour = lt.tm_hour + lt.tm_min / 60 + lt.tm_sec / 3600
        self.start_hour = start_hour % 24
        self._t0: float | None = None
        self._last = 0.0
        self._weather_t = 0.0  # °C, hours
        self._weather_td = 0.0  # °C, hours
        self._weather_p = 0.0  # hPa, days
        self._noise_t = 0.0  # °C, a minute
        self._noise_rh = 0.0  # %RH, a minute

    @property
    def description(self) -> str:
        return (f"built-in diurnal climate (seed {self.seed}, {self.mean_c:g} ± "
                f"{self.swing_c / 2:g} °C, speed x{self.speed:g})")

    def cycle(self, hour: float) -> float:
        """Daily temperature shape, -1 (about 5 am) ... +1 (about 3 pm)."""
        x = 2 * math.pi * (hour - 15.0) / 24.0
        # Fundamental plus a second harmonic: a quick morning rise, a slow evening fall.
        return (math.cos(x) + 0.25 * math.cos(2 * x + 0.9)) / 1.13

    def __call__(self, now: float) -> Climate:
        if self._t0 is None:
            self._t0 = self._last = now
        dt = max(0.0, now - self._last) * self.speed
        self._last = now
        rng = self.rng
        self._weather_t = _ou(self._weather_t, dt, 8 * 3600.0, 1.5, rng)
        self._weather_td = _ou(self._weather_td, dt, 6 * 3600.0, 1.2, rng)
        self._weather_p = _ou(self._weather_p, dt, 36 * 3600.0, 6.0, rng)
        self._noise_t = _ou(self._noise_t, dt, 60.0, self.noise_c, rng)
        self._noise_rh = _ou(self._noise_rh, dt, 60.0, self.noise_rh, rng)
        hour = (self.start_hour + (now - self._t0) * self.speed / 3600.0) % 24
        temp = self.mean_c + self.swing_c / 2 * self.cycle(hour) + self._weather_t + self._noise_t
        dew = self.mean_c - self.dew_point_depression_c + self._weather_td
        dew = min(dew, temp)
        rh = 100.0 * saturation_hpa(dew) / saturation_hpa(temp) + self._noise_rh
        tide = 0.6 * math.cos(4 * math.pi * (hour - 10.0) / 24.0)
        pressure = self.pressure_hpa + self._weather_p + tide
        return Climate(temp, max(0.0, min(100.0, rh)), pressure)


def constant_climate(temp: float = 20.0, rh: float = 50.0,
                     pressure: float = 1013.25) -> ClimateSource:
    """A source that never changes (for tests)."""
    value = Climate(temp, rh, pressure)
    return lambda now: value


def _climate(v: Climate | tuple[float, ...]) -> Climate:
    if isinstance(v, Climate):
        return v
    if len(v) not in (2, 3):
        raise ValueError(f"a climate value is (temp, rh[, pressure]), got {v!r}")
    return Climate(*(float(x) for x in v))


def as_climate_source(src: ClimateLike | None, seed: int | None = 0) -> ClimateSource:
    """Accept a source, a function returning (temp, rh[, pressure]), or an iterable of
    such tuples (the last value repeats when it runs out); None: :class:`DiurnalClimate`."""
    if src is None:
        return DiurnalClimate(seed)
    if callable(src):
        fn = src
        return lambda now: _climate(fn(now))
    it: Iterator[tuple[float, ...]] = iter(src)
    last: list[Climate] = []

    def source(now: float) -> Climate:
        try:
            last[:] = [_climate(next(it))]
        except StopIteration:
            if not last:
                raise ValueError("climate source is empty") from None
        return last[0]

    return source


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
