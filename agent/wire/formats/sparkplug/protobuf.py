"""The Sparkplug B payload in Protocol Buffers, by hand: the few fields citynode uses.

The message is ``org.eclipse.tahu.protobuf.Payload`` of Eclipse Tahu's
``sparkplug_b.proto`` (Sparkplug 3.0 section 6.4.1, "Google Protocol Buffer Schema"): a
payload has ``timestamp`` (1), ``metrics`` (2) and ``seq`` (3); a metric ``name`` (1),
``alias`` (2), ``timestamp`` (3), ``datatype`` (4), ``is_historical`` (5),
``is_transient`` (6), ``is_null`` (7), ``properties`` (9) and one value field: ``int_value``
(10), ``long_value`` (11), ``float_value`` (12), ``double_value`` (13), ``boolean_value``
(14), ``string_value`` (15) or ``bytes_value`` (16); a PropertySet ``keys`` (1) and
``values`` (2), a PropertyValue ``type`` (1), ``is_null`` (2) and its value (3 to 8).
Encoding follows the protobuf wire format (varints, fixed32/64 little endian,
length-delimited fields); everything else (metadata, data sets, templates, ``uuid``,
``body``, extensions) is skipped when decoding and never written.

Sparkplug 3.0 section 6.4.17 ("Datatype Details") puts signed integers in the unsigned
fields: Int8/16/32 as their two's complement in ``int_value`` (uint32), Int64 in
``long_value`` (uint64). No protobuf library is needed in the daemon (its memory
budget); ``tests/test_sparkplug.py`` checks these bytes against Tahu's generated classes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

from agent.wire.model import MAX_PAYLOAD

# Sparkplug 3.0 section 6.4.16, "Data Types" (the DataType enum of sparkplug_b.proto).
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT = 9, 10, 11, 12, 13, 14
UUID, DATASET, BYTES, FILE, TEMPLATE = 15, 16, 17, 18, 19

#: datatype -> (bits, signed) of the integer types; int_value for up to 32 bits.
INTEGERS = {INT8: (8, True), INT16: (16, True), INT32: (32, True), INT64: (64, True),
            UINT8: (8, False), UINT16: (16, False), UINT32: (32, False),
            UINT64: (64, False), DATETIME: (64, False)}
TEXTS = (STRING, TEXT, UUID)
NAMES = {1: "Int8", 2: "Int16", 3: "Int32", 4: "Int64", 5: "UInt8", 6: "UInt16", 7: "UInt32",
         8: "UInt64", 9: "Float", 10: "Double", 11: "Boolean", 12: "String", 13: "DateTime",
         14: "Text", 15: "UUID", 17: "Bytes", 18: "File"}

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    """Bytes that are not a Sparkplug B payload this decoder reads."""


Value = int | float | bool | str | bytes


@dataclass(slots=True)
class Metric:
    """One metric; ``value`` None with ``is_null`` says "null", without it "no value"."""

    name: str | None = None
    alias: int | None = None
    timestamp: int | None = None
    datatype: int | None = None
    value: Value | None = None
    is_null: bool = False
    is_historical: bool = False
    is_transient: bool = False
    #: PropertySet as key -> (type, value); "engUnit" carries the unit.
    properties: dict[str, tuple[int, Value | None]] = field(default_factory=dict)


@dataclass(slots=True)
class Payload:
    timestamp: int | None = None
    metrics: list[Metric] = field(default_factory=list)
    seq: int | None = None


# -- encoding ---------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    if n < 0:
        n &= (1 << 64) - 1  # proto2 int/uint fields: two's complement, 10 bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _len(number: int, data: bytes) -> bytes:
    return _key(number, _LEN) + _varint(len(data)) + data


def _uint(number: int, n: int, bits: int = 64) -> bytes:
    if not 0 <= n < 1 << bits:
        raise ValueError(f"field {number}: {n} is not an unsigned {bits}-bit integer")
    return _key(number, _VARINT) + _varint(n)


def twos(value: int, bits: int, signed: bool) -> int:
    """An integer of a Sparkplug integer type as its unsigned field holds it."""
    low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    if not low <= value < high:
        raise ValueError(f"{value} does not fit in {'' if signed else 'U'}Int{bits}")
    return value & ((1 << bits) - 1)


def untwos(raw: int, bits: int, signed: bool) -> int:
    """The integer of a Sparkplug integer type from its unsigned field."""
    raw &= (1 << bits) - 1
    return raw - (1 << bits) if signed and raw >= 1 << (bits - 1) else raw


def _value(number_base: int, datatype: int, value: Value) -> bytes:
    """A value in the field its datatype uses; ``number_base`` is the number of
    ``int_value`` (Metric: 10, PropertyValue: 3), the others follow it."""
    if datatype in INTEGERS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{NAMES.get(datatype, datatype)} needs an integer, not {value!r}")
        bits, signed = INTEGERS[datatype]
        raw = twos(value, bits, signed)
        return _key(number_base + (bits > 32), _VARINT) + _varint(raw)
    if datatype in (FLOAT, DOUBLE):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{NAMES[datatype]} needs a number, not {value!r}")
        if datatype == FLOAT:
            return _key(number_base + 2, _I32) + struct.pack("<f", value)
        return _key(number_base + 3, _I64) + struct.pack("<d", value)
    if datatype == BOOLEAN:
        if not isinstance(value, bool):
            raise ValueError(f"Boolean needs a bool, not {value!r}")
        return _key(number_base + 4, _VARINT) + (b"\x01" if value else b"\x00")
    if datatype in TEXTS:
        if not isinstance(value, str):
            raise ValueError(f"{NAMES[datatype]} needs a string, not {value!r}")
        return _len(number_base + 5, value.encode())
    if datatype in (BYTES, FILE) and number_base == 10 and isinstance(value, bytes):
        return _len(16, value)
    raise ValueError(f"cannot encode datatype {datatype}")


def _property_set(props: dict[str, tuple[int, Value | None]]) -> bytes:
    out = [_len(1, k.encode()) for k in props]
    for ptype, pvalue in props.values():
        pv = _uint(1, ptype, 32)
        pv += _key(2, _VARINT) + b"\x01" if pvalue is None else _value(3, ptype, pvalue)
        out.append(_len(2, pv))
    return b"".join(out)


def encode_metric(m: Metric, datatype: bool = True) -> bytes:
    """A metric's bytes; ``datatype`` False leaves the datatype out (it still says how
    the value is encoded)."""
    out = []
    if m.name is not None:
        out.append(_len(1, m.name.encode()))
    if m.alias is not None:
        out.append(_uint(2, m.alias))
    if m.timestamp is not None:
        out.append(_uint(3, m.timestamp))
    if m.datatype is not None and datatype:
        out.append(_uint(4, m.datatype, 32))
    if m.is_historical:
        out.append(_key(5, _VARINT) + b"\x01")
    if m.is_transient:
        out.append(_key(6, _VARINT) + b"\x01")
    if m.is_null:
        out.append(_key(7, _VARINT) + b"\x01")
    if m.properties:
        out.append(_len(9, _property_set(m.properties)))
    if m.value is not None and not m.is_null:
        if m.datatype is None:
            raise ValueError(f"metric {m.name or m.alias}: a value needs its datatype to encode")
        out.append(_value(10, m.datatype, m.value))
    return b"".join(out)


def encode(p: Payload, datatypes: bool = True) -> bytes:
    """The payload's bytes, fields in number order (as protobuf libraries write them);
    ``datatypes`` False leaves the metrics' datatypes out (DATA messages)."""
    out = []
    if p.timestamp is not None:
        out.append(_uint(1, p.timestamp))
    out += [_len(2, encode_metric(m, datatypes)) for m in p.metrics]
    if p.seq is not None:
        out.append(_uint(3, p.seq))
    return b"".join(out)


# -- decoding ---------------------------------------------------------------------------
def _read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= end:
            raise ProtobufError("truncated varint")
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n & ((1 << 64) - 1), pos
        shift += 7
        if shift >= 70:
            raise ProtobufError("varint longer than 10 bytes")


def _fields(data: bytes, pos: int, end: int) -> Any:
    """(number, wire type, value, start, stop) of each field in ``data[pos:end]``:
    value is the integer of a varint or fixed field, None for a length-delimited one
    (whose bytes are ``data[start:stop]``)."""
    while pos < end:
        key, pos = _read_varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire == _VARINT:
            value, pos = _read_varint(data, pos, end)
            yield number, wire, value, pos, pos
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            if pos + size > end:
                raise ProtobufError("truncated fixed-width field")
            yield number, wire, int.from_bytes(data[pos:pos + size], "little"), pos, pos + size
            pos += size
        elif wire == _LEN:
            size, pos = _read_varint(data, pos, end)
            if pos + size > end:
                raise ProtobufError("length-delimited field runs past the end")
            yield number, wire, None, pos, pos + size
            pos += size
        else:  # groups (3, 4) are not in sparkplug_b.proto; 6 and 7 do not exist
            raise ProtobufError(f"unsupported wire type {wire}")
    if pos != end:
        raise ProtobufError("field runs past the end of its message")


def _text(data: bytes, start: int, stop: int) -> str:
    try:
        return data[start:stop].decode()
    except UnicodeDecodeError:
        raise ProtobufError("string field is not UTF-8") from None


def _scalar(number_base: int, number: int, wire: int, raw: int | None,
            data: bytes, start: int, stop: int) -> Value:
    """A value field's raw value (integers unsigned, as on the wire)."""
    rel = number - number_base
    expected = {0: _VARINT, 1: _VARINT, 2: _I32, 3: _I64, 4: _VARINT, 5: _LEN, 6: _LEN}
    if expected.get(rel) != wire:
        raise ProtobufError(f"value field {number} has wire type {wire}")
    if rel == 0:
        return (raw or 0) & 0xFFFFFFFF
    if rel == 1:
        return raw or 0
    if rel == 2:
        return struct.unpack("<f", (raw or 0).to_bytes(4, "little"))[0]
    if rel == 3:
        return struct.unpack("<d", (raw or 0).to_bytes(8, "little"))[0]
    if rel == 4:
        return bool(raw)
    if rel == 5:
        return _text(data, start, stop)
    return bytes(data[start:stop])


def _property_value(data: bytes, pos: int, end: int) -> tuple[int, Value | None]:
    ptype, value, null = 0, None, False
    for number, wire, raw, start, stop in _fields(data, pos, end):
        if number == 1 and wire == _VARINT:
            ptype = raw & 0xFFFFFFFF
        elif number == 2 and wire == _VARINT:
            null = bool(raw)
        elif 3 <= number <= 8:
            value = _scalar(3, number, wire, raw, data, start, stop)
    if null:
        return ptype, None
    if ptype in INTEGERS and isinstance(value, int) and not isinstance(value, bool):
        value = untwos(value, *INTEGERS[ptype])
    return ptype, value


def _property_set_decode(data: bytes, pos: int, end: int) -> dict[str, tuple[int, Value | None]]:
    keys: list[str] = []
    values: list[tuple[int, Value | None]] = []
    for number, wire, _raw, start, stop in _fields(data, pos, end):
        if number == 1 and wire == _LEN:
            keys.append(_text(data, start, stop))
        elif number == 2 and wire == _LEN:
            values.append(_property_value(data, start, stop))
    if len(keys) != len(values):  # Sparkplug 3.0 section 6.4.8: the two arrays pair up
        raise ProtobufError(f"property set has {len(keys)} keys and {len(values)} values")
    return dict(zip(keys, values, strict=True))


def decode_metric(data: bytes, pos: int, end: int) -> Metric:
    m = Metric()
    raw_value: Value | None = None
    for number, wire, raw, start, stop in _fields(data, pos, end):
        if number == 1 and wire == _LEN:
            m.name = _text(data, start, stop)
        elif number in (2, 3) and wire == _VARINT:
            setattr(m, "alias" if number == 2 else "timestamp", raw)
        elif number == 4 and wire == _VARINT:
            m.datatype = raw & 0xFFFFFFFF
        elif number in (5, 6, 7) and wire == _VARINT:
            setattr(m, {5: "is_historical", 6: "is_transient", 7: "is_null"}[number], bool(raw))
        elif number == 9 and wire == _LEN:
            m.properties = _property_set_decode(data, start, stop)
        elif 10 <= number <= 16:
            raw_value = _scalar(10, number, wire, raw, data, start, stop)
        # 8 (metadata), 17 to 19 (data set, template, extension) and unknown fields: skipped
    if not m.is_null:
        m.value = raw_value
        if (m.datatype in INTEGERS and isinstance(raw_value, int)
                and not isinstance(raw_value, bool)):
            m.value = untwos(raw_value, *INTEGERS[m.datatype])
    return m


def decode(data: bytes) -> Payload:
    """The payload of ``data``; ProtobufError (a ValueError) for anything malformed.

    Integer values are read as their datatype says (signed types back from two's
    complement); a metric without a datatype (DATA and CMD messages leave it out) keeps
    the unsigned field value: :func:`untwos` with the birth's datatype finishes it."""
    if len(data) > MAX_PAYLOAD:
        raise ProtobufError(f"payload of {len(data)} bytes exceeds {MAX_PAYLOAD}")
    p = Payload()
    for number, wire, raw, start, stop in _fields(data, 0, len(data)):
        if number == 1 and wire == _VARINT:
            p.timestamp = raw
        elif number == 2 and wire == _LEN:
            p.metrics.append(decode_metric(data, start, stop))
        elif number == 3 and wire == _VARINT:
            p.seq = raw
    return p


def to_json(p: Payload) -> dict[str, Any]:
    """The payload in the JSON form Sparkplug 3.0 section 6.4.2 uses to show payloads."""
    metrics = []
    for m in p.metrics:
        d: dict[str, Any] = {}
        if m.name is not None:
            d["name"] = m.name
        if m.alias is not None:
            d["alias"] = m.alias
        if m.timestamp is not None:
            d["timestamp"] = m.timestamp
        if m.datatype is not None:
            d["dataType"] = NAMES.get(m.datatype, m.datatype)
        if m.is_historical:
            d["isHistorical"] = True
        if m.is_null:
            d["isNull"] = True
        elif m.value is not None:
            v = m.value
            d["value"] = v.hex() if isinstance(v, bytes) else (
                None if isinstance(v, float) and not math.isfinite(v) else v)
        if m.properties:
            d["properties"] = {k: v for k, (_t, v) in m.properties.items()}
        metrics.append(d)
    out: dict[str, Any] = {}
    if p.timestamp is not None:
        out["timestamp"] = p.timestamp
    out["metrics"] = metrics
    if p.seq is not None:
        out["seq"] = p.seq
    return out
