"""Per-sensor aggregation over a report window, with quality flags.

A report carries, per quantity, the mean and (as configured) min, max and the
sensor's sample count, plus a bitmask of what went wrong in the window. The
flags say what happened; values are never silently corrected.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntFlag

from drivers.base import Reading

from .payload import Record


class Quality(IntFlag):
    """Quality flag bits, documented in docs/payload.md; absent record means 0."""

    WARMING_UP = 0x01  # readings were discarded because the sensor was warming up
    STALE = 0x02  # no reading at all in the window
    ERRORS = 0x04  # corrupt frames or device errors in the window
    DISCONNECTED = 0x08  # the port was gone for part of the window
    OUT_OF_RANGE = 0x10  # some value lay outside the sensor's specified range
    HUMID = 0x20  # relative humidity above 70 % (PM readings unreliable)
    FAULT = 0x40  # the sensor reports an internal fault


@dataclass(slots=True)
class _Stat:
    n: int = 0
    total: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    def add(self, v: float) -> None:
        self.n += 1
        self.total += v
        self.lo = min(self.lo, v)
        self.hi = max(self.hi, v)


@dataclass(slots=True)
class WindowSummary:
    """One sensor's closed window."""

    sensor: str
    samples: int
    flags: Quality
    stats: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # mean, min, max


class Aggregator:
    """Thread-safe accumulator for one sensor; the sampling loop adds, the reporter closes."""

    def __init__(
        self,
        sensor: str,
        prefix: str = "",
        valid_range: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.sensor = sensor
        self.prefix = prefix
        self.valid_range = dict(valid_range or {})
        self._lock = threading.Lock()
        self._stats: dict[str, _Stat] = {}
        self._samples = 0
        self._flags = Quality(0)

    def add(self, reading: Reading) -> None:
        with self._lock:
            self._samples += 1
            for name, v in reading.values.items():
                if not math.isfinite(v):
                    self._flags |= Quality.ERRORS
                    continue
                lo, hi = self.valid_range.get(name, (-math.inf, math.inf))
                if not lo <= v <= hi:
                    self._flags |= Quality.OUT_OF_RANGE
                self._stats.setdefault(name, _Stat()).add(v)

    def flag(self, flags: Quality) -> None:
        """Mark something that happened during the current window."""
        with self._lock:
            self._flags |= flags

    def close_window(self, carry: Quality = Quality(0)) -> WindowSummary:
        """Return the window's summary and start a new one.

        ``carry`` are conditions still true at the boundary (still warming up,
        still disconnected), so they mark the next window too.
        """
        with self._lock:
            stats, samples, flags = self._stats, self._samples, self._flags
            self._stats, self._samples, self._flags = {}, 0, carry
        if samples == 0:
            flags |= Quality.STALE
        return WindowSummary(
            self.sensor,
            samples,
            flags,
            {k: (s.total / s.n, s.lo, s.hi) for k, s in stats.items() if s.n},
        )

    def records(self, summary: WindowSummary, stats: Iterable[str]) -> list[Record]:
        """SenML records for a closed window, named as docs/payload.md describes."""
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
