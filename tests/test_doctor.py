"""``citynode doctor`` against the project's emulators: serial sensors on real ptys, I2C
chips on a FakeBus, gpiozero's mock pins, a real mosquitto; then the faults an installer
meets on site, each with its verdict and fix."""

from __future__ import annotations

import json
import random
import re
import socket
import time
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
import test_tls_broker as tls_fixtures
from gpiozero import Device, OutputDevice
from gpiozero.exc import BadPinFactory
from gpiozero.pins.mock import MockFactory
from serial_helpers import emulate_fixture

import drivers.emulation.i2c
from agent.core.config import Config, parse
from agent.tools import doctor
from agent.tools.cli import main
from agent.tools.doctor import FAIL, OK, WARN, Check, Task
from drivers.bme280.emulator import BME280Model
from drivers.emulation import FaultInjector
from drivers.emulation.i2c import FakeBus
from drivers.pms5003.emulator import PMS5003Model
from drivers.pzem004t.emulator import PZEM004TModel
from drivers.sds011.emulator import SDS011Model
from drivers.sht3x.emulator import SHT3xModel
from drivers.sps30.emulator import SPS30Model

emulate = emulate_fixture("doc")
pki = tls_fixtures.pki  # a CA, server and client certificates (openssl)
tls_broker = tls_fixtures.broker  # mosquitto with TLS listeners
LISTEN = 1.5


class Silent:
    """A device that never says anything (unpowered, or TX/RX swapped)."""

    def receive(self, data: bytes, now: float) -> bytes:
        return b""

    def tick(self, now: float) -> bytes:
        return b""


class Noise:
    """A line of garbage: what a wrong baud rate looks like. Never a 0x42 or 0xAA, so no
    frame can start by chance."""

    def __init__(self) -> None:
        self.rng = random.Random(7)

    def receive(self, data: bytes, now: float) -> bytes:
        return b""

    def tick(self, now: float) -> bytes:
        return bytes(self.rng.choice([b for b in range(256) if b not in (0x42, 0xAA)])
                     for _ in range(8))


@pytest.fixture
def emulated_bus(monkeypatch: pytest.MonkeyPatch) -> FakeBus:
    """A fresh shared emulated I2C bus, as the daemon's bus = "emulator" gets it."""
    bus = FakeBus(seed=None)
    monkeypatch.setattr(drivers.emulation.i2c, "_shared", bus)
    return bus


@pytest.fixture
def mock_pins():
    old = Device.pin_factory
    factory = MockFactory()
    Device.pin_factory = factory
    yield factory
    factory.reset()
    Device.pin_factory = old


def write_config(tmp_path: Path, sensors: str = "", mqtt: str = 'host = ""') -> str:
    path = tmp_path / "citynode.toml"
    path.write_text(f'[node]\nid = "doctor-test"\nstate_dir = "{tmp_path}/state"\n'
                    f"[log]\ntarget = \"stderr\"\n[mqtt]\n{mqtt}\n{sensors}")
    return str(path)


def rows_of(rows: list[Check], name: str) -> list[Check]:
    return [r for r in rows if r.name == name]


def serial_row(tmp_path: Path, sensor_toml: str) -> Check:
    path = write_config(tmp_path, sensor_toml)
    cfg = parse(Path(path).read_text(), path, check_devices=False)
    (row,) = doctor.check_serial_sensor(cfg.sensor[0], listen_s=LISTEN)
    return row


# -- the whole node, everything fine ------------------------------------------------------
def test_whole_emulated_node_is_ok(tmp_path, emulate, emulated_bus, mock_pins, capsys):
    pms = emulate(PMS5003Model())
    pms.start()
    pzem = emulate(PZEM004TModel(address=3, source=lambda now: 460.0))
    pzem.start()
    cfg = write_config(tmp_path, f"""
[[sensor]]
type = "pms5003"
name = "pm"
port = "{pms.path}"
[[sensor]]
type = "pzem004t"
name = "kettle"
port = "{pzem.path}"
address = 3
[sensor.plug]
relay_pin = 17
[[sensor]]
type = "bme280"
name = "bme"
bus = "emulator"
prefix = "b."
[[sensor]]
type = "sht3x"
name = "sht"
bus = "emulator"
[[sensor]]
type = "sps30"
name = "sps"
bus = "emulator"
prefix = "p."
""")
    rc = main(["doctor", "-c", cfg, "--json", f"--listen-s={LISTEN}"])
    rows = [Check(**d) for d in json.loads(capsys.readouterr().out)["rows"]]
    by_target = {r.target: r for r in rows}
    assert rows[0].name == "config" and rows[0].status == OK
    assert "5 sensor(s)" in rows[0].detail

    pm = by_target[f"pm {pms.path}"]
    assert pm.status == OK, pm
    assert "none rejected" in pm.detail and "pm25=" in pm.detail
    kettle = by_target[f"kettle {pzem.path}"]
    assert kettle.status == OK, kettle
    assert "v=230" in kettle.detail and "w=460" in kettle.detail  # Modbus read at address 3

    assert by_target["emulator"].detail.endswith("3 device(s) at 0x44, 0x69, 0x76")
    assert by_target["emulator 0x76 (bme)"].status == OK
    assert "BME280 (chip id 0x60" in by_target["emulator 0x76 (bme)"].detail
    assert "SHT3x" in by_target["emulator 0x44 (sht)"].detail
    assert "product type '00080000'" in by_target["emulator 0x69 (sps)"].detail
    assert by_target["GPIO 17 (kettle relay)"].status == OK
    assert mock_pins.pin(17).state is False  # released at the safe state: relay off

    assert by_target["mqtt.host"].status == WARN
    assert "local mode" in by_target["mqtt.host"].detail
    assert {r.name for r in rows} >= {"clock", "disk", "journal"}
    assert not [r for r in rows if r.status == FAIL], rows
    assert all(r.hint for r in rows if r.status != OK)
    assert rc == 0


def test_sds011_query_mode_is_ok(tmp_path, emulate):
    sds = emulate(SDS011Model())
    sds.start()
    row = serial_row(tmp_path, f'[[sensor]]\ntype = "sds011"\nname = "sds"\nport = "{sds.path}"')
    assert row.status == OK, row
    assert "pm25=" in row.detail and "pm10=" in row.detail


# -- serial faults --------------------------------------------------------------------------
def test_missing_port_fails_with_hint(tmp_path):
    row = serial_row(tmp_path, f'[[sensor]]\ntype = "pms5003"\nname = "pm"\n'
                     f'port = "{tmp_path}/ttyNOPE"')
    assert row.status == FAIL and "does not exist" in row.detail
    assert "enable_uart=1" in row.hint and "serial console" in row.hint


def test_noise_only_is_garbage(tmp_path, emulate):
    emu = emulate(Noise())
    emu.start()
    row = serial_row(tmp_path, f'[[sensor]]\ntype = "pms5003"\nname = "pm"\n'
                     f'port = "{emu.path}"')
    assert row.status == FAIL and row.detail.startswith("garbage:"), row
    assert "wrong baud rate" in row.hint


def test_silent_port(tmp_path, emulate):
    emu = emulate(Silent())
    emu.start()
    row = serial_row(tmp_path, f'[[sensor]]\ntype = "pms5003"\nname = "pm"\n'
                     f'port = "{emu.path}"')
    assert row.status == FAIL and row.detail.startswith("silent:"), row
    # It did ask (wake, passive mode, read requests): the silence is the sensor's.
    assert "sent" in row.detail and "bytes of requests" in row.detail
    assert "TX" in row.hint and "5 V" in row.hint


def test_pzem_at_another_address_is_silent(tmp_path, emulate):
    emu = emulate(PZEM004TModel(address=1))
    emu.start()
    row = serial_row(tmp_path, f'[[sensor]]\ntype = "pzem004t"\nname = "plug"\n'
                     f'port = "{emu.path}"\naddress = 9')
    assert row.status == FAIL and "silent" in row.detail
    assert "sensor.address" in row.hint


def test_checksum_errors_warn(tmp_path, emulate):
    emu = emulate(PMS5003Model(interval_s=0.1),
                  faults=FaultInjector.from_spec("checksum=0.4", seed=3))
    emu.start()
    row = serial_row(tmp_path, f'[[sensor]]\ntype = "pms5003"\nname = "pm"\n'
                     f'port = "{emu.path}"\nmode = "active"')
    assert row.status == WARN, row
    assert "valid frame(s)" in row.detail and "rejected" in row.detail
    assert "cable" in row.hint


# -- I2C --------------------------------------------------------------------------------------
def test_i2c_absent_wrong_and_unexpected_chips():
    bus = FakeBus({0x45: SHT3xModel(), 0x76: BME280Model(chip_id=0x58),
                   0x69: SPS30Model(), 0x29: SHT3xModel()}, seed=None)
    expected = {0x44: ("sht", "SHT3x"), 0x76: ("bme", "BME280"), 0x69: ("sps", "SPS30"),
                0x77: ("bme2", "BME280")}
    rows = {r.target: r for r in doctor.check_i2c_bus("i2c-1", bus, expected, sleep=lambda s: 0)}
    assert "4 device(s)" in rows["i2c-1"].detail
    sht = rows["i2c-1 0x44 (sht)"]
    assert sht.status == FAIL and "no answer" in sht.detail
    assert "0x45" in sht.hint  # the SHT3x is there, on its other address
    bme = rows["i2c-1 0x76 (bme)"]
    assert bme.status == FAIL and "found BMP280 (chip id 0x58" in bme.detail
    assert bme.hint == doctor.hints.HINT_I2C_WRONG
    absent = rows["i2c-1 0x77 (bme2)"]
    assert absent.status == FAIL and "dtparam=i2c_arm=on" in absent.hint
    assert rows["i2c-1 0x69 (sps)"].status == OK
    extra = rows["i2c-1 0x45"]
    assert extra.status == WARN and "unexpected device: SHT3x" in extra.detail
    unknown = rows["i2c-1 0x29"]
    assert unknown.status == WARN and "unidentified" in unknown.detail


def test_i2c_kernel_driver_and_missing_bus(tmp_path):
    class Claimed(FakeBus):
        def write_quick(self, addr: int) -> None:
            if addr == 0x76:
                raise OSError(16, "Device or resource busy")
            self.i2c_rdwr(__import__("smbus2").i2c_msg.write(addr, b""))

    rows = list(doctor.check_i2c_bus("i2c-1", Claimed(seed=None), {0x76: ("bme", "BME280")}))
    assert rows[1].status == FAIL and "kernel driver (UU)" in rows[1].detail

    cfg = parse('[node]\nid = "n"\n[[sensor]]\ntype = "bme280"\nname = "bme"\nbus = 7',
                check_devices=False)

    def no_bus(bus: Any, cfg: Any) -> Any:
        raise FileNotFoundError(2, "No such file or directory", "/dev/i2c-7")

    (row,) = doctor.check_i2c(cfg, open_bus=no_bus)
    assert row.status == FAIL and row.target == "/dev/i2c-7"
    assert "needed by bme" in row.detail and "dtparam=i2c_arm=on" in row.hint


# -- GPIO -------------------------------------------------------------------------------------
def test_gpio_clash_busy_and_no_factory(tmp_path, mock_pins):
    # config check refuses the clash (exit 78); the doctor still reports one in a
    # configuration built past it
    cfg = msgspec.convert(tomllib.loads("""[node]
id = "n"
[[sensor]]
type = "hcsr04"
name = "bay"
trigger = 17
echo = 24
[sensor.use]
role = "distance"
[[sensor]]
type = "cse7766"
name = "tv"
port = "/dev/null"
[sensor.plug]
relay_pin = 17
[[sensor]]
type = "pzem004t"
name = "fridge"
port = "/dev/null"
prefix = "f."
[sensor.plug]
relay_pin = 22
"""), Config)
    held = OutputDevice(22, pin_factory=mock_pins)  # someone else has GPIO 22
    try:
        rows = {r.target: r for r in doctor.check_gpio(cfg)}
    finally:
        held.close()
    clash = rows["GPIO 17"]
    assert clash.status == FAIL and "bay trigger and tv relay" in clash.detail
    busy = rows["GPIO 22 (fridge relay)"]
    assert busy.status == FAIL and "cannot claim" in busy.detail
    assert "systemctl stop citynode" in busy.hint
    assert rows["GPIO 24 (bay echo)"].status == OK

    def none() -> Any:
        raise BadPinFactory("Unable to load any default pin factory!")

    rows = list(doctor.check_gpio(cfg, factory=none))
    no_factory = next(r for r in rows if r.target == "GPIO 24 (bay echo)")
    assert no_factory.status == FAIL and "lgpio" in no_factory.hint


# -- broker -----------------------------------------------------------------------------------
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_broker_unreachable(tmp_path):
    cfg = parse(f'[node]\nid = "n"\n[mqtt]\nhost = "127.0.0.1"\nport = {_closed_port()}',
                check_devices=False)
    (row,) = doctor.check_broker(cfg, timeout_s=2)
    assert row.status == FAIL and "connection refused" in row.detail
    assert "mqtt.port" in row.hint


@pytest.mark.broker
def test_broker_reachable(tmp_path, mosquitto, capsys):
    cfg = write_config(tmp_path, mqtt=f'host = "{mosquitto.host}"\nport = {mosquitto.port}')
    rc = main(["doctor", "-c", cfg, "--only", "broker"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("broker")]
    assert len(lines) == 2, out
    assert " OK " in lines[0] and "TCP connected" in lines[0]
    assert " OK " in lines[1] and "CONNACK Success (MQTT 5" in lines[1]
    assert "citynode-doctor-test-doctor" in lines[1]  # never the daemon's own client id
    assert rc == 0


@pytest.mark.broker
def test_every_failover_broker_is_checked_and_a_dead_one_is_a_warning(tmp_path, mosquitto,
                                                                      capsys):
    """[mqtt] failover: each broker gets its own rows (a task each, side by side); one
    that cannot be reached is a WARN, since the node works on its primary."""
    dead = _closed_port()
    cfg = write_config(tmp_path, mqtt=f'host = "{mosquitto.host}"\nport = {mosquitto.port}\n'
                                      f'failover = ["localhost:{mosquitto.port}", '
                                      f'"127.0.0.1:{dead}"]')
    tasks = [t for t in doctor.build_tasks(parse(Path(cfg).read_text(), check_devices=False),
                                           only=["broker"])
             if t.name == "broker"]
    assert [t.target for t in tasks] == [
        f"{mosquitto.host}:{mosquitto.port}", f"localhost:{mosquitto.port} (failover 1 of 2)",
        f"127.0.0.1:{dead} (failover 2 of 2)"]
    rc = main(["doctor", "-c", cfg, "--only", "broker"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("broker")]
    assert len(rows) == 5, out
    assert all(" OK " in r for r in rows[:4]), out
    assert "failover 2 of 2" in rows[4] and " WARN " in rows[4], out
    assert "connection refused" in rows[4] and "cannot move here" in out
    assert rc == 0  # warnings only


# -- clock, disk, runner, exit codes ---------------------------------------------------------
def test_clock_verdicts():
    rows = list(doctor.check_clock(sync=lambda: (None, "no way to tell"), now=lambda: 0.0))
    assert rows[0].status == WARN and "unknown" in rows[0].detail
    assert rows[1].status == FAIL and rows[1].detail.startswith("1970-01-01")
    rows = list(doctor.check_clock(sync=lambda: (True, "kernel"), now=time.time))
    assert [r.status for r in rows] == [OK, OK]


def test_disk_against_spool_bound(tmp_path, monkeypatch):
    cfg = parse(f'[node]\nid = "n"\nstate_dir = "{tmp_path}"\n[spool]\nmax_bytes = 1048576',
                check_devices=False)

    class Vfs:
        f_frsize = 4096
        f_flag = 0  # mounted read-write (the spool's place is checked first)

        def __init__(self, blocks: int) -> None:
            self.f_bavail = blocks

    for blocks, status in ((100, FAIL), (300, WARN), (10_000, OK)):  # 0.4, 1.2, 40 MiB
        monkeypatch.setattr(doctor.os, "statvfs", lambda p, b=blocks: Vfs(b))
        (row,) = doctor.check_disk(cfg)
        assert row.status == status, row
        assert row.target == f"{tmp_path}/spool.db"


def test_a_crashing_or_hanging_check_costs_only_its_row():
    def boom():
        raise RuntimeError("kaput")
        yield  # pragma: no cover

    def hang():
        yield Check("slow", "x", OK, "first row")
        time.sleep(5)

    t0 = time.monotonic()
    rows = doctor.run_tasks([Task("boom", "a", boom, 1), Task("slow", "x", hang, 0.3),
                             Task("fine", "b", lambda: [Check("fine", "b", OK, "ok")], 1)])
    assert time.monotonic() - t0 < 2
    assert rows[0].status == FAIL and "RuntimeError: kaput" in rows[0].detail
    assert rows[1].detail == "first row"
    assert rows[2].status == FAIL and "no result within 0.3 s" in rows[2].detail
    assert rows[3].status == OK


def test_exit_codes(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nid = "n"\noops = 1\n')
    assert main(["doctor", "-c", str(bad), "--only", "journal"]) == 78
    out = capsys.readouterr().out
    assert "node.oops: unknown key" in out and "fix:" in out

    cfg = write_config(tmp_path, f'[[sensor]]\ntype = "a02yyuw"\nname = "bay"\n'
                       f'port = "{tmp_path}/ttyGONE"')
    assert main(["doctor", "-c", cfg, "--only", "serial,disk"]) == 1
    table = capsys.readouterr().out
    assert "FAIL" in table and "port does not exist" in table and "fix: check the udev" in table

    assert main(["doctor", "-c", cfg, "--only", "disk,journal"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["CHECK", "TARGET", "RESULT", "DETAIL"]
    assert "\033[" not in "\n".join(lines)  # no colour when not a terminal


@pytest.mark.broker
def test_broker_tls_verified_and_wrong_name(tmp_path, pki, tls_broker):
    def cfg_for(port: int) -> Any:
        return parse(f'[node]\nid = "{tls_fixtures.NODE}"\n[mqtt]\nhost = "127.0.0.1"\n'
                     f'port = {port}\n'
                     f'tls = true\nca_file = "{pki}/ca.crt"\ncert_file = "{pki}/client.crt"\n'
                     f'key_file = "{pki}/client.key"\n', check_devices=False)

    tcp, tls, connack = doctor.check_broker(cfg_for(tls_broker.ports["mtls"]), timeout_s=3)
    assert tcp.status == OK
    assert "TLS TLSv1." in tls.detail and "verified as 127.0.0.1" in tls.detail, tls
    days = int(re.search(r"\(in (-?\d+) days\)", tls.detail).group(1))
    # The test CA issues for 30 days: just under the renewal warning.
    assert tls.status == (WARN if days < doctor.broker.CERT_WARN_DAYS else OK), tls
    assert tls.status == OK or tls.hint == doctor.hints.HINT_CERT_EXPIRY
    assert connack.status == OK and "CONNACK Success" in connack.detail, connack

    rows = list(doctor.check_broker(cfg_for(tls_broker.ports["wronghost"]), timeout_s=3))
    assert [r.status for r in rows] == [OK, FAIL]
    assert "certificate not accepted" in rows[1].detail and "mqtt.server_name" in rows[1].hint


# -- a running daemon is left alone --------------------------------------------------------
ROOT = Path(__file__).resolve().parent.parent


def _wait(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _snapshot(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.timeout(90)
def test_doctor_leaves_a_running_daemon_alone(tmp_path, emulate):
    """A real daemon on an emulated PMS5003: doctor finds it by its status snapshot and
    does not open its port (the daemon's view instead); a doctor that cannot see the
    snapshot meets the daemon's exclusive lock and says who holds the port. Either way
    the daemon keeps reading: no reopen, no error, still ok."""
    import os
    import subprocess
    import sys

    from agent.tools.simulate import write_config as sim_config

    emu = emulate(PMS5003Model(interval_s=0.3, warmup_s=0.0))
    emu.start()
    cfg = tmp_path / "citynode.toml"
    sim_config(cfg, node_id="doc-live", state_dir=tmp_path / "state", ports=[emu.path],
               interval=2, fmt="senml-json", broker=None, warmup_s=0.0, read_interval_s=0.3)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    env = {**os.environ, "RUNTIME_DIRECTORY": str(run_dir)}
    env.pop("NOTIFY_SOCKET", None)
    log = open(tmp_path / "daemon.log", "w")  # closed below
    daemon = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    status_json = run_dir / "status.json"

    def doctor_json(environ: dict[str, str]) -> tuple[int, dict]:
        res = subprocess.run([sys.executable, "-m", "agent", "doctor", "-c", str(cfg),
                              "--json", "--only", "serial,gpio,disk", "--listen-s", "1.5"],
                             cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60)
        assert "Traceback" not in res.stderr, res.stderr
        return res.returncode, json.loads(res.stdout)

    def healthy() -> dict | None:
        snap = _snapshot(status_json)
        ok = snap and snap["state"] == "running" and snap["sensors"][0]["health"] == "ok"
        return snap if ok else None

    try:
        before = _wait(healthy, 30, "the daemon reading pm0")["sensors"][0]

        code, doc = doctor_json(env)
        serial = [r for r in doc["rows"] if r["name"] == "serial"]
        assert code == 0 and doc["exit"] == 0, doc
        held, view = serial
        assert held["status"] == WARN and held["target"] == f"citynode pid {daemon.pid}"
        assert "not checked: citynode is running" in held["detail"]
        assert held["hint"].startswith("stop citynode first (sudo systemctl stop citynode)")
        assert view["target"] == f"pm0 {emu.path}" and view["status"] == OK, view
        assert "the running daemon reports ok" in view["detail"]

        # No snapshot in sight (another runtime directory): the lock answers instead.
        code, doc = doctor_json({**env, "RUNTIME_DIRECTORY": str(tmp_path / "elsewhere")})
        (row,) = [r for r in doc["rows"] if r["name"] == "serial"]
        assert code == 1 and row["status"] == FAIL, row
        assert row["detail"] == (f"not opened: held by the running daemon (citynode, pid "
                                 f"{daemon.pid})")
        assert row["hint"].startswith("stop citynode first")
        assert "loose" not in row["hint"] and "vanished" not in row["detail"]

        done = time.time()  # the next snapshot shows the daemon after both doctors

        def later() -> dict | None:
            snap = healthy()
            return snap if snap and snap["written_at"] > done + 0.5 else None

        after = _wait(later, 15, "a snapshot after the doctors")["sensors"][0]
        assert after["reopens"] == before["reopens"] and after["errors"] == before["errors"]
        assert after["readings"] > before["readings"]
        assert daemon.poll() is None
    finally:
        daemon.terminate()
        try:
            daemon.wait(20)
        finally:
            log.close()
    text = (tmp_path / "daemon.log").read_text()
    # never left ok until the shutdown: no health event reached the platform
    assert re.findall(r"sensor pm0: ok -> (\w+)", text) == ["stopped"], text


def test_a_stopped_or_dead_or_foreign_daemon_does_not_count(tmp_path):
    import os
    import subprocess
    import sys

    from agent.core import status_file
    from agent.tools.doctor import daemon as dd

    state = tmp_path / "state"
    state.mkdir()
    env = {"RUNTIME_DIRECTORY": str(tmp_path / "run")}
    snap = {"written_at": time.time(), "state": "running", "node_id": "x", "period_s": 5,
            "sensors": [], "uplink": None, "spool": None}
    sleeper = subprocess.Popen(["sleep", "30"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        for pid, state_name in ((sleeper.pid, "running"), (gone.pid, "running"),
                                (os.getpid(), "stopped")):
            status_file.write_snapshot(state / "status.json",
                                       {**snap, "pid": pid, "state": state_name})
            assert dd.find_running_daemon(state, env) is None, (pid, state_name)
        (state / "status.json").write_text("{not json")
        assert dd.find_running_daemon(state, env) is None
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not dd.is_citynode(sleeper.pid)  # gone now


def test_daemon_rows_come_from_its_snapshot(tmp_path):
    """Without touching anything: each sensor's row is what the daemon reports, and a
    sensor the daemon cannot read fails with the advice to stop it first."""
    from agent.tools.doctor.daemon import RunningDaemon

    path = write_config(tmp_path, '[[sensor]]\ntype = "pms5003"\nname = "pm"\n'
                        'port = "/dev/ttyAMA0"\n[[sensor]]\ntype = "sht3x"\nname = "sht"\n'
                        'bus = 1\n[[sensor]]\ntype = "sds011"\nname = "sds"\n'
                        'port = "/dev/ttyUSB0"\nprefix = "s."\n')
    snap = {"written_at": time.time(), "state": "running", "pid": 4242, "config": path,
            "sensors": [
                {"name": "pm", "type": "pms5003", "health": "disconnected",
                 "detail": "cannot open /dev/ttyAMA0: no such file", "last_reading_age_s": None},
                {"name": "sht", "type": "sht3x", "health": "ok", "detail": "",
                 "last_reading_age_s": 0.5}]}
    running = RunningDaemon(4242, tmp_path / "status.json", snap)
    rows, code = doctor.run(path, only=("serial", "i2c", "gpio"), daemon=running)
    by = {(r.name, r.target): r for r in rows}
    assert code == 1
    pm = by[("serial", "pm /dev/ttyAMA0")]
    assert pm.status == FAIL and "reports disconnected (cannot open" in pm.detail
    assert "stop citynode first" in pm.hint
    assert by[("i2c", "/dev/i2c-1 0x44 (sht)")].status == OK
    sds = by[("serial", "sds /dev/ttyUSB0")]
    assert sds.status == WARN and "not in the running daemon's status" in sds.detail
    assert by[("serial", "citynode pid 4242")].status == WARN
    assert by[("i2c", "citynode pid 4242")].status == WARN
    assert not [r for r in rows if r.name == "gpio"]  # no pins configured


# -- advice that fits the fault --------------------------------------------------------------
def test_a_port_that_is_not_a_serial_device(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("")
    fifo = tmp_path / "fifo"
    import os
    import stat

    os.mkfifo(fifo)
    for port, detail, hint in (
            ("/dev/null", "not a serial device: a character device of class 'mem'",
             "must name a serial device"),
            (str(tmp_path), "is a directory, not a serial device (pms5003)",
             "set sensor.port to the serial device itself"),
            (str(plain), "not a serial device: a regular file", "must name a serial device"),
            (str(fifo), "not a serial device: a FIFO", "must name a serial device")):
        if port == "/dev/null" and not stat.S_ISCHR(os.stat(port).st_mode):
            continue  # this machine's /dev/null was replaced by a file (not our doing)
        row = serial_row(tmp_path, f'[[sensor]]\ntype = "pms5003"\nname = "pm"\n'
                         f'port = "{port}"')
        assert row.status == FAIL and detail in row.detail, row
        assert hint in row.hint and "another program" not in row.hint, row


def test_exclusive_open_of_another_program(tmp_path, emulate):
    """A port someone else locked (not citynode): who holds it, not "loose connector"."""
    import fcntl
    import os

    emu = emulate(PMS5003Model(interval_s=0.2))
    emu.start()
    fd = os.open(emu.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        row = serial_row(tmp_path, f'[[sensor]]\ntype = "pms5003"\nname = "pm"\n'
                         f'port = "{emu.path}"')
    finally:
        os.close(fd)
    assert row.status == FAIL and row.detail.startswith("cannot open: held by "), row
    assert f"(pid {os.getpid()})" in row.detail
    assert "another program holds the port" in row.hint


@pytest.mark.parametrize("value, words", [
    ("abc", "not a number of seconds: 'abc'"), ("nan", "--listen-s"), ("0", "out of range"),
    ("1e9", "out of range")])
def test_listen_s_usage_errors_are_plain(tmp_path, capsys, value, words):
    cfg = write_config(tmp_path)
    assert main(["doctor", "-c", cfg, "--listen-s", value]) == 64
    err = capsys.readouterr().err
    assert words in err and "_listen" not in err and "Traceback" not in err


def test_json_output_has_the_shared_shape(tmp_path, capsys):
    """docs/doctor.md "Machine-readable output": one object, whatever the exit code."""
    from agent.tools.machine import ENVELOPE_KEYS, ROW_KEYS

    cfg = write_config(tmp_path, f'[[sensor]]\ntype = "a02yyuw"\nname = "bay"\n'
                       f'port = "{tmp_path}/ttyGONE"')
    for only, code in (("disk,journal", 0), ("serial,disk", 1)):
        assert main(["doctor", "-c", cfg, "--only", only, "--json"]) == code
        doc = json.loads(capsys.readouterr().out)
        assert list(doc)[:4] == list(ENVELOPE_KEYS)
        assert doc["command"] == "doctor" and doc["exit"] == code and doc["ok"] is (code == 0)
        assert doc["config"] == cfg
        assert all(list(r) == list(ROW_KEYS) for r in doc["rows"])
        counts = {s: sum(r["status"] == s for r in doc["rows"]) for s in (OK, WARN, FAIL)}
        assert doc["counts"] == counts
        assert doc["summary"] == (f"{len(doc['rows'])} results: {counts[OK]} OK, "
                                  f"{counts[WARN]} WARN, {counts[FAIL]} FAIL")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n")
    assert main(["doctor", "-c", str(bad), "--only", "journal", "--json"]) == 78
    doc = json.loads(capsys.readouterr().out)
    assert doc["exit"] == 78 and doc["ok"] is False and doc["rows"][0]["status"] == FAIL


# -- the broker's failures in plain words --------------------------------------------------
class _Hangup:
    """A TCP server that hangs up on every client: reset (RST) or closed (FIN), before or
    after reading what the client sent, or after answering with an HTTP error."""

    def __init__(self, mode: str) -> None:
        import struct
        import threading

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.linger = struct.pack("ii", 1, 0)
        self.mode = mode
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                c.settimeout(2)
                try:
                    if self.mode != "reset":
                        c.recv(1024)
                    if self.mode == "http":
                        c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
                    if self.mode in ("reset", "read-reset"):
                        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, self.linger)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def _broker_rows(port: int, tls: bool) -> list[Check]:
    cfg = parse(f'[node]\nid = "n"\n[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
                f'tls = {"true" if tls else "false"}\n', check_devices=False)
    return list(doctor.check_broker(cfg, timeout_s=2))


@pytest.mark.parametrize("mode", ["read-reset", "read-close", "http"])
def test_a_port_that_does_not_speak_tls(mode):
    """The ClientHello answered by a reset (RST), a close, or HTTP: a plain port."""
    server = _Hangup(mode)
    try:
        tcp, tls = _broker_rows(server.port, tls=True)
    finally:
        server.close()
    assert tcp.status == OK and tls.status == FAIL, tls
    assert tls.detail.startswith("TLS: "), tls
    assert "reset the connection during the TLS handshake" in tls.detail or \
        "closed the connection during the TLS handshake" in tls.detail or \
        "does not answer in TLS" in tls.detail, tls
    assert "may not speak TLS" in tls.hint and "8883" in tls.hint


@pytest.mark.parametrize("mode", ["reset", "read-reset", "read-close", "http"])
def test_a_plain_port_that_hangs_up_on_mqtt(mode):
    server = _Hangup(mode)
    try:
        rows = _broker_rows(server.port, tls=False)
    finally:
        server.close()
    mqtt = rows[-1]  # an immediate reset may already end the TCP step
    assert mqtt.status == FAIL and all(r.status == OK for r in rows[:-1]), rows
    assert "MQTT_CS" not in mqtt.detail and "Socket:" not in mqtt.detail, mqtt
    assert mqtt.detail.startswith(("no CONNACK: ", "MQTT CONNECT failed: the broker reset",
                                   "TCP: the broker reset")), mqtt
    assert ("MQTT port" in mqtt.hint and "mqtt.tls = true" in mqtt.hint) or \
        mqtt.hint == doctor.hints.HINT_NO_CONNACK, mqtt


def test_no_route_to_the_broker(monkeypatch):
    import errno

    def unreachable(*args: Any, **kw: Any) -> None:
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    monkeypatch.setattr(doctor.broker.socket, "create_connection", unreachable)
    (row,) = _broker_rows(1883, tls=False)
    assert row.detail == "TCP: Network is unreachable (no route to the broker)"
    assert "ip route" in row.hint


def test_paho_internals_are_put_in_plain_words():
    from agent.wire import mqtt

    line = ("Client is not connected. Socket: None). Last known Connection State: "
            "MQTT_CS_DISCONNECTED")
    assert mqtt._plain_log(line) == "the connection closed before the broker answered"
    assert mqtt._plain_log("failed to receive on socket: [Errno 104] Connection reset by "
                           "peer").startswith("the connection failed while waiting")


def test_failure_words_for_any_error():
    """Property: whatever error a connection raises, the doctor's row has a detail and a
    fix, and no paho or socket internals alone."""
    import errno
    import ssl

    from hypothesis import given
    from hypothesis import strategies as st

    from agent.wire.mqtt import describe_failure

    errors = st.one_of(
        st.builds(OSError, st.sampled_from(sorted(errno.errorcode)), st.text(max_size=20)),
        st.builds(ConnectionResetError, st.just(errno.ECONNRESET), st.just("reset")),
        st.builds(TimeoutError), st.builds(ConnectionRefusedError),
        st.builds(socket.gaierror, st.just(-2), st.just("Name or service not known")),
        st.builds(ssl.SSLError, st.just(1), st.sampled_from(
            ["[SSL: WRONG_VERSION_NUMBER] wrong version number", "whatever"])),
        st.builds(ssl.SSLEOFError, st.just(8), st.just("EOF occurred in violation")),
        st.builds(OSError))

    @given(exc=errors, tls=st.booleans())
    def words(exc: BaseException, tls: bool) -> None:
        detail, hint = doctor.broker._failure(exc, tls=tls, timeout_s=5)
        assert detail.strip() and hint.strip()
        assert describe_failure(exc, tls=tls, timeout_s=5).strip()

    words()


def test_listen_s_accepts_only_what_it_says():
    import argparse

    from hypothesis import given
    from hypothesis import strategies as st

    @given(text=st.one_of(st.text(max_size=12), st.floats().map(str)))
    def listen(text: str) -> None:
        try:
            value = doctor._listen(text)
        except argparse.ArgumentTypeError as exc:
            assert "_listen" not in str(exc) and str(exc)
        else:
            assert 0.2 <= value <= 120

    listen()


def test_a_missing_configuration_is_not_a_key_to_fix(tmp_path, capsys):
    for path in (str(tmp_path / "none.toml"), str(tmp_path)):
        assert main(["doctor", "-c", path, "--only", "journal", "--json"]) == 78
        row = json.loads(capsys.readouterr().out)["rows"][0]
        assert row["status"] == FAIL and "--config FILE" in row["hint"], row
        assert "fix the key" not in row["hint"]


@pytest.mark.parametrize("argv, yes", [
    (["/usr/bin/python3", "/opt/citynode/venv/bin/citynode", "run"], True),
    (["citynode", "run", "--config", "/etc/citynode/citynode.toml"], True),
    (["/usr/bin/python3", "-m", "agent", "run"], True),
    (["/usr/bin/python3", "-m", "pytest", "tests/citynode"], False),
    (["sleep", "30"], False),
    ([], False),  # a zombie
])
def test_is_citynode_by_its_command_line(tmp_path, argv, yes):
    from agent.tools.doctor.daemon import is_citynode

    (tmp_path / "self").mkdir()
    (tmp_path / "77").mkdir()
    (tmp_path / "77" / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv)
                                              + (b"\0" if argv else b""))
    assert is_citynode(77, proc=tmp_path) is yes
    assert is_citynode(78, proc=tmp_path) is False  # no such process
