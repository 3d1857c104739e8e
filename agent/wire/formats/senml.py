"""What SenML's two representations share: labels, compact numbers, record maps, decoding.

SenML (RFC 8428) packs are read by any SenML library. Three choices keep a pack
small enough for 50,000 nodes (docs/payload.md has the byte-level walk-through):

* names are short and their units implicit (the catalogue in
  :mod:`agent.wire.quantities` fixes them), and the node id lives in the topic, not
  in a base name;
* every value is sent in the smallest CBOR number (integer, float16, float32)
  that still holds it to the quantity's resolution or to 0.05 % of the value,
  whichever is coarser (finer than any of these sensors' accuracy);
* the boot session and sequence number ride as two one-letter extension fields
  (``"b"`` and ``"q"``) on the first record, which RFC 8428 section 4.4 lets any
  parser ignore; longer labels would cost 4 bytes a message. A pack that waited
  through an outage gets ``"h": true`` there too.

The modules :mod:`.senml_cbor` and :mod:`.senml_json` serialise these maps and know
where ``"h"`` goes in their bytes.
"""

from __future__ import annotations

import io
import json
import math
import struct
from typing import Any

import cbor2

from agent.wire import quantities
from agent.wire.formats import Channel, PayloadError
from agent.wire.model import MAX_PAYLOAD, Pack, Record

# RFC 8428 table 4: JSON label -> CBOR integer label.
LABELS = {
    "bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6,
    "n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8,
}
LABEL_NAMES = {v: k for k, v in LABELS.items()}
#: Extension fields (string labels in both representations; not must-understand).
SESSION, SEQUENCE, HISTORICAL = "b", "q", "h"


def compact_number(value: float, resolution: float | None, relative: float = 0.001) -> int | float:
    """The smallest-encoding number that still holds ``value`` to its precision.

    The value is rounded to ``resolution``; integers stay integers. Otherwise
    float16, then float32, is used when it lies within half a resolution step or
    half of ``relative`` times the value, whichever is coarser (0.05 % by
    default, far below any of these sensors' accuracy). Without a resolution the
    value is sent as it is.
    """
    if not math.isfinite(value):
        raise ValueError(f"cannot encode the non-finite value {value}")
    if not resolution:
        return int(value) if float(value).is_integer() and abs(value) < 2**63 else value
    scaled = value / resolution
    if not math.isfinite(scaled):  # too large to round at this resolution: send as it is
        return value
    value = float(round(scaled) * resolution)
    if float(value).is_integer() and abs(value) < 2**63:
        return int(value)
    tol = max(resolution / 2 * 0.999, abs(value) * relative / 2)
    for fmt in ("e", "f"):
        try:
            packed = struct.unpack(fmt, struct.pack(fmt, value))[0]
        except OverflowError:
            continue
        if abs(packed - value) <= tol:
            return packed
    return value


def _time(t: float) -> int | float:
    """Times: whole seconds as integers, else float64 to the millisecond (never float16:
    its error would add to the rounding)."""
    if not math.isfinite(t):
        raise ValueError(f"cannot encode the non-finite time {t}")
    t = round(t, 3)
    return int(t) if float(t).is_integer() else t


def head(pack: Pack, cbor: bool) -> dict[Any, Any]:
    """The pack's fields on its first record, in the order JSON writes them: base time,
    session, sequence, then ``"h"`` if historical."""
    m: dict[Any, Any] = {LABELS["bt"] if cbor else "bt": _time(pack.time), SESSION: pack.session}
    if pack.seq is not None:
        m[SEQUENCE] = pack.seq
    if pack.historical:
        m[HISTORICAL] = True
    return m


def _record_map(rec: Record, cbor: bool) -> dict[Any, Any]:
    def label(name: str) -> Any:
        return LABELS[name] if cbor else name

    m: dict[Any, Any] = {label("n"): rec.name}
    if rec.value is not None:
        m[label("v")] = compact_number(rec.value, quantities.resolution(rec.name))
    elif rec.text is not None:
        m[label("vs")] = rec.text
    else:
        m[label("vb")] = rec.flag
    if rec.t:
        m[label("t")] = _time(rec.t)
    return m


def record_maps(pack: Pack, cbor: bool) -> list[dict[Any, Any]]:
    """The pack as SenML records, with integer labels for CBOR and text labels for JSON."""
    if not pack.records:
        raise ValueError("a pack needs at least one record")
    maps = [_record_map(r, cbor) for r in pack.records]
    maps[0] = head(pack, cbor) | maps[0]
    return maps


def dumps(maps: list[dict[Any, Any]], cbor: bool) -> bytes:
    """Canonical CBOR (deterministic key order) or minified JSON."""
    if cbor:
        return cbor2.dumps(maps, canonical=True)
    return json.dumps(maps, separators=(",", ":"), allow_nan=False).encode()


def is_json(payload: bytes) -> bool:
    """SenML JSON is an array, so it starts with ``[`` (or white space); CBOR never does."""
    return payload[:1] in (b"[", b" ", b"\n")


def _kind(raw: Any) -> str:
    """What a parsed payload is, in words, for an error that says why it is not SenML."""
    if isinstance(raw, dict):
        return "an object (a map)"
    if isinstance(raw, list):
        return "an empty array"
    if isinstance(raw, bool):
        return "a boolean"
    if isinstance(raw, (int, float)):
        return "a number"
    if isinstance(raw, str):
        return "a string"
    return "null" if raw is None else f"a {type(raw).__name__}"


def _normalise(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise PayloadError(f"not SenML: the payload is {_kind(raw)}; a SenML pack is a "
                           "non-empty array of records")
    out = []
    for i, rec in enumerate(raw):
        if not isinstance(rec, dict):
            raise PayloadError(f"not SenML: record {i} is not a map")
        norm: dict[str, Any] = {}
        for k, v in rec.items():
            if isinstance(k, int):
                if k not in LABEL_NAMES:
                    raise PayloadError(f"record {i} has unknown integer label {k}")
                k = LABEL_NAMES[k]
            elif not isinstance(k, str):
                raise PayloadError(f"record {i} has a label of type {type(k).__name__}")
            if k.endswith("_"):
                raise PayloadError(f"record {i} has must-understand field {k!r}")
            norm[k] = v
        values = [k for k in ("v", "vs", "vb") if k in norm]
        if len(values) > 1:
            raise PayloadError(f"not SenML: record {i} has {' and '.join(values)}; a record "
                               "has one value")
        if not values:
            others = [k for k in ("vd", "s") if k in norm]
            if others:
                raise PayloadError(f"record {i} has only {' and '.join(others)}: citynode "
                                   "reads v, vs or vb")
            if "n" not in norm and "bn" not in norm:
                raise PayloadError(f"not SenML: record {i} has neither a name nor a value")
            raise PayloadError(f"record {i} has no value (v, vs or vb) for citynode to read")
        out.append(norm)
    return out


def _parse(payload: bytes) -> Any:
    """The payload's data: JSON when it starts like SenML JSON, else CBOR, else JSON after
    all (a JSON object or number is not SenML, and the error should say so, not that it is
    broken CBOR)."""
    try:
        if is_json(payload):
            return json.loads(payload)
        fp = io.BytesIO(payload)
        raw = cbor2.CBORDecoder(fp).decode()
        if fp.tell() != len(payload):  # cbor2.loads would ignore them silently
            raise ValueError(f"{len(payload) - fp.tell()} bytes after the end of the pack")
        return raw
    except (ValueError, cbor2.CBORDecodeError, RecursionError) as exc:
        error = exc
    if not is_json(payload):
        try:
            return json.loads(payload)
        except (ValueError, RecursionError):
            pass
    raise PayloadError(f"not SenML CBOR or JSON: {error}") from None


def decode(payload: bytes) -> Pack:
    """Decode SenML CBOR or JSON (told apart by the first byte) into a :class:`Pack`.

    A pack without a base time or session (generic SenML, not citynode's) says so in
    ``Pack.missing``: its ``time`` and ``session`` are then 0, and not to be shown."""
    if len(payload) > MAX_PAYLOAD:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    if not payload:
        raise PayloadError("empty payload")
    recs = _normalise(_parse(payload))
    first = recs[0]
    try:
        pack = Pack(
            time=float(first.get("bt", 0.0)),
            session=int(first.get(SESSION, 0)),
            seq=int(first[SEQUENCE]) if SEQUENCE in first else None,
            historical=bool(first.get(HISTORICAL, False)),
            missing=tuple(f for f, k in (("time", "bt"), ("session", SESSION))
                          if k not in first),
        )
        base_name = ""
        for r in recs:
            base_name = r.get("bn", base_name)
            name = base_name + str(r.get("n", ""))
            pack.records.append(Record(
                name=name,
                value=float(r["v"]) if "v" in r else None,
                text=r.get("vs"),
                flag=r.get("vb"),
                t=float(r["t"]) if "t" in r else None,
            ))
    except (TypeError, ValueError, OverflowError) as exc:
        raise PayloadError(f"malformed record: {exc}") from None
    return pack


def remark(payload: bytes) -> bytes:
    """Mark a pack historical by decoding and re-encoding it in the representation it came
    in: for rows spooled without a mark. Unreadable payloads come back unchanged."""
    try:
        pack = decode(payload)
    except PayloadError:
        return payload
    pack.historical = True
    cbor = not is_json(payload)
    return dumps(record_maps(pack, cbor), cbor)


# -- the topics, for `citynode asyncapi` ---------------------------------------------------
#: What each RFC 8428 label (table 4) means in a citynode pack; those it never sends say so.
_LABEL_DOCS = {
    "bn": ("string", "base name: never sent (the node id is in the topic); accepted when "
           "decoding"),
    "bt": ("number", "base time: Unix seconds (UTC) when the pack was made; on the first "
           "record of every pack; whole seconds as integers, else to the millisecond"),
    "n": ("string", "name: `<sensor>:<quantity>` style record names (docs/payload.md section "
          "5); the quantity fixes unit and resolution (section 6)"),
    "v": ("number", "numeric value, in the unit its name's quantity fixes; round it to the "
          "quantity's resolution (docs/payload.md section 7)"),
    "vs": ("string", "string value: status, reason, version, sensors, a sensor's health, "
           "command results"),
    "vb": ("boolean", "boolean value (command results: pong)"),
    "t": ("number", "time relative to bt, seconds; only when the record's time differs"),
}
#: The extension fields on the first record (RFC 8428 section 4.4: not must-understand).
_EXTENSION_DOCS = {
    SESSION: {"type": "integer", "minimum": 1, "maximum": 2**32 - 1,
              "description": "extension: boot session, grows by one each time the daemon "
                             "starts (docs/payload.md section 4)"},
    SEQUENCE: {"type": "integer", "minimum": 0,
               "description": "extension: sequence number, from 0 in each boot session, over "
                              "every topic together; absent only on the last will"},
    HISTORICAL: {"type": "boolean", "enum": [True],
                 "description": "extension: historical, present (true) only when the pack "
                                "waited through an outage; bt is then its original time"},
}


def pack_schema(cbor: bool) -> dict[str, Any]:
    """JSON Schema of a citynode SenML pack (RFC 8428 sections 4 to 6): an array of
    records with the pack's fields on the first. CBOR keys its maps by the integer labels
    of RFC 8428 table 4, which JSON Schema cannot name: they appear as their decimal
    text ("-3" is the integer label -3, bt), as in the examples."""
    kind = "cbor" if cbor else "json"
    record = f"senml-record-{kind}"

    def key(label: str) -> str:
        return str(LABELS[label]) if cbor else label

    props: dict[str, Any] = {}
    for label, (typ, doc) in _LABEL_DOCS.items():
        named = f"{label} (label {LABELS[label]})" if cbor else label
        props[key(label)] = {"type": typ, "description": f"{named}: {doc}"}
    props.update(_EXTENSION_DOCS)
    one_value = [{"required": [key(v)]} for v in ("v", "vs", "vb")]
    if cbor:
        title = "SenML pack (CBOR)"
        how = ("RFC 8428 section 6: a CBOR array (RFC 8949) of maps, encoded "
               "deterministically (map keys sorted), each number in the smallest encoding "
               "that holds it (docs/payload.md section 7). The labels are the integers of "
               "RFC 8428 table 4 (bt -3, n 0, v 2, vs 3, vb 4, t 6); JSON Schema keys objects "
               "by text, so they are written here as their decimal text. The extension "
               "fields b, q and h keep their text labels.")
    else:
        title = "SenML pack (JSON)"
        how = "RFC 8428 section 5: a JSON array of records, minified."
    return {
        "title": title,
        "description": f"{how} The pack's fields (bt, b, q, h) are on the first record; "
                       "every record has a name and one value. docs/payload.md has the "
                       "record names, units and a byte-level walk-through.",
        "type": "array",
        "minItems": 1,
        "items": [{"allOf": [{"$ref": f"#/$defs/{record}"},
                             {"required": [key("bt"), SESSION]}]}],
        "additionalItems": {"$ref": f"#/$defs/{record}"},
        "$defs": {record: {
            "title": f"SenML record ({kind.upper()})",
            "type": "object",
            "properties": props,
            "required": [key("n")],
            "oneOf": one_value,
            # RFC 8428 section 4.4: a label ending in "_" must be understood; none is sent.
            "propertyNames": {"not": {"pattern": "_$"}},
        }},
    }


def _ecma(pattern: str) -> str:
    """A Python regular expression anchored with \\A and \\Z as JSON Schema's (ECMA 262)
    anchors ^ and $, which without the multiline flag mean the same."""
    if pattern.startswith(("\\A", "^")):
        pattern = "^" + pattern.removeprefix("\\A").removeprefix("^")
    if pattern.endswith("\\Z"):
        pattern = pattern.removesuffix("\\Z") + "$"
    return pattern


def _portable(schema: Any) -> Any:
    """msgspec's JSON Schema with ECMA 262 patterns, and without the titles of internal
    struct names."""
    if isinstance(schema, dict):
        return {k: (_ecma(v) if k == "pattern" else _portable(v))
                for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_portable(v) for v in schema]
    return schema


def command_schema() -> dict[str, Any]:
    """JSON Schema of a downlink command, from the structs the node checks commands with
    (agent/core/commands.py; docs/commands.md sections 2 and 5): one branch per command,
    with its own arguments."""
    import msgspec

    from agent.core import commands

    def body(struct: type) -> dict[str, Any]:
        schema = msgspec.json.schema(struct)
        return _portable(schema["$defs"][struct.__name__])

    command = body(commands.Command)
    command["properties"]["cmd"] = {"type": "string", "enum": list(commands.COMMANDS),
                                    "description": "the command (docs/commands.md section 5)"}
    branches = []
    for name in commands.COMMANDS:
        args = body(commands._COMMANDS[name].args)
        args.setdefault("properties", {})
        branches.append({"properties": {"cmd": {"const": name}, "args": args}})
    return {
        "title": "citynode command",
        "description": "One command: a JSON object (first byte `{`) or the same object as a "
                       "CBOR map, at most [commands] max_bytes (default 8192). ts, nonce and "
                       "sig sign it (HMAC-SHA256, docs/commands.md section 6); a node with a "
                       "key refuses unsigned commands. Never publish a command retained.",
        **{k: v for k, v in command.items() if k != "description"},
        "oneOf": branches,
    }


def _samples(version: str) -> dict[str, list[tuple[str, Pack]]]:
    """The packs of docs/payload.md section 8 and docs/commands.md section 3 (node
    seoul-jongno-0001, the catalogue's first fine-dust sensor named pm, boot session 3),
    by topic."""
    from agent.core.commands import CommandResult
    from drivers import catalogue

    dust = catalogue.specs()[catalogue.first_of_kind("particulate")]

    def pack(t: float, seq: int | None, records: list[Record]) -> Pack:
        return Pack(time=t, session=3, seq=seq, records=records)

    window = [("pm1", 8), ("pm1:min", 6), ("pm1:max", 10), ("pm25", 12), ("pm25:min", 10),
              ("pm25:max", 15), ("pm10", 20), ("pm10:min", 17), ("pm10:max", 24),
              ("pm:n", 29), ("pm:q", 4)]
    health: list[tuple[str, float | str]] = [
        ("uptime", 86400), ("cpu", 1.2), ("rss", 31457280), ("disk_free", 5368709120),
        ("pm:health", "ok"), ("spool", 0), ("spool_bytes", 0), ("evicted_tele", 0),
        ("evicted_ev", 0), ("reconnects", 2), ("historical", 0), ("cmd_ok", 3),
        ("cmd_refused", 1)]
    birth = [Record("status", text="online"), Record("version", text=version),
             Record("boot", value=1763812345), Record("interval", value=60),
             Record("sensors", text=f"pm:{dust.type}")]
    ping = CommandResult(id="c-101", ok=True, cmd="ping", data={"pong": True, "uptime_s": 86400})
    return {
        "telemetry": [(f"a {dust.type.upper()}'s 60 s window: mean, min and max, count, "
                       "quality flags",
                       pack(1763900060, 1441, [Record(n, value=v) for n, v in window]))],
        "event": [("the sensor pm went from ok to errors",
                   pack(1763900071.482, 1442, [Record("pm:health", text="errors")]))],
        "health": [("the node's health report", pack(1763900100, 1445, [
            Record(n, text=v) if isinstance(v, str) else Record(n, value=v)
            for n, v in health]))],
        "state": [("birth, on every connection", pack(1763812350, 0, birth)),
                  ("last will: published by the broker when the node is lost",
                   pack(1763812350, None, [Record("status", text="offline"),
                                           Record("reason", text="lost")])),
                  ("goodbye: the last message of a clean stop",
                   pack(1763900093, 1444, [Record("status", text="offline"),
                                           Record("reason", text="shutdown")]))],
        "result": [("the answer to ping", pack(1763900000, 40, ping.records()))],
    }


#: The topics under <prefix>/<node>/ (docs/payload.md section 1): leaf, action from the
#: node's side, retained, summary.
_TOPICS = (
    ("telemetry", "send", False, "Aggregated measurements: one pack per report interval "
     "([report] interval_s, default 60 s) with every sensor's statistics for the window."),
    ("event", "send", False, "A change worth its own message: a sensor's health transition, "
     "an alarm (fall, fire), a parking bay's or a bin's new state."),
    ("health", "send", False, "The node's own health every [health] interval_s (default "
     "300 s): uptime, sensors, spool, resources, command counters."),
    ("state", "send", True, "Retained: the birth (status online) on every connection; the "
     "last will (status offline, reason lost) the broker publishes when the node vanishes; "
     "the goodbye (status offline, reason shutdown) of a clean stop."),
    ("command", "receive", False, "Downlink commands to the node (docs/commands.md). The node "
     "subscribes with QoS 1 when [commands] enabled; every message is answered on result."),
    ("result", "send", False, "The answer to every command message: records id, cmd, status, "
     "error and the command's data; with MQTT 5, sent to the command's response topic (when "
     "it names one) with its correlation data."),
)


def channels(fmt: Any, cbor: bool) -> list[Channel]:
    """The native topics of a SenML format (``fmt``), with examples it encodes itself."""
    from agent import __version__

    samples = _samples(__version__)
    pack = pack_schema(cbor)
    out = []
    for leaf, action, retain, summary in _TOPICS:
        if leaf == "command":
            schema, content_type = command_schema(), "application/json"
            examples: tuple[Any, ...] = (
                ("ping", b'{"id": "c-101", "cmd": "ping"}'),
                ("signed (docs/commands.md section 6)",
                 b'{"id": "c-201", "cmd": "sample-now", "args": {}, "ts": 1763900020, '
                 b'"nonce": "Vd1tq6yW3n0C", "sig": '
                 b'"468ff18d619aad937390481cb5ccf3c6251a1d4112ee554b0bba1668f1f53505"}'))
        else:
            schema, content_type = pack, fmt.content_type
            examples = tuple((what, fmt.encode(p).payload) for what, p in samples[leaf])
        out.append(Channel(name=leaf, address=f"{{prefix}}/{{node}}/{leaf}", action=action,
                           summary=summary, content_type=content_type, schema=schema, qos=1,
                           retain=retain, examples=examples))
    return out
