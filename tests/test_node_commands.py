"""Downlink commands through a real broker to the real agent process, and a health report."""

from __future__ import annotations

import itertools
import json
import os
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.tools.simulate import write_config
from agent.wire import formats
from agent.wire.model import to_readable
from drivers.emulation import SerialEmulator
from drivers.pms5003.emulator import PMS5003Model

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(120)


class Platform:
    """The central platform's side: publishes commands, collects results by correlation."""

    def __init__(self, port: int, node: str) -> None:
        self.node = node
        self.results: dict[str, dict] = {}
        self.by_corr: dict[bytes, dict] = {}
        self.health: list[dict] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"plat-{uuid.uuid4().hex[:6]}",
                        protocol=MQTTProtocolVersion.MQTTv5)
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.subscribe(f"citynode/{node}/result", qos=1)
        c.subscribe(f"citynode/{node}/health", qos=1)
        c.loop_start()
        self.client = c
        time.sleep(0.3)

    def _on_message(self, client, userdata, msg) -> None:
        doc = to_readable(formats.decode(msg.payload))
        recs = {r["n"]: r.get("vs", r.get("v", r.get("vb"))) for r in doc["records"]}
        if msg.topic.endswith("/health"):
            self.health.append(recs)
            return
        if recs.get("id"):
            self.results[recs["id"]] = recs
        corr = getattr(msg.properties, "CorrelationData", None)
        if corr:
            self.by_corr[corr] = recs

    def send(self, body: bytes | dict, correlation: bytes | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        props = None
        if correlation:
            props = Properties(PacketTypes.PUBLISH)
            props.CorrelationData = correlation
        self.client.publish(f"citynode/{self.node}/command", data, qos=1, properties=props)

    def wait(self, pred, timeout: float = 15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = pred()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError("timed out")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def running(tmp_path, mosquitto):
    model = PMS5003Model(itertools.cycle([(5, 8, 11, 5, 8, 11)]), interval_s=0.5, warmup_s=0)
    emu = SerialEmulator(model, tmp_path / "dev" / "pms0")
    emu.start()
    cfg = tmp_path / "citynode.toml"
    write_config(cfg, node_id="cmd-1", state_dir=tmp_path / "state", ports=[emu.path],
                 interval=2, fmt="senml-cbor", broker=(mosquitto.host, mosquitto.port),
                 warmup_s=0, read_interval_s=0.3)
    with open(cfg, "a") as f:
        f.write("\n[health]\ninterval_s = 10\n[commands]\nrate_per_min = 600\n")
    platform = Platform(mosquitto.port, "cmd-1")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=open(tmp_path / "agent.log", "w"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    platform.wait(lambda: platform.send({"id": "warm", "cmd": "ping"}) or
                  platform.results.get("warm"), 20)
    yield proc, platform, cfg, tmp_path
    proc.terminate()
    proc.wait(20)
    platform.close()
    emu.stop()


def test_ping_and_get_config_with_correlation(running):
    _proc, platform, _cfg, _ = running
    platform.send({"id": "p1", "cmd": "ping"}, correlation=b"corr-1")
    r = platform.wait(lambda: platform.by_corr.get(b"corr-1"))
    assert r["status"] == "ok" and r["pong"] is True and r["id"] == "p1"
    platform.send({"id": "g1", "cmd": "get-config"})
    r = platform.wait(lambda: platform.results.get("g1"))
    assert r["status"] == "ok" and 'id = "cmd-1"' in r["toml"]


def test_hostile_commands_get_errors_and_change_nothing(running):
    proc, platform, cfg, _ = running
    before = cfg.read_text()
    bad = [
        b"\xff\x00garbage",
        b"{" * 5000,
        json.dumps({"id": "x1", "cmd": "shell", "args": {"c": "rm -rf /"}}).encode(),
        json.dumps({"id": "x2", "cmd": "get-config", "args": {"path": "/etc/shadow"}}).encode(),
        json.dumps({"id": "x3", "cmd": "ping", "extra": 1}).encode(),
        os.urandom(20000),
    ]
    for b in bad:
        platform.send(b)
    platform.send({"id": "after", "cmd": "ping"})
    platform.wait(lambda: platform.results.get("after"))
    for key in ("x1", "x2", "x3"):
        assert platform.results[key]["status"] == "error", platform.results[key]
    assert cfg.read_text() == before
    assert proc.poll() is None


def test_set_config_applies_and_rolls_back(running):
    proc, platform, cfg, _tmp_path = running
    text = cfg.read_text()
    # A new sensor on a port that does not exist: refused before anything changes.
    broken = text + '\n[[sensor]]\ntype = "pms5003"\nname = "pm9"\nport = "/dev/nope"\n' \
        'prefix = "z."\n'
    platform.send({"id": "s1", "cmd": "set-config", "args": {"toml": broken}})
    r = platform.wait(lambda: platform.results.get("s1"))
    assert r["status"] == "error" and "/dev/nope" in r["error"]
    # Changing [mqtt] remotely is refused: it could cut the node off.
    platform.send({"id": "s2", "cmd": "set-config", "args": {
        "toml": text.replace("backoff_max_s = 10", "backoff_max_s = 11")}})
    r = platform.wait(lambda: platform.results.get("s2"))
    assert r["status"] == "error" and "mqtt" in r["error"]
    # A valid change is applied and written atomically.
    new = text.replace("interval_s = 2", "interval_s = 3", 1)
    platform.send({"id": "s3", "cmd": "set-config", "args": {"toml": new}})
    r = platform.wait(lambda: platform.results.get("s3"), 30)
    assert r["status"] == "ok", r
    assert cfg.read_text() == new
    assert proc.poll() is None


def test_a_port_that_is_no_serial_device_is_refused_before_anything_changes(running):
    """A regular file passes an existence check, never a serial port's: validation
    refuses it, naming the key, and the running sensor is not touched."""
    _proc, platform, cfg, tmp_path = running
    text = cfg.read_text()
    fake = tmp_path / "not-a-tty"
    fake.write_text("")
    new = text.replace(f'port = "{tmp_path}/dev/pms0"', f'port = "{fake}"')
    assert new != text
    platform.send({"id": "f1", "cmd": "set-config", "args": {"toml": new}})
    r = platform.wait(lambda: platform.results.get("f1"), 40)
    assert r["status"] == "error" and "port" in r["error"], r
    assert "not a serial device" in r["error"] and "rolled back" not in r["error"], r
    assert cfg.read_text() == text
    platform.send({"id": "f2", "cmd": "sample-now"})
    assert platform.wait(lambda: platform.results.get("f2"))["status"] == "ok"


def test_rollback_when_new_sensor_cannot_open(running):
    """A serial device node (validation passes) whose UART is not there: rolled back."""
    _proc, platform, cfg, tmp_path = running
    text = cfg.read_text()
    fake = tmp_path / "ttyDEAD"
    try:  # a character device of the serial major with no UART behind it (ENXIO)
        os.mknod(fake, stat.S_IFCHR | 0o600, os.makedev(4, 250))
    except OSError as exc:
        pytest.skip(f"cannot make a device node here: {exc.strerror}")
    new = text.replace(f'port = "{tmp_path}/dev/pms0"', f'port = "{fake}"')
    assert new != text
    platform.send({"id": "r1", "cmd": "set-config", "args": {"toml": new}})
    r = platform.wait(lambda: platform.results.get("r1"), 40)
    assert r["status"] == "error" and "rolled back" in r["error"], r
    assert cfg.read_text() == text
    # The old sensor samples again.
    platform.send({"id": "r2", "cmd": "sample-now"})
    assert platform.wait(lambda: platform.results.get("r2"))["status"] == "ok"


def test_health_report_arrives(running):
    _proc, platform, _cfg, _ = running
    h = platform.wait(lambda: platform.health and platform.health[-1], 80)
    assert h["pm0:health"] in ("ok", "warming_up")
    assert h["uptime"] >= 0 and h["rss"] > 1_000_000 and h["spool"] >= 0
    assert "disk_free" in h and "reconnects" in h and h["cmd_ok"] >= 1


def test_retained_commands_are_ignored(tmp_path, mosquitto):
    """A retained command would be handed over at every reconnect: the node never runs it."""
    platform = Platform(mosquitto.port, "cmd-2")
    platform.client.publish("citynode/cmd-2/command",
                            json.dumps({"id": "ret1", "cmd": "ping"}).encode(), qos=1,
                            retain=True)
    cfg = tmp_path / "c.toml"
    write_config(cfg, node_id="cmd-2", state_dir=tmp_path / "state", ports=[], interval=5,
                 fmt="senml-cbor", broker=(mosquitto.host, mosquitto.port))
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        platform.wait(lambda: platform.send({"id": "live1", "cmd": "ping"}) or
                      platform.results.get("live1"), 20)
        time.sleep(0.5)
        assert "ret1" not in platform.results
    finally:
        platform.client.publish("citynode/cmd-2/command", b"", qos=1, retain=True)
        proc.terminate()
        proc.wait(20)
        platform.close()
