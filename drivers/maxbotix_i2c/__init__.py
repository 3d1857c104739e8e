"""MaxBotix I2CXL-MaxSonar-EZ ultrasonic rangefinder on I2C (default 0x70)."""

from .codec import ADDRESS, ADDRESSES, decode_capture, decode_range
from .device import I2CXL, QUANTITIES

__all__ = ["ADDRESS", "ADDRESSES", "I2CXL", "QUANTITIES", "decode_capture", "decode_range"]
