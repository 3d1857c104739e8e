"""Lite-On LTR-390UV-01 ambient light and UV sensor (I2C 0x53)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "ADDRESSES": ".codec",
    "LTR390": ".device",
    "Measurement": ".codec",
    "QUANTITIES": ".device",
    "WrongChip": "..i2cdev",
    "als_to_lux": ".codec",
    "decode_capture": ".codec",
    "uvs_to_uvi": ".codec",
})
