"""Scripted distance scenes for the ultrasonic emulators (parking bays and bins).

Device-agnostic: a *scene* is a callable ``scene(now) -> float | None`` giving the
distance in mm an ultrasonic ranger would measure at time ``now`` (``None``: no
echo). Each driver's emulator turns that number into its own bytes (A02YYUW
frames, MaxBotix ``R1234\\r``, an HC-SR04 echo pulse...).

A :class:`ScriptedScene` is built from a timeline of events relative to its
start time and is deterministic for a given seed: every random choice at a
given instant is a hash of (seed, instant, purpose), so a scene can be sampled
in any order, at any rate, any number of times, with the same answer::

    scene = (empty(2500, seed=1)
             .car(60, 900)                 # arrives 60 s after start, leaves at 900 s
             .pedestrian(300, 2.5)         # a 2.5 s dip at 300 s
             .spikes(0, 3600, rate=0.03)   # rain: single-sample outliers
             .cover(1200, 3000))           # snow on the sensor: a constant ~40 mm

Layers, most important first: no echo, cover (snow, dirt), the car, passes
(pedestrians, trolleys), single-sample spikes and cross-talk, then the empty
floor. Temperature drift (the speed of sound changes about 0.17 %/°C and the
sensors assume 20 °C) scales every echo; measurement noise is a few mm.

:func:`random_day` makes 24 h of plausible parking activity with the ground
truth (:class:`Day`); :func:`random_bin` does the same for a waste bin.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = [
    "BinTruth",
    "Day",
    "Scene",
    "ScriptedScene",
    "bin_scene",
    "empty",
    "random_bin",
    "random_day",
    "temperature_factor",
]

Scene = Callable[[float], "float | None"]

#: Relative change of the measured distance per °C away from 20 °C (speed of sound).
SOUND_COEFF_PER_C = 0.0017

_MASK = (1 << 64) - 1


def _u(seed: int, now: float, salt: int) -> float:
    """A uniform number in [0, 1) that depends only on (seed, now to the ms, salt)."""
    z = (seed * 0x9E3779B97F4A7C15 + round(now * 1000) * 0xBF58476D1CE4E5B9 + salt) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    z ^= z >> 31
    return (z >> 11) / float(1 << 53)


def _gauss(seed: int, now: float, salt: int) -> float:
    u1 = max(_u(seed, now, salt), 1e-12)
    u2 = _u(seed, now, salt + 7919)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def temperature_factor(temp_c: float) -> float:
    """Measured/true distance for a sensor that assumes sound at 20 °C."""
    return 1.0 / (1.0 + SOUND_COEFF_PER_C * (temp_c - 20.0))


@dataclass(slots=True)
class _Interval:
    start: float
    end: float
    kind: str  # "car", "pass", "cover", "no_echo", "spikes", "crosstalk", "mixed"
    distance: float = 0.0
    rate: float = 0.0
    neighbour: Scene | None = None


class ScriptedScene:
    """A scene built from a timeline; every builder method returns ``self``.

    Times given to the builder are seconds relative to ``start``; the scene is
    called with absolute times. ``noise_mm`` is the standard deviation of the
    measurement noise; ``temperature`` maps absolute time to °C (None: 20 °C, no
    drift); readings are rounded to 1 mm like the sensors do.
    """

    def __init__(self, baseline_mm: float, *, start: float = 0.0, seed: int = 0,
                 noise_mm: float = 3.0,
                 temperature: Callable[[float], float] | None = None) -> None:
        self.baseline_mm = float(baseline_mm)
        self.start = float(start)
        self.seed = int(seed)
        self.noise_mm = float(noise_mm)
        self.temperature = temperature
        self._by_kind: dict[str, list[_Interval]] = {}
        self._starts: dict[str, list[float]] = {}

    # -- builder -------------------------------------------------------------------------

    def _add(self, iv: _Interval) -> ScriptedScene:
        if iv.end < iv.start:
            raise ValueError(f"{iv.kind}: ends ({iv.end}) before it starts ({iv.start})")
        iv.start += self.start
        iv.end += self.start
        lst = self._by_kind.setdefault(iv.kind, [])
        lst.append(iv)
        lst.sort(key=lambda i: i.start)
        self._starts[iv.kind] = [i.start for i in lst]
        return self

    def car(self, arrive: float, leave: float = math.inf, *, distance_mm: float | None = None,
            maneuver_s: float = 0.0) -> ScriptedScene:
        """A car under the sensor from ``arrive`` to ``leave`` (roof/bonnet at
        ``distance_mm``, default 600 mm). ``maneuver_s`` seconds before each of
        the two instants the reading flickers between car and floor (bonnet
        coming in, reversing out); the stable state starts at ``arrive``/``leave``.
        """
        d = 600.0 if distance_mm is None else float(distance_mm)
        self._add(_Interval(arrive, leave, "car", distance=d))
        if maneuver_s > 0:
            self._add(_Interval(arrive - maneuver_s, arrive, "mixed", distance=d, rate=0.5))
            if math.isfinite(leave):
                self._add(_Interval(leave - maneuver_s, leave, "mixed", distance=d, rate=0.5))
        return self

    def pedestrian(self, at: float, duration_s: float = 2.0, *,
                   height_mm: float = 1700.0) -> ScriptedScene:
        """A person walks under the sensor: a dip to the head for ``duration_s``."""
        return self._add(_Interval(at, at + duration_s, "pass",
                                   distance=max(self.baseline_mm - height_mm, 100.0)))

    def trolley(self, at: float, duration_s: float = 3.0, *,
                height_mm: float = 1000.0) -> ScriptedScene:
        """A shopping trolley, pram or bicycle passes: a shallower, longer dip."""
        return self._add(_Interval(at, at + duration_s, "pass",
                                   distance=max(self.baseline_mm - height_mm, 100.0)))

    def spikes(self, start: float, end: float, *, rate: float = 0.03) -> ScriptedScene:
        """Rain or snow: each sample is, with probability ``rate``, an outlier —
        half of them a random short distance (a drop, a flake), half no echo."""
        return self._add(_Interval(start, end, "spikes", rate=rate))

    def cover(self, start: float, end: float, *, distance_mm: float = 40.0) -> ScriptedScene:
        """Snow, dirt or a leaf on the transducer: a constant short distance."""
        return self._add(_Interval(start, end, "cover", distance=distance_mm))

    def no_echo(self, start: float, end: float) -> ScriptedScene:
        """No echo at all (a torn transducer, heavy snow absorbing everything)."""
        return self._add(_Interval(start, end, "no_echo"))

    def crosstalk(self, neighbour: Scene, start: float = 0.0, end: float = math.inf, *,
                  rate: float = 0.01) -> ScriptedScene:
        """A neighbouring sensor's ping: with probability ``rate`` a sample reads
        what the neighbour sees."""
        return self._add(_Interval(start, end, "crosstalk", rate=rate, neighbour=neighbour))

    # -- evaluation ----------------------------------------------------------------------

    def _active(self, kind: str, now: float) -> _Interval | None:
        starts = self._starts.get(kind)
        if not starts:
            return None
        i = bisect.bisect_right(starts, now) - 1
        lst = self._by_kind[kind]
        # intervals of one kind may overlap (spikes): look back a few
        for j in range(i, max(i - 4, -1), -1):
            iv = lst[j]
            if iv.start <= now < iv.end:
                return iv
        return None

    def true_distance(self, now: float) -> float:
        """What the sensor would see without noise, spikes or faults."""
        car = self._active("car", now)
        if car is not None:
            return car.distance
        mixed = self._active("mixed", now)
        if mixed is not None and _u(self.seed, now, 11) < mixed.rate:
            return mixed.distance
        p = self._active("pass", now)
        if p is not None:
            return p.distance
        return self.baseline_mm

    def __call__(self, now: float) -> float | None:
        s = self.seed
        if self._active("no_echo", now) is not None:
            return None
        cov = self._active("cover", now)
        if cov is not None:
            return float(round(cov.distance + 0.3 * _gauss(s, now, 3)))
        sp = self._active("spikes", now)
        if sp is not None and _u(s, now, 5) < sp.rate:
            if _u(s, now, 6) < 0.5:
                return None
            return float(round(80.0 + _u(s, now, 8) * (self.baseline_mm - 100.0)))
        ct = self._active("crosstalk", now)
        if ct is not None and ct.neighbour is not None and _u(s, now, 9) < ct.rate:
            other = ct.neighbour(now)
            if other is not None:
                return other
        d = self.true_distance(now)
        if self.temperature is not None:
            d *= temperature_factor(self.temperature(now))
        return float(round(d + self.noise_mm * _gauss(s, now, 1)))


def empty(baseline_mm: float, *, start: float = 0.0, seed: int = 0, noise_mm: float = 3.0,
          temperature: Callable[[float], float] | None = None) -> ScriptedScene:
    """An empty bay (or floor) at ``baseline_mm``; add events with the builder methods."""
    return ScriptedScene(baseline_mm, start=start, seed=seed, noise_mm=noise_mm,
                         temperature=temperature)


def diurnal_temperature(start: float, *, mean_c: float = 12.0,
                        swing_c: float = 8.0) -> Callable[[float], float]:
    """Air temperature over a day: coldest around 05:00, warmest around 15:00 after ``start``
    (taken as midnight)."""
    def temp(now: float) -> float:
        h = ((now - start) / 3600.0) % 24.0
        return mean_c + swing_c * math.sin(2.0 * math.pi * (h - 9.0) / 24.0)
    return temp


# -- a day of parking ------------------------------------------------------------------------


@dataclass
class Day:
    """24 h of one bay: the scene and what really happened.

    ``transitions``: (t, occupied) at the instants the stable state changed, the
    first one being (start, False). ``faults``: (start, end, expected state) of
    each fault episode ("blocked" for snow cover, "no_echo"). ``passes``: start
    times of pedestrians and trolleys. All times absolute.
    """

    bay: str
    scene: ScriptedScene
    start: float
    end: float
    baseline_mm: float
    transitions: list[tuple[float, bool]]
    faults: list[tuple[float, float, str]] = field(default_factory=list)
    passes: list[float] = field(default_factory=list)

    def occupied_at(self, t: float) -> bool:
        i = bisect.bisect_right([x[0] for x in self.transitions], t) - 1
        return self.transitions[max(i, 0)][1]


def _busy(hour: float) -> float:
    """Relative parking demand over the day (0.1 at night, 1 around noon and evening)."""
    if hour < 6 or hour >= 23:
        return 0.1
    if hour < 8:
        return 0.5
    return 1.0


def random_day(seed: int, bay_id: str, *, start: float = 0.0, duration_s: float = 86400.0,
               baseline_mm: float | None = None, passes_per_hour: float = 6.0,
               rain_episodes: int | None = None, crosstalk_from: Scene | None = None,
               crosstalk_rate: float = 0.01, snow_cover: bool = False, no_echo: bool = False,
               drift: bool = True, glitch_rate: float = 0.002) -> Day:
    """A day of plausible parking at one bay, with the ground truth.

    Mounting 2000-3000 mm; cars read 300-900 mm; stays from 3 minutes to 4 hours
    (one car may stay overnight); free gaps of at least 2 minutes, longer at
    night; a 0-4 s manoeuvre before each arrival and departure; pedestrians
    (1-4 s) and trolleys (2-4 s) only while the bay is free, at least 30 s
    away from a transition and 20 s apart; rain/snow episodes with 3 % outliers; a 0.2 %
    background glitch rate; optional cross-talk from a neighbour's scene; an
    optional snow-cover episode (30-90 min) and an optional no-echo episode
    (5-20 min), each placed inside a long free gap.
    """
    rng = random.Random(f"{seed}:{bay_id}")
    end = start + duration_s
    if baseline_mm is None:
        baseline_mm = float(rng.randint(2000, 3000))
    temp = diurnal_temperature(start) if drift else None
    scene = empty(baseline_mm, start=0.0, seed=rng.getrandbits(32), temperature=temp)
    scene.start = 0.0  # the builder below uses absolute times

    transitions: list[tuple[float, bool]] = [(start, False)]
    free_gaps: list[tuple[float, float]] = []
    t = start
    # an overnight car from the start, sometimes
    occupied = rng.random() < 0.3
    if occupied:
        transitions = [(start, True)]
    gap_from = start
    while t < end:
        hour = ((t - start) / 3600.0) % 24.0
        if occupied:
            stay = min(max(rng.lognormvariate(math.log(2400), 1.0), 180.0), 4 * 3600.0)
            if t == start:
                stay = rng.uniform(1800, 8 * 3600)
            leave = t + stay
            if leave >= end - 600:
                break
            t = leave
            transitions.append((t, False))
            occupied = False
            gap_from = t
        else:
            gap = max(rng.expovariate(_busy(hour) / 1800.0), 120.0)
            arrive = t + gap
            if arrive >= end - 600:
                free_gaps.append((gap_from, end))
                break
            free_gaps.append((gap_from, arrive))
            t = arrive
            transitions.append((t, True))
            occupied = True
    else:
        if not occupied:
            free_gaps.append((gap_from, end))

    # cars, with manoeuvres; the truth times are when the stable state starts
    occ_start = None
    for tt, occ in transitions:
        if occ:
            occ_start = tt
        elif occ_start is not None:
            _add_car(scene, rng, occ_start, tt, start)
            occ_start = None
    if occ_start is not None:
        _add_car(scene, rng, occ_start, math.inf, start)

    # fault episodes inside long free gaps (with margins), truth kept
    faults: list[tuple[float, float, str]] = []
    busy_until: list[tuple[float, float]] = []
    for kind, wanted, lo, hi in (("blocked", snow_cover, 1800, 5400),
                                 ("no_echo", no_echo, 300, 1200)):
        if not wanted:
            continue
        for a, b in sorted(free_gaps, key=lambda g: g[1] - g[0], reverse=True):
            length = rng.uniform(lo, hi)
            if b - a < length + 1200 or any(x < b and a < y for x, y in busy_until):
                continue
            f0 = a + 600 + rng.uniform(0, b - a - length - 1200)
            f1 = f0 + length
            if kind == "blocked":
                scene.cover(f0, f1, distance_mm=rng.uniform(20, 60))
            else:
                scene.no_echo(f0, f1)
            faults.append((f0, f1, kind))
            busy_until.append((a, b))
            break

    # passes while free and away from transitions and faults
    passes: list[float] = []
    for a, b in free_gaps:
        n = int(passes_per_hour * (b - a) / 3600.0 + 0.5)
        for _ in range(n):
            at = rng.uniform(a + 30, b - 40)
            if at < a + 30 or any(f0 - 30 < at < f1 + 30 for f0, f1, _k in faults):
                continue
            if any(abs(at - p) < 20 for p in passes):
                continue  # one pass is one person or trolley (a group is one pass)
            if rng.random() < 0.75:
                scene.pedestrian(at, rng.uniform(1.0, 4.0), height_mm=rng.uniform(1500, 1900))
            else:
                scene.trolley(at, rng.uniform(2.0, 4.0), height_mm=rng.uniform(800, 1200))
            passes.append(at)

    # weather and glitches
    n_rain = rng.randint(0, 3) if rain_episodes is None else rain_episodes
    for _ in range(n_rain):
        r0 = rng.uniform(start, end - 600)
        scene.spikes(r0, min(r0 + rng.uniform(600, 7200), end), rate=0.03)
    if glitch_rate > 0:
        scene.spikes(start, end, rate=glitch_rate)
    if crosstalk_from is not None:
        scene.crosstalk(crosstalk_from, start, end, rate=crosstalk_rate)
    return Day(bay=bay_id, scene=scene, start=start, end=end, baseline_mm=baseline_mm,
               transitions=transitions, faults=faults, passes=sorted(passes))


def _add_car(scene: ScriptedScene, rng: random.Random, arrive: float, leave: float,
             start: float) -> None:
    d = rng.uniform(300, 900)
    m = rng.uniform(0.0, 4.0)
    scene.car(arrive if arrive > start else start - 1.0, leave, distance_mm=d, maneuver_s=m)


# -- bins ------------------------------------------------------------------------------------


@dataclass
class BinTruth:
    """What really happened in a bin: fill % steps, lid openings, collections."""

    depth_mm: float
    steps: list[tuple[float, float]]  # (t, fill % from then on)
    lid_open: list[tuple[float, float]]
    collections: list[float]

    def fill_at(self, t: float) -> float:
        i = bisect.bisect_right([s[0] for s in self.steps], t) - 1
        return self.steps[max(i, 0)][1]


def bin_scene(truth: BinTruth, *, seed: int = 0, noise_mm: float = 4.0) -> Scene:
    """The distance a lid-mounted sensor reads for a :class:`BinTruth`: the rubbish
    surface, except while the lid is open (random very long, very short or no echo)."""
    lid_starts = [a for a, _b in truth.lid_open]

    def scene(now: float) -> float | None:
        i = bisect.bisect_right(lid_starts, now) - 1
        if i >= 0 and now < truth.lid_open[i][1]:
            u = _u(seed, now, 21)
            if u < 0.4:
                return None
            if u < 0.7:
                return float(round(truth.depth_mm * (1.5 + _u(seed, now, 22) * 2)))
            return float(round(30 + _u(seed, now, 23) * 100))
        d = truth.depth_mm * (1.0 - truth.fill_at(now) / 100.0)
        return float(round(max(d, 30.0) + noise_mm * _gauss(seed, now, 24)))

    return scene


def random_bin(seed: int, *, start: float = 0.0, duration_s: float = 86400.0,
               depth_mm: float = 1000.0, disposals_per_hour: float = 8.0,
               collect_at_pct: float = 92.0) -> tuple[Scene, BinTruth]:
    """A busy street bin: each disposal opens the lid for 2-10 s and adds 0.3-1.5 %;
    a truck empties it (lid open 20-60 s) once it passes ``collect_at_pct``, 1-3 h later."""
    rng = random.Random(f"bin:{seed}")
    fill = rng.uniform(0, 40)
    steps = [(start, fill)]
    lid: list[tuple[float, float]] = []
    collections: list[float] = []
    t = start
    due: float | None = None
    while True:
        t += rng.expovariate(disposals_per_hour / 3600.0)
        if due is not None and t >= due:
            dur = rng.uniform(20, 60)
            lid.append((due, due + dur))
            collections.append(due + dur)
            fill = 0.0
            steps.append((due + dur, fill))
            t = due + dur + 60
            due = None
            continue
        if t >= start + duration_s:
            break
        dur = rng.uniform(2, 10)
        lid.append((t, t + dur))
        fill = min(fill + rng.uniform(0.3, 1.5), 100.0)
        steps.append((t + dur, fill))
        t += dur
        if due is None and fill >= collect_at_pct:
            due = t + rng.uniform(3600, 3 * 3600)
    truth = BinTruth(depth_mm=depth_mm, steps=steps, lid_open=lid, collections=collections)
    return bin_scene(truth, seed=rng.getrandbits(32)), truth


def scene_for(name: str) -> Scene:
    """A day of parking under an emulated ranger, seeded by the sensor's name (so a rehearsal
    replays the same day), starting now."""
    import time
    import zlib

    return random_day(zlib.crc32(name.encode()), name, start=time.monotonic()).scene
