"""The SPS30 itself, emulated: the chip's side of the I2C protocol, with no I/O.

:class:`SPS30Model` implements the :class:`drivers.emulation.i2c.I2CModel`
protocol, so a :class:`drivers.emulation.i2c.FakeBus` puts it behind smbus2's
interface::

    >>> from drivers.emulation.i2c import FakeBus
    >>> bus = FakeBus({0x69: SPS30Model()})

Behaviour follows sensor-protocols.md section 3:

* power-up (and :meth:`~SPS30Model.power_cycle`, ``0xD304`` reset) in idle mode;
* a write sets the pointer (16-bit command, no CRC) with CRC-checked argument
  words; a bad argument CRC, a wrong number of arguments, an unknown command, or
  a read of a command that returns nothing is NACKed;
* a write and a read in one transaction (repeated start) is NACKed, as the real
  chip does not take it;
* in measurement mode a new measurement every ``interval_s`` (1 s) after start;
  the data-ready flag is 0 until the first one, reading the values clears it;
  stopping measurement clears both; the first values after a start are zeros,
  then unsteady (the chip needs 8-30 s to settle);
* sleep (``0x1001``, idle mode only, firmware >= 2.0) turns the interface off:
  everything is NACKed, but any transfer activates the interface for 100 ms and
  a wake-up (``0x1103``) within that window wakes the chip into idle mode, so
  the usual "send wake-up twice, the first is NACKed" works, as does an empty
  write followed by wake-up;
* the auto-cleaning interval register (default 604800 s) takes a new value at
  once, but reads back the old value until the next reset or power cycle.

Timing: the chip does not stretch the clock (``stretch_s = 0``). The reference
does not say what it does with a transfer that arrives within a command's
execution time, so by default such transfers are answered; with
``strict_timing=True`` the model NACKs them, which tests use to prove that a
driver waits as long as the reference's table says. Which commands are allowed
in which mode (start only in idle mode, data-ready and values only while
measuring, fan cleaning only while measuring, sleep only in idle mode) follows
the Sensirion datasheet's mode table as we remember it: NACK otherwise.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..emulation.i2c import Nack
from ..pms5003.emulator import PMValues, coerce_values
from ..pms5003.emulator import default_source as pms_default_source
from . import codec as c
from .codec import Measurement

PRODUCT_TYPE = "00080000"
SERIAL_NUMBER = "3A7F1C20D94E6B85"  # made up; real ones are 16 hex digits
FIRMWARE_VERSION = (2, 2)
AUTO_CLEANING_INTERVAL_S = 604800  # one week, the factory default
INTERVAL_S = 1.0  # a new measurement every second
WAKE_WINDOW_S = 0.1  # interface active after a low pulse on SDA while asleep
FAN_CLEANING_S = 10.0

#: A source is called with the model's clock and returns the next values.
Source = Callable[[float], Measurement]
SourceLike = Callable[[float], Measurement | PMValues | tuple[float, ...]] | Iterable


def measurement_from_pm(pm1: float, pm25: float, pm10: float) -> Measurement:
    """Plausible SPS30 values from three mass concentrations (µg/m³).

    PM4.0 lies between PM2.5 and PM10; number concentrations (#/cm³) follow the
    fine fraction as on real urban data (e.g. mc 2.5/4.1/5.0/5.2 with nc 17.0,
    20.1, 20.4, 20.5, 20.5 and a typical size of 0.55 µm). All cumulative
    values are non-decreasing, as the chip's own self-test demands.
    """
    pm1 = max(float(pm1), 0.0)
    pm25 = max(float(pm25), pm1)
    pm10 = max(float(pm10), pm25)
    pm4 = pm25 + 0.6 * (pm10 - pm25)
    fine, mid = pm1, pm25 - pm1
    nc0_5 = 6.8 * fine
    nc1_0 = nc0_5 + 1.2 * fine + 1.5 * mid
    nc2_5 = nc1_0 + 0.2 * mid
    nc4_0 = nc2_5 + 0.1 * (pm4 - pm25)
    nc10 = nc4_0 + 0.05 * (pm10 - pm4)
    tps = 0.0 if pm10 <= 0 else 0.4 + 0.3 * (pm10 - pm1) / pm10
    return Measurement(pm1, pm25, pm4, pm10, nc0_5, nc1_0, nc2_5, nc4_0, nc10, tps)


def coerce_measurement(v: Measurement | PMValues | tuple[float, ...]) -> Measurement:
    """A :class:`Measurement`, 10 values, or PMS5003 values (atmospheric masses used)."""
    if isinstance(v, Measurement):
        return v
    if isinstance(v, PMValues):
        return measurement_from_pm(v.pm1, v.pm25, v.pm10)
    t = tuple(v)
    if len(t) == 10:
        return Measurement(*(float(x) for x in t))
    if len(t) == 3:
        return measurement_from_pm(*t)
    p = coerce_values(t)  # 6 or 12 PMS5003 values
    return measurement_from_pm(p.pm1, p.pm25, p.pm10)


def as_source(source: SourceLike) -> Source:
    """A callable or an iterable of values (anything :func:`coerce_measurement` takes)."""
    if callable(source):
        def call(now: float) -> Measurement:
            return coerce_measurement(source(now))

        call.description = getattr(source, "description", repr(source))  # type: ignore[attr-defined]
        return call
    it = iter(source)

    def _next(now: float) -> Measurement:
        return coerce_measurement(next(it))

    _next.description = f"iterator {source!r}"  # type: ignore[attr-defined]
    return _next


def default_source(seed: int | None = 0, speed: float | None = 1.0) -> Source:
    """The PMS5003 emulator's default values (recording or built-in day), as SPS30 values."""
    return as_source(pms_default_source(seed=seed, speed=speed))


@dataclass(frozen=True, slots=True)
class SentMeasurement:
    """Measured values the model returned to a read: when, what, and the bytes."""

    t: float
    values: Measurement
    raw: bytes
    warming_up: bool


class SPS30Model:
    """Chip side of a Sensirion SPS30 on I2C (implements ``I2CModel``).

    State is public for tests: :attr:`mode` (``"idle"``, ``"measuring"``,
    ``"sleep"``), :attr:`data_ready`, :attr:`auto_cleaning_interval_s`,
    :attr:`sent`, :attr:`stats`.
    """

    stretch_s = 0.0  # the SPS30 does not stretch the clock

    def __init__(
        self,
        source: SourceLike | None = None,
        *,
        product_type: str = PRODUCT_TYPE,
        serial_number: str = SERIAL_NUMBER,
        firmware: tuple[int, int] = FIRMWARE_VERSION,
        auto_cleaning_interval_s: int = AUTO_CLEANING_INTERVAL_S,
        interval_s: float = INTERVAL_S,
        zeros_s: float = 2.0,
        unsteady_s: float = 8.0,
        strict_timing: bool = False,
        seed: int | None = 0,
        keep_sent: int = 1000,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.source: Source = (as_source(source) if source is not None
                               else default_source(seed))
        self.product_type = product_type
        self.serial_number = serial_number
        self.firmware = firmware
        self.interval_s = interval_s
        self.zeros_s = zeros_s
        self.unsteady_s = unsteady_s
        self.strict_timing = strict_timing
        self.rng = random.Random(seed)
        self.sent: deque[SentMeasurement] = deque(maxlen=keep_sent)
        self.stats = {
            "transfers": 0, "nacks": 0, "repeated_starts": 0, "bad_crc": 0, "unknown": 0,
            "early": 0, "measurements": 0, "reads": 0, "resets": 0, "sleeps": 0, "wakes": 0,
            "fan_cleanings": 0,
        }
        # non-volatile
        self.auto_cleaning_interval_s = auto_cleaning_interval_s
        self.power_cycle(float("-inf"))
        self.stats["resets"] = 0

    # -- power ------------------------------------------------------------------------
    def power_cycle(self, now: float) -> None:
        """Power-up or reset: idle mode, nothing measured, pointer unset."""
        self.mode = "idle"
        self.fmt = c.FORMAT_FLOAT
        self.data_ready = False
        self.pointer: int | None = None
        self.latest: Measurement | None = None
        self._latest_warm = False
        self._started = float("-inf")
        self._next_measurement = float("inf")
        self._busy_until = now + 0.1 if now != float("-inf") else now
        self._wake_window_until = float("-inf")
        self._reported_interval = self.auto_cleaning_interval_s
        self.fan_cleaning_until = float("-inf")
        self.stats["resets"] += 1

    def warming_up(self, now: float) -> bool:
        return self.mode == "measuring" and now - self._started < self.unsteady_s

    # -- I2CModel -------------------------------------------------------------------------
    def transfer(self, parts: list[tuple[str, bytes | int]], now: float) -> list[bytes]:
        self.stats["transfers"] += 1
        try:
            return self._transfer(parts, now)
        except Nack:
            self.stats["nacks"] += 1
            raise

    def _transfer(self, parts: list[tuple[str, bytes | int]], now: float) -> list[bytes]:
        if self.mode == "sleep":
            return self._asleep(parts, now)
        if self.strict_timing and now < self._busy_until:
            self.stats["early"] += 1
            raise Nack
        if len(parts) != 1:
            # A repeated start (write then read in one transaction): the SPS30 refuses it.
            self.stats["repeated_starts"] += 1
            raise Nack
        self._advance(now)
        kind, val = parts[0]
        if kind == "w":
            self._write(bytes(val), now)  # type: ignore[arg-type]
            return []
        return [self._read(int(val), now)]  # type: ignore[arg-type]

    # -- internals -----------------------------------------------------------------------
    def _asleep(self, parts: list[tuple[str, bytes | int]], now: float) -> list[bytes]:
        """Interface off: NACK, but a transfer's START pulls SDA low and opens a window."""
        woke = (now <= self._wake_window_until and len(parts) == 1 and parts[0][0] == "w"
                and bytes(parts[0][1]) == c.wake_up())  # type: ignore[arg-type]
        if not woke:
            self._wake_window_until = now + WAKE_WINDOW_S
            raise Nack
        self.mode = "idle"
        self.pointer = None
        self._reported_interval = self.auto_cleaning_interval_s
        self._busy_until = now + c.exec_time(c.CMD_WAKE_UP)
        self.stats["wakes"] += 1
        return []

    def _advance(self, now: float) -> None:
        """Take the measurements due by ``now`` (only the latest one matters)."""
        if self.mode != "measuring" or now < self._next_measurement:
            return
        missed = int((now - self._next_measurement) // self.interval_s)
        t = self._next_measurement + missed * self.interval_s
        self._next_measurement = t + self.interval_s
        self.latest = self._measure(t)
        self._latest_warm = self.warming_up(t)
        self.data_ready = True
        self.stats["measurements"] += 1

    def _measure(self, t: float) -> Measurement:
        m = self.source(t)
        age = t - self._started
        if age < self.zeros_s:
            return Measurement(*([0.0] * 10))
        if age < self.unsteady_s:
            f = self.rng.uniform(0.3, 1.5)
            v = m.as_tuple()
            return Measurement(*(x * f for x in v[:9]), v[9])
        return m

    def _write(self, data: bytes, now: float) -> None:
        if not data:
            return  # START + address + STOP: acknowledged, changes nothing
        try:
            code, args = c.parse_write(data)
        except c.CRCError:
            self.stats["bad_crc"] += 1
            raise Nack from None
        except ValueError:
            raise Nack from None
        info = c.COMMANDS.get(code)
        if info is None or len(args) not in info.args:
            self.stats["unknown"] += 1
            raise Nack
        self._execute(code, args, now)
        self.pointer = code if info.reply and not args else None
        self._busy_until = now + c.exec_time(code, len(args))

    def _execute(self, code: int, args: list[int], now: float) -> None:
        measuring = self.mode == "measuring"
        if code == c.CMD_START_MEASUREMENT:
            if measuring or args[0] not in c.FORMATS:
                raise Nack
            self.mode, self.fmt = "measuring", args[0]
            self._started = now
            self._next_measurement = now + self.interval_s
            self.data_ready, self.latest = False, None
        elif code == c.CMD_STOP_MEASUREMENT:
            self.mode = "idle"
            self._next_measurement = float("inf")
            self.data_ready, self.latest = False, None
        elif code in (c.CMD_READ_DATA_READY, c.CMD_READ_MEASURED_VALUES):
            if not measuring:
                raise Nack
        elif code == c.CMD_SLEEP:
            if measuring or self.firmware < (2, 0):
                raise Nack
            self.mode = "sleep"
            self.stats["sleeps"] += 1
        elif code == c.CMD_WAKE_UP:
            self.stats["wake_ups_while_awake"] = self.stats.get("wake_ups_while_awake", 0) + 1
        elif code == c.CMD_START_FAN_CLEANING:
            if not measuring:
                raise Nack
            self.fan_cleaning_until = now + FAN_CLEANING_S
            self.stats["fan_cleanings"] += 1
        elif code == c.CMD_AUTO_CLEANING_INTERVAL and args:
            # Effective at once; reads return the old value until reset (reference).
            self.auto_cleaning_interval_s = args[0] << 16 | args[1]
        elif code == c.CMD_DEVICE_RESET:
            self.power_cycle(now)

    def _read(self, n: int, now: float) -> bytes:
        code = self.pointer
        if code is None:
            raise Nack  # no pointer, or a command that returns nothing
        self.stats["reads"] += 1
        if code == c.CMD_READ_DATA_READY:
            reply = c.encode_data_ready(self.data_ready)
        elif code == c.CMD_READ_MEASURED_VALUES:
            m = self.latest if self.latest is not None else Measurement(*([0.0] * 10))
            reply = c.encode_measurement(m, self.fmt)
            self.data_ready = False
            self.sent.append(SentMeasurement(now, m, reply, self._latest_warm))
        elif code == c.CMD_READ_PRODUCT_TYPE:
            reply = c.encode_string(self.product_type, 8)
        elif code == c.CMD_READ_SERIAL_NUMBER:
            reply = c.encode_string(self.serial_number, 32)
        elif code == c.CMD_READ_FIRMWARE_VERSION:
            reply = c.encode_firmware_version(*self.firmware)
        elif code == c.CMD_AUTO_CLEANING_INTERVAL:
            reply = c.encode_u32(self._reported_interval)
        elif code == c.CMD_READ_DEVICE_STATUS:
            reply = c.encode_u32(0)
        else:  # pragma: no cover - every command with a reply is handled above
            raise Nack
        # The host decides the length: a short read stops early, a long one reads idle-high bus.
        return reply[:n].ljust(n, b"\xff")
