"""``citynode status``: the running daemon's health, read from the snapshot it keeps.

The daemon keeps ``status.json`` current (:mod:`agent.core.status_file`: where, how often,
what it holds); this command finds it, checks that the snapshot is fresh (written within
3 periods by a process that is still alive), prints it as a table or as JSON, and exits
like ``systemctl status``: 0 running and healthy, 1 running but degraded, 3 not running
(or hung), 4 unknown (the file cannot be read). See docs/status.md.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.status_file import FILENAME, PERIOD_RUNTIME_S, runtime_dir

if TYPE_CHECKING:
    import argparse

STALE_PERIODS = 3
SYSTEMD_RUNTIME_DIR = Path("/run/citynode")  # RuntimeDirectory=citynode
#: Health states that need no attention (sleeping: duty cycling between reports).
FINE = frozenset({"ok", "warming_up", "sleeping"})

EX_OK, EX_DEGRADED, EX_NOT_RUNNING, EX_UNKNOWN = 0, 1, 3, 4


def candidate_paths(state_dir: Path, env: Mapping[str, str] = os.environ) -> list[Path]:
    """Where a reader looks: an operator's shell has no RUNTIME_DIRECTORY, so /run/citynode
    is tried as well; the daemon may also run outside systemd (state directory)."""
    out: list[Path] = []
    for d in (runtime_dir(env), SYSTEMD_RUNTIME_DIR, state_dir):
        if d is not None and d / FILENAME not in out:
            out.append(d / FILENAME)
    return out


# -- reading and judging (command side) ----------------------------------------------------
def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user (citynode)
    except (OSError, OverflowError, ValueError):
        return False
    return True


def _ago(seconds: float) -> str:
    s = int(max(0, seconds))
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def _clock_time(t: float | None) -> str:
    return "never" if not t else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def assess(snap: dict[str, Any], *, now: float | None = None,
           alive=pid_alive) -> tuple[int, str, list[str]]:
    """(exit code, one-line verdict, problems) for a snapshot."""
    now = time.time() if now is None else now
    age = now - float(snap.get("written_at", 0))
    period = float(snap.get("period_s") or PERIOD_RUNTIME_S)
    pid = int(snap.get("pid", 0))
    if snap.get("state") == "stopped":
        at = _clock_time(snap.get("written_at"))
        return EX_NOT_RUNNING, f"not running: stopped cleanly at {at}", []
    if not alive(pid):
        return EX_NOT_RUNNING, (f"not running: process {pid} is gone (crashed or killed; "
                                f"last status {_ago(age)} ago)"), []
    if age > STALE_PERIODS * period:
        return EX_NOT_RUNNING, (f"not responding: status not updated for {_ago(age)} "
                                f"(expected every {period:g} s) although process {pid} "
                                "exists; hung? see journalctl -u citynode"), []
    problems = []
    for s in snap.get("sensors", []):
        if s.get("health") not in FINE:
            problems.append(f"sensor {s['name']} {s['health']}"
                            + (f" ({s['detail']})" if s.get("detail") else ""))
    up = snap.get("uplink")
    if up is not None and not up.get("connected"):
        problems.append(f"uplink down ({up.get('state', '')})")
    sp = snap.get("spool")
    if sp is not None and sp.get("mode") != "disk":
        problems.append("spool in memory: the disk is full")
    state = snap.get("state", "running")
    if problems:
        return EX_DEGRADED, f"{state}, degraded: " + "; ".join(problems), problems
    return EX_OK, f"{state}, all ok", []


def _size(n: float) -> str:
    for unit_name in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit_name == "GiB":
            return f"{n:.0f} {unit_name}" if unit_name == "B" else f"{n:.1f} {unit_name}"
        n /= 1024
    return f"{n} B"


def _number(name: str, v: float) -> str:
    """At the quantity's resolution (temp=21.53, not 21.5312), as in the payloads."""
    from agent.wire.quantities import resolution

    res = resolution(name)
    if res is None or res >= 1:
        return f"{v:g}" if res is None else f"{v:.0f}"
    return f"{v:.{max(0, -math.floor(math.log10(res)))}f}"


def _values(s: dict[str, Any]) -> str:
    units = s.get("units", {})
    return " ".join(f"{k}={_number(k, v)}" + (f" {units[k]}" if units.get(k) else "")
                    for k, v in s.get("values", {}).items() if isinstance(v, int | float))


def render(snap: dict[str, Any], verdict: tuple[int, str, list[str]], path: Path | str,
           *, now: float | None = None) -> str:
    """The human-readable table."""
    now = time.time() if now is None else now
    code, line, _ = verdict
    mark = {EX_OK: "OK", EX_DEGRADED: "DEGRADED"}.get(code, "NOT RUNNING")
    line = line.removeprefix("not running: ")
    out = [f"citynode {snap.get('node_id', '?')}: {mark} - {line}",
           f"  version {snap.get('version', '?')}, pid {snap.get('pid')}, started "
           f"{_clock_time(snap.get('started_at'))} (up {_ago(snap.get('uptime_s', 0))}), "
           f"boot session {snap.get('boot_session')}, last seq {snap.get('last_seq')}, "
           f"{snap.get('messages', 0)} msgs",
           f"  status file {path}, written {_ago(now - snap.get('written_at', now))} ago", ""]
    rows = [("SENSOR", "TYPE", "HEALTH", "LAST READING", "VALUES")]
    for s in snap.get("sensors", []):
        age = s.get("last_reading_age_s")
        health = s["health"] + (f" ({s['detail']})" if s.get("detail") not in
                                ("", s["health"]) and s["health"] != "ok" else "")
        rows.append((s["name"], s.get("type", ""), health,
                     "never" if age is None else f"{_ago(age)} ago", _values(s)))
    if len(rows) == 1:
        out.append("  no sensors configured")
    else:
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            out.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True))
                       + "  " + r[4])
    out.append("")
    up = snap.get("uplink")
    if up is None:
        out.append("  uplink  local mode (no broker: messages go to the log)")
    else:
        tls = "TLS" if up.get("tls") else "no TLS"
        if up.get("connected"):
            head = (f"connected to {up['broker']} (MQTT {up['protocol']}, {tls}) since "
                    f"{_clock_time(up.get('last_connect'))}")
        else:
            head = f"DOWN: {up.get('state', '')} ({up['broker']}, {tls})"
        out.append(f"  uplink  {head}")
        out.append(f"          {up.get('reconnects', 0)} reconnects, last disconnect "
                   f"{_clock_time(up.get('last_disconnect'))}; {up.get('published', 0)} "
                   f"published, {up.get('refused', 0)} refused, {up.get('pending', 0)} pending")
    sp = snap.get("spool")
    if sp is None:
        out.append("  spool   none (local mode)")
    else:
        oldest = sp.get("oldest_pending_age_s")
        lanes = sp.get("lanes", {})
        out.append(f"  spool   {sp['depth']} pending (event {lanes.get('event', 0)}, telemetry "
                   f"{lanes.get('telemetry', 0)}), {_size(sp.get('bytes', 0))} of "
                   f"{_size(sp.get('max_bytes', 0))}, oldest "
                   f"{'-' if oldest is None else _ago(oldest)}, on {sp.get('mode')}"
                   .replace("on memory", "in memory"))
    for name, st in (snap.get("features") or {}).items():
        out.append(f"  feature {name}: {_feature(st)}")
    models = snap.get("models") or {}
    out.append("  models  " + (", ".join(f"{k} {v}" for k, v in models.items()) or "none"))
    return "\n".join(out) + "\n"


def _feature(st: dict[str, Any]) -> str:
    """A feature's status on one line: ``key=value``, a map as ``key a=1,b=2``."""
    def text(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return {True: "yes", False: "no", None: "-"}[v]
        return f"{v:g}" if isinstance(v, float) else str(v)
    parts = []
    for key, v in st.items():
        if isinstance(v, dict):
            parts.append(f"{key} " + (",".join(f"{k}={text(x)}" for k, x in v.items()) or "-"))
        else:
            parts.append(f"{key}={text(v)}")
    return ", ".join(parts)


def read_snapshot(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or "written_at" not in data:
        raise ValueError("not a citynode status snapshot")
    return data


def _state_dir_from(config: str) -> Path:
    """The configured state directory; the default one if the config cannot be read
    (the status command must work even when the configuration is broken)."""
    from agent.core.config import ConfigError, NodeConfig, load

    try:
        return load(config, check_devices=False).node.resolved_state_dir()
    except ConfigError:
        return NodeConfig(id="x").resolved_state_dir()


def locate(args: argparse.Namespace) -> list[Path]:
    if args.file:
        return [Path(args.file)]
    return candidate_paths(_state_dir_from(args.config))


def once(args: argparse.Namespace) -> tuple[int, str]:
    """One look: (exit code, text to print)."""
    paths = locate(args)
    existing = [p for p in paths if p.exists()]
    if not existing:
        line = ("not running: no status file (looked in "
                + ", ".join(str(p) for p in paths)
                + "; the daemon writes one while it runs)")
        text = (json.dumps({"assessment": {"exit_code": EX_NOT_RUNNING, "summary": line}})
                if args.json else f"citynode: NOT RUNNING - {line}")
        return EX_NOT_RUNNING, text + "\n"
    path = max(existing, key=lambda p: p.stat().st_mtime)
    try:
        snap = read_snapshot(path)
    except PermissionError:
        return EX_UNKNOWN, (f"citynode status: cannot read {path}: permission denied "
                            "(try sudo, or a member of group citynode)\n")
    except (OSError, ValueError) as exc:
        return EX_UNKNOWN, f"citynode status: cannot read {path}: {exc}\n"
    now = time.time()
    verdict = assess(snap, now=now)
    if args.json:
        doc = {**snap, "assessment": {"exit_code": verdict[0], "summary": verdict[1],
                                      "problems": verdict[2], "file": str(path),
                                      "age_s": round(now - snap["written_at"], 1)}}
        return verdict[0], json.dumps(doc, indent=2) + "\n"
    return verdict[0], render(snap, verdict, path, now=now)


def cmd_status(args: argparse.Namespace) -> int:
    if args.watch is not None and args.watch <= 0:
        print("error: --watch needs a positive number of seconds", file=sys.stderr)
        return 64
    code, text = once(args)
    if args.watch is None:
        sys.stdout.write(text)
        return code
    clear = "\033[H\033[2J" if sys.stdout.isatty() and not args.json else ""
    try:
        while True:
            sys.stdout.write(clear + text)
            sys.stdout.flush()
            time.sleep(args.watch)
            code, text = once(args)
    except KeyboardInterrupt:
        return code


def register(sub: argparse._SubParsersAction, default_cfg: str) -> None:
    p = sub.add_parser("status", help="the running daemon's health: sensors, uplink, spool "
                       "(exit 0 ok, 1 degraded, 3 not running)")
    p.add_argument("--config", "-c", default=default_cfg,
                   help=f"configuration, for the state directory (default {default_cfg})")
    p.add_argument("--file", help="read this status file instead of looking for it")
    p.add_argument("--json", action="store_true", help="the snapshot as JSON, with the verdict")
    p.add_argument("--watch", type=float, metavar="S", help="refresh every S seconds")
    p.set_defaults(func=cmd_status)
