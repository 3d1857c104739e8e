"""``citynode detect crossings`` (agent/tools/replay/crossings.py): the daemon's counter over a
CSV of radar frames; one JSON line per crossing; bad input is one line and a documented
exit code; streamed, so memory does not grow with the input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import measured
from cli_run import run as cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.detectors.crossing import CrossingCounter, from_mm
from agent.tools.replay import crossings
from drivers.ld2450.codec import FrameDecoder, Report
from drivers.ld2450.emulator import Habits, stream
from drivers.ld2450.scenes import generate

ROOT = Path(__file__).resolve().parent.parent
HEADER = "t,target,x_mm,y_mm"


def run(path: str, **kw) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = crossings.run_cli(path, out, err, **kw)
    return code, out.getvalue(), err.getvalue()


def scene_frames(kind: str, seconds: float, seed: int) -> list[tuple[float, tuple]]:
    dec = FrameDecoder()
    out = []
    for t, raw in stream(generate(kind, seconds, seed), Habits(), seed=seed):
        out += [(t, ev.targets) for ev in dec.feed(raw) if isinstance(ev, Report)]
    return out


def csv_of(frames: list[tuple[float, tuple]]) -> str:
    rows = [HEADER] + [f"{t:.1f},{tg.slot},{tg.x_mm},{tg.y_mm}" for t, targets in frames
                       for tg in targets]
    return "\n".join(rows) + "\n"


def write(tmp_path: Path, text: str, name: str = "in.csv") -> str:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def one_error_line(err: str, where: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and where in lines[0], err
    assert "Traceback" not in err


# -- what it counts ----------------------------------------------------------------------------
def test_it_counts_what_the_daemons_counter_counts(tmp_path: Path) -> None:
    """Frames of an emulated street (all of them, empty ones too) through the detector, and
    the same frames as CSV (no rows for empty frames) through the command: the same
    crossings, one JSON line each and nothing else."""
    frames = [(round(t, 1), targets) for t, targets in scene_frames("mixed", 900.0, 12)]
    counter = CrossingCounter()
    expected = [{"t": round(c.t, 3), "direction": c.direction}
                for t, targets in frames for c in counter.update(t, from_mm(targets))]
    code, out, err = run(write(tmp_path, csv_of(frames)))
    assert code == 0 and err == ""
    got = [json.loads(line) for line in out.splitlines()]
    assert got == expected and len(got) > 30
    assert all(set(d) == {"t", "direction"} and d["direction"] in ("in", "out") for d in got)


def test_the_line_and_the_zone(tmp_path: Path) -> None:
    rows = [HEADER]
    for i in range(60):  # someone at y = 1 m walking from x = -3 to +3, then one at y = 4
        rows.append(f"{i / 10:.1f},0,{-3000 + 100 * i},1000")
    for i in range(60):
        rows.append(f"{10 + i / 10:.1f},1,{3000 - 100 * i},4000")
    path = write(tmp_path, "\n".join(rows) + "\n")
    assert [json.loads(x)["direction"] for x in run(path)[1].splitlines()] == ["in", "out"]
    assert [json.loads(x)["direction"] for x in
            run(path, zone_y_m=(2.0, 5.0))[1].splitlines()] == ["out"]
    assert run(path, line_x_m=3.5)[1] == ""
    code, out, err = cli(["detect", "crossings", "--input", path, "--line-x", "-1.5",
                          "--zone-y", "0:2"])
    assert code == 0 and err == ""
    got = [json.loads(x) for x in out.splitlines()]
    assert [d["direction"] for d in got] == ["in"] and got[0]["t"] == pytest.approx(1.5, abs=0.1)


def test_header_in_any_order_and_case_other_columns_iso_times(tmp_path: Path) -> None:
    rows = ["\ufeffY_MM,note,Target,T,x_mm"]
    for i in range(60):
        t = f"2026-03-01T08:00:{i / 10:04.1f}+09:00"
        rows.append(f"1500,x,2,{t},{-3000 + 100 * i}")
    code, out, err = run(write(tmp_path, "\n".join(rows) + "\n"))
    assert code == 0, err
    assert [json.loads(x)["direction"] for x in out.splitlines()] == ["in"]


def test_stdin_gives_the_same_output(tmp_path: Path) -> None:
    text = csv_of([(round(t, 1), tg) for t, tg in scene_frames("pairs", 300.0, 3)])
    path = write(tmp_path, text)
    proc = subprocess.run([sys.executable, "-m", "agent", "detect", "crossings", "--input",
                           "-"], input=text, capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout == run(path)[1] and proc.stdout


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("row, line, why", [
    ("x,0,100,1000", 3, "neither Unix seconds"),
    ("nan,0,100,1000", 3, "finite"),
    ("1e12,0,100,1000", 3, "out of range"),
    ("0.5,0,100,1000", 3, "earlier than the previous row"),
    ("1.0,3,100,1000", 3, "0, 1 or 2"),
    ("1.0,-1,100,1000", 3, "0, 1 or 2"),
    ("1.0,1.5,100,1000", 3, "0, 1 or 2"),
    ("1.0,,100,1000", 3, "0, 1 or 2"),
    ("1.0,0,100,1000", 3, "target 0 twice"),
    ("1.0,1,abc,1000", 3, "x_mm 'abc' is not a number"),
    ("1.0,1,inf,1000", 3, "x_mm 'inf' is out of range"),
    ("1.0,1,10001,1000", 3, "x_mm '10001' is out of range"),
    ("1.0,1,100,0", 3, "y_mm '0' is out of range: over 0"),
    ("1.0,1,100,-5", 3, "behind its antenna"),
    ("1.0,1,100,1e6", 3, "y_mm '1e6' is out of range"),
    ("1.0,1,100", 3, "field(s), expected at least 4"),
])
def test_a_bad_row_is_one_line_with_file_and_line_and_65(tmp_path: Path, row: str, line: int,
                                                         why: str) -> None:
    path = write(tmp_path, f"{HEADER}\n1.0,0,-500,1200\n{row}\n2.0,0,500,1200\n")
    code, out, err = run(path)
    assert code == 65 and out == ""
    one_error_line(err, f"{path}:{line}: ")
    assert why in err


@pytest.mark.parametrize("text, why", [("", "empty input"), ("t,x_mm,y_mm\n", "target"),
                                       ("\x00\xff", "header")])
def test_a_bad_header_is_65(tmp_path: Path, text: str, why: str) -> None:
    code, out, err = run(write(tmp_path, text))
    assert code == 65 and out == ""
    one_error_line(err, ":1: ")
    assert why in err


def test_an_empty_file_with_a_header_is_fine(tmp_path: Path) -> None:
    assert run(write(tmp_path, HEADER + "\n")) == (0, "", "")


def test_missing_input_is_66_and_usage_is_64(tmp_path: Path) -> None:
    code, out, err = run(str(tmp_path / "nothere.csv"))
    assert code == 66 and out == ""
    one_error_line(err, "nothere.csv")
    code, _, err = run(str(tmp_path))
    assert code == 66
    path = write(tmp_path, HEADER + "\n")
    for kw in ({"line_x_m": float("nan")}, {"line_x_m": 10.5}, {"zone_y_m": (3.0, 1.0)},
               {"zone_y_m": (-1.0, 2.0)}, {"zone_y_m": (1.0, float("inf"))}):
        code, out, err = run(path, **kw)
        assert code == 64 and out == ""
        one_error_line(err, "detect crossings: --")
    for argv in (["--line-x", "abc"], ["--line-x", "1e9"], ["--zone-y", "4:1"],
                 ["--zone-y", "1"], ["--zone-y", "a:b"], ["--zone-y=1:nan"]):
        code, out, err = cli(["detect", "crossings", "--input", path, *argv])
        assert code == 64 and out == "" and len(err.splitlines()) == 1, (argv, err)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(
    st.one_of(st.floats(-1, 30), st.sampled_from(["", "x", "1e400", "2026-01-01T00:00:00Z"])),
    st.one_of(st.integers(-1, 3), st.sampled_from(["", "a", "1.0"])),
    st.one_of(st.floats(-12000, 12000), st.sampled_from(["", "nan", "-0"])),
    st.one_of(st.floats(-100, 12000), st.sampled_from(["", "inf", "0"]))), max_size=60))
def test_any_rows_end_in_0_or_65_never_a_traceback(tmp_path_factory, rows) -> None:
    path = tmp_path_factory.mktemp("fz") / "in.csv"
    path.write_text(HEADER + "\n" + "".join(f"{a},{b},{c},{d}\n" for a, b, c, d in rows))
    code, out, err = run(str(path))
    assert code in (0, 65)
    if code == 0:
        assert err == ""
        assert all(set(json.loads(x)) == {"t", "direction"} for x in out.splitlines())
    else:
        assert out == "" and len(err.splitlines()) == 1


def test_memory_does_not_grow_with_the_input(tmp_path: Path) -> None:
    """Streamed twice (check, then replay): 30x the rows, about the same peak memory."""
    def big(path: Path, n: int) -> None:
        with open(path, "w") as f:
            f.write(HEADER + "\n")
            for i in range(n):
                f.write(f"{i / 10:.1f},0,{(i * 130) % 8000 - 4000},{1200 + i % 7}\n")

    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    big(small, 10_000)
    big(large, 300_000)
    code_s, rss_s, _, err_s = measured(["detect", "crossings", "--input", str(small)])
    code_l, rss_l, size_l, err_l = measured(["detect", "crossings", "--input", str(large)])
    assert code_s == 0 and code_l == 0, err_s + err_l
    assert size_l > 0 and rss_l - rss_s < 8, (rss_s, rss_l)
