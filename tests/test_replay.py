"""Every ``citynode detect`` command under hostile input: bounded time and memory, one error
line with FILE:LINE, documented exit codes, ``-`` for stdin (issue 14, items 6, 7 and 10)."""

from __future__ import annotations

import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.detectors.activity import ActivityDetector
from agent.detectors.fall import FallDetector
from agent.features.household import activity_kwargs
from agent.tools.replay import common, fall, fire, inactivity
from agent.tools.replay.common import MAX_LINE, MAX_NAMES

ROOT = Path(__file__).resolve().parents[1]
EXIT_CODES = {0, 64, 65, 66}          # docs/{parking,inactivity,fall,fire}.md
T0 = 1_704_067_200.0                  # 2024-01-01T00:00:00Z, a Monday
HEADERS = {"occupancy": "t,bay,distance_mm", "inactivity": "t,plug,watts",
           "fall": "t,ax,ay,az", "fire": "t,temperature_c,eco2_ppm"}
GOOD_ROW = {"occupancy": "{t},A1,2500", "inactivity": "{t},kettle,5",
            "fall": "{t},0,-1,0", "fire": "{t},21,400"}
COMMANDS = tuple(HEADERS)


def run(command: str, path: str, **kw) -> tuple[int, str, str]:
    """The command's run_cli in-process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    if command == "occupancy":
        code = common.run_cli(path, kw.pop("baselines", {}), out, err, **kw)
    elif command == "inactivity":
        code = inactivity.run_cli(path, out, err, **kw)
    elif command == "fall":
        code = fall.run_cli(path, out, err, **kw)
    else:
        code = fire.run_cli(path, out, err, **kw)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str, name: str = "in.csv") -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def good_file(command: str, n: int, t0: float = 0.0, dt: float = 0.02) -> str:
    rows = [GOOD_ROW[command].format(t=f"{t0 + i * dt:.2f}") for i in range(n)]
    return HEADERS[command] + "\n" + "\n".join(rows) + "\n"


def one_error_line(err: str, where: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and where in lines[0], err
    assert "Traceback" not in err


# -- item 6: hangs -------------------------------------------------------------------------

def test_inactivity_huge_time_is_refused_at_once(tmp_path: Path) -> None:
    """`1e300,kettle,5` used to hang: the hourly tick loop could not advance such a float."""
    path = write(tmp_path, "t,plug,watts\n1e300,kettle,5\n")
    started = time.monotonic()
    code, out, err = run("inactivity", path)
    assert code == 65 and out == ""
    one_error_line(err, f"{path}:2:")
    assert "out of range" in err and time.monotonic() - started < 5


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("bad", ["1e300", "-5", "1e10", "3.2e8", "nan", "-inf", "inf",
                                 "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z"])
def test_times_out_of_range_are_refused_with_file_and_line(tmp_path: Path, command: str,
                                                           bad: str) -> None:
    text = good_file(command, 3) + GOOD_ROW[command].format(t=bad) + "\n"
    path = write(tmp_path, text)
    code, out, err = run(command, path)
    assert code == 65 and out == ""
    one_error_line(err, f"{path}:5:")


@pytest.mark.parametrize("command", COMMANDS)
def test_one_clock_per_file(tmp_path: Path, command: str) -> None:
    """Seconds since a start, then Unix time: a gap of decades, refused by name."""
    text = good_file(command, 3) + GOOD_ROW[command].format(t=f"{T0:.0f}") + "\n"
    path = write(tmp_path, text)
    code, _out, err = run(command, path)
    assert code == 65
    one_error_line(err, f"{path}:5:")
    assert "one clock per file" in err


def test_inactivity_long_gap_costs_no_work(tmp_path: Path) -> None:
    """t=1 then almost ten years later: a few ticks, not one a minute (it ran for minutes)."""
    rows = ["1,kettle,2000", "10,kettle,2000", "200,kettle,0", "300,kettle,0",
            "3e8,kettle,2000", "3.00000010e8,kettle,2000"]
    path = write(tmp_path, "t,plug,watts\n" + "\n".join(rows) + "\n")
    calls = []
    real = ActivityDetector.tick

    def counting(self: ActivityDetector, t: float):
        calls.append(t)
        return real(self, t)

    with mock.patch.object(ActivityDetector, "tick", counting):
        code, out, err = run("inactivity", path)
    assert code == 0, err
    events = [json.loads(x) for x in out.splitlines()]
    assert [e["event"] for e in events] == ["inactivity_alarm", "activity_resumed"]
    assert len(calls) < 200


def test_detector_jumps_over_idle_hours_like_hour_by_hour() -> None:
    """One tick across a year equals ticking every hour (state included): no hourly loop."""
    def household() -> ActivityDetector:
        det = ActivityDetector(["kettle"])
        for k in range(30):
            det.update(T0 + 8 * 3600 + 5 * k, "kettle", 2000 if k < 20 else 0)
        return det

    a, b = household(), household()
    end = T0 + 365 * 86400 + 1234.5
    events_a, events_b = [], []
    t = a.now
    while t < end:
        t = min(end, t + 3600.0)
        events_a += a.tick(t)
        if not events_b:                      # b: hour by hour until the alarm, ...
            events_b += b.tick(t)
    assert len(events_a) == 1
    started = time.monotonic()
    events_b += b.tick(end)                   # ... then one jump over the months after it
    assert time.monotonic() - started < 0.5
    assert [e.to_dict() for e in events_a] == [e.to_dict() for e in events_b]
    assert a.to_dict() == b.to_dict()
    fresh = ActivityDetector(["kettle"])                      # no activity yet: idle hours
    fresh.tick(T0)
    started = time.monotonic()
    assert fresh.tick(T0 + 3e8) == [] and time.monotonic() - started < 0.5


def naive_inactivity(rows: list[inactivity.PlugRow], tick_s: float = 60.0,
                     **kw) -> list[dict]:
    """The replay as it was: a tick every minute of the data's clock."""
    det = ActivityDetector(sorted({r.plug for r in rows}), **kw)
    out: list[dict] = []
    next_tick: float | None = None
    for r in rows:
        if next_tick is None:
            next_tick = math.floor(r.t / tick_s) * tick_s + tick_s
        while next_tick < r.t:
            out += [e.to_dict() for e in det.tick(next_tick)]
            next_tick += tick_s
        out += [e.to_dict() for e in det.update(r.t, r.plug, r.watts)]
    return out


@pytest.mark.parametrize("seed", range(6))
def test_inactivity_skipping_ticks_changes_no_event(seed: int) -> None:
    """Folding the ticks that cannot raise anything gives the same events as every minute."""
    rng = random.Random(seed)
    rows: list[inactivity.PlugRow] = []
    t = T0 + rng.uniform(0, 86400)
    for n in range(300):
        plug = rng.choice(["kettle", "tv", "fridge"])
        rows.append(inactivity.PlugRow(n + 2, t, plug, rng.choice([0.0, 3.0, 90.0, 2000.0])))
        t += rng.choice([5.0, 30.0, 61.0, 600.0, 3599.0, 3 * 3600.0, 13 * 3600.0, 2 * 86400.0,
                         rng.uniform(0, 20 * 3600)])
    def kw() -> dict:   # a fresh routine for each run: the detector learns into it
        return ({"unattended": ["fridge"], **activity_kwargs(utc_offset_s=9 * 3600.0)}
                if seed % 2 else {})

    fast = list(inactivity.replay_inactivity(iter(rows), plugs={"kettle", "tv", "fridge"},
                                             **kw()))
    assert fast == naive_inactivity(rows, **kw())
    assert {e["event"] for e in fast} >= {"inactivity_alarm", "activity_resumed"}


def test_fall_blocks_change_no_event() -> None:
    """Fed in blocks of any size, the detector finds the same falls as in one block."""
    rng = random.Random(1)
    samples = []
    t = 0.0
    for i in range(1500):                     # 15 s at 100 Hz: stand, fall, lie
        s = i / 100.0
        if s < 5:
            a = (rng.gauss(0, 0.1), -1 + rng.gauss(0, 0.1), rng.gauss(0, 0.1))
        elif s < 5.12:
            a = (2.0, -4.5, 1.0)
        else:
            a = (1.0 + rng.gauss(0, 0.01), rng.gauss(0, 0.01), rng.gauss(0, 0.01))
        samples.append((i + 2, t, *a))
        t += 0.01 if i != 900 else 0.7       # and a hole that restarts the detector
    whole = list(fall.replay_fall(samples, FallDetector(None), chunk=10**6))
    assert whole and whole[0]["basis"] == "rules"
    for chunk in (1, 7, 100, 4096):
        assert list(fall.replay_fall(samples, FallDetector(None), chunk=chunk)) == whole


# -- item 7: memory ------------------------------------------------------------------------

# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork and exec, so a child of a large
# pytest process would report the parent's size; the high-water mark starts afresh at exec.
CHILD = """
import sys
from agent.tools.cli import main
code = main(sys.argv[1:])
sys.stdout.flush()
hwm = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(code, hwm, file=sys.stderr)
"""


def peak_rss_kib(args: list[str], stdin: str | None = None) -> tuple[int, int, str]:
    """Run ``citynode ARGS`` in a child; (exit code, its peak RSS in KiB, stderr)."""
    p = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, input=stdin,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    code, rss = p.stderr.splitlines()[-1].split()
    return int(code), int(rss), p.stderr


LARGE = {"fall": 250_000, "occupancy": 250_000, "inactivity": 250_000,
         "fire": 50_000}   # the fire detector costs 80 us a row: its memory is flat already


def big_file(command: str, path: Path, n: int) -> None:
    """n valid rows, written fast."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(HEADERS[command] + "\n")
        if command == "fall":               # 50 Hz
            for i in range(n):
                f.write(f"{i / 50:.2f},0.01,-1,0.02\n")
        elif command == "occupancy":        # eight bays at 1 Hz, given baselines
            for i in range(n):
                f.write(f"{T0 + i // 8},B{i % 8},{2500 - (i % 3)}\n")
        elif command == "inactivity":       # three plugs every 10 s
            for i in range(n):
                f.write(f"{T0 + 10 * i},p{i % 3},{(i // 40) % 2 * 1500}\n")
        else:                               # 1 Hz
            for i in range(n):
                f.write(f"{T0 + i},{21 + (i % 7) / 10},{400 + i % 11}\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_memory_does_not_grow_with_the_input(tmp_path: Path, command: str) -> None:
    """`detect fall` on 8 h at 50 Hz took 589 MB: every replay streams its input now."""
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    big_file(command, small, 2_000)
    big_file(command, large, LARGE[command])
    extra = {"occupancy": [x for i in range(8) for x in ("--baseline", f"B{i}=2500")],
             "inactivity": ["--utc-offset", "0"]}.get(command, [])
    code_s, rss_s, err_s = peak_rss_kib(["detect", command, "--input", str(small), *extra])
    code_l, rss_l, err_l = peak_rss_kib(["detect", command, "--input", str(large), *extra])
    assert code_s == 0 and code_l == 0, err_s + err_l
    assert rss_l < 100 * 1024
    assert rss_l - rss_s < 8 * 1024, (rss_s, rss_l)


def test_memory_from_stdin_does_not_grow_either(tmp_path: Path) -> None:
    large = tmp_path / "large.csv"
    big_file("fall", large, 250_000)
    code, rss, err = peak_rss_kib(["detect", "fall", "--input", "-"],
                                  stdin=large.read_text(encoding="utf-8"))
    assert code == 0, err
    assert rss < 100 * 1024


@pytest.mark.parametrize("command", COMMANDS)
def test_a_line_without_end_is_refused_early(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, HEADERS[command] + "\n" + "9" * (MAX_LINE + 10))
    code, out, err = run(command, path)
    assert code == 65 and out == ""
    one_error_line(err, f"{path}:2:")


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unclosed_quote_is_refused_early(tmp_path: Path, command: str) -> None:
    path = write(tmp_path, HEADERS[command] + '\n"' + "x,\n" * 400_000)
    code, _out, err = run(command, path)
    assert code == 65
    one_error_line(err, f"{path}:")


def test_names_are_bounded(tmp_path: Path) -> None:
    rows = "".join(f"{i},bay{i},2500\n" for i in range(MAX_NAMES + 1))
    path = write(tmp_path, "t,bay,distance_mm\n" + rows)
    code, _out, err = run("occupancy", path)
    assert code == 65
    one_error_line(err, f"{path}:{MAX_NAMES + 2}:")
    path = write(tmp_path, "t,plug,watts\n1," + "p" * 500 + ",5\n")
    code, _out, err = run("inactivity", path)
    assert code == 65 and "longer than" in err


def test_occupancy_first_minute_buffer_is_bounded(tmp_path: Path) -> None:
    """A bay without --baseline holds its first minute: a million rows at one t cannot."""
    path = write(tmp_path, "t,bay,distance_mm\n" + "5,A1,2500\n" * (common.MAX_AUTO_BUFFER + 1))
    code, _out, err = run("occupancy", path)
    assert code == 65 and "--baseline" in err
    code, _out, err = run("occupancy", path, baselines={"A1": 2500.0})
    assert code == 0, err


def test_fire_readings_per_second_are_bounded(tmp_path: Path) -> None:
    rows = "".join(f"{100 + i / 20:.2f},21,\n" for i in range(40))
    path = write(tmp_path, "t,temperature_c,pm2_5\n" + rows)
    code, _out, err = run("fire", path)
    assert code == 65 and "temperature_c readings within one second" in err
    one_error_line(err, f"{path}:{fire.MAX_PER_SECOND + 2}:")


# -- item 10: one grammar ------------------------------------------------------------------

def cli_subprocess(args: list[str], stdin: str | None = None,
                   timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.tools.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, input=stdin, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def example(command: str) -> str:
    """A file on which each detector says something."""
    if command == "occupancy":
        rows = [f"{i},A1,{2500 if i < 60 else 600}" for i in range(120)]
    elif command == "inactivity":
        rows = [f"{T0 + 8 * 3600 + 5 * k:.0f},kettle,{2000 if k < 20 else 0}"
                for k in range(30)] + [f"{T0 + 2 * 86400:.0f},kettle,0"]
    elif command == "fall":
        rows = [f"{i / 50:.2f},0,-1,0" for i in range(200)]
        rows += [f"{4 + i / 50:.2f},2,-4.5,1" for i in range(6)]
        rows += [f"{4.12 + i / 50:.2f},1,0,0" for i in range(300)]
    else:
        rows = [f"{i},{21 if i < 100 else 70},400" for i in range(200)]
    return HEADERS[command] + "\n" + "\n".join(rows) + "\n"


@pytest.mark.parametrize("command", COMMANDS)
def test_dash_means_stdin_and_gives_the_same_output(tmp_path: Path, command: str) -> None:
    text = example(command)
    path = write(tmp_path, text)
    from_file = cli_subprocess(["detect", command, "--input", path])
    from_stdin = cli_subprocess(["detect", command, "--input", "-"], stdin=text)
    assert from_file.returncode == 0 and from_stdin.returncode == 0, from_stdin.stderr
    assert from_file.stdout == from_stdin.stdout
    assert from_file.stdout or command == "fall"
    bad = cli_subprocess(["detect", command, "--input", "-"],
                         stdin=text + GOOD_ROW[command].format(t="x") + "\n")
    assert bad.returncode == 65 and bad.stdout == ""
    one_error_line(bad.stderr, f"<stdin>:{len(text.splitlines()) + 1}:")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("row", ["{t}", "{t},zz,zz,zz", "{t},1e400,-1e400,nan"])
def test_a_malformed_row_is_one_line_and_65(tmp_path: Path, command: str, row: str) -> None:
    path = write(tmp_path, good_file(command, 4) + row.format(t="0.5") + "\n")
    code, out, err = run(command, path)
    assert code == 65 and out == ""
    one_error_line(err, f"{path}:6:")


def test_a_missing_or_wrong_fall_model_is_one_error_line(tmp_path: Path) -> None:
    """`detect fire --model /missing.tflite` warned twice, naming the .json, and exited 0;
    `detect fall --model` is held to the same: one line naming the .tflite."""
    command = "fall"
    path = write(tmp_path, example(command))
    model = str(tmp_path / "missing.tflite")
    code, out, err = run(command, path, model=model)
    assert code == 66 and out == ""
    one_error_line(err, "missing.tflite")
    assert ".json" not in err
    shipped = ROOT / "agent/models/fall.tflite"
    (tmp_path / "nometa.tflite").write_bytes(shipped.read_bytes())
    code, _out, err = run(command, path, model=str(tmp_path / "nometa.tflite"))
    assert code == 65
    one_error_line(err, "nometa.tflite")
    # a model made for another task (its metadata says so)
    (tmp_path / "other.tflite").write_bytes(shipped.read_bytes())
    meta = json.loads(shipped.with_suffix(".json").read_text())
    (tmp_path / "other.json").write_text(json.dumps({**meta, "task": "fire", "name": "fire"}))
    code, _out, err = run(command, path, model=str(tmp_path / "other.tflite"))
    assert code == 65
    one_error_line(err, "other.tflite")
    code, out, err = run(command, path, model=str(shipped))
    assert code == 0 and err == "", err


def test_detect_fire_model_is_refused_with_one_usage_line(tmp_path: Path) -> None:
    """The fire detector has had no model since 2026.12: --model (hidden from --help) is
    answered with one line and exit 64, whatever it names, before the input is read."""
    path = write(tmp_path, example("fire"))
    for model, data in [("/nowhere.tflite", path), (str(ROOT / "agent/models/fall.tflite"),
                                                    str(tmp_path / "missing.csv"))]:
        p = cli_subprocess(["detect", "fire", "--input", data, "--model", model])
        assert p.returncode == 64 and p.stdout == ""
        assert p.stderr == ("error: detect fire: --model: the fire detector has no model "
                            "since 2026.12 (docs/fire.md)\n")
    p = cli_subprocess(["detect", "fire", "--help"])
    assert p.returncode == 0 and "--model" not in p.stdout and "--threshold-scale" in p.stdout


@pytest.mark.parametrize("value", ["0", "0.2", "4.01", "nan", "inf", "-1", "x", ""])
def test_detect_fire_threshold_scale_out_of_range_is_a_usage_error(tmp_path: Path,
                                                                    value: str) -> None:
    path = write(tmp_path, example("fire"))
    p = cli_subprocess(["detect", "fire", "--input", path, "--threshold-scale", value])
    assert p.returncode == 64 and p.stdout == "" and len(p.stderr.splitlines()) == 1, p.stderr
    assert "--threshold-scale" in p.stderr and "Traceback" not in p.stderr
    code, out, err = run("fire", path, threshold_scale=float(value) if value not in
                         ("x", "") else value)
    assert code == 64 and out == ""
    one_error_line(err, "--threshold-scale")


def test_occupancy_baseline_for_an_unknown_bay_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, example("occupancy"))
    code, out, err = run("occupancy", path, baselines={"nobay": 1500.0})
    assert code == 64 and out == ""
    one_error_line(err, "nobay")
    assert "A1" in err                           # the bays it knows
    p = cli_subprocess(["detect", "occupancy", "--input", path, "--baseline", "nobay=1500"])
    assert p.returncode == 64 and "A1" in p.stderr


def test_inactivity_unattended_unknown_plug_is_a_usage_error(tmp_path: Path) -> None:
    path = write(tmp_path, example("inactivity"))
    code, out, err = run("inactivity", path, unattended=["fridgee"])
    assert code == 64 and out == ""
    one_error_line(err, "fridgee")
    assert "kettle" in err


@pytest.mark.parametrize("column, value", [
    ("temperature_c", "1e6"), ("temperature_c", "293.15e3"), ("temperature_c", "-100"),
    ("humidity_pct", "101"), ("humidity_pct", "-1"), ("eco2_ppm", "-400"),
    ("eco2_ppm", "2e5"), ("tvoc_ppb", "1e6"), ("pressure_hpa", "101325"),
    ("pressure_hpa", "93.9"), ("pm2_5", "-1"), ("pm1_0", "1e5"), ("pm10", "inf"),
    ("nc0_5", "1e9"), ("nc1_0", "-3"), ("nc2_5", "nan"),
])
def test_fire_checks_each_column_range(tmp_path: Path, column: str, value: str) -> None:
    """`detect fire` accepted 1e6 °C; like `detect fall`, each column has a plausible range."""
    lo, hi = fire.RANGES[column]
    ok = (lo + hi) / 2
    path = write(tmp_path, f"t,{column}\n0,{ok}\n1,{value}\n")
    code, out, err = run("fire", path)
    assert code == 65 and out == ""
    one_error_line(err, f"{path}:3: {column}")


# -- the property: any file, any command ------------------------------------------------------

def times() -> st.SearchStrategy[str]:
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.integers(-10**12, 10**12).map(str),
        st.sampled_from(["1e300", "-1e300", "nan", "inf", "1e10", "0", "3.2e8", "x", "",
                         "2024-01-01T00:00:00Z", "2024-13-01", "1_0"]),
        st.floats(0, 1e6).map(lambda v: f"{v:.3f}"),
        st.floats(T0, T0 + 1e8).map(lambda v: f"{v:.1f}"),
    )


def cells() -> st.SearchStrategy[str]:
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr),
                     st.integers(-10**6, 10**6).map(str),
                     st.sampled_from(["", "A1", "kettle", "x", "1e999", '"q"', " 5 "]),
                     st.text(max_size=8))


def valid_values(command: str) -> st.SearchStrategy[str]:
    """The cells after ``t`` of a valid row."""
    if command == "occupancy":
        return st.tuples(st.sampled_from(["A1", "B2"]),
                         st.one_of(st.just(""), st.floats(0, 5000))).map(
            lambda v: f"{v[0]},{v[1]}")
    if command == "inactivity":
        return st.tuples(st.sampled_from(["kettle", "tv"]), st.floats(0, 3000)).map(
            lambda v: f"{v[0]},{v[1]}")
    if command == "fall":
        g = st.floats(-8, 8)
        return st.tuples(g, g, g).map(lambda v: ",".join(map(repr, v)))
    return st.tuples(st.floats(10, 80), st.one_of(st.just(""), st.floats(400, 9000))).map(
        lambda v: f"{v[0]},{v[1]}")


BAD_TIMES = ["1e300", "-1e300", "-1", "nan", "inf", "-inf", "1e10", "3.2e8", "1e18", "x",
             "", "1999-12-31T23:59:59Z", "2100-01-02T00:00:00Z"]
BAD_VALUES = {
    "occupancy": ["A1,-5", "A1,x", "A1,inf", "A1,nan", "A1,1e300", ",2500", "A1"],
    "inactivity": ["kettle,-3", "kettle,x", "kettle,1e300", "kettle,nan", ",5", "kettle"],
    "fall": ["65,0,0", "0,x,0", "0,0,inf", "0,-1e6,0", "0,0", "0,0,0,"[:-1] + ",,"],
    "fire": ["1e6,400", "21,-400", "-100,400", "21,2e5", "x,400", "21", "21,400,5", "nan,"],
}


@st.composite
def csv_files(draw: st.DrawFn, command: str) -> tuple[str, int | None]:
    """A CSV file and the line its first error must be reported on (0: none; None: any
    outcome)."""
    mode = draw(st.sampled_from(["valid", "bad", "bad", "random", "empty"]))
    if mode == "empty":
        return draw(st.sampled_from(["", "\n", "\ufeff", "t\n"])), None
    header = HEADERS[command]
    if mode == "random":
        if draw(st.booleans()):
            header = draw(st.sampled_from([header, header.upper(), "\ufeff" + header,
                                           ",".join(header.split(",")[:-1]), "junk",
                                           "t,pm2_5,nc0_5"]))
        lines = [header]
        for _ in range(draw(st.integers(0, 25))):
            what = draw(st.sampled_from(["junk", "short", "wild"]))
            if what == "junk":
                lines.append(draw(st.text(max_size=30)).replace("\r", "").replace("\n", ""))
            elif what == "short":
                lines.append(draw(times()))
            else:
                n = len(HEADERS[command].split(","))
                lines.append(",".join([draw(times())] + [draw(cells()) for _ in range(n - 1)]))
        return "\n".join(lines) + "\n", None
    # valid rows with gaps of any length the clock allows (a month, nine years) ...
    header = draw(st.sampled_from([header, header.upper(), "\ufeff" + header]))
    lines = [header]
    since_start = draw(st.booleans())
    t, top = (0.0, 3.0e8) if since_start else (T0, 4.0e9)
    steps = {"fall": [0.02], "fire": [1.0, 61.0]}.get(command, [0.0, 1.0, 61.0])
    for _ in range(draw(st.integers(1, 30))):
        step = draw(st.one_of(st.sampled_from(steps), st.floats(0.5, 3e7)))
        if command == "fall" and draw(st.integers(0, 9)):
            step = 0.02                        # mostly 50 Hz: the rate check passes
        if t + step >= top:
            step = steps[-1]
        t += step
        lines.append(f"{t!r},{draw(valid_values(command))}")
    if mode == "valid":
        return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"])), 0
    # ... then one bad row: it must be reported, with its line, and nothing printed
    if draw(st.booleans()):
        bad = f"{draw(st.sampled_from(BAD_TIMES))},{draw(valid_values(command))}"
    else:
        bad = f"{t!r},{draw(st.sampled_from(BAD_VALUES[command]))}"
    lines.append(bad)
    bad_line = len(lines)
    lines += [f"{t!r},{draw(valid_values(command))}" for _ in range(draw(st.integers(0, 3)))]
    return "\n".join(lines) + "\n", bad_line


class Deadline:
    """Raise in the test after ``seconds`` (a hang fails the test instead of stalling it)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def _expire(self, _sig: int, _frame: object) -> None:
        raise TimeoutError(f"still running after {self.seconds} s")

    def __enter__(self) -> Deadline:
        self._old = signal.signal(signal.SIGALRM, self._expire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *_exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._old)


@pytest.mark.parametrize("command", COMMANDS)
@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_file_gives_a_documented_exit_and_bounded_work(command: str,
                                                           data: st.DataObject) -> None:
    """Generated files (huge, negative, NaN and infinite times, gaps of years, missing
    columns, junk, empty): a documented exit code, one error line naming the bad line, no
    traceback, and ticks in proportion to the rows, not to the time they span."""
    text, bad_line = data.draw(csv_files(command))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "in.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        ticks = []
        real = ActivityDetector.tick

        def counting(self: ActivityDetector, t: float):
            ticks.append(t)
            if len(ticks) > 100 * rows:        # stop a runaway replay early
                raise AssertionError(f"{len(ticks)} ticks for {rows} rows")
            return real(self, t)

        rows = text.count("\n") + 1
        with mock.patch.object(ActivityDetector, "tick", counting), Deadline(30):
            code, out, err = run(command, path)
    assert code in EXIT_CODES
    assert "Traceback" not in err
    if code:
        one_error_line(err, "")
        assert out == ""
    if bad_line:
        assert code == 65, (text, out, err)
        one_error_line(err, f"{path}:{bad_line}:")
    elif bad_line == 0:
        assert code == 0 or (command == "fall" and code == 65), err


HOSTILE: list[tuple[str, Callable[[], str]]] = [
    ("inactivity", lambda: "t,plug,watts\n1e300,kettle,5\n"),
    ("inactivity", lambda: "t,plug,watts\n1,kettle,5\n1e10,kettle,5\n"),
    ("inactivity", lambda: "t,plug,watts\n1,kettle,2000\n300,kettle,0\n3.1e8,kettle,5\n"),
    ("occupancy", lambda: "t,bay,distance_mm\n1e300,A1,2500\n"),
    ("fall", lambda: "t,ax,ay,az\n0,0,-1,0\n1e300,0,-1,0\n"),
    ("fire", lambda: "t,temperature_c\n0,20\n3e8,1e6\n"),
]


@pytest.mark.parametrize("command, text", HOSTILE)
def test_hostile_files_in_a_subprocess(command: str, text: Callable[[], str]) -> None:
    """What hung or passed before, as a user runs it: one line, a documented code, in time."""
    p = cli_subprocess(["detect", command, "--input", "-"], stdin=text(), timeout=60)
    assert p.returncode in EXIT_CODES and "Traceback" not in p.stderr
    if p.returncode:
        assert len(p.stderr.splitlines()) == 1
