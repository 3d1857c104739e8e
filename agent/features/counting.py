"""Counting people in the daemon: radar frames, doorway ranges and PIR readings in; counts
per report interval out, and nothing else (docs/counting.md).

Each sensor gets the pure detector its device calls for, chosen by what its spec and table
say, never by type name:

* a tracking radar (a sample stream of people's positions and a ``[sensor.counting]``
  :class:`~drivers.families.counting.CountingLine`: the HLK-LD2450) feeds every frame to a
  :class:`~agent.detectors.crossing.CrossingCounter` - the class ``citynode detect
  crossings`` replays - which counts crossings of the line ``x = line_x_m`` in each
  direction, and says how many people are in the zone and whether to trust the counts;
* a two-zone time-of-flight ranger in ``mode = "counting"`` (a sample stream of zone
  ranges: the VL53L1X over a doorway) feeds a
  :class:`~agent.detectors.passage.PassageCounter` (ST UM2600);
* a PIR (a presence sensor without a sample stream) says only whether someone was there.

Each report carries, after the sensor's own records (docs/payload.md):

* ``<sensor>:in``, ``<sensor>:out``: crossings in each direction in the interval (radar,
  doorway); sent as 0 too, so "nobody" and "no report" differ;
* ``<sensor>:ppl``: people in the zone, the mean over the interval's frames (radar);
* ``<sensor>:pres``: the share of the interval with someone there, 0..1 (doorway: share of
  zone samples with someone under the sensor; PIR: share of readings with motion);
* ``<sensor>:cq``: the interval's counting quality flags, a bitmask (:data:`FLAG_BITS`),
  sent only when one was raised at any moment of the interval.

**Privacy by construction.** Positions, speeds and tracks never leave the detectors: what
a detector hands this module is a :class:`~agent.detectors.crossing.Crossing` (a time and a
direction) or a :class:`~agent.detectors.passage.Passage`, an occupancy count and a set of
flag names. A report's records are made in one place, :func:`interval_records`, from an
:class:`Interval` - integers, two means and flag names, nothing else - and the log lines
of this module name the sensor and counts only. The detectors log positions at DEBUG only,
which the journal does not keep at the default level (tests/test_counting_privacy.py).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from agent.features.base import Feature, FeatureContext, ReadingHandler, SampleStream
from agent.wire.model import Record

if TYPE_CHECKING:
    from agent.core.config import Config, SensorConfig

__all__ = ["FLAG_BITS", "RECORD_SUFFIXES", "Counting", "Interval", "counting_sensors",
           "crossing_counter", "interval_records"]

log = logging.getLogger("citynode.counting")

#: The quality flags of ``<sensor>:cq``: bit values (docs/counting.md).
FLAG_BITS = {"warming_up": 1, "blind": 2, "saturated": 4}
#: Every record this feature can send is ``<sensor>:<suffix>`` with one of these.
RECORD_SUFFIXES = ("in", "out", "ppl", "pres", "cq")
#: A sample may wait this long in the device: counts go out once per report, so there is
#: no latency to meet; the radar's driver reads at least every 0.2 s anyway.
SAMPLES_WITHIN_S = 1.0
#: A doorway sensor without a zone sample for this long is ``blind`` (it measures 15-30
#: times a second; the radar's no-frame limit is the same).
NO_SAMPLES_S = 5.0


@dataclass(frozen=True, slots=True)
class Interval:
    """What one sensor's counting says about one report interval: counts, means and flag
    names. There is no field a position, a speed or a track could go in."""

    crossings_in: int | None = None
    crossings_out: int | None = None
    people: float | None = None      # mean people in the zone (radar)
    presence: float | None = None    # share of the interval with someone there, 0..1
    flags: frozenset[str] = frozenset()


def interval_records(sensor: str, iv: Interval) -> list[Record]:
    """The records of one interval (the only place this feature makes records)."""
    out: list[Record] = []
    if iv.crossings_in is not None and iv.crossings_out is not None:
        out += [Record(f"{sensor}:in", value=float(iv.crossings_in)),
                Record(f"{sensor}:out", value=float(iv.crossings_out))]
    if iv.people is not None and math.isfinite(iv.people):
        out.append(Record(f"{sensor}:ppl", value=round(iv.people, 2)))
    if iv.presence is not None and math.isfinite(iv.presence):
        out.append(Record(f"{sensor}:pres", value=round(iv.presence, 2)))
    bits = sum(FLAG_BITS[f] for f in iv.flags if f in FLAG_BITS)
    if bits:
        out.append(Record(f"{sensor}:cq", value=float(bits)))
    return out


def _flag_text(flags: set[str]) -> str:
    """Flags for ``citynode status``: ``blind+saturated``, or ``none``."""
    return "+".join(sorted(flags)) or "none"


def crossing_counter(counting: Any) -> Any:
    """The :class:`~agent.detectors.crossing.CrossingCounter` a ``[sensor.counting]`` table
    asks for: the daemon's, and ``citynode detect crossings``' (from a table of defaults
    with its ``--line-x`` and ``--zone-y``), so both count alike."""
    from agent.detectors.crossing import CrossingCounter, CrossingParams

    params = CrossingParams(
        hysteresis_m=counting.hysteresis_m, gate_m=counting.gate_m,
        birth_frames=counting.birth_frames, coast_s=counting.coast_s,
        relink_s=counting.relink_s, blind_after_s=counting.blind_after_s,
        saturated_after_s=counting.saturated_after_s, warmup_s=counting.warmup_s)
    zone = None if counting.zone_y_m is None else (counting.zone_y_m[0], counting.zone_y_m[1])
    return CrossingCounter(counting.line_x_m, zone, params)


def _role(sensor: SensorConfig) -> str | None:
    """How a sensor takes part in counting: ``radar``, ``doorway``, ``presence`` or None."""
    from drivers.catalogue import spec_of
    from drivers.families.counting import CountingLine

    spec = spec_of(sensor)
    if spec.samples and isinstance(getattr(sensor, "counting", None), CountingLine):
        return "radar"
    if spec.samples and getattr(sensor, "mode", None) == "counting":
        return "doorway"
    if spec.kind == "presence" and not spec.samples and "motion" in spec.quantities:
        return "presence"
    return None


def counting_sensors(cfg: Config) -> list[tuple[SensorConfig, str]]:
    """The sensors that count people, with their role."""
    return [(s, role) for s in cfg.sensor if (role := _role(s)) is not None]


class _Counter(Protocol):
    def on_samples(self, batch: list[Any]) -> None: ...
    def on_reading(self, values: dict[str, float]) -> None: ...
    def tick(self, now: float) -> None: ...
    def close_interval(self) -> Interval: ...
    def status(self) -> dict[str, Any]: ...


@dataclass
class _Tally:
    """An interval's running sums (reset by each report)."""

    crossings_in: int = 0
    crossings_out: int = 0
    weight: float = 0.0
    samples: int = 0
    flags: set[str] = field(default_factory=set)


class _Radar:
    """A tracking radar's frames through a :class:`CrossingCounter`."""

    stream = True

    def __init__(self, name: str, counting: Any) -> None:
        from agent.detectors.crossing import from_mm

        self.name = name
        self.counter = crossing_counter(counting)
        self._from_mm = from_mm
        self.tally = _Tally()
        self.total = {"in": 0, "out": 0}
        self.refused = 0

    def on_samples(self, batch: list[Any]) -> None:
        for s in batch:
            try:
                crossings = self.counter.update(s.t, self._from_mm(s.targets))
            except ValueError:  # out of order, non-finite: the frame is not counted
                self.refused += 1
                if self.refused == 1 or self.refused % 1000 == 0:
                    log.warning("%s: %d radar frame(s) not counted (out of order or "
                                "malformed)", self.name, self.refused,
                                extra={"SENSOR": self.name, "EVENT": "counting_refused"})
                continue
            self._add(c.direction for c in crossings)
            self.tally.weight += self.counter.occupancy
            self.tally.samples += 1
            self.tally.flags |= self.counter.flags

    def _add(self, directions: Iterable[str]) -> None:
        for d in directions:
            self.total[d] += 1
            if d == "in":
                self.tally.crossings_in += 1
            else:
                self.tally.crossings_out += 1

    def on_reading(self, values: dict[str, float]) -> None:
        return None

    def tick(self, now: float) -> None:
        self.counter.tick(now)
        self.tally.flags |= self.counter.flags

    def close_interval(self) -> Interval:
        t = self.tally
        iv = Interval(t.crossings_in, t.crossings_out,
                      people=t.weight / t.samples if t.samples else None,
                      flags=frozenset(t.flags | self.counter.flags))
        self.tally = _Tally()
        return iv

    def status(self) -> dict[str, Any]:
        return {"in": self.total["in"], "out": self.total["out"],
                "people": self.counter.occupancy, "flags": _flag_text(self.counter.flags)}


class _Doorway(_Radar):
    """A two-zone time-of-flight ranger's zone samples through a :class:`PassageCounter`."""

    def __init__(self, name: str, counting: Any) -> None:
        from agent.detectors.passage import PassageConfig, PassageCounter

        self.name = name
        self.counter = PassageCounter(PassageConfig(
            threshold_mm=counting.threshold_mm, min_mm=counting.min_mm,
            window=counting.window, blind_mm=counting.blind_mm, reverse=counting.reverse))
        self.tally = _Tally()
        self.total = {"in": 0, "out": 0}
        self.refused = 0
        self._started: float | None = None
        self._last: float | None = None
        self._now: float | None = None

    def on_samples(self, batch: list[Any]) -> None:
        for s in batch:
            try:
                passage = self.counter.feed(s.t, s.zone, s.distance_mm)
            except ValueError:
                self.refused += 1
                continue
            if passage is not None:
                self._add((passage.direction,))
            self._last = s.t
            self.tally.weight += self.counter.occupancy > 0
            self.tally.samples += 1
            self.tally.flags |= self.counter.flags

    def _flags(self) -> set[str]:
        out = set(self.counter.flags)
        since = self._last if self._last is not None else self._started
        if self._now is not None and since is not None and self._now - since > NO_SAMPLES_S:
            out.add("blind")
        return out

    def tick(self, now: float) -> None:
        if self._started is None:
            self._started = now
        self._now = now
        self.tally.flags |= self._flags()

    def close_interval(self) -> Interval:
        t = self.tally
        iv = Interval(t.crossings_in, t.crossings_out,
                      presence=t.weight / t.samples if t.samples else None,
                      flags=frozenset(t.flags | self._flags()))
        self.tally = _Tally()
        return iv

    def status(self) -> dict[str, Any]:
        return {"in": self.total["in"], "out": self.total["out"],
                "someone": self.counter.occupancy > 0, "flags": _flag_text(self._flags())}


class _Presence:
    """A PIR: the share of readings with motion."""

    stream = False

    def __init__(self, name: str) -> None:
        self.name = name
        self.tally = _Tally()
        self.motion = False

    def on_samples(self, batch: list[Any]) -> None:
        return None

    def on_reading(self, values: dict[str, float]) -> None:
        motion = values.get("motion")
        if motion is None or not math.isfinite(motion):
            return
        self.motion = motion >= 0.5
        self.tally.weight += self.motion
        self.tally.samples += 1

    def tick(self, now: float) -> None:
        return None

    def close_interval(self) -> Interval:
        t = self.tally
        self.tally = _Tally()
        return Interval(presence=t.weight / t.samples if t.samples else None)

    def status(self) -> dict[str, Any]:
        return {"motion": self.motion}


class Counting(Feature):
    """Counts people per report interval on every sensor that can (see the module
    docstring); only counts are sent."""

    name = "counting"

    @classmethod
    def wanted(cls, cfg: Config) -> bool:
        return bool(counting_sensors(cfg))

    def __init__(self, cfg: Config, ctx: FeatureContext) -> None:
        self._clock = ctx.clock
        self._lock = threading.Lock()
        self.counters: dict[str, _Counter] = {}
        for s, role in counting_sensors(cfg):
            if role == "radar":
                self.counters[s.name] = _Radar(s.name, s.counting)  # type: ignore[attr-defined]
            elif role == "doorway":
                self.counters[s.name] = _Doorway(s.name, s.counting)  # type: ignore[attr-defined]
            else:
                self.counters[s.name] = _Presence(s.name)

    def watches(self, sensor: SensorConfig) -> bool:
        return sensor.name in self.counters

    def samples(self, sensor: str) -> SampleStream | None:
        """Every frame (or zone sample) of a radar or doorway sensor, on its thread."""
        counter = self.counters.get(sensor)
        if counter is None or not getattr(counter, "stream", False):
            return None

        def on_samples(batch: list[Any]) -> None:
            with self._lock:
                counter.on_samples(batch)
        return SampleStream(on_samples, SAMPLES_WITHIN_S)

    def handler(self, sensor: str) -> ReadingHandler | None:
        """A PIR's readings (the radars' and rangers' own readings are not needed)."""
        counter = self.counters.get(sensor)
        if counter is None or getattr(counter, "stream", True):
            return None

        def on_reading(reading: Any) -> None:
            with self._lock:
                counter.on_reading(reading.values)
        return on_reading

    def tick(self) -> None:
        """The clock for the flags: no frames is ``blind``."""
        now = self._clock()
        with self._lock:
            for counter in self.counters.values():
                counter.tick(now)

    def report_records(self, sensor: str, stats: Any) -> list[Record]:
        """The sensor's counts of the interval that ends now."""
        counter = self.counters.get(sensor)
        if counter is None:
            return []
        with self._lock:
            iv = counter.close_interval()
        if iv.crossings_in or iv.crossings_out:
            log.debug("%s: %s in, %s out", sensor, iv.crossings_in, iv.crossings_out)
        return interval_records(sensor, iv)

    def status(self) -> dict[str, Any]:
        """Each sensor's counts since start, people now and flags (no positions)."""
        with self._lock:
            return {name: c.status() for name, c in self.counters.items()}
