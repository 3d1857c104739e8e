"""Analog Devices ADXL345 3-axis accelerometer (I2C 0x53/0x1D), streamed through its FIFO."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "QUANTITIES": "..families.accel",
    "Sample": "..families.accel",
    "WrongChip": "..i2cdev",
    "ADDRESSES": ".codec",
    "ADXL345": ".device",
    "DEVID": ".codec",
    "DRIVER_RATES": ".device",
    "decode_capture": ".codec",
    "decode_xyz": ".codec",
})
