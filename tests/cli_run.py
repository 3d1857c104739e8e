"""Running ``citynode`` in tests: in this process with its output captured, or in a fresh
process whose peak memory is measured by a wrapper of its own (Linux carries ru_maxrss over
fork and exec, so a child of the large pytest process cannot measure itself)."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import textwrap
from pathlib import Path

from agent.tools.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent

_MEASURE = textwrap.dedent("""
    import resource, subprocess, sys
    stdin = open(sys.argv[1], "rb") if sys.argv[1] != "-" else subprocess.DEVNULL
    p = subprocess.run(sys.argv[2:], stdin=stdin, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    sys.stdout.write(f"{p.returncode} {rss} {len(p.stdout)}\\n")
    sys.stdout.write(p.stderr.decode(errors="replace"))
""")


def run(argv: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
    """``citynode ARGV`` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    if stdin is not None:
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli(argv)
    finally:
        sys.stdin = saved
    return rc, out.getvalue(), err.getvalue()


def measured(args: list[str], stdin: Path | None = None,
             timeout: float = 600) -> tuple[int, int, int, str]:
    """``citynode ARGS`` in a fresh process: exit code, its peak RSS in MiB, stdout size,
    stderr."""
    cmd = [sys.executable, "-c", _MEASURE, str(stdin) if stdin else "-",
           sys.executable, "-m", "agent.tools.cli", *args]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                         check=True).stdout
    head, _, err = out.partition("\n")
    rc, rss, size = (int(x) for x in head.split())
    return rc, rss, size, err
