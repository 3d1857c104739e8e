"""Plantower PMS5003/PMS7003 particulate sensor (UART, 9600 8N1)."""

from .codec import Ack, Frame, FrameDecoder, Rejected
from .device import DEFAULT_QUANTITIES, PMS5003, QUANTITIES
from .protocol import PMS5003Protocol

__all__ = [
    "DEFAULT_QUANTITIES",
    "PMS5003",
    "QUANTITIES",
    "Ack",
    "Frame",
    "FrameDecoder",
    "PMS5003Protocol",
    "Rejected",
]
