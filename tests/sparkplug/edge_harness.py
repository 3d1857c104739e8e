"""citynode's Sparkplug session on a real broker, without the daemon: a small paho loop.

Drives :class:`agent.wire.formats.sparkplug.session.SparkplugSession` as an uplink would
(will before connecting, subscriptions and opening on CONNACK, spooled messages rendered
only while the session is ready, inbound messages to ``receive``) and makes a report of a
PMS5003 and an SHT3x every ``--interval`` seconds, SenML-CBOR encoded as the spool keeps
them. A command from NCMD gets a result (``id``, ``status`` ok). Killed with SIGKILL, the
broker publishes its will. Prints one JSON line per event (connected, command).

    python edge_harness.py --port 1883 --state-dir DIR [--primary-host scada]
        [--interval 0.5] [--node n1]
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from agent.wire import formats  # noqa: E402
from agent.wire.formats.sparkplug import Options  # noqa: E402
from agent.wire.formats.sparkplug.session import SparkplugSession  # noqa: E402
from agent.wire.model import Pack, Record  # noqa: E402
from agent.wire.session import Context, Item, SensorInfo  # noqa: E402
from agent.wire.topics import Topics  # noqa: E402

CBOR = formats.get("senml-cbor")


def say(**event: object) -> None:
    print(json.dumps(event), flush=True)


def window(i: int) -> list[Record]:
    pm = 12 + 5 * math.sin(i / 3)
    return [Record("pm1", round(pm * 0.6)), Record("pm1:min", round(pm * 0.5)),
            Record("pm1:max", round(pm * 0.7)), Record("pm25", round(pm)),
            Record("pm25:min", round(pm - 2)), Record("pm25:max", round(pm + 3)),
            Record("pm10", round(pm * 1.6)), Record("pm10:min", round(pm * 1.4)),
            Record("pm10:max", round(pm * 2)), Record("pm:n", 29.0), Record("pm:q", 4.0),
            Record("temp", 21.5 + i / 100), Record("temp:min", 21.0), Record("temp:max", 22.0),
            Record("rh", 45.2), Record("rh:min", 44.0), Record("rh:max", 47.5),
            Record("climate:n", 30.0)]


class Edge:
    def __init__(self, args: argparse.Namespace) -> None:
        t = Topics("citynode", args.node)
        self.ctx = Context(
            node=args.node, topics=t, home=t, boot=7, version="0.1.0",
            sensors=(("pm", "pms5003"), ("climate", "sht3x")), state_dir=Path(args.state_dir),
            uplink="sparkplug", options=Options(primary_host=args.primary_host),
            interval_s=args.interval, commands=True,
            sensor_info=(SensorInfo("pm", "pms5003", "", ("pm1", "pm25", "pm10")),
                         SensorInfo("climate", "sht3x", "", ("temp", "rh"))))
        self.session = SparkplugSession(self.ctx)
        self.args = args
        self.spool: collections.deque[Item] = collections.deque()
        self.seq = 0
        self.connected = False

    def item(self, kind: str, records: list[Record]) -> Item:
        pack = Pack(time=float(round(time.time())), session=7, seq=self.seq, records=records,
                    kind=kind)
        self.seq += 1
        return Item(kind, f"citynode/{self.args.node}/{kind}", CBOR.encode(pack).payload,
                    CBOR.content_type)

    def publish(self, client: mqtt.Client, outs) -> None:
        for out in outs:
            client.publish(out.topic, out.payload, qos=out.qos, retain=out.retain)

    def react(self, client: mqtt.Client, r) -> None:
        if r.reopen:
            self.publish(client, self.session.opening())
        self.publish(client, r.send)
        for c in r.commands:
            say(event="command", data=c.data.decode(errors="replace"))
            try:
                cid = str(json.loads(c.data).get("id", ""))
            except (ValueError, AttributeError):
                cid = ""
            self.spool.appendleft(self.item("result", [Record("id", text=cid),
                                                       Record("status", text="ok")]))

    def run(self) -> None:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-{self.args.node}",
                             protocol=mqtt.MQTTv311, clean_session=True)
        will = self.session.will(Pack(time.time(), 7, None, [Record("status", text="offline")]))
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)

        def on_connect(c, userdata, flags, rc, props) -> None:
            for topic in self.session.subscriptions():
                c.subscribe(topic, qos=1)
            self.publish(c, self.session.opening())
            self.connected = True
            say(event="connected", bdseq=self.session.bdseq)

        def on_message(c, userdata, msg) -> None:
            self.react(c, self.session.receive(msg.topic, bytes(msg.payload),
                                               retained=bool(msg.retain)))

        client.on_connect = on_connect
        client.on_message = on_message
        client.connect("127.0.0.1", self.args.port, keepalive=5)
        self.spool.append(self.item("state", [
            Record("status", text="online"), Record("version", text="0.1.0"),
            Record("boot", float(round(time.time()))), Record("interval", self.args.interval),
            Record("sensors", text="pm:pms5003,climate:sht3x")]))
        next_report, i = time.monotonic(), 0
        while True:
            client.loop(timeout=0.05)
            now = time.monotonic()
            if now >= next_report:
                next_report += self.args.interval
                self.spool.append(self.item("telemetry", window(i)))
                if i % 5 == 4:
                    self.spool.append(self.item("health", [
                        Record("uptime", float(i)), Record("cpu", 1.5),
                        Record("pm:health", text="ok"), Record("climate:health", text="ok")]))
                i += 1
            while self.connected and self.session.ready() and self.spool:
                self.publish(client, self.session.render(self.spool.popleft()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state-dir", required=True)
    p.add_argument("--primary-host", default="")
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--node", default="n1")
    Edge(p.parse_args()).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
