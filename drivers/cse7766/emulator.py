"""The CSE7766 emulated: a transmit-only chip streaming 24-byte frames (no I/O).

``CSE7766Model(source)`` sends a frame every ``interval_s`` (50 ms like the
chip) with V/I/P encoded as cycle counts of its coefficients, and the CF pulse
counter advanced by the energy the source's watts represent (one pulse = Pcoef
µJ), wrapping at 65536 with adj bit7 set on the frame that wrapped. Watts below
``min_w`` are "no load": header ``F2`` (power cycle out of range). With
``calibrated=False`` the header is ``AA`` and the coefficient fields are empty;
cycles then follow Tasmota's default coefficients. Host bytes are ignored.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import NamedTuple

from ..emulation.plug import tracebase_source
from .codec import (
    ADJ_CF_OVERFLOW,
    ADJ_I,
    ADJ_P,
    ADJ_V,
    BIT_P_RANGE,
    CYCLE_MAX,
    DEFAULT_ICOEF,
    DEFAULT_PCOEF,
    DEFAULT_VCOEF,
    NORMAL,
    UNCALIBRATED,
    encode_frame,
)

__all__ = ["CSE7766Model", "SentFrame"]

#: The coefficients in the reference's real frame (a Sonoff POW R2).
COEFFICIENTS = (190800, 16030, 5195000)


class SentFrame(NamedTuple):
    t: float
    w: float
    v: float
    a: float
    cf: int
    raw: bytes


class CSE7766Model:
    """Device side of a CSE7766 (a :class:`drivers.emulation.DeviceModel`)."""

    def __init__(
        self,
        source: Callable[[float], float] | None = None,
        *,
        voltage: float = 230.0,
        interval_s: float = 0.05,
        coefficients: tuple[int, int, int] = COEFFICIENTS,
        calibrated: bool = True,
        min_w: float = 0.5,
        cf_start: int = 0,
        keep_sent: int = 1000,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.source = source if source is not None else tracebase_source()
        self.voltage = voltage
        self.interval_s = interval_s
        self.coefficients = coefficients
        self.calibrated = calibrated
        self.min_w = min_w
        self.pulses = float(cf_start)
        self.sent: deque[SentFrame] = deque(maxlen=keep_sent)
        self.stats = {"frames": 0, "ignored_bytes": 0, "resets": 0}
        self._next: float | None = None
        self._t: float | None = None

    def receive(self, data: bytes, now: float) -> bytes:
        self.stats["ignored_bytes"] += len(data)  # TX-only chip
        return b""

    def reset(self, now: float) -> None:
        self.stats["resets"] += 1
        self._next = self._t = None

    def tick(self, now: float) -> list[bytes]:
        if self._next is None:
            self._next = now
        out: list[bytes] = []
        while now >= self._next:
            out.append(self.frame(self._next))
            self._next += self.interval_s
        return out

    def frame(self, now: float) -> bytes:
        """The frame sent at ``now`` (advances the CF counter)."""
        w = max(float(self.source(now)), 0.0)
        vc, ic, pc = self.coefficients if self.calibrated else (
            DEFAULT_VCOEF, DEFAULT_ICOEF, DEFAULT_PCOEF)
        before = int(self.pulses)
        if self._t is not None:
            self.pulses += w * (now - self._t) * 1e6 / pc  # one pulse per Pcoef µJ
        self._t = now
        cf = int(self.pulses) & 0xFFFF
        wrapped = int(self.pulses) >> 16 != before >> 16
        v = self.voltage
        vcycle = round(vc / v)
        a = w / v
        icycle = min(round(ic / a), CYCLE_MAX) if a > 0 else CYCLE_MAX
        header = UNCALIBRATED if not self.calibrated else NORMAL
        adj = ADJ_V | ADJ_I
        if w < self.min_w:
            header, pcycle = 0xF0 | BIT_P_RANGE, CYCLE_MAX
        else:
            pcycle = round(pc / w)
            adj |= ADJ_P
        if wrapped:
            adj |= ADJ_CF_OVERFLOW
        coef = (vc, ic, pc) if self.calibrated else (0, 0, 0)
        raw = encode_frame(header, coef[0], vcycle, coef[1], icycle, coef[2], pcycle, adj, cf)
        self.stats["frames"] += 1
        self.sent.append(SentFrame(now, w if w >= self.min_w else 0.0, v, a, cf, raw))
        return raw
