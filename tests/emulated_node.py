"""A real ``citynode run`` on emulated PMS5003s, for tests that watch a platform receive
what a node sends (Home Assistant, oneM2M): the emulators, the process, a clean stop."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from drivers.emulation import SerialEmulator
from drivers.pms5003.emulator import PMS5003Model

ROOT = Path(__file__).resolve().parent.parent


class EmulatedNode:
    """``sensors`` emulated PMS5003s playing ``script``, and the agent on the configuration
    ``configure(ports)`` writes (it returns the file); its output goes to ``log_path``."""

    def __init__(self, tmp_path: Path, sensors: int, script: Sequence[tuple[int, ...]],
                 configure: Callable[[list[str]], Path], log_name: str = "agent.log") -> None:
        self.emulators: list[SerialEmulator] = []
        for i in range(sensors):
            model = PMS5003Model(itertools.cycle(script), interval_s=0.5, warmup_s=0.0)
            emu = SerialEmulator(model, tmp_path / "dev" / f"pms{i}")
            emu.start()
            self.emulators.append(emu)
        cfg = configure([e.path for e in self.emulators])
        self.log_path = tmp_path / log_name
        self.log = open(self.log_path, "w")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(cfg)], cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=self.log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def stop(self) -> int:
        """SIGTERM as systemd stops it (a kill after 30 s); the emulators after it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        for e in self.emulators:
            e.stop()
        return self.proc.returncode

    def tail(self) -> str:
        return self.log_path.read_text()[-4000:]
