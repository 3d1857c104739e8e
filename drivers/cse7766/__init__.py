"""Chipsea CSE7766 power meter (UART 4800 8E1, transmit only)."""

from .codec import EnergyCounter, Frame, FrameDecoder, Rejected, encode_frame
from .device import CSE7766, DEFAULT_QUANTITIES, QUANTITIES

__all__ = ["CSE7766", "DEFAULT_QUANTITIES", "QUANTITIES", "EnergyCounter", "Frame",
           "FrameDecoder", "Rejected", "encode_frame"]
