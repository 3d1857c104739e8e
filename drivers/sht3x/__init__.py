"""Sensirion SHT3x (SHT30/SHT31/SHT35) temperature and humidity sensor (I2C 0x44/0x45)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "ADDRESSES": ".codec",
    "Measurement": ".codec",
    "QUANTITIES": ".device",
    "SHT3x": ".device",
    "Status": ".codec",
    "decode_capture": ".codec",
    "decode_measurement": ".codec",
    "decode_status": ".codec",
})
