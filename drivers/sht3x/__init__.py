"""Sensirion SHT3x (SHT30/SHT31/SHT35) temperature and humidity sensor (I2C 0x44/0x45)."""

from .codec import ADDRESSES, Measurement, Status, decode_capture, decode_measurement, decode_status
from .device import QUANTITIES, SHT3x

__all__ = [
    "ADDRESSES",
    "QUANTITIES",
    "Measurement",
    "SHT3x",
    "Status",
    "decode_capture",
    "decode_measurement",
    "decode_status",
]
