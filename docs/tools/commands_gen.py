"""Produce docs/commands.md from its template by running the code for every example.

Run via `make docs`.
"""
import json
import logging
import re
import sys
from pathlib import Path

import cbor2

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
logging.disable(logging.CRITICAL)

from agent.core.commands import sign_command
from agent.wire import formats
from agent.wire.model import Pack
from tests.test_commands import DOC_KEY, DOC_TOML, NOW, doc_processors

procs, clock = doc_processors()
seq = [40]
blocks = {}
packs = {}

def show(title, obj=None, raw=None, mode="", cbor=False, size=True):
    if raw is None:
        raw = cbor2.dumps(obj, canonical=True) if cbor else json.dumps(obj, ensure_ascii=False).encode()
    res = procs[mode].handle(raw)
    pack = Pack(clock.t, 3, seq[0], res.records())
    clock.t += 2
    seq[0] += 1
    out = json.loads(formats.get("senml-json").encode(pack).payload)
    tag = "request" + (" signed" if mode else "") + (" cbor" if cbor else "")
    lines = [f"<!-- {tag} -->"]
    if cbor:
        lines += ["```", raw.hex(" "), "```"]
        lines += ["", "(that is `" + json.dumps(cbor2.loads(raw), separators=(",", ":")) + "` in CBOR)"]
    else:
        lines += ["```json", raw.decode(), "```"]
    body = ",\n ".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in out)
    lines += ["", "<!-- result -->", "```json", "[" + body + "]", "```"]
    if size:
        lines += ["", f"({len(formats.get('senml-cbor').encode(pack).payload)} bytes as SenML CBOR.)"]
    blocks[title] = "\n".join(lines)
    packs[title] = (pack, raw, clock.t - 2)

show("ping", {"id": "c-101", "cmd": "ping", "args": {}})
show("ping-cbor", {"id": "c-102", "cmd": "ping"}, cbor=True)
show("get-config", {"id": "c-103", "cmd": "get-config"})
show("set-config", {"id": "c-104", "cmd": "set-config", "args": {"toml": DOC_TOML.replace('name = "pm"', 'name = "pm"\nread_interval_s = 5.0')}})
show("set-config-refused", {"id": "c-105", "cmd": "set-config", "args": {"toml": "[mqtt]\nhost = \"x\"\n"}})
show("resend-state", {"id": "c-106", "cmd": "resend-state"})
show("sample-now", {"id": "c-107", "cmd": "sample-now", "args": {"sensor": "pm"}})
show("sample-now-unknown", {"id": "c-108", "cmd": "sample-now", "args": {"sensor": "noise"}})
show("device", {"id": "c-109", "cmd": "device", "args": {"sensor": "plug", "action": "relay", "value": True}})
show("device-unknown", {"id": "c-110", "cmd": "device", "args": {"sensor": "pm", "action": "relay", "value": False}})
s = sign_command({"id": "c-201", "cmd": "sample-now", "args": {}}, DOC_KEY, ts=int(clock.t), nonce="Vd1tq6yW3n0C")
show("signed", s, mode="signed")
show("replay", s, mode="signed")
s2 = sign_command({"id": "c-202", "cmd": "ping"}, DOC_KEY, ts=int(clock.t), nonce="f3N8kq0Z")
s2["id"] = "c-203"
show("bad-sig", s2, mode="signed")
show("unsigned", {"id": "c-204", "cmd": "ping"}, mode="signed")
s3 = sign_command({"id": "c-205", "cmd": "ping"}, DOC_KEY, ts=NOW - 3600, nonce="Qm2vX9pL")
show("skew", s3, mode="signed")
show("unknown-command", {"id": "c-111", "cmd": "reboot"})
show("unknown-arg", {"id": "c-112", "cmd": "ping", "args": {"verbose": True}})
show("malformed", raw=b'{"id": "c-113", "cmd": "ping",}')
show("bad-id", {"id": "c 114", "cmd": "ping"})

template = open(HERE / "commands.md.tmpl").read()
from agent.core.commands import canonical_message

extra = {"ping-hex": formats.get("senml-cbor").encode(packs["ping"][0]).payload.hex(" ")}
sd = s
extra["canonical"] = canonical_message(sd["id"], sd["cmd"], sd["ts"], sd["nonce"], sd["args"]).decode()
extra["skew-clock"] = str(int(packs["skew"][2]))
template = re.sub(r"@@([a-z-]+)@@", lambda m: extra[m[1]], template)
used = set()
def sub(m):
    used.add(m[1]); return blocks[m[1]]
doc = re.sub(r"\{\{([a-z-]+)\}\}", sub, template)
assert used == set(blocks), set(blocks) - used
# The template's order must be the order above (the examples share a clock).
order = re.findall(r"\{\{([a-z-]+)\}\}", template)
assert order == list(blocks), order
open(ROOT / "docs" / "commands.md", "w").write(doc)
print("written", len(doc))
