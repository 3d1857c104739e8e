"""Fall detector, cancel window, GPIO glue, replay CLI, shipped model (no TensorFlow)."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import fall_traces
import numpy as np
import pytest

from agent.detectors.fall import (
    DEFAULTS,
    FEATURES,
    UPRIGHT,
    Candidate,
    FallAlarm,
    FallDetector,
    confirmation_stats,
    resample_linear,
    window_features,
)
from agent.models.runtime import Model, ModelError, model_path
from agent.tools.replay.fall import run_cli

ROOT = Path(__file__).resolve().parents[1]
SISFALL = ROOT.parent / "shared" / "data" / "sisfall"
UP = np.array(UPRIGHT)
LYING = np.array([0.0, 0.0, 1.0])       # 90 degrees from upright
SITTING = np.array([0.0, -math.cos(math.radians(15)), math.sin(math.radians(15))])


def signal(parts: list[tuple[str, float, np.ndarray]], rate: float = 100.0,
           seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """tests/fall_traces.py's traces, at this file's rate and seed."""
    return fall_traces.signal(parts, rate, seed)


def falls(det: FallDetector, t: np.ndarray, acc: np.ndarray) -> list[dict]:
    return [e.to_dict() for e in det.update_many(t, acc) + det.flush()]


def fall_signal(after: str = "still", g_after: np.ndarray = LYING):
    return signal([("walk", 4.0, UP), ("impact", 0.12, UP), (after, 5.0, g_after)])


# -- features and resampling ---------------------------------------------------------------

def test_window_features_shapes_and_values():
    win = np.concatenate([np.tile(UP, (100, 1)), np.tile(LYING, (100, 1))])
    rows = window_features(win)
    assert isinstance(rows, list) and isinstance(rows[0], list)    # no numpy on the node
    f = np.asarray(rows)
    assert f.shape == (200, len(FEATURES))
    np.testing.assert_array_equal(f, f.astype(np.float32))         # the model's input type
    assert FEATURES == ("amag", "avert", "ahorz", "aup")
    np.testing.assert_allclose(f[:100], [[1, 1, 0, 1]] * 100, atol=1e-6)   # standing
    np.testing.assert_allclose(f[100:], [[1, 0, 1, 0]] * 100, atol=1e-6)   # lying
    spike = np.tile(UP * 20.0, (200, 1))                                     # clipped
    assert np.asarray(window_features(spike))[:, 0].max() == pytest.approx(8.0)
    assert window_features(win.tolist()) == rows                           # lists in, too


def test_features_do_not_depend_on_mounting_except_aup():
    rng = np.random.default_rng(3)
    win = np.tile(UP, (200, 1)) + rng.normal(0, 0.3, (200, 3))
    c, s = math.cos(0.7), math.sin(0.7)
    rot = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    a, b = window_features(win), window_features(win @ rot.T, upright=rot @ UP)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_resampling_block_and_sample_by_sample_agree_at_any_rate():
    t, acc = fall_signal()
    whole = FallDetector(None)
    ev_whole = falls(whole, t, acc)
    one = FallDetector(None)
    ev_one = [e.to_dict() for i in range(len(t)) for e in one.update(t[i], *acc[i])]
    assert ev_whole == ev_one and len(ev_whole) == 1
    t2, acc2 = signal([("walk", 4.0, UP), ("impact", 0.12, UP), ("still", 5.0, LYING)],
                      rate=200.0)
    ev200 = falls(FallDetector(None), t2, acc2)
    assert len(ev200) == 1 and abs(ev200[0]["t"] - ev_whole[0]["t"]) < 0.05
    r = resample_linear(t2, acc2, 50.0)
    np.testing.assert_allclose(r, acc2[::4], atol=1e-12)   # the 50 Hz grid hits samples


def test_detector_resampling_is_resample_linear_on_irregular_samples():
    t, acc = fall_signal()
    t = t + np.random.default_rng(7).uniform(-0.003, 0.003, len(t))   # jitter, in order
    seen: list[Candidate] = []
    det = FallDetector(None, on_candidate=seen.append)
    det.update_many(t[:300], acc[:300])
    for i in range(300, len(t)):                                       # then one by one
        det.update(t[i], *acc[i])
    grid = resample_linear(t, acc, det.rate_hz)
    assert seen
    for c in seen:
        p = round((c.t - t[0]) * det.rate_hz)
        win = grid[p - det.pre_n: p + det.post_n]
        assert c.features == window_features(win, det.rate_hz, upright=det.upright_axis)


def test_update_many_takes_arrays_and_sequences_alike():
    t, acc = fall_signal()
    ref = falls(FallDetector(None), t, acc)
    assert len(ref) == 1
    fortran = np.asfortranarray(acc)                       # no contiguous float64 buffer
    for tt, aa in ((t.tolist(), acc.tolist()), (list(t), [tuple(r) for r in acc]),
                   (t, acc.reshape(-1)), (t.tolist(), acc.reshape(-1).tolist()),
                   (t, fortran), (t[:, None], acc[None])):
        assert falls(FallDetector(None), tt, aa) == ref
    one = FallDetector(None)
    rows = acc.tolist()
    assert [e.to_dict() for i, ti in enumerate(t.tolist()) for e in one.update(ti, *rows[i])] == ref
    f32 = acc.astype(np.float32)                           # read as float64, like numpy did
    assert falls(FallDetector(None), t, f32) == falls(FallDetector(None), t, f32.astype(float))
    det = FallDetector(None)
    with pytest.raises(ValueError, match="different lengths"):
        det.update_many(t[:10], acc[:9])
    with pytest.raises(ValueError, match="finite"):
        det.update_many([0.0, 0.01], [[0, -1, 0], [math.nan, -1, 0]])
    with pytest.raises(ValueError, match="finite"):
        det.update_many([0.0], [[0, None, 0]])
    with pytest.raises(ValueError, match="strictly increasing"):
        det.update_many([0.0, 0.02, 0.01], [[0, -1, 0]] * 3)
    with pytest.raises(ValueError, match="three values"):
        det.update_many([0.0, 0.01], [0, -1, 0, 0])
    assert det.update_many([], []) == []


def test_no_numpy_on_the_daemon_path():
    """numpy is 11-17 MiB of the daemon's 45 MiB: the detector must run without it."""
    code = """
import math, sys
import agent.features.safety
from agent.detectors.fall import FallDetector
def sig():
    out = []
    for i in range(400):                           # walking upright (y down)
        s = math.sin(2 * math.pi * 2.0 * i / 100)
        out.append((i / 100, 0.25 * math.sin(2 * math.pi * i / 100), -1 - 0.45 * s, 0.0))
    for i in range(12):                            # the impact
        out.append(((400 + i) / 100, 0.0, -1 - 4 * math.sin(math.pi * i / 11), 0.0))
    for i in range(500):                           # lying still
        out.append(((412 + i) / 100, 0.0, 0.0, 1.0 + 0.01 * math.sin(i)))
    return out
s = sig()
for model in (None, "default"):
    one, block = FallDetector(model), FallDetector(model)
    ev = [e for row in s for e in one.update(*row)]
    ev2 = block.update_many([r[0] for r in s], [r[1:] for r in s])
    assert ev == ev2 and (model or len(ev) == 1), (ev, ev2)
    print(one.model.runtime if one.model else "rules", "numpy" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("rules False\n")
    for line in out.stdout.splitlines():
        runtime, numpy_loaded = line.split()
        if runtime in ("rules", "ai-edge-litert"):   # the Python interpreters need numpy
            assert numpy_loaded == "False", runtime


def test_rejects_time_going_backwards_and_restarts_after_a_gap():
    det = FallDetector(None)
    det.update(1.0, 0, -1, 0)
    with pytest.raises(ValueError, match="not after"):
        det.update(0.5, 0, -1, 0)
    t, acc = fall_signal()
    # a hole of 2 s between the impact and the lying: no interpolation across, no fall
    cut = np.searchsorted(t, 4.2)
    t = np.concatenate([t[:cut], t[cut:] + 2.0])
    assert falls(FallDetector(None), t + 10, acc) == []
    # the same hole between two calls (and between two samples) restarts, does not fail
    det = FallDetector(None)
    assert det.update_many(t[:cut], acc[:cut]) == [] and det.update_many(t[cut:], acc[cut:]) == []
    det = FallDetector(None)
    assert [e for i in range(len(t)) for e in det.update(t[i], *acc[i])] == []
    t, acc = fall_signal()
    det = FallDetector(None)
    det.update(-5.0, 0, -1, 0)
    assert len(falls(det, t, acc)) == 1                    # a fall after a restart is seen


# -- trigger and confirmation --------------------------------------------------------------

def test_trigger_merges_one_impact_and_ignores_quiet_signals():
    seen: list[Candidate] = []
    det = FallDetector(None, on_candidate=seen.append)
    t, acc = signal([("still", 3.0, UP), ("still", 3.0, UP)])
    det.update_many(t, acc)
    assert seen == [] and det.candidates == 0                # 1 g never triggers
    t, acc = signal([("still", 3.0, UP), ("impact", 0.1, UP), ("still", 0.3, UP),
                     ("impact", 0.06, UP * 0.6), ("still", 4.0, UP)])
    det = FallDetector(None, on_candidate=seen.append)
    det.update_many(t + 100, acc)
    assert len(seen) == 1                                    # two spikes within merge_s
    assert seen[0].stats.peak_g > 4.0 and abs(seen[0].t - 103.05) < 0.05
    assert np.asarray(seen[0].features).shape == (200, len(FEATURES))


def test_impact_then_lying_still_and_turned_is_a_fall():
    t, acc = fall_signal()
    ev = falls(FallDetector(None), t, acc)
    assert len(ev) == 1
    e = ev[0]
    assert list(e)[:3] == ["t", "score", "event"] and e["event"] == "fall"
    assert abs(e["t"] - 4.06) < 0.05 and 0.5 <= e["score"] <= 1.0
    assert e["basis"] == "rules" and e["peak_g"] > 4.0
    assert e["orientation_deg"] > 80 and e["still_std_g"] < 0.05


def test_impact_then_walking_is_not_a_fall():
    t, acc = fall_signal(after="walk", g_after=UP)
    assert falls(FallDetector(None), t, acc) == []
    t, acc = fall_signal(after="walk", g_after=LYING)     # crawling away: moving
    assert falls(FallDetector(None), t, acc) == []


def test_sitting_down_hard_is_not_a_fall():
    seen: list[Candidate] = []
    t, acc = fall_signal(after="still", g_after=SITTING)
    assert falls(FallDetector(None, on_candidate=seen.append), t, acc) == []
    big = max(seen, key=lambda c: c.stats.peak_g)
    assert big.stats.still_std_g < 0.05 and big.stats.orientation_deg < 20
    assert not big.confirmed


def test_confirmation_parameters_are_parameters():
    t, acc = fall_signal(after="still", g_after=SITTING)
    assert len(falls(FallDetector(None, orientation_deg=10.0), t, acc)) == 1
    t, acc = fall_signal()
    assert falls(FallDetector(None, rule_peak_g=6.0), t, acc) == []
    with pytest.raises(TypeError, match="unknown"):
        FallDetector(None, stillness=1)


def test_confirmation_stats_on_a_crafted_window():
    ctx = np.concatenate([np.tile(UP, (100, 1)), [UP * 5], np.tile(LYING, (120, 1))])
    s = confirmation_stats(ctx, 100, upright=UP)
    assert s.peak_g == pytest.approx(5.0) and s.still_std_g == pytest.approx(0.0, abs=1e-9)
    assert s.orientation_deg == pytest.approx(90.0) and s.tilt_before_deg == pytest.approx(0)


def test_refractory_gives_one_event_per_fall():
    t, acc = signal([("walk", 4.0, UP), ("impact", 0.12, UP), ("still", 3.0, LYING),
                     ("impact", 0.12, LYING), ("still", 4.0, UP)])
    assert len(falls(FallDetector(None), t, acc)) == 1


# -- model failure: rules and health -------------------------------------------------------

def test_missing_model_falls_back_to_rules_and_reports_health(tmp_path):
    det = FallDetector(tmp_path / "nope.tflite")
    assert not det.health.ok and det.health.mode == "rules" and det.model is None
    assert "metadata file missing" in det.health.message
    t, acc = fall_signal()
    ev = falls(det, t, acc)
    assert len(ev) == 1 and ev[0]["basis"] == "rules" and ev[0]["model"] is None
    assert FallDetector(None).health.ok        # rules on purpose: no fault


def test_inference_failure_mid_stream_degrades_to_rules(monkeypatch):
    m = Model.load(model_path("fall"), expect_task="fall")
    det = FallDetector(m)
    assert det.health.ok and det.health.mode == "model"

    def broken(x):
        raise ModelError("fall: inference failed: simulated")

    monkeypatch.setattr(m, "predict", broken)
    t, acc = fall_signal()
    ev = falls(det, t, acc)
    assert not det.health.ok and "simulated" in det.health.message
    assert len(ev) == 1 and ev[0]["basis"] == "rules"


def test_model_with_other_features_is_refused(tmp_path):
    src = model_path("fall")
    (tmp_path / "m.tflite").write_bytes(src.read_bytes())
    meta = json.loads(src.with_suffix(".json").read_text())
    meta["features"] = ["ax", "ay", "az", "amag"]
    (tmp_path / "m.json").write_text(json.dumps(meta))
    det = FallDetector(tmp_path / "m.tflite")
    assert not det.health.ok and "features" in det.health.message


# -- the shipped model ---------------------------------------------------------------------

def test_shipped_model_matches_the_detector():
    p = model_path("fall")
    m = Model.load(p, expect_task="fall")
    assert tuple(m.meta.features) == FEATURES
    assert m.meta.input_shape == (m.meta.window, len(FEATURES))
    assert m.meta.sample_rate_hz == 50 and p.stat().st_size <= 16 * 1024
    assert set(m.meta.thresholds) >= {"trigger_g", "still_std_g", "orientation_deg"}
    assert {"data", "folds", "date", "seed"} <= set(m.meta.trained)
    det = FallDetector()
    assert det.health.ok and det.health.mode == "model" and det.window == m.meta.window
    for k in DEFAULTS:
        if k in m.meta.thresholds:
            assert det.params[k] == m.meta.thresholds[k]
    # a window of someone standing still is not a fall; the model answers in 0..1
    quiet = window_features(np.tile(UP, (det.window, 1)))
    assert 0.0 <= m.predict(quiet) < m.meta.threshold


# -- cancel window -------------------------------------------------------------------------

FALL = {"t": 12.5, "score": 0.93, "event": "fall", "model": "2026.11.1", "peak_g": 6.1}


def test_fall_alarm_timeout_sends_the_alarm_with_the_evidence():
    a = FallAlarm(cancel_s=30)
    ev = a.fall(FALL, now=100.0)
    assert [e.event for e in ev] == ["fall_pending"] and a.pending
    assert a.tick(129.9) == [] and a.remaining_s == pytest.approx(0.1)
    ev = a.tick(130.0)
    assert len(ev) == 1 and ev[0].event == "alarm" and not a.pending
    d = ev[0].to_dict()
    assert d["t"] == 12.5 and d["score"] == 0.93 and d["model"] == "2026.11.1"
    assert d["peak_g"] == 6.1 and d["waited_s"] == 30.0
    assert a.tick(200.0) == []


def test_fall_alarm_cancel_and_second_fall():
    a = FallAlarm(cancel_s=30)
    a.fall(FALL, now=0.0)
    assert a.fall({**FALL, "t": 20.0, "score": 0.99}, now=10.0) == []   # same window
    ev = a.cancel(now=15.0)
    assert [e.event for e in ev] == ["cancelled"] and ev[0].data["score"] == 0.99
    assert ev[0].t == 12.5 and not a.pending and a.tick(100.0) == []
    assert a.cancel(now=101.0) == []


def test_gpio_glue_with_mock_pins():
    from gpiozero.pins.mock import MockFactory

    from agent.features.fall_alarm import CancelWindow, FallAlarmGPIO

    now = [0.0]
    factory = MockFactory()
    window = CancelWindow(30, clock=lambda: now[0])
    io_ = FallAlarmGPIO(window, button_pin=17, buzzer_pin=18, led_pin=27,
                        pin_factory=factory, bounce_s=None)
    try:
        assert io_.buzzer.value == 0 and io_.led.value == 0
        window.fall(FALL)
        assert io_.pending and io_.buzzer.value == 1 and io_.led.value == 1
        now[0] = 5.0
        factory.pin(17).drive_low()                 # "I'm OK" pressed
        factory.pin(17).drive_high()
        assert not io_.pending and io_.buzzer.value == 0 and io_.led.value == 0
        ev = window.tick()
        assert [e.event for e in ev] == ["cancelled"] and ev[0].data["waited_s"] == 5.0
        window.fall(FALL)                           # a new fall, nobody answers
        now[0] = 36.0
        ev = window.tick()
        assert [e.event for e in ev] == ["alarm"] and io_.buzzer.value == 0
    finally:
        io_.close()


# -- replay CLI ----------------------------------------------------------------------------

def write_csv(path: Path, t: np.ndarray, acc: np.ndarray) -> Path:
    rows = "\n".join(f"{a:.4f},{b:.5f},{c:.5f},{d:.5f}"
                     for a, (b, c, d) in zip(t, acc, strict=True))
    path.write_text("t,ax,ay,az\n" + rows + "\n", encoding="utf-8")
    return path


def cli(path: Path | str, model: str | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = run_cli(str(path), out, err, model=model)
    return rc, out.getvalue(), err.getvalue()


def sisfall(subject: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    if not (SISFALL / f"{subject}.npz").is_file():
        pytest.skip(f"SisFall data not at {SISFALL} (../shared absent): real-data replay "
                    "not tested")
    with np.load(SISFALL / f"{subject}.npz") as z:
        acc = z[key].astype(np.float64) * 32 / 8192
    return np.arange(len(acc)) / 200.0, acc


def test_replay_real_fall_and_real_adl(tmp_path):
    t, acc = sisfall("SA01", "F01_R01")
    rc, out, err = cli(write_csv(tmp_path / "fall.csv", t, acc))
    assert rc == 0 and err == ""
    lines = [json.loads(x) for x in out.splitlines()]
    assert len(lines) == 1 and list(lines[0])[:2] == ["t", "score"]
    mag = np.linalg.norm(acc, axis=1)
    assert abs(lines[0]["t"] - t[np.argmax(mag)]) < 1.0
    assert lines[0]["score"] >= 0.5 and lines[0]["basis"] == "model"
    t, acc = sisfall("SA01", "D13_R01")                 # lying down quickly, and up
    rc, out, err = cli(write_csv(tmp_path / "adl.csv", t, acc))
    assert rc == 0 and out == ""


def test_replay_errors(tmp_path):
    rc, out, err = cli(tmp_path / "missing.csv")
    assert rc == 66 and "missing.csv" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("t,ax,ay,az\n0.00,0,-1,0\n0.01,0,x,0\n")
    rc, out, err = cli(bad)
    assert rc == 65 and "bad.csv:3:" in err and "ay" in err and out == ""
    slow = write_csv(tmp_path / "slow.csv", np.arange(100) / 25.0, np.tile(UP, (100, 1)))
    rc, out, err = cli(slow)
    assert rc == 65 and "25.0 Hz" in err and "50 Hz" in err
    back = tmp_path / "back.csv"
    back.write_text("t,ax,ay,az\n0.00,0,-1,0\n0.01,0,-1,0\n0.005,0,-1,0\n")
    rc, out, err = cli(back)
    assert rc == 65 and "back.csv:4:" in err
    hdr = tmp_path / "hdr.csv"
    hdr.write_text("t,x,y,z\n0,0,-1,0\n")
    assert cli(hdr)[0] == 65
    ok = write_csv(tmp_path / "ok.csv", np.arange(300) / 100.0, np.tile(UP, (300, 1)))
    rc, out, err = cli(ok, model=str(tmp_path / "none.tflite"))
    assert rc == 66 and "none" in err


def test_replay_uses_rules_when_shipped_model_is_unusable(tmp_path, monkeypatch):
    import agent.detectors.fall as fall_mod

    monkeypatch.setattr(fall_mod, "model_path", lambda name: tmp_path / "gone.tflite")
    t, acc = fall_signal()
    rc, out, err = cli(write_csv(tmp_path / "f.csv", t, acc))
    assert rc == 0 and "rules only" in err
    assert json.loads(out.splitlines()[0])["basis"] == "rules"
