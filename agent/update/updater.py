"""The daemon's side of an update: the ``update`` command, the download, the health gate.

The daemon runs as user citynode and can write only its state directory, so it does what
it can there and asks root for the rest (docs/updates.md):

- ``update`` command -> :meth:`Updater.request`: validated (https, a sha256, bounded
  size, a version), refused while an update is under way; the state becomes
  ``downloading`` and a thread downloads (resuming after a restart of the daemon),
  checks the size and sha256, then the signature and hashes as far as the node can
  (agent.update.bundle, when the fleet's keys are readable), and writes
  ``request.json`` for citynode-update.path (phase ``requested``);
- the root side's progress (``installing``, ``switching``, ``failed``) is read back from
  the state file and reported;
- after the switch the new release confirms the gate (:meth:`Updater.gate_tick`) once it
  has been READY, has had at least one publication acknowledged and has kept its watchdog
  for ``[update] gate_s``; when the gate's deadline passes unconfirmed it asks the daemon
  to exit non-zero, and the guard rolls back on the next start;
- the old release, started again by a rollback, reports why.

Every step is an event: ``update`` (the phase), ``update:reason``, ``update:progress``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.update import state as st
from agent.update.slots import running_slot
from agent.wire.model import Record

log = logging.getLogger("citynode.update")

MAX_BUNDLE_BYTES = 512 * 1024 * 1024
VERSION_RE = re.compile(r"[0-9][0-9A-Za-z.+_-]{0,39}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
EX_GATE_FAILED = 70  # Restart=on-failure starts us again; the guard then rolls back
POLL_S = 2.0
VERIFY_TIMEOUT_S = 300  # a 512 MiB bundle hashed on a Pi 3 takes about a minute


class Refused(Exception):
    """An ``update`` command this node will not start (one line for the result)."""


def validate(url: Any, sha256: Any, size: Any, version: Any, *, allow_http: bool = False
             ) -> tuple[str, str, int | None, str]:
    """The command's arguments, checked; Refused with one line otherwise."""
    from agent.update.download import DownloadError, check_url

    try:
        check_url(url, allow_http=allow_http)
    except DownloadError as exc:
        raise Refused(str(exc)) from None
    if not isinstance(sha256, str) or not SHA256_RE.fullmatch(sha256.lower()):
        raise Refused("sha256 must be 64 hex digits")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                             or not 0 < size <= MAX_BUNDLE_BYTES):
        raise Refused(f"size must be 1-{MAX_BUNDLE_BYTES} bytes")
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise Refused("version must be 1-40 characters of 0-9 A-Z a-z . + _ -, "
                      "starting with a digit")
    return url, sha256.lower(), size, version


class Updater:
    """One daemon's updates; :meth:`tick` runs on the main loop, the download on a thread."""

    def __init__(self, cfg: Any, *, emit: Callable[[list[Record]], None],
                 state_dir: Path, version: str, slot: str | None = None,
                 clock: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic,
                 downloader: Callable[..., Path] | None = None) -> None:
        self.cfg = cfg.update
        self.mqtt = cfg.mqtt
        self.emit = emit
        self.paths = st.Paths(state_dir=state_dir)
        if self.cfg.download_dir:
            self.download_dir = Path(self.cfg.download_dir)
        else:
            self.download_dir = self.paths.update_dir
        self.version = version
        self.slot = running_slot() if slot is None else slot
        self.clock, self.mono = clock, mono
        self._download = downloader or self._default_download
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._seen_phase = ""
        self._next_poll = 0.0
        self._gate_from: float | None = None  # monotonic time the gate's clock started
        self.state = st.read_state(self.paths.state)

    # -- what birth, health and status show --------------------------------------------
    def summary(self) -> str:
        with self._lock:
            return st.summary(self.state)

    def status(self) -> dict[str, Any]:
        """For status.json: phase, target, last result, gate."""
        with self._lock:
            s = self.state
            return {"phase": s.get("phase"), "slot": self.slot,
                    "target": (s.get("target") or {}).get("version"),
                    "result": {k: v for k, v in (s.get("result") or {}).items()
                               if k != "reported"} or None,
                    "gate": {k: (s.get("gate") or {}).get(k) for k in
                             ("s", "deadline", "starts", "max_starts", "ok")}
                    if s.get("gate") else None}

    def records(self) -> list[Record]:
        """``slot`` and ``update`` records (only those that say something)."""
        out = []
        if self.slot:
            out.append(Record("slot", text=self.slot))
        summary = self.summary()
        if summary:
            out.append(Record("update", text=summary))
        return out

    # -- events -------------------------------------------------------------------------
    def _event(self, phase: str, reason: str = "", progress: int | None = None) -> None:
        records = [Record("update", text=phase)]
        if reason:
            records.append(Record("update:reason", text=reason[:200]))
        if progress is not None:
            records.append(Record("update:progress", value=progress))
        level = logging.WARNING if phase in ("failed", "rolled_back") else logging.INFO
        log.log(level, "update %s%s", phase, f": {reason}" if reason else "",
                extra={"EVENT": "update", "UPDATE_PHASE": phase})
        try:
            self.emit(records)
        except Exception:  # an event lost must not stop an update
            log.exception("cannot send the update event", extra={"EVENT": "update_error"})

    def _write(self, **changes: Any) -> None:
        with self._lock:
            self.state.update(changes)
            st.write_state(self.paths.state, self.state, self.clock)
            self._seen_phase = self.state["phase"]

    def _result(self, outcome: str, reason: str) -> None:
        with self._lock:
            st.record_result(self.paths.state, self.state, outcome, reason, self.clock)
            self.state["result"]["reported"] = True
            st.write_state(self.paths.state, self.state, self.clock)
            self._seen_phase = self.state["phase"]
        self._event(self.state["phase"], reason)

    # -- the command --------------------------------------------------------------------
    def request(self, url: Any, sha256: Any, size: Any, version: Any,
                command_id: str | None = None) -> tuple[bool, str]:
        """The ``update`` command: start the download or say why not."""
        if not self.cfg.enabled:
            return False, "updates are disabled on this node ([update] enabled = false)"
        try:
            url, sha256, size, version = validate(url, sha256, size, version,
                                                  allow_http=self.cfg.allow_http)
        except Refused as exc:
            return False, str(exc)
        with self._lock:
            self.state = st.read_state(self.paths.state)
            phase = self.state["phase"]
            if st.busy(self.state):
                target = (self.state.get("target") or {}).get("version") or "?"
                what = "a health gate" if phase == "gate" else "an update"
                return False, f"{what} is in progress ({phase} {target}): try later"
        if version == self.version:
            return False, f"{version} is the running version"
        self._write(phase="downloading", result=self.state.get("result"), gate=None,
                    target={"version": version, "url": url, "sha256": sha256, "size": size,
                            "command_id": command_id}, from_version=self.version)
        self._event("downloading")
        self._spawn()
        return True, f"downloading {version}"

    # -- the thread ---------------------------------------------------------------------
    def _spawn(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._work, name="update", daemon=True)
        self._thread.start()

    def bundle_path(self) -> Path:
        version = (self.state.get("target") or {}).get("version")
        return self.download_dir / f"citynode-bundle-{version}.tar.gz"

    def _default_download(self, target: dict[str, Any], dest: Path,
                          progress: Callable[[int, int | None], None]) -> Path:
        from agent.update import download as dl

        ctx = dl.tls_context(self.cfg.ca_file, self.mqtt) \
            if str(target["url"]).startswith("https:") else None
        rate = self.cfg.bandwidth_kbps * 1000 / 8
        req = dl.Request(target["url"], dest, target["sha256"], target.get("size"),
                         MAX_BUNDLE_BYTES, allow_http=self.cfg.allow_http)
        return dl.Downloader(req, throttle=dl.Throttle(rate), context=ctx,
                             progress=progress, stop=self._stop).run()

    def _work(self) -> None:
        target = dict(self.state.get("target") or {})
        try:
            self.download_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
            if self.state["phase"] == "downloading":
                def progress(done: int, total: int | None) -> None:
                    if total:
                        self._event("downloading", progress=done * 100 // total)

                self._download(target, self.bundle_path(), progress)
                self._write(phase="downloaded")
            self._verify_locally(self.bundle_path())
            self._event("verified")
            request = {"version": target["version"], "bundle": self.bundle_path().name
                       if self.bundle_path().parent == self.paths.update_dir
                       else str(self.bundle_path()), "sha256": target["sha256"],
                       "command_id": target.get("command_id")}
            self._write(phase="requested")
            from agent.update.guard import write_atomic

            self.paths.update_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.paths.request, json.dumps(request).encode() + b"\n", 0o644)
            self._event("requested")
        except Exception as exc:  # a download, a verification or a file: the reason
            if self._stop.is_set():
                return  # stopping: the next start resumes from the state
            reason = str(exc) or type(exc).__name__
            with contextlib.suppress(OSError):
                self.bundle_path().unlink()
            self._result("failed", reason)

    def _verify_locally(self, path: Path) -> None:
        """Signature and hashes, as far as the node can (root verifies again anyway), in a
        child process: cryptography's ~10 MiB never stays in the daemon's memory."""
        models = self.slot if self.slot and self.slot != self.version else None
        argv = [sys.executable, "-m", "agent.update.bundle", str(path),
                "--running", self.version, "--arch", _arch(), "--keys", str(self.cfg.keys_dir)]
        if models:
            argv += ["--models-version", models]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise Refused(f"verifying the bundle took over {VERIFY_TIMEOUT_S} s") from None
        if done.returncode != 0:
            lines = (done.stderr or "").strip().splitlines()
            why = lines[-1] if lines else f"exit {done.returncode}"
            raise Refused(why.removeprefix("bundle refused: ")[:300])

    # -- the main loop ------------------------------------------------------------------
    def start(self) -> None:
        """At start-up: resume a download, report a result the last run did not report."""
        s = self.state
        self._seen_phase = s["phase"]
        if s["phase"] in ("downloading", "downloaded"):
            self._event(s["phase"], "resumed after a restart")
            self._spawn()
        result = s.get("result") or {}
        if s["phase"] in ("rolled_back", "failed", "confirmed") and result and \
                not result.get("reported"):
            self._event(s["phase"], str(result.get("reason") or ""))
            result["reported"] = True
            with contextlib.suppress(OSError):
                self._write(result=result)
        if s["phase"] == "gate":
            self._event("gate", f"{(s.get('gate') or {}).get('s')} s")

    def gate_tick(self, *, ready: bool, published: int, watchdog_ok: bool) -> int | None:
        """Called each main-loop round: confirms the gate, or returns an exit code when its
        deadline passed unconfirmed; also reports the root side's progress."""
        now = self.mono()
        if now >= self._next_poll:
            self._next_poll = now + POLL_S
            self._poll()
        s = self.state
        if s["phase"] != "gate":
            return None
        target = (s.get("target") or {}).get("version")
        if target not in (self.slot, self.version):
            return None  # the old release, waiting for the restart into the new one
        gate = s.get("gate") or {}
        gate_s = float(gate.get("s") or self.cfg.gate_s)
        if not ready or not watchdog_ok:
            self._gate_from = None  # the watchdog must be kept for gate_s in one piece
        elif self._gate_from is None:
            self._gate_from = now
        if self._gate_from is not None and published > 0 and now - self._gate_from >= gate_s:
            gate["ok"] = True
            with self._lock:
                self.state["gate"] = gate
            self._result("confirmed", f"{target}: ready, published, watchdog kept {gate_s:g} s")
            return None
        from agent.update.guard import deadline_passed

        if deadline_passed(gate, self.clock()):
            why = ("no publication acknowledged" if published <= 0 else
                   "watchdog not kept" if not watchdog_ok else "not ready")
            self._event("gate", f"deadline passed unconfirmed ({why}): exiting for rollback")
            return EX_GATE_FAILED
        return None

    def _poll(self) -> None:
        """Report phases the root side wrote (installing, switching, failed, ...)."""
        fresh = st.read_state(self.paths.state)
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return  # our own writes
            self.state = fresh
        phase = fresh["phase"]
        if phase != self._seen_phase:
            self._seen_phase = phase
            result = fresh.get("result") or {}
            reason = str(result.get("reason") or "") if phase in ("failed", "rolled_back") \
                else ""
            self._event(phase, reason)
            if reason and not result.get("reported"):
                result["reported"] = True
                with contextlib.suppress(OSError):
                    self._write(result=result)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


def _arch() -> str:
    from agent.update.install import machine_arch

    return machine_arch()
