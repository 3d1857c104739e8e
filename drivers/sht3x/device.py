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

from typing import Any, Unpack

from ..i2cdev import (
    GONE_ERRNOS,
    IDLE_WAIT_S,
    BusFactory,
    BusOptions,
    I2CErrors,
    SingleShotDevice,
    bus_label,
    check_address,
)
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

# GONE_ERRNOS, IDLE_WAIT_S, BusFactory, I2CErrors and bus_label live in drivers.i2cdev now.
__all__ = ["GONE_ERRNOS", "IDLE_WAIT_S", "QUANTITIES", "BusFactory", "I2CErrors", "SHT3x",
           "bus_label"]

#: The values an SHT3x reading carries, named as in docs/payload.md.
QUANTITIES = ("temp", "rh")

#: Extra time after the datasheet's maximum before the first read.
MARGIN_S = 0.0005


class SHT3x(SingleShotDevice):
    """Host driver for one Sensirion SHT30/SHT31/SHT35 on I2C (implements Device).

    ``bus`` is a bus number (1 is the Pi's header pins 3 and 5) or a device
    path, opened with ``bus_factory`` on :meth:`open` and closed on
    :meth:`close`, or an smbus2-like object the caller owns (such as a
    :class:`drivers.emulation.i2c.FakeBus`). After ``gone_after`` measurements
    in a row that got no answer the driver raises :class:`DeviceGone` (the
    agent then re-opens it); a single failure, and any CRC error, is a
    :class:`DeviceError`.
    """

    chip = "SHT3x"
    QUANTITIES = QUANTITIES

    def __init__(
        self,
        bus: Any = 1,
        *,
        address: int = 0x44,
        clock_stretching: bool = False,
        read_interval_s: float = 2.0,
        repeatability: str = "high",
        quantities: tuple[str, ...] = QUANTITIES,
        **options: Unpack[BusOptions],
    ) -> None:
        check_address(self.chip, address, ADDRESSES, "ADDR")
        if repeatability not in MEASURE_TIME_S:
            raise ValueError(f"repeatability must be one of {sorted(MEASURE_TIME_S)}")
        super().__init__(bus, address=address, read_interval_s=read_interval_s,
                         quantities=quantities,
                         counters=("readings", "crc_errors", "nacks", "bus_errors"), **options)
        self.clock_stretching = clock_stretching
        self.repeatability = repeatability
        self.heater = False
        self.last_status: Status | None = None

    # -- lifecycle ------------------------------------------------------------------
    def _setup(self) -> None:
        """On open: stop any periodic mode, soft-reset and check the status register."""
        with self._errors("open", gone_on_nack=True):
            self._command(BREAK)
            self._sleep(0.001)
            self._command(SOFT_RESET)
            self._sleep(SOFT_RESET_TIME_S + MARGIN_S)
            self.heater = False
            self.read_status()
            self._command(CLEAR_STATUS)

    # -- sampling -------------------------------------------------------------------
    def measure(self) -> Measurement:
        """One single-shot measurement now (blocks about 16 ms)."""
        self._need_bus()
        stretch = self.clock_stretching
        code = (MEASURE_STRETCH if stretch else MEASURE_NO_STRETCH)[self.repeatability]
        with self._errors("measurement"):
            self._command(code)
            if not stretch:
                self._sleep(MEASURE_TIME_S[self.repeatability] + MARGIN_S)
            m = decode_measurement(self._read_retrying(6))
        self.counters["readings"] += 1
        return m

    # -- other commands -------------------------------------------------------------
    def read_status(self) -> Status:
        """Read the status register (alert, heater, reset detected, command status)."""
        self._need_bus()
        with self._errors("status read"):
            self._command(READ_STATUS)
            status = decode_status(self._read_retrying(3))
        self.last_status = status
        return status

    def clear_status(self) -> None:
        self._need_bus()
        with self._errors("clear status"):
            self._command(CLEAR_STATUS)

    def set_heater(self, on: bool) -> None:
        """Switch the built-in heater (for condensation checks; it warms the sensor a few °C)."""
        self._need_bus()
        with self._errors("heater"):
            self._command(HEATER_ON if on else HEATER_OFF)
        self.heater = on

    def soft_reset(self) -> None:
        self._need_bus()
        with self._errors("soft reset"):
            self._command(SOFT_RESET)
            self._sleep(SOFT_RESET_TIME_S + MARGIN_S)
        self.heater = False

    def read_serial(self) -> int:
        self._need_bus()
        with self._errors("serial number read"):
            self._command(READ_SERIAL)
            return decode_serial(self._read_retrying(6))

    # -- I/O ------------------------------------------------------------------------
    def _command(self, code: int) -> None:
        self._write(command(code))
