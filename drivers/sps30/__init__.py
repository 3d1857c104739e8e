"""Sensirion SPS30 particulate sensor (I2C, address 0x69)."""

from .codec import CRCError, Measurement, decode_capture
from .device import DEFAULT_QUANTITIES, QUANTITIES, SPS30

__all__ = [
    "DEFAULT_QUANTITIES",
    "QUANTITIES",
    "SPS30",
    "CRCError",
    "Measurement",
    "decode_capture",
]
