"""`citynode run` keeps the installer tools out of the daemon's memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_run_does_not_import_the_field_tools() -> None:
    code = ("import sys\nfrom agent.cli import build_parser\n"
            "p = build_parser(field_tools=False)\n"
            "print(sorted(m for m in ('agent.doctor', 'agent.provision', 'agent.sdcard', "
            "'agent.status') if m in sys.modules))\n"
            "build_parser()\n"
            "print(sorted(m for m in ('agent.doctor', 'agent.provision', 'agent.sdcard', "
            "'agent.status') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0] == "[]"
    assert out[1] == "['agent.doctor', 'agent.provision', 'agent.sdcard', 'agent.status']"
