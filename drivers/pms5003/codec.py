"""Plantower PMS5003/PMS7003 wire protocol, with no I/O at all.

The sensor streams 32-byte frames (``42 4D`` + length + 13 big-endian words + a
16-bit sum) and answers mode commands with 8-byte acknowledgements. Bytes go in
through :meth:`FrameDecoder.feed`; frames, acknowledgements and rejected spans
come out as events. Every byte fed is accounted for exactly once: either in a
good frame or acknowledgement, or in a :class:`Rejected` span with its reason,
so an installer can see where a capture went wrong.

Command frames for the sensor are built by :func:`command`; the device-side
encoders (:func:`encode_frame`, :func:`encode_ack`) are used by the emulator and
by tests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from ..framing import Rejected, StreamDecoder

__all__ = ["Ack", "Counters", "Event", "Frame", "FrameDecoder", "Rejected"]

START = b"BM"  # 0x42 0x4D
#: Valid values of the length field and the variant each one means.
LENGTHS = {
    28: "pms5003",  # PMS5003/7003/A003 and T/S variants: 32-byte frame
    20: "pms3003",  # PMS1003/3003: 24-byte frame
    36: "pms5003st",  # PMS5003ST: 40-byte frame
    4: "ack",  # command acknowledgement: 8-byte frame
}

CMD_MODE = 0xE1  # data 0 = passive, 1 = active
CMD_READ = 0xE2  # passive-mode read trigger
CMD_POWER = 0xE4  # data 0 = sleep, 1 = wake


def sum16(data: bytes | bytearray | memoryview) -> int:
    """Plantower checksum: 16-bit sum of every byte before it."""
    return sum(data) & 0xFFFF


def command(cmd: int, data: int = 0) -> bytes:
    """Build a 7-byte host-to-sensor command frame."""
    if not 0 <= cmd <= 0xFF or not 0 <= data <= 0xFFFF:
        raise ValueError(f"command byte {cmd:#x} or data {data:#x} out of range")
    body = START + bytes([cmd]) + data.to_bytes(2, "big")
    return body + sum16(body).to_bytes(2, "big")


SET_PASSIVE = command(CMD_MODE, 0)
SET_ACTIVE = command(CMD_MODE, 1)
READ = command(CMD_READ, 0)
SLEEP = command(CMD_POWER, 0)
WAKE = command(CMD_POWER, 1)


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded data frame; concentrations in µg/m³, counts per 0.1 L."""

    pm1_cf1: int
    pm25_cf1: int
    pm10_cf1: int
    pm1: int
    pm25: int
    pm10: int
    n0_3: int
    n0_5: int
    n1_0: int
    n2_5: int
    n5_0: int
    n10: int
    version: int
    error: int
    variant: str = "pms5003"
    raw: bytes = field(default=b"", repr=False, compare=False)

    def as_dict(self) -> dict[str, int | str]:
        """Every decoded field, for JSON output."""
        return {
            "pm1_cf1": self.pm1_cf1,
            "pm25_cf1": self.pm25_cf1,
            "pm10_cf1": self.pm10_cf1,
            "pm1": self.pm1,
            "pm25": self.pm25,
            "pm10": self.pm10,
            "n0_3": self.n0_3,
            "n0_5": self.n0_5,
            "n1_0": self.n1_0,
            "n2_5": self.n2_5,
            "n5_0": self.n5_0,
            "n10": self.n10,
            "version": self.version,
            "error": self.error,
            "variant": self.variant,
        }


@dataclass(frozen=True, slots=True)
class Ack:
    """The sensor's acknowledgement of a mode or sleep command."""

    cmd: int
    data: int
    raw: bytes = field(default=b"", repr=False, compare=False)


Event = Frame | Ack | Rejected


def encode_frame(
    pm1_cf1: int,
    pm25_cf1: int,
    pm10_cf1: int,
    pm1: int,
    pm25: int,
    pm10: int,
    counts: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0),
    version: int = 0x97,
    error: int = 0,
) -> bytes:
    """Build the 32-byte data frame a PMS5003 sends (device side)."""
    words = (pm1_cf1, pm25_cf1, pm10_cf1, pm1, pm25, pm10, *counts)
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise ValueError(f"frame values must fit 16 bits: {words}")
    body = START + struct.pack(">H12H2B", 28, *words, version & 0xFF, error & 0xFF)
    return body + sum16(body).to_bytes(2, "big")


def encode_ack(cmd: int, data: int) -> bytes:
    """Build the 8-byte acknowledgement a PMS5003 sends for a command (device side)."""
    body = START + bytes([0x00, 0x04, cmd & 0xFF, data & 0xFF])
    return body + sum16(body).to_bytes(2, "big")


def parse_command(frame: bytes) -> tuple[int, int] | None:
    """Decode a 7-byte host command (device side); None if it is not valid."""
    if len(frame) != 7 or frame[:2] != START:
        return None
    if sum16(frame[:5]) != int.from_bytes(frame[5:7], "big"):
        return None
    return frame[2], int.from_bytes(frame[3:5], "big")


def _decode_data(buf: bytes, variant: str) -> Frame:
    if variant == "pms3003":
        # PMS1003/3003: 6 concentration words and 3 reserved words, no counts.
        w = struct.unpack_from(">6H", buf, 4)
        return Frame(*w, 0, 0, 0, 0, 0, 0, buf[20], buf[21], variant=variant, raw=buf)
    w = struct.unpack_from(">12H2B", buf, 4)
    return Frame(*w, variant=variant, raw=buf)


def _implausible(frame: bytes, variant: str) -> str:
    """Checksum-valid garbage exists: masses and counts are cumulative, so they must
    not shrink with size. Returns why a frame is impossible, or ""."""
    w = struct.unpack_from(">10H", frame, 4)
    if not (w[0] <= w[1] <= w[2]):
        return f"CF=1 PM1 {w[0]} > PM2.5 {w[1]} or PM2.5 > PM10 {w[2]}"
    if not (w[3] <= w[4] <= w[5]):
        return f"PM1 {w[3]} > PM2.5 {w[4]} or PM2.5 > PM10 {w[5]}"
    if variant != "pms3003" and not (w[6] >= w[7] >= w[8] >= w[9]):
        return "particle counts grow with size"
    return ""


@dataclass(slots=True)
class Counters:
    """What the decoder has seen: an installer's first look at line quality."""

    frames: int = 0
    acks: int = 0
    bad_frames: int = 0
    discarded_bytes: int = 0


class FrameDecoder(StreamDecoder):
    """Incremental decoder: feed it any chunking of the byte stream.

    Resynchronisation follows the datasheet and what field experience taught
    (docs/drivers.md): match the whole two-byte start sequence, check the
    length field against the known variants, check the 16-bit sum, and on any
    failure slide by one byte only, so a frame that begins inside a corrupt one
    is still found. A frame takes 33 ms at 9600 baud: :meth:`expire` is for a
    longer silence inside one.
    """

    counters: Counters

    def __init__(self) -> None:
        super().__init__(Counters())
        self._decide_now = False

    def _settle(self) -> list[Event]:
        # A complete frame held back only to see what follows it: decide now.
        self._decide_now = True
        try:
            return self.feed(b"")
        finally:
            self._decide_now = False

    def _find_start(self, start: int) -> int:
        idx = self._buf.find(START, start)
        if idx < 0 and self._buf.endswith(START[:1]):
            return len(self._buf) - 1  # a trailing 0x42 may be the first half of the next start
        return idx

    def _resume_after_silence(self) -> int:
        return self._buf.find(START, 1)

    def _truncated_frame(self) -> bool:
        return self._buf.startswith(START[:1])

    def _expired_frame(self) -> bool:
        return self._buf.startswith(START)

    def _frame_inside(self, total: int) -> int | None:
        """Does a frame start inside the first ``total`` bytes?

        Returns the offset of a complete, valid one; 0 when none can (any start
        sequence inside is followed by a bad length field or a bad sum); None
        when a candidate is not complete yet and the decision must wait.
        """
        buf = self._buf
        q = buf.find(START, 1, total + 1)
        if total < len(buf) < total + 1 or (len(buf) == total and buf[total - 1] == START[0]):
            return None  # the last byte is 0x42: is the next one 0x4D?
        while 0 < q < total:
            if len(buf) < q + 4:
                return None
            n = 4 + int.from_bytes(buf[q + 2:q + 4], "big")
            if (n - 4) in LENGTHS:
                if len(buf) < q + n:
                    return None
                if sum16(buf[q:q + n - 2]) == int.from_bytes(buf[q + n - 2:q + n], "big"):
                    return q
            q = buf.find(START, q + 1, total + 1)
        return 0

    def _next(self) -> Event | None:
        buf = self._buf
        skipped = self._skip_to_start("no start bytes 42 4d")
        if skipped is not None:
            return skipped
        if len(buf) < 4:
            return None
        length = int.from_bytes(buf[2:4], "big")
        variant = LENGTHS.get(length)
        if variant is None:
            self.counters.bad_frames += 1
            return self._skip_to_start(f"bad length field {length}", 1)
        total = 4 + length
        if len(buf) < total:
            return None
        frame = bytes(buf[:total])
        expected = sum16(frame[:-2])
        got = int.from_bytes(frame[-2:], "big")
        if expected != got:
            self.counters.bad_frames += 1
            return self._skip_to_start(
                f"checksum mismatch: computed {expected:04x}, frame says {got:04x}", 1
            )
        # A truncated frame plus the next frame's first byte can pass the 16-bit sum
        # (about 1 in 256 truncations). When a valid frame starts inside this one,
        # that frame is the real one; until it is complete, wait (expire() decides
        # if the line goes quiet first).
        later = None if self._decide_now else self._frame_inside(total)
        if later is None and not self._decide_now:
            return None
        if later:
            self.counters.bad_frames += 1
            return self._reject(later, "checksum collision: a valid frame starts inside")
        if variant != "ack":
            why = _implausible(frame, variant)
            if why:
                self.counters.bad_frames += 1
                return self._skip_to_start(f"implausible values passed the checksum: {why}", 1)
        del buf[:total]
        if variant == "ack":
            self.counters.acks += 1
            return Ack(frame[4], frame[5], raw=frame)
        self.counters.frames += 1
        return _decode_data(frame, variant)
