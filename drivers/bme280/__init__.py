"""Bosch BME280 temperature, humidity and pressure sensor (I2C 0x76/0x77)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "ADDRESSES": ".codec",
    "BME280": ".device",
    "Calibration": ".codec",
    "Measurement": ".codec",
    "QUANTITIES": ".device",
    "REFERENCE_CALIBRATION": ".codec",
    "Raw": ".codec",
    "WrongChip": "..i2cdev",
    "compensate": ".codec",
    "decode_capture": ".codec",
})
