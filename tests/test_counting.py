"""The counting feature (agent/features/counting.py): which sensors count, the records of
each report interval, flags, presence, and the same counts as the detector alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.core import config
from agent.detectors.crossing import CrossingCounter, from_mm
from agent.features.base import FeatureContext
from agent.features.counting import (
    FLAG_BITS,
    Counting,
    Interval,
    counting_sensors,
    interval_records,
)
from agent.features.registry import start_features
from agent.wire import formats, quantities
from agent.wire.model import Pack
from drivers.base import Reading
from drivers.ld2450.codec import FrameDecoder, Report
from drivers.ld2450.emulator import Habits, stream
from drivers.ld2450.protocol import RadarSample
from drivers.ld2450.scenes import generate
from drivers.vl53l1x.codec import ZoneSample

NODE = '[node]\nid = "n"\nstate_dir = "{state}"\n'
RADAR = '[[sensor]]\ntype = "ld2450"\nname = "{name}"\nport = "/dev/ttyAMA0"\n'
TOF = ('[[sensor]]\ntype = "vl53l1x"\nname = "door"\nbus = "emulator"\nmode = "counting"\n'
       '[sensor.use]\nrole = "distance"\n')
PIR = '[[sensor]]\ntype = "pir"\nname = "hall"\npins = "emulator"\n'
PM = '[[sensor]]\ntype = "pms5003"\nname = "pm"\nport = "/dev/ttyAMA1"\n'


def node(tmp_path: Path, *tables: str, clock: list[float] | None = None
         ) -> tuple[Counting, config.Config]:
    cfg = config.parse(NODE.format(state=tmp_path) + "".join(tables), check_devices=False)
    now = clock if clock is not None else [0.0]
    features = start_features(cfg, FeatureContext(tmp_path, publish=lambda k, r: None,
                                                  clock=lambda: now[0]))
    return next(f for f in features if isinstance(f, Counting)), cfg


def radar_samples(kind: str, duration_s: float, seed: int) -> list[RadarSample]:
    dec = FrameDecoder()
    out = []
    for t, raw in stream(generate(kind, duration_s, seed), Habits(), seed=seed):
        out += [RadarSample(t, ev.targets) for ev in dec.feed(raw) if isinstance(ev, Report)]
    return out


def by_name(records: list) -> dict[str, float]:
    return {r.name: r.value for r in records}


# -- which sensors count ---------------------------------------------------------------------
def test_radars_doorways_and_pirs_count_other_sensors_do_not(tmp_path: Path) -> None:
    feature, cfg = node(tmp_path, RADAR.format(name="radar"), TOF, PIR, PM,
                        '[[sensor]]\ntype = "vl53l1x"\nname = "plain"\nbus = 3\n'
                        'prefix = "p."\n[sensor.use]\nrole = "distance"\n')
    roles = {s.name: role for s, role in counting_sensors(cfg)}
    assert roles == {"radar": "radar", "door": "doorway", "hall": "presence"}
    by = {s.name: s for s in cfg.sensor}
    assert [n for n in by if feature.watches(by[n])] == ["radar", "door", "hall"]
    assert feature.samples("radar") is not None and feature.samples("door") is not None
    assert feature.samples("hall") is None and feature.handler("hall") is not None
    assert feature.handler("radar") is None and feature.report_records("pm", {}) == []


def test_no_counting_sensor_no_feature(tmp_path: Path) -> None:
    cfg = config.parse(NODE.format(state=tmp_path) + PM, check_devices=False)
    assert not Counting.wanted(cfg)


def test_the_counting_table_is_configuration_and_checked(tmp_path: Path) -> None:
    text = NODE.format(state=tmp_path) + RADAR.format(name="radar") + (
        "[sensor.counting]\nline_x_m = 0.5\nzone_y_m = [0.5, 4.0]\nhysteresis_m = 0.4\n"
        "birth_frames = 9\n")
    cfg = config.parse(text, check_devices=False)
    c = cfg.sensor[0].counting
    assert (c.line_x_m, c.zone_y_m, c.hysteresis_m, c.birth_frames) == (0.5, [0.5, 4.0], 0.4, 9)
    feature, _ = node(tmp_path, RADAR.format(name="radar") + "[sensor.counting]\n"
                      "line_x_m = 0.5\nzone_y_m = [0.5, 4.0]\n")
    counter = feature.counters["radar"].counter
    assert (counter.line_x_m, counter.zone_y_m) == (0.5, (0.5, 4.0))
    for bad in ("zone_y_m = [4.0, 0.5]", "zone_y_m = [1.0]", "line_x_m = 11", "gate_m = 0",
                "birth_frames = 0", "typo = 1", "zone_y_m = [-1.0, 2.0]"):
        with pytest.raises(config.ConfigError, match="counting"):
            config.parse(NODE.format(state=tmp_path) + RADAR.format(name="radar")
                         + f"[sensor.counting]\n{bad}\n", check_devices=False)


# -- the radar -------------------------------------------------------------------------------
def test_the_radars_counts_per_interval_add_up_to_the_detectors(tmp_path: Path) -> None:
    """The feature runs the same counter as ``detect crossings``: per interval counts sum
    to what the detector alone counts, and every interval says how many people were there."""
    samples = radar_samples("mixed", 1200.0, seed=9)
    clock = [samples[0].t]
    feature, _ = node(tmp_path, RADAR.format(name="radar"), clock=clock)
    on_samples = feature.samples("radar").handler
    detector = CrossingCounter()
    truth = {"in": 0, "out": 0}
    for s in samples:
        for c in detector.update(s.t, from_mm(s.targets)):
            truth[c.direction] += 1
    totals = {"in": 0, "out": 0}
    intervals = []
    next_report = samples[0].t + 60.0
    for i in range(0, len(samples), 5):  # batches, as the driver hands them over
        batch = samples[i:i + 5]
        on_samples(batch)
        clock[0] = batch[-1].t
        feature.tick()
        if clock[0] >= next_report:
            recs = by_name(feature.report_records("radar", {}))
            intervals.append(recs)
            totals["in"] += recs["radar:in"]
            totals["out"] += recs["radar:out"]
            next_report += 60.0
    recs = by_name(feature.report_records("radar", {}))
    totals["in"] += recs["radar:in"]
    totals["out"] += recs["radar:out"]
    assert totals == truth and truth["in"] + truth["out"] > 50
    assert intervals[0]["radar:cq"] == FLAG_BITS["warming_up"]
    assert all("radar:cq" not in r for r in intervals[1:])
    assert all(0.0 <= r["radar:ppl"] <= 3.0 for r in intervals)
    assert any(r["radar:ppl"] > 0 for r in intervals)
    status = feature.status()["radar"]
    assert (status["in"], status["out"]) == (truth["in"], truth["out"])


def test_a_radar_without_frames_is_blind_and_reports_zero(tmp_path: Path) -> None:
    clock = [100.0]
    feature, _ = node(tmp_path, RADAR.format(name="radar"), clock=clock)
    feature.tick()
    clock[0] = 110.0
    feature.tick()
    recs = by_name(feature.report_records("radar", {}))
    assert recs == {"radar:in": 0.0, "radar:out": 0.0,
                    "radar:cq": float(FLAG_BITS["blind"] | FLAG_BITS["warming_up"])}
    clock[0] = 170.0
    feature.tick()
    assert by_name(feature.report_records("radar", {}))["radar:cq"] == FLAG_BITS["blind"]


def test_a_saturated_radar_says_so(tmp_path: Path) -> None:
    clock = [0.0]
    feature, _ = node(tmp_path, RADAR.format(name="radar"), clock=clock)
    from drivers.ld2450.codec import Target

    crowd = tuple(Target(i, -1500 + 1000 * i, 1000 + 800 * i, 0, 320) for i in range(3))
    feature.samples("radar").handler([RadarSample(i * 0.1, crowd) for i in range(200)])
    recs = by_name(feature.report_records("radar", {}))
    assert int(recs["radar:cq"]) & FLAG_BITS["saturated"]
    assert recs["radar:ppl"] == pytest.approx(3.0, abs=0.3)


def test_a_malformed_frame_is_not_counted_and_said_once(tmp_path: Path, caplog) -> None:
    feature, _ = node(tmp_path, RADAR.format(name="radar"))
    handler = feature.samples("radar").handler
    handler([RadarSample(10.0, ())])
    with caplog.at_level("WARNING", logger="citynode.counting"):
        handler([RadarSample(5.0, ()), RadarSample(4.0, ())])
    assert feature.counters["radar"].refused == 2
    assert len(caplog.records) == 1 and "radar" in caplog.records[0].getMessage()


# -- doorway and PIR -------------------------------------------------------------------------
def doorway_walk(t0: float, zones: list[int], hold: int = 12) -> list[ZoneSample]:
    """Zone samples (zone 0, 1 alternating, 33 ms apart) for a sequence of states: 0
    nobody, 1 zone 0, 2 zone 1, 3 both."""
    out, t = [], t0
    for state in zones:
        for _ in range(hold):
            for zone in (0, 1):
                t += 0.033
                out.append(ZoneSample(t, zone, 850 if state & (1 << zone) else 2400, 0))
    return out


def test_a_doorway_counts_passages_and_presence(tmp_path: Path) -> None:
    feature, _ = node(tmp_path, TOF)
    handler = feature.samples("door").handler
    handler(doorway_walk(0.0, [0, 1, 3, 2, 0, 0, 2, 3, 1, 0, 0, 1, 0, 0]))
    recs = by_name(feature.report_records("door", {}))
    assert (recs["door:in"], recs["door:out"]) == (1.0, 1.0)
    assert 0.2 < recs["door:pres"] < 0.8
    assert "door:ppl" not in recs
    handler(doorway_walk(20.0, [0, 0, 0]))
    recs = by_name(feature.report_records("door", {}))
    assert (recs["door:in"], recs["door:out"], recs["door:pres"]) == (0.0, 0.0, 0.0)


def test_a_covered_or_silent_doorway_is_blind(tmp_path: Path) -> None:
    clock = [0.0]
    feature, _ = node(tmp_path, TOF, clock=clock)
    feature.samples("door").handler([ZoneSample(i * 0.033, i % 2, 20, 0) for i in range(60)])
    assert int(by_name(feature.report_records("door", {}))["door:cq"]) & FLAG_BITS["blind"]
    feature.samples("door").handler(doorway_walk(3.0, [0, 0]))
    clock[0] = 4.0
    feature.tick()
    assert "door:cq" not in by_name(feature.report_records("door", {}))
    clock[0] = 20.0
    feature.tick()  # no zone sample for 16 s
    assert by_name(feature.report_records("door", {}))["door:cq"] == FLAG_BITS["blind"]


def test_a_pir_reports_the_share_of_readings_with_motion(tmp_path: Path) -> None:
    feature, _ = node(tmp_path, PIR)
    on_reading = feature.handler("hall")
    for motion in (1, 1, 0, 0, 0, 1, 0, 0):
        on_reading(Reading({"motion": float(motion)}, 0.0, 0.0))
    assert by_name(feature.report_records("hall", {})) == {"hall:pres": 0.38}
    assert feature.report_records("hall", {}) == []  # no reading in the interval: no record
    assert feature.status() == {"hall": {"motion": False}}


# -- the records -----------------------------------------------------------------------------
def test_interval_records_and_their_catalogue_units() -> None:
    recs = interval_records("radar", Interval(3, 1, people=0.456,
                                              flags=frozenset({"saturated", "blind"})))
    assert by_name(recs) == {"radar:in": 3.0, "radar:out": 1.0, "radar:ppl": 0.46,
                             "radar:cq": 6.0}
    units = {r.name: quantities.unit(r.name) for r in recs}
    assert units == {"radar:in": "count", "radar:out": "count", "radar:ppl": "",
                     "radar:cq": ""}
    assert quantities.unit("hall:pres") == "/"
    assert quantities.resolution("radar:ppl") == 0.01
    assert quantities.lookup("bays:occ") is quantities.BAY_MASK  # the parking summary's own


@pytest.mark.parametrize("fmt", formats.PACK_NAMES)
def test_the_records_survive_every_payload_format(fmt: str) -> None:
    recs = interval_records("radar", Interval(12, 7, people=1.23, presence=0.5,
                                              flags=frozenset({"warming_up"})))
    f = formats.get(fmt)
    back = f.decode(f.encode(Pack(1.7e9, 1, 1, recs, kind="telemetry")).payload)
    got = {r.name: r.value for r in back.records}
    assert got == pytest.approx({"radar:in": 12, "radar:out": 7, "radar:ppl": 1.23,
                                 "radar:pres": 0.5, "radar:cq": 1}, abs=0.005)
    assert all(got[n] == int(got[n]) for n in ("radar:in", "radar:out", "radar:cq"))


# -- the street pole of citynode simulate --------------------------------------------------------
@pytest.mark.skipif(__import__("agent.tools.simulate", fromlist=["find_mosquitto"])
                    .find_mosquitto() is None, reason="needs a mosquitto binary")
def test_simulate_street_shows_counts_at_the_broker(tmp_path: Path) -> None:
    """``citynode simulate --site street``: the emulated radar's passers-by are counted by
    the real agent, and only counts reach the broker."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "simulate", "--site", "street", "--duration", "25",
         "--interval", "5", "--workdir", str(tmp_path)],
        capture_output=True, text=True, cwd=root, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    records = [r for d in docs if d["topic"].endswith("/telemetry") for r in d["records"]]
    names = {r["n"] for r in records}
    assert {"radar:in", "radar:out", "radar:ppl", "pm25", "temp"} <= names
    assert sum(r["v"] for r in records if r["n"] in ("radar:in", "radar:out")) > 0
    assert {r["u"] for r in records if r["n"] in ("radar:in", "radar:out")} == {"count"}
    radar = {n for n in names if n.startswith("radar:")}
    assert radar <= {"radar:in", "radar:out", "radar:ppl", "radar:cq", "radar:n", "radar:q"}
