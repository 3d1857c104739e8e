"""Appliance-activity detector: routine, inactivity alarm, hysteresis, unusual use, replay."""

from __future__ import annotations

import io
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.detectors.activity import ACTIVE, ActivityDetector, PlugActivity, Routine
from agent.features.household import load_routine, save_routine
from agent.tools.replay.inactivity import run_cli

H = 3600.0
DAY = 86400.0
T0 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC


def use(det: ActivityDetector, t: float, plug: str = "kettle", dur: float = 120.0,
        watts: float = 2000.0) -> list:
    """One use of an appliance: samples every 5 s, then idle."""
    ev = []
    for k in range(int(dur // 5) + 1):
        ev += det.update(t + 5 * k, plug, watts)
    for k in range(1, 20):
        ev += det.update(t + dur + 5 * k, plug, 0.0)
    return ev


def run_until(det: ActivityDetector, t_from: float, t_to: float, step: float = 300.0) -> list:
    ev = []
    t = t_from
    while t <= t_to:
        ev += det.tick(t)
        t += step
    return ev


def weekday_uses(day: int) -> list[float]:
    """Usual routine: kettle at 07:00, 12:00, 18:00, TV 20:00; Sundays start at 10:30."""
    if day % 7 == 6:
        return [10.5, 13.0, 18.0, 20.0]
    return [7.0, 12.0, 18.0, 20.0]


def live(det: ActivityDetector, days: range) -> list:
    ev = []
    for d in days:
        for h in weekday_uses(d):
            t = T0 + d * DAY + h * H
            ev += run_until(det, det.now or t, t)
            ev += use(det, t, "tv" if h == 20.0 else "kettle")
    return ev


def alarms(events: list) -> list:
    return [e for e in events if e.event == "inactivity_alarm"]


def trained(**kw) -> ActivityDetector:
    det = ActivityDetector(["kettle", "tv"], **kw)
    live(det, range(0, 27))  # four weeks, ends Saturday evening
    return det


def test_quiet_sunday_morning_is_not_an_emergency() -> None:
    det = trained()
    ev = live(det, range(27, 28))  # Sunday: first use 10:30
    assert alarms(ev) == []


def test_stopped_routine_raises_alarm_within_hours() -> None:
    det = trained()
    last = det.last_activity
    assert last is not None
    # nothing at all on Sunday: alarm is raised by the clock alone (no samples)
    ev = run_until(det, det.now, last + 2 * DAY)
    al = alarms(ev)
    assert len(al) == 1
    d = al[0].to_dict()
    assert d["event"] == "inactivity_alarm"
    assert d["inactive_s"] > d["threshold_s"] >= det.min_inactivity_s
    delay = al[0].t - (T0 + 27 * DAY + 10.5 * H)  # the usual first use
    assert delay < 12 * H  # the target: alarmed within 12 h
    ev = use(det, al[0].t + H)
    assert [e.event for e in ev] == ["activity_resumed"]


def test_night_is_not_an_alarm_but_a_missing_morning_is() -> None:
    det = trained()
    ev = live(det, range(27, 35))  # Sunday + a week
    assert alarms(ev) == []
    # Sunday last use 20:00, Monday nothing: no alarm in the night
    t_night = T0 + 35 * DAY + 5 * H
    assert alarms(run_until(det, det.now, t_night)) == []
    al = alarms(run_until(det, t_night, T0 + 36 * DAY))
    assert al and al[0].t < T0 + 36 * DAY  # alarmed the same day


def test_new_install_prior_is_cautious() -> None:
    det = ActivityDetector(["kettle"])
    use(det, T0 + 20 * H)
    assert alarms(run_until(det, T0 + 20 * H, T0 + DAY + 8 * H)) == []
    # the prior alone: a quiet spell from 20:00 is usual well into the next day
    assert det.routine.usual_gap_s(T0 + 20 * H) > 12 * H
    assert det.threshold_s() >= det.max_wait_s


def _three_start_mornings(det: ActivityDetector) -> list:
    ev = []
    for d in range(42):
        for h in (7.0 + d % 3, 13.0, 20.0):
            t = T0 + d * DAY + h * H
            ev += run_until(det, det.now or t, t)
            ev += use(det, t, "tv" if h == 20.0 else "kettle")
    return ev


def test_missed_morning_counts_even_if_each_hour_is_irregular() -> None:
    """Mornings start at 07, 08 or 09 (each hour used on 1/3 of the days): the hazard
    learns that after a night the morning always comes, so a day without any use
    is alarmed before the afternoon; hours taken as independent would wait for
    the evening."""
    det = ActivityDetector(["kettle", "tv"])
    assert alarms(_three_start_mornings(det)) == []
    al = alarms(run_until(det, det.now, T0 + 43 * DAY + 18 * H))
    assert len(al) == 1
    alarm_clock = (al[0].t - T0 - 42 * DAY) / H
    assert 9.5 < alarm_clock < 14.0, alarm_clock  # after the latest usual start
    r = det.routine
    nine = r.how(T0 + 42 * DAY + 9 * H)
    assert r.hazard(nine, 1) > r.p_active(nine) + 0.2

    independent = ActivityDetector(["kettle", "tv"], routine=Routine(quiet_s=(1e9,)))
    _three_start_mornings(independent)
    al2 = alarms(run_until(independent, independent.now, T0 + 43 * DAY + 23 * H))
    assert al2 and al2[0].t > al[0].t + 4 * H


def test_threshold_rule_margin_cap_and_late_alpha() -> None:
    det = trained()
    start = det.last_activity
    assert start is not None
    usual = det.routine.usual_gap_s(start)
    assert det.usual_s() == pytest.approx(usual)
    expected = min(det.margin * usual, det.max_wait_s)
    if usual > expected:
        expected = max(expected, det.routine.usual_gap_s(start, math.log(det.late_alpha)))
    assert det.threshold_s() == pytest.approx(max(det.min_inactivity_s, expected))
    # a short usual gap (daytime) is doubled; never below min_inactivity_s
    tight = ActivityDetector(["kettle"], min_inactivity_s=0.5 * H, margin=2.0,
                             routine=Routine(prior={h: 0.9 for h in range(168)}))
    use(tight, T0 + 12 * H)
    u = tight.routine.usual_gap_s(tight.last_activity)
    assert u < 3 * H
    assert tight.threshold_s() == pytest.approx(max(0.5 * H, 2 * u))
    # a long usual gap is capped by max_wait_s, then by the late alpha
    slow = ActivityDetector(["kettle"], max_wait_s=4 * H,
                            routine=Routine(prior={h: 0.15 for h in range(168)}))
    use(slow, T0 + 12 * H)
    u = slow.routine.usual_gap_s(slow.last_activity)
    late = slow.routine.usual_gap_s(slow.last_activity, math.log(slow.late_alpha))
    assert u > late > 4 * H
    assert slow.threshold_s() == pytest.approx(late)


@pytest.mark.parametrize("kw, msg", [({"margin": 0.5}, "margin"),
                                     ({"max_wait_s": H, "min_inactivity_s": 2 * H}, "max_wait_s")])
def test_detector_rejects_bad_parameters(kw: dict, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        ActivityDetector(["kettle"], **kw)


def test_version_1_state_is_read_and_upgraded(tmp_path: Path) -> None:
    """A routine saved before the hazard existed keeps its hour counts."""
    det = trained()
    d = det.to_dict()
    d["version"] = 1
    for k in ("ga", "gn", "glast", "quiet_s"):
        del d["routine"][k]
    d.pop("quiet_from")
    path = tmp_path / "activity.json"
    path.write_text(json.dumps(d), encoding="utf-8")
    old = ActivityDetector(["kettle", "tv"], state=load_routine(path))
    assert old.routine.a == det.routine.a and sum(map(sum, old.routine.gn)) == 0
    assert old.last_activity == det.last_activity
    save_routine(path, old.to_dict())
    assert json.loads(path.read_text())["version"] == 2


def test_hysteresis_no_flapping() -> None:
    p = PlugActivity("heater", on_w=15, off_w=8, min_on_s=5, min_off_s=60)
    kinds = []
    t = 0.0
    for k in range(200):  # switched on, then hovering around 10-16 W (inside the band)
        w = 20.0 if k < 3 else (16.0 if k % 2 else 10.0)
        kinds += [x for x, _ in p.update(t, w)]
        t += 5
    assert kinds.count(ACTIVE) == 1
    assert "standby" not in kinds
    # a thermostat pause shorter than min_off_s does not end the period
    for k in range(8):
        kinds += [x for x, _ in p.update(t, 0.0 if k < 8 else 16.0)]
        t += 5
    kinds += [x for x, _ in p.update(t, 20.0)]
    assert kinds.count(ACTIVE) == 1
    for _k in range(20):
        kinds += [x for x, _ in p.update(t, 0.0)]
        t += 5
    assert kinds[-2:] == ["standby", "off"]
    with pytest.raises(ValueError):
        p.update(t, -1.0)


def test_fridge_is_not_activity_but_unusual_use_is_reported() -> None:
    det = ActivityDetector(["fridge", "heater"], unattended=["fridge"], plug_events=True)
    t = T0 + 9 * H
    for d in range(4):  # heater used for 1 h on four days
        use(det, t + d * DAY, "heater", dur=H)
    assert det.longest["heater"] == pytest.approx(H, abs=10)
    last = det.last_activity
    # fridge cycles do not count
    use(det, t + 4 * DAY, "fridge", dur=600)
    assert det.last_activity == last
    ev = []
    t1 = t + 5 * DAY
    for k in range(int(3 * H // 30)):
        ev += det.update(t1 + 30 * k, "heater", 1500.0)
    unusual = [e.to_dict() for e in ev if e.event == "unusual_use"]
    assert len(unusual) == 1
    assert unusual[0]["plug"] == "heater"
    assert unusual[0]["duration_s"] > 2 * H
    assert unusual[0]["longest_s"] == pytest.approx(H, abs=10)
    assert any(e.event == "on" for e in ev) or any(e.event == "active" for e in ev)


def test_persistence_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "state" / "activity.json"
    det = trained()
    save_routine(path, det.to_dict())
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    again = ActivityDetector(["kettle", "tv"], state=load_routine(path))
    assert again.routine.to_dict() == det.routine.to_dict()
    assert again.last_activity == det.last_activity
    r = Routine.from_dict(json.loads(json.dumps(det.routine.to_dict())))
    t = T0 + 27 * DAY + 9 * H
    assert r.usual_gap_s(t) == det.routine.usual_gap_s(t)
    a = [e.to_dict() for e in run_until(det, det.now, det.now + 2 * DAY)]
    b = [e.to_dict() for e in run_until(again, again.now, again.now + 2 * DAY)]
    assert a == b and len(a) == 1


CSV = "t,plug,watts\n"


def _csv(tmp_path: Path, body: str) -> str:
    p = tmp_path / "in.csv"
    p.write_text(CSV + body, encoding="utf-8")
    return str(p)


def test_replay_cli_prints_events(tmp_path: Path) -> None:
    rows = []
    t = T0 + 8 * H
    for k in range(30):
        rows.append(f"{t + 5 * k:.0f},kettle,{2000 if k < 20 else 0}")
    rows.append(f"{datetime.fromtimestamp(T0 + 2 * DAY, UTC).isoformat()},kettle,0")
    out, err = io.StringIO(), io.StringIO()
    assert run_cli(_csv(tmp_path, "\n".join(rows) + "\n"), out, err) == 0
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [x["event"] for x in lines] == ["inactivity_alarm"]
    assert lines[0]["t"] < T0 + 2 * DAY  # raised by the clock, before the last row
    assert set(lines[0]) >= {"t", "event", "inactive_s", "usual_s"}


@pytest.mark.parametrize("body, line, msg", [
    ("1,kettle,5\nx,kettle,5\n", 3, "neither Unix seconds"),
    ("1,kettle,5\n2,kettle,-3\n", 3, "watts"),
    ("5,kettle,5\n2,tv,3\n", 3, "earlier"),
    ("1,,5\n", 2, "empty plug"),
])
def test_replay_cli_errors(tmp_path: Path, body: str, line: int, msg: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    path = _csv(tmp_path, body)
    assert run_cli(path, out, err) == 65
    assert out.getvalue() == ""
    assert f"{path}:{line}:" in err.getvalue() and msg in err.getvalue()


def test_replay_cli_missing_file(tmp_path: Path) -> None:
    err = io.StringIO()
    assert run_cli(str(tmp_path / "nope.csv"), io.StringIO(), err) == 66


def test_eval_skips_without_shared_data() -> None:
    from bench import eval_inactivity
    if not eval_inactivity.DATA.is_dir():
        pytest.skip(f"tracebase traces not found at {eval_inactivity.DATA} (../shared absent)")
    days = eval_inactivity.load_day(sorted((eval_inactivity.DATA / "WaterKettle").glob("*.gz"))[0])
    assert days and max(w for _, w in days) > 1000


def test_detect_inactivity_command_unattended_and_time_zone(tmp_path: Path, capsys) -> None:
    """A cycling fridge hides a silent household unless it is declared unattended."""
    from agent.tools.cli import main

    rows = [f"{T0 + 8 * H + 5 * k:.0f},kettle,{2000 if k < 20 else 0}" for k in range(30)]
    for c in range(40):  # the fridge: 20 min on, 40 min off, for 40 h
        t = T0 + 9 * H + c * H
        rows += [f"{t + s:.0f},fridge,{w}" for s, w in ((0, 90), (1200, 90), (1260, 1), (1400, 1))]
    rows.sort(key=lambda r: float(r.split(",")[0]))
    path = _csv(tmp_path, "\n".join(rows) + "\n")
    assert main(["detect", "inactivity", "--input", path, "--utc-offset", "0"]) == 0
    assert '"inactivity_alarm"' not in capsys.readouterr().out
    assert main(["detect", "inactivity", "--input", path, "--utc-offset", "9",
                 "--unattended", "fridge"]) == 0
    events = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [e["event"] for e in events] == ["inactivity_alarm"]
    assert events[0]["last_activity"] == pytest.approx(T0 + 8 * H, abs=10)  # the kettle
    assert main(["detect", "inactivity", "--input", path, "--utc-offset", "20"]) == 64


def test_docs_replay_example_is_what_the_command_prints(tmp_path: Path) -> None:
    """docs/inactivity.md shows a CSV and the command's output: they must stay true."""
    import re

    from agent.features.household import activity_kwargs

    doc = (Path(__file__).resolve().parents[1] / "docs" / "inactivity.md").read_text()
    section = doc.split("## Offline replay", 1)[1]
    csv_text = re.search(r"```csv\n(.*?)```", section, re.S).group(1)
    shown = re.search(r"```console\n\$ [^\n]*\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "home.csv"
    path.write_text(csv_text, encoding="utf-8")
    out = io.StringIO()
    assert run_cli(str(path), out, unattended=["fridge"],
                   **activity_kwargs(utc_offset_s=9 * 3600.0)) == 0
    assert out.getvalue() == shown
