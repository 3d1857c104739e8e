"""How long ``citynode --help`` and ``citynode config check`` take, against references
measured in the same run.

An installer types these on a Pi Zero 2 W; a daemon restart pays the same imports. The
references: the bare interpreter with argparse (what any Python CLI pays), and, with
``--baseline REV``, the same commands of another revision of this repository (checked out
with ``git worktree`` into a temporary folder), so a change is judged by ratio, not by
this machine's speed.

    python -m bench.cli_startup [--runs 15] [--baseline REV]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = '[node]\nid = "bench-1"\n[[sensor]]\ntype = "sht3x"\nname = "air"\nbus = "emulator"\n'


def _time(argv: list[str], cwd: Path, runs: int) -> float:
    """Median wall time of ``argv`` in milliseconds (one warm-up run first)."""
    env = {**os.environ, "PYTHONPATH": str(cwd), "PYTHONDONTWRITEBYTECODE": "0"}
    samples = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, check=False)
        if i:
            samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def _commands(config: Path) -> dict[str, list[str]]:
    py = sys.executable
    return {
        "citynode --help": [py, "-m", "agent", "--help"],
        "citynode config check": [py, "-m", "agent", "config", "check", str(config)],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--baseline", default="", help="a git revision to compare against")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.toml"
        config.write_text(CONFIG)
        ref = _time([sys.executable, "-c", "import argparse"], ROOT, args.runs)
        print(f"reference: python -c 'import argparse'  {ref:7.1f} ms")
        base: dict[str, float] = {}
        if args.baseline:
            tree = Path(tmp) / "baseline"
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(tree), args.baseline],
                           cwd=ROOT, check=True)
            try:
                for name, cmd in _commands(config).items():
                    base[name] = _time(cmd, tree, args.runs)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                               check=False)
        for name, cmd in _commands(config).items():
            ms = _time(cmd, ROOT, args.runs)
            line = f"{name:24s} {ms:7.1f} ms  {ms / ref:5.2f}x the reference"
            if name in base:
                line += f"; {args.baseline}: {base[name]:7.1f} ms, ratio {ms / base[name]:5.2f}"
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
