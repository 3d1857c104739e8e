"""The crossing counter (agent/detectors/crossing.py): tracking by position, the line with
its hysteresis, births, coasting, fades, flags; property tests over generated walkers, and
event-level checks over the radar emulator's scenes."""

from __future__ import annotations

import ast
import dataclasses
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.detectors import crossing as crossing_module
from agent.detectors.crossing import (
    MAX_TRACKS,
    Crossing,
    CrossingCounter,
    CrossingParams,
    from_mm,
)
from drivers.families.counting import CountingLine
from drivers.ld2450.codec import FrameDecoder, Report
from drivers.ld2450.emulator import Habits, stream
from drivers.ld2450.scenes import BASIC_KINDS, HARD_KINDS, Scene, Walker, generate, in_view, walk

ROOT = Path(__file__).resolve().parent.parent
FRAME_S = 0.1
Frame = tuple[float, list[tuple[int, float, float]]]
PROPERTY = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def frames_of(walkers: Sequence[Walker], *, noise_m: float = 0.0, seed: int = 0,
              drop: float = 0.0, until: float | None = None) -> Iterator[Frame]:
    """Frames at 10 Hz of everyone on their path (in slot order of appearance), with
    Gaussian position noise and whole frames dropped at random."""
    rng = random.Random(seed)
    end = until if until is not None else max(w.end for w in walkers) + 3.0
    t = min(w.start for w in walkers) - 0.5
    while t <= end:
        targets = []
        for w in walkers:
            p = w.at(t)
            if p is not None:
                targets.append((len(targets), p[0] + rng.gauss(0, noise_m) if noise_m else p[0],
                                p[1] + rng.gauss(0, noise_m) if noise_m else p[1]))
        if not (drop and rng.random() < drop):
            yield round(t, 6), targets[:3]
        t += FRAME_S


def count(frames: Iterator[Frame] | list[Frame], counter: CrossingCounter | None = None
          ) -> list[Crossing]:
    counter = counter or CrossingCounter()
    out: list[Crossing] = []
    for t, targets in frames:
        out += counter.update(t, targets)
    return out


def across(y: float, direction: str = "in", speed: float = 1.4, x0: float = 4.0,
           start: float = 0.0) -> Walker:
    a, b = (-x0, x0) if direction == "in" else (x0, -x0)
    return walk(start, [(a, y), (b, y)], speed)


# -- basics -----------------------------------------------------------------------------------
def test_a_walker_crossing_once_is_counted_once_at_the_time_of_the_crossing() -> None:
    w = across(2.0, "in")
    got = count(frames_of([w]))
    truth = w.crossings()
    assert [c.direction for c in got] == ["in"]
    assert got[0].t == pytest.approx(truth[0][0], abs=0.15)
    w = across(2.0, "out")
    assert [c.direction for c in count(frames_of([w]))] == ["out"]


def test_a_crossing_carries_a_time_and_a_direction_only() -> None:
    """Privacy: what leaves the detector has no position and no identity."""
    assert [f.name for f in dataclasses.fields(Crossing)] == ["t", "direction"]


def test_two_people_side_by_side_are_two() -> None:
    pair = [across(1.5, "in"), across(2.1, "in", start=0.05)]
    got = count(frames_of(pair, noise_m=0.04, seed=3))
    assert [c.direction for c in got] == ["in", "in"]


def test_two_people_crossing_each_other_both_count_their_way() -> None:
    """The radar may swap their slots as they pass: slots mean nothing to the counter."""
    a, b = across(1.8, "in"), across(2.3, "out")
    frames = list(frames_of([a, b], noise_m=0.03, seed=5))
    swapped = [(t, [(2 - s, x, y) for s, x, y in targets]) if t > 2.9 else (t, targets)
               for t, targets in frames]
    for fr in (frames, swapped):
        assert sorted(c.direction for c in count(fr)) == ["in", "out"]


def test_a_short_ghost_never_becomes_a_track() -> None:
    """Multipath: a target that lasts fewer than birth_frames frames counts for nothing,
    even when it jumps across the line."""
    ghost = walk(0.0, [(-1.0, 4.5), (1.0, 4.5)], 4.0)  # 0.5 s: 5 or 6 frames
    person = walk(-3.0, [(-4.0, 1.5), (-3.9, 1.5)], 0.05)  # someone far from the line
    assert count(frames_of([person, ghost])) == []


def test_a_person_stopping_on_the_line_fading_and_walking_on_counts_once() -> None:
    """The radar stops reporting someone who stands still; when they walk on, their new
    track carries on from where the old one was lost."""
    w = walk(0.0, [(-4.0, 2.0), (0.05, 2.0), (4.0, 2.0)], 1.4, waits={1: 60.0})
    frames = [(t, [] if 10.0 < t < 60.0 else targets) for t, targets in frames_of([w])]
    got = count(frames)
    assert [c.direction for c in got] == ["in"]
    assert got[0].t == pytest.approx(w.crossings()[0][0], abs=0.2)


def test_someone_waiting_beyond_the_band_then_turning_back_counts_in_and_out() -> None:
    w = walk(0.0, [(-4.0, 1.5), (0.6, 1.5), (-4.0, 1.5)], 1.3, waits={1: 30.0})
    frames = [(t, [] if 12.0 < t < 30.0 else targets) for t, targets in frames_of([w])]
    assert [c.direction for c in count(frames)] == ["in", "out"]


def test_a_coasting_track_does_not_grab_a_newcomer_far_away() -> None:
    """A track lost standing still is not carried across the line by the next passer-by."""
    stands = walk(0.0, [(-4.0, 1.6), (0.7, 1.6)], 1.4, waits={1: 10.0})
    newcomer = walk(stands.end + 0.5, [(-3.0, 1.7), (-4.5, 1.7)], 1.4)
    frames = [(t, [p for p in targets if not (t > stands.end - 2.0 and p[1] > 0.5)])
              for t, targets in frames_of([stands, newcomer])]
    assert [c.direction for c in count(frames)] == ["in"]


# -- harder street behaviour (drivers/ld2450/scenes.py HARD_KINDS) ------------------------------
def in_field(frames: Iterator[Frame] | list[Frame]) -> list[Frame]:
    """Only what the radar sees: targets inside its field of view (6 m, 60 degrees)."""
    return [(t, [(s, x, y) for s, x, y in targets if in_view(x, y)]) for t, targets in frames]


def faded(frames: Iterator[Frame], still: Sequence[tuple[float, float]]) -> list[Frame]:
    """The radar's fade: nothing reported during the ``(start, end)`` spans of standing
    still, from 8 s after they begin."""
    return [(t, [] if any(a + 8.0 < t < b for a, b in still) else targets)
            for t, targets in frames]


@pytest.mark.parametrize("x_stop", [-0.2, -0.05, 0.05, 0.2])
def test_stopping_on_the_line_then_walking_on_is_one_crossing(x_stop: float) -> None:
    """A phone call or a red light on the line: a minute standing there, swaying, faded
    out by the radar, then on: one crossing, the right way."""
    w = walk(0.0, [(-4.0, 2.0), (x_stop, 2.0), (x_stop + 0.03, 2.05), (4.0, 2.0)], 1.4,
             waits={1: 30.0, 2: 30.0})
    stop = w.waypoints[1][0]
    frames = faded(frames_of([w], noise_m=0.04, seed=8), [(stop, stop + 30.0),
                                                           (stop + 30.1, stop + 60.1)])
    got = count(frames)
    assert [c.direction for c in got] == ["in"]
    if abs(x_stop) >= 0.2:  # a stop clearly on one side: counted when the line was crossed
        assert got[0].t == pytest.approx(w.crossings()[0][0], abs=1.0)


@pytest.mark.parametrize("turn", [-1.0, -0.5, -0.2])
def test_a_u_turn_before_the_line_is_none(turn: float) -> None:
    w = walk(0.0, [(-4.0, 2.0), (turn, 2.0), (turn + 0.1, 2.2), (turn, 2.4), (-4.0, 2.4)],
             1.3, waits={2: 1.0})
    assert count(frames_of([w], noise_m=0.04, seed=2)) == []


@pytest.mark.parametrize("turn", [0.2, 0.5, 1.0])
def test_a_u_turn_past_the_line_is_a_crossing_and_a_return(turn: float) -> None:
    """Inside the band too: the track went firmly across the line and came back."""
    w = walk(0.0, [(-4.0, 2.0), (turn, 2.0), (turn + 0.1, 2.2), (turn, 2.4), (-4.0, 2.4)],
             1.3)
    got = count(frames_of([w], noise_m=0.04, seed=2))
    assert [c.direction for c in got] == ["in", "out"]
    for c, (t, _) in zip(got, w.crossings(), strict=True):
        assert c.t == pytest.approx(t, abs=1.0)


@pytest.mark.parametrize("c", [-0.25, -0.15, -0.05])
def test_walking_along_the_line_is_none(c: float) -> None:
    """Along the line inside the band, on one side of it, for four metres (to the kerb
    and back to where one came from): nobody crossed."""
    w = walk(0.0, [(-4.0, 1.0), (c, 1.0), (c, 5.0), (-3.0, 5.0)], 1.3)
    assert count(frames_of([w], noise_m=0.04, seed=4)) == []


def test_walking_along_the_line_past_it_then_on_is_one_crossing() -> None:
    w = walk(0.0, [(-4.0, 1.0), (0.15, 1.0), (0.15, 5.0), (3.0, 5.0)], 1.3)
    got = count(frames_of([w], noise_m=0.04, seed=4))
    assert [c.direction for c in got] == ["in"]
    assert got[0].t == pytest.approx(w.crossings()[0][0], abs=1.0)


@pytest.mark.parametrize(("speed", "y"), [(9.0, 1.0), (9.0, 3.0), (6.0, 1.0), (1.4, 0.4)])
def test_a_fast_cyclist_or_a_walker_right_by_the_radar_is_one(speed: float, y: float) -> None:
    """A few frames each side of the line only (the field is 3.5 m wide a metre from the
    radar, 1.4 m at 0.4 m): born early, because it came in at the edge of the field,
    moved, and is nobody's mirror image."""
    for direction in ("in", "out"):
        w = across(y, direction, speed=speed, x0=6.0)
        frames = in_field(frames_of([w], noise_m=0.04, seed=6))
        assert sum(1 for _, targets in frames if targets) <= (12 if y < 2 else 30)
        assert [c.direction for c in count(frames)] == [direction]


def test_the_mirror_image_of_a_fast_cyclist_is_not_a_second_one() -> None:
    """Multipath: a ghost at the cyclist's x, mirrored in a reflector 4 m out, for six
    frames as it crosses the line; the cyclist counts, the ghost does not."""
    cyclist = across(3.0, "in", speed=8.0, x0=6.0)
    frames = in_field(frames_of([cyclist], noise_m=0.04, seed=1))
    t_line = cyclist.crossings()[0][0]
    ghosted = [(t, [*targets, (2, targets[0][1] + 0.05, 8.0 - targets[0][2])]
                if targets and abs(t - t_line) < 0.3 else targets) for t, targets in frames]
    assert [c.direction for c in count(ghosted)] == ["in"]


def test_appearing_and_vanishing_at_the_edge_close_to_the_line() -> None:
    """Out of a door beside the radar 0.2 m past the line, then away along the pavement:
    one crossing; walking to that door from the other side: one crossing too, though the
    track never left the band on the door's side."""
    out_of_door = walk(0.0, [(0.2, 0.1), (0.2, 2.0), (-4.0, 2.0)], 1.3)
    assert [c.direction for c in count(in_field(frames_of([out_of_door], noise_m=0.04,
                                                          seed=3)))] == ["out"]
    into_door = walk(0.0, [(-4.0, 2.0), (0.2, 2.0), (0.2, 0.1)], 1.3)
    frames = in_field(frames_of([into_door], noise_m=0.04, seed=3))
    got = count([*frames, (frames[-1][0] + 3.0, [(0, -3.0, 3.0)])])  # the next passer-by
    assert [c.direction for c in got] == ["in"]


def test_someone_leaving_by_a_door_is_not_the_next_one_out_of_it() -> None:
    """A walker lost at the edge of the field leaves no lasting note: the next person out
    of the same door a minute later starts afresh (and walks off the way they came)."""
    into_door = walk(0.0, [(-4.0, 2.0), (0.2, 2.0), (0.2, 0.1)], 1.3)
    later = walk(70.0, [(-0.15, 0.1), (-0.15, 2.0), (-4.0, 2.0)], 1.3)
    got = count(in_field(frames_of([into_door, later], noise_m=0.04, seed=5)))
    assert [c.direction for c in got] == ["in"]


@PROPERTY
@given(turn=st.floats(0.2, 1.5), y=st.floats(0.8, 4.5), speed=st.floats(0.6, 2.0),
       pause=st.floats(0.0, 3.0), noise_cm=st.floats(0.0, 4.0), seed=st.integers(0, 2**16))
def test_any_u_turn_before_the_line_counts_nothing(turn: float, y: float, speed: float,
                                                   pause: float, noise_cm: float,
                                                   seed: int) -> None:
    w = walk(0.0, [(-5.0, y), (-turn, y), (-turn + 0.1, y + 0.2), (-turn, y + 0.4),
                   (-5.0, y + 0.4)], speed, waits={2: pause})
    assert count(frames_of([w], noise_m=noise_cm / 100, seed=seed)) == []


@PROPERTY
@given(c=st.floats(0.05, 0.3), y0=st.floats(0.6, 1.5), length=st.floats(1.0, 4.0),
       side=st.sampled_from([-1.0, 1.0]), noise_cm=st.floats(0.0, 4.0),
       seed=st.integers(0, 2**16))
def test_walking_along_the_line_on_one_side_counts_nothing(c: float, y0: float, length: float,
                                                           side: float, noise_cm: float,
                                                           seed: int) -> None:
    """In from one side, along the line on that side inside the band, out the same side."""
    w = walk(0.0, [(side * 4.0, y0), (side * c, y0), (side * c, y0 + length),
                   (side * 4.0, y0 + length)], 1.3)
    assert count(frames_of([w], noise_m=noise_cm / 100, seed=seed)) == []


def test_the_zone_limits_what_counts() -> None:
    near, far = across(1.0, "in"), across(4.0, "out", start=10.0)
    frames = list(frames_of([near, far]))
    assert [c.direction for c in count(frames, CrossingCounter(zone_y_m=(2.0, 5.0)))] == ["out"]
    assert [c.direction for c in count(frames, CrossingCounter(zone_y_m=(0.5, 2.0)))] == ["in"]


def test_a_line_elsewhere() -> None:
    w = walk(0.0, [(-4.0, 2.0), (1.2, 2.0)], 1.4)  # stops beyond x = 0, before x = 2
    frames = list(frames_of([w]))
    assert [c.direction for c in count(frames)] == ["in"]
    assert count(frames, CrossingCounter(line_x_m=2.0)) == []


def test_frames_without_targets_change_no_crossing() -> None:
    """What ``detect crossings`` relies on: its CSV has no rows for empty frames."""
    scene = generate("loiterers", 900.0, seed=4)
    frames = [(t, from_mm(r.targets)) for t, r in _decoded(scene, Habits(), 4)]
    assert any(not targets for _, targets in frames)
    full = count(frames)
    sparse = count([f for f in frames if f[1]])
    assert full == sparse and full


def test_out_of_order_and_non_finite_input_is_refused() -> None:
    c = CrossingCounter()
    c.update(10.0, [(0, -1.0, 2.0)])
    with pytest.raises(ValueError):
        c.update(9.9, [(0, -1.0, 2.0)])
    with pytest.raises(ValueError):
        c.update(11.0, [(0, math.nan, 2.0)])
    with pytest.raises(ValueError):
        c.update(math.inf, [])
    c.update(10.0, [(0, -1.0, 2.0)])  # the same time again is not out of order


def test_memory_is_bounded_whatever_the_input() -> None:
    rng = random.Random(1)
    c = CrossingCounter()
    for i in range(2000):
        c.update(i * 0.1, [(k, rng.uniform(-6, 6), rng.uniform(0.1, 6))
                           for k in range(rng.randint(0, 40))])
        assert len(c._tracks) <= MAX_TRACKS
        assert len(c._notes) <= crossing_module.MAX_NOTES


# -- occupancy and flags ----------------------------------------------------------------------
def test_occupancy_is_confirmed_tracks_in_the_zone_seen_just_now() -> None:
    c = CrossingCounter(zone_y_m=(0.0, 3.0))
    for i in range(10):
        c.update(i * 0.1, [(0, -2.0 + 0.1 * i, 1.0), (1, -2.0 + 0.1 * i, 2.5),
                           (2, -2.0 + 0.1 * i, 4.0)])
    assert c.occupancy == 2   # the third is outside the zone
    c.tick(1.5)
    assert c.occupancy == 0   # not seen for 0.6 s: probably gone
    assert CrossingCounter().occupancy == 0


def test_flags_warming_up_then_blind_without_frames() -> None:
    c = CrossingCounter()
    assert c.flags == {"warming_up"}
    c.update(100.0, [])
    assert c.flags == {"warming_up"}
    c.update(103.0, [])
    c.update(105.5, [])
    assert c.flags == set()
    c.tick(112.0)
    assert c.flags == {"blind"}          # no frame for over 5 s
    c.update(112.5, [(0, 1.0, 1.0)])
    assert c.flags == {"warming_up"}     # frames resumed: warming up again


def test_blind_when_frames_come_without_any_target_for_long() -> None:
    c = CrossingCounter(params=CrossingParams(blind_after_s=60.0))
    c.update(0.0, [(0, 1.0, 2.0)])
    for i in range(1, 700):
        c.update(i * 0.1, [])
    assert "blind" in c.flags
    c.update(70.0, [(0, 1.0, 2.0)])
    assert "blind" not in c.flags


def test_saturated_after_three_targets_for_long() -> None:
    c = CrossingCounter()
    targets = [(0, -2.0, 1.0), (1, 0.5, 2.0), (2, 2.0, 3.0)]
    for i in range(90):
        c.update(i * 0.1, targets)
    assert "saturated" not in c.flags
    for i in range(90, 120):
        c.update(i * 0.1, targets)
    assert "saturated" in c.flags
    c.update(12.1, targets[:2])
    assert "saturated" not in c.flags


def test_snapshot_has_counts_only() -> None:
    c = CrossingCounter()
    count(frames_of([across(2.0)]), c)
    snap = c.snapshot()
    assert snap["in"] == 1 and snap["out"] == 0
    assert set(snap) == {"in", "out", "tracks", "occupancy", "flags"}


# -- parameters -------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [{"hysteresis_m": -0.1}, {"gate_m": 0.0}, {"birth_frames": 0},
                                 {"birth_frames": 2.5}, {"alpha": 0.0}, {"beta": 1.5},
                                 {"coast_s": math.nan}, {"max_targets": 0},
                                 {"warmup_s": math.inf}, {"gate_m": True}])
def test_bad_parameters_are_refused(bad: dict) -> None:
    with pytest.raises(ValueError):
        CrossingParams(**bad)


@pytest.mark.parametrize("line, zone", [(math.nan, None), (0.0, (3.0, 1.0)),
                                        (0.0, (1.0, math.inf))])
def test_a_bad_line_or_zone_is_refused(line: float, zone: tuple[float, float] | None) -> None:
    with pytest.raises(ValueError):
        CrossingCounter(line, zone)


def test_the_radars_counting_table_has_the_detectors_names_and_defaults() -> None:
    """drivers/ cannot import agent/: the two lists are kept equal here."""
    table = msgspec.structs.asdict(CountingLine())
    params = {f.name: f.default for f in dataclasses.fields(CrossingParams)}
    assert table.pop("line_x_m") == 0.0 and table.pop("zone_y_m") is None
    assert list(table) == list(params)[:len(table)]
    assert table == {k: params[k] for k in table}


def test_the_detector_logs_positions_at_debug_only() -> None:
    """Structural privacy: every log call in crossing.py is log.debug."""
    tree = ast.parse((ROOT / "agent" / "detectors" / "crossing.py").read_text())
    calls = [n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name)
             and n.func.value.id == "log"]
    assert calls and set(calls) <= {"debug", "isEnabledFor"}


# -- properties ---------------------------------------------------------------------------------
def _one_crossing_walker(draw: st.DrawFn) -> Walker:
    """Someone crossing x = 0 once, from well beyond the band to well beyond it (at least
    six frames of walking on each side: a fast cyclist is seen before the line even when a
    few frames are lost), seen for at least two seconds, at any pace from a stroll to a
    cyclist's, possibly zigzagging."""
    direction = draw(st.sampled_from(["in", "out"]))
    speed = draw(st.floats(0.5, 7.0))
    x_start = draw(st.floats(1.0, 5.0)) + 0.6 * speed
    x_end = draw(st.floats(1.0, 5.0)) + 0.6 * speed
    if (x_start + x_end) / speed < 2.0:
        x_end = 2.0 * speed - x_start
    y = draw(st.floats(0.5, 5.5))
    sign = -1.0 if direction == "in" else 1.0
    n = draw(st.integers(1, 4))
    xs = [sign * x_start + (-sign) * (x_start + x_end) * k / n for k in range(n + 1)]
    ys = [y] + [min(5.8, max(0.3, y + draw(st.floats(-0.4, 0.4)))) for _ in xs[1:-1]] + [y]
    start = draw(st.floats(0.0, 1000.0))
    return walk(start, list(zip(xs, ys, strict=True)), speed)


@st.composite
def walkers_crossing_once(draw: st.DrawFn) -> Walker:
    return _one_crossing_walker(draw)


@PROPERTY
@given(w=walkers_crossing_once(), noise_cm=st.floats(0.0, 5.0), seed=st.integers(0, 2**16))
def test_any_walker_crossing_once_gives_one_crossing_its_way(w: Walker, noise_cm: float,
                                                               seed: int) -> None:
    got = count(frames_of([w], noise_m=noise_cm / 100, seed=seed))
    assert [c.direction for c in got] == [d for _, d in w.crossings()]
    assert abs(got[0].t - w.crossings()[0][0]) < 1.0


@PROPERTY
@given(w=walkers_crossing_once(), seed=st.integers(0, 2**16))
def test_dropping_a_fifth_of_the_frames_keeps_the_count(w: Walker, seed: int) -> None:
    frames = list(frames_of([w], noise_m=0.03, seed=seed))
    kept = [f for f in frames if random.Random(seed + int(f[0] * 10)).random() >= 0.2]
    assert [c.direction for c in count(kept)] == [d for _, d in w.crossings()]


@st.composite
def scenes(draw: st.DrawFn) -> list[Walker]:
    """Up to three people crossing in either direction, in lanes at least 0.5 m apart,
    starting within a few seconds of each other."""
    lanes = draw(st.lists(st.floats(0.5, 5.5), min_size=1, max_size=3)
                 .filter(lambda ys: all(abs(a - b) >= 0.5 for i, a in enumerate(ys)
                                        for b in ys[i + 1:])))
    out = []
    for y in lanes:
        d = draw(st.sampled_from(["in", "out"]))
        out.append(across(y, d, speed=draw(st.floats(0.8, 3.0)),
                          start=draw(st.floats(0.0, 3.0))))
    return out


@PROPERTY
@given(walkers=scenes(), seed=st.integers(0, 2**16), perm_seed=st.integers(0, 2**16))
def test_any_slot_permutation_gives_the_same_crossings(walkers: list[Walker], seed: int,
                                                        perm_seed: int) -> None:
    frames = list(frames_of(walkers, noise_m=0.03, seed=seed))
    rng = random.Random(perm_seed)

    def shuffled(targets: list[tuple[int, float, float]]) -> list[tuple[int, float, float]]:
        slots = rng.sample(range(3), len(targets))
        out = [(s, x, y) for s, (_, x, y) in zip(slots, targets, strict=True)]
        rng.shuffle(out)
        return out

    permuted = [(t, shuffled(targets)) for t, targets in frames]
    assert count(frames) == count(permuted)
    assert sorted(c.direction for c in count(frames)) == sorted(
        d for w in walkers for _, d in w.crossings())


@PROPERTY
@given(x0=st.floats(-0.25, 0.25), y=st.floats(0.5, 5.5), amp=st.floats(0.0, 0.05),
       noise_cm=st.floats(0.0, 4.0), seed=st.integers(0, 2**16), fades=st.booleans())
def test_a_loiterer_within_the_band_is_never_counted(x0: float, y: float, amp: float,
                                                      noise_cm: float, seed: int,
                                                      fades: bool) -> None:
    """Someone standing and fidgeting near the line, for minutes, fading in and out."""
    rng = random.Random(seed)
    c = CrossingCounter()
    for i in range(3000):
        t = i * 0.1
        if fades and (i // 100) % 3 == 2:
            targets: list[tuple[int, float, float]] = []
        else:
            x = x0 + amp * math.sin(t) + rng.gauss(0, noise_cm / 100)
            targets = [(0, x, y + rng.gauss(0, noise_cm / 100))]
        assert c.update(t, targets) == []


@PROPERTY
@given(x0=st.floats(-4.0, 4.0), y=st.floats(0.5, 5.5), noise_cm=st.floats(0.0, 5.0),
       seed=st.integers(0, 2**16))
def test_noise_of_a_few_cm_never_adds_crossings(x0: float, y: float, noise_cm: float,
                                                 seed: int) -> None:
    """Someone standing anywhere, the radar's noise on their position: no crossing."""
    rng = random.Random(seed)
    c = CrossingCounter()
    for i in range(600):
        x = x0 + rng.gauss(0, noise_cm / 100)
        assert c.update(i * 0.1, [(0, x, y + rng.gauss(0, noise_cm / 100))]) == []


# -- the radar emulator's scenes, at event level --------------------------------------------------
def _decoded(scene: Scene, habits: Habits, seed: int) -> Iterator[tuple[float, Report]]:
    dec = FrameDecoder()
    for t, raw in stream(scene, habits, seed=seed):
        for ev in dec.feed(raw):
            if isinstance(ev, Report):
                yield t, ev


def _matched(truth: list, got: list[Crossing], window_s: float = 2.0) -> tuple[int, int]:
    """One-to-one, same direction, within ``window_s``: (matched, extra)."""
    used: set[int] = set()
    for tc in truth:
        best = min((abs(c.t - tc.t), j) for j, c in enumerate(got)
                   if j not in used and c.direction == tc.direction) if got else None
        if best is not None and best[0] <= window_s:
            used.add(best[1])
    return len(used), len(got) - len(used)


@pytest.mark.parametrize("kind", BASIC_KINDS)
def test_emulated_scenes_count_like_the_truth(kind: str) -> None:
    """Ten minutes of each scene kind through the emulated radar (noise, dropped frames,
    ghosts, slot swaps, fading) and its real codec: every crossing matched (the evaluation,
    bench/eval_counting.py, does hours)."""
    scene = generate(kind, 600.0, seed=2024)
    counter = CrossingCounter()
    got: list[Crossing] = []
    for t, report in _decoded(scene, Habits(), 2024):
        got += counter.update(t, from_mm(report.targets))
    truth = scene.truth()
    matched, extra = _matched(truth, got)
    assert truth and matched == len(truth) and extra == 0, (kind, len(truth), matched, extra)


@pytest.mark.parametrize("kind", HARD_KINDS)
def test_emulated_harder_scenes_count_nearly_like_the_truth(kind: str) -> None:
    """The harder kinds in ten minutes: some crossings are beyond any counter (a stop or a
    walk a few centimetres past the line, within the radar's noise: docs/counting.md,
    Known limits), so most, not all, are matched; hardly anything is counted that did not
    happen."""
    scene = generate(kind, 600.0, seed=2024)
    counter = CrossingCounter()
    got: list[Crossing] = []
    for t, report in _decoded(scene, Habits(), 2024):
        got += counter.update(t, from_mm(report.targets))
    truth = scene.truth()
    matched, extra = _matched(truth, got)
    assert truth and matched >= 0.85 * len(truth) and extra <= 2, (kind, len(truth), matched,
                                                                    extra)
