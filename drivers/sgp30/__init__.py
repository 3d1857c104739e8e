"""Sensirion SGP30 gas sensor: eCO2, TVOC and raw H2/ethanol signals (I2C 0x58)."""

from .codec import ADDRESS, AirQuality, Baseline, FeatureSet, RawSignals, decode_capture
from .device import QUANTITIES, SGP30, Measurement, SavedBaseline

__all__ = [
    "ADDRESS",
    "QUANTITIES",
    "SGP30",
    "AirQuality",
    "Baseline",
    "FeatureSet",
    "Measurement",
    "RawSignals",
    "SavedBaseline",
    "decode_capture",
]
