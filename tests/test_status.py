"""`citynode status`: the daemon's status.json snapshot, its verdict, and the command."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.core import config, status_file
from agent.core.daemon import Node
from agent.core.sampling import Health
from agent.tools import status
from agent.tools.cli import main
from agent.tools.simulate import Subscriber, write_config
from agent.wire.spool import Spool

ROOT = Path(__file__).resolve().parent.parent

CFG = """
[node]
id = "st-1"
[mqtt]
host = "127.0.0.1"
port = 1884
[[sensor]]
type = "sht3x"
name = "sht"
bus = "emulator"
[[sensor]]
type = "pms5003"
name = "pm"
port = "/dev/null"
"""


def loop(name: str, health: Health, values: dict[str, float], age: float | None,
         detail: str = "") -> SimpleNamespace:
    return SimpleNamespace(sensor=name, health=health, detail=detail, last_values=values,
                           last_reading_at=None if age is None else time.monotonic() - age,
                           readings=7, errors=1, reopens=0)


def fake_uplink(connected: bool = True) -> SimpleNamespace:
    return SimpleNamespace(
        connected=connected, state="connected to 127.0.0.1:1884 (MQTT 5)" if connected
        else "disconnected: cannot connect to 127.0.0.1:1884 (refused)",
        protocol_name="5", client_id="citynode-st-1", reconnects=2, published=40, refused=0,
        historical=3, connected_since=time.monotonic() - 30 if connected else None,
        pending=lambda: 1)


@pytest.fixture
def node(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Node(config.parse(CFG, check_devices=False), config_path=tmp_path / "c.toml")
    n.session, n._seq, n.messages = 4, 42, 42
    n.started_wall = time.time() - 125
    n.loops = [loop("sht", Health.OK, {"temp": 21.5, "rh": 40.0}, 0.5),
               loop("pm", Health.WARMING_UP, {}, None, "discarding readings")]
    n.uplink = fake_uplink()
    n.spool = Spool(tmp_path / "spool.db", batch_s=0)
    yield n
    n.spool.close()


# -- the snapshot -------------------------------------------------------------------------
def test_snapshot_collects_sensors_uplink_spool_and_models(node):
    now = time.time()
    a = node.spool.put("event", "t/e", b"x", created=now - 50)  # acknowledged: not pending
    node.spool.put("event", "t/e", b"y", created=now - 20)
    node.spool.put("telemetry", "t/t", b"z" * 10, created=now - 35)
    node.spool.ack("event", a.id)
    node.features = [SimpleNamespace(name="safety", status=lambda: {"models": {"fall": "1.2.0"}})]
    snap = status_file.build_snapshot(node, period_s=5, last_disconnect=now - 60, now_wall=now)

    assert snap["node_id"] == "st-1" and snap["pid"] == os.getpid()
    assert snap["boot_session"] == 4 and snap["last_seq"] == 41 and snap["state"] == "running"
    assert 124 < snap["uptime_s"] < 127 and snap["written_at"] == round(now, 3)
    sht, pm = snap["sensors"]
    assert sht == {"name": "sht", "type": "sht3x", "health": "ok", "detail": "",
                   "values": {"temp": 21.5, "rh": 40.0}, "units": {"temp": "Cel", "rh": "%RH"},
                   "last_reading_age_s": pytest.approx(0.5, abs=0.2), "readings": 7,
                   "errors": 1, "reopens": 0}
    assert pm["type"] == "pms5003" and pm["health"] == "warming_up"
    assert pm["last_reading_age_s"] is None and pm["detail"] == "discarding readings"
    up = snap["uplink"]
    assert up["connected"] is True and up["broker"] == "127.0.0.1:1884" and up["tls"] is False
    assert up["protocol"] == "5" and up["reconnects"] == 2
    assert up["last_connect"] == pytest.approx(now - 30, abs=1)
    assert up["last_disconnect"] == pytest.approx(now - 60)
    sp = snap["spool"]
    assert sp["depth"] == 2 and sp["lanes"] == {"event": 1, "telemetry": 1}
    assert sp["oldest_pending_age_s"] == pytest.approx(35, abs=1)  # not the acked one (50)
    assert sp["mode"] == "disk" and sp["max_bytes"] == 32 * 1024**2
    assert snap["models"] == {"fall": "1.2.0"}
    json.dumps(snap)  # serialisable as it is


def test_snapshot_in_local_mode_has_no_uplink_or_spool(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    n = Node(config.parse('[node]\nid = "loc"\n'))
    snap = status_file.build_snapshot(n)
    assert snap["local_mode"] is True and snap["uplink"] is None and snap["spool"] is None
    assert snap["sensors"] == [] and snap["models"] == {} and snap["last_seq"] is None
    assert status.assess(snap)[0] == status.EX_OK


# -- the verdict --------------------------------------------------------------------------
def snap_of(node, **kw) -> dict:
    return status_file.build_snapshot(node, period_s=5, **kw)


def test_assess_ok_while_warming_up_or_sleeping(node):
    node.loops.append(loop("sds", Health.SLEEPING, {}, 100))
    code, line, problems = status.assess(snap_of(node))
    assert (code, problems) == (0, []) and line == "running, all ok"


@pytest.mark.parametrize("change, expect", [
    (lambda n: setattr(n.loops[0], "health", Health.STALE), "sensor sht stale"),
    (lambda n: setattr(n.loops[0], "health", Health.DISCONNECTED), "sensor sht disconnected"),
    (lambda n: setattr(n, "uplink", fake_uplink(False)), "uplink down (disconnected: cannot"),
    (lambda n: setattr(n.spool, "disk_full", True), "spool in memory: the disk is full"),
])
def test_assess_degraded(node, change, expect):
    change(node)
    code, line, problems = status.assess(snap_of(node))
    assert code == status.EX_DEGRADED and expect in line and len(problems) == 1


def test_assess_not_running_stale_dead_or_stopped(node):
    snap = snap_of(node)
    # Written 16 s ago with a 5 s period: three periods missed, the process still there.
    code, line, _ = status.assess(snap, now=snap["written_at"] + 16)
    assert code == 3 and line.startswith("not responding") and "hung" in line
    assert status.assess(snap, now=snap["written_at"] + 14)[0] == 0
    code, line, _ = status.assess(snap, alive=lambda pid: False)
    assert code == 3 and f"process {os.getpid()} is gone" in line
    code, line, _ = status.assess(snap_of(node, state="stopped"))
    assert code == 3 and line.startswith("not running: stopped cleanly")


def test_pid_alive():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert status.pid_alive(os.getpid()) and not status.pid_alive(dead.pid)


# -- the table ----------------------------------------------------------------------------
def test_render_table(node):
    node.spool.put("telemetry", "t/t", b"z" * 100, created=time.time() - 75)
    snap = snap_of(node)
    text = status.render(snap, status.assess(snap), "/run/citynode/status.json")
    lines = text.splitlines()
    assert lines[0] == "citynode st-1: OK - running, all ok"
    assert "pid" in lines[1] and "up 2 min" in lines[1] and "boot session 4" in lines[1]
    assert "/run/citynode/status.json" in lines[2]
    head = next(ln for ln in lines if ln.lstrip().startswith("SENSOR"))
    sht = next(ln for ln in lines if ln.lstrip().startswith("sht "))
    assert head.split() == ["SENSOR", "TYPE", "HEALTH", "LAST", "READING", "VALUES"]
    assert "sht3x" in sht and " ok " in sht and "temp=21.50 Cel rh=40.0 %RH" in sht
    pm = next(ln for ln in lines if ln.lstrip().startswith("pm "))
    assert "warming_up (discarding readings)" in pm and "never" in pm
    assert any("uplink  connected to 127.0.0.1:1884 (MQTT 5, no TLS)" in ln for ln in lines)
    spool = next(ln for ln in lines if ln.lstrip().startswith("spool"))
    assert "1 pending (event 0, telemetry 1)" in spool and "oldest 1 min 15 s" in spool
    assert "on disk" in spool and lines[-1].split() == ["models", "none"]


def test_render_degraded_and_local_mode(node, tmp_path, monkeypatch):
    node.uplink = fake_uplink(False)
    snap = snap_of(node)
    text = status.render(snap, status.assess(snap), "f")
    assert text.startswith("citynode st-1: DEGRADED - running, degraded: uplink down")
    assert "uplink  DOWN: disconnected: cannot connect" in text
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    local = status_file.build_snapshot(Node(config.parse('[node]\nid = "loc"\n')))
    text = status.render(local, status.assess(local), "f")
    assert "no sensors configured" in text and "local mode" in text


# -- the writer ---------------------------------------------------------------------------
def test_writer_path_period_and_change_detection(node, tmp_path):
    t = [100.0]
    run = tmp_path / "run"
    run.mkdir()
    w = status_file.StatusWriter(node, tmp_path / "state", env={"RUNTIME_DIRECTORY": str(run)},
                            clock=lambda: t[0])
    assert w.path == run / "status.json" and w.period_s == 5
    w.tick("starting")
    first = json.loads(w.path.read_text())
    assert first["state"] == "starting" and oct(w.path.stat().st_mode & 0o777) == "0o644"
    w.path.unlink()
    t[0] += 1
    w.tick("running")  # state changed: written at once
    assert json.loads(w.path.read_text())["state"] == "running"
    w.path.unlink()
    t[0] += 1
    w.tick()
    assert not w.path.exists()  # nothing changed, period not over
    node.loops[0].health = Health.STALE
    w.tick()
    assert json.loads(w.path.read_text())["sensors"][0]["health"] == "stale"
    w.path.unlink()
    node.uplink.connected = False  # a disconnect is remembered and written at once
    w.tick()
    assert json.loads(w.path.read_text())["uplink"]["last_disconnect"] == pytest.approx(
        time.time(), abs=2)
    w.path.unlink()
    t[0] += 5
    w.tick()
    assert w.path.exists()  # the period
    w.close()
    assert json.loads(w.path.read_text())["state"] == "stopped"
    assert [p.name for p in run.iterdir()] == ["status.json"]  # no temporary file left

    plain = status_file.StatusWriter(node, tmp_path / "state", env={})
    assert plain.path == tmp_path / "state" / "status.json" and plain.period_s == 30


def test_writer_failure_is_logged_once_and_never_raises(node, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    w = status_file.StatusWriter(node, blocker / "sub", env={}, clock=lambda: 0.0)
    with caplog.at_level(logging.INFO, "citynode.status"):
        for h in (Health.OK, Health.STALE, Health.OK, Health.ERRORS):
            node.loops[0].health = h
            w.tick()  # a change each time: an attempt each time, a warning only once
        node.loops = None  # a snapshot bug is survived too
        w.tick()
        w.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot write the status file" in warnings[0].message
    blocker.unlink()
    node.loops = []
    with caplog.at_level(logging.INFO, "citynode.status"):
        w.tick()
    assert w.path.exists() and "written again" in caplog.records[-1].message


# -- the command --------------------------------------------------------------------------
def run_cli(capsys, *args: str) -> tuple[int, str]:
    code = main(["status", *args])
    return code, capsys.readouterr().out


def test_command_on_a_file(node, tmp_path, capsys):
    f = tmp_path / "status.json"
    status_file.write_snapshot(f, snap_of(node))
    code, out = run_cli(capsys, "--file", str(f))
    assert code == 0 and out.startswith("citynode st-1: OK")
    code, out = run_cli(capsys, "--file", str(f), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["node_id"] == "st-1" and doc["sensors"][0]["name"] == "sht"
    assert doc["assessment"]["exit_code"] == 0 and doc["assessment"]["file"] == str(f)

    node.loops[1].health = Health.ERRORS
    status_file.write_snapshot(f, snap_of(node))
    code, out = run_cli(capsys, "--file", str(f))
    assert code == 1 and "DEGRADED" in out and "sensor pm errors" in out

    old = snap_of(node)
    old["written_at"] -= 60
    status_file.write_snapshot(f, old)
    code, out = run_cli(capsys, "--file", str(f))
    assert code == 3 and "NOT RUNNING - not responding" in out

    f.write_text("{half")
    code, out = run_cli(capsys, "--file", str(f))
    assert code == 4 and "cannot read" in out


def test_command_without_a_file_says_not_running(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[node]\nid = "x"\nstate_dir = "{tmp_path / "state"}"\n')
    monkeypatch.setattr(status, "SYSTEMD_RUNTIME_DIR", tmp_path / "run")
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    code, out = run_cli(capsys, "--config", str(cfg))
    assert code == 3 and "no status file" in out and str(tmp_path / "state") in out
    code, out = run_cli(capsys, "--config", str(cfg), "--json")
    assert code == 3 and json.loads(out)["assessment"]["exit_code"] == 3
    # The newest of several candidates wins: the daemon moved to systemd's runtime dir.
    (tmp_path / "state").mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "state" / "status.json").write_text(json.dumps(
        {"written_at": 1.0, "state": "stopped", "node_id": "x", "pid": 1}))
    os.utime(tmp_path / "state" / "status.json", (1, 1))
    status_file.write_snapshot(tmp_path / "run" / "status.json", {
        "written_at": time.time(), "state": "running", "node_id": "x", "pid": os.getpid(),
        "period_s": 5, "sensors": [], "uplink": None, "spool": None})
    code, out = run_cli(capsys, "--config", str(cfg))
    assert code == 0 and str(tmp_path / "run" / "status.json") in out


# -- end to end ---------------------------------------------------------------------------
def wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.broker
@pytest.mark.timeout(60)
def test_status_of_a_real_agent(tmp_path, mosquitto):
    from drivers.emulation import SerialEmulator
    from drivers.pms5003.emulator import PMS5003Model

    model = PMS5003Model(itertools.cycle([(5, 8, 11, 5, 8, 11)]), interval_s=0.3, warmup_s=0.0)
    emu = SerialEmulator(model, tmp_path / "dev" / "pms0")
    emu.start()
    cfg = tmp_path / "citynode.toml"
    write_config(cfg, node_id="st-e2e", state_dir=tmp_path / "state", ports=[emu.path],
                 interval=2, fmt="senml-cbor", broker=(mosquitto.host, mosquitto.port),
                 warmup_s=0.0, read_interval_s=0.3)
    run_dir = tmp_path / "run"  # what RuntimeDirectory=citynode gives the service
    run_dir.mkdir()
    env = {**os.environ, "RUNTIME_DIRECTORY": str(run_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("NOTIFY_SOCKET", None)
    received: list[str] = []
    sub = Subscriber(mosquitto.host, mosquitto.port, "citynode/st-e2e/telemetry",
                     lambda t, d, r: received.append(t))
    sub.start()
    agent_log = open(tmp_path / "agent.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                            cwd=ROOT, env=env, stdout=agent_log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agent", "status", "--config", str(cfg),
                               *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=20)

    try:
        path = run_dir / "status.json"

        def healthy() -> dict | None:
            if not path.exists():
                return None
            snap = json.loads(path.read_text())
            ok = (snap["state"] == "running" and snap["uplink"]["connected"]
                  and snap["sensors"][0]["health"] == "ok" and snap["sensors"][0]["values"])
            return snap if ok else None

        wait_for(healthy, 25, "status.json with a connected uplink and pm0 ok")
        wait_for(lambda: received, 10, "telemetry")  # so last_seq and messages are > 0

        res = cli()
        assert res.returncode == 0, res.stdout + res.stderr
        lines = res.stdout.splitlines()
        assert lines[0] == "citynode st-e2e: OK - running, all ok"
        pm0 = next(ln for ln in lines if ln.lstrip().startswith("pm0 "))
        assert "pms5003" in pm0 and " ok " in pm0 and "pm25=8 ug/m3" in pm0
        assert f"uplink  connected to 127.0.0.1:{mosquitto.port} (MQTT 5, no TLS)" in res.stdout
        assert "spool   " in res.stdout and "on disk" in res.stdout

        res = cli("--json")
        doc = json.loads(res.stdout)
        assert res.returncode == 0 and doc["pid"] == proc.pid and doc["node_id"] == "st-e2e"
        assert doc["assessment"]["file"] == str(path) and doc["assessment"]["age_s"] < 6
        (s,) = doc["sensors"]
        assert s["name"] == "pm0" and s["type"] == "pms5003" and s["health"] == "ok"
        assert s["values"]["pm25"] == 8 and s["last_reading_age_s"] < 3
        up = doc["uplink"]
        assert up["broker"] == f"127.0.0.1:{mosquitto.port}" and up["protocol"] == "5"
        assert up["reconnects"] == 0 and up["last_connect"] <= time.time()
        assert doc["spool"]["mode"] == "disk" and set(doc["spool"]["lanes"]) == {
            "event", "telemetry"}
        assert doc["boot_session"] == 1 and doc["last_seq"] >= 1
        # PM readings feed fire detection, which runs on rules: no model to list
        assert "fire" not in doc["models"]
        assert doc["features"]["safety"] == {"fire_alarms": 0}

        # The cable pulled: degraded, exit 1, within a status period.
        emu.unplug()
        wait_for(lambda: cli().returncode == 1, 15, "exit 1 after the cable was pulled")
        assert "sensor pm0 disconnected" in cli().stdout
        emu.replug()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, (tmp_path / "agent.log").read_text()
        res = cli()
        assert res.returncode == 3 and "NOT RUNNING - stopped cleanly at" in res.stdout
        assert json.loads(cli("--json").stdout)["assessment"]["exit_code"] == 3
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        agent_log.close()
        sub.stop()
        emu.stop()


@pytest.mark.timeout(60)
def test_status_after_sigkill_says_the_process_is_gone(tmp_path):
    """Local mode is enough here: what matters is a snapshot left by a dead process."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[node]\nid = "k"\nstate_dir = "{tmp_path}"\n[log]\ntarget = "stderr"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("RUNTIME_DIRECTORY",
                                                              "NOTIFY_SOCKET")}
    proc = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: (tmp_path / "status.json").exists() and json.loads(
            (tmp_path / "status.json").read_text())["state"] == "running", 20, "status.json")
    finally:
        proc.kill()
        proc.wait(5)
    res = subprocess.run([sys.executable, "-m", "agent", "status", "--config", str(cfg)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=20)
    assert res.returncode == 3 and f"process {proc.pid} is gone" in res.stdout


# -- hostile snapshots: every malformed one is exit 4, never a traceback --------------------
def _cli_out(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["status", *args])
    got = capsys.readouterr()
    return code, got.out, got.err


def _json_paths(value: object, path: tuple = ()) -> list[tuple]:
    """Every place in a JSON document: the keys and indexes leading to it."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _json_paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _json_paths(v, (*path, i))
    return out


def _at(doc: object, path: tuple) -> object:
    for p in path:
        doc = doc[p]  # type: ignore[index]
    return doc


def _json_class(v: object) -> str:
    if v is None or isinstance(v, bool | str | list | dict):
        return type(v).__name__
    return "number"


#: Keys whose absence makes a snapshot unusable (docs/status.md "Snapshot fields").
REQUIRED_AT = {(): set(status.REQUIRED), ("sensors", "*"): {"name", "health"},
               ("uplink",): {"connected"}, ("spool",): {"mode"}}
#: Objects with a fixed set of fields, where an unknown field is tolerated (a newer daemon).
OBJECTS = {(), ("sensors", "*"), ("uplink",), ("spool",)}


def _shape(path: tuple) -> tuple:
    return tuple("*" if isinstance(p, int) else p for p in path)


def full_snapshot(node) -> dict:
    """A real snapshot with every part filled in: sensors, uplink, spool, models, features."""
    node.features = [SimpleNamespace(name="safety", status=lambda: {
        "models": {"fall": "fall 2026.12.1"}, "fire_alarms": 0, "falls": 0,
        "per_room": {"hall": 1.5, "attic": None}})]
    node.spool.put("telemetry", "t/t", b"z" * 10, created=time.time() - 5)
    return json.loads(json.dumps(snap_of(node, last_disconnect=time.time() - 60)))


@pytest.mark.parametrize("text, why", [
    ("", "empty"),
    ("   \n", "empty"),
    ("{half", "not JSON"),
    ("[]", "not a citynode status snapshot"),
    ('"written_at"', "not a citynode status snapshot"),
    ("[" * 100_000 + "]" * 100_000, "not a snapshot"),  # nesting beyond the recursion limit
    ('{"written_at": 1' + "0" * 5000 + "}", "not a snapshot"),  # past int's digit limit
])
def test_unparseable_snapshots_exit_4(tmp_path, capsys, text, why):
    f = tmp_path / "status.json"
    f.write_text(text)
    code, out, err = _cli_out(capsys, "--file", str(f))
    assert code == 4 and why in out and out.startswith("citynode status: cannot read"), out
    assert "Traceback" not in out + err


def test_snapshot_file_that_is_not_a_file_exits_4_without_hanging(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # no writer: reading must not block
    code, out, _ = _cli_out(capsys, "--file", str(fifo))
    assert code == 4 and "empty" in out
    code, out, _ = _cli_out(capsys, "--file", str(tmp_path))
    assert code == 4 and "is a directory" in out
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (status.MAX_SNAPSHOT_BYTES + 1))
    code, out, _ = _cli_out(capsys, "--file", str(big))
    assert code == 4 and "larger than 1 MiB" in out
    code, out, _ = _cli_out(capsys, "--file", "/dev/zero")  # endless: bounded by the limit
    assert code == 4 and "larger than" in out
    (tmp_path / "bin.json").write_bytes(b"\xff\xfe{}")
    code, out, _ = _cli_out(capsys, "--file", str(tmp_path / "bin.json"))
    assert code == 4 and "not UTF-8" in out


@pytest.mark.parametrize("change, why", [
    (lambda s: s.update(pid=0), "snapshot.pid: expected a process id"),  # 0 is our group
    (lambda s: s.update(pid=-1), "snapshot.pid"),  # kill(-1, 0) would ask every process
    (lambda s: s.update(pid=True), "snapshot.pid"),
    (lambda s: s.update(written_at=1e300), "snapshot.written_at: expected a Unix time"),
    (lambda s: s.update(written_at=float("nan")), "snapshot.written_at"),
    (lambda s: s.update(started_at=-5), "snapshot.started_at"),
    (lambda s: s.update(period_s=0), "snapshot.period_s"),
    (lambda s: s.update(uptime_s=float("inf")), "snapshot.uptime_s"),
    (lambda s: s.update(state="exploded"), "snapshot.state: expected one of starting"),
    (lambda s: s.update(format=2), "format 2 comes from a newer citynode"),
    (lambda s: s.update(sensors={"sht": {}}), "snapshot.sensors: expected a list"),
    (lambda s: s["sensors"][0].pop("name"), "snapshot.sensors[0].name: missing"),
    (lambda s: s["sensors"][0].update(health="fine"), "snapshot.sensors[0].health"),
    (lambda s: s["sensors"][0]["values"].update(temp="21"), "sensors[0].values.temp"),
    (lambda s: s["sensors"][0]["values"].update(temp=10**400), "sensors[0].values.temp"),
    (lambda s: s["uplink"].update(connected="yes"), "snapshot.uplink.connected"),
    (lambda s: s["spool"].update(lanes=[1, 2]), "snapshot.spool.lanes"),
    (lambda s: s.update(features={"safety": 3}), "snapshot.features.safety"),
    (lambda s: s.update(node_id="\ud800"), "not valid Unicode"),
    (lambda s: s.pop("uplink"), "snapshot.uplink: missing"),
])
def test_malformed_fields_exit_4_naming_the_field(node, tmp_path, capsys, change, why):
    snap = full_snapshot(node)
    change(snap)
    f = tmp_path / "status.json"
    f.write_text(json.dumps(snap))
    code, out, err = _cli_out(capsys, "--file", str(f))
    assert code == 4 and why in out, out
    assert not err
    code, out, _ = _cli_out(capsys, "--file", str(f), "--json")
    doc = json.loads(out)
    assert code == 4 and doc["exit"] == 4 and doc["ok"] is False and why in doc["summary"]
    assert doc["command"] == "status" and doc["assessment"]["exit_code"] == 4


def test_every_field_mutated(node, tmp_path, capsys):
    """Property: whatever one field of a real snapshot becomes (another type, missing, an
    extra field, anything nested), the exit is one docs/status.md lists, never a traceback,
    the JSON output keeps its shape; a missing required field or a wrong type is exit 4,
    an unknown extra field is not."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    base = full_snapshot(node)
    paths = [p for p in _json_paths(base) if p]
    f = tmp_path / "status.json"
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=8)
        | st.floats(allow_nan=True, allow_infinity=True),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                      inner, max_size=3),
        max_leaves=6)

    @settings(max_examples=400, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(path=st.sampled_from(paths), op=st.sampled_from(["delete", "replace", "extra"]),
           value=json_values, key=st.text(min_size=1, max_size=6))
    def mutate(path: tuple, op: str, value: object, key: str) -> None:
        snap = json.loads(json.dumps(base))
        snap["written_at"] = round(time.time(), 3)  # fresh, unless the mutation says not
        parent, last = _at(snap, path[:-1]), path[-1]
        old = _at(snap, path)
        expect: set[int] = {0, 1, 3, 4}
        if op == "delete":
            if isinstance(parent, list):
                parent.pop(last)  # one sensor fewer: still a snapshot
            else:
                del parent[last]
                if last in REQUIRED_AT.get(_shape(path[:-1]), set()):
                    expect = {4}
        elif op == "replace":
            parent[last] = value
            under_features = path[0] == "features" and len(path) > 2
            if (None not in (old, value) and not under_features
                    and _json_class(old) != _json_class(value)):
                expect = {4}
        else:
            target = _at(snap, path) if isinstance(old, dict) else parent
            where = path if isinstance(old, dict) else path[:-1]
            if not isinstance(target, dict) or _shape(where) not in OBJECTS:
                return
            known = {"sensors", "uplink", "spool", "features", "models", "values", "units",
                     "lanes", "evicted", *status.REQUIRED, *base, *base["sensors"][0],
                     *base["uplink"], *base["spool"]}
            if key in known:
                return
            target[key] = value
            expect = {0, 1, 3}
        f.write_text(json.dumps(snap))
        code, out, err = _cli_out(capsys, "--file", str(f))
        assert code in expect, (path, op, value, code, out)
        assert "Traceback" not in out + err and "internal error" not in err, (path, op, err)
        jcode, jout, jerr = _cli_out(capsys, "--file", str(f), "--json")
        doc = json.loads(jout)
        assert jcode == code and doc["exit"] == code and doc["ok"] is (code == 0)
        assert doc["command"] == "status" and isinstance(doc["summary"], str)
        assert "internal error" not in jerr

    mutate()


def test_json_shape_is_the_shared_one(node, tmp_path, capsys):
    """docs/status.md and docs/doctor.md: command, ok, exit, summary, then the snapshot
    (with its assessment); the same envelope when there is no snapshot to show."""
    from agent.tools.machine import ENVELOPE_KEYS

    f = tmp_path / "status.json"
    status_file.write_snapshot(f, snap_of(node))
    code, out, _ = _cli_out(capsys, "--file", str(f), "--json")
    doc = json.loads(out)
    assert list(doc)[:4] == list(ENVELOPE_KEYS)
    assert (doc["command"], doc["ok"], doc["exit"], doc["summary"]) == (
        "status", True, 0, "running, all ok")
    assert doc["node_id"] == "st-1" and doc["assessment"]["exit_code"] == 0
    code, out, _ = _cli_out(capsys, "--file", str(tmp_path / "none.json"), "--json")
    doc = json.loads(out)
    assert code == 3 and doc["exit"] == 3 and doc["ok"] is False
    assert doc["summary"].startswith("not running: no status file")


def test_standard_input_and_watch_bounds(node, tmp_path, capsys):
    snap = json.dumps(snap_of(node))
    res = subprocess.run([sys.executable, "-m", "agent", "status", "--file", "-"], cwd=ROOT,
                         input=snap, capture_output=True, text=True, timeout=20)
    assert res.returncode == 0 and "status file standard input" in res.stdout, res
    res = subprocess.run([sys.executable, "-m", "agent", "status", "--file", "-"], cwd=ROOT,
                         input="{", capture_output=True, text=True, timeout=20)
    assert res.returncode == 4 and "cannot read standard input: not JSON" in res.stdout
    assert "Traceback" not in res.stderr
    f = tmp_path / "status.json"
    f.write_text(snap)
    for bad in ("0", "-1", "nan", "inf", "1e9"):
        code, _, err = _cli_out(capsys, "--file", str(f), "--watch", bad)
        assert code == 64 and "--watch" in err and err.count("\n") == 1, (bad, err)


def test_control_characters_do_not_reach_the_terminal(node, tmp_path, capsys):
    snap = snap_of(node)
    snap["node_id"] = "evil\x1b[2J\x07"
    snap["sensors"][0]["detail"] = "x\ry"
    f = tmp_path / "status.json"
    f.write_text(json.dumps(snap))
    code, out, _ = _cli_out(capsys, "--file", str(f))
    assert code == 0 and "\x1b" not in out and "\r" not in out and "evil?[2J?" in out


def test_unreadable_directory_and_broken_config_are_survived(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(status, "SYSTEMD_RUNTIME_DIR", tmp_path / "run")
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    fifo = tmp_path / "c.toml"
    os.mkfifo(fifo)  # a configuration that would block a reader: not read at all
    code, out, _ = _cli_out(capsys, "--config", str(fifo))
    assert code in (3, 4) and "Traceback" not in out
