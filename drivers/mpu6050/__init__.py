"""InvenSense MPU-6050 accelerometer/gyroscope (I2C 0x68/0x69), accelerometer through its FIFO."""

from ..accel import QUANTITIES, Sample, WrongChip
from .codec import ADDRESSES, WHO_AM_I, decode_capture, decode_xyz
from .device import DRIVER_RATES, MPU6050

__all__ = [
    "ADDRESSES",
    "DRIVER_RATES",
    "MPU6050",
    "QUANTITIES",
    "WHO_AM_I",
    "Sample",
    "WrongChip",
    "decode_capture",
    "decode_xyz",
]
