#!/usr/bin/python3
"""citynode-guard: the health gate's root side, run before every start of citynode.service.

``ExecStartPre=+/opt/citynode/bin/citynode-guard`` runs it as root before each start. It
imports nothing but the standard library (install.sh copies this one file outside the
releases, so a broken release cannot break its own rollback) and holds the primitives the
rest of agent/update shares: the state file, the release links, the configuration backup.

What it does, from ``/var/lib/citynode/update/state.json`` (docs/updates.md):

- phase ``switching`` (a switch cut short): finish it if the new release is complete,
  else undo it;
- phase ``gate``: count this start; when the gate is confirmed say so; when the starts
  exceed ``max_starts`` or the deadline passed, roll back: ``current`` -> the previous
  release, the configuration restored from its backup, the result recorded;
- otherwise, when ``current`` does not name a complete release, point it back at one.

Every step is idempotent and ordered so that a kill at any point leaves something the
next run finishes: the rollback's reason is recorded first, then the configuration, the
links and the result follow, each checked before it is redone. The guard never fails a
start (it exits 0): the unit starts whatever ``current`` names afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PHASES = ("idle", "downloading", "downloaded", "requested", "installing", "switching", "gate",
          "confirmed", "rolled_back", "failed")
#: Phases in which an update is under way (a new one is refused).
BUSY = ("downloading", "downloaded", "requested", "installing", "switching", "gate")
OUTCOMES = ("confirmed", "rolled_back", "failed", "refused")
COMPLETE = ".complete"  # written last into a release folder: the release is whole
MAX_STATE_BYTES = 64 * 1024
EX_OK = 0
EX_USAGE = 64


class Paths:
    """Every place the update machinery touches, under one root (``/`` on a node).

    Tests and the container tests point ``root`` (or ``CITYNODE_ROOT``) at a temporary
    tree; ``state_dir`` may be given apart (a daemon's ``[node] state_dir``).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None,
                 state_dir: str | os.PathLike[str] | None = None,
                 config: str | os.PathLike[str] | None = None) -> None:
        base = Path(root if root is not None else os.environ.get("CITYNODE_ROOT", "/"))
        self.root = base
        self.opt = base / "opt/citynode"
        self.releases = self.opt / "releases"
        self.current = self.opt / "current"
        self.previous = self.opt / "previous"
        self.lock = self.opt / ".update.lock"
        self.incoming = self.releases / ".incoming"
        self.etc = base / "etc/citynode"
        self.config = Path(config) if config else self.etc / "citynode.toml"
        self.keys = self.etc / "keys"
        self.state_dir = Path(state_dir) if state_dir else base / "var/lib/citynode"
        self.update_dir = self.state_dir / "update"
        self.state = self.update_dir / "state.json"
        self.request = self.update_dir / "request.json"

    @property
    def config_backup(self) -> Path:
        """The configuration as it was before an update (root-owned, beside the original)."""
        return self.config.with_name(self.config.name + ".rollback")


# -- files ---------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (a power cut must not undo it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Replace ``path`` by ``data``: a crash leaves the old or the new file, never half.

    The temporary file is created with O_EXCL|O_NOFOLLOW: root writes into directories the
    service user owns, where a planted symbolic link must not redirect the write.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_small(path: Path, limit: int = MAX_STATE_BYTES) -> bytes | None:
    """A small regular file's bytes (None when missing, not regular, or too large)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        import stat

        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        return os.read(fd, limit + 1)[:limit]
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str | None:
    """The file's sha256 (hex), or None when it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 16), b""):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy ``src`` over ``dst`` atomically, keeping ``src``'s mode and (as root) owner."""
    st = src.stat()
    write_atomic(dst, src.read_bytes(), st.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.chown(dst, st.st_uid, st.st_gid)


# -- the state file --------------------------------------------------------------------------
def new_state() -> dict[str, Any]:
    """The state of a node that never updated."""
    return {"phase": "idle", "target": None, "from_version": None, "gate": None,
            "result": None, "updated_at": None}


def read_state(path: Path) -> dict[str, Any]:
    """The state; a missing, torn or foreign file reads as a fresh ``idle`` state."""
    raw = read_small(path)
    if raw is None:
        return new_state()
    try:
        data = json.loads(raw)
    except ValueError:
        return new_state()
    if not isinstance(data, dict) or data.get("phase") not in PHASES:
        return new_state()
    out = new_state()
    out.update(data)
    for key in ("target", "gate", "result"):
        if not isinstance(out.get(key), dict | None):
            out[key] = None
    return out


def write_state(path: Path, state: dict[str, Any], clock: Callable[[], float] = time.time
                ) -> None:
    """Write the state atomically and durably (world-readable: status shows it)."""
    state["updated_at"] = round(clock(), 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(state, sort_keys=True, indent=1).encode() + b"\n", 0o644)


@contextlib.contextmanager
def locked(path: Path, *, wait: bool) -> Iterator[bool]:
    """Hold the update lock (installer and guard never act at once); yields False when
    ``wait`` is False and someone else holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            yield False
            return
        yield True
    finally:
        os.close(fd)


# -- releases and links ------------------------------------------------------------------------
def release_dir(paths: Paths, version: str) -> Path:
    return paths.releases / version


def is_complete(folder: Path) -> bool:
    """A release folder whose install finished (its marker is written last)."""
    return (folder / COMPLETE).is_file() and not folder.is_symlink()


def link_target(link: Path) -> str | None:
    """The release a link names (its folder name), or None when it is not a link."""
    try:
        return Path(os.readlink(link)).name
    except OSError:
        return None


def set_link(link: Path, version: str) -> bool:
    """Point ``link`` at ``releases/<version>`` atomically (new link + rename); False when
    it already did."""
    want = f"releases/{version}"
    with contextlib.suppress(OSError):
        if os.readlink(link) == want:
            return False
    tmp = link.with_name(f".{link.name}.new")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(want, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)
    return True


def complete_releases(paths: Paths) -> list[str]:
    """The complete release folders, newest change first (never a hidden one: a release
    being removed is renamed to one)."""
    try:
        found = [p for p in paths.releases.iterdir()
                 if not p.name.startswith(".") and is_complete(p)]
    except OSError:
        return []
    found.sort(key=lambda p: (p / COMPLETE).stat().st_mtime, reverse=True)
    return [p.name for p in found]


# -- configuration ---------------------------------------------------------------------------
def restore_config(paths: Paths) -> bool:
    """Put the pre-update configuration back (when a backup exists); True when it changed."""
    backup = paths.config_backup
    if not backup.is_file():
        return False
    if sha256_file(backup) == sha256_file(paths.config):
        return False
    copy_atomic(backup, paths.config)
    return True


# -- the guard ---------------------------------------------------------------------------------
def _say(line: str) -> None:
    print(f"citynode-guard: {line}", file=sys.stderr, flush=True)


def rollback(paths: Paths, state: dict[str, Any], reason: str,
             clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Switch back to the release before the update; each step idempotent, in this order:
    the reason (so a rerun goes on), the configuration, the links, the result."""
    target = (state.get("target") or {}).get("version")
    gate = state.get("gate") or {}
    if not gate.get("rollback"):
        gate["rollback"] = reason
        state["gate"] = gate
        write_state(paths.state, state, clock)
    reason = gate["rollback"]
    restore_config(paths)
    back = state.get("from_version") or link_target(paths.previous)
    if back and back != target and is_complete(release_dir(paths, back)):
        set_link(paths.current, back)
        set_link(paths.previous, back)
    else:
        _say(f"no complete previous release to go back to ({back or 'none'}): left current")
    state["phase"] = "rolled_back"
    state["result"] = {"version": target, "outcome": "rolled_back", "reason": reason,
                       "at": round(clock(), 3), "reported": False}
    write_state(paths.state, state, clock)
    with contextlib.suppress(FileNotFoundError):
        paths.request.unlink()
    _say(f"rolled back from {target} to {back}: {reason}")
    return state


def boot_clock() -> tuple[str | None, float]:
    """(this boot's id, seconds since boot, suspend included): a clock no NTP step moves.
    A Pi has no real-time clock: at boot its wall clock is the last shutdown's, then jumps
    at the first NTP sync, which must not pass a gate's deadline early. (None, 0) where
    the kernel does not say."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return boot_id or None, time.clock_gettime(time.CLOCK_BOOTTIME)
    except (OSError, AttributeError):
        return None, 0.0


def deadline_passed(gate: dict[str, Any], now: float) -> bool:
    """Whether an unconfirmed gate ran out of time. In the boot the switch happened in,
    the time since boot decides (the wall clock may have jumped); after a reboot (a power
    cut) the deadline does not apply: the starts are counted instead."""
    deadline = float(gate.get("deadline") or 0)
    if not deadline:
        return False
    boot = gate.get("boot") or {}
    boot_id, since_boot = boot_clock()
    if boot.get("id") and boot_id:
        if boot["id"] != boot_id:
            return False
        return since_boot - float(boot.get("at") or 0) > deadline - float(boot.get("wall") or 0)
    return now > deadline


def gate_deadline(gate_s: float, max_starts: int, now: float) -> float:
    """When an unconfirmed gate fails: time for every allowed start to run its gate, plus
    a minute each for systemd's start and restart delays."""
    return now + max(1, max_starts) * (gate_s + 60.0)


def finish_switch(paths: Paths, state: dict[str, Any],
                  clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Complete a switch cut short (the new release is whole) or undo it (it is not)."""
    target = (state.get("target") or {}).get("version")
    gate = state.get("gate") or {}
    if not target or not is_complete(release_dir(paths, target)):
        restore_config(paths)
        back = state.get("from_version")
        if back and is_complete(release_dir(paths, back)):
            set_link(paths.current, back)
        state["phase"] = "failed"
        state["result"] = {"version": target, "outcome": "failed",
                           "reason": "switch interrupted before the release was complete",
                           "at": round(clock(), 3), "reported": False}
        write_state(paths.state, state, clock)
        with contextlib.suppress(FileNotFoundError):
            paths.request.unlink()
        return state
    if link_target(paths.current) != target:
        frm = state.get("from_version")
        if frm and is_complete(release_dir(paths, frm)):
            set_link(paths.previous, frm)
        set_link(paths.current, target)
    now = clock()
    gate.setdefault("s", 120.0)
    gate.setdefault("max_starts", 3)
    gate.setdefault("starts", 0)
    gate.setdefault("ok", False)
    if not gate.get("deadline"):
        gate["deadline"] = gate_deadline(float(gate["s"]), int(gate["max_starts"]), now)
        boot_id, since_boot = boot_clock()
        if boot_id:
            gate["boot"] = {"id": boot_id, "at": round(since_boot, 3), "wall": round(now, 3)}
    state["gate"] = gate
    state["phase"] = "gate"
    write_state(paths.state, state, clock)
    return state


def repair_links(paths: Paths) -> str | None:
    """When ``current`` names no complete release, point it at ``previous`` or the newest
    complete one; the version chosen, or None when nothing was wrong (or nothing can help)."""
    cur = link_target(paths.current)
    if cur and is_complete(release_dir(paths, cur)):
        return None
    candidates = [link_target(paths.previous), *complete_releases(paths)]
    for v in candidates:
        if v and is_complete(release_dir(paths, v)):
            set_link(paths.current, v)
            _say(f"current named {cur or 'nothing'} (not a complete release): now {v}")
            return v
    return None


def guard(paths: Paths, clock: Callable[[], float] = time.time) -> str:
    """One start of citynode.service: what the guard did (a word, for tests and the log)."""
    with locked(paths.lock, wait=False) as mine:
        if not mine:
            return "busy"  # the installer is at work; it restarts the service when done
        state = read_state(paths.state)
        phase = state["phase"]
        if phase == "switching":
            state = finish_switch(paths, state, clock)
            phase = state["phase"]
            if phase != "gate":
                return "undone"
        if phase == "gate":
            gate = state.get("gate") or {}
            if gate.get("rollback"):
                rollback(paths, state, str(gate["rollback"]), clock)
                return "rolled_back"
            if gate.get("ok"):
                state["phase"] = "confirmed"
                write_state(paths.state, state, clock)
                return "confirmed"
            target = (state.get("target") or {}).get("version")
            if link_target(paths.current) != target:
                # Someone (an operator) switched by hand: the gate no longer applies.
                rollback(paths, state, "current no longer names the new release", clock)
                return "rolled_back"
            gate["starts"] = int(gate.get("starts") or 0) + 1
            state["gate"] = gate
            write_state(paths.state, state, clock)
            max_starts = int(gate.get("max_starts") or 3)
            if gate["starts"] > max_starts:
                n = gate["starts"] - 1
                rollback(paths, state, f"{n} start{'s' if n != 1 else ''} without passing "
                         f"the health gate (max_starts {max_starts})", clock)
                return "rolled_back"
            if deadline_passed(gate, clock()):
                rollback(paths, state, "health gate deadline passed unconfirmed", clock)
                return "rolled_back"
            return "counted"
        return "repaired" if repair_links(paths) else "nothing"


def main(argv: list[str] | None = None) -> int:
    import argparse  # only the command line needs it, not the daemon that imports this

    p = argparse.ArgumentParser(prog="citynode-guard", description=__doc__.splitlines()[0])
    p.add_argument("--root", help="treat this as / (tests, containers); default $CITYNODE_ROOT "
                                  "or /")
    p.add_argument("--state-dir", help="the daemon's state directory (default "
                                       "ROOT/var/lib/citynode)")
    p.add_argument("--config", help="the configuration file (default "
                                    "ROOT/etc/citynode/citynode.toml)")
    args = p.parse_args(argv)
    if args.root and not os.path.isdir(args.root):
        _say(f"--root {args.root} is not a directory")
        return EX_USAGE
    paths = Paths(args.root, args.state_dir, args.config)
    try:
        did = guard(paths)
    except OSError as exc:  # never block the start: the daemon reports what it can
        _say(f"could not check the update gate: {exc}")
        return EX_OK
    if did not in ("nothing", "busy"):
        _say(did)
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
