"""InvenSense MPU-6050 accelerometer/gyroscope (I2C 0x68/0x69), accelerometer through its FIFO."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "QUANTITIES": "..families.accel",
    "Sample": "..families.accel",
    "WrongChip": "..i2cdev",
    "ADDRESSES": ".codec",
    "DRIVER_RATES": ".device",
    "MPU6050": ".device",
    "WHO_AM_I": ".codec",
    "decode_capture": ".codec",
    "decode_xyz": ".codec",
})
