"""Build the Sparkplug host application's own virtual environment (``.venv-sparkplug``).

pysparkplug, an independent Sparkplug B implementation, pins paho-mqtt below 2 while
citynode needs paho-mqtt 2, so the host application (tests/sparkplug/host_app.py) runs
in an environment of its own. ``make sparkplug-host-venv`` and the tests call this; it
does nothing when the environment is there with this pin. Exit 0 when ready, 1 (with a
line saying why) when it cannot be built (no network, no package).

    python tests/sparkplug/host_venv.py [DIR]
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / ".venv-sparkplug"
#: The independent implementation and what it brings (its own pins: paho-mqtt<2).
REQUIREMENTS = ("pysparkplug==0.6.1",)


def python(path: Path = DEFAULT) -> Path:
    return path / "bin" / "python"


def ready(path: Path = DEFAULT) -> bool:
    stamp = path / ".stamp"
    return python(path).exists() and stamp.exists() and \
        stamp.read_text().split() == list(REQUIREMENTS)


def build(path: Path = DEFAULT) -> str | None:
    """Make the environment; None when ready, else why it is not."""
    if ready(path):
        return None
    try:
        if not python(path).exists():
            venv.EnvBuilder(with_pip=True, clear=True).create(path)
        run = subprocess.run([str(python(path)), "-m", "pip", "install", "-q",
                              "--disable-pip-version-check", *REQUIREMENTS],
                             capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot create {path}: {exc}"
    if run.returncode != 0:
        tail = (run.stderr or run.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"pip could not install {' '.join(REQUIREMENTS)} into {path}: {tail[0]}"
    check = subprocess.run([str(python(path)), "-c", "import pysparkplug, paho.mqtt.client"],
                           capture_output=True, text=True)
    if check.returncode != 0:
        return f"{path} has no working pysparkplug: {check.stderr.strip()[-200:]}"
    (path / ".stamp").write_text(" ".join(REQUIREMENTS) + "\n")
    return None


def main() -> int:
    path = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else DEFAULT
    why = build(path)
    if why:
        print(why, file=sys.stderr)
        return 1
    (path / ".stamp").touch()  # newer than this script: make is satisfied
    print(f"Sparkplug host application environment ready: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
