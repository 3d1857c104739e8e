"""A running citynode: doctor must not open the ports, buses and pins it holds.

Two ways to know. The daemon's status snapshot (agent/core/status_file.py) names its pid:
if that process is alive and is a citynode, the serial, I2C and GPIO checks are not run
(their rows say "stop citynode first") and the daemon's own view of each sensor is shown
instead. And the daemon opens its serial ports with an exclusive lock (flock, pyserial's
``exclusive=True``): a doctor that found no snapshot gets "held by" with the holder's pid
from ``/proc/locks`` rather than disturbing the daemon's readings.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .base import FAIL, OK, WARN, Check
from .hints import HINT_DAEMON_RUNNING, HINT_DAEMON_SENSOR

if TYPE_CHECKING:
    from agent.core.config import Config

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class RunningDaemon:
    """A live citynode and the snapshot that names it."""

    pid: int
    status_file: Path
    snapshot: dict[str, Any]

    @property
    def config(self) -> str:
        return str(self.snapshot.get("config") or "")

    def label(self) -> str:
        return f"citynode pid {self.pid}"


def is_citynode(pid: int, proc: Path = PROC) -> bool:
    """Whether process ``pid`` is a citynode (``citynode ...`` or ``python -m agent ...``),
    not an unrelated process that got the pid of a daemon that died without a last
    snapshot. Unknowable (no /proc, hidden pids): assumed so, the safe side for ports."""
    try:
        argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not (proc / "self").exists()  # no /proc at all: cannot tell
    except OSError:
        return True
    words = [a.decode("utf-8", "replace") for a in argv if a]
    if not words:
        return False  # a zombie or a kernel thread
    if any(os.path.basename(w).startswith("citynode") for w in words[:2]):
        return True
    return any(a == "-m" and b in ("agent", "agent.tools.cli")
               for a, b in itertools.pairwise(words))


def find_running_daemon(state_dir: Path, env: Mapping[str, str] = os.environ
                        ) -> RunningDaemon | None:
    """The citynode whose snapshot is in the runtime or state directory and which still
    runs (a snapshot saying "stopped", or naming a dead or foreign pid, does not count)."""
    from agent.tools.status import SnapshotError, candidate_paths, pid_alive, read_snapshot

    for path in candidate_paths(state_dir, env):
        try:
            if not path.is_file():
                continue
            snap = read_snapshot(path)
        except (OSError, SnapshotError):
            continue
        pid = snap["pid"]
        if snap["state"] == "stopped" or pid == os.getpid():
            continue
        if pid_alive(pid) and is_citynode(pid):
            return RunningDaemon(pid, path, snap)
    return None


def flock_holder(path: str, proc: Path = PROC) -> int | None:
    """The pid holding a flock on the file ``path`` names, from /proc/locks; None if
    no lock is listed (or it cannot be read)."""
    try:
        st = os.stat(path)
        lines = (proc / "locks").read_text().splitlines()
    except (OSError, ValueError):
        return None
    want = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5 0 EOF" (blocked waiters start with "->")
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == want:
            try:
                pid = int(fields[4])
            except ValueError:
                continue
            return pid if pid > 0 else None
    return None


def holder_text(pid: int | None) -> str:
    """Who holds a port, in words for the detail column."""
    if pid is None:
        return "another program (it holds an exclusive lock on it)"
    if is_citynode(pid):
        return f"the running daemon (citynode, pid {pid})"
    try:
        name = (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        name = "another program"
    return f"{name} (pid {pid})"


# -- rows while the daemon runs ------------------------------------------------------------
_FINE = ("ok", "warming_up", "sleeping")


def not_checked(check: str, daemon: RunningDaemon, what: str) -> Check:
    """The row that says why ``check`` did not touch the hardware."""
    other = ""
    if daemon.config:
        other = f", configuration {daemon.config}"
    return Check(check, daemon.label(), WARN,
                 f"not checked: citynode is running (pid {daemon.pid}{other}) and uses "
                 f"{what}; opening them too would disturb its readings", HINT_DAEMON_RUNNING)


def _ago(seconds: float | None) -> str:
    return "no reading yet" if seconds is None else f"last reading {seconds:.1f} s ago"


def sensor_views(check: str, cfg: Config, daemon: RunningDaemon,
                 targets: dict[str, str]) -> Iterator[Check]:
    """One row per sensor in ``targets`` (name -> the row's target), from the daemon's
    snapshot: what it reads, without opening anything."""
    sensors = {s["name"]: s for s in daemon.snapshot.get("sensors", [])}
    age = max(0.0, time.time() - daemon.snapshot["written_at"])
    types = {s.name: s for s in cfg.sensor}
    for name, target in targets.items():
        s = sensors.get(name)
        if s is None or (s.get("type") and s["type"] != _type_of(types[name])):
            yield Check(check, target, WARN, "not in the running daemon's status "
                        f"({daemon.status_file}): it runs another configuration",
                        HINT_DAEMON_RUNNING)
            continue
        health, detail = s["health"], s.get("detail", "")
        why = f" ({detail})" if detail and detail != health else ""
        text = (f"the running daemon reports {health}{why}, "
                f"{_ago(s.get('last_reading_age_s'))} (status {age:.0f} s old)")
        if health in _FINE:
            yield Check(check, target, OK, text)
        elif health == "stopped":
            yield Check(check, target, WARN, text, HINT_DAEMON_RUNNING)
        else:
            yield Check(check, target, FAIL, text, HINT_DAEMON_SENSOR)


def _type_of(sensor: Any) -> str:
    from agent.core.sensors import type_name

    return type_name(sensor)
