"""The systemd unit: the promises the daemon relies on, and systemd's own linter."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent.parent / "deploy" / "citynode.service"


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
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    exe = tmp_path / "citynode"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    text = UNIT.read_text().replace("/opt/citynode/venv/bin/citynode", str(exe))
    copy = tmp_path / "citynode.service"
    copy.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True,
                          text=True, timeout=60)
    problems = [ln for ln in proc.stderr.splitlines() if "citynode.service" in ln]
    assert proc.returncode == 0 and not problems, proc.stderr
