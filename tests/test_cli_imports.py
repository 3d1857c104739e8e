"""`citynode run` keeps the installer tools out of the daemon's memory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str) -> list[str]:
    """Run ``code`` in a fresh interpreter (its own sys.modules); its stdout lines."""
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, check=True).stdout.splitlines()


def test_run_does_not_import_the_field_tools() -> None:
    code = ("import sys\nfrom agent.tools.cli import build_parser\n"
            "p = build_parser(field_tools=False)\n"
            "print(sorted(m for m in ('agent.tools.doctor', 'agent.tools.provision', "
            "'agent.tools.sdcard', 'agent.tools.status') if m in sys.modules))\n"
            "build_parser()\n"
            "print(sorted(m for m in ('agent.tools.doctor', 'agent.tools.provision', "
            "'agent.tools.sdcard', 'agent.tools.status') if m in sys.modules))\n")
    out = _python(code)
    assert out[0] == "[]"
    assert out[1] == ("['agent.tools.doctor', 'agent.tools.provision', 'agent.tools.sdcard', "
                      "'agent.tools.status']")


def test_the_daemons_modules_leave_out_what_it_never_uses() -> None:
    """The 45 MiB budget (docs/models.md): what the daemon imports, with both detectors,
    the model runtime, the accelerometer drivers and emulators and the status writer,
    must not pull numpy, paho's unused urllib.request (http.client, email), argparse,
    statistics or shutil back in."""
    code = ("import sys\nimport agent.core.daemon, agent.features.safety, agent.tools.status\n"
            "import agent.core.sensors\n"
            "import agent.detectors.fall, agent.detectors.fire, agent.models.litert_c\n"
            "import drivers.adxl345.emulator, drivers.mpu6050.emulator, drivers.sgp30.emulator\n"
            "from agent.wire.uplink import Uplink\n"
            "heavy = ('numpy', 'http.client', 'email', 'argparse', 'statistics', 'shutil')\n"
            "print(sorted(m for m in heavy if m in sys.modules))\n")
    assert _python(code) == ["[]"]


def test_a_deferred_module_loads_on_first_use_and_then_is_the_real_one() -> None:
    code = ("import sys\nimport agent\nimport urllib.request as r\n"
            "from agent.core.deferred_imports import is_deferred\n"
            "print(is_deferred('urllib.request'), 'http.client' in sys.modules)\n"
            "from urllib.request import Request\n"
            "import urllib\n"
            "print(is_deferred('urllib.request'), 'http.client' in sys.modules,\n"
            "      urllib.request is sys.modules['urllib.request'], r.Request is Request,\n"
            "      isinstance(r.getproxies(), dict))\n")
    assert _python(code) == ["True False", "False True True True True"]


def test_defer_is_a_no_op_for_modules_already_loaded_or_missing() -> None:
    from agent.core import deferred_imports

    deferred_imports.defer("json")  # imported long ago
    assert not deferred_imports.is_deferred("json")
    deferred_imports.defer("no_such_module_for_citynode")
    assert "no_such_module_for_citynode" not in sys.modules


def test_help_loads_no_configuration_schema_and_no_device() -> None:
    """``citynode --help`` builds every subcommand's parser, yet needs neither the
    configuration schema, the device catalogue nor msgspec (bench/cli_startup.py: about
    10 ms of a 70 ms start on this machine)."""
    code = ("import sys\nfrom agent.tools.cli import build_parser\nbuild_parser()\n"
            "print(sorted(m for m in sys.modules if m in ('agent.core.config', "
            "'drivers.catalogue', 'drivers.spec', 'msgspec') or m.endswith('.spec')))")
    assert _python(code) == ["[]"]
