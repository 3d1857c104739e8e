"""The counting evaluation's machinery (bench/eval_counting.py): one-to-one matching within
2 s with the direction, the hourly count error, the scene plan (never more than three
people in the field, dev and eval seeds apart) and determinism per seed."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench import eval_counting as ev
from drivers.ld2450 import scenes
from drivers.ld2450.scenes import Scene, walk


# -- matching ----------------------------------------------------------------------------------
def test_a_count_within_the_window_matches_and_one_outside_does_not():
    truth = [(10.0, "in"), (50.0, "out")]
    m = ev.match_events(truth, [(12.0, "in"), (52.01, "out")])
    assert m.right == [(0, 0)] and m.wrong == [] and m.missed == [1] and m.extra == [1]
    m = ev.match_events(truth, [(8.0, "in"), (48.0, "out")])
    assert m.right == [(0, 0), (1, 1)]  # 2 s exactly, either side, is inside


def test_matching_is_one_to_one():
    truth = [(10.0, "in")]
    m = ev.match_events(truth, [(9.5, "in"), (10.2, "in"), (10.4, "in")])
    assert len(m.right) == 1 and m.missed == [] and len(m.extra) == 2
    m = ev.match_events([(10.0, "in"), (10.5, "in"), (11.0, "in")], [(10.4, "in")])
    assert len(m.right) == 1 and len(m.missed) == 2 and m.extra == []


def test_the_wrong_direction_is_a_wrong_match_not_a_right_one():
    m = ev.match_events([(10.0, "in")], [(10.1, "out")])
    assert m.right == [] and m.wrong == [(0, 0)] and m.missed == [] and m.extra == []


def test_the_right_direction_is_preferred_to_the_nearest():
    # the "out" count is nearer the "in" truth, but matches the "out" truth in the window
    truth = [(10.0, "in"), (11.5, "out")]
    m = ev.match_events(truth, [(10.1, "out"), (12.0, "in")])
    assert sorted(m.right) == [(0, 1), (1, 0)] and m.wrong == []


def test_the_earliest_free_count_leaves_the_later_one_to_the_next_truth():
    # a greedy "nearest" match would pair 10.0 with 10.9 and lose 11.5 <-> 10.9's neighbour
    truth = [(10.0, "in"), (12.5, "in")]
    m = ev.match_events(truth, [(10.9, "in"), (11.0, "in")])
    assert len(m.right) == 2 and m.missed == [] and m.extra == []


def _max_matching(truth: list[float], got: list[float], window: float) -> int:
    """Kuhn's augmenting paths: the size of a largest one-to-one matching."""
    owner: dict[int, int] = {}

    def augment(i: int, seen: set[int]) -> bool:
        for g, tg in enumerate(got):
            if abs(tg - truth[i]) <= window and g not in seen:
                seen.add(g)
                if g not in owner or augment(owner[g], seen):
                    owner[g] = i
                    return True
        return False

    return sum(augment(i, set()) for i in range(len(truth)))


events = st.lists(st.tuples(st.floats(0, 30, allow_nan=False).map(lambda x: round(x, 1)),
                            st.sampled_from(ev.DIRECTIONS)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(events, events)
# 4.006 - 2.006 is 2.0000000000000018 in floating point, though 4.006 == 2.006 + 2.0: the
# matching must judge the difference, as the report states it, not a shifted bound
@example([(2.006, "in")], [(4.006, "in")])
def test_matching_is_a_largest_one_to_one_matching_per_direction(truth, got):
    m = ev.match_events(truth, got)
    # every index used once; the four lists account for everything
    ti = [i for i, _ in m.right + m.wrong] + m.missed
    gi = [g for _, g in m.right + m.wrong] + m.extra
    assert sorted(ti) == list(range(len(truth))) and sorted(gi) == list(range(len(got)))
    for i, g in m.right:
        assert abs(truth[i][0] - got[g][0]) <= ev.WINDOW_S and truth[i][1] == got[g][1]
    for i, g in m.wrong:
        assert abs(truth[i][0] - got[g][0]) <= ev.WINDOW_S and truth[i][1] != got[g][1]
    for d in ev.DIRECTIONS:  # as many right-direction matches as there can be
        tt = [t for t, x in truth if x == d]
        gt = [t for t, x in got if x == d]
        assert sum(truth[i][1] == d for i, _ in m.right) == _max_matching(tt, gt, ev.WINDOW_S)
    # nothing missed and extra could still have been paired
    assert not any(abs(truth[i][0] - got[g][0]) <= ev.WINDOW_S
                   for i in m.missed for g in m.extra)


# -- the hourly count error --------------------------------------------------------------------
def test_hourly_error_is_per_hour_and_direction():
    truth = [(float(k), "in") for k in range(100)] + [(3600.0 + k, "out") for k in range(50)]
    counted = Counter({(0, "in"): 97, (1, "out"): 51, (1, "in"): 1})
    counts = ev.reported_hours(truth, counted, 7200.0)
    by = {(c.hour, c.direction): c for c in counts}
    assert len(counts) == 4
    assert by[0, "in"].error == pytest.approx(0.03)
    assert by[1, "out"].error == pytest.approx(0.02)
    assert by[0, "out"].error is None  # nobody went out in the first hour
    assert by[1, "in"] == ev.HourCount(1, "in", 0, 1) and by[1, "in"].error is None
    mean, worst, n = ev.hourly_summary(counts)
    assert (mean, worst, n) == (pytest.approx(0.025), pytest.approx(0.03), 2)
    assert ev.hourly_summary([]) == (None, None, 0)


def test_misses_and_extras_cancel_in_an_hourly_count():
    # one crossing missed and one counted that never happened: the hour's count is right
    counts = ev.reported_hours([(10.0, "in"), (20.0, "in")], Counter({(0, "in"): 2}), 3600.0)
    assert counts[0].error == 0.0


def test_a_crossing_at_the_very_end_falls_in_the_last_hour():
    counts = ev.reported_hours([(3600.0, "in")], Counter({(0, "in"): 1}), 3600.0)
    assert counts[0] == ev.HourCount(0, "in", 1, 1)
    assert len(ev.reported_hours([], Counter(), 5400.0)) == 4  # a last half hour


def test_the_two_paths_agree_only_on_the_same_crossings():
    a = [(1.0, "in"), (5.2, "out")]
    assert ev.agreement(a, [(1.0004, "in"), (5.2, "out")]) == (True, pytest.approx(0.0004))
    assert not ev.agreement(a, [(1.0, "in"), (5.2, "in")])[0]
    assert not ev.agreement(a, a[:1])[0]
    assert not ev.agreement(a, [(1.0, "in"), (5.3, "out")])[0]
    assert ev.agreement(a, a[::-1])[0]  # the order they were printed in does not matter


# -- loiterers ---------------------------------------------------------------------------------
def test_loiterer_counts_take_matched_and_nearby_extra_counts():
    stop = walk(0.0, [(-3.0, 2.0), (0.8, 1.5), (0.9, 1.5)], 1.2, waits={1: 60.0},
                kind="loiterer")
    passer = walk(100.0, [(-4.0, 3.0), (4.0, 3.0)], 1.4)
    scene = Scene("t", "loiterers", 200.0, [stop, passer])
    truth = scene.truth()
    assert [(tc.walker, tc.direction) for tc in truth] == [(0, "in"), (1, "in")]
    got = [(truth[0].t + 0.5, "in"), (30.0, "out"), (truth[1].t, "in")]
    m = ev.match_events([(tc.t, tc.direction) for tc in truth], got)
    assert m.extra == [1]
    assert ev.loiterer_counts(scene, truth, got, m) == [(1, 2)]  # the fidget counted once more


def test_people_stopping_on_the_line_are_watched_like_loiterers():
    stopper = walk(0.0, [(-3.0, 2.0), (0.1, 2.0), (3.0, 2.0)], 1.2, waits={1: 30.0},
                   kind="stopper")
    scene = Scene("t", "stop_on_line", 100.0, [stopper])
    truth = scene.truth()
    got = [(truth[0].t, "in"), (truth[0].t + 30.0, "in")]  # once on arrival, once leaving
    m = ev.match_events([(tc.t, tc.direction) for tc in truth], got)
    assert ev.loiterer_counts(scene, truth, got, m) == [(1, 2)]


# -- the scenes --------------------------------------------------------------------------------
def test_the_plan_has_twelve_hours_or_more_of_every_kind_asked_for():
    for seed_set in ev.SEED_SETS:
        p = ev.plan(seed_set)
        assert sum(x.duration_s for x in p) >= 12 * 3600
        assert {x.kind for x in p} >= {"commuter_peak", "single_walkers", "pairs", "joggers",
                                       "cyclists", "loiterers", "both_ways",
                                       *scenes.HARD_KINDS}
    eval_seeds = {(x.kind, x.seed) for x in ev.plan("eval")}
    assert not eval_seeds & {(x.kind, x.seed) for x in ev.plan("dev")}


@pytest.mark.parametrize("seed_set", sorted(ev.SEED_SETS))
def test_scenes_never_have_more_than_three_people_in_the_field(seed_set):
    for p in ev.plan(seed_set):
        scene = ev.build(p)
        assert 0 < scene.max_in_field() <= scenes.MAX_IN_FIELD, p.name
        assert scene.truth(), p.name


def test_the_stress_scene_does_crowd_the_radar():
    assert ev.crowd_scene(7).max_in_field() >= 4


def test_scenes_and_frames_are_deterministic_per_seed():
    p = ev.Planned("both_ways", 1003, 300.0)
    a, b = ev.build(p), ev.build(p)
    assert a.walkers == b.walkers and a.truth() == b.truth()
    assert ev.build(p._replace(seed=1004)).walkers != a.walkers
    fa = list(ev.radar_samples(a, p.seed))
    assert fa == list(ev.radar_samples(b, p.seed)) and fa
    assert fa != list(ev.radar_samples(b, p.seed + 1))  # the habits have their own seed
    assert ev.crowd_scene(3).walkers == ev.crowd_scene(3).walkers


def test_frames_go_to_csv_as_detect_crossings_reads_them(tmp_path):
    scene = Scene("t", "t", 6.0, [walk(0.0, [(-2.0, 1.5), (2.0, 1.5)], 1.0)])
    samples = list(ev.radar_samples(scene, 0, ev.radar_emulator.Habits.clean()))
    path = tmp_path / "f.csv"
    rows = ev.write_csv(samples, path)
    lines = path.read_text().splitlines()
    assert lines[0] == "t,target,x_mm,y_mm" and len(lines) == rows + 1
    assert rows == sum(len(s.targets) for s in samples) > 0
    t, slot, x, y = lines[1].split(",")
    assert (slot, int(y)) == ("0", 1500) and math.isclose(float(t), samples[0].t, abs_tol=1e-3)
    assert -2000 <= int(x) < 0


# -- the two paths, end to end on a short scene -----------------------------------------
def test_a_short_scene_through_the_feature_and_detect_crossings(tmp_path):
    r = ev.run_scene(ev.Planned("both_ways", 1003, 240.0), tmp_path)
    assert r.cli_rc == 0 and r.agree and r.reports_add_up, r.cli_err
    assert r.truth > 5 and r.right + r.wrong + r.missed == r.truth
    assert sum(h.true for h in r.hours) == r.truth
    assert sum(h.counted for h in r.hours) == r.right + r.wrong + r.extra
    assert not list(tmp_path.iterdir())  # the CSV is removed


def test_the_feature_reports_every_interval_on_the_virtual_clock(tmp_path):
    run = ev.FeatureRun(tmp_path)
    scene = Scene("t", "t", 200.0, [walk(10.0, [(-3.0, 2.0), (3.0, 2.0)], 1.2),
                                    walk(100.0, [(3.0, 1.5), (-3.0, 1.5)], 1.2)])
    for s in ev.radar_samples(scene, 0):
        run.feed(s)
    run.finish(scene.duration_s)
    assert [d for _, d in run.crossings] == ["in", "out"]
    assert run.reported == {(0, "in"): 1, (0, "out"): 1}
