"""The fire detector (agent/detectors/fire.py): rules only, judged on behaviour.

What a caregiver relies on: a quiet or slowly changing room never alarms, whatever its
levels, sensors and cadence (one reading a second, or one report window a minute); a
sensor's warm-up never alarms; a fire's signature (gas channels rising fast together, a
dry particle surge, heat) does, and says why; one gas alone, steam, or particles a node
with gas sensors cannot confirm do not. The thresholds themselves are bench/eval_fire.py's
business: no figure of the evaluation is asserted here.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Callable, Mapping

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.detectors.fire import (
    CLEAR,
    FIRE,
    GAS,
    PARTICLES,
    QUANTITIES,
    SHIPPED_SCALE,
    FireConfig,
    FireDetector,
    FireEvent,
)
from agent.tools.replay.fire import THRESHOLD_SCALE_RANGE, run_cli

Signal = Callable[[float], Mapping[str, float]]
ONSET = 1800.0          # a fire starts after half an hour of quiet room
QUIET = {"tvoc_ppb": 120.0, "eco2_ppm": 480.0, "temperature_c": 21.0, "humidity_pct": 45.0}
PROPERTY = settings(deadline=None, max_examples=30, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def run(det: FireDetector, signal: Signal, seconds: float, step: float = 1.0,
        t0: float = 0.0) -> list[FireEvent]:
    """Feed ``signal(t)`` every ``step`` s from ``t0`` for ``seconds``; the events."""
    events: list[FireEvent] = []
    n = int(seconds / step)
    for i in range(n):
        t = t0 + i * step
        events += det.update(t, signal(t))
    return events


def windows(signal: Signal, minutes: int) -> list[tuple[float, dict[str, float]]]:
    """The daemon's report windows of a 1 Hz signal: each minute's mean, at its end."""
    out = []
    for m in range(minutes):
        rows = [signal(60.0 * m + s) for s in range(60)]
        out.append((60.0 * (m + 1), {q: sum(r[q] for r in rows) / 60 for q in rows[0]}))
    return out


def first_fire(events: list[FireEvent]) -> FireEvent | None:
    return next((e for e in events if e.state == FIRE), None)


def gas_fire(tvoc_per_s: float = 15.0, eco2_per_s: float = 4.0) -> Signal:
    """A quiet room, then TVOC and eCO2 rising fast together from ONSET (a fire's gas)."""
    def sig(t: float) -> dict[str, float]:
        s = max(0.0, t - ONSET)
        return {**QUIET, "tvoc_ppb": QUIET["tvoc_ppb"] + tvoc_per_s * s,
                "eco2_ppm": QUIET["eco2_ppm"] + eco2_per_s * s}
    return sig


def particle_surge(s: float, plateau_s: float = 600.0) -> float:
    """PM2.5: 8 ug/m3, then +20 ug/m3 a second to 408 from s = 0, held ``plateau_s``, then
    back down at 4 ug/m3 a second."""
    if s < 0:
        return 8.0
    if s < 20:
        return 8.0 + 20.0 * s
    if s < plateau_s:
        return 408.0
    return max(8.0, 408.0 - 4.0 * (s - plateau_s))


# -- a quiet room never alarms --------------------------------------------------------------------

#: Where a room's readings plausibly sit, and how fast they may drift per hour without
#: anything happening (weather, heating, people coming and going slowly).
ROOM = {
    "temperature_c": (-20.0, 50.0, 1.5), "humidity_pct": (5.0, 95.0, 10.0),
    "eco2_ppm": (400.0, 5000.0, 150.0), "tvoc_ppb": (0.0, 5000.0, 150.0),
    "pressure_hpa": (900.0, 1080.0, 3.0),
    "pm1_0": (0.0, 300.0, 15.0), "pm2_5": (0.0, 300.0, 15.0), "pm10": (0.0, 300.0, 15.0),
    "nc0_5": (0.0, 3000.0, 100.0), "nc1_0": (0.0, 3000.0, 100.0), "nc2_5": (0.0, 3000.0, 100.0),
}


@st.composite
def rooms(draw: st.DrawFn) -> tuple[float, Signal, float]:
    """(cadence, signal, duration): any subset of quantities at any plausible level, each
    constant or drifting slowly, read every 1 to 60 s."""
    cadence = draw(st.floats(1.0, 60.0))
    chosen = draw(st.lists(st.sampled_from(QUANTITIES), min_size=1, unique=True))
    start: dict[str, float] = {}
    drift: dict[str, float] = {}
    for q in chosen:
        lo, hi, per_hour = ROOM[q]
        start[q] = draw(st.floats(lo, hi))
        drift[q] = draw(st.one_of(st.just(0.0), st.floats(-per_hour, per_hour))) / 3600.0

    def sig(t: float) -> dict[str, float]:
        return {q: min(ROOM[q][1], max(ROOM[q][0], start[q] + drift[q] * t)) for q in chosen}

    duration = min(6 * 3600.0, 1200 * cadence)   # at most 1200 readings an example
    return cadence, sig, duration


@PROPERTY
@given(rooms())
def test_a_constant_or_slowly_drifting_room_never_alarms(room) -> None:
    cadence, sig, duration = room
    det = FireDetector()
    assert run(det, sig, duration, step=cadence) == []
    assert det.state == CLEAR


@PROPERTY
@given(tvoc=st.floats(0.0, 30_000.0), eco2=st.floats(400.0, 30_000.0),
       cadence=st.sampled_from([1.0, 2.0, 5.0]), climate=st.booleans())
def test_sgp30_warm_up_then_any_steady_level_never_alarms(tvoc, eco2, cadence, climate) -> None:
    """The SGP30 reads a fixed 400 ppm / 0 ppb for 15 s after power-up, then the room:
    a jump to any level that must not look like a fire's rise."""
    def sig(t: float) -> dict[str, float]:
        gas = {"eco2_ppm": 400.0, "tvoc_ppb": 0.0} if t < 15.0 else \
            {"eco2_ppm": eco2, "tvoc_ppb": tvoc}
        return {**gas, "temperature_c": 22.0, "humidity_pct": 40.0} if climate else gas
    det = FireDetector()
    assert run(det, sig, 1200, step=cadence) == []
    assert det.state == CLEAR


def test_a_single_wild_reading_is_ignored() -> None:
    """One glitch (a bad frame) is outvoted by the median of the last seconds."""
    def sig(t: float) -> dict[str, float]:
        wild = t == 1000.0
        return {**QUIET, "temperature_c": 85.0 if wild else 21.0,
                "tvoc_ppb": 20_000.0 if wild else 120.0, "eco2_ppm": 9000.0 if wild else 480.0,
                "pm2_5": 900.0 if wild else 8.0}
    assert run(FireDetector(), sig, 1500) == []


# -- gas: TVOC and CO2 together -------------------------------------------------------------------

@pytest.mark.parametrize("cadence", ["1 Hz", "1-min windows"])
def test_a_gas_fire_alarms_and_says_why(cadence: str) -> None:
    det = FireDetector()
    sig = gas_fire()
    if cadence == "1 Hz":
        events = run(det, sig, 2700)
    else:
        events = [e for t, v in windows(sig, 45) for e in det.update(t, v)]
    ev = first_fire(events)
    assert ev is not None and ONSET < ev.t <= ONSET + 300, events
    assert "gas" in ev.data["reasons"] and det.state == FIRE and ev.score >= 1.0
    by_q = {s["quantity"]: s for s in ev.data["signals"]}
    assert set(GAS) <= set(by_q)
    for q in GAS:  # how far above its learned baseline each channel stood
        s = by_q[q]
        assert {"level", "baseline", "excess", "ratio", "rise"} <= set(s)
        assert s["excess"] == pytest.approx(s["level"] - s["baseline"], abs=0.2)
        assert s["excess"] > 0 and s["ratio"] > 1
        # learned from the quiet room, slowly: a minutes-long rise is not "normal" yet
        assert QUIET[q] * 0.9 <= s["baseline"] <= QUIET[q] + 0.25 * (s["level"] - QUIET[q])
    json.dumps(ev.to_dict())  # the evidence is JSON as it stands
    assert ev.to_dict()["state"] == FIRE and ev.to_dict()["reasons"] == ev.data["reasons"]


@PROPERTY
@given(which=st.sampled_from(GAS), rate=st.floats(1.0, 200.0), cadence=st.sampled_from([1.0, 60.0]),
       partner=st.booleans())
def test_one_gas_alone_surging_never_alarms(which: str, rate: float, cadence: float,
                                            partner: bool) -> None:
    """People and gas burners raise CO2 alone, sprays and cooking TVOC alone: one gas is
    never enough, however fast it rises, with the other gas steady or not measured."""
    def sig(t: float) -> dict[str, float]:
        v = dict(QUIET)
        v[which] += rate * max(0.0, t - ONSET)
        if not partner:
            del v[GAS[1] if which == GAS[0] else GAS[0]]
        return v
    assert run(FireDetector(), sig, 3000, step=cadence) == []


# -- particles ------------------------------------------------------------------------------------

def test_a_particle_surge_with_a_gas_surge_is_smoke() -> None:
    def sig(t: float) -> dict[str, float]:
        s = t - ONSET
        return {**gas_fire(tvoc_per_s=15.0, eco2_per_s=0.0)(t), "pm2_5": particle_surge(s)}
    ev = first_fire(run(FireDetector(), sig, 2400))
    assert ev is not None and ONSET < ev.t <= ONSET + 120
    assert "smoke" in ev.data["reasons"] and "gas" not in ev.data["reasons"]
    assert ev.data["steam_like"] is False
    assert "pm2_5" in {s["quantity"] for s in ev.data["signals"]}


@pytest.mark.parametrize("step", [1.0, 60.0])
def test_a_dry_particle_surge_on_a_node_without_gas_sensors_is_smoke_only(step: float) -> None:
    def sig(t: float) -> dict[str, float]:
        return {"pm2_5": particle_surge(t - ONSET), "temperature_c": 21.0, "humidity_pct": 45.0}
    ev = first_fire(run(FireDetector(), sig, 2400, step=step))
    assert ev is not None and ONSET < ev.t <= ONSET + 180
    assert ev.data["reasons"] == ["smoke_only"] and ev.data["steam_like"] is False
    (pm,) = ev.data["signals"]
    assert pm["quantity"] == "pm2_5" and pm["excess"] > 100 and pm["baseline"] < 20


@pytest.mark.parametrize("step", [1.0, 60.0])
@pytest.mark.parametrize("plateau_s", [60.0, 180.0, 900.0, 1500.0])
@pytest.mark.parametrize("rh_first_s", [0.0, 30.0])
def test_the_same_surge_with_humidity_jumping_15_points_is_steam(step, plateau_s,
                                                                 rh_first_s) -> None:
    """A shower or a kettle: RH jumps and an optical counter reads the droplets as PM."""
    def sig(t: float) -> dict[str, float]:
        s = t - ONSET
        return {"pm2_5": particle_surge(s, plateau_s), "temperature_c": 21.0,
                "humidity_pct": 45.0 if s < -rh_first_s else 60.0}
    assert run(FireDetector(), sig, 3000, step=step) == []


@pytest.mark.parametrize("step", [1.0, 60.0])
@pytest.mark.parametrize("plateau_s", [1200.0, 3000.0])
def test_a_fire_plateau_stays_a_fire_until_the_air_is_back_near_its_baseline(
        step: float, plateau_s: float) -> None:
    """Smoke that stops rising is still smoke: no `clear` while it stays; `clear` once gone."""
    def sig(t: float) -> dict[str, float]:
        return {"pm2_5": particle_surge(t - ONSET, plateau_s), "temperature_c": 21.0,
                "humidity_pct": 45.0}
    events = run(FireDetector(), sig, ONSET + plateau_s + 1200, step=step)
    assert [e.state for e in events] == [FIRE, CLEAR]
    assert events[1].t > ONSET + plateau_s


@pytest.mark.parametrize("plateau_s", [60.0, 600.0])
def test_steam_in_saturated_air_is_not_smoke(plateau_s: float) -> None:
    def sig(t: float) -> dict[str, float]:
        s = t - ONSET
        return {"pm2_5": particle_surge(s, plateau_s), "temperature_c": 21.0,
                "humidity_pct": 50.0 if s < 0 else 96.0}
    assert run(FireDetector(), sig, 3000) == []


@pytest.mark.parametrize("step", [1.0, 60.0])
def test_particles_a_node_with_gas_sensors_cannot_confirm_do_not_alarm(step: float) -> None:
    """Frying, toast, dust: PM up while TVOC and CO2 stay where they were."""
    def sig(t: float) -> dict[str, float]:
        return {**QUIET, "pm2_5": particle_surge(t - ONSET)}
    assert run(FireDetector(), sig, 3000, step=step) == []


# -- heat -----------------------------------------------------------------------------------------

def test_a_fixed_temperature_alarms_even_when_rising_slowly() -> None:
    ev = first_fire(run(FireDetector(), lambda t: {"temperature_c": 50.0 + t / 60.0}, 900))
    assert ev is not None and ev.data["reasons"] == ["heat_fixed"]
    assert 57.0 <= ev.data["temperature_c"] < 58.0


@pytest.mark.parametrize("step", [1.0, 60.0])
def test_a_fast_temperature_rise_alarms(step: float) -> None:
    def sig(t: float) -> dict[str, float]:  # 10 °C a minute from ONSET, to 50 °C
        return {"temperature_c": min(50.0, 21.0 + max(0.0, t - ONSET) / 6.0),
                "humidity_pct": 45.0}
    ev = first_fire(run(FireDetector(), sig, 2400, step=step))
    assert ev is not None and ONSET < ev.t <= ONSET + 180
    assert ev.data["reasons"] == ["heat_rise"] and ev.data["t_rise_c_per_min"] >= 8.0


# -- state: clear, hysteresis ---------------------------------------------------------------------

def gas_bursts(bursts: list[tuple[float, float]]) -> Signal:
    """QUIET, with TVOC and eCO2 far above it during each (start, end) burst (fast edges)."""
    def sig(t: float) -> dict[str, float]:
        on = any(a <= t < b for a, b in bursts)
        return {**QUIET, "tvoc_ppb": 5000.0 if on else QUIET["tvoc_ppb"],
                "eco2_ppm": 1500.0 if on else QUIET["eco2_ppm"]}
    return sig


def test_clear_after_clear_s_of_quiet() -> None:
    cfg = FireConfig()
    events = run(FireDetector(), gas_bursts([(ONSET, ONSET + 300)]), 3600)
    assert [e.state for e in events] == [FIRE, CLEAR]
    fire, clear = events
    assert ONSET < fire.t < ONSET + 60
    # quiet from the burst's end (give the 10-s median its time), then clear_s more
    assert ONSET + 300 + cfg.clear_s <= clear.t <= ONSET + 300 + cfg.smooth_s + cfg.clear_s + 2
    assert clear.data["reasons"] == []


def test_hysteresis_a_short_lull_does_not_clear_and_a_new_fire_is_a_new_event() -> None:
    cfg = FireConfig()
    lull = cfg.clear_s / 2
    bursts = [(ONSET, ONSET + 180), (ONSET + 180 + lull, ONSET + 240 + lull)]
    det = FireDetector()
    events = run(det, gas_bursts(bursts), ONSET + 240 + lull + cfg.clear_s - 30)
    assert [e.state for e in events] == [FIRE] and det.state == FIRE  # held through the lull
    events += run(det, gas_bursts(bursts), 3 * cfg.clear_s, t0=ONSET + 240 + lull + cfg.clear_s)
    assert [e.state for e in events] == [FIRE, CLEAR]
    assert events[1].t >= bursts[1][1] + cfg.clear_s
    # a new fire after the clear: a new alarm (the baseline has settled back meanwhile)
    again = ONSET + 4 * 3600
    more = run(det, gas_bursts([(again, again + 120)]), 900, t0=again - 300)
    assert [e.state for e in more] == [FIRE, CLEAR] and again < more[0].t < again + 60


# -- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("values, t, words", [
    ({"co_ppm": 3.0}, 101.0, "unknown quantity"),
    ({"temperature_c": 21.0, "smoke": 1.0}, 101.0, "unknown quantity"),
    ({"temperature_c": math.nan}, 101.0, "not a finite number"),
    ({"temperature_c": 22.0, "eco2_ppm": math.inf}, 101.0, "not a finite number"),
    ({"pm2_5": -math.inf}, 101.0, "not a finite number"),
    ({"temperature_c": 21.0}, 50.0, "earlier than the previous"),
    ({"temperature_c": 21.0}, math.nan, "not a finite number"),
    ({"temperature_c": 21.0}, math.inf, "not a finite number"),
])
def test_a_bad_update_is_refused_and_adds_nothing(values, t, words) -> None:
    det, twin = FireDetector(), FireDetector()
    sig = gas_fire()
    for i in range(101):
        det.update(float(i), {**sig(i), "pm2_5": 8.0})
        twin.update(float(i), {**sig(i), "pm2_5": 8.0})
    with pytest.raises(ValueError, match=words):
        det.update(t, values)
    assert set(det.channels) == set(twin.channels) and det.state == twin.state
    # ... and it goes on exactly as a detector that never saw it: nothing was added
    for i in range(101, 2400):
        assert det.update(float(i), {**sig(i), "pm2_5": 8.0}) == \
            twin.update(float(i), {**sig(i), "pm2_5": 8.0})
        assert det.last == twin.last
    assert det.state == FIRE


def test_unmeasured_values_are_skipped_and_nothing_is_required() -> None:
    det = FireDetector()
    assert det.update(0.0, {"temperature_c": None, "pm2_5": None}) == []
    assert det.update(1.0, {}) == [] and det.channels == {}
    assert set(PARTICLES) <= set(QUANTITIES) and set(GAS) <= set(QUANTITIES)


# -- the operating point: threshold scale ---------------------------------------------------------

@PROPERTY
@given(tvoc=st.floats(2.0, 60.0), eco2=st.floats(0.5, 15.0), pm=st.sampled_from([0.0, 5.0, 30.0]),
       scales=st.lists(st.floats(*THRESHOLD_SCALE_RANGE), min_size=2, max_size=2, unique=True),
       cadence=st.sampled_from([1.0, 60.0]))
def test_a_higher_scale_alarms_later_or_not_at_all(tvoc, eco2, pm, scales, cadence) -> None:
    low, high = sorted(scales)

    def sig(t: float) -> dict[str, float]:
        s = max(0.0, t - 600.0)
        return {**gas_fire(tvoc, eco2)(t + ONSET - 600.0), "pm2_5": 8.0 + pm * s}

    def when(scale: float) -> float:
        ev = first_fire(run(FireDetector(FireConfig().scaled(scale)), sig, 1800, cadence))
        return math.inf if ev is None else ev.t
    assert when(low) <= when(high)


def test_the_shipped_scale_is_the_default_and_scaled_multiplies_it() -> None:
    assert FireConfig().scale == SHIPPED_SCALE
    assert FireConfig().scaled(2.0).scale == pytest.approx(2.0 * SHIPPED_SCALE)
    assert FireDetector().cfg == FireConfig()
    assert FireConfig().scaled(1.0) == FireConfig()


@pytest.mark.parametrize("make", [
    lambda: FireConfig(scale=-1.0), lambda: FireConfig(scale=0.0),
    lambda: FireConfig(scale=math.nan), lambda: FireConfig(scale=math.inf),
    lambda: FireConfig(hold_s=-1.0), lambda: FireConfig(tvoc_delta_ppb=math.nan),
    lambda: FireConfig(clear_s=math.inf), lambda: FireConfig(pm_ratio="5"),
    lambda: FireConfig().scaled(0.0), lambda: FireConfig().scaled(-2.0),
    lambda: FireConfig().scaled(math.nan),
])
def test_fire_config_refuses_what_is_not_a_finite_positive_setting(make) -> None:
    with pytest.raises(ValueError):
        make()


# -- the replay CLI -------------------------------------------------------------------------------

def cli(tmp_path, text: str, **kw) -> tuple[int, str, str]:
    p = tmp_path / "in.csv"
    p.write_text(text, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    return run_cli(str(p), out, err, **kw), out.getvalue(), err.getvalue()


def gas_fire_csv(seconds: int = 2400) -> str:
    sig = gas_fire()
    rows = ["t,tvoc_ppb,eco2_ppm,temperature_c,humidity_pct"]
    rows += [",".join(f"{x:g}" for x in (t, *(sig(t)[q] for q in rows[0].split(",")[1:])))
             for t in range(seconds)]
    return "\n".join(rows) + "\n"


def test_replay_runs_the_rules_as_the_daemon_does(tmp_path) -> None:
    code, out, err = cli(tmp_path, gas_fire_csv())
    assert code == 0 and err == ""
    events = [json.loads(x) for x in out.splitlines()]
    assert events[0]["state"] == "fire" and "gas" in events[0]["reasons"]
    assert events[0]["t"] > ONSET and "model_p" not in events[0]
    det = FireDetector()
    sig = gas_fire()
    want = [e.to_dict() for e in run(det, sig, 2400)]
    assert events == json.loads(json.dumps(want))


def test_replay_threshold_scale_moves_the_alarm(tmp_path) -> None:
    text = gas_fire_csv()
    times = []
    for scale in (0.25, 1.0, 4.0):
        code, out, err = cli(tmp_path, text, threshold_scale=scale)
        assert code == 0, err
        fires = [json.loads(x)["t"] for x in out.splitlines() if '"fire"' in x]
        times.append(fires[0] if fires else math.inf)
    assert times[0] <= times[1] <= times[2] and times[1] < math.inf


@pytest.mark.parametrize("scale", [0.0, 0.2, 4.5, -1.0, math.nan, math.inf, True, "1"])
def test_replay_refuses_a_scale_out_of_range_before_reading(tmp_path, scale) -> None:
    out, err = io.StringIO(), io.StringIO()
    code = run_cli(str(tmp_path / "missing.csv"), out, err, threshold_scale=scale)
    assert code == 64 and out.getvalue() == ""
    assert err.getvalue().startswith("error: detect fire: --threshold-scale: ")
    assert err.getvalue().count("\n") == 1


def test_replay_empty_cells_and_iso_times(tmp_path) -> None:
    lines = ["t,temperature_c,humidity_pct,pm2_5"]
    for s in range(2400):
        pm = "" if s % 5 else f"{particle_surge(s - ONSET):g}"  # PM every 5 s only
        lines.append(f"2026-11-23T{10 + s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}Z,"
                     f"21.0,45.0,{pm}")
    code, out, err = cli(tmp_path, "\n".join(lines) + "\n")
    assert code == 0, err
    ev = [json.loads(x) for x in out.splitlines()]
    assert ev[0]["state"] == "fire" and ev[0]["reasons"] == ["smoke_only"]


@pytest.mark.parametrize("text, message", [
    ("t,temperature_c,co_ppm\n0,20,1\n", "unknown column(s) co_ppm; accepted: t, temperature_c"),
    ("t,comment\n", "unknown column(s) comment"),
    ("t\n0\n", "no quantity column"),
    ("temperature_c\n20\n", "header lacks column t"),
    ("t,temperature_c\n0,20\n1,hot\n", ":3: temperature_c 'hot' is not a number"),
    ("t,temperature_c\n5,20\n1,20\n", ":3: t 1 is earlier"),
    ("t,temperature_c\nnoon,20\n", ":2: t 'noon' is neither"),
    ("t,temperature_c\n0,20,5\n", ":2: 3 field(s), expected 2"),
    ("t,eco2_ppm\n0,2e5\n", ":2: eco2_ppm '2e5' is out of its plausible range"),
])
def test_replay_errors_name_the_line(tmp_path, text, message) -> None:
    code, out, err = cli(tmp_path, text)
    assert code == 65 and out == "" and message in err and err.count("\n") == 1


def test_replay_missing_file(tmp_path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_cli(str(tmp_path / "nope.csv"), out, err) == 66 and "nope.csv" in err.getvalue()


# -- the daemon -----------------------------------------------------------------------------------

def test_the_daemon_warns_once_at_start_that_a_fire_model_is_unused(tmp_path, caplog,
                                                                     monkeypatch) -> None:
    """Configurations written before 2026.12 may set [fire] model: the node starts, and
    says once that the key does nothing."""
    from agent.core import config
    from agent.core.daemon import EX_SOFTWARE, Node

    text = (f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n[log]\ntarget = "stderr"\n'
            '[fire]\nmodel = "/var/lib/citynode/fire.tflite"\n')
    node = Node(config.parse(text, "c.toml", check_devices=False))

    def stop_here(*_a: object) -> None:
        raise RuntimeError("the test stops the start here")

    monkeypatch.setattr(node, "_start_sensors", stop_here)
    caplog.set_level(logging.INFO, logger="citynode")
    assert node.run() == EX_SOFTWARE
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [config.FIRE_MODEL_UNUSED], warned
    assert config.FIRE_MODEL_UNUSED == ("[fire] model is no longer used: fire detection runs "
                                        "on rules, docs/fire.md")
    caplog.clear()
    plain = Node(config.parse(text.replace('model = "/var/lib/citynode/fire.tflite"\n', ""),
                              "c.toml", check_devices=False))
    monkeypatch.setattr(plain, "_start_sensors", stop_here)
    assert plain.run() == EX_SOFTWARE
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
