"""``citynode decode`` under hostile input: bounded reads, and no invented fields.

A payload is at most ``MAX_PAYLOAD`` bytes, so ``decode`` refuses a larger file by its size
without reading it, and stops reading standard input once it has seen more; valid JSON
that is not a SenML pack says "not SenML"; generic SenML without a base time or session
is shown without them (citynode's own packs always carry both, and encode as before).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import measured, run
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.wire.formats import PayloadError, decode
from agent.wire.model import MAX_PAYLOAD, Pack, Record, to_readable

ROOT = Path(__file__).resolve().parent.parent


# -- bounded reads ---------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["auto", "raw", "hex"])
def test_a_file_larger_than_any_payload_is_refused_by_its_size(tmp_path: Path, fmt: str) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as f:
        f.truncate(300 * 1024 * 1024)  # sparse: reading it would cost 300 MB
    rc, rss, _, err = measured(["decode", str(big), "--format", fmt], timeout=60)
    assert rc == 65 and rss < 100, (rc, rss, err)
    assert "larger than a payload can be" in err and "Traceback" not in err


@pytest.mark.parametrize("chunk", [b"\x00" * 65536, b"00 " * 21846])
def test_stdin_is_read_no_further_than_the_limit(chunk: bytes) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "agent.tools.cli", "decode", "-"], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None
    written = 0
    try:
        while written < 64 * 1024 * 1024:
            proc.stdin.write(chunk)
            proc.stdin.flush()
            written += len(chunk)
    except BrokenPipeError:
        pass
    with contextlib.suppress(BrokenPipeError):
        proc.stdin.close()
    assert proc.stderr is not None and proc.stdout is not None
    err = proc.stderr.read()
    proc.stdout.read()
    proc.wait(timeout=60)
    assert proc.returncode == 65, err
    assert b"larger than a payload can be" in err
    assert written < 8 * 1024 * 1024  # it stopped reading; 64 MiB were on offer


def test_hex_text_is_bounded_by_the_bytes_it_decodes_to(tmp_path: Path) -> None:
    path = tmp_path / "p.hex"
    path.write_text("00 " * (MAX_PAYLOAD + 1))
    rc, _, err = run(["decode", str(path)])
    assert rc == 65 and "larger than a payload can be" in err
    path.write_text("00 " * 10)
    rc, _, err = run(["decode", str(path)])
    assert rc == 65 and "larger" not in err  # read, decoded, and not SenML


def test_decode_reads_stdin_for_dash_and_refuses_file_with_hex(tmp_path: Path) -> None:
    payload = b'[{"bt":1763900000,"b":3,"q":7,"n":"pm25","v":12}]'
    rc, out, _ = run(["decode", "-", "--compact"], stdin=payload)
    assert rc == 0 and json.loads(out)["seq"] == 7
    rc, _, err = run(["decode", "-", "--hex", payload.hex()])
    assert rc == 64 and "not both" in err


def test_decode_of_a_missing_file_or_a_directory_is_no_input(tmp_path: Path) -> None:
    assert run(["decode", str(tmp_path / "none")])[0] == 66
    assert run(["decode", str(tmp_path)])[0] == 66


# -- not SenML ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text", ['{"a": 1}', "[1, 2]", '"pm25"', "null", "true", "3.5",
                                  '[{"foo": 1}]', "\t{}", '[{"n": "a", "v": 1, "vs": "x"}]'])
def test_valid_json_that_is_no_senml_pack_says_so(text: str) -> None:
    rc, out, err = run(["decode", "--format", "raw", "-"], stdin=text.encode())
    assert rc == 65 and out == ""
    assert "not SenML" in err and "CBOR" not in err, err


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(
                        st.text(max_size=3), kids, max_size=3), max_leaves=8))
def test_any_json_decodes_or_is_a_payload_error(value: object) -> None:
    try:
        pack = decode(json.dumps(value).encode())
    except PayloadError as exc:
        assert str(exc)
        return
    to_readable(pack)  # and what decodes can be shown


# -- generic SenML: nothing invented ---------------------------------------------------------
def test_generic_senml_has_no_invented_time_or_session() -> None:
    pack = decode(b'[{"n": "temp", "v": 21.5}]')
    assert to_readable(pack) == {"records": [{"n": "temp", "v": 21.5, "u": "Cel"}]}
    view = to_readable(decode(b'[{"bt": 1700000000, "n": "temp", "v": 21.5, "t": 5}]'))
    assert view["time"] == 1700000000 and "session" not in view
    assert view["records"][0]["t"] == 1700000005
    view = to_readable(decode(b'[{"b": 4, "n": "x", "vb": true}]'))
    assert "time" not in view and view["session"] == 4


def test_citynode_packs_keep_their_time_and_session_and_bytes() -> None:
    from agent.wire.formats import get

    pack = Pack(1763900000, 3, 1440, [Record("pm25", value=12.0)])
    for name in ("senml-cbor", "senml-json"):
        fmt = get(name)
        payload = fmt.encode(pack).payload
        back = fmt.decode(payload)
        assert back.missing == () and back == pack
        assert fmt.encode(back).payload == payload
        view = to_readable(back)
        assert (view["time"], view["session"], view["seq"]) == (1763900000, 3, 1440)
    # A pack of time 0 and session 0 that says so is shown with them.
    view = to_readable(decode(b'[{"bt": 0, "b": 0, "n": "x", "v": 1}]'))
    assert (view["time"], view["session"]) == (0, 0)
