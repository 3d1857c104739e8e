"""JSN-SR04T V3.x waterproof ultrasonic sensor in its UART modes (9600 8N1, ``FF H L SUM``)."""

from .codec import TRIGGER, Frame, FrameDecoder, Rejected
from .device import JSNSR04T, QUANTITIES, VARIANTS

__all__ = ["JSNSR04T", "QUANTITIES", "TRIGGER", "VARIANTS", "Frame", "FrameDecoder", "Rejected"]
