"""Regenerates docs from the real code: run via `make docs`."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
import json
import subprocess
import sys
from unittest import mock

sys.path.insert(0, str(ROOT))
from agent.core import daemon
from agent.core.aggregate import Aggregator, Quality, WindowSummary
from agent.core.config import parse
from agent.wire import formats
from agent.wire.model import Pack, Record
from agent.wire.topics import Topics

cfg = parse(open(ROOT / "deploy" / "citynode.toml").read(), "citynode.toml", check_devices=False)
node = daemon.Node(cfg)
node.session = 3
T = Topics(cfg.mqtt.prefix, cfg.node.id)
out = {}
def show(name, msg):
    h = msg.payload.hex(" ")
    view = subprocess.run([sys.executable, "-m", "agent", "decode", "--hex", h], cwd=ROOT,
                          capture_output=True, text=True, check=True).stdout
    out[name] = dict(topic=msg.topic, retain=msg.retain, n=len(msg.payload), hex=h, view=view,
                     ct=msg.content_type)
    print(f"### {name}: {msg.topic} retain={msg.retain} {len(msg.payload)} B\n{h}\n{view}")

with mock.patch.object(daemon.time, "time", return_value=1763812350.0):
    node.started_wall = 1763812345.0
    will = node.offline("lost", will=True)  # built when the MQTT client is created: no q
    birth = node.birth()             # sent on CONNACK: q=0
show("will", will); show("birth", birth)
node._seq = 1440
ref = Pack(1763900000, 3, 1440, [Record("pm25", value=12), Record("pm10", value=20),
      Record("w", value=1234.5), Record("d", value=1.52), Record("fall", value=0.07)])
cbor, js_fmt = formats.get("senml-cbor"), formats.get("senml-json")
msg = daemon.Message(T.telemetry, cbor.encode(ref).payload, content_type=cbor.content_type)
show("reference", msg)
node._seq = 1441
agg = Aggregator("pm")
summ = WindowSummary("pm", 29, Quality.ERRORS, {"pm1": (7.62, 6, 10), "pm25": (12.31, 10, 15), "pm10": (19.83, 17, 24)})
recs = agg.records(summ, cfg.report.stats)
show("pms", node.message(T.telemetry, recs, kind="telemetry", t=1763900060))
with mock.patch.object(daemon.time, "time", return_value=1763900071.482):
    node._seq = 1442
    node.send = lambda m: show("event", m)
    from agent.core.sampling import Health
    node.on_health("pm", Health.OK, Health.ERRORS, "checksum")
with mock.patch.object(daemon.time, "time", return_value=1763900093.207):
    node._seq = 1444
    show("shutdown", node.offline("shutdown"))
node._seq = 1445
hrecs = [Record("uptime", value=86400), Record("cpu", value=1.7), Record("rss", value=31457280),
         Record("disk_free", value=5368709120), Record("pm:health", text="ok"),
         Record("spool", value=0), Record("spool_bytes", value=0),
         Record("evicted_tele", value=0), Record("evicted_ev", value=0),
         Record("reconnects", value=2), Record("historical", value=0),
         Record("cmd_ok", value=3), Record("cmd_refused", value=1)]
show("health", node.message(T.health, hrecs, kind="health", t=1763900100))
js = js_fmt.encode(cbor.decode(bytes.fromhex(out["pms"]["hex"]))).payload
print("JSON pms", len(js), js.decode())
json.dump(out, open(HERE / "payload_examples.json", "w"), indent=1)
