"""Waste-bin fill level detector."""

from __future__ import annotations

import pytest

from agent.detectors.fill import FillLevelDetector
from drivers.emulation.scenes import random_bin

DEPTH = 1000.0


def feed(det, readings, t0=0.0, dt=5.0):
    out = []
    for i, d in enumerate(readings):
        out += [(e.t, e.event) for e in det.update(t0 + i * dt, d)]
    return out


def at_pct(pct, n):
    return [DEPTH * (1 - pct / 100) + (i % 3) - 1 for i in range(n)]


def test_fill_percentage():
    det = FillLevelDetector("b1", depth_mm=DEPTH)
    assert det.fill_pct is None
    feed(det, at_pct(40, 10))
    assert det.fill_pct == pytest.approx(40, abs=0.5)
    feed(det, [DEPTH] * 10, t0=100)
    assert det.fill_pct == 0.0


def test_needs_collection_with_hysteresis_and_debounce():
    det = FillLevelDetector("b1", depth_mm=DEPTH, debounce_s=60)
    evs = feed(det, at_pct(50, 20) + at_pct(85, 30))
    assert [e for _t, e in evs] == ["needs_collection"]
    assert 100 + 60 <= evs[0][0] <= 100 + 60 + 15
    assert det.needs_collection
    # settling to 75 % (inside the hysteresis band): no event
    assert feed(det, at_pct(75, 100), t0=1000) == []
    # emptied
    evs = feed(det, at_pct(2, 30), t0=2000)
    assert [e for _t, e in evs] == ["collected"]
    assert not det.needs_collection


def test_short_excursion_over_full_is_debounced():
    det = FillLevelDetector("b1", depth_mm=DEPTH, debounce_s=60)
    readings = at_pct(70, 20) + at_pct(90, 8) + at_pct(70, 20)  # 40 s: a bag held in
    assert feed(det, readings) == []


def test_lid_opening_is_ignored():
    det = FillLevelDetector("b1", depth_mm=DEPTH)
    feed(det, at_pct(50, 10))
    # lid open 60 s: sky (very long), a hand (very short), no echo
    lid = [5000.0, 40.0, None, 3200.0, 35.0, None, 60.0, 4000.0, None, 30.0, 45.0, 20.0]
    assert feed(det, lid, t0=50) == []
    assert det.fill_pct == pytest.approx(50, abs=0.5)
    assert det.ignored == len(lid)


def test_single_spikes_ignored():
    det = FillLevelDetector("b1", depth_mm=DEPTH, debounce_s=30)
    readings = at_pct(60, 100)
    for i in range(3, 100, 9):
        readings[i] = 150.0  # 85 %
    assert feed(det, readings) == []
    assert det.fill_pct == pytest.approx(60, abs=0.5)


def test_short_readings_that_persist_mean_full_to_the_lid():
    det = FillLevelDetector("b1", depth_mm=DEPTH, lid_open_s=120, debounce_s=60)
    feed(det, at_pct(70, 10))
    evs = feed(det, [60.0 + i % 2 for i in range(80)], t0=50)
    assert [e for _t, e in evs] == ["needs_collection"]
    assert det.fill_pct == pytest.approx(94, abs=1)


def test_long_lid_open_is_reported():
    det = FillLevelDetector("b1", depth_mm=DEPTH, lid_open_s=60)
    feed(det, at_pct(30, 5))
    feed(det, [None] * 20, t0=25)
    assert det.lid_open and det.snapshot()["lid_open"]
    feed(det, at_pct(30, 2), t0=200)
    assert not det.lid_open


def test_invalid_parameters():
    with pytest.raises(ValueError):
        FillLevelDetector("b1", depth_mm=0)
    with pytest.raises(ValueError):
        FillLevelDetector("b1", depth_mm=DEPTH, full_pct=80, hysteresis_pct=90)


def test_random_bin_scene():
    scene, truth = random_bin(5, duration_s=2 * 86400.0)
    det = FillLevelDetector("b1", depth_mm=truth.depth_mm)
    evs = []
    t = 0.0
    while t < 2 * 86400:
        evs += det.update(t, scene(t))
        t += 5.0
    kinds = [e.event for e in evs]
    assert kinds[::2] == ["needs_collection"] * len(kinds[::2])
    assert kinds[1::2] == ["collected"] * len(kinds[1::2])
    assert kinds.count("collected") == len(truth.collections)
    for e in evs:
        if e.event == "needs_collection":
            assert truth.fill_at(e.t) >= 79
