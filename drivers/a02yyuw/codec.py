"""DFRobot A02YYUW (and JSN-SR04T UART modes) wire format, with no I/O at all.

The sensor sends 4-byte frames ``FF H L SUM``: the distance ``H*256 + L`` (mm;
cm on the SEN0627) and ``SUM = (0xFF + H + L) & 0xFF``. There is no end marker
and 0xFF is also a legal data byte (255 mm is ``FF 00 FF FE``, 511 mm is
``FF 01 FF FF``), so the decoder syncs on 0xFF, checks the sum and on a
mismatch slides by one byte. Every byte fed is accounted for exactly once: in
a good frame, or in a :class:`Rejected` span with its reason.

When a good-looking frame has another complete good-looking frame starting
inside it (noise ``FF 00 00`` right before a real frame passes the sum), the
decoder keeps the one that is plausible (a distance a sensor can measure) and,
if both are, the one after which more good frames follow (it waits for two
more frames' worth of bytes, or a pause in the input); then the one nearer the
last distance; then the first one if it follows a good frame directly, else
the later one. Some splits stay ambiguous (``FF 01 FF FF 02 FF 00`` is 511 mm
and 3 bytes of noise, or 3 bytes of noise and 767 mm).

The AJ-SR04M variant sums ``H + L`` only (``sum_header=False``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..framing import Rejected, StreamDecoder

__all__ = ["Counters", "Event", "Frame", "FrameDecoder", "Rejected", "encode_frame"]

HEAD = 0xFF
FRAME_LEN = 4
#: No ultrasonic sensor of this family measures beyond 10 m: a frame claiming more
#: is more likely noise that passed the 8-bit sum than a real frame.
PLAUSIBLE_MAX = 10_000
#: Bytes looked at past two competing frames to choose between them.
LOOKAHEAD = 8


def checksum(h: int, low: int, sum_header: bool = True) -> int:
    """8-bit additive checksum of a frame: ``(0xFF + H + L) & 0xFF`` (AJ-SR04M: ``H + L``)."""
    return ((HEAD if sum_header else 0) + h + low) & 0xFF


def encode_frame(value: int, sum_header: bool = True) -> bytes:
    """Build the frame a sensor sends for ``value`` (mm, or cm on cm models); device side."""
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"distance {value} does not fit 16 bits")
    h, low = value >> 8, value & 0xFF
    return bytes([HEAD, h, low, checksum(h, low, sum_header)])


@dataclass(frozen=True, slots=True)
class Frame:
    """One distance frame: the raw 16-bit value and the distance it means."""

    value: int  # H*256 + L as sent
    distance_mm: int
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def d(self) -> float:
        """Distance in metres (the driver's quantity ``d``)."""
        return self.distance_mm / 1000

    def as_dict(self) -> dict[str, int | float]:
        return {"distance_mm": self.distance_mm, "d": self.d}


Event = Frame | Rejected


@dataclass(slots=True)
class Counters:
    frames: int = 0
    bad_frames: int = 0
    discarded_bytes: int = 0
    ambiguous: int = 0  # two overlapping good frames that only a guess could split


class FrameDecoder(StreamDecoder):
    """Incremental decoder for ``FF H L SUM`` frames: feed it any chunking of the stream.

    ``scale_mm`` is millimetres per unit (10 for the SEN0627, which reports cm).
    """

    counters: Counters

    def __init__(self, *, scale_mm: int = 1, sum_header: bool = True) -> None:
        super().__init__(Counters())
        self.scale_mm = scale_mm
        self.sum_header = sum_header
        self._settling = False
        self._after_frame = False  # the buffer starts right after a good frame
        self._last: int | None = None  # the last good frame's value

    # -- StreamDecoder hooks --------------------------------------------------------
    def _find_start(self, start: int) -> int:
        return self._buf.find(HEAD, start)

    def _truncated_frame(self) -> bool:
        return self._buf[:1] == bytes([HEAD])

    def _settle(self) -> list[Event]:
        # Input ends or pauses: decide an ambiguous frame with the bytes at hand.
        self._settling = True
        try:
            return self.feed(b"")
        finally:
            self._settling = False

    def _valid_at(self, q: int) -> bool:
        b = self._buf
        return (len(b) >= q + FRAME_LEN and b[q] == HEAD
                and checksum(b[q + 1], b[q + 2], self.sum_header) == b[q + 3])

    def _value_at(self, q: int) -> int:
        return self._buf[q + 1] << 8 | self._buf[q + 2]

    def _plausible_at(self, q: int) -> bool:
        return self._value_at(q) * self.scale_mm <= PLAUSIBLE_MAX

    def _frames_from(self, i: int, end: int) -> int:
        """How many good frames a resyncing parse finds from ``i`` up to ``end``."""
        n, end = 0, min(len(self._buf), end)
        while i + FRAME_LEN <= end:
            if self._valid_at(i):
                n += 1
                i += FRAME_LEN
            else:
                i += 1
        return n

    def _inside(self) -> int | None:
        """Where the frame to keep starts, given a valid frame at 0: 0, or 1..3.

        None: it cannot be decided yet (more bytes will tell).
        """
        for q in range(1, FRAME_LEN):
            if not self._valid_at(q):
                continue
            outer, inner = self._plausible_at(0), self._plausible_at(q)
            if outer != inner:
                return q if inner else 0
            if len(self._buf) < q + FRAME_LEN + LOOKAHEAD and not self._settling:
                return None
            # Keep the one after which the stream goes on making sense. On a tie it is a
            # guess (counted): the one nearer the last distance, else the outer one if it
            # follows a good frame directly (a frame with 0xFF in it, then noise), else
            # the later one (noise, then a frame).
            end = q + FRAME_LEN + LOOKAHEAD
            n_outer = self._frames_from(FRAME_LEN, end)
            n_inner = self._frames_from(q + FRAME_LEN, end)
            if n_outer != n_inner:
                return 0 if n_outer > n_inner else q
            self.counters.ambiguous += 1
            if self._last is not None:  # a distance rarely jumps between two frames
                d_outer, d_inner = abs(self._value_at(0) - self._last), abs(
                    self._value_at(q) - self._last)
                if d_outer != d_inner:
                    return 0 if d_outer < d_inner else q
            return 0 if self._after_frame else q
        return 0

    def reset(self) -> None:
        super().reset()
        self._after_frame = False
        self._last = None

    def _next(self) -> Event | None:
        event = self._decode_next()
        if event is not None:
            self._after_frame = isinstance(event, Frame)
        return event

    def _decode_next(self) -> Event | None:
        buf = self._buf
        skipped = self._skip_to_start("no header ff")
        if skipped is not None:
            return skipped
        if len(buf) < FRAME_LEN:
            return None
        expected = checksum(buf[1], buf[2], self.sum_header)
        if expected != buf[3]:
            self.counters.bad_frames += 1
            return self._skip_to_start(
                f"checksum mismatch: computed {expected:02x}, frame says {buf[3]:02x}", 1)
        later = self._inside()
        if later is None:
            return None
        if later:
            self.counters.bad_frames += 1
            return self._reject(later, "checksum collision: a valid frame starts inside")
        raw = bytes(buf[:FRAME_LEN])
        del buf[:FRAME_LEN]
        self.counters.frames += 1
        value = raw[1] << 8 | raw[2]
        self._last = value
        return Frame(value, value * self.scale_mm, raw=raw)
