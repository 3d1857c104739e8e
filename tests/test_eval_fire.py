"""The fire evaluation's machinery: windows, attribution, fold selection (bench/eval_fire.py).

The selection must look at training fires and blocks only: changing what a held-out
fold contains cannot change the scale chosen for it.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import eval_fire as ev
from training.fire import data
from training.fire.model import episodes


def test_windows_are_means_stamped_at_the_window_end() -> None:
    rows = [(float(t), {"eco2_ppm": 400.0 + t}) for t in range(0, 120)]
    rows[5] = (5.0, {"eco2_ppm": 405.0, "tvoc_ppb": 10.0})
    out = data.windows(rows, 60.0)
    assert [t for t, _ in out] == [60.0, 120.0]
    assert out[0][1]["eco2_ppm"] == pytest.approx(400.0 + 29.5)
    assert out[0][1]["tvoc_ppb"] == 10.0   # a quantity measured once is its own mean
    assert "tvoc_ppb" not in out[1][1]


@given(st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=300),
       st.sampled_from([1.0, 2.0, 7.0]))
@settings(max_examples=50, deadline=None)
def test_windows_keep_every_reading_once(values: list[float], step: float) -> None:
    rows = [(i * step, {"pm2_5": v}) for i, v in enumerate(values)]
    out = data.windows(rows, 60.0)
    assert len(out) == len(_counts(len(values), step))
    assert all(t == (k + 1) * 60.0 for k, (t, _) in zip(
        sorted({int(i * step // 60.0) for i in range(len(values))}), out, strict=True))
    total = sum(v["pm2_5"] * n for (_, v), n in zip(out, _counts(len(values), step), strict=True))
    assert total == pytest.approx(sum(values), rel=1e-9, abs=1e-6)


def _counts(n: int, step: float) -> list[int]:
    counts: dict[int, int] = {}
    for i in range(n):
        k = int(i * step // 60.0)
        counts[k] = counts.get(k, 0) + 1
    return [counts[k] for k in sorted(counts)]


def test_attribution_covers_the_experiment_and_its_aftermath() -> None:
    exps = [data.Experiment("Candle", 1000.0, 2000.0)]
    assert data.attribute(1500.0, exps) == "Candle"
    assert data.attribute(2000.0 + data.AFTERMATH_S, exps) == "Candle"
    assert data.attribute(2001.0 + data.AFTERMATH_S, exps) == "background"
    assert data.attribute(999.0, exps) == "background"


def test_day_blocks_tile_the_log() -> None:
    rows = [(float(t), {}) for t in range(0, 86400 * 4, 60)]
    blocks = data.day_blocks(rows, 4)
    assert blocks[0][0] == 0.0 and blocks[-1][1] > rows[-1][0]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(blocks))


def test_episodes_merge_within_clear_time() -> None:
    import numpy as np

    ts = np.arange(0.0, 1000.0, 10.0)
    on = np.zeros(len(ts), bool)
    on[[5, 6, 20, 80]] = True           # 50-60, 200 (140 s later), 800
    assert episodes(on, ts, 300.0) == [50.0, 800.0]
    assert episodes(on, ts, 100.0) == [50.0, 200.0, 800.0]


def _run(scale: float, leads: dict[str, float], alarms: list[float]) -> ev.Run:
    fires = [ev.FireResult(name, cad, 10.0, lead, 0) for name, lead in leads.items()
             for cad in ev.CADENCES]
    return ev.Run(scale, fires, [(t, "background") for t in alarms], [], {})


def _synthetic(held_out_lead: float, held_out_alarms: list[float]) -> list[ev.Run]:
    """Scales 0.25..2: lower alarms more on the blocks, higher misses fires."""
    runs = []
    for s in (0.25, 0.5, 1.0, 2.0):
        leads = {"a": 100.0 / s, "b": 200.0 / s - 90.0, "held": held_out_lead}
        alarms = [100.0, 5000.0] if s < 0.5 else []
        runs.append(_run(s, leads, alarms + held_out_alarms))
    return runs


@given(st.floats(-500, 500), st.lists(st.floats(20000.0, 29999.0), max_size=5))
@settings(max_examples=50, deadline=None)
def test_selection_ignores_the_held_out_fold(lead: float, alarms: list[float]) -> None:
    """Whatever the held-out fire and block show, the training pick is the same."""
    train_blocks = [(0.0, 10000.0), (10000.0, 20000.0)]
    pick, _why = ev.select(_synthetic(lead, alarms), {"a", "b"}, train_blocks)
    assert pick == ev.select(_synthetic(0.0, []), {"a", "b"}, train_blocks)[0]
    assert pick in (0.5, 1.0)   # feasible 0.5..1.0 (0.25 alarms, 2.0 is late for b)


def test_selection_without_a_feasible_point_prefers_fires_then_fewer_alarms() -> None:
    runs = [_run(0.5, {"a": 100.0}, [10.0]), _run(1.0, {"a": 100.0}, [10.0, 20.0]),
            _run(2.0, {"a": -5.0}, [])]
    pick, why = ev.select(runs, {"a"}, [(0.0, 100.0)])   # budget over 100 s: 0 alarms
    assert pick == 0.5 and "no feasible" in why


def test_fire_result_detected_needs_a_lead_and_nothing_before_ignition() -> None:
    assert ev.FireResult("f", "native", 10.0, 5.0, 0).detected
    assert not ev.FireResult("f", "native", 10.0, -1.0, 0).detected
    assert not ev.FireResult("f", "native", None, None, 0).detected
    assert not ev.FireResult("f", "native", 10.0, 50.0, 1).detected


@pytest.mark.skipif(not data.available(), reason="../shared/data/fire-tests absent: the "
                    "fire recordings are not on this machine")
def test_recordings_load_with_their_truth() -> None:
    fires = data.fires()
    assert {f.name for f in fires} == {"carton_1", "clothing_1", "electrical_1",
                                       "electrical_2"}
    for f in fires:
        assert f.start_t <= f.ignition_t < f.smoke_alarm_t
        assert f.rows[0][0] == f.start_t
    rows, exps = data.nuisance()
    assert len(exps) == 26 and (rows[-1][0] - rows[0][0]) / 86400 > 19.9
