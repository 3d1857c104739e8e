"""The payload codec: SenML (RFC 8428) packs in CBOR (default) or JSON.

Platforms decode these with any SenML library. Three choices keep a pack small
enough for 50,000 nodes (docs/payload.md has the byte-level walk-through):

* names are short and their units implicit (the catalogue in
  :mod:`agent.wire.quantities` fixes them), and the node id lives in the topic, not
  in a base name;
* every value is sent in the smallest CBOR number (integer, float16, float32)
  that still holds it to the quantity's resolution or to 0.05 % of the value,
  whichever is coarser (finer than any of these sensors' accuracy);
* the boot session and sequence number ride as two one-letter extension fields
  (``"b"`` and ``"q"``) on the first record, which RFC 8428 section 4.4 lets any
  parser ignore; longer labels would cost 4 bytes a message.
"""

from __future__ import annotations

import io
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2

from agent.wire import quantities

CBOR = "senml-cbor"
JSON = "senml-json"
FORMATS = (CBOR, JSON)
CONTENT_TYPES = {CBOR: "application/senml+cbor", JSON: "application/senml+json"}

# RFC 8428 table 4: JSON label -> CBOR integer label.
LABELS = {
    "bver": -1, "bn": -2, "bt": -3, "bu": -4, "bv": -5, "bs": -6,
    "n": 0, "u": 1, "v": 2, "vs": 3, "vb": 4, "s": 5, "t": 6, "ut": 7, "vd": 8,
}
LABEL_NAMES = {v: k for k, v in LABELS.items()}
#: Extension fields (string labels in both representations; not must-understand).
SESSION, SEQUENCE, HISTORICAL = "b", "q", "h"

MAX_PAYLOAD = 256 * 1024


class PayloadError(ValueError):
    """A payload that is not a SenML pack this codec understands."""


@dataclass(slots=True)
class Record:
    """One SenML record; exactly one of value, text or flag is set."""

    name: str
    value: float | None = None
    text: str | None = None
    flag: bool | None = None
    t: float | None = None  # seconds relative to the pack's base time

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.value, self.text, self.flag)) != 1:
            raise ValueError(f"record {self.name!r} needs exactly one of value, text, flag")
        if self.value is not None and not math.isfinite(self.value):
            raise ValueError(f"record {self.name!r} has a non-finite value {self.value}")


@dataclass(slots=True)
class Pack:
    """A message: base time (Unix s), boot session, sequence number and records."""

    time: float
    session: int
    seq: int | None  # None only for the last will, which may never be published
    records: list[Record] = field(default_factory=list)
    historical: bool = False


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


def _record_map(rec: Record, first: bool, pack: Pack, cbor: bool) -> dict[Any, Any]:
    def label(name: str) -> Any:
        return LABELS[name] if cbor else name

    m: dict[Any, Any] = {}
    if first:
        m[label("bt")] = _time(pack.time)
        m[SESSION] = pack.session
        if pack.seq is not None:
            m[SEQUENCE] = pack.seq
        if pack.historical:
            m[HISTORICAL] = True
    m[label("n")] = rec.name
    if rec.value is not None:
        m[label("v")] = compact_number(rec.value, quantities.resolution(rec.name))
    elif rec.text is not None:
        m[label("vs")] = rec.text
    else:
        m[label("vb")] = rec.flag
    if rec.t:
        m[label("t")] = _time(rec.t)
    return m


def encode(pack: Pack, fmt: str = CBOR) -> bytes:
    """Encode a pack as SenML CBOR or minified SenML JSON."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown payload format {fmt!r}; use one of {FORMATS}")
    if not pack.records:
        raise ValueError("a pack needs at least one record")
    cbor = fmt == CBOR
    maps = [_record_map(r, i == 0, pack, cbor) for i, r in enumerate(pack.records)]
    if cbor:
        return cbor2.dumps(maps, canonical=True)
    return json.dumps(maps, separators=(",", ":"), allow_nan=False).encode()


def _normalise(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise PayloadError("a SenML pack is a non-empty array of records")
    out = []
    for i, rec in enumerate(raw):
        if not isinstance(rec, dict):
            raise PayloadError(f"record {i} is not a map")
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
        out.append(norm)
    return out


def decode(payload: bytes) -> Pack:
    """Decode SenML CBOR or JSON (detected from the first byte) into a :class:`Pack`."""
    if len(payload) > MAX_PAYLOAD:
        raise PayloadError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    if not payload:
        raise PayloadError("empty payload")
    try:
        if payload[:1] in (b"[", b" ", b"\n"):
            raw = json.loads(payload)
        else:
            fp = io.BytesIO(payload)
            raw = cbor2.CBORDecoder(fp).decode()
            if fp.tell() != len(payload):  # cbor2.loads would ignore them silently
                raise ValueError(f"{len(payload) - fp.tell()} bytes after the end of the pack")
    except (ValueError, cbor2.CBORDecodeError, RecursionError) as exc:
        raise PayloadError(f"not SenML CBOR or JSON: {exc}") from None
    recs = _normalise(raw)
    head = recs[0]
    try:
        pack = Pack(
            time=float(head.get("bt", 0.0)),
            session=int(head.get(SESSION, 0)),
            seq=int(head[SEQUENCE]) if SEQUENCE in head else None,
            historical=bool(head.get(HISTORICAL, False)),
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


def to_readable(pack: Pack) -> dict[str, Any]:
    """A resolved, human-readable view for ``citynode decode`` and logs."""
    recs = []
    for r in pack.records:
        d: dict[str, Any] = {"n": r.name}
        if r.value is not None:
            res = quantities.resolution(r.name)
            if res and res >= 1 and r.value.is_integer():
                d["v"] = int(r.value)
            elif res:
                d["v"] = round(r.value, max(0, -math.floor(math.log10(res))))
            else:
                d["v"] = int(r.value) if r.value.is_integer() else r.value
            unit = quantities.unit(r.name)
            if unit:
                d["u"] = unit
        elif r.text is not None:
            d["vs"] = r.text
        else:
            d["vb"] = r.flag
        if r.t:
            d["t"] = round(pack.time + r.t, 3)
        recs.append(d)
    out: dict[str, Any] = {"time": round(pack.time, 3), "session": pack.session}
    if pack.seq is not None:
        out["seq"] = pack.seq
    out["records"] = recs
    if pack.historical:
        out["historical"] = True
    return out

