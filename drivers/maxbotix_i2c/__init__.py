"""MaxBotix I2CXL-MaxSonar-EZ ultrasonic rangefinder on I2C (default 0x70)."""

from ..lazy import exports

__getattr__, __dir__, __all__ = exports(__name__, {
    "ADDRESS": ".codec",
    "ADDRESSES": ".codec",
    "I2CXL": ".device",
    "QUANTITIES": ".device",
    "decode_capture": ".codec",
    "decode_range": ".codec",
})
