"""Payload size: the same five values in citynode's codec, Tasmota's JSON and Sparkplug B.

Run ``python -m bench.payload_size`` from the repository root. Only payload
bytes are counted (no topic, no MQTT header). The exit code is 1 when the
target "citynode SenML CBOR <= 60 bytes" fails for the reference message.

The Sparkplug B rows need the Eclipse Tahu schema, which the package
``mqtt-spb-wrapper`` ships (``pip install protobuf && pip install --no-deps
mqtt-spb-wrapper``); without it they are skipped, not an error.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from agent.wire import formats
from agent.wire.formats import Format, senml
from agent.wire.model import Pack, Record

TARGET_BYTES = 60
#: The landscape's figure (docs from /work/shared/reference/landscape.md) for
#: Tasmota's tele/<topic>/SENSOR with a PMS5003 and an energy monitor.
LANDSCAPE_TASMOTA_BYTES = 364
#: ... and for "Sparkplug B DDATA with aliases, minimal" (not reproduced: see the notes).
LANDSCAPE_SPARKPLUG_BYTES = 81

# The reference values: one report window of one node.
REF_TIME = 1763900000  # 2025-11-23T12:13:20Z, end of the report window
REF_SESSION = 3
REF_SEQ = 1440
PM25, PM10 = 12, 20  # ug/m3
POWER_W = 1234.5
DISTANCE_M = 1.52
FALL_SCORE = 0.07


def reference_records(pm25: float = PM25, pm10: float = PM10, power: float = POWER_W,
                      distance: float = DISTANCE_M, fall: float = FALL_SCORE) -> list[Record]:
    return [
        Record("pm25", value=pm25),
        Record("pm10", value=pm10),
        Record("w", value=power),
        Record("d", value=distance),
        Record("fall", value=fall),
    ]


def reference_pack() -> Pack:
    """The reference message that the 60-byte target (and docs/payload.md) is about."""
    return Pack(time=REF_TIME, session=REF_SESSION, seq=REF_SEQ, records=reference_records())


@contextmanager
def strict_resolution() -> Iterator[None]:
    """Encode without compact_number's 0.05 % relative tolerance (resolution only)."""
    original = senml.compact_number
    senml.compact_number = functools.partial(original, relative=0.0)
    try:
        yield
    finally:
        senml.compact_number = original


def encode(pack: Pack, fmt: str = "senml-cbor") -> bytes:
    """A pack's payload in one of citynode's formats."""
    codec: Format = formats.get(fmt)
    return codec.encode(pack).payload


# -- Tasmota ---------------------------------------------------------------------------
def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def tasmota_sensor_json(*, energy: bool = True, pms: bool = True, sr04: bool = True,
                        fall: bool = True) -> bytes:
    """A tele/<topic>/SENSOR message as Tasmota prints it (minified, printf-formatted).

    Key layout from Tasmota's source: xsns_18_pms5003.ino (PMS5003 object),
    xdrv_03_energy.ino (ENERGY, emitted as sensor 3 so before PMS5003) and
    xsns_22_sr04.ino ("SR04":{"Distance":<cm, 3 decimals>}). Default resolutions
    (EnergyRes 3, VoltRes 0, CurrentRes 3) except WattRes 1, so that 1234.5 W
    is carried as it is (WattRes 0 would print 1235 and save 6 bytes). Tasmota
    has no fall detector: "FALL":{"Score":...} is how a Berry driver would add one.
    """
    apparent = POWER_W / 0.98
    reactive = (apparent**2 - POWER_W**2) ** 0.5
    parts = [f'"Time":"{_iso(REF_TIME)}"']
    if energy:
        parts.append(
            '"ENERGY":{"TotalStartTime":"2025-06-01T09:00:00","Total":1523.418,'
            '"Yesterday":29.630,"Today":18.271,'
            f'"Period":{round(POWER_W * 60 / 3600)},"Power":{POWER_W:.1f},'
            f'"ApparentPower":{apparent:.1f},"ReactivePower":{reactive:.1f},"Factor":0.98,'
            f'"Voltage":230,"Current":{apparent / 230:.3f}}}'
        )
    if pms:
        parts.append(
            f'"PMS5003":{{"CF1":8,"CF2.5":{PM25},"CF10":{PM10},"PM1":8,"PM2.5":{PM25},'
            f'"PM10":{PM10},"PB0.3":1830,"PB0.5":532,"PB1":96,"PB2.5":11,"PB5":4,"PB10":2}}'
        )
    if sr04:
        parts.append(f'"SR04":{{"Distance":{DISTANCE_M * 100:.3f}}}')
    if fall:
        parts.append(f'"FALL":{{"Score":{FALL_SCORE:.2f}}}')
    return ("{" + ",".join(parts) + "}").encode()


# -- Sparkplug B -----------------------------------------------------------------------
def _sparkplug_module():  # type: ignore[no-untyped-def]
    try:
        from mqtt_spb_wrapper.spb_protobuf import sparkplug_b_pb2
    except Exception:  # ImportError, or a protobuf runtime too old for the generated code
        return None
    return sparkplug_b_pb2


def sparkplug_ddata(pb, *, compact_types: bool = True, metric_timestamps: bool = False,
                    datatypes: bool = False) -> bytes:
    """A DDATA payload after a DBIRTH: aliases 1-5, no names.

    ``compact_types``: PM as UInt16 (the PMS5003's own integer ug/m3), distance as
    UInt16 millimetres (the HC-SR04/A02YYUW native unit), power and fall score as
    Float. Otherwise every metric is a Float. Sparkplug's seq is 0-255, so 1440
    goes out as 1440 % 256 = 160. ``datatypes`` repeats each metric's datatype,
    which Sparkplug 3.0 says DATA messages should not do but Tahu's Python
    ``addMetric()`` always does, together with a per-metric timestamp.
    """
    dt = pb.DataType
    ts_ms = REF_TIME * 1000
    msg = pb.Payload(timestamp=ts_ms, seq=REF_SEQ % 256)
    values: list[tuple[int, int, float]] = [
        (1, dt.UInt16, PM25),
        (2, dt.UInt16, PM10),
        (3, dt.Float, POWER_W),
        (4, dt.UInt16, round(DISTANCE_M * 1000)),
        (5, dt.Float, FALL_SCORE),
    ]
    if not compact_types:
        values = [(a, dt.Float, v / 1000 if a == 4 else v) for a, _, v in values]
    for alias, datatype, value in values:
        m = msg.metrics.add()
        m.alias = alias
        if metric_timestamps:
            m.timestamp = ts_ms
        if datatypes:
            m.datatype = datatype
        if datatype == dt.Float:
            m.float_value = value
        else:
            m.int_value = int(value)
    return msg.SerializeToString()


# -- the table -------------------------------------------------------------------------
@dataclass(slots=True)
class Row:
    label: str
    data: bytes | None  # None: skipped
    note: str = ""


def build_rows() -> tuple[list[Row], bytes, list[str]]:
    notes: list[str] = []
    ref = reference_pack()
    cbor = encode(ref, "senml-cbor")
    rows = [
        Row("citynode SenML CBOR (reference)  <- target", cbor),
        Row("citynode SenML JSON (reference)", encode(ref, "senml-json")),
    ]

    worst = Pack(time=REF_TIME, session=65535, seq=2**31,
                 records=reference_records(pm25=12.4, pm10=20.6))
    rows.append(Row("citynode CBOR worst realistic: b=65535 q=2^31 PM 12.4/20.6",
                    encode(worst)))
    worst.time = REF_TIME + 0.123
    rows.append(Row("  + bt with milliseconds (as event packs carry it)",
                    encode(worst)))
    with strict_resolution():
        rows.append(Row("citynode CBOR reference, resolution only (no 0.05 % rule)",
                        encode(ref)))

    tas = tasmota_sensor_json()
    rows.append(Row("Tasmota SENSOR JSON: PMS5003+ENERGY+SR04+FALL", tas))
    tas_landscape = tasmota_sensor_json(sr04=False, fall=False)
    rows.append(Row("Tasmota SENSOR JSON: PMS5003+ENERGY only", tas_landscape,
                    f"landscape: {LANDSCAPE_TASMOTA_BYTES} (smaller, idle values)"))

    pb = _sparkplug_module()
    if pb is None:
        notes.append("Sparkplug B: skipped (pip install protobuf && pip install --no-deps "
                     "mqtt-spb-wrapper)")
    else:
        rows += [
            Row("Sparkplug B DDATA, aliases, minimal", sparkplug_ddata(pb),
                f"landscape: {LANDSCAPE_SPARKPLUG_BYTES}"),
            Row("Sparkplug B DDATA, aliases, minimal, all Float",
                sparkplug_ddata(pb, compact_types=False)),
            Row("Sparkplug B DDATA, aliases, per-metric timestamps",
                sparkplug_ddata(pb, metric_timestamps=True)),
            Row("Sparkplug B DDATA as Tahu addMetric() writes it",
                sparkplug_ddata(pb, metric_timestamps=True, datatypes=True)),
        ]
        notes.append("Sparkplug B: aliases 1-5 from a DBIRTH, no names; PM2.5/PM10 UInt16 ug/m3, "
                     "distance UInt16 mm, power and fall score Float (the most compact faithful "
                     "types); seq 1440 sent as 1440 % 256 = 160; timestamps in ms. \"All Float\" "
                     "uses Float for every metric; \"Tahu addMetric()\" adds the datatype and a "
                     "timestamp to every metric, as the Tahu Python helper does.")
        minimal = len(sparkplug_ddata(pb))
        notes.append(f"The landscape's {LANDSCAPE_SPARKPLUG_BYTES} B for a minimal Sparkplug "
                     f"DDATA is not reproduced by the Tahu schema: 5 aliased metrics without "
                     f"datatypes or per-metric timestamps take {minimal} B, so Sparkplug's "
                     f"minimal form is smaller than citynode's pack (each per-metric timestamp "
                     f"adds 7 B, as the landscape says). It needs the DBIRTH's alias table to "
                     f"be read; a SenML pack is self-describing.")
    notes.append("The daemon stamps telemetry, birth and offline packs to the whole second (bt "
                 "5 bytes); event packs keep milliseconds (bt 9 bytes, float64).")
    notes.append("Values cannot push a citynode pack further: float16 rounds to within 0.049 %, "
                 "inside the 0.05 % rule, so any value up to 65504 in magnitude takes at most 3 "
                 "bytes (float16 or integer). With resolution only (no 0.05 % rule), 1234.5 W "
                 "needs a float32 (5 bytes).")
    notes.append("Tasmota: Tasmota's own key layout; WattRes 1 so the power keeps its .5 W; "
                 "\"FALL\" is invented (Tasmota has no fall detector).")
    return rows, cbor, notes


def main() -> int:
    rows, cbor, notes = build_rows()
    print("Payload size of one report: PM2.5 12 ug/m3, PM10 20 ug/m3, power 1234.5 W, "
          "distance 1.52 m, fall score 0.07")
    print(f"(boot session {REF_SESSION}, sequence {REF_SEQ}, time {REF_TIME} = "
          f"{_iso(REF_TIME)}Z; payload bytes only, no topic or MQTT header)\n")
    width = max(len(r.label) for r in rows)
    print(f"{'format':<{width}}  {'bytes':>5}  {'vs citynode CBOR':>16}  note")
    print(f"{'-' * width}  {'-' * 5}  {'-' * 16}  ----")
    for r in rows:
        if r.data is None:
            continue
        ratio = len(r.data) / len(cbor)
        print(f"{r.label:<{width}}  {len(r.data):>5}  {ratio:>15.2f}x  {r.note}")
    print()
    for n in notes:
        print(f"* {n}")
    print(f"\ncitynode SenML CBOR, {len(cbor)} bytes:\n{cbor.hex(' ')}")
    ok = len(cbor) <= TARGET_BYTES
    verdict = "PASS" if ok else "FAIL"
    print(f"\ntarget: citynode SenML CBOR <= {TARGET_BYTES} bytes: {verdict} "
          f"({len(cbor)} bytes, margin {TARGET_BYTES - len(cbor)})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
