"""Fire detector: features, rules, nuisances, model combination, model faults, replay CLI."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest

from agent.detectors.fire import (
    CLEAR,
    FIRE,
    MODEL_FEATURES,
    FeatureExtractor,
    FireConfig,
    FireDetector,
)
from agent.models.runtime import Model, ModelError, model_path
from agent.tools.replay.fire import run_cli

SMOKE16 = Path(__file__).resolve().parents[2] / "shared" / "data" / "smoke" / \
    "smoke_detection_16col_rows0-10080.csv"
CALM = {"temperature_c": 21.0, "humidity_pct": 45.0, "eco2_ppm": 400.0}


def run(det: FireDetector, signal, seconds: int, step: int = 1, t0: int = 0):
    """Feed ``signal(t) -> values`` every ``step`` s; return the events."""
    events = []
    for t in range(t0, t0 + seconds, step):
        events += det.update(float(t), signal(t))
    return events


def calm_then(after, start: int = 900):
    return lambda t: CALM if t < start else after(t - start)


# -- features ------------------------------------------------------------------------------

def test_rate_of_rise_is_right_across_a_gap_and_nan_without_history():
    fx = FeatureExtractor()
    for t in range(0, 600):
        if 200 <= t < 380:  # three minutes without temperature
            continue
        fx.add(float(t), {"temperature_c": 20.0 + 0.05 * t})  # 3 degC/min
    assert fx.rate_per_min("temperature_c", 599.0, 60.0) == pytest.approx(3.0, abs=0.05)
    assert fx.rate_per_min("temperature_c", 599.0, 600.0) == pytest.approx(3.0, abs=0.05)
    # 10 s after the gap the sample a minute back is missing: no 1-min rate, no guess ...
    assert math.isnan(fx.rate_per_min("temperature_c", 390.0, 60.0))
    # ... while the 10-min rate bridges it, and 1 min after the gap all is back
    assert fx.rate_per_min("temperature_c", 390.0, 600.0) == pytest.approx(3.0, abs=0.1)
    assert fx.rate_per_min("temperature_c", 441.0, 60.0) == pytest.approx(3.0, abs=0.1)
    assert math.isnan(fx.rate_per_min("eco2_ppm", 599.0, 60.0))  # never measured
    fresh = FeatureExtractor()
    fresh.add(0.0, {"temperature_c": 20.0})
    fresh.add(10.0, {"temperature_c": 30.0})
    assert math.isnan(fresh.rate_per_min("temperature_c", 10.0, 60.0))  # window not covered


def test_stale_values_count_as_missing_and_features_are_one_sided():
    fx = FeatureExtractor()
    for t in range(0, 700):
        fx.add(float(t), {"temperature_c": 30.0 - 0.05 * t, "humidity_pct": 40 + 0.05 * t,
                          "eco2_ppm": 400.0})
    x = fx.model_features(699.0)
    assert len(x) == len(MODEL_FEATURES)
    assert x == [0.0] * len(MODEL_FEATURES)  # falling T, rising RH: nothing fire-like
    assert math.isnan(fx.level("temperature_c", 699.0 + FireConfig().stale_s + 1))
    with pytest.raises(ValueError, match="unknown quantity"):
        fx.add(700.0, {"co_ppm": 3.0})
    with pytest.raises(ValueError, match="earlier"):
        fx.add(10.0, {"temperature_c": 20.0})


# -- rules (no model) ----------------------------------------------------------------------

def test_temperature_ramp_of_10_c_per_min_fires_within_two_minutes():
    det = FireDetector(None)
    ev = run(det, calm_then(lambda s: {**CALM, "temperature_c": 21.0 + s / 6.0}), 1100)
    assert [e.state for e in ev] == [FIRE]
    assert "heat_rise" in ev[0].data["reasons"]
    assert ev[0].t - 900 <= 120 and ev[0].score == pytest.approx(1.0)


def test_fixed_temperature_fires_even_when_rising_slowly():
    det = FireDetector(None)
    ev = run(det, lambda t: {"temperature_c": 50.0 + t / 60.0}, 600)  # 1 degC/min to 60
    assert ev and ev[0].data["reasons"] == ["heat_fixed"]
    assert 57.0 <= ev[0].data["temperature_c"] < 58.0


def test_slow_daily_drift_and_a_single_glitch_do_not_fire():
    det = FireDetector(None)
    drift = lambda t: {"temperature_c": 18 + 8 * math.sin(2 * math.pi * t / 86400),  # noqa: E731
                       "humidity_pct": 50.0}
    assert run(det, drift, 86400, step=5) == []
    det = FireDetector(None)
    glitch = lambda t: {"temperature_c": 85.0 if t == 1000 else 21.0}  # noqa: E731
    assert run(det, glitch, 1200) == []  # the median of 10 s ignores one bad sample


def test_pm_surge_fires_smoke():
    det = FireDetector(None)
    ev = run(det, calm_then(lambda s: {**CALM, "pm2_5": 400.0}, 900) if False else
             (lambda t: {**CALM, "pm2_5": 8.0 if t < 900 else 400.0}), 960)
    assert [e.state for e in ev] == [FIRE]
    assert ev[0].data["reasons"] == ["smoke"] and ev[0].data["steam_like"] is False
    assert 900 + 15 <= ev[0].t <= 900 + 20  # persistence: 15 s and 3 readings


def test_nuisances_do_not_fire():
    """A hot shower next door (RH to 95 %, +2 degC, droplets counted as PM), a cleaning
    spray (TVOC x20), a polluted day (PM 250 building over an hour), cooking fumes
    (PM 120 for a few minutes): none alone is a fire."""
    shower = lambda s: {"temperature_c": 21 + min(2.0, s / 300),  # noqa: E731
                        "humidity_pct": min(95.0, 45 + s / 6), "eco2_ppm": 400.0,
                        "pm2_5": 10.0 if s < 120 else 350.0}
    assert run(FireDetector(None), calm_then(shower), 2000) == []
    spray = lambda s: {**CALM, "tvoc_ppb": 100.0 if s < 0 else 2500.0}  # noqa: E731
    assert run(FireDetector(None), lambda t: spray(t - 900) | {"tvoc_ppb": 100.0}
               if t < 900 else spray(t - 900), 1500) == []
    haze = lambda t: {"pm2_5": 20 + 230 * min(1.0, t / 3600)}  # noqa: E731
    assert run(FireDetector(None), haze, 7200, step=10) == []
    cooking = lambda t: {"pm2_5": 120.0 if 900 <= t < 1200 else 10.0}  # noqa: E731
    assert run(FireDetector(None), cooking, 1500) == []


def test_steam_like_surge_fires_when_corroborated_by_gas():
    det = FireDetector(None)
    sig = lambda t: {"humidity_pct": 95.0, "pm2_5": 8.0 if t < 900 else 400.0,  # noqa: E731
                     "tvoc_ppb": 100.0 if t < 900 else 3000.0}
    ev = run(det, sig, 960)
    assert ev and ev[0].data["reasons"] == ["smoke_gas"] and ev[0].data["gas_surge"]


def test_hysteresis_holds_fire_until_clear_s_of_calm():
    cfg = FireConfig()
    det = FireDetector(None)

    def sig(t):
        if t < 900:
            return {"temperature_c": 21.0}
        if t < 1020:
            return {"temperature_c": 21.0 + (t - 900) / 6}  # 10 degC/min for 2 min
        return {"temperature_c": 41.0}
    ev = run(det, sig, 1500)
    assert [e.state for e in ev] == [FIRE, CLEAR]
    quiet_from = 1020 + 60 + cfg.smooth_s  # the 1-min rise has fallen under 8 degC/min
    assert ev[1].t >= 1020 + cfg.clear_s
    assert ev[1].t <= quiet_from + cfg.clear_s + 5


# -- model ---------------------------------------------------------------------------------

def test_shipped_model_loads_and_matches_the_detector():
    m = Model.load(model_path("fire"), expect_task="fire")
    assert m.meta.features == MODEL_FEATURES
    assert m.meta.input_shape == (1, len(MODEL_FEATURES))
    assert m.meta.sample_rate_hz == 1
    assert model_path("fire").stat().st_size <= 16 * 1024
    assert m.input_dtype == "int8" and m.output_dtype == "int8"
    assert {k: m.meta.thresholds[k] for k in FireConfig().to_dict()} == FireConfig().to_dict()
    assert m.predict([[0.0] * len(MODEL_FEATURES)]) < m.meta.threshold  # nothing rises
    strong = [0, 0, 0, 60.0, 30.0, 400.0]  # eCO2 surging: the data set's fire signature
    assert m.predict([strong]) >= m.meta.threshold
    det = FireDetector()
    assert det.healthy and det.health["model"] == "ok"


def test_only_t_rh_eco2_runs_the_model_and_a_gas_surge_fires():
    det = FireDetector()
    calm = run(det, lambda t: CALM, 900)
    assert calm == [] and det.last["model_p"] is not None
    assert det.last["model_p"] < det.threshold
    ev = run(det, lambda t: {**CALM, "eco2_ppm": 400 + 2.0 * (t - 900)}, 600, t0=900)
    assert ev and ev[0].state == FIRE and "model" in ev[0].data["reasons"]
    assert ev[0].data["model_p"] >= det.threshold


def test_model_missing_is_a_health_fault_and_rules_still_work(tmp_path):
    det = FireDetector(tmp_path / "nothing.tflite")
    assert not det.healthy and "metadata file missing" in det.health["error"]
    ev = run(det, calm_then(lambda s: {**CALM, "temperature_c": 21.0 + s / 6.0}), 1100)
    assert ev and ev[0].data["reasons"] == ["heat_rise"] and ev[0].data["model"] == "fault"


def test_model_failing_at_predict_falls_back_to_rules(monkeypatch):
    det = FireDetector()
    assert det.healthy

    def broken(x):
        raise ModelError("fire: inference failed: boom")
    monkeypatch.setattr(det.model, "predict", broken)
    ev = run(det, calm_then(lambda s: {**CALM, "temperature_c": 21.0 + s / 6.0}), 1100)
    assert not det.healthy and "boom" in det.health["error"] and det.model is None
    assert ev and ev[0].data["reasons"] == ["heat_rise"]


# -- replay CLI ----------------------------------------------------------------------------

def cli(tmp_path, text: str, **kw) -> tuple[int, str, str]:
    p = tmp_path / "in.csv"
    p.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    return run_cli(str(p), out, err, **kw), out.getvalue(), err.getvalue()


@pytest.mark.skipif(not SMOKE16.is_file(), reason="../shared/data absent")
def test_replay_cli_on_the_real_smoke_file(tmp_path):
    import csv

    with open(SMOKE16, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[8000:9800]  # calm, then the eCO2 surge at ~9000
    lines = ["t,temperature_c,humidity_pct,eco2_ppm"]
    lines += [f"{r['UTC']},{r['Temperature[C]']},{r['Humidity[%]']},{r['eCO2[ppm]']}"
              for r in rows]
    code, out, _err = cli(tmp_path, "\n".join(lines) + "\n")
    assert code == 0
    events = [json.loads(x) for x in out.splitlines()]
    assert events and events[0]["state"] == "fire" and "model" in events[0]["reasons"]
    eco2 = [float(r["eCO2[ppm]"]) for r in rows]
    first_gas = next(i for i, v in enumerate(eco2) if i >= 600 and v > 420)
    # after the model's 10-min warm-up, within a minute of the first eCO2 rise
    assert float(rows[first_gas]["UTC"]) <= events[0]["t"] <= float(rows[first_gas]["UTC"]) + 60


def test_replay_cli_empty_cells_and_iso_times(tmp_path):
    lines = ["t,temperature_c,pm2_5"]
    for s in range(0, 1000):
        pm = "" if s % 5 else ("8" if s < 900 else "400")  # PM every 5 s only
        lines.append(f"2026-11-23T10:{s // 60:02d}:{s % 60:02d}Z,21.0,{pm}" if s < 3600 else "")
    code, out, err = cli(tmp_path, "\n".join(lines) + "\n", model=None)
    assert code == 0, err
    ev = [json.loads(x) for x in out.splitlines()]
    assert [e["state"] for e in ev] == ["fire"] and ev[0]["reasons"] == ["smoke"]


@pytest.mark.parametrize("text, message", [
    ("t,temperature_c,co_ppm\n0,20,1\n", "unknown column(s) co_ppm; accepted: t, temperature_c"),
    ("t,comment\n", "unknown column(s) comment"),
    ("t\n0\n", "no quantity column"),
    ("temperature_c\n20\n", "header lacks column t"),
    ("t,temperature_c\n0,20\n1,hot\n", ":3: temperature_c 'hot' is not a number"),
    ("t,temperature_c\n5,20\n1,20\n", ":3: t 1 is earlier"),
    ("t,temperature_c\nnoon,20\n", ":2: t 'noon' is neither"),
    ("t,temperature_c\n0,20,5\n", ":2: 3 field(s), expected 2"),
])
def test_replay_cli_errors_name_the_line(tmp_path, text, message):
    code, out, err = cli(tmp_path, text)
    assert code == 65 and out == "" and message in err


def test_replay_cli_missing_file_and_bad_model(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    assert run_cli(str(tmp_path / "nope.csv"), out, err) == 66 and "nope.csv" in err.getvalue()
    missing = str(tmp_path / "other.tflite")
    code, out, err = cli(tmp_path, "t,temperature_c\n0,20\n", model=missing)
    # like detect fall: one line naming the .tflite, exit 66 (it used to warn twice,
    # naming the .json, and exit 0)
    assert code == 66 and out == "" and err.count("\n") == 1
    assert err.startswith("error: ") and "other.tflite" in err and ".json" not in err
