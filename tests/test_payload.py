"""The output formats (agent/wire/formats), their documentation and the size bench.

docs/payload.md is checked here too: every hex example must decode to the
JSON view printed under it, so the documentation cannot drift from the code.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import struct
from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.aggregate import Quality
from agent.wire import formats, quantities
from agent.wire.formats import PayloadError, decode, senml
from agent.wire.formats.senml import compact_number
from agent.wire.model import MAX_PAYLOAD, Pack, Record, to_readable
from bench import payload_size

CBOR, JSON = "senml-cbor", "senml-json"


def encode(pack: Pack, fmt: str = CBOR) -> bytes:
    return formats.get(fmt).encode(pack).payload

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "payload.md"

REFERENCE_HEX = (
    "85 a5 00 64 70 6d 32 35 02 0c 22 1a 69 22 fa 60 61 62 03 61 71 19 05 a0"
    " a2 00 64 70 6d 31 30 02 14 a2 00 61 77 02 f9 64 d2 a2 00 61 64 02 f9 3e 14"
    " a2 00 64 66 61 6c 6c 02 f9 2c 7b"
)


def reference() -> Pack:
    return payload_size.reference_pack()


def tolerance(name: str, value: float) -> float:
    """What the codec promises: rounding to the resolution, then half a step or 0.05 %."""
    res = quantities.resolution(name)
    if not res:
        return 0.0
    return res / 2 + max(res / 2, abs(value) * 0.0005) + 1e-9 * max(1.0, abs(value))


# -- round trips -----------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [CBOR, JSON])
def test_reference_round_trip(fmt: str) -> None:
    pack = reference()
    back = decode(encode(pack, fmt))
    assert (back.time, back.session, back.seq, back.historical) == (1763900000, 3, 1440, False)
    assert [r.name for r in back.records] == ["pm25", "pm10", "w", "d", "fall"]
    for orig, got in zip(pack.records, back.records, strict=True):
        assert got.value is not None and orig.value is not None
        assert abs(got.value - orig.value) <= tolerance(orig.name, orig.value)


@pytest.mark.parametrize("fmt", [CBOR, JSON])
def test_round_trip_every_kind_of_record(fmt: str) -> None:
    pack = Pack(time=1763900071.482, session=2**32 - 1, seq=2**40, historical=True, records=[
        Record("pm25", value=12.31),
        Record("b.pm25:max", value=15),
        Record("pm:n", value=29),
        Record("pm:q", value=int(Quality.ERRORS | Quality.WARMING_UP)),
        Record("pm:health", text="errors"),
        Record("door", flag=True),
        Record("unknown_thing", value=-3.14159, t=-1.5),
    ])
    back = decode(encode(pack, fmt))
    assert back.historical is True
    assert (back.session, back.seq) == (2**32 - 1, 2**40)
    assert back.time == pytest.approx(1763900071.482, abs=1e-6)
    got = {r.name: r for r in back.records}
    assert got["pm25"].value == 12
    assert got["b.pm25:max"].value == 15
    assert got["pm:q"].value == 5
    assert got["pm:health"].text == "errors"
    assert got["door"].flag is True
    assert got["unknown_thing"].value == -3.14159  # no resolution known: sent exactly
    assert got["unknown_thing"].t == -1.5


def test_json_and_cbor_carry_the_same_pack() -> None:
    pack = reference()
    assert decode(encode(pack, CBOR)) == decode(encode(pack, JSON))


def test_cbor_uses_integer_labels_and_extension_fields_on_the_first_record_only() -> None:
    raw = cbor2.loads(encode(reference()))
    assert raw[0] == {0: "pm25", 2: 12, -3: 1763900000, "b": 3, "q": 1440}
    assert all(set(r) == {0, 2} for r in raw[1:])


def test_encode_refuses_an_empty_pack_and_unknown_formats() -> None:
    for fmt in (CBOR, JSON):
        with pytest.raises(ValueError):
            encode(Pack(1, 1, 1, []), fmt)
    with pytest.raises(KeyError, match="senml-cbor, senml-json"):
        encode(reference(), "protobuf")


# -- the reference message -------------------------------------------------------------
def test_reference_message_fits_60_bytes() -> None:
    data = encode(reference())
    assert len(data) <= 60
    assert data == bytes.fromhex(REFERENCE_HEX)  # docs/payload.md walks through these bytes


def test_worst_realistic_reference_stays_small() -> None:
    pack = Pack(time=1763900000.123, session=65535, seq=2**31,
                records=payload_size.reference_records(pm25=12.4, pm10=20.6))
    assert len(encode(pack)) == 68


# -- compact_number ----------------------------------------------------------------------
def is_float16(x: float) -> bool:
    try:
        return struct.unpack("e", struct.pack("e", x))[0] == x
    except OverflowError:
        return False


def is_float32(x: float) -> bool:
    return struct.unpack("f", struct.pack("f", x))[0] == x


@pytest.mark.parametrize(("value", "res", "expected"), [
    (12.4, 1, 12), (12.5, 1, 12), (13.5, 1, 14), (12.0, 0.1, 12), (29, 1, 29),
    (-7.0, 1, -7), (5.0, None, 5), (1763900000.0, 0.001, 1763900000), (0.0004, 0.001, 0),
])
def test_integral_values_become_integers(value: float, res: float | None, expected: int) -> None:
    got = compact_number(value, res)
    assert got == expected and type(got) is int


def test_no_resolution_sends_the_value_as_it_is() -> None:
    assert compact_number(5.5, None) == 5.5
    assert compact_number(0.1, None) == 0.1  # not float16-rounded


def test_float16_within_half_a_resolution_step() -> None:
    got = compact_number(1.52, 0.001)
    assert got == 1.51953125 and is_float16(got)
    assert compact_number(0.07, 0.01) == pytest.approx(0.07, abs=0.005)
    assert is_float16(compact_number(0.07, 0.01))


def test_float16_only_within_tolerance_else_float32() -> None:
    # 3.218 m: the nearest float16, 3.21875, is 0.75 mm off: more than half a step of
    # 1 mm allows, so without the 0.05 % rule it takes a float32.
    strict = compact_number(3.218, 0.001, relative=0)
    assert not is_float16(strict) and is_float32(strict)
    assert abs(strict - 3.218) <= 0.0005
    # With the default 0.05 % rule (1.6 mm here) the float16 is close enough.
    assert compact_number(3.218, 0.001) == 3.21875
    # 3.217 m has a float16 0.2 mm away: float16 even without the rule.
    assert is_float16(compact_number(3.217, 0.001, relative=0))


def test_relative_rule_rounds_power_to_float16() -> None:
    assert compact_number(1234.5, 0.1) == 1234.0  # documented in docs/payload.md section 7
    assert compact_number(4321.7, 0.1) == 4320.0
    assert compact_number(1234.5, 0.1, relative=0) == 1234.5  # float32 holds it exactly


def test_float32_fallback_above_float16_range() -> None:
    got = compact_number(70000.3, 0.1)
    assert not is_float16(got) and is_float32(got)
    assert abs(got - 70000.3) <= 0.05 + 70000.3 * 0.0005


def test_float64_when_nothing_smaller_holds_it() -> None:
    got = compact_number(1763900000.123, 0.001, relative=0)
    assert got == pytest.approx(1763900000.123, abs=1e-6)
    assert not is_float32(got)


@pytest.mark.parametrize("value", [1e19, -1e19, 2.0**63, 2**63, 2.0**64, 1e20, 1e300, 1e306])
@pytest.mark.parametrize("res", [1, 0.1, 0.001])
def test_big_values_encode_within_tolerance(value: float, res: float) -> None:
    got = compact_number(value, res)
    assert math.isfinite(got)
    assert abs(got - value) <= abs(value) * 0.0005
    back = decode(encode(Pack(1, 1, 1, [Record("x", value=got)])))
    assert back.records[0].value == pytest.approx(got, rel=1e-15)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_compact_number_refuses_non_finite(bad: float) -> None:
    for res in (None, 1, 0.001):
        with pytest.raises(ValueError):
            compact_number(bad, res)


# -- encode refuses non-finite values --------------------------------------------------
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_record_values_are_refused(bad: float) -> None:
    with pytest.raises(ValueError):
        Record("pm25", value=bad)
    rec = Record("pm25", value=1.0)
    rec.value = bad  # records are mutable: encode checks again
    for fmt in (CBOR, JSON):
        with pytest.raises(ValueError):
            encode(Pack(1763900000, 1, 1, [rec]), fmt)
    unknown = Record("no_resolution", value=1.0)
    unknown.value = bad
    with pytest.raises(ValueError):
        encode(Pack(1763900000, 1, 1, [unknown]))
    with pytest.raises(ValueError):
        encode(Pack(bad, 1, 1, [Record("pm25", value=1)]))


# -- decode rejects what is not a citynode SenML pack ----------------------------------
def cb(obj: object) -> bytes:
    return cbor2.dumps(obj)


@pytest.mark.parametrize("data", [
    pytest.param(b"", id="empty"),
    pytest.param(cb({0: "pm25", 2: 1}), id="cbor-map-not-array"),
    pytest.param(cb(5), id="cbor-int"),
    pytest.param(cb("pm25"), id="cbor-text"),
    pytest.param(cb([]), id="cbor-empty-array"),
    pytest.param(b"{}", id="json-object"),
    pytest.param(b"[]", id="json-empty-array"),
    pytest.param(cb([{0: "a", 2: 1}, 7]), id="record-int"),
    pytest.param(cb([[0, "a"]]), id="record-array"),
    pytest.param(b'[{"n":"a","v":1},"x"]', id="json-record-string"),
    pytest.param(cb([{0: "a", 2: 1, 9: 1}]), id="unknown-int-label-9"),
    pytest.param(cb([{0: "a", 2: 1, -7: 1}]), id="unknown-int-label--7"),
    pytest.param(cb([{0: "a", 2: 1, "foo_": 1}]), id="must-understand-cbor"),
    pytest.param(b'[{"n":"a","v":1,"bver_":10}]', id="must-understand-json"),
    pytest.param(cb([{0: "a", 2: 1, b"x": 1}]), id="bytes-label"),
    pytest.param(b"\xff\xff\xff", id="garbage-break"),
    pytest.param(b"\x1c", id="garbage-reserved"),
    pytest.param(b"\x00\x01\x02\x03garbage", id="garbage-int-then-bytes"),
    pytest.param(b"hello world", id="garbage-text"),
    pytest.param(b"[1,2", id="truncated-json"),
    pytest.param(bytes.fromhex(REFERENCE_HEX)[:-3], id="truncated-cbor"),
    pytest.param(bytes.fromhex(REFERENCE_HEX) + b"\x00", id="trailing-byte"),
    pytest.param(b'[{"n":"a","v":1}] [1]', id="trailing-json"),
    pytest.param(b"\x81" * 100_000, id="deep-nesting-cbor"),
    pytest.param(b"[" * 100_000, id="deep-nesting-json"),
    pytest.param(cb([{0: "a", 2: "twelve"}]), id="text-value"),
    pytest.param(cb([{0: "a", 2: 1, 3: "x"}]), id="two-values"),
    pytest.param(cb([{0: "a"}]), id="no-value"),
    pytest.param(cb([{0: "a", 2: 10**400}]), id="bignum-value"),
    pytest.param(b'[{"n":"a","v":1' + b"0" * 400 + b"}]", id="huge-json-int"),
    pytest.param(b'[{"n":"a","v":1,"b":1e400}]', id="infinite-session"),
    pytest.param(b'[{"n":"a","v":NaN}]', id="json-nan"),
    pytest.param(cb([{0: "a", 2: math.inf}]), id="cbor-inf"),
    pytest.param(b"[" + b" " * MAX_PAYLOAD + b"]", id="oversized"),
])
def test_decode_rejects(data: bytes) -> None:
    with pytest.raises(PayloadError):
        decode(data)


def test_oversized_is_refused_before_parsing() -> None:
    big = encode(Pack(1, 1, 1, [Record("x", text="a" * MAX_PAYLOAD)]))
    assert len(big) > MAX_PAYLOAD
    with pytest.raises(PayloadError, match="exceeds"):
        decode(big)


def test_payload_error_is_a_value_error() -> None:
    assert issubclass(PayloadError, ValueError)


def test_decode_accepts_base_name_and_ignores_extension_fields() -> None:
    data = cb([{-2: "urn:dev:x:", 0: "pm25", 2: 3, "zz": 1}, {0: "pm10", 2: 4}])
    back = decode(data)
    assert [r.name for r in back.records] == ["urn:dev:x:pm25", "urn:dev:x:pm10"]
    assert (back.session, back.seq) == (0, None)  # no "q": unnumbered, like a last will


# -- property: random packs round-trip within the documented tolerance -----------------
NAMES = st.builds(
    lambda prefix, q, stat: f"{prefix}{q}{stat}",
    st.sampled_from(["", "b.", "north."]),
    st.sampled_from(sorted(quantities.CATALOGUE)),
    st.sampled_from(["", ":min", ":max"]),
)
MEASUREMENT = st.tuples(NAMES, st.floats(-1e5, 1e5, allow_nan=False, allow_infinity=False))
BOOKKEEPING = st.tuples(
    st.sampled_from(["pm:n", "pm:q", "b2:n"]), st.integers(0, 2**32).map(float))
UNKNOWN = st.tuples(st.sampled_from(["foo", "pm:health_score"]),
                    st.floats(allow_nan=False, allow_infinity=False, width=64))


@settings(max_examples=300, deadline=None)
@given(
    fmt=st.sampled_from([CBOR, JSON]),
    time=st.one_of(st.integers(0, 2**32), st.floats(0, 4e9, allow_nan=False)),
    session=st.integers(0, 2**32 - 1),
    seq=st.integers(0, 2**63 - 1),
    historical=st.booleans(),
    values=st.lists(st.one_of(MEASUREMENT, BOOKKEEPING, UNKNOWN), min_size=1, max_size=12),
)
def test_random_packs_round_trip(fmt: str, time: float, session: int, seq: int,
                                 historical: bool, values: list[tuple[str, float]]) -> None:
    pack = Pack(time, session, seq, [Record(n, value=v) for n, v in values], historical)
    back = decode(encode(pack, fmt))
    assert (back.session, back.seq, back.historical) == (session, seq, historical)
    assert abs(back.time - time) <= 0.0005 + 1e-9 * time
    assert [r.name for r in back.records] == [n for n, _ in values]
    for (name, v), r in zip(values, back.records, strict=True):
        assert r.value is not None
        assert abs(r.value - v) <= tolerance(name, v), (name, v, r.value)
        res = quantities.resolution(name)
        if res and abs(v) <= 1000 * res:  # where the 0.05 % rule is finer than the resolution
            assert abs(r.value - v) <= res + 1e-9


@settings(max_examples=200, deadline=None)
@given(value=st.floats(-6e4, 6e4, allow_nan=False), res=st.sampled_from([1, 0.1, 0.01, 0.001]))
def test_compact_number_is_the_smallest_encoding_that_holds_the_value(value: float,
                                                                      res: float) -> None:
    got = compact_number(value, res)
    rounded = round(value / res) * res
    assert abs(got - rounded) <= max(res / 2, abs(rounded) * 0.0005) + 1e-12
    # Below 65504 everything fits a CBOR integer of at most 3 bytes or a float16.
    assert len(cbor2.dumps(got, canonical=True)) <= 3


# -- the registry ------------------------------------------------------------------------
FORMATS_DIR = ROOT / "agent" / "wire" / "formats"


def test_every_format_module_is_registered_under_its_name() -> None:
    modules = sorted([p.stem for p in FORMATS_DIR.glob("*.py") if p.stem not in ("__init__",
                                                                                    "senml")]
                     + [p.parent.name for p in FORMATS_DIR.glob("*/__init__.py")])
    assert sorted(formats.FORMATS) == modules
    assert formats.PACK_NAMES == ("senml-cbor", "senml-json") and formats.DEFAULT == "senml-cbor"
    for name in formats.PACK_NAMES:
        fmt = formats.get(name)
        assert fmt.packs and fmt.name == name
        assert fmt is formats.for_content_type(fmt.content_type)
    for name in set(formats.NAMES) - set(formats.PACK_NAMES):  # platform formats
        fmt = formats.get(name)
        assert not fmt.packs and fmt.name == name
        assert formats.for_content_type(fmt.content_type).packs  # spooled rows are packs
    assert [f.content_type for f in formats.pack_formats()] == [
        "application/senml+cbor", "application/senml+json"]
    # Rows without a known content type (tools, tests) are taken as the default format.
    assert formats.for_content_type("") is formats.get(formats.DEFAULT)
    with pytest.raises(KeyError, match="protobuf"):
        formats.get("protobuf")


def test_configuration_and_cli_choices_come_from_the_registry() -> None:
    import typing

    from agent.core.config import ReportConfig
    from agent.tools.cli import build_parser

    assert typing.get_args(typing.get_type_hints(ReportConfig)["format"]) == formats.PACK_NAMES
    assert ReportConfig().format == formats.DEFAULT
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    simulate = sub.choices["simulate"]
    choice = next(a for a in simulate._actions if a.dest == "format")
    assert tuple(choice.choices) == formats.PACK_NAMES and choice.default == formats.DEFAULT


def test_the_model_and_the_registry_know_no_wire_format() -> None:
    import subprocess
    import sys

    code = ("import sys\nimport agent.wire.model, agent.wire.formats\n"
            "print(sorted(m for m in ('cbor2', 'agent.wire.formats.senml', "
            "'agent.wire.quantities') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["[]"]


def test_decode_by_content_type_and_by_trying_each_format() -> None:
    data = encode(reference(), JSON)
    assert formats.decode(data, "application/senml+json") == decode(encode(reference()))
    assert formats.decode(data) == formats.decode(data, "no/such-type")
    with pytest.raises(PayloadError, match=r"^not SenML CBOR or JSON: ") as err:
        formats.decode(b"hello world")
    assert ";" not in str(err.value)  # both SenML formats say the same: said once


def test_senml_formats_have_no_connect_messages() -> None:
    from agent.wire.model import NodeInfo
    from agent.wire.topics import Topics

    node = NodeInfo(Topics("citynode", "n1"), 3, (("pm", "pms5003"),))
    assert all(f.on_connect(node) == [] for f in formats.pack_formats())


# -- historical marking: in place, at the mark the encoder returned ------------------------
RECORD = st.one_of(
    st.builds(lambda n, v, t: Record(n, value=v, t=t), NAMES,
              st.floats(-1e5, 1e5, allow_nan=False), st.sampled_from([None, 0, 1.5, -2.25])),
    st.builds(lambda n, v: Record(n, text=v), st.sampled_from(["x:health", "status", "q"]),
              st.text(max_size=12)),
    st.builds(lambda v, t: Record("door", flag=v, t=t), st.booleans(),
              st.one_of(st.none(), st.floats(-1e3, 1e3, allow_nan=False))),
)
PACK = st.builds(
    Pack,
    time=st.one_of(st.integers(0, 2**32), st.floats(0, 4e9, allow_nan=False)),
    session=st.integers(0, 2**32 - 1),
    seq=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    records=st.lists(RECORD, min_size=1, max_size=30),  # past 23: a two-byte array head
)


def without_zero_t(pack: Pack) -> Pack:
    """A time offset that rounds to 0 ms is sent as 0 and then not at all: the same time."""
    for r in pack.records:
        r.t = r.t or None
    return pack


def historical_copy(pack: Pack) -> Pack:
    return Pack(pack.time, pack.session, pack.seq, pack.records, historical=True)


@settings(max_examples=300, deadline=None)
@given(fmt=st.sampled_from([CBOR, JSON]), pack=PACK)
def test_marking_in_place_is_encoding_it_historical(fmt: str, pack: Pack) -> None:
    codec = formats.get(fmt)
    enc = codec.encode(pack)
    marked = codec.encode(historical_copy(pack))
    assert enc.mark is not None
    assert codec.historical(enc.payload, enc.mark) == marked.payload  # byte for byte
    # A pack already historical stays as it is, and its mark points at its marker.
    assert marked.mark == enc.mark
    assert codec.historical(marked.payload, marked.mark) is marked.payload


@settings(max_examples=200, deadline=None)
@given(fmt=st.sampled_from([CBOR, JSON]), pack=PACK)
def test_rows_without_a_mark_are_marked_by_decoding(fmt: str, pack: Pack) -> None:
    """Spools of older versions: decoded and re-encoded, in the representation they came in."""
    codec = formats.get(fmt)
    data = codec.encode(pack).payload
    out = codec.historical(data, None)
    back = decode(data)
    back.historical = True
    assert out[:1] == data[:1] and without_zero_t(decode(out)) == without_zero_t(back)
    # The other SenML format's module reads it too (rows spooled without a content type).
    other = formats.get(JSON if fmt == CBOR else CBOR)
    assert other.historical(data, None) == out


@pytest.mark.parametrize("fmt", [CBOR, JSON])
@pytest.mark.parametrize("data", [b"", b"\x80", b"garbage", b"[1,2", b"\xff" * 8])
def test_what_cannot_be_marked_is_sent_as_it_is(fmt: str, data: bytes) -> None:
    codec = formats.get(fmt)
    for mark in (None, 0, 1, 3, 100):
        assert codec.historical(data, mark) is data


def test_a_wrong_mark_falls_back_to_decoding() -> None:
    """A mark that does not fit the payload (a foreign row) never corrupts it."""
    for fmt in (CBOR, JSON):
        codec = formats.get(fmt)
        data = codec.encode(reference()).payload
        expected = codec.historical(data, None)
        for other in (CBOR, JSON):
            enc = formats.get(other).encode(reference())
            got = codec.historical(data, enc.mark if other != fmt else None)
            assert decode(got) == decode(expected)
        assert codec.historical(data, len(data) + 5) == expected


# -- docs/payload.md ---------------------------------------------------------------------
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def doc_blocks() -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(DOC.read_text(encoding="utf-8"))]


def hex_examples() -> list[tuple[bytes, str | None]]:
    """(bytes, the JSON view block right after it or None) for every ```hex block."""
    blocks = doc_blocks()
    out = []
    for i, (lang, body) in enumerate(blocks):
        if lang == "hex":
            nxt = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
            out.append((bytes.fromhex(body), nxt[1] if nxt[0] == "json" else None))
    return out


def test_docs_have_hex_examples() -> None:
    examples = hex_examples()
    assert len(examples) >= 6
    assert all(view is not None for _, view in examples)
    assert bytes.fromhex(REFERENCE_HEX) in [data for data, _ in examples]


@pytest.mark.parametrize("index", range(6))
def test_docs_hex_examples_decode_to_their_json_view(index: int) -> None:
    data, view = hex_examples()[index]
    pack = decode(data)
    assert view is not None
    assert to_readable(pack) == json.loads(view)


def test_docs_senml_json_examples_decode() -> None:
    packs = [body for lang, body in doc_blocks() if lang == "json" and body.lstrip()[:1] == "["]
    assert packs
    cbor_packs = [decode(data) for data, _ in hex_examples()]
    for body in packs:
        pack = decode(body.encode())
        assert pack in cbor_packs  # the same pack as one of the CBOR examples


def test_docs_cbor2_snippet_runs() -> None:
    code = next(body for lang, body in doc_blocks() if lang == "python")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {"payload": bytes.fromhex(REFERENCE_HEX)})
    printed = out.getvalue().strip()
    assert printed.startswith("1763900000 3 1440 [('pm25', 12), ('pm10', 20)")
    assert printed in DOC.read_text(encoding="utf-8")


def test_docs_catalogue_matches_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z0-9_]+)` \| (.+?) \|$", text, re.M))
    for name, q in quantities.CATALOGUE.items():
        assert name in rows, f"{name} missing from docs/payload.md"
        unit, res, desc, ipso = (c.strip() for c in rows[name].split(" | "))
        assert unit == (f"`{q.unit}`" if q.unit else "(none)")
        assert float(res) == q.resolution
        assert desc == q.description
        assert ipso == (q.ipso or "-")


def test_docs_quality_flags_match_the_code() -> None:
    text = DOC.read_text(encoding="utf-8")
    for flag in Quality:
        assert re.search(rf"^\| \d+ \| {flag.value} \(0x{flag.value:02x}\) \| `{flag.name}` \|",
                         text, re.M), flag


def test_cli_decode_prints_the_readable_view(capsys: pytest.CaptureFixture[str]) -> None:
    from agent.tools.cli import main

    assert main(["decode", "--hex", REFERENCE_HEX]) == 0
    assert json.loads(capsys.readouterr().out) == to_readable(decode(bytes.fromhex(REFERENCE_HEX)))
    assert main(["decode", "--hex", REFERENCE_HEX + " 00"]) == 65


# -- the bench -----------------------------------------------------------------------------
def test_bench_passes_and_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert payload_size.main() == 0
    out = capsys.readouterr().out
    assert "citynode SenML CBOR (reference)" in out
    assert "PASS (60 bytes" in out
    assert REFERENCE_HEX in out


def test_bench_without_sparkplug_skips_it(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(payload_size, "_sparkplug_module", lambda: None)
    assert payload_size.main() == 0
    out = capsys.readouterr().out
    assert "Sparkplug B: skipped (pip install protobuf && pip install --no-deps mqtt-spb-wrapper)" \
        in out
    assert "Sparkplug B DDATA" not in out


def test_bench_strict_resolution_restores_the_codec() -> None:
    original = senml.compact_number
    with payload_size.strict_resolution():
        assert len(encode(reference())) == 62
    assert senml.compact_number is original
    assert len(encode(reference())) == 60
