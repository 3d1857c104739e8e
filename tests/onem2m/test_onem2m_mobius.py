"""The oneM2M session against a real Mobius, driven by a stand-in uplink (a paho client):
the protocol proven on the CSE itself, checked through Mobius's own HTTP API.

Each test registers its own AE on the module's Mobius; the tests that stop, reset or
restart the CSE start their own.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from onem2m_harness import Harness, Mobius, make_item

from agent.wire.formats.onem2m import Options
from agent.wire.formats.onem2m.session import Onem2mSession, instance_name
from agent.wire.model import Record
from agent.wire.session import Context
from agent.wire.topics import Topics

pytestmark = [pytest.mark.onem2m, pytest.mark.timeout(240)]

SENSORS = (("pm", "pms5003"), ("air", "sht3x"))


def session(mobius: Mobius, tmp_path: Path, *, node: str | None = None,
            sensors: tuple[tuple[str, str], ...] = SENSORS, commands: bool = True,
            port: int | None = None, **options: Any) -> Onem2mSession:
    node = node or f"n-{uuid.uuid4().hex[:8]}"
    # Short: a stock Mobius worker sometimes dies on a create and never answers (upstream
    # race, ../shared/reference/onem2m-mobius.md); the session's retry is what recovers.
    options.setdefault("request_timeout_s", 3.0)
    ctx = Context(node=node, topics=Topics("citynode", node), home=Topics("citynode", node),
                  boot=1, version="0.1.0", sensors=sensors, state_dir=tmp_path, uplink="mobius",
                  host="127.0.0.1", port=port or mobius.mqtt_port, commands=commands,
                  options=Options(cse_id=mobius.cse_id, cse_name=mobius.cse_name, **options))
    return Onem2mSession(ctx)


def telemetry(seq: int, *, pm25: float = 12.0, historical: bool = False) -> Any:
    return make_item("telemetry", [
        Record("pm25", value=pm25), Record("pm25:min", value=pm25 - 2),
        Record("pm25:max", value=pm25 + 3), Record("pm10", value=20), Record("pm:n", value=29),
        Record("temp", value=21.37), Record("rh", value=41.5), Record("air:n", value=30),
        Record("bays:occ", value=5)], seq, historical=historical)


@pytest.fixture
def harnesses():
    made: list[Harness] = []
    yield made
    for h in made:
        h.close()


def test_opening_creates_the_ae_containers_and_subscription(mobius, tmp_path, harnesses):
    s = session(mobius, tmp_path)
    h = Harness(s, mobius.mqtt_port)
    harnesses.append(h)
    assert h.registered(), s.status()
    base = f"{mobius.cse_name}/{s.ae}"
    status, body = mobius.http("GET", base)
    assert status == 200, body
    ae = body["m2m:ae"]
    assert ae["aei"] == s.originator and ae["api"] == "Ncitynode" and ae["rr"] is True
    assert ae["poa"] == [f"mqtt://127.0.0.1:{mobius.mqtt_port}/{s.originator}"]
    for name in ("pm", "air", "node", "health", "events", "state", "commands", "results"):
        status, body = mobius.http("GET", f"{base}/{name}")
        assert status == 200, (name, body)
        assert body["m2m:cnt"]["mni"] == 1000
    status, body = mobius.http("GET", f"{base}/pm")
    assert set(body["m2m:cnt"]["lbl"]) == {"sensor:pm", "type:pms5003"}
    status, body = mobius.http("GET", f"{base}/commands/citynode")
    assert status == 200, body
    sub = body["m2m:sub"]
    assert sub["nu"] == [s.originator] and sub["enc"]["net"] == [3] and sub["nct"] == 1

    # A second connection finds everything in place (4105) and is ready again.
    h.client.disconnect()
    h2 = Harness(session(mobius, tmp_path, node=s.ae), mobius.mqtt_port)
    harnesses.append(h2)
    assert h2.registered(), h2.s.status()
    assert h2.s.status()["registered"] is True and h2.s.status().get("opening_errors") is None


def test_each_message_becomes_content_instances_with_units_and_numbers(mobius, tmp_path,
                                                                      harnesses):
    s = session(mobius, tmp_path)
    h = Harness(s, mobius.mqtt_port)
    harnesses.append(h)
    assert h.registered(), s.status()
    t0 = 1763900060.0
    items = [make_item("telemetry", [
        Record("pm25", value=12.4), Record("pm25:min", value=10), Record("pm25:max", value=15),
        Record("pm:n", value=29), Record("pm:q", value=4), Record("temp", value=21.25),
        Record("air:n", value=30), Record("bays:occ", value=5)], 7, t=t0),
        make_item("alarm", [Record("fall", value=0.93)], 8, t=t0 + 1.25),
        make_item("event", [Record("pm:health", text="errors")], 9, t=t0 + 2),
        make_item("health", [Record("uptime", value=86400), Record("pm:health", text="ok")],
                  10, t=t0 + 3),
        make_item("state", [Record("status", text="online"), Record("version", text="0.1.0"),
                            Record("interval", value=60)], 11, t=t0 + 4),
        make_item("result", [Record("id", text="c-1"), Record("cmd", text="ping"),
                             Record("status", text="ok"), Record("pong", flag=True)], 12,
                  t=t0 + 5, historical=True)]
    assert h.deliver(items), s.status()
    assert not h.refused
    base = f"{mobius.cse_name}/{s.ae}"
    head = {"kind": "telemetry", "time": "2025-11-23T12:14:20Z", "unix": 1763900060,
            "session": 1, "seq": 7, "historical": False}
    assert mobius.latest(f"{base}/pm") == head | {
        "sensor": "pm", "type": "pms5003", "readings": {
            "pm25": {"v": 12, "u": "ug/m3", "min": 10, "max": 15}, "n": {"v": 29},
            "q": {"v": 4}}}
    assert mobius.latest(f"{base}/air") == head | {
        "sensor": "air", "type": "sht3x",
        "readings": {"temp": {"v": 21.25, "u": "Cel"}, "n": {"v": 30}}}
    assert mobius.latest(f"{base}/node") == head | {"readings": {"bays:occ": {"v": 5}}}
    # The CSE may store concurrent creates in any order: (session, seq) orders them.
    events = sorted(mobius.instances(f"{base}/events"), key=lambda e: e["seq"])
    assert events == [{
        "kind": "alarm", "time": "2025-11-23T12:14:21.250Z", "unix": 1763900061.25,
        "session": 1, "seq": 8, "historical": False, "alarm": True,
        "readings": {"fall": {"v": 0.93, "u": "/"}}}, {
        "kind": "event", "time": "2025-11-23T12:14:22Z", "unix": 1763900062, "session": 1,
        "seq": 9, "historical": False, "alarm": False,
        "readings": {"pm:health": {"vs": "errors"}}}]
    status, body = mobius.http("GET", f"{base}/events/1763900061250-1-0000000008-{s.epoch}")
    assert status == 200 and body["m2m:cin"]["cnf"] == "application/json:0"
    assert mobius.latest(f"{base}/health")["readings"] == {
        "uptime": {"v": 86400, "u": "s"}, "pm:health": {"vs": "ok"}}
    assert mobius.latest(f"{base}/state")["values"] == {
        "status": "online", "version": "0.1.0", "interval": 60}
    result = mobius.latest(f"{base}/results")
    assert result["values"] == {"id": "c-1", "cmd": "ping", "status": "ok", "pong": True}
    assert result["historical"] is True


def test_a_command_created_in_mobius_reaches_the_node(mobius, tmp_path, harnesses):
    s = session(mobius, tmp_path)
    h = Harness(s, mobius.mqtt_port)
    harnesses.append(h)
    assert h.registered(), s.status()
    base = f"{mobius.cse_name}/{s.ae}"
    # More than Mobius's 16 unanswered notifications: answered, the subscription stays.
    sent = [{"id": f"c-{i}", "cmd": "ping", "args": {}, "ts": 1763900000 + i,
             "nonce": f"nonce{i:04d}", "sig": "0" * 64} for i in range(20)]
    t0 = time.monotonic()
    assert mobius.post_cin(f"{base}/commands", sent[0]) == 201
    assert h.run(lambda: len(h.commands) == 1, 10), s.status()
    print(f"\ncommand: HTTP create to the node's session {1000 * (time.monotonic() - t0):.0f} ms")
    assert json.loads(h.commands[0]) == sent[0]
    for cmd in sent[1:]:
        assert mobius.post_cin(f"{base}/commands", cmd) == 201
    assert h.run(lambda: len(h.commands) == len(sent), 20), s.status()
    # Mobius delays each notification by a random 1-10 ms: they may cross.
    assert sorted((json.loads(c) for c in h.commands), key=lambda c: c["ts"]) == sent
    assert mobius.http("GET", f"{base}/commands/citynode")[0] == 200
    # A command as a JSON string reaches the node as the same bytes.
    assert mobius.post_cin(f"{base}/commands", '{"id":"c-s","cmd":"ping"}') == 201
    assert h.run(lambda: len(h.commands) == len(sent) + 1, 10)
    assert json.loads(h.commands[-1]) == {"id": "c-s", "cmd": "ping"}
    assert s.status()["commands"] == len(sent) + 1


def test_after_a_failover_commands_come_through_the_broker_in_use(mobius, tmp_path,
                                                                 harnesses):
    """The CSE notifies through the broker the AE's poa names. A node whose primary
    broker is down works through a failover broker: its AE, registered while the poa
    named the primary, gets the poa of the broker in use, and commands reach it."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]  # the primary: nothing listens there
    first = session(mobius, tmp_path, port=dead)  # registered naming the primary
    h = Harness(first, mobius.mqtt_port)
    harnesses.append(h)
    assert h.registered(), first.status()
    base = f"{mobius.cse_name}/{first.ae}"
    assert mobius.http("GET", base)[1]["m2m:ae"]["poa"] == [
        f"mqtt://127.0.0.1:{dead}/{first.originator}"]
    h.close()
    # The daemon again (a restart), on the failover broker: the uplink says which.
    s = session(mobius, tmp_path, node=first.ae, port=dead)
    s.connected_to("127.0.0.1", mobius.mqtt_port)
    h = Harness(s, mobius.mqtt_port)
    harnesses.append(h)
    assert h.registered(), s.status()
    assert mobius.http("GET", base)[1]["m2m:ae"]["poa"] == [
        f"mqtt://127.0.0.1:{mobius.mqtt_port}/{s.originator}"]
    assert "poa_refused" not in s.status()
    assert mobius.post_cin(f"{base}/commands", {"id": "via-failover", "cmd": "ping"}) == 201
    assert h.run(lambda: any(b"via-failover" in c for c in h.commands), 10), s.status()


def test_resources_deleted_on_the_cse_are_created_again(mobius, tmp_path, harnesses):
    """4004 on a contentInstance: the session registers again and sends it anew."""
    s = session(mobius, tmp_path)
    h = Harness(s, mobius.mqtt_port)
    harnesses.append(h)
    assert h.registered(), s.status()
    assert h.deliver([telemetry(0)])
    base = f"{mobius.cse_name}/{s.ae}"
    status, _ = mobius.http("DELETE", base, origin=s.originator)
    assert status == 200
    assert mobius.http("GET", base)[0] == 404
    assert h.deliver([telemetry(1), telemetry(2)]), s.status()
    assert h.reopens >= 1 and s.status()["reopens"] >= 1
    assert sorted({c["seq"] for c in mobius.instances(f"{base}/pm")}) == [1, 2]
    assert mobius.http("GET", f"{base}/commands/citynode")[0] == 200


def test_a_silent_cse_delays_but_loses_nothing(own_mobius, tmp_path, harnesses):
    """Mobius stopped (SIGSTOP) with the broker up: requests time out and are sent again
    with new rqis until it answers; every message arrives."""
    mobius = own_mobius
    s = session(mobius, tmp_path, request_timeout_s=1.0, max_retries=1, backoff_max_s=2)
    h = Harness(s, mobius.mqtt_port)
    harnesses.append(h)
    assert h.registered(), s.status()
    pids = mobius.pids()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        h.items += [[telemetry(seq), None, False] for seq in range(10)]
        h.run(lambda: s.status()["overdue"] > 0, 15)
        assert s.status()["timeouts"] > 0 and s.status()["overdue"] > 0
        assert h.pending() == 10
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert h.run(lambda: h.pending() == 0, 60), s.status()
    base = f"{mobius.cse_name}/{s.ae}"
    # Mobius works through the queued attempts when it continues: the later ones of a
    # message find it stored under its name (4105) and store nothing.
    seqs = sorted(c["seq"] for c in mobius.instances(f"{base}/pm"))
    assert seqs == list(range(10)), seqs
    assert s.status()["retries"] > 0
    print(f"\nsilent CSE: {s.status()}")


def test_a_cse_reset_with_data_loss_and_a_restart_lose_nothing(own_mobius, tmp_path,
                                                               harnesses):
    mobius = own_mobius
    s = session(mobius, tmp_path, request_timeout_s=2.0, backoff_max_s=2)
    h = Harness(s, mobius.mqtt_port)
    harnesses.append(h)
    assert h.registered(), s.status()
    assert h.deliver([telemetry(seq) for seq in range(3)])
    base = f"{mobius.cse_name}/{s.ae}"

    # A restart keeping the data: the broker goes too, the session reconnects, 4105s.
    mobius.restart()
    h.items += [[telemetry(seq), None, False] for seq in range(3, 6)]
    assert h.run(lambda: h.pending() == 0, 90), s.status()
    assert h.connects >= 2
    assert sorted({c["seq"] for c in mobius.instances(f"{base}/pm")}) == list(range(6))

    # A reset with data loss (an empty CSE on the same ports): everything is created anew.
    mobius.restart(fresh=True)
    assert mobius.http("GET", base)[0] == 404
    h.items += [[telemetry(seq), None, False] for seq in range(6, 9)]
    assert h.run(lambda: h.pending() == 0, 90), s.status()
    assert sorted({c["seq"] for c in mobius.instances(f"{base}/pm")}) == [6, 7, 8]
    assert mobius.http("GET", f"{base}/commands/citynode")[0] == 200
    assert mobius.post_cin(f"{base}/commands", {"id": "after-reset", "cmd": "ping"}) == 201
    assert h.run(lambda: any(b"after-reset" in c for c in h.commands), 10)


def test_latency_from_request_to_readable_content_instance(mobius, tmp_path, harnesses):
    """Printed for the record, not asserted: publish of one contentInstance create -> its
    response at the session; then publish -> readable over HTTP (a thread reads it by its
    name every 2 ms). A stock Mobius worker sometimes crashes on a create (upstream
    race, ../shared/reference/onem2m-mobius.md) and the request is sent again after
    request_timeout_s: such messages are counted, not timed."""
    s = session(mobius, tmp_path, request_timeout_s=2.0)
    h = Harness(s, mobius.mqtt_port)
    harnesses.append(h)
    assert h.registered(), s.status()
    base = f"{mobius.cse_name}/{s.ae}"
    confirm, readable, retried, unread = [], [], 0, 0
    for seq in range(60):
        item = make_item("health", [Record("uptime", value=seq)], seq)
        name = instance_name(item.pack(), s.epoch)
        seen: list[float] = []
        done = threading.Event()

        def poll(name: str = name, seen: list[float] = seen,
                 done: threading.Event = done) -> None:
            while not done.wait(0.002):
                if mobius.http("GET", f"{base}/health/{name}")[0] == 200:
                    seen.append(time.monotonic())
                    return
        reader = threading.Thread(target=poll, daemon=True) if seq % 2 else None
        if reader:
            reader.start()
        retries = s.status().get("retries", 0)
        h.items.append([item, None, False])
        assert h.run(lambda: h.items[-1][2], 30), s.status()
        if reader:
            reader.join(10)
        done.set()
        if s.status().get("retries", 0) != retries:
            retried += 1
            continue
        (token,) = h.items[-1][1]
        if reader:
            if not seen:  # the worker died under an HTTP read: nothing to time
                unread += 1
                continue
            readable.append(seen[0] - h.sent_at[token])
        else:
            confirm.append(h.confirmed_at[token] - h.sent_at[token])
    # Mobius's la is the greatest name: the names keep it the newest.
    assert mobius.latest(f"{base}/health")["seq"] == 59
    confirm.sort()
    readable.sort()
    print(f"\nlatency, one contentInstance: confirmed at the session median "
          f"{1000 * confirm[len(confirm) // 2]:.1f} ms, p90 "
          f"{1000 * confirm[int(len(confirm) * 0.9)]:.1f} ms (n={len(confirm)}); readable over "
          f"HTTP median {1000 * readable[len(readable) // 2]:.1f} ms, p90 "
          f"{1000 * readable[int(len(readable) * 0.9)]:.1f} ms (n={len(readable)}); "
          f"{retried} sent again after a Mobius worker crash, {unread} reads lost to one")
