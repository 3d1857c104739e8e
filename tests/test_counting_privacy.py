"""Privacy by construction (issue 16 item 4): no track, position, speed or identifier leaves
the node or reaches the journal at INFO; only counts per interval.

Checked three ways: the feature run over an emulated street with the journal (logging at
INFO) and the outgoing records captured, for coordinate-like values; the same street moved
(every position shifted, the line with it) must give the very same records and log lines, so
nothing in them depends on where people were; and the code itself: every record is made in
one function from counts, and the detector logs positions at DEBUG only."""

from __future__ import annotations

import ast
import json
import logging
import math
import re
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core import config
from agent.features.base import FeatureContext
from agent.features.counting import (
    FLAG_BITS,
    RECORD_SUFFIXES,
    Counting,
    Interval,
    interval_records,
)
from agent.features.registry import start_features
from agent.wire import quantities
from drivers.ld2450.codec import FrameDecoder, Report, Target
from drivers.ld2450.emulator import Habits, stream
from drivers.ld2450.protocol import RadarSample
from drivers.ld2450.scenes import generate

ROOT = Path(__file__).resolve().parent.parent
NODE = '[node]\nid = "n"\nstate_dir = "{state}"\n'
RADAR = ('[[sensor]]\ntype = "ld2450"\nname = "radar"\nport = "/dev/ttyAMA0"\n'
         "[sensor.counting]\nline_x_m = {line}\n")


def street(seed: int = 5, minutes: float = 15.0) -> list[RadarSample]:
    dec = FrameDecoder()
    out = []
    for t, raw in stream(generate("mixed", minutes * 60.0, seed), Habits(), seed=seed):
        out += [RadarSample(t, ev.targets) for ev in dec.feed(raw) if isinstance(ev, Report)]
    return out


def moved(samples: list[RadarSample], dx_mm: int, dy_mm: int) -> list[RadarSample]:
    return [RadarSample(s.t, tuple(tg._replace(x_mm=tg.x_mm + dx_mm, y_mm=tg.y_mm + dy_mm)
                                   for tg in s.targets)) for s in samples]


def run(tmp_path: Path, samples: list[RadarSample], caplog, line_m: float = 0.0
        ) -> tuple[list, list[str], list[dict]]:
    """The feature over ``samples`` (with a malformed batch thrown in), a report a minute:
    the records sent, the log lines at INFO and above, the status snapshots."""
    cfg = config.parse(NODE.format(state=tmp_path) + RADAR.format(line=line_m),
                       check_devices=False)
    clock = [samples[0].t]
    features = start_features(cfg, FeatureContext(tmp_path, publish=lambda k, r: None,
                                                  clock=lambda: clock[0]))
    feature = next(f for f in features if isinstance(f, Counting))
    handler = feature.samples("radar").handler
    records, statuses = [], []
    caplog.clear()
    with caplog.at_level(logging.INFO):
        next_report = samples[0].t + 60.0
        for i in range(0, len(samples), 4):
            handler(samples[i:i + 4])
            if i == 400:
                handler([RadarSample(samples[i].t - 5.0, samples[i].targets)])  # out of order
            clock[0] = samples[min(i + 3, len(samples) - 1)].t
            feature.tick()
            if clock[0] >= next_report:
                records += feature.report_records("radar", {})
                statuses.append(feature.status())
                next_report += 60.0
        lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    return records, lines, statuses


def coordinates(samples: list[RadarSample]) -> set[str]:
    """Every position and speed as it could be written: mm, metres to 1-3 decimals."""
    out: set[str] = set()
    for s in samples:
        for tg in s.targets:
            for mm in (tg.x_mm, tg.y_mm, tg.speed_cms * 10):
                out.add(str(mm))
                for d in (1, 2, 3):
                    out.add(f"{mm / 1000:.{d}f}")
    return out


NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def test_no_coordinate_reaches_the_records_the_journal_or_the_status(tmp_path, caplog) -> None:
    samples = street()
    records, lines, statuses = run(tmp_path, samples, caplog)
    assert records and lines  # a report a minute; the malformed batch was said at WARNING
    coords = coordinates(samples)
    for r in records:
        name, _, suffix = r.name.partition(":")
        assert name == "radar" and suffix in RECORD_SUFFIXES, r.name
        assert r.text is None and r.flag is None
        if suffix in ("in", "out", "cq"):
            assert r.value == int(r.value) and 0 <= r.value < 1000, r
        else:
            assert 0.0 <= r.value <= 3.0, r
    for line in lines:
        leaked = [n for n in NUMBER.findall(line) if n in coords and len(n.lstrip("-")) >= 3]
        assert not leaked, line
        assert "x=" not in line and "y=" not in line
    for snap in statuses:
        assert set(snap["radar"]) == {"in", "out", "people", "flags"}
        flags = snap["radar"]["flags"]
        assert flags == "none" or set(flags.split("+")) <= set(FLAG_BITS)
        assert 0 <= snap["radar"]["people"] <= 3


def test_where_people_walked_changes_nothing_that_leaves(tmp_path, caplog) -> None:
    """Every position moved 1.2 m along the pavement (the line with it) and 0.3 m out: the
    same records and log lines, to the bit. Nothing sent depends on positions but counts."""
    samples = street(seed=8, minutes=8.0)
    a = run(tmp_path / "a", samples, caplog)
    b = run(tmp_path / "b", moved(samples, 1200, 300), caplog, line_m=1.2)
    assert [(r.name, r.value) for r in a[0]] == [(r.name, r.value) for r in b[0]]
    assert a[1] == b[1]
    assert json.dumps(a[2]) == json.dumps(b[2])


def test_positions_appear_at_debug_only(caplog) -> None:
    """The detector's DEBUG lines do show positions (for a developer's bench): the journal
    keeps INFO and above, where there are none."""
    from agent.detectors.crossing import CrossingCounter

    c = CrossingCounter()
    with caplog.at_level(logging.DEBUG, logger="citynode.crossing"):
        for i in range(60):
            c.update(i * 0.1, [(0, -3.0 + 0.1 * i, 2.0)])
        c.update(20.0, [])
    debug = [r for r in caplog.records if r.name == "citynode.crossing"]
    assert debug and all(r.levelno == logging.DEBUG for r in debug)
    assert any("x=" in r.getMessage() for r in debug)


@settings(max_examples=200, deadline=None)
@given(crossings_in=st.one_of(st.none(), st.integers(0, 10_000)),
       crossings_out=st.one_of(st.none(), st.integers(0, 10_000)),
       people=st.one_of(st.none(), st.floats(0, 3), st.just(math.nan)),
       presence=st.one_of(st.none(), st.floats(0, 1)),
       flags=st.frozensets(st.sampled_from([*FLAG_BITS, "other"])))
def test_every_record_name_the_feature_can_send_is_a_count_in_the_catalogue(
        crossings_in, crossings_out, people, presence, flags) -> None:
    iv = Interval(crossings_in, crossings_out, people, presence, flags)
    for r in interval_records("s1", iv):
        sensor, _, suffix = r.name.partition(":")
        assert sensor == "s1" and suffix in RECORD_SUFFIXES
        assert r.value is not None and math.isfinite(r.value)
        assert quantities.lookup(r.name) is not None


def test_each_record_suffix_has_its_quantity() -> None:
    units = {s: quantities.unit(f"s1:{s}") for s in RECORD_SUFFIXES}
    assert units == {"in": "count", "out": "count", "ppl": "", "pres": "/", "cq": ""}
    for s in RECORD_SUFFIXES:
        q = quantities.lookup(f"s1:{s}")
        assert q is not None and q.description


def _calls(path: Path) -> list[tuple[str, ast.Call, str]]:
    """(function the call is in, the call, what it calls) for every call in a module."""
    out = []
    for fn in ast.walk(ast.parse(path.read_text())):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.Call):
                    out.append((fn.name, node, ast.unparse(node.func)))
    return out


def test_records_are_made_in_one_place_and_logs_name_no_position() -> None:
    """Structure, so a later change cannot slip a position into the payload or the journal:
    counting.py makes Records only in interval_records, from an Interval (whose fields are
    counts, means and flags), and its log calls at INFO and above take no target, track or
    coordinate."""
    calls = _calls(ROOT / "agent" / "features" / "counting.py")
    makers = {fn for fn, _, what in calls if what == "Record"}
    assert makers == {"interval_records"}
    from dataclasses import fields

    assert [f.name for f in fields(Interval)] == ["crossings_in", "crossings_out", "people",
                                                  "presence", "flags"]
    suspicious = re.compile(r"\b(x|y|x_mm|y_mm|x_m|y_m|targets|target|tracks|speed\w*|"
                            r"_tracks|samples?|batch|s)\b")
    for fn, call, what in calls:
        if what in ("log.info", "log.warning", "log.error", "log.exception"):
            for arg in call.args[1:]:
                assert not suspicious.search(ast.unparse(arg)), (fn, ast.unparse(call))


def test_the_sample_type_carries_positions_the_counts_do_not() -> None:
    """What the feature takes in has positions (so the checks above are not vacuous)."""
    sample = RadarSample(1.0, (Target(0, -782, 1713, -16, 320),))
    assert {"1713", "-782"} <= coordinates([sample])
