"""End to end: emulated PMS5003 on a pty -> the agent process -> real mosquitto -> subscriber.

Also checks the systemd side over a notify socket the test binds: READY, STATUS,
WATCHDOG while sampling makes progress, STOPPING and a clean flush on SIGTERM.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agent.tools.simulate import Subscriber, write_config
from drivers.emulation import SerialEmulator
from drivers.pms5003.emulator import PMS5003Model

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.timeout(90)

# A repeating script of (pm1_cf1, pm25_cf1, pm10_cf1, pm1, pm25, pm10) values.
SCRIPT = [(5, 8, 11, 5, 8, 11), (7, 12, 16, 7, 12, 16), (6, 10, 13, 6, 10, 13)]


class NotifySocket:
    """What systemd's side of sd_notify sees."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    def lines(self, key: str) -> list[str]:
        return [ln for m in self.messages for ln in m.splitlines() if ln.startswith(key + "=")]

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.sock.close()


def wait_for(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def site(tmp_path: Path, broker, node_id: str, interval: float, fmt: str):
    """An emulated PMS5003, a config for it, and a subscriber to the node's topics."""
    model = PMS5003Model(itertools.cycle(SCRIPT), interval_s=0.5, warmup_s=0.0)
    emu = SerialEmulator(model, tmp_path / "dev" / "pms0")
    emu.start()
    cfg = tmp_path / "citynode.toml"
    write_config(cfg, node_id=node_id, state_dir=tmp_path / "state", ports=[emu.path],
                 interval=interval, fmt=fmt, broker=(broker.host, broker.port),
                 warmup_s=0.0, read_interval_s=0.3)
    received: list[tuple[str, dict, bool]] = []
    sub = Subscriber(broker.host, broker.port, f"citynode/{node_id}/#",
                     lambda t, d, r: received.append((t, d, r)))
    sub.start()
    return model, emu, cfg, received, sub


@pytest.fixture
def node(tmp_path, mosquitto):
    model, emu, cfg, received, sub = site(tmp_path, mosquitto, "e2e-1", 2, "senml-cbor")
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000",
           "PYTHONUNBUFFERED": "1"}
    env.pop("WATCHDOG_PID", None)
    log = open(tmp_path / "agent.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    yield proc, model, received, notify, tmp_path / "agent.log"
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)
    log.close()
    notify.close()
    sub.stop()
    emu.stop()


def test_pms5003_to_subscriber_with_systemd_protocol(node):
    proc, _model, received, notify, logfile = node
    tele = lambda: [d for t, d, _ in received if t.endswith("/telemetry") and d.get("records")  # noqa: E731
                    and any(r["n"] == "pm25" for r in d["records"])]
    wait_for(lambda: len(tele()) >= 2, 30, "two telemetry messages with pm25")
    assert notify.lines("READY") == ["READY=1"]
    status = notify.lines("STATUS")
    assert status and "pm0" in status[-1] and "mqtt" in status[-1]
    wait_for(lambda: len(notify.lines("WATCHDOG")) >= 2, 5, "watchdog pings")

    # Values: every reported mean/min/max lies within what the emulator sent.
    sent_pm25 = {v for *_, v, _ in SCRIPT}
    for d in tele():
        recs = {r["n"]: r["v"] for r in d["records"]}
        assert min(sent_pm25) <= recs["pm25:min"] <= recs["pm25"] <= recs["pm25:max"] <= max(
            sent_pm25)
        assert recs["pm0:n"] >= 1

    # Birth: retained state "online" with the same boot session as the telemetry.
    births = [d for t, d, _ in received if t.endswith("/state")]
    assert births and births[0]["records"][0] == {"n": "status", "vs": "online"}
    session = births[0]["session"]
    assert all(d["session"] == session for _, d, _ in received)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0, logfile.read_text()
    wait_for(lambda: any(d["records"][0].get("vs") == "offline" for t, d, _ in received
                         if t.endswith("/state")), 5, "offline state")
    assert notify.lines("STOPPING") == ["STOPPING=1"]
    goodbye = [d for t, d, _ in received if t.endswith("/state")][-1]
    assert {"n": "reason", "vs": "shutdown"} in goodbye["records"]

    # Sequence numbers: unique, and no gaps (nothing lost between agent and broker).
    seqs = sorted(d["seq"] for _, d, _ in received)
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


def test_birth_is_retained_for_late_subscribers(node, mosquitto):
    _proc, _model, received, _notify, _logfile = node
    wait_for(lambda: any(t.endswith("/state") for t, _, _ in received), 20, "birth")
    late: list[tuple[str, dict, bool]] = []
    sub = Subscriber(mosquitto.host, mosquitto.port, "citynode/e2e-1/state",
                     lambda t, d, r: late.append((t, d, r)))
    sub.start()
    try:
        wait_for(lambda: late, 5, "retained birth")
        assert late[0][2] is True and late[0][1]["records"][0]["vs"] == "online"
    finally:
        sub.stop()


def test_last_will_on_sigkill(node, mosquitto):
    proc, _model, received, _notify, _logfile = node
    wait_for(lambda: any(t.endswith("/state") for t, _, _ in received), 20, "birth")
    proc.kill()
    proc.wait(5)
    wait_for(lambda: any(d["records"][0].get("vs") == "offline" for t, d, _ in received
                         if t.endswith("/state")), 10, "last will")
    will = [d for t, d, _ in received if t.endswith("/state")][-1]
    assert {"n": "reason", "vs": "lost"} in will["records"]


def test_cable_pull_is_survived(tmp_path, mosquitto):
    """The port vanishes and comes back: the agent reports disconnected, then recovers."""
    _, emu, cfg, received, sub = site(tmp_path, mosquitto, "e2e-2", 1, "senml-json")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        health = lambda: [r["vs"] for t, d, _ in received if t.endswith("/event")  # noqa: E731
                          for r in d["records"] if r["n"] == "pm0:health"]
        wait_for(lambda: "ok" in health(), 20, "sensor ok")
        emu.unplug()
        wait_for(lambda: "disconnected" in health(), 15, "disconnected event")
        emu.replug()
        wait_for(lambda: health()[-1] == "ok", 30, "recovery")
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(20)
        sub.stop()
        emu.stop()


def test_every_fine_dust_sensor_at_once(tmp_path, mosquitto):
    """PMS5003 and SDS011 on ptys, SPS30, SHT3x and BME280 on the agent's emulated I2C bus:
    one telemetry pack carries them all, each with its own name, count and band."""
    from drivers.sds011.emulator import SDS011Model

    sds = SerialEmulator(SDS011Model(itertools.cycle([(12, 26)]), interval_s=0.5,
                                     warmup_s=0.0), tmp_path / "dev" / "sds0")
    sds.start()
    extra = [
        {"type": "sds011", "name": "sds", "port": sds.path, "prefix": "sds.", "warmup_s": 0.0,
         "read_interval_s": 0.5},
        {"type": "sps30", "name": "sps", "bus": "emulator", "prefix": "sps.", "warmup_s": 0.0},
        {"type": "sht3x", "name": "sht", "bus": "emulator", "read_interval_s": 0.5},
        {"type": "bme280", "name": "bme", "bus": "emulator", "prefix": "bme.",
         "read_interval_s": 0.5},
    ]
    _, emu, cfg, received, sub = site(tmp_path, mosquitto, "e2e-all", 2, "senml-cbor")
    write_config(cfg, node_id="e2e-all", state_dir=tmp_path / "state", ports=[emu.path],
                 interval=2, fmt="senml-cbor", broker=(mosquitto.host, mosquitto.port),
                 warmup_s=0.0, read_interval_s=0.3, sensors=extra)
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                            cwd=ROOT, stdout=open(tmp_path / "agent.log", "w"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        want = {"pm25", "sds.pm25", "sps.pm25", "temp", "rh", "bme.pressure"}

        def full() -> dict | None:
            for t, d, _ in received:
                names = {r["n"]: r.get("v") for r in d["records"]}
                if t.endswith("/telemetry") and want <= names.keys():
                    return names
            return None

        wait_for(lambda: full() is not None, 40, "a pack with every sensor")
        recs = full()
        assert recs["sds.pm25"] == 12 and recs["sds.pm10"] == 26
        assert recs["sds:aq"] == 10 * 1 + 1  # 12 and 26 ug/m3: both good
        assert recs["pm0:aq"] and recs["sps:aq"]
        assert -40 < recs["temp"] < 60 and 0 <= recs["rh"] <= 100
        assert 300 < recs["bme.pressure"] < 1100
        for s in ("pm0", "sds", "sps", "sht", "bme"):
            assert recs[f"{s}:n"] >= 1, s
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(20)
        sub.stop()
        emu.stop()
        sds.stop()
