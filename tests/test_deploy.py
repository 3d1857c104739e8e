"""The systemd unit: the promises the daemon relies on, and systemd's own linter."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "citynode.service"


def unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment]
    cp.read(UNIT)
    return cp


def test_unit_speaks_the_daemons_protocols():
    svc = unit()["Service"]
    assert svc["Type"] == "notify"
    assert svc["WatchdogSec"]
    assert svc["Restart"] == "on-failure"
    assert svc["RestartPreventExitStatus"] == "78"
    assert "citynode run" in svc["ExecStart"]
    assert svc["StateDirectory"] == "citynode"


def test_systemd_analyze_verify_is_clean(tmp_path):
    _need_systemd_analyze()
    copy = _testable_copy(tmp_path)
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)
    problems = [ln for ln in proc.stderr.splitlines() if "citynode.service" in ln]
    assert proc.returncode == 0 and not problems, proc.stderr


def _need_systemd_analyze() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")


def _testable(tmp_path: Path, name: str) -> Path:
    """deploy/<name> copied into ``tmp_path`` with its executables replaced by a stub that
    exists (systemd-analyze checks that they do)."""
    exe = tmp_path / "citynode"
    if not exe.exists():
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    copy = tmp_path / name
    copy.write_text((UNIT.parent / name).read_text()
                    .replace("/opt/citynode/current/venv/bin/citynode", str(exe))
                    .replace("/opt/citynode/bin/citynode-guard", str(exe)))
    return copy


def _testable_copy(tmp_path: Path) -> Path:
    return _testable(tmp_path, UNIT.name)


def test_unit_is_hardened_as_promised():
    svc = unit()["Service"]
    assert svc["User"] == "citynode" and set(svc["SupplementaryGroups"].split()) == {
        "dialout", "i2c", "gpio"}
    assert svc["ProtectSystem"] == "strict"
    assert svc["DevicePolicy"] == "closed"
    assert svc["CapabilityBoundingSet"] == ""
    assert svc["SystemCallFilter"]
    assert svc["MemoryMax"]
    text = UNIT.read_text()
    for dev in ("char-ttyAMA", "char-ttyUSB", "char-i2c", "char-gpiochip"):
        assert f"DeviceAllow={dev} rw" in text


def test_systemd_analyze_security_exposure_at_most_2(tmp_path):
    """systemd's own score of the unit (offline), the figure ops teams audit."""
    _need_systemd_analyze()
    copy = _testable_copy(tmp_path)
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", str(copy)],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for citynode\.service: (\d+\.\d+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    assert float(m.group(1)) <= 2.0, proc.stdout
    # the same promise as systemd checks it (the threshold is on the x10 scale in 252)
    gate = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20",
                           str(copy)], capture_output=True, text=True, timeout=60)
    assert gate.returncode == 0, gate.stdout


DEVICES_CFG = """
[node]
id = "n1"
[[sensor]]
type = "pms5003"
name = "pm"
port = "/dev/ttyAMA0"
[[sensor]]
type = "sds011"
name = "sds"
port = "/dev/citynode-ch340-1"
prefix = "s."
[[sensor]]
type = "sht3x"
name = "sht"
bus = 1
[[sensor]]
type = "bme280"
name = "bme"
bus = "emulator"
prefix = "b."
[[sensor]]
type = "hcsr04"
name = "bay1"
"""


def test_device_allow_is_exactly_the_configured_devices():
    from agent.core import config
    from agent.core.systemd import device_allow, device_dropin

    cfg = config.parse(DEVICES_CFG, check_devices=False)
    links = {"/dev/citynode-ch340-1": "/dev/ttyUSB3"}
    allow = device_allow(cfg, resolve=lambda p: links.get(p, p))
    # the USB adapter by class (a replug changes its minor number), the rest by path;
    # the emulated bus needs nothing
    assert allow == ["/dev/gpiomem", "/dev/i2c-1", "/dev/ttyAMA0", "char-gpiochip",
                     "char-ttyUSB"]
    text = device_dropin(cfg, resolve=lambda p: links.get(p, p))
    lines = text.splitlines()
    assert lines.index("DeviceAllow=") < lines.index("DeviceAllow=/dev/ttyAMA0 rw")
    assert "DevicePolicy=closed" in lines


def test_config_devices_command_writes_the_dropin(tmp_path, capsys):
    from agent.tools.cli import main

    cfg = tmp_path / "c.toml"
    cfg.write_text(DEVICES_CFG)
    assert main(["config", "devices", str(cfg)]) == 0
    assert "DeviceAllow=/dev/ttyAMA0 rw" in capsys.readouterr().out
    target = tmp_path / "d" / "devices.conf"
    assert main(["config", "devices", str(cfg), "--write", str(target)]) == 0
    assert "DeviceAllow=/dev/i2c-1 rw" in target.read_text()
    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\nid = 1\n")
    assert main(["config", "devices", str(bad)]) == 78


def test_dropin_is_accepted_by_systemd(tmp_path):
    _need_systemd_analyze()
    from agent.core import config
    from agent.core.systemd import device_dropin

    copy = _testable_copy(tmp_path)
    d = tmp_path / "citynode.service.d"
    d.mkdir()
    (d / "devices.conf").write_text(device_dropin(config.parse(DEVICES_CFG,
                                                                check_devices=False)))
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


UPDATE_UNITS = ("citynode-update.service", "citynode-update.path")


def test_unit_starts_the_current_release_behind_the_guard():
    """Releases side by side (docs/updates.md): the unit starts whatever ``current``
    names, after the health gate's guard, which runs as root ("+") from outside them."""
    svc = unit()["Service"]
    assert svc["ExecStart"].startswith("/opt/citynode/current/venv/bin/citynode run ")
    assert svc["ExecStartPre"] == "+/opt/citynode/bin/citynode-guard"
    assert svc["User"] == "citynode"  # the daemon itself stays unprivileged


def test_update_units_are_accepted_by_systemd(tmp_path):
    _need_systemd_analyze()
    for name in UPDATE_UNITS:
        _testable(tmp_path, name)
    svc = configparser.ConfigParser(strict=False, interpolation=None)
    svc.read(tmp_path / "citynode-update.service")
    assert svc["Service"]["Type"] == "oneshot"
    assert "update install" in svc["Service"]["ExecStart"]
    path = configparser.ConfigParser(strict=False, interpolation=None)
    path.read(tmp_path / "citynode-update.path")
    assert path["Path"]["PathExists"] == "/var/lib/citynode/update/request.json"
    proc = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n)
                                                          for n in UPDATE_UNITS)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_the_bundle_carries_every_file_install_sh_installs() -> None:
    """Each file install.sh takes from the bundle ("$SRC/NAME", the update units, the guard)
    is one the bundle lays out: a missing one once went unseen inside an `if`."""
    from update_rig import load_bundle_tool

    bundle = load_bundle_tool()
    laid = {name for _, name in bundle.FILES}
    text = (ROOT / "deploy/install.sh").read_text()
    wanted = set(re.findall(r'\$SRC/([A-Za-z0-9_.-]+)"', text)) - {
        "MANIFEST", "MANIFEST.json", "SHA256SUMS", "wheels"}  # written by the bundler itself
    units = re.search(r"UPDATE_UNITS=\(([^)]*)\)", text)
    assert units is not None
    wanted |= set(units.group(1).split())
    wanted |= {f"udev/{r}" for r in re.findall(r"(\d\d-citynode\.rules)", text)}
    assert wanted and wanted <= laid, sorted(wanted - laid)
