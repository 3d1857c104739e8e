"""MaxBotix MaxSonar ultrasonic sensors, TTL serial (9600 8N1, ``R####\\r`` / ``R###\\r``)."""

from .codec import UNITS, Frame, FrameDecoder, Rejected
from .device import LIMITS, QUANTITIES, MaxBotix

__all__ = ["LIMITS", "QUANTITIES", "UNITS", "Frame", "FrameDecoder", "MaxBotix", "Rejected"]
