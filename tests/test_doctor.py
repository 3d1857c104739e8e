"""``citynode doctor`` against the project's emulators: serial sensors on real ptys, I2C
chips on a FakeBus, gpiozero's mock pins, a real mosquitto; then the faults an installer
meets on site, each with its verdict and fix."""

from __future__ import annotations

import json
import random
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import test_tls_broker as tls_fixtures
from gpiozero import Device, OutputDevice
from gpiozero.exc import BadPinFactory
from gpiozero.pins.mock import MockFactory
from serial_helpers import emulate_fixture

import drivers.emulation.i2c
from agent.core.config import parse
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
    rows = [Check(**d) for d in json.loads(capsys.readouterr().out)]
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
    cfg = parse("""[node]
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
""", check_devices=False)
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
