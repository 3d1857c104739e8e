"""Bosch BME280 temperature, humidity and pressure sensor (I2C 0x76/0x77)."""

from .codec import (
    ADDRESSES,
    REFERENCE_CALIBRATION,
    Calibration,
    Measurement,
    Raw,
    compensate,
    decode_capture,
)
from .device import BME280, QUANTITIES, WrongChip

__all__ = [
    "ADDRESSES",
    "BME280",
    "QUANTITIES",
    "REFERENCE_CALIBRATION",
    "Calibration",
    "Measurement",
    "Raw",
    "WrongChip",
    "compensate",
    "decode_capture",
]
