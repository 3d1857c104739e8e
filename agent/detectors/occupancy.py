"""Parking-bay occupancy from an ultrasonic ranger above (or in front of) the bay.

Sans-I/O: feed ``update(t, distance_mm)`` (``None`` = no echo) at the sensor's
sample rate (about 1 Hz) and get :class:`Event` objects back, only on change.
The same class runs in the daemon, in ``citynode detect occupancy`` (offline
replay) and in ``bench/eval_parking.py``. docs/parking.md explains the states to
platform people.

State machine (``None`` until the first decision)::

               median < baseline - threshold          held for debounce_s
     free  ------------------------------------------------------------->  occupied
           <-------------------------------------------------------------
               median > baseline - threshold + hysteresis, for debounce_s

     any ---- median < blocked_mm for blocked_s ----------------------->  blocked
     any ---- no valid reading for no_echo_s --------------------------->  no_echo
     any ---- every reading within stuck_tolerance_mm for stuck_s ------>  stuck
     fault -- condition gone, then a level held for debounce_s --------->  free | occupied

* The level (free/occupied) is judged on the median of the last
  ``median_window`` valid readings, so isolated spikes (rain, snow, cross-talk
  from a neighbour's sensor) never reach it; no-echo samples are left out.
* The median must stay on the new side of the hysteresis band for
  ``debounce_s``, counted from the first raw reading that supported the change
  (so the median's own lag is not added): a pedestrian or a trolley (1-4 s)
  never changes the state, an arrival or departure is reported about
  ``debounce_s`` after it happened.
* Readings below ``blocked_mm`` never count as a car: they are what snow, dirt
  or a leaf on the transducer look like; held for ``blocked_s`` they are
  ``blocked``.
* Faults win over levels (no_echo, then blocked, then stuck). When the fault's
  condition ends the detector forgets the level and keeps reporting the fault
  until a fresh level has been held for ``debounce_s``; then one event
  (e.g. ``blocked -> free``).
* The baseline (empty-bay distance, from ``citynode calibrate BAY``) follows
  slow drift (temperature changes the speed of sound by about 0.17 %/°C) only
  while the bay is confirmed free, no change is pending and the median is
  within ``drift_band_mm`` of it: an exponential average with time constant
  ``drift`` seconds.
* Without a baseline (``baseline_mm=None``) the detector buffers the first
  ``auto_baseline_s`` seconds, takes their median as the baseline and then
  replays the buffer: right for an empty bay, wrong if a car was there.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from agent.core.aggregate import median as median_of

__all__ = [
    "BLOCKED",
    "FAULT_STATES",
    "FREE",
    "NO_ECHO",
    "OCCUPIED",
    "STATES",
    "STUCK",
    "BayGroup",
    "CalibrationError",
    "Event",
    "OccupancyDetector",
    "Summary",
    "calibrate",
]

FREE = "free"
OCCUPIED = "occupied"
BLOCKED = "blocked"
NO_ECHO = "no_echo"
STUCK = "stuck"
STATES = (FREE, OCCUPIED, BLOCKED, NO_ECHO, STUCK)
FAULT_STATES = frozenset({BLOCKED, NO_ECHO, STUCK})


@dataclass(frozen=True, slots=True)
class Event:
    """A state change of one bay, with the evidence it was decided on."""

    t: float
    bay: str
    state: str
    previous: str | None
    median_mm: float | None
    baseline_mm: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "bay": self.bay,
            "state": self.state,
            "previous": self.previous,
            "median_mm": None if self.median_mm is None else round(self.median_mm, 1),
            "baseline_mm": None if self.baseline_mm is None else round(self.baseline_mm, 1),
        }


class CalibrationError(ValueError):
    """The calibration readings cannot be an empty bay's baseline (the message says why)."""


def _quantile(sorted_vals: list[float], q: float) -> float:
    i = min(max(round(q * (len(sorted_vals) - 1)), 0), len(sorted_vals) - 1)
    return sorted_vals[i]


def calibrate(samples: Iterable[float | None], *, min_samples: int = 10,
              max_spread_mm: float = 50.0, blocked_mm: float = 150.0,
              max_missing: float = 0.2) -> float:
    """The empty-bay baseline: the median of the readings (``None`` = no echo).

    Refuses (:class:`CalibrationError`) fewer than ``min_samples`` valid
    readings, more than ``max_missing`` of them without echo, a spread (10th to
    90th percentile) above ``max_spread_mm`` (something moved under the sensor),
    or a median below ``blocked_mm`` (the sensor is covered).
    """
    all_samples = list(samples)
    valid = sorted(float(s) for s in all_samples if s is not None and math.isfinite(s))
    if len(valid) < min_samples:
        raise CalibrationError(f"only {len(valid)} valid readings, need {min_samples}")
    missing = 1.0 - len(valid) / len(all_samples)
    if missing > max_missing:
        raise CalibrationError(f"{missing:.0%} of the readings had no echo "
                               f"(at most {max_missing:.0%}): check the sensor's aim")
    med = median_of(valid)
    if med < blocked_mm:
        raise CalibrationError(f"median {med:.0f} mm is below {blocked_mm:.0f} mm: "
                               "the sensor looks covered (snow, dirt)")
    spread = _quantile(valid, 0.9) - _quantile(valid, 0.1)
    if spread > max_spread_mm:
        raise CalibrationError(f"readings spread over {spread:.0f} mm (at most "
                               f"{max_spread_mm:.0f}): is the bay really empty and still?")
    return float(med)


class OccupancyDetector:
    """One bay's state machine (see the module docstring); sans-I/O.

    Defaults assume a sensor 2-3 m above the bay sampled at about 1 Hz: a car
    reads 300-900 mm, i.e. more than 1 m closer than the floor, so
    ``threshold_mm=700`` separates them with room for slow drift;
    ``hysteresis_mm=200`` stops a reading near the threshold from flapping;
    ``debounce_s=10`` is more than twice the longest pedestrian or trolley dip
    (4 s) plus the median's span, and short enough for a parking app;
    ``blocked_mm=150`` lies below any car and above the blind zone of most
    rangers (raise it for sensors that clamp short distances, e.g. MaxBotix
    HRXL to 300 mm); ``no_echo_s=30`` rides out rain; ``stuck_s=1800`` (None
    disables) flags a sensor repeating the very same value for half an hour,
    which a live ranger never does with mm resolution.
    """

    def __init__(self, bay: str, *, baseline_mm: float | None, threshold_mm: float = 700.0,
                 hysteresis_mm: float = 200.0, debounce_s: float = 10.0,
                 median_window: int = 5, blocked_mm: float = 150.0, blocked_s: float = 60.0,
                 no_echo_s: float = 30.0, stuck_s: float | None = 1800.0,
                 stuck_tolerance_mm: float = 0.0, drift: float | None = 1800.0,
                 drift_band_mm: float = 100.0, auto_baseline_s: float = 60.0) -> None:
        if median_window < 1:
            raise ValueError("median_window must be at least 1")
        if hysteresis_mm < 0 or hysteresis_mm >= threshold_mm:
            raise ValueError("hysteresis_mm must be in [0, threshold_mm)")
        if debounce_s < 0 or blocked_s < 0 or no_echo_s <= 0:
            raise ValueError("debounce_s, blocked_s must be >= 0 and no_echo_s > 0")
        self.bay = bay
        self.baseline_mm = None if baseline_mm is None else float(baseline_mm)
        self.baseline_source = "auto" if baseline_mm is None else "given"
        self.threshold_mm = float(threshold_mm)
        self.hysteresis_mm = float(hysteresis_mm)
        self.debounce_s = float(debounce_s)
        self.median_window = int(median_window)
        self.blocked_mm = float(blocked_mm)
        self.blocked_s = float(blocked_s)
        self.no_echo_s = float(no_echo_s)
        self.stuck_s = stuck_s
        self.stuck_tolerance_mm = float(stuck_tolerance_mm)
        self.drift = drift
        self.drift_band_mm = float(drift_band_mm)
        self.auto_baseline_s = float(auto_baseline_s)

        self.state: str | None = None
        self.median_mm: float | None = None
        self._window: deque[tuple[float, float]] = deque(maxlen=self.median_window)
        self._level: str | None = None
        self._candidate: str | None = None
        self._candidate_since = 0.0
        self._fault: str | None = None
        self._last_t: float | None = None
        self._last_valid_t: float | None = None
        self._blocked_since: float | None = None
        self._run_value: float | None = None
        self._run_since = 0.0
        self._pending: list[tuple[float, float | None]] = []
        self.samples = 0
        self.no_echo_samples = 0

    # -- public ----------------------------------------------------------------------------

    def calibrate(self, samples: Iterable[float | None], **kwargs: Any) -> float:
        """Set the baseline from an empty bay's readings (see :func:`calibrate`)."""
        kwargs.setdefault("blocked_mm", self.blocked_mm)
        self.baseline_mm = calibrate(samples, **kwargs)
        self.baseline_source = "calibrated"
        self._level = None
        self._candidate = None
        return self.baseline_mm

    def update(self, t: float, distance_mm: float | None) -> list[Event]:
        """Feed one reading (``None``: no echo); returns the state changes it caused."""
        if distance_mm is not None:
            distance_mm = float(distance_mm)
            if not math.isfinite(distance_mm) or distance_mm < 0:
                distance_mm = None
        if self.baseline_mm is None and self.baseline_source == "auto":
            self._pending.append((t, distance_mm))
            if t - self._pending[0][0] >= self.auto_baseline_s:
                return self._settle_auto()
            return []
        return self._step(t, distance_mm)

    def flush(self) -> list[Event]:
        """End of input: settle a pending automatic baseline with what was buffered."""
        if self._pending:
            return self._settle_auto()
        return []

    @property
    def occupied(self) -> bool | None:
        if self.state == OCCUPIED:
            return True
        if self.state == FREE:
            return False
        return None

    def snapshot(self) -> dict[str, Any]:
        """The detector's state for status pages and logs."""
        return {
            "bay": self.bay,
            "state": self.state,
            "baseline_mm": None if self.baseline_mm is None else round(self.baseline_mm, 1),
            "baseline_source": self.baseline_source,
            "median_mm": self.median_mm,
            "pending": self._candidate,
            "pending_since": self._candidate_since if self._candidate else None,
            "fault": self._fault,
            "last_t": self._last_t,
            "last_valid_t": self._last_valid_t,
            "samples": self.samples,
            "no_echo_samples": self.no_echo_samples,
        }

    # -- internals -------------------------------------------------------------------------

    def _settle_auto(self) -> list[Event]:
        pending, self._pending = self._pending, []
        valid = [d for _t, d in pending if d is not None]
        if len(valid) >= 3:
            self.baseline_mm = float(median_of(valid))
        events: list[Event] = []
        for t, d in pending:
            events += self._step(t, d)
        return events

    def _set(self, t: float, state: str) -> list[Event]:
        if state == self.state:
            return []
        ev = Event(t=t, bay=self.bay, state=state, previous=self.state,
                   median_mm=self.median_mm, baseline_mm=self.baseline_mm)
        self.state = state
        return [ev]

    def _side(self, d: float) -> str | None:
        b = self.baseline_mm
        assert b is not None
        if d < b - self.threshold_mm:
            return OCCUPIED
        if d > b - self.threshold_mm + self.hysteresis_mm:
            return FREE
        return None

    def _forget_level(self) -> None:
        self._level = None
        self._candidate = None

    def _step(self, t: float, d: float | None) -> list[Event]:
        if self._last_t is not None and t < self._last_t:
            raise ValueError(f"bay {self.bay}: time went backwards ({t} < {self._last_t})")
        dt = 0.0 if self._last_t is None else t - self._last_t
        self._last_t = t
        if self._last_valid_t is None:
            self._last_valid_t = t
        self.samples += 1

        if d is None:
            self.no_echo_samples += 1
            if t - self._last_valid_t >= self.no_echo_s:
                self._fault = NO_ECHO
                self._window.clear()
                self.median_mm = None
                self._blocked_since = None
                self._run_value = None
                self._forget_level()
                return self._set(t, NO_ECHO)
            return []

        self._last_valid_t = t
        self._window.append((t, d))
        median = float(median_of(v for _t, v in self._window))
        self.median_mm = median

        if self._run_value is None or abs(d - self._run_value) > self.stuck_tolerance_mm:
            self._run_value = d
            self._run_since = t
        if median < self.blocked_mm:
            if self._blocked_since is None:
                self._blocked_since = t
        else:
            self._blocked_since = None

        fault = None
        if self._blocked_since is not None and t - self._blocked_since >= self.blocked_s:
            fault = BLOCKED
        elif self.stuck_s is not None and t - self._run_since >= self.stuck_s:
            fault = STUCK
        if fault is not None:
            self._fault = fault
            self._forget_level()
            return self._set(t, fault)
        self._fault = None

        if self.baseline_mm is None or median < self.blocked_mm:
            return []  # no baseline yet, or possibly a cover forming: hold
        side = self._side(median)
        if side is None:
            if self._level is not None:
                self._candidate = None
                return []
            b = self.baseline_mm
            side = OCCUPIED if median < b - self.threshold_mm + self.hysteresis_mm / 2 else FREE
        if side == self._level:
            self._candidate = None
            if side == FREE and self.drift:
                self._track(median, dt)
            return []
        if side != self._candidate:
            self._candidate = side
            need = len(self._window) // 2 + 1
            ts = [ti for ti, di in self._window if self._side(di) == side]
            self._candidate_since = ts[-need] if len(ts) >= need else (ts[0] if ts else t)
        if t - self._candidate_since >= self.debounce_s:
            self._level = side
            self._candidate = None
            return self._set(t, side)
        return []

    def _track(self, median: float, dt: float) -> None:
        b = self.baseline_mm
        assert b is not None and self.drift
        if abs(median - b) < self.drift_band_mm:
            self.baseline_mm = b + (median - b) * min(1.0, min(dt, 60.0) / self.drift)


@dataclass(frozen=True, slots=True)
class Summary:
    """All bays of a node in three integers: bit i stands for ``bays[i]``.

    ``occupied``: the bay is occupied; ``faults``: blocked, no_echo or stuck;
    ``unknown``: no decision yet. A bay in none of them is free.
    """

    t: float | None
    bays: tuple[str, ...]
    occupied: int
    faults: int
    unknown: int

    @property
    def free(self) -> int:
        return ((1 << len(self.bays)) - 1) & ~(self.occupied | self.faults | self.unknown)

    def to_dict(self) -> dict[str, Any]:
        return {"t": self.t, "bays": list(self.bays), "occupied": self.occupied,
                "faults": self.faults, "unknown": self.unknown}


class BayGroup:
    """The bays of one node (any number; eight or more is usual), in a fixed order."""

    def __init__(self, detectors: Iterable[OccupancyDetector] = ()) -> None:
        self._dets: dict[str, OccupancyDetector] = {}
        self._last_t: float | None = None
        for d in detectors:
            self.add(d)

    def add(self, detector: OccupancyDetector) -> None:
        if detector.bay in self._dets:
            raise ValueError(f"duplicate bay {detector.bay!r}")
        self._dets[detector.bay] = detector

    @property
    def bays(self) -> tuple[str, ...]:
        return tuple(self._dets)

    def __getitem__(self, bay: str) -> OccupancyDetector:
        return self._dets[bay]

    def __len__(self) -> int:
        return len(self._dets)

    def __iter__(self) -> Iterator[OccupancyDetector]:
        return iter(self._dets.values())

    def update(self, bay: str, t: float, distance_mm: float | None) -> list[Event]:
        """Feed one reading to ``bay``'s detector (KeyError for an unknown bay)."""
        self._last_t = t if self._last_t is None else max(self._last_t, t)
        return self._dets[bay].update(t, distance_mm)

    def summary(self) -> Summary:
        occ = faults = unknown = 0
        for i, det in enumerate(self._dets.values()):
            if det.state == OCCUPIED:
                occ |= 1 << i
            elif det.state in FAULT_STATES:
                faults |= 1 << i
            elif det.state is None:
                unknown |= 1 << i
        return Summary(t=self._last_t, bays=self.bays, occupied=occ, faults=faults,
                       unknown=unknown)
