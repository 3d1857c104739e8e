"""Per-sensor aggregation over a report window, with quality flags.

A report carries, per quantity, a robust centre (by default the mean of what is
left after trimming 10 % of the samples from each end, so one spike from a
passing bus does not move it), and as configured the min, max and the
sensor's sample count, plus a bitmask of what went wrong in the window. The
flags say what happened; values are never silently corrected.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntFlag

from agent.wire.model import Record
from drivers.base import Reading

#: Samples kept per quantity and window; beyond it every other one is dropped
#: (a 60 s window at the fastest 0.2 s read interval holds 300).
MAX_SAMPLES = 4096
CENTRES = ("trimmed", "median", "mean")


class Quality(IntFlag):
    """Quality flag bits, documented in docs/payload.md; absent record means 0."""

    WARMING_UP = 0x01  # no reading yet: the sensor was still warming up all window
    STALE = 0x02  # no reading at all in the window
    ERRORS = 0x04  # corrupt frames or device errors in the window
    DISCONNECTED = 0x08  # the port was gone for part of the window
    OUT_OF_RANGE = 0x10  # some value lay outside the sensor's specified range
    HUMID = 0x20  # relative humidity above 70 % (PM readings unreliable)
    FAULT = 0x40  # the sensor reports an internal fault


def median(values: Iterable[float]) -> float:
    """The median (not statistics.median: that module costs the daemon 0.3 MiB)."""
    s = sorted(values)
    if not s:
        raise ValueError("median of no values")
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def centre(values: list[float], how: str = "trimmed") -> float:
    """The window's central value: trimmed mean (10 % each end), median or mean."""
    if how == "median":
        return median(values)
    if how == "trimmed" and len(values) >= 5:
        k = max(1, len(values) // 10)
        values = sorted(values)[k:-k]
    return math.fsum(values) / len(values)


@dataclass(slots=True)
class WindowSummary:
    """One sensor's closed window."""

    sensor: str
    samples: int
    flags: Quality
    stats: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # centre, min, max


class Aggregator:
    """Thread-safe accumulator for one sensor; the sampling loop adds, the reporter closes."""

    def __init__(
        self,
        sensor: str,
        prefix: str = "",
        valid_range: Mapping[str, tuple[float, float]] | None = None,
        how: str = "trimmed",
    ) -> None:
        if how not in CENTRES:
            raise ValueError(f"aggregate must be one of {CENTRES}")
        self.sensor = sensor
        self.prefix = prefix
        self.valid_range = dict(valid_range or {})
        self.how = how
        self._lock = threading.Lock()
        self._values: dict[str, list[float]] = {}
        self._samples = 0
        self._flags = Quality(0)

    def add(self, reading: Reading) -> None:
        with self._lock:
            self._samples += 1
            if reading.fault:
                self._flags |= Quality.FAULT
            for name, v in reading.values.items():
                if not math.isfinite(v):
                    self._flags |= Quality.ERRORS
                    continue
                lo, hi = self.valid_range.get(name, (-math.inf, math.inf))
                if not lo <= v <= hi:
                    self._flags |= Quality.OUT_OF_RANGE
                vals = self._values.setdefault(name, [])
                vals.append(v)
                if len(vals) > MAX_SAMPLES:
                    del vals[::2]  # keep memory bounded, the spread of the window kept

    def flag(self, flags: Quality) -> None:
        """Mark something that happened during the current window."""
        with self._lock:
            self._flags |= flags

    def close_window(self, carry: Quality = Quality(0)) -> WindowSummary:
        """Return the window's summary and start a new one.

        ``carry`` are conditions still true at the boundary (still warming up,
        still disconnected), so they mark the next window too. Warm-up readings
        are discarded by the drivers, so WARMING_UP only stays on a window that
        got no reading because of it.
        """
        with self._lock:
            values, samples, flags = self._values, self._samples, self._flags
            self._values, self._samples, self._flags = {}, 0, carry
        if samples == 0:
            flags |= Quality(0) if flags & Quality.WARMING_UP else Quality.STALE
        else:
            flags &= ~Quality.WARMING_UP
        return WindowSummary(
            self.sensor,
            samples,
            flags,
            {k: (centre(v, self.how), min(v), max(v)) for k, v in values.items() if v},
        )

    def records(self, summary: WindowSummary, stats: Iterable[str]) -> list[Record]:
        """Records for a closed window, named as docs/payload.md describes."""
        want = set(stats)
        out: list[Record] = []
        for name, (mean, lo, hi) in summary.stats.items():
            rec = self.prefix + name
            if "mean" in want:
                out.append(Record(rec, value=mean))
            if "min" in want:
                out.append(Record(f"{rec}:min", value=lo))
            if "max" in want:
                out.append(Record(f"{rec}:max", value=hi))
        if "count" in want:
            out.append(Record(f"{self.sensor}:n", value=summary.samples))
        if summary.flags:
            out.append(Record(f"{self.sensor}:q", value=int(summary.flags)))
        return out
