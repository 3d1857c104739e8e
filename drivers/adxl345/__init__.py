"""Analog Devices ADXL345 3-axis accelerometer (I2C 0x53/0x1D), streamed through its FIFO."""

from ..accel import QUANTITIES, Sample, WrongChip
from .codec import ADDRESSES, DEVID, decode_capture, decode_xyz
from .device import ADXL345, DRIVER_RATES

__all__ = [
    "ADDRESSES",
    "ADXL345",
    "DEVID",
    "DRIVER_RATES",
    "QUANTITIES",
    "Sample",
    "WrongChip",
    "decode_capture",
    "decode_xyz",
]
