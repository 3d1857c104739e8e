"""JSN-SR04T (V3.x) UART modes: the same ``FF H L SUM`` frames (mm) as the A02YYUW.

Mode 2 (R27 = 47 kΩ) streams a frame every 100 ms; mode 3 (120 kΩ) answers each
trigger byte ``0x55`` with one frame (mode numbering differs between sellers).
The AJ-SR04M sums ``H + L`` only: ``FrameDecoder(sum_header=False)``.
"""

from __future__ import annotations

from ..a02yyuw.codec import Counters, Event, Frame, FrameDecoder, Rejected, encode_frame

__all__ = ["TRIGGER", "Counters", "Event", "Frame", "FrameDecoder", "Rejected", "encode_frame"]

#: The byte that starts one measurement in the triggered UART mode.
TRIGGER = b"\x55"
