"""DFRobot A02YYUW (SEN0311) ultrasonic distance sensor (UART, 9600 8N1, ``FF H L SUM``)."""

from .codec import Frame, FrameDecoder, Rejected
from .device import A02YYUW, OUTPUTS, QUANTITIES, DistanceDevice
from .protocol import Discarded, DistanceProtocol, Sample

__all__ = [
    "A02YYUW",
    "OUTPUTS",
    "QUANTITIES",
    "Discarded",
    "DistanceDevice",
    "DistanceProtocol",
    "Frame",
    "FrameDecoder",
    "Rejected",
    "Sample",
]
