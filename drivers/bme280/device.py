"""A BME280 on an I2C bus: forced-mode measurements through smbus2.

    >>> from drivers.bme280 import BME280
    >>> bme = BME280(1, address=0x76, read_interval_s=5)   # /dev/i2c-1
    >>> bme.open()
    >>> readings = bme.poll()          # one short step of I/O
    >>> bme.close()

On open: check the chip id (0x60; a BMP280's 0x58 is refused with a clear
message), soft reset, wait for the NVM copy, read and check the trimming
parameters, write config in sleep mode. Each reading: ctrl_hum (0xF2) *then*
ctrl_meas (0xF4) with forced mode - humidity oversampling only takes effect at
a ctrl_meas write - wait the maximum conversion time, wait for the measuring
bit to clear, burst-read 0xF7..0xFE and compensate with Bosch's integer code.
"""

from __future__ import annotations

from typing import Any, Unpack

from ..base import DeviceError
from ..i2cdev import BusOptions, SingleShotDevice, check_address
from .codec import (
    ADDRESSES,
    CALIB_H_LEN,
    CALIB_TP_LEN,
    CHIP_ID,
    CHIP_NAMES,
    DATA_LEN,
    FILTER,
    MODE_FORCED,
    REG_CALIB_H,
    REG_CALIB_TP,
    REG_CHIP_ID,
    REG_CONFIG,
    REG_CTRL_HUM,
    REG_CTRL_MEAS,
    REG_DATA,
    REG_RESET,
    REG_STATUS,
    RESET_WORD,
    STATUS_IM_UPDATE,
    STATUS_MEASURING,
    Calibration,
    Measurement,
    config,
    ctrl_hum,
    ctrl_meas,
    decode_data,
    measurement_time_s,
)

#: The values a BME280 reading carries, named as in docs/payload.md.
QUANTITIES = ("temp", "rh", "pressure")

STARTUP_S = 0.002  # after power-on or soft reset
STATUS_WAIT_S = 0.001
STATUS_TRIES = 10
#: What answers with each chip id, as WrongChip says it (a BMP280 is the usual mix-up).
CHIP_SAYS = {cid: name + (" (pressure and temperature only, no humidity)"
                          if name.startswith("BMP280") else "")
             for cid, name in CHIP_NAMES.items()}


class BME280(SingleShotDevice):
    """Host driver for one Bosch BME280 on I2C (implements :class:`drivers.base.Device`).

    ``oversampling`` is the number of samples for temperature, pressure and
    humidity (1, 2, 4, 8 or 16); a quantity not in ``quantities`` is skipped
    (temperature is always measured: the others need it). ``iir_filter`` is the
    IIR coefficient (0 = off, as Bosch recommends for weather monitoring).
    ``bus``: a bus number or path (opened with ``bus_factory``, closed on
    :meth:`close`) or an smbus2-like object the caller owns.
    """

    chip = "BME280"
    QUANTITIES = QUANTITIES
    BAD_FRAMES = ("bad_data", "skipped")  # unusable data reads (there is no CRC)

    def __init__(
        self,
        bus: Any = 1,
        *,
        address: int = 0x76,
        read_interval_s: float = 2.0,
        oversampling: tuple[int, int, int] = (1, 1, 1),
        iir_filter: int = 0,
        quantities: tuple[str, ...] = QUANTITIES,
        **options: Unpack[BusOptions],
    ) -> None:
        check_address(self.chip, address, ADDRESSES, "SDO")
        super().__init__(bus, address=address, read_interval_s=read_interval_s,
                         quantities=quantities,
                         counters=("readings", "crc_errors", "nacks", "bus_errors", "skipped",
                                   "bad_data"), **options)
        if iir_filter not in (0, 2, 4, 8, 16):
            raise ValueError("iir_filter must be 0 (off), 2, 4, 8 or 16")
        os_t, os_p, os_h = oversampling
        if 0 in oversampling:
            raise ValueError("oversampling counts are 1, 2, 4, 8 or 16 (leave a quantity out "
                             "of quantities to skip it)")
        self.osrs = (os_t, os_p if "pressure" in quantities else 0,
                     os_h if "rh" in quantities else 0)
        self._ctrl_hum = ctrl_hum(self.osrs[2])  # validates the counts
        self._ctrl_meas = ctrl_meas(self.osrs[0], self.osrs[1], MODE_FORCED)
        self._config = config(0, FILTER.index(iir_filter))
        self.iir_filter = iir_filter
        self.calibration: Calibration | None = None
        self.chip_id: int | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def _setup(self) -> None:
        """On open: check the chip, reset it, read its calibration, configure it."""
        self.chip_id = self._check_chip_id(REG_CHIP_ID, CHIP_ID, names=CHIP_SAYS)
        with self._errors("reset"):
            self._bus.write_byte_data(self.address, REG_RESET, RESET_WORD)
            self._sleep(STARTUP_S)
            self._wait_status(STATUS_IM_UPDATE, "NVM copy after reset")
            tp = bytes(self._bus.read_i2c_block_data(self.address, REG_CALIB_TP,
                                                     CALIB_TP_LEN))
            h = bytes(self._bus.read_i2c_block_data(self.address, REG_CALIB_H, CALIB_H_LEN))
            cal = Calibration.from_registers(tp, h)
            problems = cal.problems()
            if problems:
                raise DeviceError(f"{self.name}: bad calibration: {'; '.join(problems)}")
            self.calibration = cal
            self._bus.write_byte_data(self.address, REG_CONFIG, self._config)  # in sleep

    # -- sampling ----------------------------------------------------------------------
    def measure(self) -> Measurement:
        """One forced-mode measurement now (blocks about 10 ms at 1x oversampling)."""
        self._need_bus()
        assert self.calibration is not None
        with self._errors("measurement"):
            if self.iir_filter:
                # config survives only while powered: rewrite it (sleep mode, so it is taken).
                self._bus.write_byte_data(self.address, REG_CONFIG, self._config)
            # ctrl_hum first: it only takes effect at the next write to ctrl_meas.
            self._bus.write_byte_data(self.address, REG_CTRL_HUM, self._ctrl_hum)
            self._bus.write_byte_data(self.address, REG_CTRL_MEAS, self._ctrl_meas)
            self._sleep(measurement_time_s(*self.osrs))
            self._wait_status(STATUS_MEASURING, "conversion")
            data = bytes(self._bus.read_i2c_block_data(self.address, REG_DATA, DATA_LEN))
        if data in (bytes(DATA_LEN), b"\xff" * DATA_LEN):
            self.counters["bad_data"] += 1
            raise DeviceError(f"{self.name}: data registers read {data.hex(' ')}: bus fault?")
        m = decode_data(data, self.calibration)
        wanted = {"temp", *self.quantities}
        skipped = wanted & set(m.skipped)
        if skipped:
            self.counters["skipped"] += 1
            raise DeviceError(f"{self.name}: {', '.join(sorted(skipped))} skipped by the chip "
                              f"(reset during the measurement?)")
        self.counters["readings"] += 1
        return m

    # -- I/O ---------------------------------------------------------------------------
    def _wait_status(self, bit: int, what: str) -> None:
        for _ in range(STATUS_TRIES):
            if not self._bus.read_byte_data(self.address, REG_STATUS) & bit:
                return
            self._sleep(STATUS_WAIT_S)
        raise DeviceError(f"{self.name}: {what} did not finish")

