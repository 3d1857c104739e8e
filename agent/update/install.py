"""``citynode update install``: the root side of an update (citynode-update.service).

The daemon (user citynode) has downloaded and checked a bundle and written
``<state_dir>/update/request.json``; citynode-update.path starts this as root. It trusts
nothing of the unprivileged side but the request's file name: it copies the bundle into a
root-owned place, verifies it again (signature, hashes, architecture, version) with the
keys pinned in /etc/citynode/keys, and then, each step idempotent so a rerun after a kill
finishes the job:

1. extracts it into ``releases/<version>.tmp`` and renames that to ``releases/<version>``;
2. creates the release's venv from the bundle's wheels, offline (``pip --no-index
   --find-links``), then writes the ``.complete`` marker: only a complete release is ever
   switched to;
3. keeps the configuration (``citynode.toml.rollback``) and applies the release's
   migrations with the NEW release's interpreter, replacing the file atomically;
4. records the gate (phase ``switching``), switches ``previous`` and ``current``
   (phase ``gate``, with its deadline) and restarts citynode.service.

A failure before the switch restores the configuration, removes what it made and records
``failed`` with one line; the running release is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.update.guard import (
    COMPLETE,
    Paths,
    copy_atomic,
    finish_switch,
    fsync_dir,
    is_complete,
    link_target,
    locked,
    read_small,
    read_state,
    release_dir,
    restore_config,
    sha256_file,
    write_atomic,
    write_state,
)
from agent.update.slots import discard, prune

EX_OK, EX_FAILED, EX_USAGE, EX_CANTCREAT = 0, 1, 64, 73
MAX_BUNDLE_BYTES = 512 * 1024 * 1024
VERSION_RE = re.compile(r"[0-9][0-9A-Za-z.+_-]{0,39}")
GATE_S_RANGE = (10.0, 3600.0)
MAX_STARTS_RANGE = (1, 10)
KEEP_RELEASES_RANGE = (3, 20)
BUNDLE_SHA = ".bundle-sha256"  # in a release folder: the bundle it was installed from


class InstallError(Exception):
    """The update cannot be installed: one line, recorded as the result."""


Checkpoint = Callable[[str], None]
VenvBuilder = Callable[[Path, Any], None]
Migrator = Callable[[Path, Path, Path, list[str]], None]


@dataclass
class Options:
    """What an install needs besides the paths; tests replace the slow or systemd parts."""

    arch: str = ""
    gate_s: float | None = None
    max_starts: int | None = None
    keep_releases: int | None = None
    restart: Callable[[], None] | None = None
    venv_builder: VenvBuilder | None = None
    migrator: Migrator | None = None
    checkpoint: Checkpoint = field(default=lambda step: None)
    clock: Callable[[], float] = time.time
    verify: Callable[..., Any] | None = None  # agent.update.bundle.verify by default
    extract: Callable[..., Any] | None = None
    load_keys: Callable[[Path], Any] | None = None


def machine_arch() -> str:
    m = platform.machine()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(m.lower(), m)


def _update_settings(paths: Paths) -> tuple[float, int, int]:
    """gate_s, max_starts and keep_releases from the root-owned configuration (never from
    the request), each clamped to its range."""
    gate_s, max_starts, keep = 120.0, 3, 3
    raw = read_small(paths.config, 1 << 20)
    if raw:
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            table = tomllib.loads(raw.decode("utf-8")).get("update") or {}
            g = table.get("gate_s", gate_s)
            m, k = table.get("max_starts", max_starts), table.get("keep_releases", keep)
            if isinstance(g, int | float) and not isinstance(g, bool):
                gate_s = min(max(float(g), GATE_S_RANGE[0]), GATE_S_RANGE[1])
            if isinstance(m, int) and not isinstance(m, bool):
                max_starts = min(max(m, MAX_STARTS_RANGE[0]), MAX_STARTS_RANGE[1])
            if isinstance(k, int) and not isinstance(k, bool):
                keep = min(max(k, KEEP_RELEASES_RANGE[0]), KEEP_RELEASES_RANGE[1])
    return gate_s, max_starts, keep


def read_request(paths: Paths) -> dict[str, Any] | None:
    """The daemon's request (version, bundle file name, sha256), checked; None when none."""
    raw = read_small(paths.request)
    if raw is None:
        return None
    try:
        req = json.loads(raw)
    except ValueError:
        raise InstallError("request.json is not JSON") from None
    if not isinstance(req, dict):
        raise InstallError("request.json is not an object")
    version, name = req.get("version"), req.get("bundle")
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise InstallError("request.json: version is not a version")
    if not isinstance(name, str) or not name or ".." in Path(name).parts:
        raise InstallError("request.json: bundle must name a file")
    where = Path(name)
    if where.is_absolute() and not where.is_relative_to(paths.state_dir):
        raise InstallError("request.json: the bundle must lie in the state directory")
    req["path"] = where if where.is_absolute() else paths.update_dir / where
    return req


def _copy_in(src: Path, dst: Path) -> None:
    """Copy the unprivileged side's bundle into a root-owned file (no links followed; a
    bounded size): what is verified is what is installed."""
    fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InstallError(f"{src.name} is not a regular file")
        if st.st_size > MAX_BUNDLE_BYTES:
            raise InstallError(f"{src.name} is larger than {MAX_BUNDLE_BYTES} bytes")
        dst.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = dst.with_name(dst.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            left = MAX_BUNDLE_BYTES + 1
            while left > 0:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                left -= len(chunk)
                os.write(out, chunk)
            os.fsync(out)
        finally:
            os.close(out)
        os.replace(tmp, dst)
    finally:
        os.close(fd)


def _manifest_bytes(bundle: Path) -> bytes:
    """MANIFEST.json's exact bytes from the (verified) bundle, to keep in the release."""
    with tarfile.open(bundle) as tf:
        for m in tf:
            if m.isfile() and Path(m.name).name == "MANIFEST.json" and m.name.count("/") <= 1:
                if m.size > 1 << 20:
                    break
                f = tf.extractfile(m)
                if f is not None:
                    return f.read()
    raise InstallError("the bundle has no MANIFEST.json")


def _wheels_dir(folder: Path) -> Path:
    for d in sorted(folder.rglob("wheels")):
        if d.is_dir() and any(d.glob("*.whl")):
            return d
    raise InstallError("the release has no wheels/ folder with wheels")


def running(paths: Paths) -> tuple[str, str | None]:
    """(the citynode version current runs, the models version when current is a models
    release sharing a release's venv); ("0", None) when nothing is installed."""
    cur = link_target(paths.current)
    if not cur:
        return "0", None
    venv = release_dir(paths, cur) / "venv"
    if venv.is_symlink():
        return Path(os.readlink(venv)).parent.name, cur
    return cur, None


def _system_python() -> str:
    """The interpreter a release's venv is made with (install.sh uses python3 too)."""
    return shutil.which("python3", path="/usr/bin:/bin") or sys.executable


def build_venv(folder: Path, manifest: Any) -> None:
    """The release's venv from its own wheels, offline (as install.sh does for a bundle);
    without python3-venv, pip comes from the bundle's own pip wheel."""
    venv = folder / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    wheels = _wheels_dir(folder)
    run = {"capture_output": True, "text": True, "timeout": 900}
    proc = subprocess.run([_system_python(), "-m", "venv", str(venv)], **run)
    if proc.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        pip = sorted(wheels.glob("pip-*.whl"))
        proc = subprocess.run([_system_python(), "-m", "venv", "--without-pip", str(venv)],
                              **run)
        if proc.returncode != 0 or not pip:
            raise InstallError(f"cannot create the venv: {proc.stderr.strip()[-200:]}")
        proc = subprocess.run([str(venv / "bin/python"), f"{pip[0]}/pip", "install", "-q",
                               "--no-index", "--find-links", str(wheels), "pip"], **run)
        if proc.returncode != 0:
            raise InstallError(f"cannot bootstrap pip: {proc.stderr.strip()[-200:]}")
    extras = str((getattr(manifest, "extra", None) or {}).get("extras") or "")
    spec = f"citynode{f'[{extras}]' if extras else ''}=={manifest.version}"
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    proc = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q",
                           "--no-cache-dir", "--no-index", "--find-links", str(wheels),
                           "--only-binary", ":all:", spec], env=env, **run)
    if proc.returncode != 0:
        raise InstallError(f"pip install failed: {proc.stderr.strip()[-200:]}")
    proc = subprocess.run([str(venv / "bin/citynode"), "version"], **run)
    if proc.returncode != 0:
        raise InstallError("the new release's citynode does not run")


def run_migrations(folder: Path, src: Path, dst: Path, names: list[str]) -> None:
    """The new release's migrations, run by its own interpreter (only it knows them)."""
    python = folder / "venv/bin/python"
    proc = subprocess.run([str(python), "-m", "agent.update.migrate", "--in", str(src),
                           "--out", str(dst), *names], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        raise InstallError(proc.stderr.strip().splitlines()[-1][:200] if proc.stderr.strip()
                           else f"configuration migration failed ({proc.returncode})")


def restart_service() -> None:
    """Restart the daemon into the new release (not waiting: we may be stopped with it)."""
    subprocess.run(["systemctl", "restart", "--no-block", "citynode.service"], check=False,
                   timeout=60, capture_output=True)


class Installer:
    """One run of ``citynode update install`` over ``paths``."""

    def __init__(self, paths: Paths, opts: Options | None = None) -> None:
        self.paths = paths
        self.opts = opts or Options()

    def _ck(self, step: str) -> None:
        self.opts.checkpoint(step)

    def _bundle_api(self) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        o = self.opts
        if o.verify and o.extract and o.load_keys:
            return o.verify, o.extract, o.load_keys
        from agent.update import bundle  # cryptography: only here, when a bundle is checked

        return (o.verify or bundle.verify, o.extract or bundle.extract,
                o.load_keys or bundle.load_public_keys)

    def run(self) -> tuple[int, str]:
        """(exit code, one line) for the command line."""
        with locked(self.paths.lock, wait=True):
            state = read_state(self.paths.state)
            try:
                req = read_request(self.paths)
            except InstallError as exc:
                return self._fail(state, str(exc), None)
            if state["phase"] == "switching":
                state = finish_switch(self.paths, state, self.opts.clock)
                return self._after_switch(state)
            if state["phase"] == "gate":
                return self._after_switch(state)
            if req is None:
                return EX_OK, "no update requested"
            if state["phase"] not in ("requested", "installing"):
                with contextlib.suppress(FileNotFoundError):
                    self.paths.request.unlink()
                return EX_OK, f"stale request ignored (state {state['phase']})"
            target = state.get("target") or {}
            if target.get("version") != req["version"]:
                return self._fail(state, "request.json and state.json name different versions",
                                  None)
            try:
                return self._install(state, req)
            except InstallError as exc:
                return self._fail(state, str(exc), req["version"])
            except Exception as exc:  # BundleError and friends: one line, never a traceback
                why = str(exc) if type(exc).__name__ in ("BundleError", "MigrationError") \
                    else f"{type(exc).__name__}: {exc}"
                return self._fail(state, why[:200], req["version"])

    def _install(self, state: dict[str, Any], req: dict[str, Any]) -> tuple[int, str]:
        p, o = self.paths, self.opts
        version = req["version"]
        if state["phase"] != "installing":
            state["phase"] = "installing"
            write_state(p.state, state, o.clock)
        self._ck("installing")
        folder = release_dir(p, version)
        current = link_target(p.current)
        base, models = running(p)
        if version == current:
            raise InstallError(f"{version} is already the running release")
        settings = _update_settings(p)
        self._prune(state, version, o.keep_releases or settings[2])
        incoming = p.incoming / f"{version}.tar"
        _copy_in(req["path"], incoming)
        self._ck("copied")
        bundle_sha = sha256_file(incoming)
        if is_complete(folder) and read_small(folder / BUNDLE_SHA) != f"{bundle_sha}\n".encode():
            # Installed before from another bundle of the same version (or by install.sh):
            # what runs must be what this signed bundle holds.
            if version == link_target(p.previous):
                raise InstallError(f"{version} is the previous release, installed from "
                                   "another bundle: send this one under a new version")
            discard(folder)
        if is_complete(folder):
            manifest = _Stored(json.loads((folder / "MANIFEST.json").read_bytes()))
        else:
            verify, extract, load_keys = self._bundle_api()
            keys = load_keys(p.keys)
            more = {"models_version": models} if models else {}
            manifest = verify(incoming, keys, running_version=base,
                              arch=o.arch or machine_arch(), **more)
            if manifest.version != version:
                raise InstallError(f"the bundle is {manifest.version}, the request {version}")
            self._ck("verified")
            tmp = folder.with_name(folder.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete one from a kill
            tmp.mkdir(parents=True, mode=0o755)
            extract(incoming, manifest, tmp)
            write_atomic(tmp / "MANIFEST.json",
                         getattr(manifest, "raw", b"") or _manifest_bytes(incoming))
            write_atomic(tmp / BUNDLE_SHA, f"{bundle_sha}\n".encode())
            self._ck("extracted")
            os.rename(tmp, folder)
            fsync_dir(folder.parent)
            self._ck("renamed")
            if getattr(manifest, "kind", "release") == "models":
                self._share_venv(folder, base if current else None)
            else:
                (o.venv_builder or build_venv)(folder, manifest)
            self._ck("venv")
            write_atomic(folder / COMPLETE, f"{version}\n".encode())
            self._ck("complete")
        self._migrate(state, folder, list(getattr(manifest, "migrations", []) or []))
        self._ck("migrated")
        gate_s = settings[0] if o.gate_s is None else o.gate_s
        max_starts = settings[1] if o.max_starts is None else o.max_starts
        state["from_version"] = current
        state["gate"] = {"s": gate_s, "max_starts": max_starts, "starts": 0, "ok": False,
                         "deadline": None}
        state["phase"] = "switching"
        write_state(p.state, state, o.clock)
        self._ck("switching")
        state = finish_switch(p, state, o.clock)
        self._ck("switched")
        return self._after_switch(state)

    def _prune(self, state: dict[str, Any], version: str, keep: int) -> None:
        """Make room before the new release comes in: old releases beyond ``keep`` go, and
        one that failed its gate goes first (it is never switched back to)."""
        last = state.get("result") or {}
        failed = [last["version"]] if last.get("outcome") == "rolled_back" and \
            isinstance(last.get("version"), str) else []
        gone = prune(self.paths, keep, protect=[version], failed=failed)
        if gone:
            print(f"citynode update install: removed old release{'s' if len(gone) > 1 else ''}"
                  f" {', '.join(gone)} (keep_releases {keep})", file=sys.stderr, flush=True)
        self._ck("pruned")

    def _share_venv(self, folder: Path, base: str | None) -> None:
        """A models-only bundle: the new release shares the running release's venv (that
        of the release a models release itself shares)."""
        if not base or not is_complete(release_dir(self.paths, base)):
            raise InstallError("a models bundle needs an installed release to go with")
        venv = folder / "venv"
        if not venv.is_symlink():
            os.symlink(f"../{base}/venv", venv)

    def _migrate(self, state: dict[str, Any], folder: Path, names: list[str]) -> None:
        """Keep the configuration once per update, then make it the migrated backup."""
        p = self.paths
        version = folder.name
        if (state.get("config") or {}).get("backup_of") != version:
            if p.config.is_file():
                copy_atomic(p.config, p.config_backup)
            else:
                with contextlib.suppress(FileNotFoundError):
                    p.config_backup.unlink()
            state["config"] = {"backup_of": version}
            write_state(p.state, state, self.opts.clock)
        self._ck("backed_up")
        if not names or not p.config_backup.is_file():
            return
        out = p.incoming / f"migrated-{version}.toml"
        out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.opts.migrator or run_migrations)(folder, p.config_backup, out, names)
        new = out.read_bytes()
        if p.config.read_bytes() != new:
            st = p.config_backup.stat()
            write_atomic(p.config, new, st.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(p.config, st.st_uid, st.st_gid)
        out.unlink()

    def _after_switch(self, state: dict[str, Any]) -> tuple[int, str]:
        """Phase gate (or failed): restart into the new release once, clear the request."""
        p = self.paths
        if state["phase"] != "gate":
            return EX_FAILED, str((state.get("result") or {}).get("reason") or "switch undone")
        gate = state.get("gate") or {}
        if not gate.get("restart_requested"):
            gate["restart_requested"] = True
            state["gate"] = gate
            write_state(p.state, state, self.opts.clock)
            (self.opts.restart or restart_service)()
        self._ck("restarted")
        with contextlib.suppress(FileNotFoundError):
            p.request.unlink()
        shutil.rmtree(p.incoming, ignore_errors=True)
        version = (state.get("target") or {}).get("version")
        return EX_OK, f"switched to {version}; health gate {gate.get('s')} s"

    def _fail(self, state: dict[str, Any], reason: str, version: str | None
              ) -> tuple[int, str]:
        p = self.paths
        if version and state.get("phase") in ("requested", "installing"):
            restore_config(p)
            folder = release_dir(p, version)
            if link_target(p.current) != version and link_target(p.previous) != version:
                shutil.rmtree(folder.with_name(folder.name + ".tmp"), ignore_errors=True)
                shutil.rmtree(folder, ignore_errors=True)
            state["phase"] = "failed"
            state["result"] = {"version": version, "outcome": "failed", "reason": reason[:200],
                               "at": round(self.opts.clock(), 3), "reported": False}
            write_state(p.state, state, self.opts.clock)
        with contextlib.suppress(FileNotFoundError):
            p.request.unlink()
        shutil.rmtree(p.incoming, ignore_errors=True)
        return EX_FAILED, reason


class _Stored:
    """A complete release's MANIFEST.json, read back on a rerun (already verified)."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.version = str(data.get("version", ""))
        self.kind = str(data.get("kind", "release"))
        self.migrations = [str(m) for m in data.get("migrations") or []]


def main(root: str | None, state_dir: str | None, config: str | None, arch: str,
         no_restart: bool) -> int:
    """``citynode update install``: exit 0 done (or nothing to do), 1 failed, 64 usage,
    73 the directories cannot be written."""
    if root and not os.path.isdir(root):
        print(f"citynode update install: --root {root} is not a directory", file=sys.stderr)
        return EX_USAGE
    paths = Paths(root, state_dir, config)
    opts = Options(arch=arch, restart=(lambda: None) if no_restart else None)
    try:
        code, line = Installer(paths, opts).run()
    except OSError as exc:
        line = f"{exc.filename or ''}: {exc.strerror or exc}"
        print(f"citynode update install: {line}", file=sys.stderr)
        # Recorded as failed, and the request gone: citynode-update.path must not start
        # us again and again for a disk that stays full.
        with contextlib.suppress(OSError):
            state = read_state(paths.state)
            if state["phase"] in ("requested", "installing"):
                Installer(paths, opts)._fail(state, line, (state.get("target") or {}).get(
                    "version"))
        with contextlib.suppress(OSError):
            paths.request.unlink()
        return EX_CANTCREAT
    print(f"citynode update install: {line}", file=sys.stderr if code else sys.stdout)
    return code
