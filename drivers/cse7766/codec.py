"""Chipsea CSE7766 power meter wire protocol (Sonoff POW R2/R3, S31), with no I/O at all.

The chip streams 24-byte frames at 4800 8E1 with no request (see
``sensor-protocols.md`` section 5)::

    0  state: 55 normal, AA not calibrated, Fx error/overflow flags
    1  5A
    2-4   voltage coefficient    5-7   voltage cycle     (V = Vcoef / Vcycle)
    8-10  current coefficient    11-13 current cycle     (I = Icoef / Icycle)
    14-16 power coefficient      17-19 power cycle       (P = Pcoef / Pcycle)
    20 adj: bit6 V, bit5 I, bit4 P updated; bit7 CF counter overflow
    21-22 CF pulse counter (16 bits, wraps)
    23 checksum: sum of bytes 2..22 & 0xFF

An uncalibrated chip (``AA``) has no coefficients: the defaults Tasmota uses
(191200, 16140, 5364000) apply. In an ``Fx`` state, bit3 (voltage cycle out of
range), bit2 (current) or bit0 (coefficient storage abnormal) make the frame
invalid (decoded, flagged ``valid=False``); bit1 alone means "power cycle out of
range": no load, P = 0 W, the frame is otherwise good.

Current follows Tasmota: forced to 0 A when P is 0 W (below ~50 mA the chip's
current is noise); :attr:`Frame.a_raw` keeps Icoef/Icycle.

Checksum-valid garbage exists (the 8-bit sum passes 1 in 256 random spans), so
valid frames are also range-checked: cycles must be non-zero and V, I, P within
:data:`MAX_V`, :data:`MAX_A`, :data:`MAX_W` (Tasmota's 5.5 kW "CSE: Overload"
limit); out-of-range frames are rejected with the reason. Energy comes from the
CF pulse counter (:class:`EnergyCounter`), each pulse worth Pcoef µJ
(P = Pcoef/Pcycle with Pcycle the CF period in µs), i.e.
Wh = ΔCF × Pcoef / 3.6e9 (ESPHome's formula).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..framing import Rejected, StreamDecoder

__all__ = ["Counters", "EnergyCounter", "Frame", "FrameDecoder", "Rejected", "encode_frame"]

FRAME_LEN = 24
CHECK = 0x5A
NORMAL = 0x55
UNCALIBRATED = 0xAA
#: Tasmota's coefficients for an uncalibrated (``AA``) chip.
DEFAULT_VCOEF, DEFAULT_ICOEF, DEFAULT_PCOEF = 191200, 16140, 5364000
BIT_V_RANGE, BIT_I_RANGE, BIT_P_RANGE, BIT_COEF = 0x08, 0x04, 0x02, 0x01
ADJ_V, ADJ_I, ADJ_P, ADJ_CF_OVERFLOW = 0x40, 0x20, 0x10, 0x80
#: Plausibility limits: beyond these a checksum-valid frame is garbage.
MAX_V = 400.0
MAX_A = 25.0
MAX_W = 5500.0
CYCLE_MAX = 0xFFFFFF


def sum8(data: bytes | bytearray | memoryview) -> int:
    return sum(data) & 0xFF


def is_header(b: int) -> bool:
    return b in (NORMAL, UNCALIBRATED) or b & 0xF0 == 0xF0


def _u24(buf: bytes, i: int) -> int:
    return int.from_bytes(buf[i:i + 3], "big")


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded CSE7766 frame. ``w``/``v``/``a`` are 0.0 when not valid."""

    header: int
    vcoef: int
    vcycle: int
    icoef: int
    icycle: int
    pcoef: int
    pcycle: int
    adj: int
    cf: int
    raw: bytes = field(default=b"", repr=False, compare=False)

    @property
    def state(self) -> str:
        if self.header == NORMAL:
            return "normal"
        if self.header == UNCALIBRATED:
            return "uncalibrated"
        return "error"

    @property
    def coefficients(self) -> tuple[int, int, int]:
        """(Vcoef, Icoef, Pcoef) in force: the defaults for an uncalibrated chip."""
        if self.header == UNCALIBRATED:
            return DEFAULT_VCOEF, DEFAULT_ICOEF, DEFAULT_PCOEF
        return self.vcoef, self.icoef, self.pcoef

    @property
    def valid(self) -> bool:
        """False when the chip flags V or I out of range or its coefficients as abnormal."""
        return self.state != "error" or not self.header & (BIT_V_RANGE | BIT_I_RANGE | BIT_COEF)

    @property
    def no_load(self) -> bool:
        """State bit1: power cycle out of range, i.e. no load (P = 0 W)."""
        return self.state == "error" and bool(self.header & BIT_P_RANGE)

    @property
    def v(self) -> float:
        vc = self.coefficients[0]
        return vc / self.vcycle if self.valid and self.vcycle else 0.0

    @property
    def w(self) -> float:
        pc = self.coefficients[2]
        if not self.valid or self.no_load or not self.pcycle:
            return 0.0
        return pc / self.pcycle

    @property
    def a_raw(self) -> float:
        ic = self.coefficients[1]
        return ic / self.icycle if self.valid and self.icycle else 0.0

    @property
    def a(self) -> float:
        return self.a_raw if self.w > 0 else 0.0

    @property
    def fault(self) -> bool:
        return not self.valid

    def problem(self) -> str | None:
        """Why a checksum-valid frame cannot be real (None if plausible)."""
        if not self.valid:
            return None  # the chip itself says so: kept, flagged as a fault
        if self.vcycle == 0 or (self.pcycle == 0 and not self.no_load) or self.icycle == 0:
            return "out of range: zero cycle count"
        if self.v > MAX_V:
            return f"out of range: {self.v:.1f} V > {MAX_V:g} V"
        if self.a > MAX_A:
            return f"out of range: {self.a:.2f} A > {MAX_A:g} A"
        if self.w > MAX_W:
            return f"out of range: {self.w:.1f} W > {MAX_W:g} W"
        return None

    def as_dict(self) -> dict[str, object]:
        return {
            "state": self.state, "header": f"{self.header:02x}", "valid": self.valid,
            "v": round(self.v, 3), "a": round(self.a, 4), "a_raw": round(self.a_raw, 4),
            "w": round(self.w, 3), "adj": f"{self.adj:02x}", "cf": self.cf,
            "coefficients": list(self.coefficients),
        }


def decode(buf: bytes) -> Frame:
    """Fields of a 24-byte frame (no checks)."""
    return Frame(buf[0], _u24(buf, 2), _u24(buf, 5), _u24(buf, 8), _u24(buf, 11),
                 _u24(buf, 14), _u24(buf, 17), buf[20], int.from_bytes(buf[21:23], "big"),
                 raw=bytes(buf))


def encode_frame(header: int, vcoef: int, vcycle: int, icoef: int, icycle: int, pcoef: int,
                 pcycle: int, adj: int, cf: int) -> bytes:
    """Build a 24-byte frame (device side)."""
    body = b"".join(min(max(int(x), 0), CYCLE_MAX).to_bytes(3, "big")
                    for x in (vcoef, vcycle, icoef, icycle, pcoef, pcycle))
    body += bytes([adj & 0xFF]) + (cf & 0xFFFF).to_bytes(2, "big")
    return bytes([header & 0xFF, CHECK]) + body + bytes([sum8(body)])


@dataclass(slots=True)
class Counters:
    frames: int = 0
    bad_frames: int = 0
    implausible: int = 0
    discarded_bytes: int = 0


class FrameDecoder(StreamDecoder):
    """Incremental decoder: header byte (55 / AA / Fx) + 5A, checksum, range checks.

    On a checksum failure or implausible values it slides by one byte (as Tasmota
    does), so a frame starting inside a bad one is still found.
    """

    counters: Counters

    def __init__(self) -> None:
        super().__init__(Counters())

    def _find_start(self, start: int) -> int:
        buf = self._buf
        for i in range(start, len(buf)):
            if is_header(buf[i]) and (i + 1 == len(buf) or buf[i + 1] == CHECK):
                return i
        return -1

    def _truncated_frame(self) -> bool:
        return len(self._buf) >= 2 and is_header(self._buf[0]) and self._buf[1] == CHECK

    def _next(self) -> Frame | Rejected | None:
        skipped = self._skip_to_start("no header (55|aa|fx) 5a")
        if skipped is not None:
            return skipped
        buf = self._buf
        if len(buf) < FRAME_LEN:
            return None
        expected, got = sum8(buf[2:23]), buf[23]
        if expected != got:
            self.counters.bad_frames += 1
            return self._skip_to_start(
                f"checksum mismatch: computed {expected:02x}, frame says {got:02x}", 1)
        frame = decode(bytes(buf[:FRAME_LEN]))
        problem = frame.problem()
        if problem is not None:
            self.counters.bad_frames += 1
            self.counters.implausible += 1
            return self._skip_to_start(problem, 1)
        del buf[:FRAME_LEN]
        self.counters.frames += 1
        return frame


class EnergyCounter:
    """Energy from the 16-bit CF pulse counter, sans I/O: feed frames, read ``wh``.

    The first frame sets the baseline. Differences are taken modulo 65536 (the
    counter wraps; adj bit7 flags it), so one wrap between two frames is handled;
    at 20 frames/s that leaves a wide margin (65536 pulses is ~95 Wh, over a
    minute at 5.5 kW). A step worth more than :data:`MAX_W` over the time since
    the previous frame (a glitch, or a missed wrap after a long gap) is dropped
    and counted in :attr:`rejected`, as Tasmota's "CSE: Overload".
    """

    def __init__(self, max_w: float = MAX_W) -> None:
        self.max_w = max_w
        self.wh = 0.0
        self.pulses = 0
        self.rejected = 0
        self._last: int | None = None
        self._t: float | None = None

    def update(self, cf: int, pcoef: int, now: float) -> float:
        """Account one frame's counter (``now`` in seconds); return the total in Wh."""
        if self._last is not None and self._t is not None:
            delta = (cf - self._last) & 0xFFFF
            wh = delta * pcoef / 3.6e9
            dt = max(now - self._t, 0.05)
            if wh * 3600 / dt > self.max_w * 1.1:
                self.rejected += 1
            else:
                self.pulses += delta
                self.wh += wh
        self._last, self._t = cf & 0xFFFF, now
        return self.wh

    @property
    def kwh(self) -> float:
        return self.wh / 1000.0

    def reset(self) -> None:
        self._last = self._t = None
