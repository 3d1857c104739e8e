"""``citynode status``: the running daemon's health, read from the snapshot it keeps.

The daemon keeps ``status.json`` current (:mod:`agent.core.status_file`: where, how often,
what it holds); this command finds it, checks that the snapshot is fresh (written within
3 periods by a process that is still alive), prints it as a table or as JSON, and exits
like ``systemctl status``: 0 running and healthy, 1 running but degraded, 3 not running
(or hung), 4 unknown (the file cannot be read, or is not a snapshot this version can
trust: every field is checked before anything is judged or printed). See docs/status.md.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.status_file import FILENAME, FORMAT, PERIOD_RUNTIME_S, runtime_dir

if TYPE_CHECKING:
    import argparse

STALE_PERIODS = 3
SYSTEMD_RUNTIME_DIR = Path("/run/citynode")  # RuntimeDirectory=citynode
#: Health states that need no attention (sleeping: duty cycling between reports).
FINE = frozenset({"ok", "warming_up", "sleeping"})

EX_OK, EX_DEGRADED, EX_NOT_RUNNING, EX_UNKNOWN = 0, 1, 3, 4
EX_USAGE = 64
#: A snapshot is a few KiB (about 300 bytes a sensor); anything near this is not one.
MAX_SNAPSHOT_BYTES = 1024 * 1024
#: The longest ``--watch`` period (a day).
MAX_WATCH_S = 86400.0


def candidate_paths(state_dir: Path, env: Mapping[str, str] = os.environ) -> list[Path]:
    """Where a reader looks: an operator's shell has no RUNTIME_DIRECTORY, so /run/citynode
    is tried as well; the daemon may also run outside systemd (state directory)."""
    out: list[Path] = []
    for d in (runtime_dir(env), SYSTEMD_RUNTIME_DIR, state_dir):
        if d is not None and d / FILENAME not in out:
            out.append(d / FILENAME)
    return out


# -- what a snapshot must look like ----------------------------------------------------------
class SnapshotError(ValueError):
    """The file is not a snapshot this command can trust (exit 4): the message names the
    field and what was wrong with it."""


#: Unix times a snapshot may carry: 1970 to 2100 (anything else is not a clock reading).
MAX_UNIX_TIME = 4102444800.0
#: Linux's largest pid (PID_MAX_LIMIT); 0 and negative pids would signal process groups.
PID_MAX = 4194304
STATES = ("starting", "running", "stopping", "stopped")
_Check = Callable[[Any, str], None]


def _kind(v: Any) -> str:
    """A JSON value's type, as the error message names it."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return f"the number {v!r}" if len(repr(v)) <= 24 else "a number"
    if isinstance(v, str):
        return f"the string {v!r}" if len(v) <= 24 else "a string"
    return "a list" if isinstance(v, list) else "an object"


def _expected(where: str, want: str, got: Any) -> SnapshotError:
    return SnapshotError(f"{where}: expected {want}, got {_kind(got)}")


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _string(v: Any, where: str) -> None:
    if not isinstance(v, str):
        raise _expected(where, "a string", v)


def _boolean(v: Any, where: str) -> None:
    if not isinstance(v, bool):
        raise _expected(where, "true or false", v)


def _count(v: Any, where: str) -> None:
    if not (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63):
        raise _expected(where, "a whole number >= 0", v)


def _seconds(v: Any, where: str) -> None:
    if not (_is_number(v) and 0 <= v < 2**53):  # NaN and infinities fail the comparison
        raise _expected(where, "a number of seconds >= 0", v)


def _unix_time(v: Any, where: str) -> None:
    if not (_is_number(v) and 0 <= v <= MAX_UNIX_TIME):
        raise _expected(where, "a Unix time between 1970 and 2100", v)


def _period(v: Any, where: str) -> None:
    if not (_is_number(v) and 0 < v <= 86400):
        raise _expected(where, "a number of seconds between 0 and 86400", v)


def _pid(v: Any, where: str) -> None:
    if not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= PID_MAX):
        raise _expected(where, f"a process id between 1 and {PID_MAX}", v)


def _reading(v: Any, where: str) -> None:
    """A sensor value: any number (a sensor may report NaN), or null; not an integer too
    large to print as a float."""
    if v is not None and not (_is_number(v) and not (isinstance(v, int) and abs(v) > 2**1000)):
        raise _expected(where, "a number or null", v)


def _anything(v: Any, where: str) -> None:
    """Features say what they like; the table prints it as text."""


def _one_of(*allowed: str) -> _Check:
    def check(v: Any, where: str) -> None:
        if v not in allowed:
            raise _expected(where, "one of " + ", ".join(allowed), v)
    return check


def _format(v: Any, where: str) -> None:
    if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
        raise _expected(where, "a format number >= 1", v)
    if v > FORMAT:
        raise SnapshotError(f"{where}: snapshot format {v} comes from a newer citynode "
                            f"(this one reads format {FORMAT}): use that version's status")


def _nullable(check: _Check) -> _Check:
    def inner(v: Any, where: str) -> None:
        if v is not None:
            check(v, where)
    return inner


def _list_of(item: _Check) -> _Check:
    def check(v: Any, where: str) -> None:
        if not isinstance(v, list):
            raise _expected(where, "a list", v)
        for i, x in enumerate(v):
            item(x, f"{where}[{i}]")
    return check


def _map_of(value: _Check) -> _Check:
    def check(v: Any, where: str) -> None:
        if not isinstance(v, dict):
            raise _expected(where, "an object", v)
        for k, x in v.items():
            value(x, f"{where}.{k}")
    return check


def _object(fields: Mapping[str, _Check], required: tuple[str, ...]) -> _Check:
    """An object whose known fields are checked; unknown fields are allowed (a newer
    daemon may add some without changing what these mean, docs/status.md)."""
    def check(v: Any, where: str) -> None:
        if not isinstance(v, dict):
            raise _expected(where, "an object", v)
        for key in required:
            if key not in v:
                raise SnapshotError(f"{where}.{key}: missing")
        for key, field in fields.items():
            if key in v:
                field(v[key], f"{where}.{key}")
    return check


def _health(v: Any, where: str) -> None:
    from agent.core.sampling import Health

    _one_of(*(h.value for h in Health))(v, where)


_SENSOR = _object({
    "name": _string, "type": _string, "health": _health, "detail": _string,
    "values": _map_of(_reading), "units": _map_of(_string),
    "last_reading_age_s": _nullable(_seconds), "readings": _count, "errors": _count,
    "reopens": _count,
}, required=("name", "health"))
_UPLINK = _object({
    "connected": _boolean, "state": _string, "broker": _string, "tls": _boolean,
    "protocol": _string, "client_id": _string, "last_connect": _nullable(_unix_time),
    "last_disconnect": _nullable(_unix_time), "reconnects": _count, "published": _count,
    "refused": _count, "historical": _count, "pending": _count,
    "broker_index": _count, "brokers": _count,
}, required=("connected",))
_UPLINKS = _list_of(_object({
    "name": _string, "format": _string, "connected": _boolean, "state": _string,
    "broker": _string, "tls": _boolean, "protocol": _string, "client_id": _string,
    "last_connect": _nullable(_unix_time), "reconnects": _count, "published": _count,
    "refused": _count, "historical": _count, "pending": _count,
    "broker_index": _count, "brokers": _count, "platform": _map_of(_anything),
}, required=("name", "connected")))
_SPOOL = _object({
    "path": _string, "depth": _count, "lanes": _map_of(_count), "bytes": _count,
    "max_bytes": _count, "oldest_pending_age_s": _nullable(_seconds), "mode": _string,
    "evicted": _map_of(_count),
}, required=("mode",))
#: The fields the verdict rests on are required; the others only feed the table.
REQUIRED = ("written_at", "state", "node_id", "pid", "period_s", "sensors", "uplink", "spool")
_SNAPSHOT = _object({
    "format": _format, "state": _one_of(*STATES), "node_id": _string, "version": _string,
    "pid": _pid, "config": _string, "started_at": _unix_time, "written_at": _unix_time,
    "uptime_s": _seconds, "period_s": _period, "boot_session": _nullable(_count),
    "last_seq": _nullable(_count), "messages": _count, "local_mode": _boolean,
    "sensors": _list_of(_SENSOR), "uplink": _nullable(_UPLINK), "uplinks": _UPLINKS,
    "spool": _nullable(_SPOOL),
    "models": _map_of(_string), "features": _map_of(_map_of(_anything)),
    "update": _nullable(_map_of(_anything)),
}, required=REQUIRED)


def validate(data: Any) -> dict[str, Any]:
    """``data`` if it is a snapshot this version can judge and print, else
    :class:`SnapshotError` naming the first field at fault."""
    if not isinstance(data, dict) or "written_at" not in data:
        raise SnapshotError("not a citynode status snapshot (no written_at)")
    _SNAPSHOT(data, "snapshot")
    try:  # a lone surrogate (\\ud800) parses, and then cannot be printed
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise SnapshotError("holds text that is not valid Unicode") from None
    return data


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
    links = snap.get("uplinks") or []
    if len(links) > 1:  # several: say which
        problems += [f"uplink {u['name']} down ({u.get('state', '')})"
                     for u in links if not u.get("connected")]
    elif up is not None and not up.get("connected"):
        problems.append(f"uplink down ({up.get('state', '')})")
    sp = snap.get("spool")
    if sp is not None and sp.get("mode") != "disk":
        problems.append("spool in memory: the disk is full")
    state = snap.get("state", "running")
    if problems:
        return EX_DEGRADED, f"{state}, degraded: " + "; ".join(problems), problems
    return EX_OK, f"{state}, all ok", []


def _where(up: Mapping[str, Any]) -> str:
    """The broker in use; with failover brokers, which of them ("failover 2 of 3")."""
    at = str(up.get("broker", "?"))
    index, count = up.get("broker_index"), up.get("brokers")
    if isinstance(count, int) and count > 1 and isinstance(index, int):
        return f"{at}, " + ("primary" if index == 0 else f"failover {index} of {count - 1}")
    return at


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


def _update_lines(update: Any) -> list[str]:
    """``release 0.2.0 (current), update: rolled_back 0.3.0 (3 starts ...)``; nothing for a
    daemon that does not run from a release and never updated."""
    if not isinstance(update, dict):
        return []
    slot, phase = update.get("slot") or "", update.get("phase") or "idle"
    result = update.get("result") if isinstance(update.get("result"), dict) else {}
    if not slot and phase == "idle":
        return []
    text = f"  release {slot or '(not a release folder)'}"
    if phase not in ("idle", "confirmed", "rolled_back", "failed"):
        text += f", update {phase} {update.get('target') or ''}".rstrip()
    if result:
        text += (f", last update {result.get('outcome')} {result.get('version') or ''}"
                 .rstrip())
        if result.get("reason") and result.get("outcome") != "confirmed":
            text += f" ({str(result['reason'])[:120]})"
    return [text]


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
           f"  status file {path}, written {_ago(now - snap.get('written_at', now))} ago"]
    out += [*_update_lines(snap.get("update")), ""]
    rows = [("SENSOR", "TYPE", "HEALTH", "LAST READING", "VALUES")]
    for s in snap.get("sensors", []):
        age = s.get("last_reading_age_s")
        detail = s.get("detail", "")
        health = s["health"] + (f" ({detail})" if detail not in ("", s["health"])
                                and s["health"] != "ok" else "")
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
            head = (f"connected to {_where(up)} (MQTT {up.get('protocol', '?')}, "
                    f"{tls}) since "
                    f"{_clock_time(up.get('last_connect'))}")
        else:
            head = f"DOWN: {up.get('state', '')} ({_where(up)}, {tls})"
        out.append(f"  uplink  {head}")
        out.append(f"          {up.get('reconnects', 0)} reconnects, last disconnect "
                   f"{_clock_time(up.get('last_disconnect'))}; {up.get('published', 0)} "
                   f"published, {up.get('refused', 0)} refused, {up.get('pending', 0)} pending")
    links = snap.get("uplinks") or []
    if len(links) > 1:
        for u in links:
            facts = ", ".join(f"{k} {v}" for k, v in (u.get("platform") or {}).items())
            line = (f"{u['name']}: {u.get('format', '?')} to {_where(u)}, "
                    + ("up" if u.get("connected") else f"DOWN ({u.get('state', '')})")
                    + f", {u.get('published', 0)} published, {u.get('pending', 0)} pending"
                    + (f"; {facts}" if facts else ""))
            out.append(f"          {line}")
    sp = snap.get("spool")
    if sp is None:
        out.append("  spool   none (local mode)")
    else:
        oldest = sp.get("oldest_pending_age_s")
        lanes = sp.get("lanes", {})
        out.append(f"  spool   {sp.get('depth', 0)} pending (event {lanes.get('event', 0)}, "
                   f"telemetry {lanes.get('telemetry', 0)}), {_size(sp.get('bytes', 0))} of "
                   f"{_size(sp.get('max_bytes', 0))}, oldest "
                   f"{'-' if oldest is None else _ago(oldest)}, on {sp.get('mode')}"
                   .replace("on memory", "in memory"))
    for name, st in (snap.get("features") or {}).items():
        out.append(f"  feature {name}: {_feature(st)}")
    models = snap.get("models") or {}
    out.append("  models  " + (", ".join(f"{k} {v}" for k, v in models.items()) or "none"))
    return ("\n".join(out) + "\n").translate(_CONTROLS)


#: Control characters in a snapshot's text (a node id, a detail) are shown as "?": a file
#: must not be able to move the cursor or clear the operator's terminal.
_CONTROLS = {c: "?" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c != 0x0A}


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


def read_snapshot(path: Path | str) -> dict[str, Any]:
    """The validated snapshot in ``path`` (``-``: standard input).

    Never more than :data:`MAX_SNAPSHOT_BYTES` is read, a FIFO or a directory cannot hang
    or crash it; anything that is not a snapshot raises :class:`SnapshotError`, a file that
    cannot be opened :class:`PermissionError` or :class:`SnapshotError`.
    """
    from agent.core.inputs import InputError, read_input

    name = os.fspath(path)
    try:
        raw = read_input(name, limit=MAX_SNAPSHOT_BYTES)
    except InputError as exc:
        if name != "-" and os.path.exists(name) and not os.access(name, os.R_OK):
            raise PermissionError(name) from None
        raise SnapshotError(exc.message) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"not UTF-8 text (byte {exc.start})") from None
    if not text.strip():
        raise SnapshotError("empty (the daemon never leaves it so: a disk full or an "
                            "interrupted copy?)")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") \
            from None
    except (RecursionError, ValueError) as exc:  # nested too deep; a 5000-digit number
        raise SnapshotError(f"not a snapshot: {' '.join(str(exc).split())[:120]}") from None
    return validate(data)


def _state_dir_from(config: str) -> Path:
    """The configured state directory; the default one if the config cannot be read
    (the status command must work even when the configuration is broken)."""
    from agent.core.config import NodeConfig, load

    try:
        if not os.path.isfile(config):  # a FIFO, a device, a directory: not read at all
            raise FileNotFoundError(config)
        return load(config, check_devices=False).node.resolved_state_dir()
    except Exception:  # any broken configuration: status still looks where it can
        return NodeConfig(id="x").resolved_state_dir()


def locate(args: argparse.Namespace) -> list[Path]:
    if args.file:
        return [Path(args.file)]
    return candidate_paths(_state_dir_from(args.config))


def _age_of(path: Path) -> float | None:
    """The file's mtime; None if it does not exist; -inf if it cannot be looked at
    (a directory without search permission): reading it then says why."""
    try:
        return path.stat().st_mtime
    except PermissionError:
        return -math.inf
    except (OSError, ValueError):  # missing, a dangling link, an embedded NUL
        return None


def newest(paths: list[Path]) -> Path | None:
    """The most recently written of the candidate files that exist."""
    found = [(t, p) for p in paths if (t := _age_of(p)) is not None]
    return max(found, key=lambda tp: tp[0])[1] if found else None


def _envelope(code: int, summary: str, **fields: Any) -> str:
    """The machine-readable output (agent/tools/machine.py, docs/doctor.md)."""
    from agent.tools.machine import ENVELOPE_KEYS, document, dumps

    reserved = {*ENVELOPE_KEYS, "counts", "rows"}
    return dumps(document("status", code, summary,
                          **{k: v for k, v in fields.items() if k not in reserved}))


def once(args: argparse.Namespace) -> tuple[int, str]:
    """One look: (exit code, text to print)."""
    paths = [Path("-")] if args.file == "-" else locate(args)
    path = paths[0] if args.file == "-" else newest(paths)
    if path is None:
        line = ("not running: no status file (looked in "
                + ", ".join(str(p) for p in paths)
                + "; the daemon writes one while it runs)")
        if args.json:
            return EX_NOT_RUNNING, _envelope(EX_NOT_RUNNING, line, assessment={
                "exit_code": EX_NOT_RUNNING, "summary": line})
        return EX_NOT_RUNNING, f"citynode: NOT RUNNING - {line}\n"
    shown = "standard input" if str(path) == "-" else str(path)
    try:
        snap = read_snapshot(path)
    except PermissionError:
        why = "permission denied (try sudo, or a member of group citynode)"
    except (OSError, SnapshotError) as exc:
        why = str(exc)
    else:
        why = ""
    if why:
        line = f"cannot read {shown}: {why}"
        if args.json:
            return EX_UNKNOWN, _envelope(EX_UNKNOWN, line, file=shown, assessment={
                "exit_code": EX_UNKNOWN, "summary": line, "file": shown})
        return EX_UNKNOWN, f"citynode status: {line}\n"
    now = time.time()
    verdict = assess(snap, now=now)
    if args.json:
        assessment = {"exit_code": verdict[0], "summary": verdict[1], "problems": verdict[2],
                      "file": shown, "age_s": round(now - snap["written_at"], 1)}
        return verdict[0], _envelope(verdict[0], verdict[1], **snap, assessment=assessment)
    return verdict[0], render(snap, verdict, shown, now=now)


def cmd_status(args: argparse.Namespace) -> int:
    watch = args.watch
    if watch is not None and not 0 < watch <= MAX_WATCH_S:  # NaN fails this too
        print(f"citynode status: --watch needs a number of seconds above 0 and at most "
              f"{MAX_WATCH_S:g}, got {watch:g}", file=sys.stderr)
        return EX_USAGE
    if watch is not None and args.file == "-":
        print("citynode status: --watch cannot re-read standard input (--file -)",
              file=sys.stderr)
        return EX_USAGE
    code, text = once(args)
    if watch is None:
        sys.stdout.write(text)
        return code
    clear = "\033[H\033[2J" if sys.stdout.isatty() and not args.json else ""
    try:
        while True:
            sys.stdout.write(clear + text)
            sys.stdout.flush()
            time.sleep(watch)
            code, text = once(args)
    except KeyboardInterrupt:
        return code


def register(sub: argparse._SubParsersAction, default_cfg: str) -> None:
    p = sub.add_parser("status", help="the running daemon's health: sensors, uplink, spool "
                       "(exit 0 ok, 1 degraded, 3 not running)")
    p.add_argument("--config", "-c", default=default_cfg,
                   help=f"configuration, for the state directory (default {default_cfg})")
    p.add_argument("--file", help="read this status file instead of looking for it "
                   "(- for standard input)")
    p.add_argument("--json", action="store_true", help="the snapshot as JSON, with the verdict "
                   "(the shape shared with doctor and config check: docs/status.md)")
    p.add_argument("--watch", type=float, metavar="S", help="refresh every S seconds")
    p.set_defaults(func=cmd_status)
