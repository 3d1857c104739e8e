"""Sensirion SGP30 gas sensor: eCO2, TVOC and raw H2/ethanol signals (I2C 0x58)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "ADDRESS": ".codec",
    "AirQuality": ".codec",
    "Baseline": ".codec",
    "FeatureSet": ".codec",
    "Measurement": ".device",
    "QUANTITIES": ".device",
    "RawSignals": ".codec",
    "SGP30": ".device",
    "SavedBaseline": ".device",
    "decode_capture": ".codec",
})
