"""People passing under a two-zone time-of-flight sensor (ST UM2600), from its zone samples.

Pure: no I/O, no clock of its own. Feed the :class:`ZoneSample`\\ s a
VL53L1X delivers in counting mode (``t``, ``zone`` 0 or 1, ``distance_mm`` or None) to
:meth:`PassageCounter.update`; it returns :class:`Passage`\\ s.

The algorithm is UM2600's (ST's reference application STSW-IMG010 gives its constants):

* each zone keeps its last ``window`` ranges (10: about 0.7 s at 33 ms a measurement); a
  range that is missing (no usable range status), at or under ``min_mm`` (the wraparound
  case) or nearer than ``blind_mm`` counts as the far end of the use case: nobody;
* someone is in a zone while the nearest of its window is under ``threshold_mm`` (1600 mm
  for a sensor 2.4 m over the floor: anything taller than 0.8 m);
* whenever a zone's occupancy changes, the pair becomes a state: 1 zone 0 only, 2 zone 1
  only, 3 both, 0 nobody; the states since the last 0 are the *path*;
* when the path ends (state 0), a walker who appeared in zone 0 alone and was last seen in
  zone 1 alone went ``in`` (0 1 3 2 0 in UM2600's notation); zone 1 to zone 0 is ``out``.
  Anything else - stepping into zone 0 and back (0 1 0), reaching both zones and turning
  back (0 1 3 1 0), dithering in the middle (0 1 3 1 3 1 0) - is not a passage. One path
  gives at most one passage. Only one zone changes at a time, so a path goes 1 or 2, then 3,
  then 1 or 2 again...: its first and last states say it all (ST's code keeps the first
  three and overwrites the third with the last, to the same effect).

Limits, UM2600's too: one person at a time. Two people walking a step apart are one path
(one count); two crossing each other under the sensor are neither. A passage's time is when
the walker left the zone they came from (their last change from both zones to the far one).

*Blind*: something on the cover glass ranges a few centimetres in both zones. Ranges nearer
than ``blind_mm`` never count as a person, and ``blind_after`` of them in a row (missing
ranges do not break the run, a far one does) raise the ``blind`` flag until a plausible
range comes back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["Passage", "PassageConfig", "PassageCounter"]

Direction = Literal["in", "out"]
#: The states of the zone pair: which zones see someone.
NOBODY, ZONE0, ZONE1, BOTH = 0, 1, 2, 3


class ZoneSampleLike(Protocol):
    t: float
    zone: int
    distance_mm: int | None


@dataclass(frozen=True, slots=True)
class Passage:
    """Someone walked through: when (the sample time they left their first zone) and which
    way (``in``: from zone 0 to zone 1, unless the counter is reversed)."""

    t: float
    direction: Direction


@dataclass(frozen=True, slots=True)
class PassageConfig:
    """UM2600's thresholds (STSW-IMG010's 2.4 m door-jamb profile by default)."""

    #: Someone is in a zone while its nearest recent range is under this (one value, or one
    #: per zone).
    threshold_mm: int | tuple[int, int] = 1600
    #: Ranges at or under this count as nobody (ST: MIN_DISTANCE, the wraparound case).
    min_mm: int = 0
    #: Ranges per zone the nearest is taken over (ST: DISTANCES_ARRAY_SIZE).
    window: int = 10
    #: Ranges nearer than this are something on the cover glass, never a person.
    blind_mm: int = 100
    #: Near ranges in a row (either zone) that make the sensor ``blind``.
    blind_after: int = 20
    #: Swap ``in`` and ``out`` (the sensor mounted the other way round).
    reverse: bool = False

    def __post_init__(self) -> None:
        if self.window < 1 or self.blind_after < 1:
            raise ValueError("window and blind_after are at least 1")
        for limit in self.thresholds:
            if limit <= max(self.min_mm, self.blind_mm):
                raise ValueError(f"threshold_mm {limit} must be over min_mm and blind_mm")

    @property
    def thresholds(self) -> tuple[int, int]:
        t = self.threshold_mm
        return (t, t) if isinstance(t, int) else (int(t[0]), int(t[1]))


@dataclass
class _Path:
    """The states since nobody was seen: the first, the last, how many."""

    first: int = NOBODY
    last: int = NOBODY
    length: int = 0
    left_both_at: float | None = None  # the last change from BOTH to one zone


@dataclass
class PassageCounter:
    """UM2600's two-zone state machine (see the module docstring)."""

    config: PassageConfig = field(default_factory=PassageConfig)

    def __post_init__(self) -> None:
        n = self.config.window
        self._windows: tuple[deque[float], deque[float]] = (deque(maxlen=n), deque(maxlen=n))
        self.occupied = [False, False]
        self.path = _Path()
        self.counts = {"in": 0, "out": 0, "turned_back": 0}
        self._near_run = 0
        self.blind = False
        self.last_t: float | None = None

    # -- what it says now ------------------------------------------------------------------
    @property
    def occupancy(self) -> int:
        """Zones someone is in now (0, 1 or 2)."""
        return sum(self.occupied)

    @property
    def flags(self) -> set[str]:
        """Data-quality flags: ``blind`` (covered), ``warming_up`` (a zone has no range yet)."""
        out = {"blind"} if self.blind else set()
        if not all(self._windows):
            out.add("warming_up")
        return out

    def snapshot(self) -> dict[str, Any]:
        """The state as data (``citynode status``, tests): no ranges, no times of people."""
        return {"occupied": list(self.occupied), "path_states": self.path.length,
                "blind": self.blind, **self.counts}

    # -- input ----------------------------------------------------------------------------
    def update(self, samples: Iterable[ZoneSampleLike]) -> list[Passage]:
        """Feed zone samples in time order; the passages they complete."""
        out: list[Passage] = []
        for s in samples:
            p = self.feed(s.t, s.zone, s.distance_mm)
            if p is not None:
                out.append(p)
        return out

    def feed(self, t: float, zone: int, distance_mm: float | None) -> Passage | None:
        """One zone sample; a passage if it completed one."""
        if zone not in (0, 1):
            raise ValueError(f"zone is 0 or 1, not {zone!r}")
        cfg = self.config
        self.last_t = t
        far = float("inf")
        if distance_mm is None:
            mm = far
        elif distance_mm < cfg.blind_mm:
            self._near_run += 1
            mm = far
        else:
            self._near_run = 0
            self.blind = False
            mm = far if distance_mm <= cfg.min_mm else float(distance_mm)
        if self._near_run >= cfg.blind_after:
            self.blind = True
        window = self._windows[zone]
        window.append(mm)
        now = min(window) < cfg.thresholds[zone]
        if now == self.occupied[zone]:
            return None
        self.occupied[zone] = now
        return self._step(t, self.occupied[0] * ZONE0 + self.occupied[1] * ZONE1)

    def _step(self, t: float, state: int) -> Passage | None:
        path = self.path
        if state != NOBODY:
            if path.last == BOTH and state != BOTH:
                path.left_both_at = t
            if path.length == 0:
                path.first = state
            path.last = state
            path.length += 1
            return None
        self.path = _Path()
        if path.length == 0:
            return None
        if (path.first, path.last) == (ZONE0, ZONE1):
            direction: Direction = "in"
        elif (path.first, path.last) == (ZONE1, ZONE0):
            direction = "out"
        else:
            self.counts["turned_back"] += 1
            return None
        if self.config.reverse:
            direction = "out" if direction == "in" else "in"
        self.counts[direction] += 1
        return Passage(path.left_both_at if path.left_both_at is not None else t, direction)
