"""A Sparkplug B host application built on pysparkplug, to check citynode's edge node.

Runs in its own virtual environment (tests/sparkplug/host_venv.py: pysparkplug pins
paho-mqtt<2) and imports nothing of citynode: it decodes every message with
pysparkplug's own payload classes (its generated protobuf included) and checks what
Eclipse Sparkplug 3.0 asks of an edge node:

* NBIRTH: seq 0, a bdSeq metric (Int64), ``Node Control/Rebirth`` (Boolean, false, no
  alias), every metric with name, datatype and timestamp, aliases unique across the node;
* DBIRTH only after the NBIRTH of the same session, with the same rules;
* NDATA and DDATA: aliases of the births only (no names, no datatypes), a timestamp on
  each metric, DDATA only for a device that is born;
* seq one more than the message before (0 after 255) from each NBIRTH on: no gap;
* NDEATH: no seq, only the bdSeq metric; its bdSeq matches the NBIRTH's;
* it can act as the primary host (publishes its retained STATE, optionally late: no
  birth may come before it), send ``Node Control/Rebirth`` (a new NBIRTH with the same
  bdSeq must follow) and a ``Node Control/Command`` (its result must come back in the
  ``Node Control/Command Result`` metric).

It prints ``{"event": "ready"}`` once subscribed, ``{"event": "checks_done"}`` when the
rebirth, the command and enough DDATA are seen (the edge node may then be killed), and,
when done, one JSON report line;
``violations`` lists every rule broken. Exit status 0 in either case (the test judges).

    python host_app.py --port 1883 --group citynode --edge n1 [--host-id scada]
        [--state-delay 2] [--rebirth-after 3] [--command JSON] [--until ndeath]
        [--timeout 60]
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import time
from typing import Any

import paho.mqtt.client as mqtt
from pysparkplug import DataType, DBirth, DData, DDeath, Metric, NBirth, NCmd, NData, NDeath
from pysparkplug import _protobuf as raw_pb

REBIRTH = "Node Control/Rebirth"
COMMAND = "Node Control/Command"
RESULT = "Node Control/Command Result"


def now_ms() -> int:
    return int(time.time() * 1000)


class Host:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.violations: list[str] = []
        self.counts: dict[str, int] = {}
        self.sizes: dict[str, list[int]] = {}
        self.nbirth_bdseqs: list[int] = []
        self.ndeath_bdseqs: list[int] = []
        self.ndeath_matched: list[bool] = []
        self.seqs: list[int] = []
        self.session = False  # between an NBIRTH and an NDEATH
        self.bdseq: int | None = None
        self.expected: int | None = None
        self.nbirth: NBirth | None = None
        self.births: dict[str, DBirth] = {}
        self.aliases: set[int] = set()
        self.ddata = 0
        self.rebirth_bdseq: int | None = None
        self.rebirth_honoured = False
        self.command_sent = False
        self.command_result: str | None = None
        self.state_at: float | None = None
        self.first_message_at: float | None = None
        self.metrics: dict[str, dict[str, dict[str, Any]]] = {}
        self.values: dict[str, dict[str, Any]] = {}
        self.historical = 0
        self.inbox: queue.Queue[tuple[float, str, bytes]] = queue.Queue()
        self.client = mqtt.Client(client_id=f"sparkplug-host-{args.host_id or 'x'}",
                                  protocol=mqtt.MQTTv311, clean_session=True)
        self.client.on_message = lambda c, u, m: self.inbox.put(
            (time.monotonic(), m.topic, bytes(m.payload)))
        self.connect_ms = now_ms()

    # -- MQTT ------------------------------------------------------------------------
    def state_topic(self) -> str:
        return f"spBv1.0/STATE/{self.args.host_id}"

    def run(self) -> dict[str, Any]:
        a = self.args
        if a.host_id:  # section 6.4.27: the host's death as its will, retained, QoS 1
            self.client.will_set(self.state_topic(), json.dumps(
                {"online": False, "timestamp": self.connect_ms}), qos=1, retain=True)
        self.client.connect("127.0.0.1", a.port, keepalive=30)
        self.client.loop_start()
        self.client.subscribe("spBv1.0/#", qos=1)
        time.sleep(0.3)
        print(json.dumps({"event": "ready"}), flush=True)
        start = time.monotonic()
        if a.host_id and a.state_delay <= 0:
            self.publish_state(True)
        deadline = start + a.timeout
        announced = False
        while time.monotonic() < deadline:
            if a.host_id and self.state_at is None and time.monotonic() - start >= a.state_delay:
                self.publish_state(True)
            try:
                at, topic, payload = self.inbox.get(timeout=0.1)
            except queue.Empty:
                continue
            self.handle(at, topic, payload)
            if not announced and self.checks_done():
                announced = True  # the caller may now kill the edge node: its will is due
                print(json.dumps({"event": "checks_done", "bdseq": self.bdseq}), flush=True)
            if self.done():
                break
        else:
            self.violations.append(f"timed out after {a.timeout} s waiting for {a.until}")
        if a.host_id:
            self.publish_state(False)
        self.client.loop_stop()
        self.client.disconnect()
        return self.report()

    def publish_state(self, online: bool) -> None:
        # section 6.4.27: the birth's timestamp is the one of the will in the CONNECT
        ts = self.connect_ms if online else now_ms()
        if online:  # a birth may arrive before the PUBACK does
            self.state_at = time.monotonic()
        self.client.publish(self.state_topic(), json.dumps(
            {"online": online, "timestamp": ts}), qos=1, retain=True).wait_for_publish(5)

    def send_ncmd(self, metric: Metric) -> None:
        topic = f"spBv1.0/{self.args.group}/NCMD/{self.args.edge}"
        payload = NCmd(timestamp=now_ms(), metrics=(metric,)).encode(include_dtypes=True)
        self.client.publish(topic, payload, qos=0)

    def checks_done(self) -> bool:
        """The rebirth was honoured, the command answered, enough DDATA seen."""
        a = self.args
        if a.rebirth_after and not self.rebirth_honoured:
            return False
        if a.command and self.command_result is None:
            return False
        return self.ddata >= a.min_ddata

    def done(self) -> bool:
        if not self.checks_done():
            return False
        if self.args.until == "ndeath":
            return bool(self.ndeath_matched) and self.ndeath_matched[-1]
        return True

    # -- checks ----------------------------------------------------------------------
    def bad(self, why: str) -> None:
        if len(self.violations) < 200:
            self.violations.append(why)

    def handle(self, at: float, topic: str, payload: bytes) -> None:
        parts = topic.split("/")
        if len(parts) >= 2 and parts[1] == "STATE":
            return
        if len(parts) not in (4, 5) or parts[0] != "spBv1.0":
            self.bad(f"not a Sparkplug topic: {topic}")
            return
        _, group, verb, edge, *dev = parts
        device = dev[0] if dev else ""
        if (group, edge) != (self.args.group, self.args.edge):
            self.bad(f"unexpected group/edge node in {topic}")
            return
        if verb in ("NCMD", "DCMD"):
            return  # our own commands
        self.counts[verb] = self.counts.get(verb, 0) + 1
        self.sizes.setdefault(f"{verb}/{device}" if device else verb, []).append(len(payload))
        if self.first_message_at is None:
            self.first_message_at = at
            if self.args.host_id and self.args.state_delay > 0 and (
                    self.state_at is None or at < self.state_at):
                self.bad(f"{verb} before the primary host's STATE said online")
        try:
            raw = raw_pb.Payload.FromString(payload)
        except Exception as exc:  # the generated class's own DecodeError
            self.bad(f"{topic}: not a Sparkplug B payload: {exc}")
            return
        handler = getattr(self, f"on_{verb.lower()}", None)
        if handler is None:
            self.bad(f"unknown message type {verb}")
            return
        try:
            handler(topic, device, payload, raw)
        except Exception as exc:
            self.bad(f"{topic}: pysparkplug cannot decode it: {type(exc).__name__}: {exc}")

    def check_seq(self, topic: str, raw: Any) -> None:
        if not raw.HasField("seq"):
            self.bad(f"{topic}: no seq")
            return
        self.seqs.append(raw.seq)
        if self.expected is not None and raw.seq != self.expected:
            self.bad(f"{topic}: seq {raw.seq}, expected {self.expected} (a gap)")
        self.expected = (raw.seq + 1) % 256

    def check_birth(self, topic: str, device: str, birth: Any, raw: Any) -> None:
        names = set()
        table = self.metrics.setdefault(device or "(node)", {})
        for m, r in zip(birth.metrics, raw.metrics, strict=True):
            if m.name in names:
                self.bad(f"{topic}: metric {m.name!r} twice")
            names.add(m.name)
            if m.timestamp is None:
                self.bad(f"{topic}: metric {m.name!r} has no timestamp")
            if m.name == REBIRTH:
                if m.alias is not None:
                    self.bad(f"{topic}: {REBIRTH} has an alias")
                continue
            if m.alias is None:
                self.bad(f"{topic}: metric {m.name!r} has no alias")
            elif m.alias in self.aliases:
                self.bad(f"{topic}: alias {m.alias} is used twice on this edge node")
            else:
                self.aliases.add(m.alias)
            if m.is_null and r.WhichOneof("value") is not None:
                self.bad(f"{topic}: metric {m.name!r} is null and has a value")
            props = dict(zip(r.properties.keys, r.properties.values, strict=True))
            unit = props["engUnit"].string_value if "engUnit" in props else ""
            table[m.name] = {"alias": m.alias, "datatype": m.datatype.name, "unit": unit}
        if not raw.HasField("timestamp"):
            self.bad(f"{topic}: no payload timestamp")

    def on_nbirth(self, topic: str, device: str, payload: bytes, raw: Any) -> None:
        birth = NBirth.decode(payload)
        if raw.seq != 0 or not raw.HasField("seq"):
            self.bad(f"{topic}: seq {raw.seq}, an NBIRTH has 0")
        by_name = {m.name: m for m in birth.metrics}
        bd = by_name.get("bdSeq")
        if bd is None or bd.datatype != DataType.INT64 or not isinstance(bd.value, int):
            self.bad(f"{topic}: no Int64 bdSeq metric")
        rb = by_name.get(REBIRTH)
        if rb is None or rb.datatype != DataType.BOOLEAN or rb.value is not False:
            self.bad(f"{topic}: no Boolean {REBIRTH} = false")
        self.session, self.nbirth, self.births = True, birth, {}
        self.aliases = set()
        self.metrics = {}
        self.bdseq = bd.value if bd is not None else None
        self.nbirth_bdseqs.append(self.bdseq)
        self.seqs.append(raw.seq)
        self.expected = (raw.seq + 1) % 256
        self.check_birth(topic, "", birth, raw)
        if self.rebirth_bdseq is not None and not self.rebirth_honoured:
            if self.bdseq == self.rebirth_bdseq:
                self.rebirth_honoured = True
            else:
                self.bad(f"{topic}: rebirth with bdSeq {self.bdseq}, not {self.rebirth_bdseq}")

    def on_dbirth(self, topic: str, device: str, payload: bytes, raw: Any) -> None:
        if not self.session:
            self.bad(f"{topic}: DBIRTH without an NBIRTH in this session")
        self.check_seq(topic, raw)
        birth = DBirth.decode(payload)
        self.births[device] = birth
        self.check_birth(topic, device, birth, raw)

    def check_data(self, topic: str, device: str, raw: Any, data: Any) -> None:
        if not raw.HasField("timestamp"):
            self.bad(f"{topic}: no payload timestamp")
        vals = self.values.setdefault(device or "(node)", {})
        for r, m in zip(raw.metrics, data.metrics, strict=True):
            if r.HasField("name"):
                self.bad(f"{topic}: DATA metric with a name ({r.name!r}), aliases only")
            if not r.HasField("alias"):
                self.bad(f"{topic}: DATA metric without an alias")
            if r.HasField("datatype"):
                self.bad(f"{topic}: DATA metric {m.name!r} with a datatype")
            if not r.HasField("timestamp"):
                self.bad(f"{topic}: DATA metric {m.name!r} without a timestamp")
            self.historical += m.is_historical
            vals[m.name] = m.value
            if m.name == RESULT and isinstance(m.value, str):
                self.command_result = m.value

    def on_ndata(self, topic: str, device: str, payload: bytes, raw: Any) -> None:
        if not self.session or self.nbirth is None:
            self.bad(f"{topic}: NDATA without an NBIRTH")
            return
        self.check_seq(topic, raw)
        self.check_data(topic, "", raw, NData.decode(payload, birth=self.nbirth))

    def on_ddata(self, topic: str, device: str, payload: bytes, raw: Any) -> None:
        birth = self.births.get(device)
        if not self.session or birth is None:
            self.bad(f"{topic}: DDATA for a device with no DBIRTH in this session")
            return
        self.check_seq(topic, raw)
        self.check_data(topic, device, raw, DData.decode(payload, birth=birth))
        self.ddata += 1
        a = self.args
        if a.rebirth_after and self.rebirth_bdseq is None and self.ddata >= a.rebirth_after:
            self.rebirth_bdseq = self.bdseq
            self.send_ncmd(Metric(timestamp=now_ms(), name=REBIRTH, datatype=DataType.BOOLEAN,
                                  value=True))
        if a.command and not self.command_sent and (self.rebirth_honoured or not a.rebirth_after):
            self.command_sent = True
            self.send_ncmd(Metric(timestamp=now_ms(), name=COMMAND, datatype=DataType.STRING,
                                  value=a.command))

    def on_ddeath(self, topic: str, device: str, payload: bytes, raw: Any) -> None:
        DDeath.decode(payload)
        self.check_seq(topic, raw)
        self.births.pop(device, None)

    def on_ndeath(self, topic: str, device: str, payload: bytes, raw: Any) -> None:
        death = NDeath.decode(payload)
        if raw.HasField("seq"):
            self.bad(f"{topic}: an NDEATH has no seq")
        if len(raw.metrics) != 1 or death.bd_seq_metric.name != "bdSeq" or \
                death.bd_seq_metric.datatype != DataType.INT64:
            self.bad(f"{topic}: an NDEATH has the Int64 bdSeq metric alone")
        bd = death.bd_seq_metric.value
        self.ndeath_bdseqs.append(bd)
        matched = self.session and bd == self.bdseq
        self.ndeath_matched.append(bool(matched))
        if matched:
            self.session = False
            self.expected = None

    def report(self) -> dict[str, Any]:
        return {"event": "report", "violations": self.violations, "counts": self.counts,
                "sizes": self.sizes, "nbirth_bdseqs": self.nbirth_bdseqs,
                "ndeath_bdseqs": self.ndeath_bdseqs, "ndeath_matched": self.ndeath_matched,
                "seqs": self.seqs, "ddata": self.ddata, "rebirth_requested":
                self.rebirth_bdseq is not None, "rebirth_honoured": self.rebirth_honoured,
                "command_result": self.command_result, "metrics": self.metrics,
                "values": self.values, "historical": self.historical}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--group", default="citynode")
    p.add_argument("--edge", required=True)
    p.add_argument("--host-id", default="")
    p.add_argument("--state-delay", type=float, default=0.0)
    p.add_argument("--rebirth-after", type=int, default=0, help="DDATA messages, then NCMD")
    p.add_argument("--command", default="", help="a command's JSON for Node Control/Command")
    p.add_argument("--min-ddata", type=int, default=1)
    p.add_argument("--until", choices=("ndeath", "checks"), default="checks")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()
    report = Host(args).run()
    print(json.dumps(report, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
