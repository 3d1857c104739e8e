"""An MPU-6050 on an I2C bus: its accelerometer streamed through the FIFO with smbus2.

    >>> from drivers.mpu6050 import MPU6050
    >>> imu = MPU6050(1, address=0x68, rate_hz=100, range_g=8)   # /dev/i2c-1
    >>> imu.open()
    >>> readings = imu.poll()            # one short step of I/O
    >>> samples = imu.drain_samples()    # every (t, ax, ay, az) since the last drain
    >>> imu.close()

On open: read WHO_AM_I (0x68 at either address; an MPU-6500/9250 or anything
else is refused with its name), DEVICE_RESET and wait 100 ms (the chip is then
asleep, as at power-up), wake it with the X-gyro PLL as clock (PWR_MGMT_1 0x01),
write SMPLRT_DIV and CONFIG (the DLPF whose accelerometer bandwidth is below
half the rate, so the gyro rate is 1 kHz and rate = 1000 / (1 + SMPLRT_DIV)),
ACCEL_CONFIG (the range), INT_ENABLE (FIFO overflow), FIFO_EN (accelerometer
only: 6 bytes per sample), and USER_CTRL: FIFO reset (with FIFO_EN clear, as the
register map requires), then FIFO_EN. Each FIFO read: INT_STATUS (FIFO_OFLOW,
cleared by the read), FIFO_COUNT (2 bytes, big-endian), then the whole 6-byte
frames in one read of FIFO_R_W. After an overflow the frames are misaligned (1024
is not a multiple of 6): the FIFO is reset and its contents counted as lost.
"""

from __future__ import annotations

from typing import Any, Unpack

from smbus2 import i2c_msg

from ..families.accel import QUANTITIES
from ..families.accel_fifo import FifoAccelerometer
from ..i2cdev import BusOptions, check_address
from .codec import (
    ADDRESSES,
    CHIP_NAMES,
    DATA_LEN,
    FIFO_BYTES,
    FIFO_EN_ACCEL,
    INT_FIFO_OFLOW,
    PWR_CLK_PLL_X,
    PWR_DEVICE_RESET,
    PWR_SLEEP,
    REG_ACCEL_CONFIG,
    REG_CONFIG,
    REG_FIFO_COUNTH,
    REG_FIFO_EN,
    REG_FIFO_R_W,
    REG_INT_ENABLE,
    REG_INT_STATUS,
    REG_PWR_MGMT_1,
    REG_SMPLRT_DIV,
    REG_USER_CTRL,
    REG_WHO_AM_I,
    USER_FIFO_EN,
    USER_FIFO_RESET,
    WHO_AM_I,
    accel_config,
    decode_fifo,
    dlpf_for,
    smplrt_div_for,
)

#: Rates the driver accepts: 1000 / (1 + SMPLRT_DIV) Hz, from 10 to 500 Hz.
DRIVER_RATES = (10.0, 20.0, 25.0, 40.0, 50.0, 100.0, 125.0, 200.0, 250.0, 500.0)
RESET_S = 0.1  # after DEVICE_RESET (register map: wait 100 ms)
WAKE_S = 0.01
#: Longest FIFO read (whole frames): the chip holds 170 accelerometer samples.
MAX_READ = FIFO_BYTES - FIFO_BYTES % DATA_LEN


class MPU6050(FifoAccelerometer):
    """Host driver for one MPU-6050's accelerometer on I2C (implements
    :class:`drivers.base.Device`).

    ``range_g``: ±2, 4, 8 or 16 g. ``rate_hz``: one of :data:`DRIVER_RATES`.
    ``read_interval_s``: one :class:`drivers.base.Reading` per interval; the FIFO is
    read every half fill time, at most every 0.25 s.
    """

    chip = "MPU-6050"
    FIFO_DEPTH = FIFO_BYTES // DATA_LEN

    def __init__(
        self,
        bus: Any = 1,
        *,
        address: int = 0x68,
        rate_hz: float = 50.0,
        range_g: int = 8,
        read_interval_s: float = 1.0,
        quantities: tuple[str, ...] = QUANTITIES,
        **options: Unpack[BusOptions],
    ) -> None:
        check_address(self.chip, address, ADDRESSES, "AD0")
        if float(rate_hz) not in DRIVER_RATES:
            raise ValueError(f"MPU-6050 rate_hz must be one of {DRIVER_RATES}, not {rate_hz!r}")
        self._accel_cfg = accel_config(range_g)  # validates the range
        self._div = smplrt_div_for(float(rate_hz))
        self._dlpf = dlpf_for(float(rate_hz))
        super().__init__(bus, address=address, rate_hz=rate_hz, range_g=range_g,
                         read_interval_s=read_interval_s, quantities=quantities, **options)
        self.who_am_i: int | None = None

    def _setup(self) -> None:
        self.who_am_i = self._check_chip_id(REG_WHO_AM_I, WHO_AM_I, label="WHO_AM_I",
                                            article="an", names=CHIP_NAMES)
        with self._errors("configuration"):
            w = self._bus.write_byte_data
            w(self.address, REG_PWR_MGMT_1, PWR_DEVICE_RESET)
            self._sleep(RESET_S)
            w(self.address, REG_PWR_MGMT_1, PWR_CLK_PLL_X)  # awake (SLEEP clear)
            self._sleep(WAKE_S)
            w(self.address, REG_SMPLRT_DIV, self._div)
            w(self.address, REG_CONFIG, self._dlpf)
            w(self.address, REG_ACCEL_CONFIG, self._accel_cfg)
            w(self.address, REG_INT_ENABLE, INT_FIFO_OFLOW)
            w(self.address, REG_FIFO_EN, FIFO_EN_ACCEL)
            self._reset_fifo()
            self._bus.read_byte_data(self.address, REG_INT_STATUS)  # clear stale flags

    def _reset_fifo(self) -> None:
        w = self._bus.write_byte_data
        w(self.address, REG_USER_CTRL, USER_FIFO_RESET)  # only with FIFO_EN clear
        w(self.address, REG_USER_CTRL, USER_FIFO_EN)

    def _read_fifo(self) -> tuple[list[tuple[float, float, float]], bool]:
        status = self._bus.read_byte_data(self.address, REG_INT_STATUS)
        hi, lo = self._bus.read_i2c_block_data(self.address, REG_FIFO_COUNTH, 2)
        count = hi << 8 | lo
        if status & INT_FIFO_OFLOW or count >= FIFO_BYTES:
            self._reset_fifo()  # the frames lost their alignment: start clean
            return [], True
        n = min(count - count % DATA_LEN, MAX_READ)
        if not n:
            return [], False
        # One transfer with a repeated start: SMBus block reads stop at 32 bytes.
        wr, rd = i2c_msg.write(self.address, [REG_FIFO_R_W]), i2c_msg.read(self.address, n)
        self._bus.i2c_rdwr(wr, rd)
        return decode_fifo(bytes(rd), self._accel_cfg), False

    def _configured(self) -> bool:
        r = self._bus.read_byte_data
        return (not r(self.address, REG_PWR_MGMT_1) & PWR_SLEEP
                and r(self.address, REG_USER_CTRL) & USER_FIFO_EN != 0
                and r(self.address, REG_FIFO_EN) == FIFO_EN_ACCEL)
