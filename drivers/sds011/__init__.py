"""Nova Fitness SDS011 particulate sensor (UART, 9600 8N1)."""

from .codec import ANY_ID, Frame, FrameDecoder, Rejected, Reply
from .device import DEFAULT_QUANTITIES, QUANTITIES, SDS011
from .protocol import NoReply, ReplyMismatch, SDS011Protocol

__all__ = [
    "ANY_ID",
    "DEFAULT_QUANTITIES",
    "QUANTITIES",
    "SDS011",
    "Frame",
    "FrameDecoder",
    "NoReply",
    "Rejected",
    "Reply",
    "ReplyMismatch",
    "SDS011Protocol",
]
