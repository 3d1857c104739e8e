"""Parking-bay occupancy detector, bay summary, replay CLI and scenes."""

from __future__ import annotations

import io
import itertools
import json

import pytest

from agent.detectors.occupancy import (
    BayGroup,
    CalibrationError,
    OccupancyDetector,
    calibrate,
)
from agent.tools.replay.common import (
    EX_DATAERR,
    EX_NOINPUT,
    ReplayError,
    parse_baseline_options,
    read_rows,
    replay_occupancy,
    run_cli,
)
from drivers.emulation.scenes import empty, random_day

BASE = 2500.0


def feed(det, readings, t0=0.0, dt=1.0):
    """Feed readings at 1 Hz; returns [(t, previous, state)]."""
    out = []
    for i, d in enumerate(readings):
        for ev in det.update(t0 + i * dt, d):
            out.append((ev.t, ev.previous, ev.state))
    return out


def jitter(value, n, start=0):
    """Readings around ``value`` that never repeat exactly (a live sensor)."""
    return [value + ((start + i) % 7) - 3 for i in range(n)]


def settled(**kw):
    det = OccupancyDetector("A1", baseline_mm=BASE, **kw)
    evs = feed(det, jitter(BASE, 30))
    assert [e[2] for e in evs] == ["free"]
    assert evs[0][1] is None
    return det


def test_car_arrives_after_debounce_and_leaves():
    det = settled()
    evs = feed(det, jitter(600, 60) + jitter(BASE, 60), t0=30)
    assert [(p, s) for _t, p, s in evs] == [("free", "occupied"), ("occupied", "free")]
    # counted from the first reading that showed the car (t=30) and from its leaving (t=90)
    assert 30 + 10 <= evs[0][0] <= 30 + 12
    assert 90 + 10 <= evs[1][0] <= 90 + 12
    assert det.state == "free"


def test_event_carries_evidence():
    det = settled()
    evs = []
    for i, d in enumerate(jitter(600, 30)):
        evs += det.update(30 + i, d)
    (ev,) = evs
    assert ev.bay == "A1" and ev.state == "occupied" and ev.previous == "free"
    assert 590 <= ev.median_mm <= 610
    assert ev.baseline_mm == pytest.approx(BASE, abs=5)
    assert set(ev.to_dict()) == {"t", "bay", "state", "previous", "median_mm", "baseline_mm"}


@pytest.mark.parametrize("dip_s", [1, 2, 3, 4])
def test_pedestrian_or_trolley_dip_changes_nothing(dip_s):
    det = settled()
    readings = jitter(BASE, 20) + [800.0] * dip_s + jitter(BASE, 40)
    assert feed(det, readings, t0=30) == []


def test_spikes_change_nothing():
    det = settled()
    readings = jitter(BASE, 200)
    for i in range(0, 200, 7):
        readings[i] = 300.0  # rain drop / cross-talk from a neighbour's car
    for i in range(3, 200, 11):
        readings[i] = None  # lost echo
    readings[50] = readings[51] = 40.0  # two snowflakes in a row
    assert feed(det, readings, t0=30) == []


def test_spikes_change_nothing_while_occupied():
    det = settled()
    assert [s for _t, _p, s in feed(det, jitter(600, 30), t0=30)] == ["occupied"]
    readings = jitter(600, 100)
    for i in range(0, 100, 5):
        readings[i] = BASE  # the floor seen past the bonnet
    assert feed(det, readings, t0=60) == []


def test_snow_cover_is_blocked_not_occupied():
    det = settled()
    evs = feed(det, [40.0] * 120 + jitter(BASE, 30), t0=30)
    assert [(p, s) for _t, p, s in evs] == [("free", "blocked"), ("blocked", "free")]
    assert evs[0][0] == pytest.approx(30 + 2 + 60, abs=2)


def test_no_echo_then_recovery():
    det = settled()
    evs = feed(det, [None] * 60 + jitter(600, 30), t0=30)
    assert [(p, s) for _t, p, s in evs] == [("free", "no_echo"), ("no_echo", "occupied")]
    assert evs[0][0] == pytest.approx(30 + 30, abs=1.5)


def test_stuck_identical_readings():
    det = settled(stuck_s=120)
    evs = feed(det, [2487.0] * 200, t0=30)
    assert [(p, s) for _t, p, s in evs] == [("free", "stuck")]
    assert evs[0][0] == pytest.approx(30 + 120, abs=1)
    evs = feed(det, jitter(BASE, 30), t0=230)
    assert [(p, s) for _t, p, s in evs] == [("stuck", "free")]


def test_stuck_disabled():
    det = settled(stuck_s=None)
    assert feed(det, [2487.0] * 5000, t0=30) == []


def test_drift_followed_while_free_only():
    det = settled(drift=600)
    # 4 h of a cooling evening: readings creep up by 80 mm
    readings = [BASE + 80.0 * i / 14400 + (i % 5) - 2 for i in range(14400)]
    assert feed(det, readings, t0=30) == []
    assert det.baseline_mm == pytest.approx(BASE + 80, abs=15)
    # a car: the baseline is frozen while it stays
    feed(det, jitter(600, 3600), t0=20000)
    assert det.state == "occupied"
    assert det.baseline_mm == pytest.approx(BASE + 80, abs=15)


def test_hysteresis_band_holds_state():
    det = settled()
    assert [s for *_x, s in feed(det, jitter(1700, 30), t0=30)] == ["occupied"]
    # in the band between baseline-700 and baseline-500: still occupied
    assert feed(det, jitter(1900, 60), t0=60) == []
    assert det.state == "occupied"


def test_auto_baseline_from_first_minute():
    det = OccupancyDetector("A1", baseline_mm=None)
    evs = feed(det, jitter(BASE, 90) + jitter(600, 30))
    assert [s for *_x, s in evs] == ["free", "occupied"]
    assert det.baseline_source == "auto"
    assert det.baseline_mm == pytest.approx(BASE, abs=3)


def test_time_going_backwards_is_refused():
    det = settled()
    with pytest.raises(ValueError, match="backwards"):
        det.update(5.0, BASE)


def test_calibrate():
    assert calibrate(jitter(BASE, 30)) == pytest.approx(BASE, abs=3)
    with pytest.raises(CalibrationError, match="covered"):
        calibrate([40.0 + i % 3 for i in range(30)])
    with pytest.raises(CalibrationError, match="spread"):
        calibrate(jitter(BASE, 20) + [800.0] * 10)
    with pytest.raises(CalibrationError, match="no echo"):
        calibrate(jitter(BASE, 20) + [None] * 10)
    with pytest.raises(CalibrationError, match="valid"):
        calibrate(jitter(BASE, 3))
    det = OccupancyDetector("A1", baseline_mm=None)
    assert det.calibrate(jitter(2400, 30)) == pytest.approx(2400, abs=3)
    assert det.baseline_source == "calibrated"


def test_bay_group_summary_bitmask():
    group = BayGroup(OccupancyDetector(f"P{i}", baseline_mm=BASE) for i in range(10))
    assert len(group) == 10
    s = group.summary()
    assert s.unknown == 0x3FF and s.occupied == 0 and s.faults == 0
    for k in range(40):
        t = float(k)
        for i, bay in enumerate(group.bays):
            if i in (1, 8):
                d = 600.0 + k % 5
            elif i == 3:
                d = 40.0
            else:
                d = BASE + k % 5
            group.update(bay, t, d)
    s = group.summary()
    assert s.occupied == (1 << 1) | (1 << 8)
    assert s.unknown == 1 << 3  # still within blocked_s
    assert s.faults == 0
    assert s.free == 0x3FF & ~((1 << 1) | (1 << 8) | (1 << 3))
    for k in range(40, 120):
        group.update("P3", float(k), 40.0)
    assert group.summary().faults == 1 << 3
    assert group.summary().to_dict()["bays"][3] == "P3"
    with pytest.raises(ValueError, match="duplicate"):
        group.add(OccupancyDetector("P0", baseline_mm=BASE))


# -- scenes ----------------------------------------------------------------------------------


def test_scene_is_deterministic_and_layers():
    def make():
        return (empty(BASE, seed=3).car(100, 200, distance_mm=600)
                .pedestrian(50, 2).cover(300, 400).no_echo(500, 600))
    a, b = make(), make()
    assert [a(t) for t in range(700)] == [b(t) for t in range(700)]
    assert abs(a(10) - BASE) < 20
    assert abs(a(150) - 600) < 20
    assert abs(a(51) - 800) < 20
    assert a(350) < 100
    assert a(550) is None


def test_scene_based_detection():
    scene = (empty(BASE, seed=7).car(120, 600, distance_mm=500, maneuver_s=3)
             .pedestrian(700, 4).trolley(800, 4).spikes(0, 1000, rate=0.05))
    det = OccupancyDetector("A1", baseline_mm=BASE)
    evs = [ev for t in range(1000) for ev in det.update(float(t), scene(float(t)))]
    assert [(e.previous, e.state) for e in evs] == [
        (None, "free"), ("free", "occupied"), ("occupied", "free")]
    assert evs[1].t - 120 <= 12
    assert evs[2].t - 600 <= 12


def test_random_day_truth_is_consistent():
    day = random_day(1, "P01", snow_cover=True, no_echo=True)
    assert day.transitions[0][0] == day.start
    occ = [o for _t, o in day.transitions]
    assert all(a != b for a, b in itertools.pairwise(occ))
    assert {k for *_x, k in day.faults} == {"blocked", "no_echo"}
    for f0, f1, kind in day.faults:
        mid = (f0 + f1) / 2
        assert not day.occupied_at(mid)
        v = day.scene(mid)
        assert (v is None) if kind == "no_echo" else (v < 100)


# -- replay ----------------------------------------------------------------------------------


def csv_text(rows):
    return "t,bay,distance_mm\n" + "".join(f"{t},{b},{'' if d is None else d}\n"
                                           for t, b, d in rows)


def test_replay_prints_one_line_per_change(tmp_path):
    rows = [(1000 + i, "A1", BASE + i % 5) for i in range(100)]
    rows += [(1100 + i, "A1", 600 + i % 5) for i in range(60)]
    rows += [(1000 + i, "B2", "") for i in range(100)]  # no echo, no baseline possible
    p = tmp_path / "in.csv"
    p.write_text(csv_text(sorted(rows, key=lambda r: r[0])))
    out, err = io.StringIO(), io.StringIO()
    assert run_cli(str(p), {"A1": BASE}, out, err) == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [(x["bay"], x["previous"], x["state"]) for x in lines] == [
        ("A1", None, "free"), ("B2", None, "no_echo"), ("A1", "free", "occupied")]
    assert lines[2]["t"] == pytest.approx(1110, abs=2)
    assert "B2" in err.getvalue() and "baseline" in err.getvalue()


def test_replay_auto_baseline_is_said(tmp_path):
    rows = [(f"2024-06-01T00:{i // 60:02d}:{i % 60:02d}Z", "C3", BASE + i % 3)
            for i in range(120)]
    p = tmp_path / "in.csv"
    p.write_text(csv_text(rows))
    out, err = io.StringIO(), io.StringIO()
    assert run_cli(str(p), {}, out, err) == 0
    assert "C3" in err.getvalue() and "first minute" in err.getvalue()
    assert '"state": "free"' in out.getvalue()


@pytest.mark.parametrize("text, line, what", [
    ("t,bay\n1,A1\n", 1, "distance_mm"),
    ("t,bay,distance_mm\n1,A1,2500\nxx,A1,2500\n", 3, "ISO 8601"),
    ("t,bay,distance_mm\n1,A1,2500\n2,A1,far\n", 3, "not a number"),
    ("t,bay,distance_mm\n1,A1,-5\n", 2, ">= 0"),
    ("t,bay,distance_mm\n1,,2500\n", 2, "empty bay"),
    ("t,bay,distance_mm\n5,A1,2500\n4,A1,2500\n", 3, "time order"),
    ("t,bay,distance_mm\n5,A1\n", 2, "field"),
    ("", 1, "empty input"),
])
def test_replay_malformed_rows(tmp_path, text, line, what):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    assert run_cli(str(p), {}, out, err) == EX_DATAERR
    assert f"bad.csv:{line}:" in err.getvalue()
    assert what in err.getvalue()
    assert out.getvalue() == ""  # nothing printed before the whole file is checked
    with pytest.raises(ReplayError):
        list(read_rows(io.StringIO(text)))


def test_replay_missing_file(tmp_path):
    err = io.StringIO()
    assert run_cli(str(tmp_path / "nope.csv"), {}, io.StringIO(), err) == EX_NOINPUT
    assert "nope.csv" in err.getvalue()


def test_replay_occupancy_accepts_plain_rows():
    rows = [(float(i), "A1", BASE) for i in range(30)] + [(30.0 + i, "A1", 600.0)
                                                          for i in range(30)]
    evs = list(replay_occupancy(rows, {"A1": BASE}))
    assert [e["state"] for e in evs] == ["free", "occupied"]


def test_parse_baseline_options():
    assert parse_baseline_options(["A1=2500", " B2 =2480.5"]) == {"A1": 2500.0, "B2": 2480.5}
    for bad in ("A1", "A1=", "=2500", "A1=-3", "A1=x"):
        with pytest.raises(ValueError, match="BAY=MM"):
            parse_baseline_options([bad])
