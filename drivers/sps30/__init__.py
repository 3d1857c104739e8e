"""Sensirion SPS30 particulate sensor (I2C, address 0x69)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "CRCError": ".codec",
    "DEFAULT_QUANTITIES": ".device",
    "Measurement": ".codec",
    "QUANTITIES": ".device",
    "SPS30": ".device",
    "decode_capture": ".codec",
})
