"""Waste-bin fill level from an ultrasonic ranger in the lid, with the parking drivers.

Sans-I/O like :mod:`agent.detectors.occupancy`: ``update(t, distance_mm)``
updates :attr:`FillLevelDetector.fill_pct` and returns events, only on change:

* ``needs_collection`` once the fill has been at least ``full_pct`` for ``debounce_s``;
* ``collected`` once, after that, it has been at most ``full_pct - hysteresis_pct``
  for ``debounce_s`` (the bin was emptied; settling rubbish alone does not do it).

``fill_pct = 100 * (depth_mm - distance) / depth_mm``, clamped to 0..100, taken on
the median of the last ``median_window`` accepted readings (single spikes never
count); at or below ``empty_pct`` it reads 0 (noise at the bottom).

Lid openings (someone drops a bag, the truck tips the bin) make the sensor see
the sky, a hand, or nothing: readings longer than the bin (``depth_mm`` plus
``long_margin_mm``) and no-echo samples are always ignored; readings shorter
than ``lid_open_mm`` are ignored until they have lasted ``lid_open_s`` (then the
bin really is full to the lid). :attr:`lid_open` says whether the last
``lid_open_s`` looked like an open lid.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from agent.core.aggregate import median

__all__ = ["COLLECTED", "NEEDS_COLLECTION", "FillEvent", "FillLevelDetector"]

NEEDS_COLLECTION = "needs_collection"
COLLECTED = "collected"


@dataclass(frozen=True, slots=True)
class FillEvent:
    t: float
    bin: str
    event: str  # "needs_collection" | "collected"
    fill_pct: float

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "bin": self.bin, "event": self.event,
                "fill_pct": round(self.fill_pct, 1)}


class FillLevelDetector:
    """One bin (see the module docstring).

    Defaults: ``full_pct=80`` leaves room for the hours before a truck comes;
    ``hysteresis_pct=10`` so rubbish settling from 81 % to 78 % is not a
    collection; ``debounce_s=60`` is longer than any disposal; ``lid_open_mm=100``
    is closer than any plausible rubbish surface in a closed lid;
    ``lid_open_s=120`` is longer than a truck takes to tip a bin.
    """

    def __init__(self, bin: str, *, depth_mm: float, full_pct: float = 80.0,
                 empty_pct: float = 3.0, hysteresis_pct: float = 10.0,
                 debounce_s: float = 60.0, lid_open_mm: float = 100.0,
                 lid_open_s: float = 120.0, long_margin_mm: float = 100.0,
                 median_window: int = 5) -> None:
        if depth_mm <= 0:
            raise ValueError("depth_mm must be positive")
        if not 0 <= empty_pct < full_pct - hysteresis_pct < full_pct <= 100:
            raise ValueError("need 0 <= empty_pct < full_pct - hysteresis_pct < full_pct <= 100")
        self.bin = bin
        self.depth_mm = float(depth_mm)
        self.full_pct = float(full_pct)
        self.empty_pct = float(empty_pct)
        self.hysteresis_pct = float(hysteresis_pct)
        self.debounce_s = float(debounce_s)
        self.lid_open_mm = float(lid_open_mm)
        self.lid_open_s = float(lid_open_s)
        self.long_margin_mm = float(long_margin_mm)
        self._window: deque[float] = deque(maxlen=median_window)
        self.fill_pct: float | None = None
        self.needs_collection = False
        self._pending_since: float | None = None
        self._short_since: float | None = None
        self._odd_since: float | None = None
        self._last_t: float | None = None
        self.ignored = 0

    @property
    def lid_open(self) -> bool:
        return (self._odd_since is not None and self._last_t is not None
                and self._last_t - self._odd_since >= self.lid_open_s)

    def snapshot(self) -> dict[str, Any]:
        return {"bin": self.bin, "fill_pct": self.fill_pct,
                "needs_collection": self.needs_collection, "lid_open": self.lid_open,
                "ignored": self.ignored}

    def update(self, t: float, distance_mm: float | None) -> list[FillEvent]:
        """Feed one reading (``None``: no echo); updates ``fill_pct``, returns events."""
        self._last_t = t
        d = distance_mm
        if d is not None and (not math.isfinite(d) or d < 0):
            d = None
        if d is None or d > self.depth_mm + self.long_margin_mm:
            if self._odd_since is None:
                self._odd_since = t
            self.ignored += 1
            return []
        if d < self.lid_open_mm:
            if self._short_since is None:
                self._short_since = t
            if self._odd_since is None:
                self._odd_since = t
            if t - self._short_since < self.lid_open_s:
                self.ignored += 1
                return []
        else:
            self._short_since = None
        self._odd_since = None

        self._window.append(d)
        m = median(self._window)
        pct = min(max(100.0 * (self.depth_mm - m) / self.depth_mm, 0.0), 100.0)
        if pct <= self.empty_pct:
            pct = 0.0
        self.fill_pct = pct

        if not self.needs_collection:
            crossing = pct >= self.full_pct
        else:
            crossing = pct <= self.full_pct - self.hysteresis_pct
        if not crossing:
            self._pending_since = None
            return []
        if self._pending_since is None:
            self._pending_since = t
        if t - self._pending_since < self.debounce_s:
            return []
        self._pending_since = None
        self.needs_collection = not self.needs_collection
        kind = NEEDS_COLLECTION if self.needs_collection else COLLECTED
        return [FillEvent(t=t, bin=self.bin, event=kind, fill_pct=pct)]
