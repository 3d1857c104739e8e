"""An ADXL345 on an I2C bus: streaming through its FIFO with smbus2.

    >>> from drivers.adxl345 import ADXL345
    >>> acc = ADXL345(1, address=0x53, rate_hz=50, range_g=16)   # /dev/i2c-1
    >>> acc.open()
    >>> readings = acc.poll()            # one short step of I/O
    >>> samples = acc.drain_samples()    # every (t, ax, ay, az) since the last drain
    >>> acc.close()

On open: read DEVID (0xE5; anything else is refused with the value read), put
the chip in standby, write DATA_FORMAT (FULL_RES, the range), BW_RATE (the
rate), FIFO_CTL bypass (empties the FIFO) then stream, and POWER_CTL measure -
configuring in standby, then measuring, as the datasheet recommends. Each FIFO
read: INT_SOURCE (overrun bit), FIFO_STATUS (entries), then one 6-byte burst
from 0x32 per entry (each read pops one; the register pointer cannot run past
0x37 into the next entry). See :mod:`drivers.families.accel_fifo` for the poll loop.
"""

from __future__ import annotations

from typing import Any, Unpack

from ..families.accel import QUANTITIES
from ..families.accel_fifo import FifoAccelerometer
from ..i2cdev import BusOptions, check_address
from .codec import (
    ADDRESSES,
    DATA_LEN,
    DEVID,
    ENTRIES_MASK,
    FIFO_BYPASS,
    FIFO_DEPTH,
    FIFO_STREAM,
    INT_OVERRUN,
    POWER_MEASURE,
    REG_BW_RATE,
    REG_DATA,
    REG_DATA_FORMAT,
    REG_DEVID,
    REG_FIFO_CTL,
    REG_FIFO_STATUS,
    REG_INT_SOURCE,
    REG_POWER_CTL,
    bw_rate,
    data_format,
    decode_xyz,
    fifo_ctl,
)

#: Rates the driver accepts: 12.5 Hz and below are too slow for a fall, 800 Hz and more
#: need a 400 kHz bus for the FIFO reads.
DRIVER_RATES = (12.5, 25.0, 50.0, 100.0, 200.0, 400.0)
CHIP_NAMES = {0xE5: "ADXL345", 0x68: "an MPU-6050", 0xFF: "nothing (the bus reads 0xFF)"}


class ADXL345(FifoAccelerometer):
    """Host driver for one ADXL345 on I2C (implements :class:`drivers.base.Device`).

    ``range_g``: ±2, 4, 8 or 16 g, always at full resolution (3.9 mg/LSB).
    ``rate_hz``: output data rate, one of :data:`DRIVER_RATES`. ``read_interval_s``:
    one :class:`drivers.base.Reading` (latest sample, peak magnitude) per interval;
    the FIFO itself is read every half fill time (0.32 s at 50 Hz).
    """

    chip = "ADXL345"
    FIFO_DEPTH = FIFO_DEPTH

    def __init__(
        self,
        bus: Any = 1,
        *,
        address: int = 0x53,
        rate_hz: float = 50.0,
        range_g: int = 16,
        read_interval_s: float = 1.0,
        quantities: tuple[str, ...] = QUANTITIES,
        **options: Unpack[BusOptions],
    ) -> None:
        check_address(self.chip, address, ADDRESSES, "ALT ADDRESS")
        if float(rate_hz) not in DRIVER_RATES:
            raise ValueError(f"ADXL345 rate_hz must be one of {DRIVER_RATES}, not {rate_hz!r}")
        self._format = data_format(range_g, full_res=True)  # validates the range
        self._bw_rate = bw_rate(float(rate_hz))
        super().__init__(bus, address=address, rate_hz=rate_hz, range_g=range_g,
                         read_interval_s=read_interval_s, quantities=quantities, **options)
        self.devid: int | None = None

    def _setup(self) -> None:
        self.devid = self._check_chip_id(REG_DEVID, DEVID, label="DEVID", article="an",
                                         names=CHIP_NAMES)
        with self._errors("configuration"):
            w = self._bus.write_byte_data
            w(self.address, REG_POWER_CTL, 0x00)  # standby while configuring
            w(self.address, REG_DATA_FORMAT, self._format)
            w(self.address, REG_BW_RATE, self._bw_rate)
            w(self.address, REG_FIFO_CTL, fifo_ctl(FIFO_BYPASS, 0))  # empties the FIFO
            w(self.address, REG_FIFO_CTL, fifo_ctl(FIFO_STREAM, 16))
            w(self.address, REG_POWER_CTL, POWER_MEASURE)

    def _read_fifo(self) -> tuple[list[tuple[float, float, float]], bool]:
        r = self._bus.read_byte_data
        overrun = bool(r(self.address, REG_INT_SOURCE) & INT_OVERRUN)
        entries = r(self.address, REG_FIFO_STATUS) & ENTRIES_MASK
        if entries > FIFO_DEPTH:
            self.counters["bad_data"] += 1
            entries = FIFO_DEPTH
        out = []
        for _ in range(entries):
            data = bytes(self._bus.read_i2c_block_data(self.address, REG_DATA, DATA_LEN))
            out.append(decode_xyz(data, self._format))
        return out, overrun

    def _configured(self) -> bool:
        r = self._bus.read_byte_data
        return (r(self.address, REG_POWER_CTL) & POWER_MEASURE != 0
                and r(self.address, REG_DATA_FORMAT) == self._format)
