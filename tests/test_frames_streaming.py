"""``citynode frames`` under hostile input: streamed, bounded, every byte accounted for.

A capture of any size costs the same memory (a subprocess's peak RSS on 50 MB stays under
100 MB); rejected spans beyond the first hundred are summed up in one ``omitted`` line and
no span prints more than 64 of its bytes; a capture that is empty or almost all rejected
exits 65; every byte (every I2C transfer) is in exactly one printed entry or the omitted
count, and the summary line agrees. Each codec's work grows linearly with its input.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from cli_run import measured, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.tools import captures
from agent.tools.cli import BYTES_SHOWN, REJECTED_SHOWN
from drivers import catalogue, registry
from drivers.i2ccapture import BadLine, parse_line
from drivers.pzem004t import codec as pzem
from drivers.readme import example_capture
from drivers.spec import CaptureCodec, FrameCodec

SPECS = {t: s for t, s in catalogue.specs().items() if s.frames is not None}
SERIAL = sorted(t for t, s in SPECS.items() if isinstance(s.frames(), FrameCodec))
I2C = sorted(t for t, s in SPECS.items() if isinstance(s.frames(), CaptureCodec))
MB = 1024 * 1024


def docs_of(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


# -- a subprocess on 50 MB: peak memory, exit code, no traceback ---------------------------
@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """50 MB of random bytes, the same much as hex text, 10 MB of random I2C capture lines."""
    d = tmp_path_factory.mktemp("big")
    rng = random.Random(14)
    raw, text, lines = d / "random.bin", d / "random.hex", d / "capture.txt"
    with raw.open("wb") as f:
        for _ in range(50):
            f.write(rng.randbytes(MB))
    with text.open("w") as f:
        for _ in range(17):
            h = rng.randbytes(MB).hex(" ")
            f.write("\n".join(h[i:i + 48] for i in range(0, len(h), 48)) + "\n")
    with lines.open("w") as f:
        size = 0
        while size < 10 * MB:
            addr = rng.choice([0x69, 0x44, 0x58, rng.randrange(128)])
            line = f"{addr:02x} {rng.choice('WR')} {rng.randbytes(rng.randrange(32)).hex(' ')}\n"
            if rng.random() < 0.01:
                line = rng.randbytes(40).hex() + "\n"  # not a transfer at all
            f.write(line)
            size += len(line)
    return {"raw": raw, "hex": text, "i2c": lines}


@pytest.mark.parametrize(("args", "stdin"), [
    (["frames", "pms5003", "{raw}"], None),
    (["frames", "cse7766", "-"], "raw"),
    (["frames", "a02yyuw", "{hex}"], None),
    (["frames", "sds011", "--format", "hex", "-"], "hex"),
    (["frames", "sps30", "{i2c}"], None),
], ids=["pms5003-raw", "cse7766-stdin", "a02yyuw-hex", "sds011-hex-stdin", "sps30-i2c"])
def test_a_huge_noisy_capture_streams_in_bounded_memory(big: dict[str, Path], args: list[str],
                                                        stdin: str | None) -> None:
    argv = [a.format(**{k: str(v) for k, v in big.items()}) for a in args]
    rc, rss, size, err = measured(argv, big[stdin] if stdin else None)
    assert rc == 65, err
    assert rss < 100, f"peak RSS {rss} MiB"
    assert size < 200_000  # the first hundred rejected spans, capped, and the omitted line
    assert "Traceback" not in err and "under 1 %" in err


def test_pzem004t_on_noise_is_linear_and_exits_65(big: dict[str, Path], tmp_path: Path) -> None:
    """The Modbus decoder tries every possible frame start: 4 MB must not take minutes, and
    the false frames random bytes contain (a CRC matches 1 in 65536) do not make it a pass."""
    part = tmp_path / "part.bin"
    with big["raw"].open("rb") as f:
        part.write_bytes(f.read(4 * MB))
    rc, rss, _, err = measured(["frames", "pzem004t", str(part)])
    assert rc == 65 and rss < 100 and "Traceback" not in err


# -- every device, random input, in-process: exit code and accounting -----------------------
SUMMARY = re.compile(r"^(\d+) bytes: (\d+) frames, (\d+) acks, (\d+) rejected spans \((\d+) "
                     r"bytes\)(.*)$", re.M)
I2C_SUMMARY = re.compile(r"^(\d+) transfers: (\d+) decoded, (\d+) rejected"
                         r"(?:; (\d+) lines? (?:is|are) not a transfer)?$", re.M)


def check_serial(device: str, data: bytes, rc: int, out: str, err: str) -> None:
    assert "Traceback" not in err
    assert rc in (0, 65, 66), err
    docs = docs_of(out)
    entries = [d for d in docs if d["type"] != "omitted"]
    omitted = [d for d in docs if d["type"] == "omitted"]
    pos = 0
    for d in entries:  # contiguous, in order, or interrupted only by what was omitted
        assert d["offset"] >= pos
        pos = d["offset"] + d["length"]
    rejected = [d for d in entries if d["type"] == "rejected"]
    assert len(rejected) <= REJECTED_SHOWN
    assert all(len(d.get("bytes", "")) <= 3 * BYTES_SHOWN for d in rejected)
    skipped = sum(d["bytes"] for d in omitted)
    assert sum(d["length"] for d in entries) + skipped == len(data)
    m = SUMMARY.search(err)
    assert m, err
    total, frames, acks, n_rejected, rejected_bytes = (int(x) for x in m.groups()[:5])
    assert total == len(data)
    assert frames == sum(d["type"] == "frame" for d in entries)
    assert acks == sum(d["type"] == "ack" for d in entries)
    assert n_rejected == len(rejected) + sum(d["spans"] for d in omitted)
    assert rejected_bytes == sum(d["length"] for d in rejected) + skipped
    good = total - rejected_bytes
    assert (rc == 65) == (good == 0 or good * 100 < total)


@pytest.mark.parametrize("device", SERIAL)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=600),
                      st.lists(st.sampled_from([b"\x42\x4d\x00\x1c", b"\xaa\xc0", b"\xab",
                                                b"\x55\x5a", b"\xff", b"R12", b"\r",
                                                b"\x01\x04\x14", b"\x01\x04\x00\x00"]),
                               max_size=80).map(b"".join)),
       how=st.sampled_from(["file", "hex", "stdin"]))
def test_serial_frames_account_for_every_byte(device: str, data: bytes, how: str) -> None:
    if how == "hex":
        rc, out, err = run(["frames", device, "--hex", data.hex(" ")])
    elif how == "stdin":
        rc, out, err = run(["frames", device, "-", "--format", "raw"], stdin=data)
    else:
        with contextlib.ExitStack() as stack:
            import tempfile

            path = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "capture.bin"
            path.write_bytes(data)
            rc, out, err = run(["frames", device, str(path), "--format", "raw"])
    check_serial(device, data, rc, out, err)


def test_more_rejected_spans_than_are_shown_end_in_one_omitted_line() -> None:
    data = b"\x42\x4d\x00\x00" * 300  # 300 bad length fields, then nothing valid
    rc, out, err = run(["frames", "pms5003", "--hex", data.hex()])
    docs = docs_of(out)
    assert rc == 65
    assert len(docs) == REJECTED_SHOWN + 1 and docs[-1]["type"] == "omitted"
    assert docs[-1]["spans"] == 300 - REJECTED_SHOWN
    check_serial("pms5003", data, rc, out, err)


def test_a_huge_span_shows_only_its_first_bytes() -> None:
    rc, out, _ = run(["frames", "pms5003", "--hex", "00" * 5000])
    (doc,) = docs_of(out)
    assert rc == 65 and doc["length"] == 5000
    assert doc["bytes"] == " ".join(["00"] * BYTES_SHOWN) and doc["bytes_shown"] == BYTES_SHOWN


def _frame_of(device: str) -> bytes:
    """The first good frame of the device's README capture."""
    data = bytes.fromhex(re.sub(r"0x|[\s:,]", "", example_capture(SPECS[device])))
    for doc in registry.decode_stream(SPECS[device].frames(), [data]):
        if doc["type"] != "rejected":
            return data[doc["offset"]:doc["offset"] + doc["length"]]
    raise AssertionError(f"no frame in the {device} README capture")


@pytest.mark.parametrize("device", SERIAL)
def test_almost_all_noise_exits_65_and_mostly_frames_exits_0(device: str) -> None:
    frame = _frame_of(device)
    noise = bytes(200 * len(frame))  # zeros: no device's frame start
    rc, _, err = run(["frames", device, "--hex", (noise + frame).hex()])
    assert rc == 65 and "under 1 %" in err  # one frame in 200 frames' worth of zeros
    rc, _, err = run(["frames", device, "--hex", (frame * 20 + b"\x00").hex()])
    assert rc == 0, err


@pytest.mark.parametrize("device", ["pms5003", "bme280"])
def test_an_empty_capture_exits_65(device: str, tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    rc, _, err = run(["frames", device, str(path)])
    assert rc == 65 and "empty capture" in err


# -- I2C captures: every transfer accounted for ---------------------------------------------
def check_i2c(lines: list[str], rc: int, out: str, err: str) -> None:
    assert "Traceback" not in err
    assert rc in (0, 65, 66), err
    transfers = bad = 0
    for line in lines:
        try:
            transfers += parse_line(line) is not None
        except ValueError:
            bad += 1
    m = I2C_SUMMARY.search(err)
    assert m, err
    total, decoded, rejected = (int(x) for x in m.groups()[:3])
    assert total == transfers and decoded + rejected == total
    assert int(m.group(4) or 0) == bad
    docs = docs_of(out)
    shown = [d for d in docs if d.get("type") == "rejected"]
    omitted = sum(d["entries"] for d in docs if d.get("type") == "omitted")
    assert len(shown) <= REJECTED_SHOWN
    assert len([d for d in shown if "line" in d]) <= bad
    if bad and not omitted:
        assert len([d for d in shown if "line" in d]) == bad
    if rejected and not omitted:  # each rejected transfer is in a rejected entry
        assert shown
    assert (rc == 65) == (decoded == 0 or decoded * 100 < total + bad)


LINE = st.one_of(
    st.builds(lambda a, k, d: f"{a:02x} {k} {d.hex(' ') if d is not None else 'NACK'}",
              st.integers(0, 0x7F), st.sampled_from(["W", "R", "w", "r"]),
              st.one_of(st.none(), st.binary(max_size=40))),
    st.text(max_size=30),
    st.sampled_from(["# a comment", "", "76 W d0 # pointer", "zz W 00", "1ff W 00", "76 X 00",
                     "76 R 0"]),
)


@pytest.mark.parametrize("device", I2C)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINE, max_size=40), data=st.data())
def test_i2c_frames_account_for_every_transfer(device: str, lines: list[str],
                                               data: st.DataObject) -> None:
    own = SPECS[device].frames().addresses
    extra = data.draw(st.lists(st.builds(
        lambda a, k, d: f"{a:02x} {k} {d.hex(' ')}", st.sampled_from(own[:2]),
        st.sampled_from("WR"), st.binary(max_size=12)), max_size=20))
    lines = [x.replace("\n", " ").replace("\r", " ").replace(";", " ") for x in lines + extra]
    data.draw(st.randoms()).shuffle(lines)
    rc, out, err = run(["frames", device, "-"], stdin="\n".join(lines).encode())
    check_i2c(lines, rc, out, err)


def test_each_transfer_is_counted_once_and_pointer_writes_with_their_reads() -> None:
    rc, out, err = run(["frames", "bme280", "--hex", "76 W D0;76 R 60"])
    assert rc == 0 and "2 transfers: 2 decoded, 0 rejected" in err
    # A register address that is never read is not silently dropped.
    rc, out, err = run(["frames", "bme280", "--hex", "76 W D0;76 R 60;76 W F7"])
    assert "3 transfers: 2 decoded, 1 rejected" in err
    last = docs_of(out)[-1]
    assert last["type"] == "rejected" and last["addr"] == "0x76" and last["transfers"] == 1
    # Transfers to other chips are counted by the decoder's summary line.
    rc, out, err = run(["frames", "bme280", "--hex", "76 W D0;44 W 24 00;76 R 60;44 R 00"])
    assert "4 transfers: 2 decoded, 2 rejected" in err
    assert docs_of(out)[-1]["ignored"] == {"0x44": 2}


def test_a_line_that_is_not_a_transfer_is_a_rejected_entry_not_the_end() -> None:
    capture = "44 W 24 00;what is this;44 R 66 21 39 71 48 ca"
    rc, out, err = run(["frames", "sht3x", "--hex", capture])
    docs = docs_of(out)
    assert rc == 0 and "2 transfers: 2 decoded, 0 rejected; 1 line is not a transfer" in err
    assert docs[1] == {"type": "rejected", "line": 2,
                       "reason": "line 2: expected 'ADDR W|R HEX', got 'what is this'"}
    assert docs[-1]["type"] == "measurement"


def test_an_overlong_capture_line_is_skipped_not_held(tmp_path: Path) -> None:
    path = tmp_path / "cap.txt"
    path.write_bytes(b"44 W 24 00\n44 W " + b"ab " * 100_000 + b"\n44 R 66 21 39 71 48 ca\n")
    rc, out, err = run(["frames", "sht3x", str(path)])
    assert rc == 0 and "1 line is not a transfer" in err
    assert any("longer than" in d.get("reason", "") for d in docs_of(out))


def test_a_read_of_registers_without_meaning_is_shown() -> None:
    rc, out, err = run(["frames", "adxl345", "--hex", "53 W 1e;53 R 01 02"])
    docs = docs_of(out)
    assert rc == 0 and docs == [{"transfer": 1, "addr": "0x53", "type": "read", "reg": "1e",
                                 "bytes": "01 02"}]
    assert "2 transfers: 2 decoded, 0 rejected" in err


# -- one grammar ---------------------------------------------------------------------------
@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_frames_parses_its_arguments_in_any_order(order: tuple[int, ...], tmp_path: Path) -> None:
    path = tmp_path / "cap.hex"
    path.write_text(_frame_of("pms5003").hex(" "))
    groups = [["pms5003"], [str(path)], ["--format", "hex"]]
    # DEVICE stays before FILE (both positional); the option goes anywhere.
    argv = [t for i in order for t in groups[i]]
    if argv.index("pms5003") > argv.index(str(path)):
        return
    rc, out, err = run(["frames", *argv])
    assert rc == 0, err
    assert docs_of(out)[0]["type"] != "rejected"


def test_dash_is_stdin_and_file_with_hex_is_a_usage_error() -> None:
    frame = _frame_of("pms5003")
    rc, out, _ = run(["frames", "pms5003", "-"], stdin=frame)
    assert rc == 0 and docs_of(out)[0]["type"] != "rejected"
    rc, _, err = run(["frames", "pms5003", "-", "--hex", frame.hex()])
    assert rc == 64 and "not both" in err


@pytest.mark.parametrize(("text", "message"), [
    ("42 4d zz", "not hex text: 'z' at offset 6"),
    ("42 4d 0", "odd number of hex digits (5)"),
])
def test_bad_hex_text_is_a_data_error(text: str, message: str) -> None:
    rc, _, err = run(["frames", "pms5003", "--hex", text])
    assert rc == 65 and message in err


# -- hex text decoded incrementally, as a whole-text decode would ----------------------------
def whole_text(text: bytes) -> bytes:
    """What ``citynode`` always accepted: the reference for the incremental decoder."""
    cleaned = re.sub(rb"[\s:,]", b"", re.sub(rb"0x", b"", text, flags=re.IGNORECASE))
    if len(cleaned) % 2:
        raise ValueError("odd")
    return bytes.fromhex(cleaned.decode("ascii"))


@settings(max_examples=300, deadline=None)
@given(parts=st.lists(st.sampled_from(["0", "0x", "0X", "x", "00", "a", "F", "9", " ", ",",
                                       ":", "\n", "0x1", "g", "é"]), max_size=40),
       cuts=st.lists(st.integers(0, 200), max_size=6))
def test_hex_text_in_chunks_decodes_as_the_whole(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts).encode()
    try:
        expected: bytes | None = whole_text(text)
    except (ValueError, UnicodeDecodeError):
        expected = None
    dec = captures.HexText("t")
    got = b""
    bounds = sorted({0, len(text), *(c for c in cuts if c < len(text))})
    try:
        for a, b in itertools.pairwise(bounds):
            got += dec.feed(text[a:b])
        got += dec.end()
    except captures.InputError as exc:
        assert expected is None, (text, exc)
        assert exc.code == 65
        return
    assert got == expected


# -- the codecs: linear work, and the PZEM-004T's speed-up changes nothing ------------------
def _lines_executed(fn: Any) -> int:
    """Python lines executed by ``fn()``: a measure of work that a busy machine cannot skew."""
    count = 0

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


def _serial_inputs(device: str, n: int) -> dict[str, bytes]:
    rng = random.Random(n)
    frame = _frame_of(device)
    broken = bytearray(frame)
    broken[-1] ^= 0xFF
    return {
        "random": rng.randbytes(n),
        "starts": (frame[:3] * (n // 3 + 1))[:n],  # a frame start everywhere
        "broken-frames": (bytes(broken) * (n // len(broken) + 1))[:n],
    }


#: Four times the input may cost this many times the work: linear with room for noise, far
#: below the sixteen times a decoder that rescans its buffer would take.
LINEAR = 6


@pytest.mark.parametrize("device", SERIAL)
def test_serial_codec_work_is_linear_in_its_input(device: str) -> None:
    codec = SPECS[device].frames()
    for kind, data in _serial_inputs(device, 8192).items():
        def decode(data: bytes) -> Any:
            chunks = [data[i:i + 1024] for i in range(0, len(data), 1024)]
            return lambda: sum(1 for _ in registry.decode_stream(codec, chunks))

        a, b = _lines_executed(decode(data)), _lines_executed(decode(data * 4))
        assert b <= LINEAR * a, f"{device} on {kind}: 4x the input took {b / a:.1f}x the work"


@pytest.mark.parametrize("device", I2C)
def test_capture_decoder_work_is_linear_in_its_input(device: str) -> None:
    codec = SPECS[device].frames()
    own = codec.addresses[0]
    rng = random.Random(device)
    recs = [(rng.choice([own, rng.randrange(128)]), rng.choice("WR"),
             rng.randbytes(rng.randrange(20))) for _ in range(200)]

    def decode(recs: list[Any]) -> Any:
        return lambda: sum(1 for _ in registry.decode_capture_stream(codec, recs))

    a, b = _lines_executed(decode(recs)), _lines_executed(decode(recs * 4))
    assert b <= LINEAR * a, f"{device}: 4x the transfers took {b / a:.1f}x the work"


def _crc_bitwise(data: bytes) -> int:
    c = 0xFFFF
    for x in data:
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
    return c


@given(st.binary(max_size=300), st.integers(0, 300))
def test_pzem_table_crc_is_the_bitwise_crc(data: bytes, cut: int) -> None:
    assert pzem.crc16(data) == _crc_bitwise(data)
    assert pzem.crc16(data[cut:], pzem.crc16(data[:cut])) == _crc_bitwise(data)


@given(st.binary(max_size=200), st.integers(0, 200))
def test_pzem_start_search_finds_what_the_byte_loop_found(data: bytes, start: int) -> None:
    dec = pzem.FrameDecoder()
    dec._buf = bytearray(data)
    expected = next((i for i in range(start, len(data)) if pzem._starts(dec._buf, i)), -1)
    assert dec._find_start(start) == expected


def test_capture_lines_report_what_is_not_a_transfer() -> None:
    items = list(captures._parsed(enumerate(["44 W 24 00", "", "# x", "zz", "80 W 00"], 1)))
    assert items[0] == (0x44, "W", b"\x24\x00")
    assert [type(i) for i in items[1:]] == [BadLine, BadLine]
    assert "7-bit" in items[2].reason  # 0x80 is no I2C address
