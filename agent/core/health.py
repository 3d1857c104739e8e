"""The periodic health report: how the node itself is doing, in one compact pack.

Platforms watch 50,000 of these; each one says uptime, per-sensor health,
spool depth and evictions, reconnects, CPU and memory, and free disk, so a
failing node is visible before its data stops.
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path
from typing import Any

from agent.wire.model import Record


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc), 0 where unknown."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


class HealthReporter:
    """Builds health records; remembers the previous CPU reading to report a rate."""

    def __init__(self, disk_path: Path, clock=time.monotonic) -> None:
        self.disk_path = disk_path
        self._clock = clock
        self._start = clock()
        self._last = (self._start, cpu_seconds())

    def records(self, *, sensors: dict[str, str], spool: dict[str, int] | None,
                uplink: dict[str, Any] | None, commands: dict[str, int] | None) -> list[Record]:
        now, cpu = self._clock(), cpu_seconds()
        last_t, last_cpu = self._last
        self._last = (now, cpu)
        out = [
            Record("uptime", value=round(now - self._start)),
            Record("cpu", value=100.0 * (cpu - last_cpu) / max(1e-6, now - last_t)),
            Record("rss", value=rss_bytes()),
        ]
        try:
            st = os.statvfs(self.disk_path)  # what shutil.disk_usage does, without shutil
            out.append(Record("disk_free", value=st.f_bavail * st.f_frsize))
        except OSError:
            pass
        out += [Record(f"{name}:health", text=state) for name, state in sensors.items()]
        if spool is not None:
            out += [Record("spool", value=spool["depth"]),
                    Record("spool_bytes", value=spool["bytes"]),
                    Record("evicted_tele", value=spool["evicted_telemetry"]),
                    Record("evicted_ev", value=spool["evicted_events"])]
        if uplink is not None:
            out += [Record("reconnects", value=uplink["reconnects"]),
                    Record("historical", value=uplink["historical"])]
            for u in uplink.get("uplinks") or ():  # with several: each one's state
                out += [Record(f"{u['name']}.up", flag=bool(u["connected"])),
                        Record(f"{u['name']}.backlog", value=u["backlog"])]
        if commands is not None:
            out += [Record("cmd_ok", value=commands.get("accepted", 0)),
                    Record("cmd_refused", value=sum(v for k, v in commands.items()
                                                    if k != "accepted"))]
        return out
