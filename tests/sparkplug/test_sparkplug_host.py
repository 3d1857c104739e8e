"""citynode's Sparkplug B edge node, judged by an independent host application.

tests/sparkplug/host_app.py runs on pysparkplug in its own virtual environment
(``make sparkplug-host-venv``; built here when missing, skipped when it cannot be) against
a real mosquitto. First citynode's session alone on a small paho loop
(tests/sparkplug/edge_harness.py), then the whole daemon with an ``[[uplink]]`` of format
``sparkplug`` and emulated sensors: births, aliases, datatypes, units, no seq gap, a
rebirth on request, a command and its result, the primary host's STATE, and the NDEATH
the broker publishes when the node is killed, with the bdSeq of its NBIRTH.
"""

from __future__ import annotations

import importlib.util
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.sparkplug, pytest.mark.broker]

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
COMMAND = json.dumps({"id": "c-42", "cmd": "ping"})


@pytest.fixture(scope="session")
def host_python() -> Path:
    """The host application's interpreter, its environment built if missing."""
    spec = importlib.util.spec_from_file_location("sparkplug_host_venv", HERE / "host_venv.py")
    assert spec is not None and spec.loader is not None
    host_venv = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(host_venv)
    why = host_venv.build()
    if why:
        pytest.skip(f"the Sparkplug host application's environment cannot be built ({why}); "
                    "make sparkplug-host-venv builds it")
    return host_venv.python()


class Proc:
    """A child process whose stdout JSON lines are read as they come."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        self.lines: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                self.lines.put(json.loads(raw))
            except ValueError:
                continue

    def wait_event(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if line.get("event") == event:
                return line
        raise AssertionError(f"no {event!r} within {timeout} s (see {self.log.name})")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()


def host(host_python: Path, port: int, tmp_path: Path, name: str, *args: str) -> Proc:
    p = Proc([str(host_python), str(HERE / "host_app.py"), "--port", str(port), *args],
             tmp_path / f"{name}.log")
    p.wait_event("ready", 20)
    return p


def ddata_bytes(report: dict, device: str) -> list[int]:
    return report["sizes"].get(f"DDATA/{device}", [])


def test_session_against_a_pysparkplug_host(mosquitto, host_python, tmp_path):
    """The session on a paho loop: the primary host comes late, asks for a rebirth, sends
    a command; the node is killed; a restart goes on with the next bdSeq."""
    state = tmp_path / "state"
    app = host(host_python, mosquitto.port, tmp_path, "host1", "--edge", "n1",
               "--host-id", "scada", "--state-delay", "2", "--rebirth-after", "4",
               "--command", COMMAND, "--min-ddata", "12", "--until", "ndeath",
               "--timeout", "60")
    edge = Proc([sys.executable, str(HERE / "edge_harness.py"), "--port", str(mosquitto.port),
                 "--state-dir", str(state), "--primary-host", "scada", "--interval", "0.25"],
                tmp_path / "edge1.log")
    try:
        first = edge.wait_event("connected", 20)
        assert edge.wait_event("command", 40)["data"] == COMMAND
        app.wait_event("checks_done", 40)
    finally:
        edge.kill()  # SIGKILL: the broker publishes the will
    report = app.wait_event("report", 30)
    app.kill()
    assert report["violations"] == []
    assert report["rebirth_honoured"] and report["counts"]["NBIRTH"] >= 2
    assert json.loads(report["command_result"]) == {"id": "c-42", "status": "ok"}
    assert report["ndeath_matched"][-1]
    assert report["ndeath_bdseqs"][-1] == report["nbirth_bdseqs"][-1] == first["bdseq"]
    pm, climate = report["metrics"]["pm"], report["metrics"]["climate"]
    assert pm["pm25"] == {"alias": pm["pm25"]["alias"], "datatype": "INT64", "unit": "ug/m3"}
    assert climate["temp"]["datatype"] == "FLOAT" and climate["temp"]["unit"] == "Cel"
    assert report["values"]["pm"]["n"] == 29 and "pm25" in report["values"]["pm"]
    assert report["metrics"]["(node)"]["uptime"]["unit"] == "s"

    # A restart: the bdSeq goes on (kept in the state directory), no primary host now.
    app = host(host_python, mosquitto.port, tmp_path, "host2", "--edge", "n1",
               "--min-ddata", "3", "--timeout", "30")
    edge = Proc([sys.executable, str(HERE / "edge_harness.py"), "--port", str(mosquitto.port),
                 "--state-dir", str(state), "--interval", "0.25"], tmp_path / "edge2.log")
    try:
        again = edge.wait_event("connected", 20)
        report2 = app.wait_event("report", 30)
    finally:
        edge.kill()
        app.kill()
    assert report2["violations"] == []
    assert again["bdseq"] == (first["bdseq"] + 1) % 256
    assert report2["nbirth_bdseqs"] == [again["bdseq"]]
    sizes = ddata_bytes(report, "pm") + ddata_bytes(report2, "pm")
    assert sizes and max(sizes) < 200


def _daemon_ready() -> str | None:
    """Why the daemon cannot run a Sparkplug uplink yet, or None."""
    try:
        from agent.core import config
    except ImportError as exc:
        return f"agent.core.config: {exc}"
    if not hasattr(config, "UplinkConfig"):
        return "the configuration has no [[uplink]] yet"
    return None


def test_daemon_with_a_sparkplug_uplink(mosquitto, host_python, tmp_path):
    """A real daemon, two emulated PMS5003 (one with a prefix) and 1-s reports for about
    20 s on an [[uplink]] of format sparkplug; the host asks for a rebirth and sends a
    ping; then SIGKILL: the NDEATH carries the NBIRTH's bdSeq."""
    why = _daemon_ready()
    if why:
        pytest.skip(why)
    import itertools

    from agent.tools.simulate import write_config
    from drivers.emulation import SerialEmulator
    from drivers.pms5003.emulator import PMS5003Model

    emus = []
    for i in range(2):
        # values: CF=1 pm1, pm2.5, pm10, then the atmospheric ones the node reports
        model = PMS5003Model(itertools.cycle([(5, 8, 11, 5 + i, 8 + 10 * i, 11 + 20 * i)]),
                             interval_s=0.5, warmup_s=0)
        emu = SerialEmulator(model, tmp_path / "dev" / f"pms{i}")
        emu.start()
        emus.append(emu)
    cfg = tmp_path / "c.toml"
    write_config(cfg, node_id="pole-7", state_dir=tmp_path / "state",
                 ports=[e.path for e in emus], interval=1, fmt="senml-cbor", broker=None,
                 warmup_s=0, read_interval_s=0.3)
    cfg.write_text(cfg.read_text() + "\n".join([
        "", "[[uplink]]", 'name = "scada"', 'format = "sparkplug"', 'host = "127.0.0.1"',
        f"port = {mosquitto.port}", "backoff_initial_s = 0.5", "backoff_max_s = 2",
        "[uplink.sparkplug]", 'group_id = "city"', 'primary_host = "scada-host"', ""]))
    app = host(host_python, mosquitto.port, tmp_path, "host3", "--group", "city",
               "--edge", "pole-7", "--host-id", "scada-host", "--state-delay", "3",
               "--rebirth-after", "5", "--command", COMMAND, "--min-ddata", "40",
               "--until", "ndeath", "--timeout", "90")
    agent = Proc([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                 tmp_path / "agent.log")
    try:
        app.wait_event("checks_done", 60)
    finally:
        agent.kill()
        for emu in emus:
            emu.stop()
    report = app.wait_event("report", 30)
    app.kill()
    log = (tmp_path / "agent.log").read_text(errors="replace")[-3000:]
    assert report["violations"] == [], log
    assert report["rebirth_honoured"]
    result = json.loads(report["command_result"])
    assert result["id"] == "c-42" and result["status"] == "ok", result
    assert report["ndeath_matched"][-1]
    assert report["ndeath_bdseqs"][-1] == report["nbirth_bdseqs"][-1]
    assert set(report["metrics"]) >= {"(node)", "pm0", "pm1"}
    for device in ("pm0", "pm1"):
        assert report["metrics"][device]["pm25"]["unit"] == "ug/m3"
        assert ddata_bytes(report, device)
    # the prefixed sensor's readings reach its own device (s1.pm25 -> pm1/pm25)
    assert report["values"]["pm1"]["pm25"] == 18 and report["values"]["pm0"]["pm25"] == 8
