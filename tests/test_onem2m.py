"""The oneM2M format's session, sans-I/O: primitives, the opening, rendering, responses,
timeouts, resets and notifications, driven with no broker and no clock of its own.

A small simulated CSE (:class:`FakeCse`, Mobius's answers as ../shared/reference shows
them) plays the server for the end-to-end properties; tests/onem2m/ proves the same on
a real Mobius.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.wire import formats
from agent.wire.formats import PayloadError
from agent.wire.formats.onem2m import FORMAT, Options
from agent.wire.formats.onem2m import primitives as p
from agent.wire.formats.onem2m.session import Onem2mSession, instance_name, load_epoch
from agent.wire.model import Pack, Record
from agent.wire.session import Context, Item, Out, Reaction, SensorInfo
from agent.wire.topics import Topics

NODE = "seoul-jongno-0001"
ORIG = f"S{NODE}"
REQ = f"/oneM2M/req/{ORIG}/Mobius2/json"
RESP = f"/oneM2M/resp/{ORIG}/Mobius2/json"
NOTIFY = f"/oneM2M/req/Mobius2/{ORIG}/json"
NOTIFY_RESP = f"/oneM2M/resp/Mobius2/{ORIG}/json"
SENSORS = (("pm", "pms5003"), ("air", "sht3x"))


def context(*, sensors: tuple[tuple[str, str], ...] = SENSORS, commands: bool = True,
            options: Options | None = None, host: str = "10.1.2.3") -> Context:
    return Context(node=NODE, topics=Topics("citynode", NODE), home=Topics("citynode", NODE),
                   boot=3, version="0.1.0", sensors=sensors, state_dir=Path("/nonexistent"),
                   uplink="mobius", host=host, port=1883, options=options or Options(),
                   commands=commands)


def make(**kw: Any) -> Onem2mSession:
    opts = kw.pop("opts", None)
    return Onem2mSession(context(options=opts, **kw), epoch="e0", rqi_prefix="r")


def item(kind: str, records: list[Record], seq: int, *, t: float = 1763900060.0,
         historical: bool = False, fmt: str = "senml-cbor") -> Item:
    f = formats.get(fmt)
    enc = f.encode(Pack(time=t, session=3, seq=seq, records=records, kind=kind))  # type: ignore[arg-type]
    return Item(kind, f"citynode/{NODE}/{kind}", enc.payload, f.content_type,  # type: ignore[arg-type]
                mark=enc.mark, historical=historical)


def tele(seq: int) -> Item:
    return item("telemetry", [Record("pm25", value=12), Record("pm:n", value=29),
                              Record("temp", value=21.5), Record("bays:occ", value=3)], seq)


def req_of(out: Out) -> dict[str, Any]:
    assert out.topic == REQ and out.qos == 1 and not out.retain
    return json.loads(out.payload)


def unmarked(pc: dict[str, Any]) -> dict[str, Any]:
    """A contentInstance's pc as its first attempt sent it (a resend says historical)."""
    cin = pc["m2m:cin"]
    return {"m2m:cin": {**cin, "con": {**cin["con"], "historical": False}}}


def answer(s: Onem2mSession, out: Out, rsc: int, pc: Any = None) -> Reaction:
    body: dict[str, Any] = {"rsc": rsc, "rqi": req_of(out)["rqi"]}
    if pc is not None:
        body["pc"] = pc
    return s.receive(RESP, json.dumps(body).encode())


def register(s: Onem2mSession) -> tuple[list[dict[str, Any]], list[Out]]:
    """Say the opening and answer every step 2001: the requests in order, and what the
    last answer sends (contentInstances held during the opening)."""
    sent = []
    outs = s.opening()
    while not s.ready():
        (out,) = outs
        sent.append(req_of(out))
        outs = answer(s, out, 2001).send
    return sent, outs


# -- the format ---------------------------------------------------------------------------
def test_the_registry_loads_the_package_and_its_options() -> None:
    assert formats.get("onem2m") is FORMAT
    assert "onem2m" in formats.PLATFORM_FORMATS and "onem2m" not in formats.PACK_NAMES
    assert formats.options("onem2m") is Options
    assert FORMAT.packs is False
    with pytest.raises(PayloadError):
        FORMAT.encode(Pack(time=0, session=1, seq=0, records=[Record("x", value=1)]))
    with pytest.raises(PayloadError):
        FORMAT.decode(b"{}")
    assert FORMAT.historical(b"abc", 1) == b"abc"
    assert FORMAT.on_connect(None) == []  # type: ignore[arg-type]


def test_options_defaults_and_checks() -> None:
    o = Options()
    assert (o.cse_id, o.cse_name, o.app_id, o.ae, o.originator, o.mni) == (
        "/Mobius2", "Mobius", "Ncitynode", "", "", 1000)
    assert msgspec.convert({"cse_id": "/in-cse", "mni": 5}, Options).mni == 5
    for bad in ({"cse_id": "Mobius2"}, {"app_id": "citynode"}, {"originator": "Xnode"},
                {"ae": "a/b"}, {"mni": 0}, {"request_timeout_s": 0}, {"colour": "red"}):
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(bad, Options)


def test_the_package_imports_cheaply() -> None:
    """The configuration imports every format's Options at start: no drivers, no session."""
    import subprocess
    import sys

    code = ("import sys; import agent.wire.formats.onem2m as m; m.Options(); "
            "print(sorted(k for k in sys.modules if k.startswith(('drivers', "
            "'agent.wire.formats.onem2m.', 'paho', 'cbor2'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_channels_document_the_four_topics() -> None:
    chans = FORMAT.channels()
    assert [(c.name, c.address, c.action) for c in chans] == [
        ("request", "/oneM2M/req/{originator}/{cse}/json", "send"),
        ("response", "/oneM2M/resp/{originator}/{cse}/json", "receive"),
        ("notification", "/oneM2M/req/{cse}/{originator}/json", "receive"),
        ("notification-response", "/oneM2M/resp/{cse}/{originator}/json", "send")]
    for c in chans:
        assert set(c.parameters) == {"originator", "cse"} and c.qos == 1 and not c.retain
        json.dumps([c.schema, list(c.examples)])
        assert c.examples and c.content_type == "application/json"


# -- topics and the opening ---------------------------------------------------------------------
def test_topics_follow_ts_0010() -> None:
    s = make()
    assert s.subscriptions() == [RESP, NOTIFY]
    assert p.topic_id("/Mobius2") == "Mobius2"
    assert p.topic_id("//sp.example/in-cse/Cae") == "sp.example:in-cse:Cae"
    assert s.will(None) is None  # type: ignore[arg-type]


def test_the_opening_creates_everything_in_order() -> None:
    s = make()
    sent, _ = register(s)
    assert [(r["op"], r["to"], r["ty"]) for r in sent] == (
        [(1, "Mobius", 2)] + [(1, f"Mobius/{NODE}", 3)] * 8
        + [(1, f"Mobius/{NODE}/commands", 23)])
    assert all(r["fr"] == ORIG and r["rvi"] == "2a" for r in sent)
    assert sent[0]["pc"] == {"m2m:ae": {"rn": NODE, "api": "Ncitynode", "rr": True,
                                        "poa": [f"mqtt://10.1.2.3:1883/{ORIG}"],
                                        "srv": ["2a"]}}
    assert [r["pc"]["m2m:cnt"]["rn"] for r in sent[1:9]] == [
        "pm", "air", "node", "health", "events", "state", "results", "commands"]
    assert sent[1]["pc"]["m2m:cnt"] == {"rn": "pm", "mni": 1000,
                                        "lbl": ["sensor:pm", "type:pms5003"]}
    assert sent[9]["pc"] == {"m2m:sub": {"rn": "citynode", "nu": [ORIG],
                                         "enc": {"net": [3]}, "nct": 1}}
    rqis = [r["rqi"] for r in sent]
    assert len(set(rqis)) == len(rqis)
    assert s.status()["registered"] is True


def test_already_there_counts_as_done_and_options_apply() -> None:
    s = make(opts=Options(cse_id="/in-cse", cse_name="cse-in", ae="pole42", app_id="Rkr.city",
                          originator="Cpole42", mni=50, poa="mqtts://broker.city:8883"),
             commands=False, sensors=(("health", "pms5003"),))
    outs = s.opening()
    first = req_of_topic(outs[0], "/oneM2M/req/Cpole42/in-cse/json")
    assert first["to"] == "cse-in" and first["pc"]["m2m:ae"]["poa"] == ["mqtts://broker.city:8883"]
    assert first["pc"]["m2m:ae"]["api"] == "Rkr.city"
    names = []
    rsc = iter([4106] + [4105] * 20)  # Mobius: AE-ID in use; then every container exists
    ops = []
    while outs:
        body = json.loads(outs[0].payload)
        ops.append(body["op"])
        if body.get("ty") == 3:
            names.append(body["pc"]["m2m:cnt"]["rn"])
            assert body["pc"]["m2m:cnt"]["mni"] == 50
        code = 2004 if body["op"] == 3 else next(rsc)  # the AE's poa, said again
        outs = s.receive("/oneM2M/resp/Cpole42/in-cse/json",
                         json.dumps({"rsc": code, "rqi": body["rqi"]}).encode()).send
    assert ops[:2] == [1, 3]
    assert s.ready()
    # A sensor named like a node container gets "<name>-sensor"; no commands, no subscription.
    assert names == ["health-sensor", "node", "health", "events", "state", "results"]


def req_of_topic(out: Out, topic: str) -> dict[str, Any]:
    assert out.topic == topic
    return json.loads(out.payload)


def test_an_ipv6_broker_gets_brackets_in_the_point_of_access() -> None:
    s = Onem2mSession(context(host="fd00::5"), epoch="e0")
    assert s.poa == f"mqtt://[fd00::5]:1883/{ORIG}"


def finish_opening(s: Onem2mSession, outs: list[Out], rsc: int) -> list[dict[str, Any]]:
    """Answer every request of an opening with ``rsc`` (an UPDATE with 2004): the requests."""
    sent = []
    while not s.ready():
        (out,) = outs
        sent.append(req_of(out))
        outs = answer(s, out, 2004 if sent[-1]["op"] == 3 else rsc).send
    return sent


def test_after_a_failover_the_point_of_access_names_the_broker_in_use() -> None:
    """The CSE notifies (sends commands) through the broker the AE's poa names: after
    a failover it must name the broker the node is on, else commands go to one that is
    down."""
    s = make()
    register(s)
    s.connected_to("10.1.2.4", 1884)  # the uplink moved to a failover broker
    outs = s.opening()
    first = req_of(outs[0])
    assert first["pc"]["m2m:ae"]["poa"] == [f"mqtt://10.1.2.4:1884/{ORIG}"]
    (update,) = answer(s, outs[0], 4106).send  # registered already: update its poa
    body = req_of(update)
    assert (body["op"], body["to"], body.get("ty")) == (3, f"Mobius/{NODE}", None)
    assert body["pc"] == {"m2m:ae": {"poa": [f"mqtt://10.1.2.4:1884/{ORIG}"]}}
    sent = finish_opening(s, answer(s, update, 2004).send, 4105)
    assert [r["op"] for r in sent] == [1] * 9
    # Another connection to the same broker: the CSE knows it, nothing more to say.
    s.connected_to("10.1.2.4", 1884)
    sent = finish_opening(s, s.opening(), 4105)
    assert [r["op"] for r in sent] == [1] * 10
    # Back on the primary: said again.
    s.connected_to("10.1.2.3", 1883)
    sent = finish_opening(s, s.opening(), 4105)
    assert [r["op"] for r in sent][:2] == [1, 3]
    assert sent[1]["pc"]["m2m:ae"]["poa"] == [f"mqtt://10.1.2.3:1883/{ORIG}"]


def test_a_restarted_node_says_its_point_of_access_once_and_a_refusal_is_not_fatal(
        caplog: pytest.LogCaptureFixture) -> None:
    s = make()  # a new process: what the CSE holds is not known
    outs = s.opening()
    (update,) = answer(s, outs[0], 4105).send
    assert req_of(update)["op"] == 3
    outs = answer(s, update, 4005, {"m2m:dbg": "no privilege"}).send  # refused: go on
    assert req_of(outs[0])["ty"] == 3 and "new point of access" in caplog.text
    assert s.status()["registered"] is False
    finish_opening(s, outs, 2001)
    assert s.ready() and s.counts["poa_refused"] == 1
    sent = finish_opening(s, s.opening(), 4105)  # asked once per broker, not per connection
    assert 3 not in [r["op"] for r in sent]
    # A configured poa is the operator's: never changed.
    fixed = make(opts=Options(poa="mqtts://broker.city:8883"))
    fixed.connected_to("10.9.9.9", 1883)
    assert fixed.poa == "mqtts://broker.city:8883"


def test_opening_errors_are_retried_and_a_lost_ae_restarts_it() -> None:
    s = make()
    (ae,) = s.opening()
    (cnt,) = answer(s, ae, 2001).send
    assert answer(s, cnt, 5000, {"m2m:dbg": "db down"}).send == []
    assert "db down" in s.status()["last_error"]
    assert s.poll(0.0).send == []
    (again,) = s.poll(1.0).send  # 1 s later, a new rqi
    assert req_of(again)["to"] == req_of(cnt)["to"] and req_of(again)["rqi"] != req_of(cnt)["rqi"]
    # 4004 on a container: the AE is gone; the opening starts from the AE again.
    answer(s, again, 4004)
    (restart,) = s.poll(100.0).send
    assert req_of(restart)["ty"] == 2
    outs = answer(s, restart, 4105).send
    while outs:
        outs = answer(s, outs[0], 2001).send
    assert s.ready()


def test_a_silent_opening_is_sent_again_after_the_timeout() -> None:
    s = make(opts=Options(request_timeout_s=5))
    (ae,) = s.opening()
    assert s.poll(0.0).send == []  # starts its clock
    assert s.poll(4.9).send == []
    assert s.poll(5.0).send == []  # timed out; sent again after 1 s
    (again,) = s.poll(6.0).send
    assert req_of(again)["ty"] == 2 and req_of(again)["rqi"] != req_of(ae)["rqi"]
    assert s.status()["timeouts"] == 1


# -- rendering -----------------------------------------------------------------------------------
def test_telemetry_is_one_content_instance_per_sensor_container() -> None:
    s = make()
    register(s)
    it = item("telemetry", [
        Record("pm25", value=12.4), Record("pm25:min", value=10), Record("pm25:max", value=15),
        Record("pm10", value=20), Record("pm:n", value=29), Record("pm:q", value=4),
        Record("pm:aq", value=12), Record("temp", value=21.5), Record("temp:min", value=21),
        Record("rh", value=41.5), Record("air:n", value=30), Record("bays:occ", value=5)],
        1441, historical=True)
    outs = s.render(it)
    reqs = [req_of(o) for o in outs]
    assert [r["to"] for r in reqs] == [f"Mobius/{NODE}/{c}" for c in ("pm", "air", "node")]
    assert all(r["ty"] == 4 and r["op"] == 1 for r in reqs)
    assert len({o.token for o in outs}) == 3 and all(o.token for o in outs)
    head = {"kind": "telemetry", "time": "2025-11-23T12:14:20Z", "unix": 1763900060,
            "session": 3, "seq": 1441, "historical": True}
    cins = [r["pc"]["m2m:cin"] for r in reqs]
    assert all(c["rn"] == "1763900060000-3-0000001441-e0" and c["cnf"] == "application/json:0"
               for c in cins)
    assert cins[0]["con"] == head | {"sensor": "pm", "type": "pms5003", "readings": {
        "pm25": {"v": 12, "u": "ug/m3", "min": 10, "max": 15}, "pm10": {"v": 20, "u": "ug/m3"},
        "n": {"v": 29}, "q": {"v": 4}, "aq": {"v": 12}}}
    assert cins[1]["con"] == head | {"sensor": "air", "type": "sht3x", "readings": {
        "temp": {"v": 21.5, "u": "Cel", "min": 21}, "rh": {"v": 41.5, "u": "%RH"},
        "n": {"v": 30}}}
    assert cins[2]["con"] == head | {"readings": {"bays:occ": {"v": 5}}}


def test_other_kinds_go_to_their_containers() -> None:
    s = make()
    register(s)
    cases = [
        (item("alarm", [Record("fall", value=0.934)], 5, t=1763900061.482), "events",
         {"alarm": True, "readings": {"fall": {"v": 0.93, "u": "/"}}}),
        (item("event", [Record("pm:health", text="errors")], 6), "events",
         {"alarm": False, "readings": {"pm:health": {"vs": "errors"}}}),
        (item("health", [Record("uptime", value=86400), Record("rss", value=31457280)], 7),
         "health", {"readings": {"uptime": {"v": 86400, "u": "s"},
                                 "rss": {"v": 31457280, "u": "B"}}}),
        (item("state", [Record("status", text="online"), Record("interval", value=60)], 8),
         "state", {"values": {"status": "online", "interval": 60}}),
        (item("result", [Record("id", text="c-101"), Record("status", text="ok"),
                         Record("pong", flag=True)], 9, fmt="senml-json"),
         "results", {"values": {"id": "c-101", "status": "ok", "pong": True}}),
    ]
    for it, container, body in cases:
        (out,) = s.render(it)
        r = req_of(out)
        assert r["to"] == f"Mobius/{NODE}/{container}"
        con = r["pc"]["m2m:cin"]["con"]
        assert {k: v for k, v in con.items() if k in body} == body
        assert con["kind"] == it.kind and con["session"] == 3
    alarm = req_of(s.render(cases[0][0])[0])["pc"]["m2m:cin"]["con"]
    assert alarm["time"] == "2025-11-23T12:14:21.482Z" and alarm["unix"] == 1763900061.482


def test_two_sensors_of_one_quantity_are_told_apart() -> None:
    """pm (no prefix) and pm2 (prefix "b.") both measure pm25; the window's order and the
    ``:n`` records that end each block say whose is whose, even when one is silent."""
    s = make(sensors=(("pm", "pms5003"), ("pm2", "sds011"), ("air", "sht3x")))
    register(s)

    def split(records: list[Record]) -> dict[str, dict[str, Any]]:
        return {req_of(o)["to"].rsplit("/", 1)[1]: req_of(o)["pc"]["m2m:cin"]["con"]["readings"]
                for o in s.render(item("telemetry", records, 1))}

    # The first sensor stalled: only its count; the prefixed block is the second sensor's.
    got = split([Record("pm:n", value=0), Record("pm:q", value=2), Record("b.pm25", value=9),
                 Record("pm2:n", value=30), Record("temp", value=20)])
    assert got == {"pm": {"n": {"v": 0}, "q": {"v": 2}},
                   "pm2": {"pm25": {"v": 9, "u": "ug/m3"}, "n": {"v": 30}},
                   "air": {"temp": {"v": 20, "u": "Cel"}}}
    # Later windows without counts: the prefixes learnt decide.
    got = split([Record("pm25", value=11), Record("b.pm25", value=8)])
    assert got == {"pm": {"pm25": {"v": 11, "u": "ug/m3"}},
                   "pm2": {"pm25": {"v": 8, "u": "ug/m3"}}}
    got = split([Record("b.pm25", value=7)])
    assert got == {"pm2": {"pm25": {"v": 7, "u": "ug/m3"}}}


def test_the_daemons_sensor_info_decides_exactly() -> None:
    """With the prefixes the daemon gives, no order is needed: a window that lists the
    prefixed sensor first still splits right, and a reading of no sensor goes to node."""
    info = (SensorInfo("pm", "pms5003", "", ("pm25", "pm10")),
            SensorInfo("pm2", "sds011", "b.", ("pm25",)))
    ctx = dataclasses.replace(context(sensors=(("pm", "pms5003"), ("pm2", "sds011"))),
                              sensor_info=info)
    s = Onem2mSession(ctx, epoch="e0", rqi_prefix="r")
    register(s)
    outs = s.render(item("telemetry", [Record("b.pm25", value=9), Record("pm2:n", value=3),
                                       Record("pm25", value=11), Record("c.pm25", value=1)], 1))
    got = {req_of(o)["to"].rsplit("/", 1)[1]: req_of(o)["pc"]["m2m:cin"]["con"]["readings"]
           for o in outs}
    assert got == {"pm": {"pm25": {"v": 11, "u": "ug/m3"}},
                   "pm2": {"pm25": {"v": 9, "u": "ug/m3"}, "n": {"v": 3}},
                   "node": {"c.pm25": {"v": 1, "u": "ug/m3"}}}


def test_an_undecodable_row_is_counted_and_passes() -> None:
    s = make()
    register(s)
    assert s.render(Item("telemetry", "x", b"\xff\x00", "application/senml+cbor")) == []
    assert s.status()["undecodable"] == 1


# -- responses -----------------------------------------------------------------------------------
def test_status_codes_confirm_refuse_or_retry() -> None:
    s = make()
    register(s)
    s.poll(10.0)
    a, b, c, d = (s.render(item("health", [Record("uptime", value=i)], i))[0] for i in range(4))
    assert answer(s, a, 2001).confirmed == [a.token]
    assert answer(s, b, 4105).confirmed == [b.token]  # stored before under its name
    r = answer(s, c, 4000, {"m2m:dbg": "BAD REQUEST: not parse your body"})
    assert r.refused == [(c.token, f"oneM2M rsc 4000 on Mobius/{NODE}/health: BAD REQUEST: "
                                   "not parse your body")]
    assert answer(s, d, 5000).confirmed == []
    assert s.poll(10.5).send == []
    (again,) = s.poll(11.0).send  # 1 s later
    assert again.token is None and req_of(again)["rqi"] != req_of(d)["rqi"]
    # The same contentInstance, now marked late: the CSE failed it once.
    first, late = req_of(d)["pc"]["m2m:cin"], req_of(again)["pc"]["m2m:cin"]
    assert first["con"]["historical"] is False and late["con"]["historical"] is True
    assert {**late, "con": {**late["con"], "historical": False}} == first
    assert answer(s, again, 2001).confirmed == [d.token]
    st = s.status()
    assert (st["delivered"], st["delivered_before"], st["cse_refused"], st["outstanding"]) == (
        2, 1, 1, 0)


def test_rsc_written_as_a_string_or_wrapped_is_understood() -> None:
    s = make()
    register(s)
    (out,) = s.render(tele(1))[:1]
    rqi = req_of(out)["rqi"]
    r = s.receive(RESP, json.dumps({"m2m:rsp": {"rsc": "2001", "rqi": rqi}}).encode())
    assert r.confirmed == [out.token]


def test_timeouts_back_off_and_never_drop() -> None:
    s = make(opts=Options(request_timeout_s=10, max_retries=2, backoff_max_s=8))
    register(s)
    (out,) = s.render(item("health", [Record("uptime", value=1)], 1))
    now, sends, rqis = 0.0, [], {req_of(out)["rqi"]}
    s.poll(now)
    while now < 300:
        now += 0.5
        for o in s.poll(now).send:
            sends.append(now)
            rqis.add(req_of(o)["rqi"])
    gaps = [round(b - a, 1) for a, b in zip([0.0, *sends], sends, strict=False)]
    # The clock of a request starts at the first poll after it went (here 0.5 s later):
    # 10 s without an answer, then 1, 2, 4, 8, 8 s before it goes again.
    assert gaps[:5] == [11.0, 12.5, 14.5, 18.5, 18.5]
    assert len(rqis) == len(sends) + 1  # a fresh rqi every time
    st = s.status()
    assert st["overdue"] == 1 and st["outstanding"] == 1 and "cse_refused" not in st
    newest = max(rqis, key=lambda x: int(x.split("-")[1]))
    r = s.receive(RESP, json.dumps({"rsc": 2001, "rqi": newest}).encode())
    assert r.confirmed == [out.token]
    assert s.status()["overdue"] == 0 and s.status()["outstanding"] == 0


def test_a_contentinstance_sent_again_says_historical_and_only_that_one() -> None:
    """The broker may stay up while the CSE is away: what is sent again is late all the
    same. Its sibling creates of the same message (other containers) are not touched."""
    s = make(opts=Options(request_timeout_s=3))
    register(s)
    s.poll(0.0)
    outs = s.render(tele(1))
    assert len(outs) >= 2 and not any(req_of(o)["pc"]["m2m:cin"]["con"]["historical"]
                                      for o in outs)
    for o in outs[1:]:
        assert answer(s, o, 2001).confirmed == [o.token]
    s.poll(0.5)
    sent = [o for t in (4.0, 5.0, 6.0) for o in s.poll(t).send]  # 3 s silent, then 1 s
    assert len(sent) == 1 and sent[0].token is None
    assert req_of(sent[0])["pc"]["m2m:cin"]["con"]["historical"] is True
    assert req_of(outs[0])["pc"]["m2m:cin"]["con"]["historical"] is False  # its first send
    assert answer(s, sent[0], 2001).confirmed == [outs[0].token]
    assert s.status()["historical"] == 1


def test_a_reset_cse_makes_the_session_register_again_and_resend() -> None:
    s = make()
    register(s)
    outs = s.render(tele(1))
    r = answer(s, outs[0], 4004, {"m2m:dbg": "resource does not exist"})
    assert r.reopen and not s.ready() and s.status()["reopens"] == 1
    # The other creates of the same moment fail too: held, no second reopen.
    assert answer(s, outs[1], 4004).reopen is False
    assert answer(s, outs[2], 2001).confirmed == [outs[2].token]
    sent, held = register(s)  # what the uplink does on reopen
    assert sent[0]["ty"] == 2
    # The held ones go out when the opening is done, with new rqis and their names.
    assert [unmarked(req_of(o)["pc"]) for o in held] == [req_of(o)["pc"] for o in outs[:2]]
    assert all(req_of(o)["pc"]["m2m:cin"]["con"]["historical"] for o in held)
    assert not {req_of(o)["rqi"] for o in held} & {req_of(o)["rqi"] for o in outs}
    assert [answer(s, o, 2001).confirmed for o in held] == [[outs[0].token], [outs[1].token]]


def test_a_lost_connection_forgets_everything_outstanding() -> None:
    s = make()
    register(s)
    (out,) = s.render(item("health", [Record("uptime", value=1)], 1))
    s.lost()
    assert not s.ready() and s.status()["outstanding"] == 0
    assert answer(s, out, 2001).confirmed == []  # late: its message is rendered again
    assert s.status()["unmatched"] == 1
    assert s.poll(1000.0).send == []  # nothing is sent while disconnected
    register(s)
    (again,) = s.render(item("health", [Record("uptime", value=1)], 1))
    assert req_of(again)["pc"]["m2m:cin"]["rn"] == req_of(out)["pc"]["m2m:cin"]["rn"]


# -- notifications -------------------------------------------------------------------------------
def notification(con: Any, rqi: str = "45RvxMkYbR", ri: str = "4-2026120706502696", *,
                 wrap: bool = False, **sgn: Any) -> bytes:
    body = {"sur": f"Mobius/{NODE}/commands/citynode",
            "nev": {"rep": {"m2m:cin": {"ri": ri, "con": con, "cr": "CPlatform"}}, "net": 3}}
    body = sgn or body
    prim = {"op": 5, "rqi": rqi, "to": f"mqtt://10.1.2.3:1883/{ORIG}", "fr": "/Mobius2",
            "pc": {"m2m:sgn": body}}
    return json.dumps({"m2m:rqp": prim} if wrap else prim).encode()


def test_a_notification_is_answered_and_becomes_a_command() -> None:
    s = make()
    register(s)
    cmd = {"id": "c-101", "cmd": "ping", "args": {}, "ts": 1763900000, "nonce": "n0nce123",
           "sig": "ab" * 32}
    r = s.receive(NOTIFY, notification(cmd))
    (resp,) = r.send
    assert resp.topic == NOTIFY_RESP and resp.qos == 1 and resp.token is None
    assert json.loads(resp.payload) == {"rsc": 2000, "rqi": "45RvxMkYbR", "to": "/Mobius2",
                                        "fr": ORIG, "rvi": "2a"}
    (c,) = r.commands
    assert json.loads(c.data) == cmd and c.data.startswith(b"{")
    # The same contentInstance again (a duplicate delivery): answered, not run twice.
    r = s.receive(NOTIFY, notification(cmd, rqi="other"))
    assert r.commands == [] and json.loads(r.send[0].payload)["rqi"] == "other"
    # A command written as a string, the primitive wrapped: the same bytes reach the node.
    r = s.receive(NOTIFY, notification(' {"id":"c-2","cmd":"ping"}', ri="4-2", wrap=True))
    assert [c.data for c in r.commands] == [b'{"id":"c-2","cmd":"ping"}']
    assert s.status()["commands"] == 2 and s.status()["duplicates"] == 1


def test_verification_and_deletion_notifications() -> None:
    s = make()
    register(s)
    r = s.receive(NOTIFY, notification(None, vrq=True, sur="Mobius/x/commands/citynode",
                                       cr=ORIG))
    assert r.commands == [] and json.loads(r.send[0].payload)["rsc"] == 2000 and not r.reopen
    r = s.receive(NOTIFY, notification(None, sud=True, sur="Mobius/x/commands/citynode"))
    assert json.loads(r.send[0].payload)["rsc"] == 2000
    assert r.reopen and not s.ready()  # the subscription is made again by the opening


def test_commands_off_means_answered_but_not_run() -> None:
    s = make(commands=False)
    register(s)
    r = s.receive(NOTIFY, notification({"id": "c-1", "cmd": "ping"}))
    assert r.commands == [] and r.send and s.status()["ignored_commands"] == 1


def test_other_requests_and_retained_messages() -> None:
    s = make()
    register(s)
    r = s.receive(NOTIFY, json.dumps({"op": 2, "rqi": "q1", "to": ORIG, "fr": "/Mobius2"}
                                     ).encode())
    assert json.loads(r.send[0].payload)["rsc"] == 4005
    r = s.receive(NOTIFY, notification({"id": "c-1", "cmd": "ping"}), retained=True)
    assert r == Reaction() and s.status()["ignored_retained"] == 1
    assert s.receive("citynode/x/command", b"{}") == Reaction()


# -- hostile inbound ------------------------------------------------------------------------------
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["op", "rqi", "rsc", "pc", "fr", "to", "m2m:rqp", "m2m:rsp", "m2m:sgn",
                         "nev", "rep", "m2m:cin", "con", "vrq", "sud", "ri", "sur", "x"]),
        kids, max_size=6),
    max_leaves=30)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=st.one_of(
    st.binary(max_size=300),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda op, rqi, pc: json.dumps({"op": op, "rqi": rqi, "pc": pc}).encode(),
              st.one_of(st.integers(), st.text(max_size=3)), st.one_of(st.text(max_size=8),
                                                                      st.integers()),
              JSON_VALUES),
    st.builds(lambda rsc, rqi: json.dumps({"rsc": rsc, "rqi": rqi}).encode(),
              st.one_of(st.integers(), st.text(max_size=5)), st.sampled_from(
                  ["r-12", "r-14", "r-16", "r-1", "", "r-t11"]))),
    topic=st.sampled_from([RESP, NOTIFY, "/oneM2M/req/x/y/json", ""]),
    retained=st.booleans())
def test_hostile_inbound_never_raises(payload: bytes, topic: str, retained: bool) -> None:
    s = make()
    register(s)
    s.render(tele(1))
    r = s.receive(topic, payload, retained=retained)
    assert isinstance(r, Reaction)
    for out in r.send:
        assert out.topic == NOTIFY_RESP
        json.loads(out.payload)
    assert s.status()["registered"] in (True, False)
    assert "errors" not in s.status(), s.status()


@settings(max_examples=100, deadline=None)
@given(size=st.integers(0, 3), junk=st.binary(max_size=40))
def test_deep_or_huge_json_is_refused_quietly(size: int, junk: bytes) -> None:
    s = make()
    register(s)
    deep = b"[" * (100_000 * size + 1) + junk
    assert s.receive(RESP, deep) == Reaction()
    nested = b'{"op":5,"rqi":"a","pc":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert s.receive(NOTIFY, nested) == Reaction()


# -- a simulated CSE: nothing accepted is lost, nothing is stored twice --------------------------
class FakeCse:
    """Mobius's answers: creates with 4105 for a taken name, 4004 for a missing parent,
    updates with 2004; it may drop a request unanswered, answer late, or lose every
    resource."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.resources: dict[str, Any] = {"Mobius": {}}
        self.queue: list[tuple[float, bytes]] = []  # (when, response payload)

    def handle(self, payload: bytes, now: float, drop: float) -> None:
        """A request: with probability ``drop`` / 2 never executed (a worker that died), else
        executed, and its answer lost with the same probability; answers come in 0-3 s."""
        req = json.loads(payload)
        if self.rng.random() < drop / 2:
            return
        rsc = self.create(req)
        if self.rng.random() < drop / 2:
            return
        self.queue.append((now + self.rng.uniform(0.001, 3.0), json.dumps(
            {"rsc": rsc, "rqi": req["rqi"]}).encode()))

    def create(self, req: dict[str, Any]) -> int:
        parent = req["to"]
        if parent not in self.resources:
            return 4004
        if req["op"] == 3:  # an update (the AE's poa)
            self.resources[parent] = {**self.resources[parent], **req["pc"]["m2m:ae"]}
            return 2004
        body = next(iter(req["pc"].values()))
        path = f"{parent}/{body['rn']}"
        if path in self.resources:
            return 4105
        self.resources[path] = body
        return 2001

    def due(self, now: float) -> list[bytes]:
        ready = [q for q in self.queue if q[0] <= now]
        self.queue = [q for q in self.queue if q[0] > now]
        return [payload for _, payload in sorted(ready)]


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), drop=st.sampled_from([0.0, 0.05, 0.3]),
       resets=st.integers(0, 3), losses=st.integers(0, 3))
def test_every_message_is_stored_once_whatever_the_cse_does(seed: int, drop: float,
                                                             resets: int, losses: int) -> None:
    rng = random.Random(seed)
    cse = FakeCse(rng)
    s = make(opts=Options(request_timeout_s=2, backoff_max_s=4))
    items = [tele(i) if i % 3 else item("event", [Record("pm:health", text="ok")], i)
             for i in range(40)]
    wanted = {(c, i) for i, it in enumerate(items)
              for c in (("pm", "air", "node") if it.kind == "telemetry" else ("events",))}
    tokens: dict[int, list[str]] = {}
    done: set[str] = set()
    refused: list[Any] = []
    events = sorted([(rng.uniform(5, 200), "reset") for _ in range(resets)]
                    + [(rng.uniform(5, 200), "lost") for _ in range(losses)])
    now, connected = 0.0, True

    def apply(r: Reaction) -> None:
        done.update(r.confirmed)
        refused.extend(r.refused)
        for out in r.send:
            if out.topic == REQ:
                cse.handle(out.payload, now, drop)
        if r.reopen:
            for out in s.opening():
                cse.handle(out.payload, now, drop)

    for out in s.opening():
        cse.handle(out.payload, now, drop)
    while now < 2000:
        now += 0.25
        while events and events[0][0] <= now:
            _, what = events.pop(0)
            if what == "reset":
                cse.resources = {"Mobius": {}}
            else:
                s.lost()
                cse.queue.clear()
                tokens = {i: t for i, t in tokens.items() if set(t) <= done}
                s.will(None)  # type: ignore[arg-type]
                for out in s.opening():
                    cse.handle(out.payload, now, drop)
        for payload in cse.due(now):
            apply(s.receive(RESP, payload))
        apply(s.poll(now))
        if connected and s.ready():
            for i, it in enumerate(items):
                if i not in tokens and len(tokens) - sum(set(t) <= done for t in
                                                         tokens.values()) < 20:
                    outs = s.render(it)
                    tokens[i] = [o.token for o in outs]
                    for o in outs:
                        cse.handle(o.payload, now, drop)
        if len(tokens) == len(items) and all(set(t) <= done for t in tokens.values()) \
                and not events:
            break
    assert not refused
    assert all(set(t) <= done for t in tokens.values()) and len(tokens) == len(items), \
        s.status()
    # Stored once per container under its name (only what survives the last reset).
    cins = [(path.split("/")[2], body) for path, body in cse.resources.items()
            if "con" in body]
    stored = {(container, body["con"]["seq"]) for container, body in cins}
    assert len(stored) == len(cins)  # never twice
    assert all(body["rn"] == f"1763900060000-3-{body['con']['seq']:010d}-e0" for _, body in cins)
    assert stored <= wanted
    if not resets:
        assert stored == wanted


# -- names and the epoch -------------------------------------------------------------------------
@given(a=st.tuples(st.floats(0, 4e9), st.integers(1, 2**32 - 1), st.integers(0, 2**32)),
       b=st.tuples(st.floats(0, 4e9), st.integers(1, 2**32 - 1), st.integers(0, 2**32)))
def test_names_sort_as_mobius_needs_for_latest(a: tuple[float, int, int],
                                               b: tuple[float, int, int]) -> None:
    """Mobius's ``la`` is the greatest name: a later message (by time, then by number
    within its session) must have the greater one."""
    na, nb = (instance_name(Pack(time=t, session=ss, seq=q), "e0") for t, ss, q in (a, b))
    ta, tb = round(a[0] * 1000), round(b[0] * 1000)
    if ta != tb:
        assert (na < nb) == (ta < tb)
    elif a[1] == b[1] and a[2] != b[2]:
        assert (na < nb) == (a[2] < b[2])
    assert len(na) <= 45  # Mobius keeps resource names in varchar(45)


def test_names_of_odd_times() -> None:
    assert instance_name(Pack(time=-5, session=1, seq=None), "e0") == "0000000000000-1-x-e0"
    assert instance_name(Pack(time=1e20, session=1, seq=2), "e0").startswith("9999999999999-")


# -- the epoch -----------------------------------------------------------------------------------
def test_the_epoch_is_kept_in_the_state_directory(tmp_path: Path) -> None:
    first = load_epoch(tmp_path, "mobius")
    assert load_epoch(tmp_path, "mobius") == first
    assert (tmp_path / "onem2m-mobius.epoch").read_text().strip() == first
    assert load_epoch(tmp_path, "other") != first
    (tmp_path / "onem2m-mobius.epoch").write_text("garbage\n")
    assert load_epoch(tmp_path, "mobius") not in (first, "garbage")
    made = tmp_path / "uplinks" / "mobius"  # the daemon's per-uplink directory, made here
    kept = load_epoch(made, "mobius")
    assert (made / "onem2m-mobius.epoch").read_text().strip() == kept
    (tmp_path / "file").write_text("")
    unwritable = tmp_path / "file" / "deeper"  # under a regular file: cannot be made
    one, two = load_epoch(unwritable, "mobius"), load_epoch(unwritable, "mobius")
    assert len(one) == 8 and one != two  # lives as long as the session
    s = FORMAT.session(dataclasses.replace(context(), state_dir=tmp_path))
    assert s.epoch == load_epoch(tmp_path, "mobius")  # type: ignore[attr-defined]
