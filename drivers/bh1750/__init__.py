"""ROHM BH1750FVI ambient light sensor (I2C 0x23/0x5C)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "ADDRESSES": ".codec",
    "BH1750": ".device",
    "Measurement": ".codec",
    "QUANTITIES": ".device",
    "decode_capture": ".codec",
    "decode_measurement": ".codec",
    "raw_to_lux": ".codec",
})
