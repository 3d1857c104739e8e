"""Sparkplug B: the hand-written protobuf against Eclipse Tahu's generated classes, and the
edge node's conversation (births, data, seq, bdSeq, rebirth, primary host) without a broker.

The host application that checks the same against a real broker, in its own virtual
environment, is tests/sparkplug/.
"""

from __future__ import annotations

import itertools
import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.wire import formats
from agent.wire.formats import PayloadError
from agent.wire.formats.sparkplug import Options
from agent.wire.formats.sparkplug import metrics as mt
from agent.wire.formats.sparkplug import protobuf as pb
from agent.wire.formats.sparkplug.session import SparkplugSession
from agent.wire.model import Pack, Record
from agent.wire.session import Context, Item, SensorInfo
from agent.wire.topics import Topics

ROOT = Path(__file__).resolve().parent.parent
CBOR = formats.get("senml-cbor")
T0 = 1763900000.0
NCMD = "spBv1.0/citynode/NCMD/n1"


# -- the protobuf ---------------------------------------------------------------------
def _pb2():
    try:
        from mqtt_spb_wrapper.spb_protobuf import sparkplug_b_pb2
    except ImportError:
        pytest.skip("Eclipse Tahu's generated classes are not installed (make venv installs "
                    "mqtt-spb-wrapper and protobuf)")
    return sparkplug_b_pb2


_INTS = {t: pb.INTEGERS[t] for t in pb.INTEGERS}


def _int_value(datatype: int) -> st.SearchStrategy[int]:
    bits, signed = _INTS[datatype]
    return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed \
        else st.integers(0, (1 << bits) - 1)


def _float32() -> st.SearchStrategy[float]:
    return st.floats(allow_nan=False, width=32)


@st.composite
def metrics(draw) -> pb.Metric:
    datatype = draw(st.sampled_from([*_INTS, pb.FLOAT, pb.DOUBLE, pb.BOOLEAN, pb.STRING,
                                     pb.TEXT, pb.BYTES]))
    is_null = draw(st.booleans())
    value = None
    if not is_null:
        if datatype in _INTS:
            value = draw(_int_value(datatype))
        elif datatype == pb.FLOAT:
            value = draw(_float32())
        elif datatype == pb.DOUBLE:
            value = draw(st.floats(allow_nan=False))
        elif datatype == pb.BOOLEAN:
            value = draw(st.booleans())
        elif datatype == pb.BYTES:
            value = draw(st.binary(max_size=20))
        else:
            value = draw(st.text(max_size=20))
    props = draw(st.dictionaries(st.text(max_size=8), st.one_of(
        st.tuples(st.just(pb.STRING), st.text(max_size=8)),
        st.tuples(st.just(pb.INT32), _int_value(pb.INT32)),
        st.tuples(st.just(pb.BOOLEAN), st.booleans()),
        st.tuples(st.just(pb.DOUBLE), st.floats(allow_nan=False)),
        st.tuples(st.just(pb.STRING), st.none())), max_size=3))
    return pb.Metric(
        name=draw(st.none() | st.text(max_size=30)),
        alias=draw(st.none() | st.integers(0, (1 << 64) - 1)),
        timestamp=draw(st.none() | st.integers(0, (1 << 64) - 1)),
        datatype=datatype, value=value, is_null=is_null,
        is_historical=draw(st.booleans()), is_transient=draw(st.booleans()),
        properties=props)


payloads = st.builds(pb.Payload, timestamp=st.none() | st.integers(0, (1 << 64) - 1),
                     metrics=st.lists(metrics(), max_size=5),
                     seq=st.none() | st.integers(0, (1 << 64) - 1))


def _to_pb2(pb2, p: pb.Payload):
    """The same payload in Tahu's generated classes (signed integers as the spec puts
    them in the unsigned fields)."""
    out = pb2.Payload()
    if p.timestamp is not None:
        out.timestamp = p.timestamp
    for m in p.metrics:
        x = out.metrics.add()
        for f in ("name", "alias", "timestamp", "datatype"):
            if getattr(m, f) is not None:
                setattr(x, f, getattr(m, f))
        for f in ("is_historical", "is_transient", "is_null"):
            if getattr(m, f):
                setattr(x, f, True)
        if m.properties:
            for k, (ptype, pvalue) in m.properties.items():
                x.properties.keys.append(k)
                v = x.properties.values.add()
                v.type = ptype
                if pvalue is None:
                    v.is_null = True
                elif ptype == pb.STRING:
                    v.string_value = pvalue
                elif ptype == pb.INT32:
                    v.int_value = pb.twos(pvalue, 32, True)
                elif ptype == pb.BOOLEAN:
                    v.boolean_value = pvalue
                else:
                    v.double_value = pvalue
        if m.is_null or m.value is None:
            continue
        if m.datatype in _INTS:
            bits, signed = _INTS[m.datatype]
            raw = pb.twos(m.value, bits, signed)
            if bits > 32:
                x.long_value = raw
            else:
                x.int_value = raw
        elif m.datatype == pb.FLOAT:
            x.float_value = m.value
        elif m.datatype == pb.DOUBLE:
            x.double_value = m.value
        elif m.datatype == pb.BOOLEAN:
            x.boolean_value = m.value
        elif m.datatype == pb.BYTES:
            x.bytes_value = m.value
        else:
            x.string_value = m.value
    if p.seq is not None:
        out.seq = p.seq
    return out


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_round_trip(p):
    assert pb.decode(pb.encode(p)) == p


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(payloads)
def test_bytes_match_tahus_generated_classes(p):
    """Byte for byte what protobuf's own serialiser writes for sparkplug_b.proto, and
    what it reads back from our bytes."""
    pb2 = _pb2()
    theirs = _to_pb2(pb2, p)
    assert pb.encode(p) == theirs.SerializeToString()
    assert pb2.Payload.FromString(pb.encode(p)) == theirs


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_decoder_raises_only_its_own_error(data):
    try:
        pb.decode(data)
    except pb.ProtobufError:
        pass


def test_signed_integers_and_float32_as_the_spec_says():
    m = pb.Metric("t", datatype=pb.INT32, value=-2)
    raw = pb.encode_metric(m)
    assert raw.endswith(b"\x50" + bytes.fromhex("feffffff0f"))  # int_value = 2**32 - 2
    assert pb.decode(pb.encode(pb.Payload(1, [m]))).metrics[0].value == -2
    f = pb.encode_metric(pb.Metric(datatype=pb.FLOAT, value=1.5))
    assert f.endswith(b"\x65" + struct.pack("<f", 1.5))
    with pytest.raises(ValueError):
        pb.encode_metric(pb.Metric(datatype=pb.UINT8, value=256))


def test_decoder_refuses_what_is_not_a_payload():
    for bad in (b"\x12\x05\x0a", b"\x0f", b"\x12\x02\x0a\xff", b"\xff" * 11, b"\x00"):
        with pytest.raises(pb.ProtobufError):
            pb.decode(bad)


# -- the format and its options -------------------------------------------------------
def test_registered_as_a_platform_format():
    fmt = formats.get("sparkplug")
    assert "sparkplug" in formats.PLATFORM_FORMATS and fmt.packs is False
    assert formats.options("sparkplug") is Options
    with pytest.raises(PayloadError):
        fmt.encode(Pack(T0, 1, 0, [Record("x", 1.0)]))
    with pytest.raises(PayloadError):
        fmt.decode(b"\x08\x01")
    assert fmt.historical(b"abc", None) == b"abc" and fmt.on_connect(None) == []
    names = {c.name for c in fmt.channels()}
    assert names == {"nbirth", "ndeath", "ndata", "ncmd", "dbirth", "ddata", "ddeath", "state"}
    for c in fmt.channels():
        json.dumps(c.schema)
        assert set(c.parameters) >= {p.strip("{}") for p in c.address.split("/")
                                      if p.startswith("{")}


def test_options_refuse_topic_wildcards():
    dec = msgspec.convert
    assert dec({"group_id": "Site 1", "qos": 0}, Options).qos == 0
    for bad in ({"group_id": "a/b"}, {"group_id": ""}, {"edge_node": "x#"},
                {"primary_host": "h+"}, {"qos": 2}, {"nope": 1}):
        with pytest.raises(msgspec.ValidationError):
            dec(bad, Options)


def test_the_package_is_cheap_to_import():
    code = ("import sys, agent.wire.formats.sparkplug as s; s.Options(); "
            "print(sorted(m for m in sys.modules if m.startswith(('drivers', "
            "'agent.wire.formats.sparkplug.'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the session ----------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = T0 + 1

    def __call__(self) -> float:
        return self.t


def context(tmp_path: Path, **options) -> Context:
    t = Topics("citynode", "n1")
    return Context(node="n1", topics=t, home=t, boot=3, version="0.1.0",
                   sensors=(("pm", "pms5003"), ("climate", "sht3x")), state_dir=tmp_path,
                   uplink="sp", options=Options(**options), interval_s=60.0, commands=True)


def session(tmp_path: Path, **options) -> SparkplugSession:
    return SparkplugSession(context(tmp_path, **options), clock=Clock())


def item(kind: str, records: list[Record], *, t: float = T0, seq: int = 1,
         historical: bool = False) -> Item:
    pack = Pack(time=t, session=3, seq=seq, records=records, kind=kind)
    return Item(kind, f"citynode/n1/{kind}", CBOR.encode(pack).payload, CBOR.content_type,
                historical=historical)


def decoded(outs) -> list[tuple[str, pb.Payload]]:
    return [(o.topic, pb.decode(o.payload)) for o in outs]


WINDOW = [Record("pm1", 8.0), Record("pm1:min", 6.0), Record("pm1:max", 10.0),
          Record("pm25", 12.0), Record("pm10", 20.0), Record("pm:n", 29.0), Record("pm:q", 4.0),
          Record("temp", 21.5), Record("rh", 45.2), Record("climate:n", 30.0)]


def births(s: SparkplugSession) -> dict[str, pb.Payload]:
    s.will(None)
    return {topic.split("/")[2] + "/" + "/".join(topic.split("/")[4:]): p
            for topic, p in decoded(s.opening())}


def test_will_is_ndeath_with_a_new_bdseq_each_attempt_kept_across_restarts(tmp_path):
    s = session(tmp_path)
    seen = []
    for _ in range(3):
        out = s.will(None)
        assert (out.topic, out.qos, out.retain) == ("spBv1.0/citynode/NDEATH/n1", 1, False)
        p = pb.decode(out.payload)
        assert p.seq is None and len(p.metrics) == 1
        m = p.metrics[0]
        assert (m.name, m.datatype) == ("bdSeq", pb.INT64)
        seen.append(m.value)
    assert seen == [0, 1, 2]  # section 4.2.1: starts at zero, one more each CONNECT
    again = session(tmp_path)  # a restart: the state file goes on from 2
    assert pb.decode(again.will(None).payload).metrics[0].value == 3
    s._last_bdseq = 255
    assert pb.decode(s.will(None).payload).metrics[0].value == 0


def test_births_declare_every_metric_with_alias_datatype_and_unit(tmp_path):
    s = session(tmp_path)
    b = births(s)
    assert list(b) == ["NBIRTH/", "DBIRTH/pm", "DBIRTH/climate"]
    nbirth = b["NBIRTH/"]
    assert nbirth.seq == 0 and b["DBIRTH/pm"].seq == 1 and b["DBIRTH/climate"].seq == 2
    by_name = {m.name: m for m in nbirth.metrics}
    assert by_name["bdSeq"].value == s.bdseq
    rebirth = by_name["Node Control/Rebirth"]
    assert (rebirth.datatype, rebirth.value, rebirth.alias) == (pb.BOOLEAN, False, None)
    assert by_name["version"].value == "0.1.0"
    assert by_name["sensors"].value == "pm:pms5003,climate:sht3x"
    assert by_name["uptime"].properties == {"engUnit": (pb.STRING, "s")}
    assert by_name["uptime"].is_null and by_name["uptime"].value is None
    pm = {m.name: m for m in b["DBIRTH/pm"].metrics}
    assert pm["pm25"].datatype == pb.INT64 and pm["pm25"].properties["engUnit"][1] == "ug/m3"
    assert pm["Properties/Hardware Model"].value == "pms5003"
    assert {"min/pm25", "max/pm25", "n", "q", "health", "aq"} <= set(pm)
    assert "aq" not in {m.name for m in b["DBIRTH/climate"].metrics}
    climate = {m.name: m for m in b["DBIRTH/climate"].metrics}
    assert climate["temp"].datatype == pb.FLOAT
    assert climate["temp"].properties["engUnit"] == (pb.STRING, "Cel")
    aliases = [m.alias for p in b.values() for m in p.metrics if m.name != "Node Control/Rebirth"]
    assert None not in aliases and len(aliases) == len(set(aliases))
    for p in b.values():
        assert all(m.timestamp and m.datatype for m in p.metrics)


def test_aliases_are_the_same_after_a_restart(tmp_path):
    first = {(t, m.name): m.alias for t, p in births(session(tmp_path)).items() for m in p.metrics}
    second = {(t, m.name): m.alias for t, p in births(session(tmp_path)).items() for m in p.metrics}
    assert first == second


def test_telemetry_is_ddata_per_sensor_by_alias_with_seq(tmp_path):
    s = session(tmp_path)
    b = births(s)
    alias = {(t.split("/")[1], m.name): m.alias for t, p in b.items() for m in p.metrics}
    outs = decoded(s.render(item("telemetry", WINDOW)))
    assert [t for t, _ in outs] == ["spBv1.0/citynode/DDATA/n1/pm",
                                    "spBv1.0/citynode/DDATA/n1/climate"]
    pm, climate = outs[0][1], outs[1][1]
    assert (pm.seq, climate.seq) == (3, 4)
    assert pm.timestamp == round((T0 + 1) * 1000)
    for m in pm.metrics + climate.metrics:
        assert m.name is None and m.datatype is None and m.timestamp == T0 * 1000
    got = {m.alias: m.value for m in pm.metrics}
    assert got[alias["pm", "pm25"]] == 12 and got[alias["pm", "min/pm1"]] == 6
    assert got[alias["pm", "n"]] == 29 and got[alias["pm", "q"]] == 4
    temp = next(m for m in climate.metrics if m.alias == alias["climate", "temp"])
    assert struct.unpack("<f", struct.pack("<f", temp.value))[0] == temp.value
    assert math.isclose(temp.value, 21.5)


def test_seq_wraps_at_255_across_every_message(tmp_path):
    s = session(tmp_path)
    births(s)
    seqs = [2]
    for i in range(200):
        seqs += [p.seq for _, p in decoded(s.render(item("telemetry", WINDOW, seq=i)))]
    assert all((b - a) % 256 == 1 for a, b in itertools.pairwise(seqs))
    assert 255 in seqs and seqs.count(0) >= 1


def test_health_goes_to_the_node_and_sensor_health_to_its_device(tmp_path):
    s = session(tmp_path)
    births(s)
    outs = decoded(s.render(item("health", [Record("uptime", 86400.0), Record("cpu", 1.7),
                                             Record("pm:health", text="ok")])))
    assert [t.split("/")[2:] for t, _ in outs] == [["NDATA", "n1"], ["DDATA", "n1", "pm"]]
    assert outs[0][1].metrics[0].value == 86400
    assert outs[1][1].metrics[0].value == "ok"


def test_rebirth_request_sends_births_again_with_the_same_bdseq(tmp_path):
    s = session(tmp_path)
    births(s)
    s.render(item("telemetry", WINDOW))
    bdseq = s.bdseq
    ncmd = pb.encode(pb.Payload(1, [pb.Metric("Node Control/Rebirth", datatype=pb.BOOLEAN,
                                              value=True)]))
    r = s.receive(NCMD, ncmd)
    out = decoded(r.send)
    assert [t.split("/")[2] for t, _ in out] == ["NBIRTH", "DBIRTH", "DBIRTH"]
    assert [p.seq for _, p in out] == [0, 1, 2]
    nb = {m.name: m for m in out[0][1].metrics}
    assert nb["bdSeq"].value == bdseq
    pm = {m.name: m for m in out[1][1].metrics}
    assert pm["pm25"].value == 12 and not pm["pm25"].is_null  # current values
    assert decoded(s.render(item("telemetry", WINDOW)))[0][1].seq == 3
    assert s.receive(NCMD, ncmd, retained=True).send == []  # a retained one is stale


def test_command_metric_becomes_a_node_command_and_its_result_a_string(tmp_path):
    s = session(tmp_path)
    b = births(s)
    body = json.dumps({"id": "c-1", "cmd": "ping"})
    r = s.receive(NCMD, pb.encode(pb.Payload(1, [
        pb.Metric("Node Control/Command", datatype=pb.STRING, value=body)])))
    assert [c.data for c in r.commands] == [body.encode()]
    alias = next(m.alias for m in b["NBIRTH/"].metrics if m.name == "Node Control/Command")
    r = s.receive(NCMD, pb.encode(pb.Payload(1, [pb.Metric(alias=alias, value="{}",
                                                          datatype=pb.STRING)])))
    assert [c.data for c in r.commands] == [b"{}"]
    outs = decoded(s.render(item("result", [Record("id", text="c-1"), Record("status", text="ok"),
                                            Record("pong", 1.0)])))
    (topic, p), = outs
    assert topic == "spBv1.0/citynode/NDATA/n1"
    assert json.loads(p.metrics[0].value) == {"id": "c-1", "status": "ok", "pong": 1}


@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                  HealthCheck.too_slow])
@given(data=st.binary(max_size=200), mutate=st.integers(0, 60), byte=st.integers(0, 255))
def test_hostile_ncmd_never_raises(tmp_path, data, mutate, byte):
    s = session(tmp_path)
    births(s)
    valid = bytearray(pb.encode(pb.Payload(1, [
        pb.Metric("Node Control/Rebirth", datatype=pb.BOOLEAN, value=True),
        pb.Metric("Node Control/Command", datatype=pb.STRING, value="{\"cmd\":\"ping\"}")])))
    valid[mutate % len(valid)] = byte
    for payload in (data, bytes(valid), bytes(valid[:mutate])):
        r = s.receive(NCMD, payload)
        assert all(isinstance(c.data, bytes) for c in r.commands)
        s.receive("spBv1.0/STATE/h", payload)


def test_new_metric_means_births_first_and_keeps_its_alias(tmp_path):
    s = session(tmp_path)
    births(s)
    outs = decoded(s.render(item("alarm", [Record("fall:event", text="alarm"),
                                           Record("fall:score", 0.91), Record("pm:fill", 40.0)])))
    verbs = [t.split("/")[2] for t, _ in outs]
    assert verbs == ["NBIRTH", "DBIRTH", "DBIRTH", "NDATA", "DDATA"]
    nb = {m.name: m for m in outs[0][1].metrics}
    assert nb["fall/event"].datatype == pb.STRING and nb["fall/score"].datatype == pb.DOUBLE
    assert nb["fall/event"].alias >= mt.LEARNED
    assert s.rebirths == 1
    again = births(session(tmp_path))  # learned names are in the births after a restart
    assert {m.name: m.alias for m in again["NBIRTH/"].metrics}["fall/event"] == \
        nb["fall/event"].alias
    assert "fill" in {m.name for m in again["DBIRTH/pm"].metrics}
    # a text record where a number was: a metric of its own, not a wrong datatype
    outs = decoded(s.render(item("event", [Record("spool", text="quarantined")])))
    assert [m.name for m in outs[0][1].metrics if m.name == "spool (text)"]


def test_historical_metrics_are_marked_and_keep_their_time(tmp_path):
    s = session(tmp_path)
    births(s)
    (_, p), *_ = decoded(s.render(item("telemetry", WINDOW, t=T0 - 3600, historical=True)))
    assert all(m.is_historical and m.timestamp == (T0 - 3600) * 1000 for m in p.metrics)
    # made before these births (spooled while the primary host was away): historical
    # too, and not the current value the next births show
    (_, p), *_ = decoded(s.render(item("telemetry", [Record("pm25", 99.0)], t=T0 - 10)))
    assert p.metrics[0].is_historical
    s.render(item("telemetry", [Record("pm25", 7.0)]))
    pm = {m.name: m for m in decoded(s.opening())[1][1].metrics}
    assert pm["pm25"].value == 7


def test_goodbye_is_ndeath_with_the_connection_bdseq(tmp_path):
    s = session(tmp_path)
    births(s)
    outs = s.render(item("state", [Record("status", text="offline"),
                                   Record("reason", text="shutdown")]))
    (topic, p), = decoded(outs)
    assert topic == "spBv1.0/citynode/NDEATH/n1" and p.seq is None
    assert p.metrics[0].value == s.bdseq and not s.ready()


def test_birth_state_updates_node_metrics(tmp_path):
    s = session(tmp_path)
    births(s)
    (topic, _), = decoded(s.render(item("state", [
        Record("status", text="online"), Record("version", text="0.1.0"),
        Record("boot", T0 - 100), Record("interval", 60.0),
        Record("sensors", text="pm:pms5003,climate:sht3x")])))
    assert topic.endswith("/NDATA/n1")
    s.lost()
    s.will(None)
    nb = {m.name: m for m in decoded(s.opening())[0][1].metrics}
    assert nb["boot"].datatype == pb.DATETIME and nb["boot"].value == (T0 - 100) * 1000


def test_disconnected_sensor_dies_and_is_born_again_with_its_next_record(tmp_path):
    s = session(tmp_path)
    births(s)
    outs = decoded(s.render(item("event", [Record("pm:health", text="disconnected")])))
    assert [t.split("/")[2] for t, _ in outs] == ["DDATA", "DDEATH"]
    assert outs[1][1].metrics == [] and outs[1][1].seq == outs[0][1].seq + 1
    outs = decoded(s.render(item("telemetry", WINDOW)))
    assert [t.split("/")[2] for t, _ in outs][:2] == ["DBIRTH", "DDATA"]


def test_two_sensors_of_one_quantity_are_told_apart_by_prefix(tmp_path):
    t = Topics("citynode", "n1")
    ctx = Context(node="n1", topics=t, home=t, boot=1, version="0.1.0",
                  sensors=(("kettle", "cse7766"), ("fridge", "pzem004t")), state_dir=tmp_path,
                  uplink="sp", options=Options())
    s = SparkplugSession(ctx, clock=Clock())
    births(s)
    window = [Record("k.w", 1500.0), Record("k.w:max", 2000.0), Record("kettle:n", 10.0),
              Record("f.w", 80.0), Record("f.hz", 50.0), Record("fridge:n", 10.0)]
    outs = decoded(s.render(item("telemetry", window)))
    assert [t.split("/")[-1] for t, _ in outs] == ["kettle", "fridge"]
    # without the count records: by configuration order, as learned
    outs = decoded(s.render(item("telemetry", [Record("k.w", 1.0), Record("f.w", 2.0)])))
    assert [t.split("/")[-1] for t, _ in outs] == ["kettle", "fridge"]
    fresh = mt.Placer(ctx.sensors, {"kettle": ("w",), "fridge": ("w",)})
    assert [d for d, _, _ in fresh.place(["k.w", "f.w"])] == ["kettle", "fridge"]
    assert [d for d, _, _ in fresh.place(["f.w"])] == ["fridge"]


def test_primary_host_gates_births_and_data(tmp_path):
    s = session(tmp_path, primary_host="scada")
    assert s.subscriptions() == [NCMD, "spBv1.0/STATE/scada"]
    s.will(None)
    assert s.opening() == [] and not s.ready()
    r = s.receive("spBv1.0/STATE/scada", b'{"online": true, "timestamp": 1000}', retained=True)
    assert r.reopen
    assert s.opening()[0].topic.endswith("/NBIRTH/n1") and s.ready()
    r = s.receive("spBv1.0/STATE/scada", b'{"online": false, "timestamp": 999}')
    assert r.send == [] and s.ready()  # older than the online: a stale will
    r = s.receive("spBv1.0/STATE/scada", b'{"online": true, "timestamp": 1000}', retained=True)
    assert not r.reopen  # the same STATE again (a resubscription): nothing new
    r = s.receive("spBv1.0/STATE/scada", b'{"online": true, "timestamp": 1500}')
    assert r.reopen  # a new session of the host whose death went unseen: births again
    s.opening()
    r = s.receive("spBv1.0/STATE/scada", b'{"online": false, "timestamp": 2000}')
    (topic, p), = decoded(r.send)
    assert topic.endswith("/NDEATH/n1") and p.metrics[0].value == s.bdseq and not s.ready()
    ncmd = pb.encode(pb.Payload(1, [pb.Metric("Node Control/Rebirth", datatype=pb.BOOLEAN,
                                              value=True)]))
    assert s.receive(NCMD, ncmd).send == []  # no births while the host is away
    r = s.receive("spBv1.0/STATE/scada", b'{"online": true, "timestamp": 3000}')
    assert r.reopen and s.opening()[0].topic.endswith("/NBIRTH/n1")
    for junk in (b"", b"[]", b'{"online": "yes", "timestamp": 1}', b'{"online": true}',
                 b'{"online": true, "timestamp": true}', b"\xff"):
        assert s.receive("spBv1.0/STATE/scada", junk) is not None


def test_qos_option_and_state_file_survive_a_bad_file(tmp_path):
    (tmp_path / "sparkplug-sp.json").write_text("{not json")
    s = session(tmp_path, qos=0)
    out = births(s)
    assert out and all(o.qos == 0 for o in s.opening())
    assert s.will(None).qos == 1  # the will is QoS 1 whatever the data's QoS
    assert json.loads((tmp_path / "sparkplug-sp.json").read_text())["bdseq"] == s.bdseq


def test_configured_prefixes_and_quantities_shape_births_and_placement(tmp_path):
    t = Topics("citynode", "n1")
    infos = (SensorInfo("kettle", "cse7766", "k.", ("w", "kwh")),
             SensorInfo("fridge", "cse7766", "f.", ("w",)))
    ctx = Context(node="n1", topics=t, home=t, boot=1, version="0.1.0",
                  sensors=(("kettle", "cse7766"), ("fridge", "cse7766")), state_dir=tmp_path,
                  uplink="sp", options=Options(), sensor_info=infos)
    s = SparkplugSession(ctx, clock=Clock())
    b = births(s)
    kettle = {m.name: m.alias for m in b["DBIRTH/kettle"].metrics}
    fridge = {m.name: m.alias for m in b["DBIRTH/fridge"].metrics}
    assert {"w", "kwh", "max/kwh"} <= set(kettle) and "v" not in kettle
    assert "w" in fridge and "kwh" not in fridge
    assert kettle["w"] % mt.BLOCK == fridge["w"] % mt.BLOCK  # the slot of the spec's order
    outs = decoded(s.render(item("telemetry", [Record("f.w", 80.0), Record("k.w", 1500.0)])))
    assert [(t.split("/")[-1], p.metrics[0].alias) for t, p in outs] == \
        [("fridge", fridge["w"]), ("kettle", kettle["w"])]
