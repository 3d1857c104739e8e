"""``citynode simulate --onem2m | --sparkplug | --homeassistant HOST:PORT`` (issue 17, item 6):
the configuration it writes for each platform is one the daemon accepts, a bad HOST:PORT or
setting is one line and exit 64, and a run against a broker puts each platform's own
messages there (a Sparkplug NBIRTH, retained Home Assistant discovery).

The oneM2M run against a real Mobius is in tests/onem2m/ (it needs the Mobius fixture).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.core import config
from agent.tools import simulate
from agent.tools.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
NODE = "sim-node-1"


def _args(*argv: str) -> Any:
    return build_parser().parse_args(["simulate", *argv])


def _site_config(tmp_path: Path, *argv: str) -> str:
    """What simulate writes for these options, on sensors this machine has (emulated I2C)."""
    path = tmp_path / "citynode.toml"
    simulate.write_config(path, node_id=NODE, state_dir=tmp_path / "state", ports=[],
                          interval=10, fmt="senml-cbor", broker=("127.0.0.1", 1883),
                          sensors=[{"type": "sht3x", "name": "sht", "bus": "emulator"},
                                   {"type": "bme280", "name": "bme", "bus": "emulator",
                                    "prefix": "bme."}],
                          platforms=simulate.platforms(_args(*argv)))
    return path.read_text()


@pytest.mark.parametrize(("argv", "fmt", "protocol", "options"), [
    (["--onem2m", "127.0.0.1:1883"], "onem2m", "3.1.1",
     {"cse_id": "/Mobius2", "cse_name": "Mobius"}),
    (["--onem2m", "localhost:11883", "--cse-id", "in-cse", "--cse-name", "Base"], "onem2m",
     "3.1.1", {"cse_id": "/in-cse", "cse_name": "Base"}),
    (["--onem2m", "127.0.0.1:1883", "--cse-id", "/Mobius2"], "onem2m", "3.1.1",
     {"cse_id": "/Mobius2"}),
    (["--sparkplug", "127.0.0.1:1883"], "sparkplug", "auto", {"group_id": "citynode"}),
    (["--sparkplug", "[::1]:1883", "--group-id", "site 7"], "sparkplug", "auto",
     {"group_id": "site 7"}),
    (["--homeassistant", "127.0.0.1:1883"], "homeassistant", "auto",
     {"discovery_prefix": "homeassistant"}),
    (["--homeassistant", "127.0.0.1:1883", "--discovery-prefix", "ha/test"], "homeassistant",
     "auto", {"discovery_prefix": "ha/test"}),
])
def test_each_platform_adds_an_uplink_config_check_accepts(
        tmp_path: Path, argv: list[str], fmt: str, protocol: str,
        options: dict[str, str]) -> None:
    text = _site_config(tmp_path, *argv)
    (tmp_path / "state").mkdir()
    checked = config.check(text, str(tmp_path / "citynode.toml"))
    assert not checked.errors, [str(p) for p in checked.errors]
    uplinks = {u.name: u for u in checked.config.uplinks()}
    assert set(uplinks) == {"main", fmt}  # SenML stays on the private broker
    assert uplinks["main"].format == "senml-cbor" and uplinks["main"].port == 1883
    u = uplinks[fmt]
    host, port = simulate.parse_broker(argv[1])
    assert (u.format, u.host, u.port, u.protocol) == (fmt, host, port, protocol)
    table = getattr(u, fmt)
    for key, value in options.items():
        assert getattr(table, key) == value


def test_all_three_platforms_at_once(tmp_path: Path) -> None:
    text = _site_config(tmp_path, "--onem2m", "127.0.0.1:1", "--sparkplug", "127.0.0.1:2",
                        "--homeassistant", "127.0.0.1:3")
    checked = config.check(text, "sim.toml", check_devices=False)
    assert not checked.errors, [str(p) for p in checked.errors]
    assert [(u.name, u.port) for u in checked.config.uplinks()] == [
        ("main", 1883), ("onem2m", 1), ("sparkplug", 2), ("homeassistant", 3)]


def test_the_hint_says_where_to_look() -> None:
    onem2m, = simulate.platforms(_args("--onem2m", "10.1.2.3:1883", "--cse-name", "Base"))
    hint = onem2m.hint(NODE)
    assert ("curl -H 'X-M2M-RI: 1' -H 'X-M2M-Origin: S' "
            f"http://10.1.2.3:7579/Base/{NODE}?rcn=4") in hint
    spb, = simulate.platforms(_args("--sparkplug", "[::1]:1883", "--group-id", "g"))
    assert "spBv1.0/g/#" in spb.hint(NODE) and "[::1]:1883" in spb.hint(NODE)
    ha, = simulate.platforms(_args("--homeassistant", "h:1883"))
    assert "--remove-retained" in ha.leftover(NODE)


@pytest.mark.parametrize("argv", [
    ["--onem2m", "localhost"], ["--onem2m", "127.0.0.1:0"], ["--onem2m", "h:99999"],
    ["--onem2m", "a b:1883"], ["--onem2m", ""], ["--onem2m", ":"],
    ["--sparkplug", "x"], ["--sparkplug", "127.0.0.1:abc"], ["--sparkplug", "[::1"],
    ["--homeassistant", "127.0.0.1:-1"], ["--homeassistant", "h/x:1883"],
    ["--onem2m", "127.0.0.1:1883", "--cse-id", "a b"],
    ["--onem2m", "127.0.0.1:1883", "--cse-id", "/"],
    ["--onem2m", "127.0.0.1:1883", "--cse-name", "a/b"],
    ["--sparkplug", "127.0.0.1:1883", "--group-id", "a/b"],
    ["--sparkplug", "127.0.0.1:1883", "--group-id", "#"],
    ["--homeassistant", "127.0.0.1:1883", "--discovery-prefix", "/x"],
    ["--cse-id", "Mobius2"], ["--group-id", "g"], ["--discovery-prefix", "ha"],
    ["--sparkplug", "127.0.0.1:1883", "--cse-name", "Mobius"],
])
def test_a_bad_platform_option_is_one_line_and_exit_64(
        argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        simulate_starts_nothing: None) -> None:
    work = tmp_path / "work"
    code = main(["simulate", "--workdir", str(work), *argv])
    err = capsys.readouterr().err
    assert code == 64, err
    assert len(err.strip().splitlines()) == 1, err
    assert argv[0] in err or argv[-2] in err, err
    assert not work.exists()


class Collector:
    """A paho subscriber that keeps (topic, payload, retain) of every message."""

    def __init__(self, port: int, *filters: str) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in filters])
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, bytes(m.payload), bool(m.retain)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def topics(self) -> set[str]:
        return {t for t, _, _ in self.messages}


@pytest.mark.timeout(180)
def test_a_run_puts_sparkplug_and_home_assistant_messages_on_the_broker(
        mosquitto: simulate.Mosquitto, tmp_path: Path) -> None:
    from agent.wire.formats.sparkplug import protobuf

    port = mosquitto.port
    seen = Collector(port, "spBv1.0/#", "homeassistant/#")
    work = tmp_path / "sim"
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "agent", "simulate", "--duration", "12", "--interval", "2",
             "--workdir", str(work), "--sparkplug", f"127.0.0.1:{port}",
             "--homeassistant", f"127.0.0.1:{port}"],
            capture_output=True, text=True, cwd=ROOT, timeout=150, stdin=subprocess.DEVNULL)
        time.sleep(0.5)
    finally:
        seen.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "# Sparkplug B: edge node 'sim-node-1' in group 'citynode'" in proc.stderr
    assert "# Home Assistant: device 'sim-node-1' announced under homeassistant/" in proc.stderr
    # Sparkplug: the node was born (bdSeq first, seq 0), each sensor a device with data.
    nbirth = [p for t, p, _ in seen.messages if t == f"spBv1.0/citynode/NBIRTH/{NODE}"]
    assert nbirth, sorted(seen.topics())
    birth = protobuf.decode(nbirth[0])
    assert birth.seq == 0 and birth.metrics[0].name == "bdSeq"
    assert f"spBv1.0/citynode/DBIRTH/{NODE}/pm0" in seen.topics()
    assert f"spBv1.0/citynode/DDATA/{NODE}/pm0" in seen.topics()
    # The uplink's own messages went to the platform broker; SenML stayed on simulate's.
    assert not any(t.startswith("citynode/") for t in seen.topics())
    # Home Assistant: the discovery stays retained for a Home Assistant that starts later.
    late = Collector(port, "homeassistant/#")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not late.messages:
        time.sleep(0.1)
    time.sleep(0.3)
    late.close()
    configs = {t: json.loads(p) for t, p, r in late.messages if r and p}
    doc = configs[f"homeassistant/sensor/{NODE}/pm0_pm25/config"]
    assert doc["device"]["identifiers"] == [NODE]
    assert doc["state_topic"].startswith(f"citynode/{NODE}/ha/")
    # What simulate wrote is a configuration the daemon accepts, as written.
    checked = config.check((work / "citynode.toml").read_text(), "sim.toml",
                           check_devices=False)
    assert not checked.errors, [str(p) for p in checked.errors]
    assert [u.name for u in checked.config.uplinks()] == ["main", "sparkplug", "homeassistant"]


def test_a_platform_that_never_heard_the_node_fails_the_run(tmp_path: Path) -> None:
    """With --duration, a platform broker nothing reached is exit 1, named (here: a port
    nothing listens on; the SenML uplink on the private broker still works)."""
    if simulate.find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    closed = simulate.free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "simulate", "--duration", "6", "--interval", "2",
         "--workdir", str(tmp_path / "sim"), "--sparkplug", f"127.0.0.1:{closed}"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert (f"error: nothing from the node reached the sparkplug broker 127.0.0.1:{closed}"
            in proc.stderr), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
