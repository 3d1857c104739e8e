"""An SHT3x on an I2C bus: single-shot measurements through smbus2.

    >>> from drivers.sht3x import SHT3x
    >>> sht = SHT3x(1, address=0x44, read_interval_s=5)   # /dev/i2c-1
    >>> sht.open()
    >>> readings = sht.poll()          # one short step of I/O
    >>> sht.close()

Each reading is one single-shot, high-repeatability measurement. Without
clock stretching (the default, and the right choice on a Raspberry Pi, whose
I2C controller mishandles stretching) the driver writes 0x2400, waits the
datasheet's maximum measurement time and reads 6 bytes, retrying a NACKed
read a few times. With ``clock_stretching=True`` it writes 0x2C06 and reads at
once; the chip holds the clock until the result is ready.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from typing import Any

from smbus2 import SMBus, i2c_msg

from ..base import DeviceError, DeviceGone, Reading
from ..sensirion import CRCError
from .codec import (
    ADDRESSES,
    BREAK,
    CLEAR_STATUS,
    HEATER_OFF,
    HEATER_ON,
    MEASURE_NO_STRETCH,
    MEASURE_STRETCH,
    MEASURE_TIME_S,
    READ_SERIAL,
    READ_STATUS,
    SOFT_RESET,
    SOFT_RESET_TIME_S,
    Measurement,
    Status,
    command,
    decode_measurement,
    decode_serial,
    decode_status,
)

#: The values an SHT3x reading carries, named as in docs/payload.md.
QUANTITIES = ("temp", "rh")

#: Extra time after the datasheet's maximum before the first read, and between read retries.
MARGIN_S = 0.0005
RETRY_WAIT_S = 0.005
READ_RETRIES = 3
#: Longest poll() sleeps while no measurement is due.
IDLE_WAIT_S = 0.25
#: errno values that mean the bus itself is gone (adapter removed, file closed).
GONE_ERRNOS = {errno.ENODEV, errno.ENXIO, errno.ENOENT, errno.EBADF, errno.ESHUTDOWN}

BusFactory = Callable[[Any], Any]


def bus_label(bus: Any) -> str:
    """How a bus is named in messages: its number or path, else the object's class."""
    return str(bus) if isinstance(bus, int | str) else type(bus).__name__


class SHT3x:
    """Host driver for one Sensirion SHT30/SHT31/SHT35 on I2C (implements Device).

    ``bus`` is a bus number (1 is the Pi's header pins 3 and 5) or a device
    path, opened with ``bus_factory`` on :meth:`open` and closed on
    :meth:`close`, or an smbus2-like object the caller owns (such as a
    :class:`drivers.emulation.i2c.FakeBus`). After ``gone_after`` measurements
    in a row that got no answer the driver raises :class:`DeviceGone` (the
    agent then re-opens it); a single failure, and any CRC error, is a
    :class:`DeviceError`.
    """

    def __init__(
        self,
        bus: Any = 1,
        *,
        address: int = 0x44,
        clock_stretching: bool = False,
        read_interval_s: float = 2.0,
        repeatability: str = "high",
        quantities: tuple[str, ...] = QUANTITIES,
        gone_after: int = 3,
        bus_factory: BusFactory = SMBus,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if address not in ADDRESSES:
            raise ValueError(f"SHT3x address must be 0x44 (ADDR low) or 0x45 (ADDR high), "
                             f"not {address:#04x}")
        if repeatability not in MEASURE_TIME_S:
            raise ValueError(f"repeatability must be one of {sorted(MEASURE_TIME_S)}")
        unknown = set(quantities) - set(QUANTITIES)
        if unknown or not quantities:
            raise ValueError(f"SHT3x quantities are {QUANTITIES}, got {quantities}")
        if read_interval_s <= 0 or gone_after < 1:
            raise ValueError("read_interval_s must be positive and gone_after at least 1")
        self.bus = bus
        self.address = address
        self.clock_stretching = clock_stretching
        self.read_interval_s = read_interval_s
        self.repeatability = repeatability
        self.quantities = tuple(quantities)
        self.gone_after = gone_after
        self._bus_factory = bus_factory
        self._owns_bus = False
        self._clock = clock
        self._wall = wall_clock
        self._sleep = sleep
        self._bus: Any = None
        self._next_read = 0.0
        self._no_answer = 0
        self.heater = False
        self.last_status: Status | None = None
        self.counters = {"readings": 0, "crc_errors": 0, "nacks": 0, "bus_errors": 0}

    @property
    def name(self) -> str:
        return f"SHT3x at 0x{self.address:02x} on bus {bus_label(self.bus)}"

    # -- lifecycle ------------------------------------------------------------------
    def open(self) -> None:
        """Open the bus, stop any periodic mode, soft-reset and check the status register."""
        self.close()
        if isinstance(self.bus, int | str):
            try:
                self._bus = self._bus_factory(self.bus)
            except OSError as exc:
                raise DeviceGone(f"cannot open I2C bus {self.bus}: {exc}") from exc
            self._owns_bus = True
        else:
            self._bus, self._owns_bus = self.bus, False  # the caller's bus object
        try:
            with self._errors("open", gone_on_nack=True):
                self._write(BREAK)
                self._sleep(0.001)
                self._write(SOFT_RESET)
                self._sleep(SOFT_RESET_TIME_S + MARGIN_S)
                self.heater = False
                self.read_status()
                self._write(CLEAR_STATUS)
        except DeviceError:
            self.close()
            raise
        self._no_answer = 0
        self._next_read = self._clock()

    def close(self) -> None:
        bus, self._bus = self._bus, None
        if bus is not None and self._owns_bus:
            try:
                bus.close()
            except OSError:
                pass

    @property
    def warming_up(self) -> bool:
        return False  # ready 1 ms after power-up

    # -- sampling -------------------------------------------------------------------
    def poll(self) -> list[Reading]:
        """Measure when a reading is due, else wait a little (at most 0.25 s)."""
        self._need_bus()
        now = self._clock()
        if now < self._next_read:
            self._sleep(min(self._next_read - now, IDLE_WAIT_S))
            return []
        self._next_read += self.read_interval_s
        if self._next_read <= now:  # late (errors, a slow bus): no burst to catch up
            self._next_read = now + self.read_interval_s
        m = self.measure()
        values = {"temp": m.temp, "rh": m.rh}
        return [Reading({q: values[q] for q in self.quantities}, self._clock(), self._wall())]

    def measure(self) -> Measurement:
        """One single-shot measurement now (blocks about 16 ms)."""
        self._need_bus()
        stretch = self.clock_stretching
        code = (MEASURE_STRETCH if stretch else MEASURE_NO_STRETCH)[self.repeatability]
        with self._errors("measurement"):
            self._write(code)
            if not stretch:
                self._sleep(MEASURE_TIME_S[self.repeatability] + MARGIN_S)
            data = self._read_retrying(6)
            m = decode_measurement(data)
        self.counters["readings"] += 1
        return m

    def stats(self) -> dict[str, int]:
        """Counters; ``bad_frames`` (replies that failed their CRC) is what the agent watches."""
        return {**self.counters, "bad_frames": self.counters["crc_errors"]}

    # -- other commands -------------------------------------------------------------
    def read_status(self) -> Status:
        """Read the status register (alert, heater, reset detected, command status)."""
        self._need_bus()
        with self._errors("status read"):
            self._write(READ_STATUS)
            status = decode_status(self._read_retrying(3))
        self.last_status = status
        return status

    def clear_status(self) -> None:
        self._need_bus()
        with self._errors("clear status"):
            self._write(CLEAR_STATUS)

    def set_heater(self, on: bool) -> None:
        """Switch the built-in heater (for condensation checks; it warms the sensor a few °C)."""
        self._need_bus()
        with self._errors("heater"):
            self._write(HEATER_ON if on else HEATER_OFF)
        self.heater = on

    def soft_reset(self) -> None:
        self._need_bus()
        with self._errors("soft reset"):
            self._write(SOFT_RESET)
            self._sleep(SOFT_RESET_TIME_S + MARGIN_S)
        self.heater = False

    def read_serial(self) -> int:
        self._need_bus()
        with self._errors("serial number read"):
            self._write(READ_SERIAL)
            return decode_serial(self._read_retrying(6))

    # -- I/O ------------------------------------------------------------------------
    def _need_bus(self) -> None:
        if self._bus is None:
            raise DeviceGone(f"{self.name} is not open")

    def _write(self, code: int) -> None:
        self._bus.i2c_rdwr(i2c_msg.write(self.address, command(code)))

    def _read(self, n: int) -> bytes:
        msg = i2c_msg.read(self.address, n)
        self._bus.i2c_rdwr(msg)
        return bytes(msg)

    def _read_retrying(self, n: int) -> bytes:
        """Read; a NACK means "not ready yet" (slow chip, low supply): wait and try again."""
        for attempt in range(READ_RETRIES + 1):
            try:
                return self._read(n)
            except OSError as exc:
                if exc.errno != errno.EREMOTEIO or attempt == READ_RETRIES:
                    raise
                self.counters["nacks"] += 1
                self._sleep(RETRY_WAIT_S)
        raise AssertionError("unreachable")

    def _errors(self, what: str, *, gone_on_nack: bool = False) -> I2CErrors:
        return I2CErrors(self, what, gone_on_nack)


class I2CErrors:
    """Context manager turning smbus2 and CRC exceptions into DeviceError/DeviceGone.

    ``dev`` needs ``name``, ``counters`` (with ``crc_errors``, ``nacks``,
    ``bus_errors``), ``gone_after``, ``_no_answer`` and ``close()``. A transfer
    that got no answer (NACK, bus error) counts towards ``gone_after`` failures in
    a row, which make a :class:`DeviceGone`; ``gone_on_nack`` makes the first one
    do so (used on open: nothing answers at that address). A vanished bus
    (ENODEV...) is gone at once; a CRC error is a :class:`DeviceError` and shows
    the chip is there. Success resets the count. Other exceptions pass through.
    """

    def __init__(self, dev: Any, what: str, gone_on_nack: bool = False) -> None:
        self.dev, self.what, self.gone_on_nack = dev, what, gone_on_nack

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> bool:
        dev = self.dev
        if exc is None:
            dev._no_answer = 0
            return False
        if isinstance(exc, CRCError):
            dev._no_answer = 0  # it answered, garbled
            dev.counters["crc_errors"] += 1
            raise DeviceError(f"{dev.name}: {self.what}: {exc}") from exc
        if isinstance(exc, OSError):
            if exc.errno in GONE_ERRNOS:
                dev.close()
                raise DeviceGone(f"{dev.name}: {self.what}: {exc}") from exc
            nacked = exc.errno == errno.EREMOTEIO
            dev.counters["nacks" if nacked else "bus_errors"] += 1
            dev._no_answer += 1
            if (nacked and self.gone_on_nack) or dev._no_answer >= dev.gone_after:
                dev._no_answer = 0
                raise DeviceGone(f"{dev.name}: {self.what}: no answer "
                                 f"({exc.strerror or exc})") from exc
            raise DeviceError(f"{dev.name}: {self.what}: {exc.strerror or exc}") from exc
        return False
