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
from agent.wire.formats import PayloadError
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
