"""``python -m bench.eval_counting`` (``make eval``): counting passers-by, judged crossing by
crossing on scripted scenes whose truth is known.

**Radar (HLK-LD2450).** 28 scripted hours of :func:`drivers.ld2450.scenes.generate` scenes,
one hour per scene, two hours of each kind (:data:`PLAN`): commuter peaks, single walkers,
pairs side by side, joggers, cyclists, loiterers at a bus stop beside the line, and people
crossing both ways at once; and the harder street (``scenes.HARD_KINDS``): people stopping
on the line then walking on or back, U-turns just before and after it, walks along it
inside the counter's band, three abreast and people passing each other on it, steep
crossings and people appearing or vanishing at the edge of the field close to it, cyclists
and e-scooters at 6-9 m/s and shufflers at 0.4 m/s, people at the range limit and right in
front of the radar. Never more than three people in the field. Each scene goes through two
paths, both the real code:

a. the emulator (:func:`drivers.ld2450.emulator.stream`, the radar's habits on: noise,
   dropped frames, ghosts, slot swaps, fading) -> the report bytes -> the driver's protocol
   and codec (:class:`~drivers.ld2450.protocol.LD2450Protocol`) -> the daemon's counting
   feature (:class:`agent.features.counting.Counting`, built from a node configuration
   with one LD2450 and its default ``[sensor.counting]``: the line x = 0 over the whole
   field), through its sample stream, ticked and reporting every ``[report] interval_s``
   on the emulator's virtual clock (:class:`FeatureRun`; an hour takes a second or two);
b. the same decoded frames written as ``t,target,x_mm,y_mm`` CSV and replayed by
   ``citynode detect crossings --input FILE`` (in this process, through the CLI's ``main``,
   every scene). Both paths must give the same crossings.

Scored per scene kind: truth crossings matched one-to-one to counted ones within
:data:`WINDOW_S` with the right direction (:func:`match_events`), with the wrong one,
missed, extra (the times from a spy on the feature's counter: the feature itself sends
counts only); the hourly count error ``|counted - true| / true`` per hour and direction,
counted = the ``<sensor>:in`` / ``:out`` records of the feature's reports in that hour
(:func:`reported_hours`), mean and worst; and for loiterers (and people stopping on the
line) how often each was counted (a count is theirs when it matched their crossing, or,
unmatched, when they were the person nearest the line at that moment). Targets: >= 97 %
matched with the right direction (each kind and overall), mean hourly error <= 3 % (each
kind and overall; the worst hour is shown beside it), and no loiterer counted more than
once - more only as often as they really crossed (one who walks back across the line
crossed twice).

**Held out.** The issue judges the counter on scenes not given here too, so nothing is
tuned on these: the evaluation seeds (:data:`SEED_SETS` ``eval``) are not the development
seeds (``dev``) on which the tracker's parameters may be chosen (``--seeds dev`` runs the
same evaluation on those and writes ``counting-dev.md``).

**A harsher radar (no target).** An hour of each kind and of ``mixed`` with worse habits
than the emulator's defaults (:data:`HARSH`): how far the counter degrades.

**Saturation (stress, no target).** Crowded and quiet phases in turn: a flow dense enough
that the radar (three slots) cannot track everyone. Whether the counter raised
``saturated`` in each crowded phase and how soon, whether it raised it in quiet ones, and
what it counted in each.

**Doorway (VL53L1X).** An hour of :func:`drivers.vl53l1x.doorway.scripted_doorway`
passages (and people who turn back) played register by register through the emulated chip
and the real driver in two-zone counting mode, into
:class:`~agent.detectors.passage.PassageCounter` (ST UM2600): matched / missed / extra,
target >= 97 % matched with the right direction.

The report goes to stdout and ``build/eval/counting.md``. Exit 0 when every target is met,
1 when one is missed, the two radar paths disagree or the feature's reports do not add up
to its crossings (the report says which), 64 on a usage error. No external data: it never
skips. It takes about a minute and a half on one core.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from drivers.ld2450 import emulator as radar_emulator
from drivers.ld2450 import scenes
from drivers.ld2450.protocol import LD2450Protocol, RadarSample
from drivers.ld2450.scenes import Scene, in_view

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "build" / "eval"
#: A counted crossing matches a true one at most this far apart in time (s).
WINDOW_S = 2.0
TARGET_MATCHED = 0.97
TARGET_HOURLY = 0.03
TARGET_DOORWAY = 0.97
HOUR_S = 3600.0
#: Every radar scene lasts an hour: its hour is one hourly count per direction.
SCENE_S = 3600.0
#: Hours of each kind of radar scene (one scene per hour, each with its own seed).
PLAN: tuple[tuple[str, int], ...] = (
    ("commuter_peak", 2), ("single_walkers", 2), ("pairs", 2), ("joggers", 2),
    ("cyclists", 2), ("loiterers", 2), ("both_ways", 2),
    *((kind, 2) for kind in scenes.HARD_KINDS))
#: Walkers who wait at or near the line (scenes' kinds), each counted at most as often as
#: they really crossed it.
WAITING = ("loiterer", "stopper")
#: Seeds per set: scene k of a kind has seed base + k. ``dev`` is for choosing the
#: tracker's parameters; ``eval`` is never tuned on.
SEED_SETS = {"eval": 1000, "dev": 0}
#: A worse radar than the emulator's defaults (twice the noise, five times the lost frames
#: and the ghosts, slots swapped twice as often), for the robustness section (no target).
HARSH = radar_emulator.Habits(noise_mm=80.0, speed_noise_cms=10.0, drop_rate=0.05,
                              swap_prob=0.6, ghost_rate=0.02)
HARSH_SEED_OFFSET = 100
DEFAULT_HABITS = radar_emulator.Habits()
#: The saturation stress scene: crowded and quiet phases in turn.
STRESS_S = 1200.0
STRESS_PHASE_S = 120.0
STRESS_SEED_OFFSET = 500
CROWD_PER_H = 2400.0
#: Two crossing lists of the two paths agree when their times differ by at most this (the
#: CSV carries times in milliseconds).
AGREE_S = 0.01
#: After a crowd leaves the field the flag may stay up this long without being false.
SATURATION_GRACE_S = 5.0
DOORWAY_S = 900.0
#: The doorway scenes: name, :func:`scripted_doorway` options (faults: range-status error
#: rates and noise as :class:`~drivers.vl53l1x.doorway.Doorway` takes them).
DOORWAYS: tuple[tuple[str, dict[str, float]], ...] = (
    ("steady", {"rate_per_min": 6.0}),
    ("busy", {"rate_per_min": 12.0}),
    ("hesitant", {"rate_per_min": 6.0, "hesitation_share": 0.3}),
    ("range errors", {"rate_per_min": 8.0, "signal_fail": 0.03, "sigma_fail": 0.02,
                      "out_of_bounds": 0.01, "noise_mm": 15.0}),
)
DOORWAY_SEEDS = {"eval": 2000, "dev": 100}
DIRECTIONS = ("in", "out")

Event = tuple[float, str]  # (t s, "in" | "out")


# -- matching and scores --------------------------------------------------------------------------
class Matching(NamedTuple):
    """Indices into the truth and the counted events: pairs matched with the right
    direction, pairs matched with the wrong one, truth left over (missed), counted left
    over (extra)."""

    right: list[tuple[int, int]]
    wrong: list[tuple[int, int]]
    missed: list[int]
    extra: list[int]


def _sweep(truth: Sequence[float], got: Sequence[float], ti: Sequence[int], gi: Sequence[int],
           window_s: float) -> list[tuple[int, int]]:
    """A largest one-to-one matching of truth times to counted times at most ``window_s``
    apart. ``ti`` and ``gi`` are indices sorted by time. Each truth time, earliest first,
    takes the earliest counted time still free in its window: with windows all the same
    width this is a maximum matching (earliest deadline first)."""
    pairs: list[tuple[int, int]] = []
    free = list(gi)
    j = 0
    taken: set[int] = set()
    for i in ti:
        t = truth[i]
        # differences, not shifted bounds: |t - got| <= window_s exactly as the report says
        while j < len(free) and (free[j] in taken or t - got[free[j]] > window_s):
            j += 1
        for k in range(j, len(free)):
            g = free[k]
            if got[g] - t > window_s:
                break
            if g not in taken:
                taken.add(g)
                pairs.append((i, g))
                break
    return pairs


def match_events(truth: Sequence[Event], got: Sequence[Event],
                 window_s: float = WINDOW_S) -> Matching:
    """Match counted crossings to true ones one-to-one, at most ``window_s`` apart: first as
    many as possible with the right direction, then what is left of both regardless of
    direction (those have the wrong one); the rest are missed and extra."""
    tt = [t for t, _ in truth]
    gt = [t for t, _ in got]
    right: list[tuple[int, int]] = []
    for d in DIRECTIONS:
        ti = sorted((i for i, e in enumerate(truth) if e[1] == d), key=lambda i: tt[i])
        gi = sorted((i for i, e in enumerate(got) if e[1] == d), key=lambda i: gt[i])
        right += _sweep(tt, gt, ti, gi, window_s)
    used_t = {i for i, _ in right}
    used_g = {g for _, g in right}
    ti = sorted((i for i in range(len(truth)) if i not in used_t), key=lambda i: tt[i])
    gi = sorted((i for i in range(len(got)) if i not in used_g), key=lambda i: gt[i])
    wrong = _sweep(tt, gt, ti, gi, window_s)
    used_t |= {i for i, _ in wrong}
    used_g |= {g for _, g in wrong}
    return Matching(sorted(right), sorted(wrong),
                    [i for i in range(len(truth)) if i not in used_t],
                    [g for g in range(len(got)) if g not in used_g])


class HourCount(NamedTuple):
    """One hour and direction: crossings that really happened and crossings counted."""

    hour: int
    direction: str
    true: int
    counted: int

    @property
    def error(self) -> float | None:
        """``|counted - true| / true``; None when nobody crossed that way that hour."""
        return abs(self.counted - self.true) / self.true if self.true else None


def reported_hours(truth: Iterable[Event], counted: Counter[tuple[int, str]],
                   duration_s: float, hour_s: float = HOUR_S) -> list[HourCount]:
    """Per hour of ``duration_s`` (the last one may be shorter) and direction: the true
    crossings, by their time, and ``counted[hour, direction]`` (what the feature's reports
    of that hour carried)."""
    hours = max(1, math.ceil(duration_s / hour_s))
    tc = Counter((min(hours - 1, max(0, int(t // hour_s))), d) for t, d in truth)
    return [HourCount(h, d, tc[h, d], counted[h, d]) for h in range(hours) for d in DIRECTIONS]


def hourly_summary(counts: Iterable[HourCount]) -> tuple[float | None, float | None, int]:
    """Mean and worst hourly error over the hours that had crossings, and how many such
    hour-directions there were."""
    errors = [e for c in counts if (e := c.error) is not None]
    if not errors:
        return None, None, 0
    return statistics.fmean(errors), max(errors), len(errors)


# -- the radar paths ---------------------------------------------------------------------------
class Planned(NamedTuple):
    kind: str
    seed: int
    duration_s: float

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.seed}"


def plan(seed_set: str = "eval") -> list[Planned]:
    """The radar scenes of a seed set, one per hour of :data:`PLAN`."""
    base = SEED_SETS[seed_set]
    return [Planned(kind, base + k, SCENE_S) for kind, hours in PLAN for k in range(hours)]


def build(p: Planned) -> Scene:
    return scenes.generate(p.kind, p.duration_s, p.seed)


def radar_samples(scene: Scene, seed: int,
                  habits: radar_emulator.Habits | None = None) -> Iterator[RadarSample]:
    """The radar's report frames for ``scene`` as bytes, through the driver's protocol and
    codec: the samples the device hands the counting feature, on the emulator's clock."""
    proto = LD2450Protocol(configure=False)
    for t, raw in radar_emulator.stream(scene, habits or radar_emulator.Habits(), seed):
        for ev in proto.receive(raw, t):
            if isinstance(ev, RadarSample):
                yield ev


#: The node path a runs: one LD2450 with the default ``[sensor.counting]`` table (the line
#: x = 0 over the whole field, as the scenes' truth and ``detect crossings``' defaults).
NODE_TOML = """
[node]
id = "eval"
state_dir = "{state}"

[[sensor]]
type = "ld2450"
name = "{sensor}"
port = "/dev/ttyAMA0"
"""
SENSOR = "radar"
#: The daemon's main loop ticks its features about five times a second.
TICK_S = 0.2


class FeatureRun:
    """The daemon's counting feature, built from :data:`NODE_TOML` as the daemon builds it
    (``start_features``), fed the radar's samples through its sample stream, ticked and
    asked for its report records on a virtual clock. The feature sends counts only, so a
    spy on its counter's ``update`` keeps each crossing's time for the matching."""

    def __init__(self, state_dir: Path) -> None:
        from agent.core import config
        from agent.features.base import FeatureContext
        from agent.features.counting import Counting
        from agent.features.registry import start_features

        cfg = config.parse(NODE_TOML.format(state=state_dir, sensor=SENSOR),
                           check_devices=False)
        self.report_s = float(cfg.report.interval_s)
        self.now = 0.0
        ctx = FeatureContext(state_dir, publish=lambda kind, records: None,
                             clock=lambda: self.now)
        self.feature = next(f for f in start_features(cfg, ctx) if isinstance(f, Counting))
        stream = self.feature.samples(SENSOR)
        if stream is None:
            raise RuntimeError("the counting feature takes no sample stream from the LD2450")
        self._on_samples = stream.handler
        self.counter = self.feature.counters[SENSOR].counter  # type: ignore[attr-defined]
        self.crossings: list[Event] = []
        update = self.counter.update

        def spy(t: float, targets: Any) -> list[Any]:
            got = update(t, targets)
            self.crossings.extend((c.t, c.direction) for c in got)
            return got

        self.counter.update = spy
        #: Crossings per (hour, direction) from the report records, in the hour each
        #: report interval ended in.
        self.reported: Counter[tuple[int, str]] = Counter()
        self._next_tick = 0.0
        self._next_report = self.report_s

    def feed(self, sample: RadarSample) -> None:
        """One frame as the driver hands it over, after the main loop's ticks and reports
        up to its time."""
        self._clock_to(sample.t)
        self._on_samples([sample])

    def _clock_to(self, t: float) -> None:
        while (due := min(self._next_tick, self._next_report)) <= t:
            self.now = due
            if due == self._next_report:
                self.report()
                self._next_report += self.report_s
            else:
                self.feature.tick()
                self._next_tick += TICK_S
        self.now = t

    def report(self) -> None:
        """One report interval's counts."""
        hour = max(0, math.ceil(self.now / HOUR_S) - 1)
        for r in self.feature.report_records(SENSOR, {}):
            direction = r.name.rpartition(":")[2]
            if direction in DIRECTIONS and r.value:
                self.reported[hour, direction] += int(r.value)

    def finish(self, end_s: float) -> None:
        """Run the clock to ``end_s`` and send the last report."""
        self._clock_to(end_s)
        self.report()


@dataclass
class Played:
    """What the feature made of one scene (path a): the crossings (through the spy), the
    frames, the counter's flags after each frame (if kept), and the counts its reports
    carried per (hour, direction)."""

    crossings: list[Event]
    samples: list[RadarSample]
    flags: list[frozenset[str]] = field(default_factory=list)
    reported: Counter[tuple[int, str]] = field(default_factory=Counter)


def play_radar(scene: Scene, seed: int, *, keep_flags: bool = False,
               habits: radar_emulator.Habits | None = None) -> Played:
    """Path a: emulator -> bytes -> protocol and codec -> the counting feature, on a
    virtual clock."""
    with tempfile.TemporaryDirectory(prefix="eval-counting-node-") as state:
        run = FeatureRun(Path(state))
        out = Played(run.crossings, [])
        for s in radar_samples(scene, seed, habits):
            out.samples.append(s)
            run.feed(s)
            if keep_flags:
                out.flags.append(frozenset(run.counter.flags))
        run.finish(scene.duration_s)
        out.reported = run.reported
    return out


def write_csv(samples: Iterable[RadarSample], path: Path) -> int:
    """The frames as ``detect crossings`` reads them: ``t,target,x_mm,y_mm``, a row per
    tracked target (an empty frame has none). Returns the number of rows."""
    n = 0
    with path.open("w", encoding="ascii", newline="") as f:
        f.write("t,target,x_mm,y_mm\n")
        for s in samples:
            for tg in s.targets:
                f.write(f"{s.t:.3f},{tg.slot},{tg.x_mm},{tg.y_mm}\n")
                n += 1
    return n


def detect_crossings(path: Path, *extra: str) -> tuple[int, list[Event], str]:
    """Path b: ``citynode detect crossings --input PATH`` in this process: its exit code,
    the crossings it printed and its standard error."""
    import json

    from agent.tools.cli import main as cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli(["detect", "crossings", "--input", str(path), *extra])
        except SystemExit as e:  # argparse's own exits
            rc = e.code if isinstance(e.code, int) else 1
    events: list[Event] = []
    for line in out.getvalue().splitlines():
        try:
            obj = json.loads(line)
            events.append((float(obj["t"]), str(obj["direction"])))
        except (ValueError, KeyError, TypeError):
            return rc or 1, events, err.getvalue() + f"\nnot a crossing line: {line[:80]!r}"
    return rc, events, err.getvalue()


def agreement(a: Sequence[Event], b: Sequence[Event], tol_s: float = AGREE_S
              ) -> tuple[bool, float]:
    """Do both paths give the same crossings (the same directions at the same times, within
    ``tol_s``, in whatever order they were printed)? And the largest time difference."""
    if len(a) != len(b):
        return False, math.inf

    def key(e: Event) -> tuple[float, str]:
        return round(e[0], 3), e[1]

    pairs = list(zip(sorted(a, key=key), sorted(b, key=key), strict=True))
    worst = max((abs(x[0] - y[0]) for x, y in pairs), default=0.0)
    return all(x[1] == y[1] for x, y in pairs) and worst <= tol_s, worst


def attribute(scene: Scene, times: Sequence[float]) -> list[int | None]:
    """For each time (in any order), the walker in view nearest the counting line then
    (None: nobody in view)."""
    out: list[int | None] = [None] * len(times)
    for i in sorted(range(len(times)), key=lambda k: times[k]):
        near = [p for p in scene.at(times[i]) if in_view(p.x, p.y)]
        if near:
            out[i] = min(near, key=lambda p: abs(p.x)).walker
    return out


@dataclass
class SceneResult:
    planned: Planned
    walkers: int
    max_in_field: int
    truth: int
    right: int
    wrong: int
    missed: int
    extra: int
    #: Per hour and direction: the true crossings and the counts the feature reported.
    hours: list[HourCount]
    #: The feature's reports carried as many crossings as its counter counted.
    reports_add_up: bool
    agree: bool
    agree_dt: float
    cli_rc: int
    cli_err: str
    csv_rows: int
    #: Loiterers: (true crossings, times counted) per loiterer.
    loiterers: list[tuple[int, int]]
    #: Counted minus true time of each crossing matched with the right direction (s).
    offsets: list[float] = field(default_factory=list)


def loiterer_counts(scene: Scene, truth: Sequence[scenes.TruthCrossing], got: Sequence[Event],
                    m: Matching) -> list[tuple[int, int]]:
    """Per loiterer (or person stopping on the line: :data:`WAITING`) in the scene: how
    often they really crossed the line, and how many counted crossings are theirs (matched
    to their crossing, or unmatched while they were the one nearest the line)."""
    loiterers = [i for i, w in enumerate(scene.walkers) if w.kind in WAITING]
    if not loiterers:
        return []
    owner: dict[int, int | None] = {g: truth[i].walker for i, g in (*m.right, *m.wrong)}
    for g, w in zip(m.extra, attribute(scene, [got[g][0] for g in m.extra]), strict=True):
        owner[g] = w
    counted = Counter(w for w in owner.values() if w is not None)
    crossed = Counter(tc.walker for tc in truth)
    return [(crossed[i], counted[i]) for i in loiterers]


def run_scene(p: Planned, tmp: Path) -> SceneResult:
    """One radar scene through both paths, scored."""
    scene = build(p)
    truth = scene.truth()
    a = play_radar(scene, p.seed)
    csv_path = tmp / f"{p.name}.csv"
    rows = write_csv(a.samples, csv_path)
    rc, b, err = detect_crossings(csv_path)
    csv_path.unlink()
    agree, dt = agreement(a.crossings, b)
    truth_events = [(tc.t, tc.direction) for tc in truth]
    m = match_events(truth_events, a.crossings)
    return SceneResult(
        p, len(scene.walkers), scene.max_in_field(), len(truth), len(m.right), len(m.wrong),
        len(m.missed), len(m.extra), reported_hours(truth_events, a.reported, p.duration_s),
        sum(a.reported.values()) == len(a.crossings), agree and rc == 0, dt, rc, err.strip(),
        rows, loiterer_counts(scene, truth, a.crossings, m),
        [a.crossings[g][0] - truth_events[i][0] for i, g in m.right])


# -- a harsher radar -------------------------------------------------------------------------------
class Harsh(NamedTuple):
    kind: str
    truth: int
    right: int
    wrong: int
    missed: int
    extra: int


def run_harsh(seed_set: str = "eval") -> list[Harsh]:
    """An hour of each kind (and of ``mixed``) with :data:`HARSH` habits, path a only: how
    the counter degrades on a worse radar than the one modelled (no target)."""
    out: list[Harsh] = []
    base = SEED_SETS[seed_set] + HARSH_SEED_OFFSET
    for kind in (*(k for k, _ in PLAN), "mixed"):
        p = Planned(kind, base, SCENE_S)
        scene = build(p)
        truth = [(tc.t, tc.direction) for tc in scene.truth()]
        got = play_radar(scene, p.seed, habits=HARSH).crossings
        m = match_events(truth, got)
        out.append(Harsh(kind, len(truth), len(m.right), len(m.wrong), len(m.missed),
                         len(m.extra)))
    return out


# -- saturation stress --------------------------------------------------------------------------
def _across(rng: Any, t: float, y_range: tuple[float, float], speed: tuple[float, float],
            p_in: float = 0.5) -> scenes.Walker:
    y = rng.uniform(*y_range)
    edge = scenes.half_width(y) + scenes.MARGIN_M
    sign = 1.0 if rng.random() < p_in else -1.0
    return scenes.walk(t, [(-sign * edge, y), (sign * edge, y)], rng.uniform(*speed))


def crowd_scene(seed: int, duration_s: float = STRESS_S) -> Scene:
    """Crowded and quiet phases in turn, :data:`STRESS_PHASE_S` each: a crowd is a flow of
    about :data:`CROWD_PER_H` arrivals an hour (single walkers, now and then a group of four
    to six crossing together), with more than three people in view much of the time; a
    quiet phase has one walker at a time. The radar (three slots) cannot track a crowd."""
    import random

    rng = random.Random(f"crowd:{seed}")
    walkers: list[scenes.Walker] = []
    phase = 0
    while (start := phase * STRESS_PHASE_S) < duration_s:
        end = min(duration_s, start + STRESS_PHASE_S) - 15.0
        t = start + 2.0
        if phase % 2 == 0:  # quiet
            while t < end:
                walkers.append(_across(rng, t, (1.0, 3.5), (1.0, 1.7)))
                t += rng.uniform(10.0, 25.0)
        else:
            while t < end:
                if rng.random() < 0.05:  # a group
                    walkers += [_across(rng, t + rng.uniform(0.0, 2.5), (1.0, 4.5), (1.2, 1.5),
                                        p_in=1.0) for _ in range(rng.randint(4, 6))]
                else:
                    walkers.append(_across(rng, t, (0.8, 4.5), (1.0, 1.8)))
                t += rng.expovariate(CROWD_PER_H / 3600.0)
        phase += 1
    return Scene(f"crowds-{seed}", "crowds", duration_s, walkers)


@dataclass
class StressResult:
    phases: int
    flagged: int
    delays: list[float]
    max_in_view: int
    crowd_share: float
    false_share: float
    true_crowd: int
    counted_crowd: int
    true_quiet: int
    counted_quiet: int


def run_stress(seed: int) -> StressResult:
    """Crowded phases: was ``saturated`` raised in each, how soon after it began; the share
    of a crowded phase's samples with more than three in view; quiet phases: the share of
    samples with ``saturated`` raised (after :data:`SATURATION_GRACE_S`); and what was
    counted in each kind of phase."""
    scene = crowd_scene(seed)
    a = play_radar(scene, seed, keep_flags=True)
    probe = crowd_scene(seed)  # its own cursor
    n_view = [sum(in_view(p.x, p.y) for p in probe.at(s.t)) for s in a.samples]
    phases = math.ceil(scene.duration_s / STRESS_PHASE_S)
    flagged, delays = 0, []
    crowded = [0, 0]  # samples with more than three in view, samples
    false = [0, 0]
    for ph in range(phases):
        t0, t1 = ph * STRESS_PHASE_S, (ph + 1) * STRESS_PHASE_S
        ks = [k for k, s in enumerate(a.samples) if t0 <= s.t < t1]
        if ph % 2:
            up = [a.samples[k].t for k in ks if "saturated" in a.flags[k]]
            if up:
                flagged += 1
                delays.append(up[0] - t0)
            crowded[0] += sum(n_view[k] > 3 for k in ks)
            crowded[1] += len(ks)
        else:
            ks = [k for k in ks if a.samples[k].t >= t0 + SATURATION_GRACE_S]
            false[0] += sum("saturated" in a.flags[k] for k in ks)
            false[1] += len(ks)

    def tally(events: Iterable[float]) -> tuple[int, int]:
        ph = [int(t // STRESS_PHASE_S) % 2 for t in events]
        return ph.count(1), ph.count(0)

    tc, tq = tally(tc.t for tc in scene.truth())
    cc, cq = tally(t for t, _ in a.crossings)
    return StressResult(phases // 2, flagged, delays, max(n_view, default=0),
                        crowded[0] / crowded[1] if crowded[1] else 0.0,
                        false[0] / false[1] if false[1] else 0.0, tc, cc, tq, cq)


# -- the doorway -------------------------------------------------------------------------------
class _Clock:
    """The virtual clock the emulated bus, the chip and the driver share."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += max(s, 0.0)


@dataclass
class DoorwayResult:
    name: str
    seed: int
    truth: int
    turned_back: int
    right: int
    wrong: int
    missed: int
    extra: int


def run_doorway(name: str, seed: int, options: dict[str, float],
                duration_s: float = DOORWAY_S) -> DoorwayResult:
    """A scripted doorway through the VL53L1X's register-level emulator, the real driver in
    counting mode (the README's sample configuration) and UM2600's passage counter."""
    from agent.detectors.passage import PassageConfig, PassageCounter
    from drivers.emulation.i2c import FakeBus
    from drivers.vl53l1x.device import VL53L1X
    from drivers.vl53l1x.doorway import scripted_doorway
    from drivers.vl53l1x.emulator import VL53L1XModel, attach

    scene = scripted_doorway(seed, duration_s, **options)
    clock = _Clock()
    bus = FakeBus(clock=clock, sleep=clock.sleep)
    attach(bus, VL53L1XModel(scene))
    counter = PassageCounter(PassageConfig())
    got: list[Event] = []

    def take(batch: list[Any]) -> None:
        got.extend((p.t, p.direction) for p in counter.update(batch))

    dev = VL53L1X(bus, mode="counting", distance_mode="long", timing_budget_ms=33,
                  zone_centres=(167, 231), zone_roi=(8, 16), read_interval_s=1.0,
                  clock=clock, wall_clock=clock, sleep=clock.sleep)
    dev.on_samples = take
    dev.open()
    try:
        while clock.t < duration_s:
            dev.poll()
    finally:
        dev.close()
    truth = scene.truth()
    m = match_events(truth, got)
    return DoorwayResult(name, seed, len(truth), sum(not w.passes for w in scene.walkers),
                         len(m.right), len(m.wrong), len(m.missed), len(m.extra))


# -- the report --------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f} %"


def _share(n: int, d: int) -> str:
    return f"{100.0 * n / d:.1f} % ({n}/{d})" if d else "-"


@dataclass
class Check:
    text: str
    ok: bool


def kind_rows(results: Sequence[SceneResult]) -> tuple[list[str], list[Check]]:
    """The per-kind table (markdown) and the target checks."""
    by_kind: dict[str, list[SceneResult]] = defaultdict(list)
    for r in results:
        by_kind[r.planned.kind].append(r)
    lines = ["| scene kind | hours | true | matched, right direction | wrong direction | missed "
             "| extra | hourly error mean | worst |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    checks: list[Check] = []
    groups = [*by_kind.items(), ("all", list(results))]
    for kind, rs in groups:
        truth = sum(r.truth for r in rs)
        right = sum(r.right for r in rs)
        mean, worst, _n = hourly_summary(h for r in rs for h in r.hours)
        hours = sum(r.planned.duration_s for r in rs) / HOUR_S
        name = "**all**" if kind == "all" else kind
        lines.append(f"| {name} | {hours:g} | {truth} | {_share(right, truth)} | "
                     f"{sum(r.wrong for r in rs)} | {sum(r.missed for r in rs)} | "
                     f"{sum(r.extra for r in rs)} | {_pct(mean)} | {_pct(worst)} |")
        share = right / truth if truth else 0.0
        checks.append(Check(f"{kind}: {_share(right, truth)} matched with the right direction "
                            f"(target >= {100 * TARGET_MATCHED:g} %)", share >= TARGET_MATCHED))
        checks.append(Check(f"{kind}: mean hourly count error {_pct(mean)} (worst "
                            f"{_pct(worst)}; target mean <= {100 * TARGET_HOURLY:g} %)",
                            mean is not None and mean <= TARGET_HOURLY))
    return lines, checks


def report(seed_set: str, results: Sequence[SceneResult], harsh: Sequence[Harsh],
           stress: StressResult, doorways: Sequence[DoorwayResult], runtime_s: float
           ) -> tuple[list[str], bool]:
    """The report in markdown, and whether every target was met."""
    hours = sum(r.planned.duration_s for r in results) / HOUR_S
    out = ["# Counting passers-by: evaluation on scripted scenes", "",
           f"`python -m bench.eval_counting{'' if seed_set == 'eval' else ' --seeds dev'}` "
           f"({seed_set} seeds; {hours:g} scripted hours of radar scenes, "
           f"{sum(d.truth for d in doorways)} doorway passages; {runtime_s:.0f} s).", "",
           "## Radar scenes", "",
           "| scene kind | hours | seeds | walkers | true crossings | most in the field |",
           "|---|---:|---|---:|---:|---:|"]
    by_kind: dict[str, list[SceneResult]] = defaultdict(list)
    for r in results:
        by_kind[r.planned.kind].append(r)
    for kind, rs in by_kind.items():
        out.append(f"| {kind} | {sum(r.planned.duration_s for r in rs) / HOUR_S:g} | "
                   f"{', '.join(str(r.planned.seed) for r in rs)} | "
                   f"{sum(r.walkers for r in rs)} | {sum(r.truth for r in rs)} | "
                   f"{max(r.max_in_field for r in rs)} |")
    rows, checks = kind_rows(results)
    out += ["", "Each scene went through the emulator's bytes, the driver's protocol and codec "
            "and the counting feature's counter (path a), and as CSV through "
            "`citynode detect crossings` (path b). Crossings are matched one-to-one within "
            f"{WINDOW_S:g} s; hourly error = |counted - true| / true per hour and direction, "
            "counted = the `in` / `out` records of the feature's reports.",
            "", ("Held out: these seeds are used nowhere else in the repository (tests, "
                 "development set); the tracker's parameters are to be chosen on the "
                 "development seeds (`--seeds dev`), never on these." if seed_set == "eval" else
                 "Development seeds: the set to choose the tracker's parameters on; the "
                 "evaluation (`python -m bench.eval_counting`) uses other seeds."),
            "", "## Results per scene kind (path a)", "", *rows]
    offsets = sorted(abs(x) for r in results for x in r.offsets)
    if offsets:
        p95 = offsets[min(len(offsets) - 1, int(0.95 * len(offsets)))]
        out += ["", f"Time of a matched crossing (counted - true): median |dt| "
                f"{statistics.median(offsets):.2f} s, 95th percentile {p95:.2f} s, largest "
                f"{offsets[-1]:.2f} s."]
    # the feature's reports
    short = [r.planned.name for r in results if not r.reports_add_up]
    checks.append(Check("the feature's report records carry every crossing its counter "
                        f"counted ({len(results) - len(short)}/{len(results)} scenes)",
                        not short))
    # paths
    bad = [r for r in results if not r.agree]
    worst_dt = max((r.agree_dt for r in results if r.agree), default=0.0)
    checks.append(Check(f"both paths agree on {len(results) - len(bad)}/{len(results)} scenes "
                        f"(largest time difference {worst_dt * 1000:.0f} ms)", not bad))
    out += ["", "## The two paths", "",
            f"`citynode detect crossings` on the {sum(r.csv_rows for r in results)} CSV rows "
            f"of every scene gave the same crossings as the feature's path on "
            f"{len(results) - len(bad)} of {len(results)} scenes (largest time difference "
            f"{worst_dt * 1000:.0f} ms; the CSV carries milliseconds)."]
    for r in bad:
        why = (f"exit {r.cli_rc}: {r.cli_err.splitlines()[-1] if r.cli_err else ''}"
               if r.cli_rc else f"different crossings (time difference {r.agree_dt:.3f} s)")
        out.append(f"- {r.planned.name}: {why}")
    # loiterers
    loit = [x for r in results for x in r.loiterers]
    over = [(c, n) for c, n in loit if n > max(1, c)]
    table = Counter(loit)
    out += ["", "## Loiterers and people stopping on the line", "",
            "Times each was counted, by how often they really crossed the line (arriving "
            "at the stop from the far side, and once more if they walked back):", "",
            "| crossed | counted 0 | counted 1 | counted 2 | counted 3+ |",
            "|---:|---:|---:|---:|---:|"]
    for c in sorted({c for c, _ in loit}):
        cells = [table[c, n] for n in (0, 1, 2)] + [sum(v for (cc, n), v in table.items()
                                                        if cc == c and n >= 3)]
        out.append(f"| {c} | " + " | ".join(str(v) for v in cells) + " |")
    checks.append(Check(f"loiterers and people stopping on the line counted more than once "
                        f"(beyond their real crossings): "
                        f"{len(over)} of {len(loit)}", not over and bool(loit)))
    # a harsher radar
    out += ["", "## A harsher radar (no target)", "",
            f"An hour of each kind and of `mixed` (seed {SEED_SETS[seed_set] + HARSH_SEED_OFFSET}) "
            f"with {HARSH.noise_mm:g} mm of position noise, {100 * HARSH.drop_rate:g} % of frames "
            f"lost, ghosts on {100 * HARSH.ghost_rate:g} % of frames and slots swapped in "
            f"{100 * HARSH.swap_prob:g} % of close passes (the emulator's defaults: "
            f"{DEFAULT_HABITS.noise_mm:g} mm, {100 * DEFAULT_HABITS.drop_rate:g} %, "
            f"{100 * DEFAULT_HABITS.ghost_rate:g} %, {100 * DEFAULT_HABITS.swap_prob:g} %):", "",
            "| scene kind | true | matched, right direction | wrong | missed | extra |",
            "|---|---:|---:|---:|---:|---:|"]
    for h in harsh:
        out.append(f"| {h.kind} | {h.truth} | {_share(h.right, h.truth)} | {h.wrong} | "
                   f"{h.missed} | {h.extra} |")
    # stress
    delay = f"{statistics.median(stress.delays):.0f} s" if stress.delays else "-"
    out += ["", "## Saturation (stress, no target)", "",
            f"{STRESS_S / 60:g} minutes of crowded and quiet phases in turn "
            f"({STRESS_PHASE_S:g} s each): a crowd is about {CROWD_PER_H:g} arrivals an hour, "
            f"groups of four to six among them now and then, more than three in view "
            f"{_pct(stress.crowd_share)} of the time (up to {stress.max_in_view}); a quiet "
            "phase has one walker at a time.", "",
            f"- `saturated` raised in {stress.flagged} of {stress.phases} crowded phases "
            f"(median {delay} after the crowd began);",
            f"- raised on {_pct(stress.false_share)} of the samples of the quiet phases (from "
            f"{SATURATION_GRACE_S:g} s after a crowd);",
            f"- counted {_share(stress.counted_crowd, stress.true_crowd)} of the crossings in "
            f"crowds (the radar tracks three), {_share(stress.counted_quiet, stress.true_quiet)}"
            " in quiet phases."]
    # doorway
    d_truth = sum(d.truth for d in doorways)
    d_right = sum(d.right for d in doorways)
    out += ["", "## Doorway (VL53L1X, two zones, UM2600)", "",
            "| scene | seed | passages | turned back | matched, right direction | wrong | "
            "missed | extra |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for d in doorways:
        out.append(f"| {d.name} | {d.seed} | {d.truth} | {d.turned_back} | "
                   f"{_share(d.right, d.truth)} | {d.wrong} | {d.missed} | {d.extra} |")
    checks.append(Check(f"doorway: {_share(d_right, d_truth)} matched with the right "
                        f"direction (target >= {100 * TARGET_DOORWAY:g} %)",
                        d_truth > 0 and d_right / d_truth >= TARGET_DOORWAY))
    ok = all(c.ok for c in checks)
    out += ["", "## Targets", ""]
    out += [f"- {'PASS' if c.ok else 'FAIL'} {c.text}" for c in checks]
    out += ["", f"Runtime: {runtime_s:.1f} s."]
    return out, ok


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"error: eval_counting: {message}", file=sys.stderr)
        raise SystemExit(64)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m bench.eval_counting",
                 description="People counting (LD2450 radar, VL53L1X doorway) on scripted "
                             "scenes with known truth; report in build/eval/counting.md.")
    ap.add_argument("--seeds", choices=sorted(SEED_SETS), default="eval",
                    help="eval: the evaluation (default); dev: the development seeds, for "
                         "choosing the tracker's parameters")
    args = ap.parse_args(argv)
    start = time.monotonic()
    results: list[SceneResult] = []
    with tempfile.TemporaryDirectory(prefix="eval-counting-") as tmp:
        for p in plan(args.seeds):
            r = run_scene(p, Path(tmp))
            results.append(r)
            print(f"  {p.name}: {r.right}/{r.truth} right, {r.wrong} wrong, {r.missed} "
                  f"missed, {r.extra} extra{'' if r.agree else ', PATHS DISAGREE'}",
                  flush=True)
    harsh = run_harsh(args.seeds)
    stress = run_stress(SEED_SETS[args.seeds] + STRESS_SEED_OFFSET)
    base = DOORWAY_SEEDS[args.seeds]
    doorways = [run_doorway(name, base + k, opts) for k, (name, opts) in enumerate(DOORWAYS)]
    lines, ok = report(args.seeds, results, harsh, stress, doorways, time.monotonic() - start)
    text = "\n".join(lines) + "\n"
    print(text, end="")
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / ("counting.md" if args.seeds == "eval" else "counting-dev.md")
    out.write_text(text, encoding="utf-8")
    print(f"report: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
