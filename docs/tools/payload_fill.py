"""Regenerates docs from the real code: run via `make docs`."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
import json
import sys

sys.path.insert(0, str(ROOT))
from agent.core.aggregate import Quality
from agent.wire import formats
from agent.wire.quantities import CATALOGUE

o = json.load(open(HERE / "payload_examples.json"))
t = open(HERE / "payload.md.tmpl").read()
def hexblock(h):
    b = bytes.fromhex(h.replace(" ", ""))
    return "\n".join(b[i:i + 16].hex(" ") for i in range(0, len(b), 16))
for k, v in o.items():
    t = t.replace(f"{{{{hex:{k}}}}}", hexblock(v["hex"]))
    t = t.replace(f"{{{{view:{k}}}}}", v["view"].rstrip("\n"))
    t = t.replace(f"{{{{n:{k}}}}}", str(v["n"]))
pms = formats.get("senml-cbor").decode(bytes.fromhex(o["pms"]["hex"].replace(" ", "")))
js = formats.get("senml-json").encode(pms).payload
t = t.replace("{{json:pms}}", js.decode()).replace("{{n:pms_json}}", str(len(js)))
desc = {
    "WARMING_UP": "no reading in the window because the sensor was still warming up (readings during a warm-up are always discarded, so they never taint a window)",
    "STALE": "no reading at all in the window",
    "ERRORS": "corrupt frames, device errors or non-finite values in the window",
    "DISCONNECTED": "the port was gone for part of the window",
    "OUT_OF_RANGE": "some value lay outside the sensor's specified range (kept, not clipped)",
    "HUMID": "a climate sensor on the node measured relative humidity above 70 % in the window: PM readings are unreliable then (flagged, not corrected); set on PM sensors only",
    "FAULT": "the sensor itself reported a fault (PMS5003 error byte non-zero, SPS30 status bits)",
}
rows = ["| bit | value | name | meaning |", "|---|---|---|---|"]
for q in Quality:
    rows.append(f"| {q.value.bit_length() - 1} | {q.value} (0x{q.value:02x}) | `{q.name}` | {desc[q.name]} |")
t = t.replace("{{quality}}", "\n".join(rows))
rows = ["| name | unit | resolution | meaning | IPSO/LwM2M object/resource |", "|---|---|---|---|---|"]
for k, q in CATALOGUE.items():
    unit = f"`{q.unit}`" if q.unit else "(none)"
    rows.append(f"| `{k}` | {unit} | {q.resolution:g} | {q.description} | {q.ipso or '-'} |")
t = t.replace("{{catalogue}}", "\n".join(rows))
assert "{{" not in t, t[t.index("{{"):t.index("{{") + 40]
open(ROOT / "docs" / "payload.md", "w").write(t)
