"""One grammar for every ``citynode`` command (issue 14, item 10), ``run --once``, the
argument checks of ``simulate``, and the "FILE or -" reader every command shares.

The parser-level property here runs in-process (fast, hundreds of argument lists); what the
commands then do with hostile input is tests/test_cli_fuzz.py's.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.inputs import InputError, open_text_input, read_input, read_text
from agent.tools import cli
from agent.tools.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def _leaves(parser: argparse.ArgumentParser,
            path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    seen: set[int] = set()
    for name, sub in subs[0].choices.items():
        if id(sub) not in seen:
            seen.add(id(sub))
            yield from _leaves(sub, (*path, name))


COMMANDS = [" ".join(p) for p, _ in _leaves(build_parser())]
GROUPS = sorted({" ".join(c.split()[:i]) for c in COMMANDS for i in range(1, len(c.split()))})


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- usage errors: 64, one line, on every parser -------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS + GROUPS + [""])
def test_an_unknown_option_is_one_line_and_exit_64(command: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _cli(capsys, *command.split(), "--no-such-option")
    assert code == 64, err
    assert len(err.strip().splitlines()) == 1, err
    assert "--no-such-option" in err or "required" in err, err
    assert out == ""


@pytest.mark.parametrize("group", GROUPS)
def test_a_group_without_its_subcommand_is_exit_64(group: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, *group.split())
    assert code == 64
    assert len(err.strip().splitlines()) == 1 and "required" in err, err


@pytest.mark.parametrize("command", COMMANDS)
def test_help_exits_0_on_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, *command.split(), "--help")
    assert code == 0 and "usage: citynode" in out


def test_a_field_tool_option_error_reads_well(capsys: pytest.CaptureFixture[str]) -> None:
    """The field tools' own parsers (register()) follow the same grammar: no 'invalid
    _listen value', no argparse exit 2."""
    code, _, err = _cli(capsys, "doctor", "--listen-s", "abc")
    assert code == 64 and len(err.strip().splitlines()) == 1
    assert "_listen" not in err and "--listen-s" in err and "'abc'" in err, err


def test_any_type_function_fails_readably(capsys: pytest.CaptureFixture[str]) -> None:
    """A type function that lets Python's own ValueError out (``float(text)``) still reads
    as what was expected, whatever the function is called."""
    def _seconds(text: str) -> float:
        return float(text)

    parser = cli.CliParser(prog="citynode x")
    parser.add_argument("--s", type=_seconds)
    parser.add_argument("--n", type=int)
    parser.add_argument("--f", type=float)
    for argv, needle in ((["--s", "abc"], "expected a number, got 'abc'"),
                         (["--n", "1.5"], "expected a whole number, got '1.5'"),
                         (["--f", "nan"], "expected a finite number, got 'nan'"),
                         (["--s", "-inf"], "expected one argument")):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        err = capsys.readouterr().err
        assert e.value.code == 64 and needle in err and "_seconds" not in err, err
    assert parser.parse_args(["--s=-1.5"]).s == -1.5


@pytest.mark.parametrize(("argv", "needle"), [
    (["status", "--watch", "nan"], "finite"),
    (["status", "--watch", "inf"], "finite"),
    (["simulate", "--interval", "nan"], "finite"),
    (["simulate", "--sensors", "1.5"], "whole number"),
    (["calibrate", "bay1", "--seconds", "1e9"], "between 1 and 3600"),
    (["calibrate", "bay1", "--seconds", "-inf"], None),
    (["detect", "inactivity", "--input", "-", "--utc-offset", "abc"], "expected a number"),
])
def test_numbers_are_finite_and_in_range(argv: list[str], needle: str | None,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, *argv)
    assert code == 64, err
    assert needle is None or needle in err, err
    assert len(err.strip().splitlines()) == 1


def test_options_and_positionals_in_any_order() -> None:
    parser = build_parser()
    a = parser.parse_args(["frames", "pms5003", "cap.txt", "--format", "hex"])
    b = parser.parse_args(["frames", "pms5003", "--format", "hex", "cap.txt"])
    c = parser.parse_args(["frames", "--format", "hex", "pms5003", "cap.txt"])
    assert vars(a) == vars(b) == vars(c)
    assert (a.device, a.file, a.format) == ("pms5003", "cap.txt", "hex")
    d = parser.parse_args(["config", "check", "--no-devices", "c.toml"])
    e = parser.parse_args(["config", "check", "c.toml", "--no-devices"])
    assert vars(d) == vars(e)


def test_a_dash_is_a_file_argument() -> None:
    args = build_parser().parse_args(["decode", "-", "--compact"])
    assert args.file == "-"
    args = build_parser().parse_args(["detect", "fall", "--input", "-"])
    assert args.input == "-"


ARG_WORDS = st.one_of(
    st.sampled_from(["-", "--", "-x", "--no-such", "--help=x", "--config", "--input", "--hex",
                     "--format", "hex", "raw", "1", "-1", "nan", "inf", "1e309", "", "=",
                     "--wait", "--once", "--json", "--watch", "--listen-s", "--only",
                     "--seconds", "--interval", "--sensors", "--baseline", "a=1", "pms5003"]),
    st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
            max_size=12),
)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(command=st.sampled_from(COMMANDS), words=st.lists(ARG_WORDS, max_size=8))
def test_any_argument_list_parses_or_is_one_line_and_64(command: str, words: list[str]) -> None:
    """Property: whatever the words, parsing ends in a namespace, help (0), or one line on
    stderr and 64, never an exception or argparse's exit 2."""
    words = [w for w in words if w not in ("-h", "--help") and not w.startswith("--help")]
    err = io.StringIO()
    saved = sys.stderr, sys.stdout
    sys.stderr, sys.stdout = err, io.StringIO()
    try:
        build_parser().parse_args([*command.split(), *words])
    except SystemExit as exc:
        assert exc.code == 64, (command, words, exc.code, err.getvalue())
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1, (command, words, err.getvalue())
        assert "invalid _" not in lines[0] and "Traceback" not in lines[0]
    finally:
        sys.stderr, sys.stdout = saved


# -- the last resort: a bug is one line and 70 ----------------------------------------------------
def test_an_internal_error_is_one_line_and_70(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli, "cmd_version", broken)
    monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
    code, _, err = _cli(capsys, "version")
    assert code == 70
    assert len(err.strip().splitlines()) == 1 and "boom second line" in err, err
    assert "Traceback" not in err and cli.TRACEBACK_ENV in err
    monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
    code, _, err = _cli(capsys, "version")
    assert code == 70 and "Traceback (most recent call last)" in err


def test_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    """``citynode frames ... | head -c 10``: the reader goes away; no traceback, exit 0."""
    from drivers import catalogue
    from drivers.readme import example_capture

    capture = tmp_path / "capture.txt"
    capture.write_text(example_capture(catalogue.specs()["pms5003"]) * 3000)
    proc = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {sys.executable} -m agent frames pms5003 {capture} "
                       "| head -c 10 >/dev/null; echo ${PIPESTATUS[0]} >&2"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "0", proc.stderr


# -- FILE or -: agent.core.inputs --------------------------------------------------------------
def test_input_reads_a_file_or_stdin_within_a_limit(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"hello")
    assert read_input(f, limit=5) == b"hello"
    with pytest.raises(InputError) as e:
        read_input(f, limit=4)
    assert e.value.code == 65 and "larger than" in str(e.value)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"abc\xc3\xa9")))
    assert read_text("-", limit=10) == "abc\u00e9"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x" * 11)))
    with pytest.raises(InputError) as e:
        read_input("-", limit=10)
    assert e.value.code == 65 and str(e.value).startswith("<stdin>:")


def test_input_refuses_a_large_file_before_reading_it(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(64 << 30)  # 64 GiB of nothing: reading it would take minutes
    t0 = time.monotonic()
    with pytest.raises(InputError) as e:
        read_input(sparse, limit=1 << 20)
    assert time.monotonic() - t0 < 1 and e.value.code == 65


@pytest.mark.parametrize(("make", "code", "words"), [
    (lambda p: p.mkdir(), 66, "is a directory"),
    (lambda p: None, 66, "no such file"),
    (lambda p: (p.symlink_to(p.name + "2"), p.with_name(p.name + "2").symlink_to(p.name)),
     66, "cannot open"),
    (lambda p: p.write_bytes(b"\xff\xfe"), 65, "not UTF-8"),
])
def test_input_names_what_is_wrong(tmp_path: Path, make: Any, code: int, words: str) -> None:
    p = tmp_path / "x"
    make(p)
    with pytest.raises(InputError) as e:
        read_text(p, limit=100)
    assert e.value.code == code and words in str(e.value) and str(p) in str(e.value)


def test_input_from_an_endless_device_is_bounded() -> None:
    with pytest.raises(InputError) as e:
        read_input("/dev/zero", limit=1 << 16)
    assert e.value.code == 65


def test_input_from_a_fifo_without_writer_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    result: list[bytes] = []
    t = threading.Thread(target=lambda: result.append(read_input(fifo, limit=10)), daemon=True)
    t.start()
    t.join(5)
    assert result == [b""]


def test_input_without_any_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(InputError) as e:
        read_input("-", limit=10)
    assert e.value.code == 66 and "no standard input" in str(e.value)


def test_text_input_streams_lines(tmp_path: Path) -> None:
    p = tmp_path / "rows.csv"
    p.write_text("t,x\r\n1,2\n")
    with open_text_input(p, limit=100) as f:
        assert list(f) == ["t,x\r\n", "1,2\n"]


# -- simulate: options checked before anything starts --------------------------------------------
@pytest.mark.parametrize("argv", [
    ["--interval", "0"], ["--interval", "-1"], ["--interval", "0.5"], ["--interval", "86401"],
    ["--duration", "-1"], ["--duration", "1e9"], ["--speed", "0"], ["--speed", "-3"],
    ["--sensors", "0"], ["--sensors", "9"], ["--unplug-every", "2"], ["--unplug-every", "-1"],
    ["--broker", "localhost"], ["--broker", "127.0.0.1:0"], ["--broker", "h:99999"],
    ["--broker", "a b:1883"], ["--broker", "127.0.0.1:1883", "--no-broker"],
    ["--faults", "bogus=1"],
])
def test_simulate_refuses_bad_options_before_anything_starts(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        simulate_starts_nothing: None) -> None:
    work = tmp_path / "work"
    code, _, err = _cli(capsys, "simulate", "--workdir", str(work), *argv)
    assert code == 64, err
    assert len(err.strip().splitlines()) == 1, err
    assert not work.exists()


def test_simulate_refuses_a_workdir_that_is_not_its_own(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """It writes citynode.toml there: never over someone's configuration."""
    mine = tmp_path / "etc"
    mine.mkdir()
    (mine / "citynode.toml").write_text("precious")
    code, _, err = _cli(capsys, "simulate", "--workdir", str(mine), "--duration", "1")
    assert code == 73 and "not empty" in err
    assert (mine / "citynode.toml").read_text() == "precious"
    afile = tmp_path / "file"
    afile.write_text("x")
    code, _, err = _cli(capsys, "simulate", "--workdir", str(afile), "--duration", "1")
    assert code == 73 and "not a directory" in err


def test_simulate_says_how_to_see_its_status(tmp_path: Path) -> None:
    """The hint names a status file that ``citynode status --file`` reads."""
    work = tmp_path / "sim"
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "simulate", "--no-broker", "--duration", "4",
         "--interval", "2", "--workdir", str(work)],
        capture_output=True, text=True, cwd=ROOT, timeout=90, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    hint = next(line for line in proc.stderr.splitlines() if "citynode status" in line)
    path = hint.split("citynode status --file ", 1)[1].split()[0]
    assert Path(path) == work / "run" / "status.json" and Path(path).exists()
    status = subprocess.run([sys.executable, "-m", "agent", "status", "--file", path],
                            capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert status.returncode == 3 and "Traceback" not in status.stderr  # stopped by now
    # The same work directory may be used again: it is simulate's own.
    again = subprocess.run(
        [sys.executable, "-m", "agent", "simulate", "--no-broker", "--duration", "1",
         "--workdir", str(work)], capture_output=True, text=True, cwd=ROOT, timeout=90,
        stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr[-2000:]


# -- run --once ------------------------------------------------------------------------------
@pytest.fixture
def emulated_site(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A PMS5003 emulator on a pty, an SHT3x on the emulated I2C bus, and a pty with
    nothing behind it (a sensor that never answers)."""
    from agent.tools.simulate import write_config
    from drivers.emulation import SerialEmulator
    from drivers.pms5003.emulator import PMS5003Model, default_source

    emu = SerialEmulator(PMS5003Model(default_source(seed=3, speed=60), seed=3, interval_s=1.0,
                                      warmup_s=1.0), tmp_path / "pms0")
    emu.start()
    master, slave = os.openpty()
    write_config(tmp_path / "site.toml", node_id="once-1", state_dir=tmp_path / "state",
                 ports=[emu.path], interval=60, fmt="senml-cbor", broker=("127.0.0.1", 1),
                 warmup_s=1, read_interval_s=1,
                 sensors=[{"type": "sht3x", "name": "air", "bus": "emulator"}])
    write_config(tmp_path / "mute.toml", node_id="once-2", state_dir=tmp_path / "state",
                 ports=[emu.path], interval=60, fmt="senml-cbor", broker=None, warmup_s=1,
                 read_interval_s=1,
                 sensors=[{"type": "pms5003", "name": "mute", "port": os.ttyname(slave),
                           "prefix": "m.", "warmup_s": 0}])
    try:
        yield tmp_path, [emu.path]
    finally:
        emu.stop()
        os.close(master)
        os.close(slave)


def _once(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    return subprocess.run([sys.executable, "-m", "agent", "run", "--once", "--config",
                           str(config), *extra], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)


def test_run_once_prints_the_pack_and_exits_0(emulated_site: tuple[Path, list[str]]) -> None:
    work, _ = emulated_site
    t0 = time.monotonic()
    proc = _once(work / "site.toml", "--wait", "20")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 15, "it ends as soon as every sensor gave a reading"
    doc = json.loads(proc.stdout)
    names = {r["n"] for r in doc["records"]}
    assert {"pm25", "temp", "rh"} <= names, names
    assert doc["topic"] == "citynode/once-1/telemetry"
    assert "2 of 2 sensor(s) gave a reading" in proc.stderr
    # No broker (the configuration names one on port 1), no spool, no state written.
    assert not (work / "state").exists()
    assert "Traceback" not in proc.stderr


def test_run_once_exits_1_naming_a_silent_sensor(emulated_site: tuple[Path, list[str]]) -> None:
    work, _ = emulated_site
    proc = _once(work / "mute.toml", "--wait", "3")
    assert proc.returncode == 1, proc.stderr
    assert "mute: no reading within 3 s: the port opened but nothing came" in proc.stderr
    doc = json.loads(proc.stdout)
    records = {r["n"]: r.get("v") for r in doc["records"]}
    assert "pm25" in records and records["mute:q"] == 2  # STALE: what the platform would see


@pytest.mark.parametrize(("extra", "code", "needle"), [
    (["--wait", "0"], 64, "--wait"), (["--wait", "3601"], 64, "--wait"),
    (["--wait", "nan"], 64, "finite"),
])
def test_run_once_options(extra: list[str], code: int, needle: str, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[node]\nid = "n1"\nstate_dir = "{tmp_path}/state"\n')
    got, _, err = _cli(capsys, "run", "--once", "--config", str(cfg), *extra)
    assert got == code and needle in err, err


def test_wait_needs_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "run", "--config", str(tmp_path / "c.toml"), "--wait", "2")
    assert code == 64 and "--once" in err


def test_run_once_with_no_sensor_exits_1(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[node]\nid = "n1"\nstate_dir = "{tmp_path}/state"\n')
    code, out, err = _cli(capsys, "run", "--once", "--config", str(cfg))
    assert code == 1 and "no [[sensor]]" in err and out == ""


def test_run_once_with_a_bad_configuration_exits_78(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[node]\nid = "n1"\n[report]\ninterval_s = "60"\n')
    code, _, _ = _cli(capsys, "run", "--once", "--config", str(cfg))
    assert code == 78


def test_the_daemon_needs_a_file_but_once_reads_stdin(tmp_path: Path) -> None:
    text = f'[node]\nid = "n1"\nstate_dir = "{tmp_path}/state"\n'
    daemon = subprocess.run([sys.executable, "-m", "agent", "run", "--config", "-"],
                            input=text, capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert daemon.returncode == 64 and "--once" in daemon.stderr
    once = subprocess.run([sys.executable, "-m", "agent", "run", "--once", "--config", "-"],
                          input=text, capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert once.returncode == 1 and "no [[sensor]]" in once.stderr, once.stderr
