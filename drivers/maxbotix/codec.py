"""MaxBotix serial output (``R####\\r`` / ``R###\\r``), with no I/O at all.

Frames are ASCII: ``R``, the range as digits, CR (0x0D). HRXL-MaxSonar (MB7xxx)
sends 4 digits in millimetres (``R1234\\r``); XL-MaxSonar (MB1xxx) sends 3 digits
in centimetres (``R121\\r``), LV-MaxSonar 3 digits in inches. ``units="auto"``
takes 4 digits as mm and 3 as cm; ``"mm"``, ``"cm"`` or ``"in"`` accept only
that variant. The decoder resyncs on ``R``: anything else before it, and a
frame that is not ``R`` + the right number of digits + CR, is rejected with its
reason and the search resumes one byte on. Every byte is accounted for once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..framing import Rejected, StreamDecoder

__all__ = ["UNITS", "Counters", "Event", "Frame", "FrameDecoder", "Rejected", "encode_frame"]

START = ord("R")
CR = 0x0D
#: units -> (digits, millimetres per unit)
UNITS = {"mm": (4, 1.0), "cm": (3, 10.0), "in": (3, 25.4)}
_BY_DIGITS = {4: "mm", 3: "cm"}
MAX_DIGITS = 4


def encode_frame(value: int, units: str = "mm") -> bytes:
    """Build the frame a sensor sends for ``value`` in ``units`` (device side)."""
    digits = UNITS[units][0]
    if not 0 <= value < 10**digits:
        raise ValueError(f"{value} does not fit {digits} digits")
    return b"R" + f"{value:0{digits}d}".encode() + b"\r"


@dataclass(frozen=True, slots=True)
class Frame:
    """One range frame: the number sent, its units, and the distance."""

    value: int
    units: str
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def distance_mm(self) -> float:
        return self.value * UNITS[self.units][1]

    @property
    def d(self) -> float:
        """Distance in metres (the driver's quantity ``d``)."""
        return round(self.distance_mm / 1000, 6)

    def as_dict(self) -> dict[str, int | float | str]:
        return {"value": self.value, "units": self.units, "distance_mm": self.distance_mm,
                "d": self.d}


Event = Frame | Rejected


@dataclass(slots=True)
class Counters:
    frames: int = 0
    bad_frames: int = 0
    discarded_bytes: int = 0


class FrameDecoder(StreamDecoder):
    """Incremental decoder for ``R<digits>\\r`` frames: feed it any chunking of the stream."""

    counters: Counters

    def __init__(self, units: str = "auto") -> None:
        if units != "auto" and units not in UNITS:
            raise ValueError(f"units must be 'auto' or one of {sorted(UNITS)}, not {units!r}")
        super().__init__(Counters())
        self.units = units

    def _find_start(self, start: int) -> int:
        return self._buf.find(START, start)

    def _truncated_frame(self) -> bool:
        return self._buf[:1] == b"R"

    def _units_for(self, digits: int) -> str | None:
        if self.units == "auto":
            return _BY_DIGITS.get(digits)
        return self.units if UNITS[self.units][0] == digits else None

    def _bad(self, reason: str) -> Rejected | None:
        self.counters.bad_frames += 1
        return self._skip_to_start(reason, 1)

    def _next(self) -> Event | None:
        buf = self._buf
        skipped = self._skip_to_start("no start byte R")
        if skipped is not None:
            return skipped
        if not buf:
            return None
        n = 0
        while 1 + n < len(buf) and 0x30 <= buf[1 + n] <= 0x39:
            n += 1
            if n > MAX_DIGITS:
                return self._bad(f"more than {MAX_DIGITS} digits")
        if 1 + n == len(buf):
            return None  # wait for more digits or the CR
        end = buf[1 + n]
        if end != CR:
            return self._bad(f"byte {end:02x} after {n} digits (expected digits, then 0d)")
        units = self._units_for(n)
        if units is None:
            want = "3 or 4" if self.units == "auto" else str(UNITS[self.units][0])
            return self._bad(f"{n} digits (expected {want})")
        raw = bytes(buf[:n + 2])
        del buf[:n + 2]
        self.counters.frames += 1
        return Frame(int(raw[1:-1]), units, raw=raw)
