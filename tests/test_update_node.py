"""The node side of over-the-air updates (agent/update), fast and without systemd.

A temporary root stands for the node's file system (/opt/citynode, /etc/citynode,
/var/lib/citynode). The bundle's signature checks belong to agent/update/bundle.py and
its own tests; here a small stand-in with the same interface (verify, extract,
load_public_keys) checks versions and file hashes, so the installer's and the guard's
own logic is what is tested: the switch, the gate, the rollback, and consistency after
a kill before any file-system change of either (hypothesis picks where). Downloads run
against HTTP servers on 127.0.0.1; the bandwidth limit is measured in bytes over a fake
clock.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core import commands
from agent.core.commands import CommandProcessor
from agent.core.config import CommandsConfig, UpdateConfig
from agent.update import download as dl
from agent.update import guard, migrate
from agent.update import state as ust
from agent.update.install import Installer, Options
from agent.update.updater import EX_GATE_FAILED, Refused, Updater, validate

OLD, NEW = "0.1.0", "0.2.0"
CONFIG = '[node]\nid = "n1"\n\n[report]\ninterval_s = 60  # kept comment\n'
MIGRATED = CONFIG.replace("interval_s = 60", "interval_s = 120")


class BundleError(Exception):
    pass


class Killed(BaseException):
    """What a simulated kill raises: nothing in the code under test may catch it."""


# -- a stand-in for agent.update.bundle (same interface, no signatures) ----------------------
def make_bundle(dest: Path, version: str = NEW, *, arch: str = "any",
                migrations: tuple[str, ...] = ("interval_120",), tamper: bool = False) -> Path:
    files = {"wheels/citynode-stub.whl": b"wheel " + version.encode(),
             "share/README.md": b"release " + version.encode()}
    manifest = {"version": version, "arch": arch, "min_version": "0.0.1", "kind": "release",
                "downgrade": False, "created": "2026-12-07T00:00:00Z",
                "files": {p: {"sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}
                          for p, b in files.items()},
                "migrations": list(migrations)}
    if tamper:
        files["share/README.md"] = b"tampered"
    path = dest / f"citynode-bundle-{version}.tar.gz"
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, data in [("MANIFEST.json", json.dumps(manifest).encode()),
                           ("MANIFEST.sig", b"sig"), *files.items()]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(raw.getvalue(), mtime=0))  # the same bytes every time
    return path


def _vt(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def fake_verify(path: Path, keys: Any, *, running_version: str, arch: str) -> Any:
    with tarfile.open(path) as tf:
        m = json.loads(tf.extractfile("MANIFEST.json").read())  # type: ignore[union-attr]
        for name, want in m["files"].items():
            data = tf.extractfile(name).read()  # type: ignore[union-attr]
            if hashlib.sha256(data).hexdigest() != want["sha256"]:
                raise BundleError(f"{name}: hash differs")
    if _vt(m["version"]) <= _vt(running_version or "0"):
        raise BundleError(f"{m['version']} is not newer than {running_version}")
    return SimpleNamespace(**m)


def fake_extract(path: Path, manifest: Any, dest: Path) -> None:
    with tarfile.open(path) as tf:
        for name in manifest.files:
            out = dest / name
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(tf.extractfile(name).read())  # type: ignore[union-attr]


def fake_venv(folder: Path, manifest: Any) -> None:
    (folder / "venv/bin").mkdir(parents=True, exist_ok=True)
    (folder / "venv/bin/citynode").write_text(f"#!/bin/sh\necho citynode {manifest.version}\n")


REGISTRY = {"interval_120": lambda text, data: text.replace("interval_s = 60",
                                                            "interval_s = 120")}


def fake_migrator(folder: Path, src: Path, dst: Path, names: list[str]) -> None:
    dst.write_text(migrate.apply(src.read_text(), names, REGISTRY))


# -- the node's tree ------------------------------------------------------------------------------
def make_node(root: Path) -> guard.Paths:
    paths = guard.Paths(root)
    rel = paths.releases / OLD
    (rel / "venv/bin").mkdir(parents=True)
    (rel / guard.COMPLETE).write_text(OLD)
    guard.set_link(paths.current, OLD)
    paths.etc.mkdir(parents=True)
    paths.config.write_text(CONFIG)
    paths.update_dir.mkdir(parents=True)
    return paths


def request_update(paths: guard.Paths, version: str = NEW, **kw: Any) -> None:
    """What the daemon leaves for root: the bundle, the state, the request."""
    bundle = make_bundle(paths.update_dir, version, **kw)
    sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    state = guard.new_state()
    state.update(phase="requested", from_version=OLD,
                 target={"version": version, "url": "https://x/b", "sha256": sha,
                         "size": bundle.stat().st_size, "command_id": "c-1"})
    guard.write_state(paths.state, state)
    guard.write_atomic(paths.request, json.dumps(
        {"version": version, "bundle": bundle.name, "sha256": sha}).encode())


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def installer(paths: guard.Paths, clock: Clock | None = None, restarts: list | None = None,
              **kw: Any) -> Installer:
    restarts = restarts if restarts is not None else []
    return Installer(paths, Options(
        arch="any", gate_s=120.0, max_starts=3, restart=lambda: restarts.append(1),
        venv_builder=fake_venv, migrator=fake_migrator, clock=clock or Clock(),
        verify=fake_verify, extract=fake_extract, load_keys=lambda d: ["key"], **kw))


@pytest.fixture
def node(tmp_path: Path) -> guard.Paths:
    return make_node(tmp_path / "root")


# -- install, gate, rollback ---------------------------------------------------------------------
def test_install_switches_and_opens_the_gate(node: guard.Paths) -> None:
    request_update(node)
    restarts: list[int] = []
    code, line = installer(node, restarts=restarts).run()
    assert code == 0, line
    assert guard.link_target(node.current) == NEW
    assert guard.link_target(node.previous) == OLD
    assert guard.is_complete(node.releases / NEW)
    assert (node.releases / NEW / "MANIFEST.json").is_file()
    assert node.config.read_text() == MIGRATED
    assert node.config_backup.read_text() == CONFIG
    state = guard.read_state(node.state)
    assert state["phase"] == "gate" and state["from_version"] == OLD
    assert state["gate"]["starts"] == 0 and state["gate"]["deadline"] > Clock()()
    assert restarts == [1] and not node.request.exists()
    assert not (node.releases / f"{NEW}.tmp").exists()
    # a second run (the path unit again) changes nothing and restarts nothing
    assert installer(node, restarts=restarts).run()[0] == 0 and restarts == [1]


def test_tampered_or_older_bundle_is_refused_and_nothing_changes(node: guard.Paths) -> None:
    request_update(node, tamper=True)
    code, line = installer(node).run()
    assert code == 1 and "hash differs" in line
    assert guard.link_target(node.current) == OLD and node.config.read_text() == CONFIG
    state = guard.read_state(node.state)
    assert state["phase"] == "failed" and state["result"]["outcome"] == "failed"
    assert not (node.releases / NEW).exists() and not node.request.exists()
    request_update(node, "0.0.9")
    code, line = installer(node).run()
    assert code == 1 and "not newer" in line


def gate_start(paths: guard.Paths, clock: Clock) -> str:
    return guard.guard(paths, clock)


def test_guard_rolls_back_after_too_many_starts(node: guard.Paths) -> None:
    clock = Clock()
    request_update(node)
    assert installer(node, clock)  .run()[0] == 0
    assert [gate_start(node, clock) for _ in range(3)] == ["counted"] * 3
    assert guard.link_target(node.current) == NEW
    assert gate_start(node, clock) == "rolled_back"
    assert guard.link_target(node.current) == OLD
    assert node.config.read_text() == CONFIG
    state = guard.read_state(node.state)
    assert state["phase"] == "rolled_back"
    assert state["result"]["outcome"] == "rolled_back" and "3 starts" in state["result"]["reason"]
    assert gate_start(node, clock) == "nothing"  # the old release starts normally


class Boot:
    """A kernel's boot id and its time since boot (CLOCK_BOOTTIME), by hand."""

    def __init__(self) -> None:
        self.id, self.t = "boot-1", 100.0

    def __call__(self) -> tuple[str, float]:
        return self.id, self.t


def test_guard_rolls_back_when_the_deadline_passed(node: guard.Paths, monkeypatch) -> None:
    clock, boot = Clock(), Boot()
    monkeypatch.setattr(guard, "boot_clock", boot)
    request_update(node)
    installer(node, clock).run()
    assert gate_start(node, clock) == "counted"
    gate = guard.read_state(node.state)["gate"]
    boot.t += gate["deadline"] - clock.t + 1  # as much time since the switch, in this boot
    clock.t = gate["deadline"] + 1
    assert gate_start(node, clock) == "rolled_back"
    assert guard.link_target(node.current) == OLD and node.config.read_text() == CONFIG
    assert "deadline" in guard.read_state(node.state)["result"]["reason"]


def test_a_wall_clock_jump_or_a_reboot_does_not_pass_the_deadline(node: guard.Paths,
                                                                   monkeypatch) -> None:
    """A Pi has no real-time clock: its wall clock jumps at the first NTP sync. In the same
    boot only the time since boot counts; after a reboot (a power cut) the starts do."""
    clock, boot = Clock(), Boot()
    monkeypatch.setattr(guard, "boot_clock", boot)
    request_update(node)
    installer(node, clock).run()
    assert gate_start(node, clock) == "counted"
    clock.t += 10 * 86400  # NTP: ten days later, in seconds of real time
    boot.t += 5
    assert gate_start(node, clock) == "counted"
    boot.id, boot.t = "boot-2", 20.0  # power cut: a new boot, long after the deadline
    assert gate_start(node, clock) == "counted"
    assert guard.link_target(node.current) == NEW
    assert gate_start(node, clock) == "rolled_back"  # the starts ran out
    assert "starts" in guard.read_state(node.state)["result"]["reason"]


def test_confirmed_gate_keeps_the_release(node: guard.Paths) -> None:
    clock = Clock()
    request_update(node)
    installer(node, clock).run()
    gate_start(node, clock)
    state = guard.read_state(node.state)
    state["gate"]["ok"] = True
    guard.write_state(node.state, state)
    assert gate_start(node, clock) == "confirmed"
    for _ in range(5):
        assert gate_start(node, clock) == "nothing"
    assert guard.link_target(node.current) == NEW and node.config.read_text() == MIGRATED


def test_guard_repairs_a_current_link_to_nothing(node: guard.Paths) -> None:
    guard.set_link(node.current, "9.9.9")
    assert gate_start(node, Clock()) == "repaired"
    assert guard.link_target(node.current) == OLD


def test_guard_is_a_standalone_script(node: guard.Paths, tmp_path: Path) -> None:
    """install.sh copies the file alone: it must import nothing from agent/."""
    import subprocess
    import sys

    copy = tmp_path / "citynode-guard"
    shutil.copy(Path(guard.__file__), copy)
    proc = subprocess.run([sys.executable, "-I", str(copy), "--root", str(node.root)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run([sys.executable, "-I", str(copy), "--root", str(tmp_path / "no")],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 64 and "not a directory" in proc.stderr


# -- old releases ------------------------------------------------------------------------------
def add_release(paths: guard.Paths, version: str, age_s: float, *, complete: bool = True,
                venv_of: str | None = None) -> Path:
    """An installed release, ``age_s`` old (its .complete marker's time orders them)."""
    folder = paths.releases / version
    if venv_of:
        folder.mkdir(parents=True)
        (folder / "venv").symlink_to(f"../{venv_of}/venv")
    else:
        (folder / "venv/bin").mkdir(parents=True)
        (folder / "venv/bin/citynode").write_text(version)
    if complete:
        (folder / guard.COMPLETE).write_text(version)
        t = Clock()() - age_s
        os.utime(folder / guard.COMPLETE, (t, t))
    return folder


def releases(paths: guard.Paths) -> set[str]:
    return {p.name for p in paths.releases.iterdir()}


def test_an_install_removes_old_releases_beyond_keep_releases(node: guard.Paths) -> None:
    for i, v in enumerate(("0.0.1", "0.0.2", "0.0.3", "0.0.4")):
        add_release(node, v, age_s=1000 - i)
    guard.set_link(node.previous, "0.0.1")  # the oldest, but a link names it
    add_release(node, "0.0.5", 10, complete=False)  # a kill during its install
    (node.releases / "0.0.6.tmp").mkdir()
    (node.releases / ".remove-0.0.7" / "venv").mkdir(parents=True)  # a kill during a prune
    (node.releases / "notes.txt").write_text("an operator's")
    (node.releases / "elsewhere").symlink_to("/nonexistent")
    request_update(node)
    code, line = installer(node).run()
    assert code == 0, line
    # keep_releases 3: the new one, the one it replaced, the one previous named
    assert releases(node) == {NEW, OLD, "0.0.1", "notes.txt", "elsewhere"}
    assert guard.link_target(node.current) == NEW and guard.link_target(node.previous) == OLD
    node.config.write_text(CONFIG + "\n[update]\nkeep_releases = 4\n")
    add_release(node, "0.1.5", age_s=5)
    request_update(node, "0.3.0")
    state = guard.read_state(node.state)
    state["from_version"] = NEW
    guard.write_state(node.state, state)
    assert installer(node).run()[0] == 0
    assert releases(node) == {"0.3.0", NEW, OLD, "0.1.5", "notes.txt", "elsewhere"}


def test_a_models_release_keeps_the_release_whose_venv_it_uses(node: guard.Paths) -> None:
    add_release(node, "0.0.3", age_s=3000)
    add_release(node, "0.0.4", age_s=2000)
    add_release(node, "0.0.3+models.1", age_s=100, venv_of="0.0.3")
    add_release(node, "0.0.3+models.2", age_s=50, venv_of="0.0.3+models.1")
    guard.set_link(node.previous, "0.0.3+models.2")
    request_update(node)
    assert installer(node).run()[0] == 0
    assert releases(node) == {NEW, OLD, "0.0.3+models.2", "0.0.3+models.1", "0.0.3"}
    assert (node.releases / "0.0.3+models.2/venv/bin/citynode").read_text() == "0.0.3"


def test_a_release_that_failed_its_gate_is_removed_first(node: guard.Paths) -> None:
    add_release(node, "0.0.8", age_s=500)
    add_release(node, "0.1.9", age_s=5)  # the newest: rolled back from
    request_update(node)
    state = guard.read_state(node.state)  # the daemon keeps the last result as it downloads
    state["result"] = {"version": "0.1.9", "outcome": "rolled_back", "reason": "x", "at": 1,
                       "reported": True}
    guard.write_state(node.state, state)
    assert installer(node).run()[0] == 0
    assert releases(node) == {NEW, OLD, "0.0.8"}


def test_a_version_sent_again_is_reused_only_from_the_same_bundle(node: guard.Paths) -> None:
    """A release folder is reused only for the bundle it came from (root's own hash of
    the copy it verified): the same version rebuilt is installed afresh, never the old
    files under the new bundle's name."""
    from agent.update.install import BUNDLE_SHA

    request_update(node)
    assert installer(node).run()[0] == 0
    first = (node.releases / NEW / BUNDLE_SHA).read_text()
    guard.rollback(node, guard.read_state(node.state), "test")  # the gate failed
    assert guard.link_target(node.current) == OLD
    (node.releases / NEW / "left-by-the-first").write_text("x")
    request_update(node)  # the very same bundle: reused
    assert installer(node).run()[0] == 0
    assert (node.releases / NEW / "left-by-the-first").exists()
    guard.rollback(node, guard.read_state(node.state), "test")
    request_update(node, migrations=())  # rebuilt under the same version
    assert installer(node).run()[0] == 0
    assert not (node.releases / NEW / "left-by-the-first").exists()
    second = (node.releases / NEW / BUNDLE_SHA).read_text()
    assert second != first and guard.link_target(node.current) == NEW
    assert node.config.read_text() == CONFIG  # this bundle has no migration
    # The previous release itself, from another bundle: refused, nothing changed.
    state = guard.read_state(node.state)
    state.update(phase="confirmed")
    guard.write_state(node.state, state)
    guard.set_link(node.previous, NEW)
    guard.set_link(node.current, OLD)
    request_update(node)
    code, line = installer(node).run()
    assert code == 1 and "installed from another bundle" in line
    assert (node.releases / NEW / BUNDLE_SHA).read_text() == second


@pytest.mark.parametrize("keep", [0, 2, 21, "3", True])
def test_keep_releases_is_clamped_or_ignored(node: guard.Paths, keep: Any) -> None:
    from agent.update.install import _update_settings

    node.config.write_text(CONFIG + f"\n[update]\nkeep_releases = {json.dumps(keep)}\n")
    want = {0: 3, 2: 3, 21: 20}.get(keep, 3) if not isinstance(keep, bool) else 3
    assert _update_settings(node)[2] == want


# -- kills at any point ----------------------------------------------------------------------------
MUTATIONS = ("replace", "rename", "symlink", "unlink", "rmdir", "mkdir")


@pytest.fixture
def killer(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Counts file-system changes; raises Killed before the one numbered ``at``."""
    box = {"n": 0, "at": -1}
    for name in MUTATIONS:
        real = getattr(os, name)

        def wrapped(*a: Any, _real: Any = real, **k: Any) -> Any:
            box["n"] += 1
            if box["n"] == box["at"]:
                raise Killed
            return _real(*a, **k)

        monkeypatch.setattr(os, name, wrapped)
    yield box


def consistent(paths: guard.Paths) -> str:
    """The tree after recovery: current names a complete release and the configuration
    belongs to it; the phase."""
    state = guard.read_state(paths.state)
    cur = guard.link_target(paths.current)
    assert cur and guard.is_complete(paths.releases / cur), cur
    if cur == NEW:
        assert state["phase"] in ("gate", "confirmed"), state
        assert paths.config.read_text() == MIGRATED
    else:
        assert cur == OLD
        assert state["phase"] in ("failed", "rolled_back", "requested", "installing"), state
        assert paths.config.read_text() == CONFIG
    return state["phase"]


def _recover(paths: guard.Paths, clock: Clock) -> None:
    """What the node does next: a boot starts citynode (the guard) and the path unit
    starts the installer again (the request is still there)."""
    gate_start(paths, clock)
    installer(paths, clock).run()


def install_killed_at(paths: guard.Paths, killer: dict[str, int], at: int) -> Clock:
    """Request the update and run the installer, killed before file-system change ``at``
    (not at all when it needs fewer); the clock it ran with."""
    request_update(paths)
    clock = Clock()
    killer.update(n=0, at=at)
    try:
        installer(paths, clock).run()
    except Killed:
        pass
    killer["at"] = -1
    return clock


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(at=st.integers(1, 60))
def test_kill_anywhere_in_install_then_recover(tmp_path_factory: pytest.TempPathFactory,
                                               killer: dict[str, int], at: int) -> None:
    paths = make_node(tmp_path_factory.mktemp("k") / "root")
    clock = install_killed_at(paths, killer, at)
    _recover(paths, clock)
    assert consistent(paths) == "gate"
    assert guard.link_target(paths.previous) == OLD


@settings(max_examples=40, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(at=st.integers(1, 45))
def test_kill_anywhere_while_old_releases_are_removed(tmp_path_factory: pytest.TempPathFactory,
                                                     killer: dict[str, int], at: int) -> None:
    """A kill during the prune leaves no folder that looks like a release but is not
    whole; the next install finishes the job."""
    paths = make_node(tmp_path_factory.mktemp("p") / "root")
    for i, v in enumerate(("0.0.1", "0.0.2", "0.0.3")):
        add_release(paths, v, age_s=1000 - i)
    add_release(paths, "0.0.4", 10, complete=False)
    clock = install_killed_at(paths, killer, at)
    for name in releases(paths):
        folder = paths.releases / name
        if name.startswith("."):
            continue  # being removed: no release is ever taken from a hidden folder
        if guard.is_complete(folder) and name != OLD:  # whatever is complete is whole
            assert (folder / "venv/bin/citynode").is_file(), name
    assert set(guard.complete_releases(paths)) <= {NEW, OLD, "0.0.1", "0.0.2", "0.0.3"}
    _recover(paths, clock)
    assert consistent(paths) == "gate"
    assert releases(paths) == {NEW, OLD, "0.0.3"}


@settings(max_examples=60, deadline=None, suppress_health_check=[
    HealthCheck.function_scoped_fixture])
@given(at=st.integers(1, 30), deadline=st.booleans())
def test_kill_anywhere_in_rollback_then_recover(tmp_path_factory: pytest.TempPathFactory,
                                                killer: dict[str, int], at: int,
                                                deadline: bool) -> None:
    paths = make_node(tmp_path_factory.mktemp("r") / "root")
    request_update(paths)
    clock = Clock()
    installer(paths, clock).run()
    for _ in range(3):
        gate_start(paths, clock)
    if deadline:
        clock.t += 10 * 3600
    killer.update(n=0, at=at)
    try:
        gate_start(paths, clock)  # this start fails the gate
    except Killed:
        pass
    killer["at"] = -1
    for _ in range(2):  # systemd starts it again (each start runs the guard)
        gate_start(paths, clock)
    assert consistent(paths) == "rolled_back"
    assert guard.read_state(paths.state)["result"]["outcome"] == "rolled_back"


# -- migrations ------------------------------------------------------------------------------------
def test_migrations_apply_in_order_and_refuse_what_is_not_toml() -> None:
    reg = {"a": lambda t, d: t + "[x]\ny = 1\n", "bad": lambda t, d: t + "= nope\n"}
    assert migrate.apply(CONFIG, ["a"], reg).endswith("[x]\ny = 1\n")
    with pytest.raises(migrate.MigrationError, match="not TOML"):
        migrate.apply(CONFIG, ["bad"], reg)
    with pytest.raises(migrate.MigrationError, match="unknown"):
        migrate.apply(CONFIG, ["nosuch"], reg)


def test_a_failed_migration_leaves_the_node_as_it_was(node: guard.Paths) -> None:
    request_update(node, migrations=("nosuch",))
    code, line = installer(node).run()
    assert code == 1 and "unknown configuration migration" in line
    assert guard.link_target(node.current) == OLD and node.config.read_text() == CONFIG
    assert not (node.releases / NEW).exists()


# -- downloads ----------------------------------------------------------------------------------
BLOB = bytes(range(256)) * 400  # 102400 bytes
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    honour_range = True
    seen: list[str | None] = []

    def log_message(self, *a: Any) -> None:
        pass

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        type(self).seen.append(rng)
        if rng and self.honour_range:
            start = int(rng.split("=")[1].rstrip("-"))
            body = BLOB[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}")
        else:
            body = BLOB
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(params=[True, False], ids=["range", "no-range"])
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"honour_range": request.param, "seen": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/b.tar.gz", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_resumes_with_range(tmp_path: Path, server: tuple[str, Any]) -> None:
    url, handler = server
    dest = tmp_path / "b.tar.gz"
    (tmp_path / "b.tar.gz.part").write_bytes(BLOB[:30000])
    d = dl.Downloader(dl.Request(url, dest, BLOB_SHA, len(BLOB), 1 << 20, allow_http=True),
                      sleep=lambda s: None)
    assert d.run() == dest and dest.read_bytes() == BLOB
    assert handler.seen == ["bytes=30000-"]
    assert d.restarts == (0 if handler.honour_range else 1)
    assert not (tmp_path / "b.tar.gz.part").exists()


def test_download_with_a_wrong_sha256_is_refused(tmp_path: Path,
                                                 server: tuple[str, Any]) -> None:
    url, _ = server
    dest = tmp_path / "b.tar.gz"
    d = dl.Downloader(dl.Request(url, dest, "0" * 64, len(BLOB), 1 << 20, allow_http=True),
                      sleep=lambda s: None)
    with pytest.raises(dl.DownloadError, match="sha256"):
        d.run()
    assert not dest.exists() and not (tmp_path / "b.tar.gz.part").exists()


def test_download_is_bounded(tmp_path: Path, server: tuple[str, Any]) -> None:
    url, _ = server
    d = dl.Downloader(dl.Request(url, tmp_path / "b", BLOB_SHA, None, 50_000, allow_http=True),
                      sleep=lambda s: None)
    with pytest.raises(dl.DownloadError, match=r"limit|more than"):
        d.run()
    d = dl.Downloader(dl.Request(url, tmp_path / "c", BLOB_SHA, 1000, 1 << 20,
                                 allow_http=True), sleep=lambda s: None)
    with pytest.raises(dl.DownloadError, match="announced"):
        d.run()


def test_bandwidth_limit_is_obeyed(tmp_path: Path, server: tuple[str, Any]) -> None:
    url, _ = server
    clock = Clock(0.0)
    taken: list[tuple[float, int]] = []

    def sleep(s: float) -> None:
        clock.t += s

    class Recording(dl.Throttle):
        def take(self, n: int) -> None:
            super().take(n)
            taken.append((clock.t, n))

    rate = 8000.0  # bytes a second ([update] bandwidth_kbps = 64)
    throttle = Recording(rate, clock=clock, sleep=sleep)
    d = dl.Downloader(dl.Request(url, tmp_path / "b", BLOB_SHA, len(BLOB), 1 << 20,
                                 allow_http=True), throttle=throttle, sleep=sleep)
    d.run()
    total = 0
    for t, n in taken:
        total += n
        assert total <= rate * t + throttle.burst + 1e-6, (t, total)
    assert total >= len(BLOB)
    assert clock.t >= (len(BLOB) - throttle.burst) / rate
    assert clock.t <= total / rate + 1.0  # and not much slower than allowed


def test_urls_a_node_refuses() -> None:
    for url, why in [("http://x/b", "https"), ("ftp://x/b", "https"), ("https:///b", "host"),
                     ("https://u:p@x/b", "credentials"), ("https://x/a b", "printable"),
                     ("https://" + "x" * 1100, "1024"), ("https://x:99999/b", "malformed")]:
        with pytest.raises(dl.DownloadError, match=why):
            dl.check_url(url)
    dl.check_url("http://127.0.0.1:8/b", allow_http=True)


# -- the update command and the daemon's updater -------------------------------------------------
SHA = "a" * 64


def test_update_arguments_are_validated() -> None:
    ok = validate("https://u.example.net/b.tar.gz", SHA.upper(), 10, "0.2.0")
    assert ok == ("https://u.example.net/b.tar.gz", SHA, 10, "0.2.0")
    bad = [("http://u/b", SHA, None, "0.2.0", "https"),
           ("https://u/b", "xyz", None, "0.2.0", "sha256"),
           ("https://u/b", SHA, 0, "0.2.0", "size"),
           ("https://u/b", SHA, 1 << 40, "0.2.0", "size"),
           ("https://u/b", SHA, True, "0.2.0", "size"),
           ("https://u/b", SHA, None, "../x", "version"),
           ("https://u/b", SHA, None, "", "version")]
    for url, sha, size, version, why in bad:
        with pytest.raises(Refused, match=why):
            validate(url, sha, size, version)


def _cfg(**update: Any) -> Any:
    return SimpleNamespace(update=UpdateConfig(**update), mqtt=SimpleNamespace(tls=False))


def test_update_command_through_the_processor(tmp_path: Path) -> None:
    """The schema bounds the arguments before the node sees them; the node refuses the
    rest with one line, and a second update while one runs."""
    events: list[list[Any]] = []
    gate = threading.Event()

    def slow_download(target: dict, dest: Path, progress: Any) -> Path:
        gate.wait(10)
        raise dl.DownloadError("stopped by the test")

    up = Updater(_cfg(), emit=events.append, state_dir=tmp_path, version=OLD, slot="",
                 downloader=slow_download)

    class Control:
        def update(self, *a: Any) -> tuple[bool, str]:
            return up.request(*a)

    proc = CommandProcessor(Control(), CommandsConfig())  # type: ignore[arg-type]

    def send(args: dict[str, Any]) -> Any:
        return proc.handle(json.dumps({"id": "c-9", "cmd": "update", "args": args}).encode())

    assert not send({"url": "https://u/b", "sha256": SHA}).ok  # version missing
    assert "args.size" in (send({"url": "https://u/b", "sha256": SHA, "version": "1",
                                 "size": commands.MAX_BUNDLE_BYTES + 1}).error or "")
    res = send({"url": "http://u/b", "sha256": SHA, "version": NEW})
    assert not res.ok and "https" in (res.error or "")
    res = send({"url": "https://u/b", "sha256": SHA, "version": OLD})
    assert not res.ok and "running version" in (res.error or "")
    res = send({"url": "https://u/b", "sha256": SHA, "version": NEW})
    assert res.ok and res.data == {"message": f"downloading {NEW}"}
    assert ust.read_state(tmp_path / "update/state.json")["target"]["command_id"] == "c-9"
    res = send({"url": "https://u/b", "sha256": SHA, "version": "0.3.0"})
    assert not res.ok and "in progress" in (res.error or "")
    gate.set()
    up._thread.join(10)  # type: ignore[union-attr]
    state = ust.read_state(tmp_path / "update/state.json")
    assert state["phase"] == "failed" and "stopped by the test" in state["result"]["reason"]
    assert [r.text for r in events[-1] if r.name == "update"] == ["failed"]
    # during a health gate: refused too
    state.update(phase="gate", gate={"s": 120, "ok": False})
    ust.write_state(tmp_path / "update/state.json", state)
    res = send({"url": "https://u/b", "sha256": SHA, "version": "0.3.0"})
    assert not res.ok and "health gate" in (res.error or "")
    assert not Updater(_cfg(enabled=False), emit=events.append, state_dir=tmp_path / "x",
                       version=OLD, slot="").request("https://u/b", SHA, None, NEW)[0]


def test_updater_downloads_and_asks_root(tmp_path: Path, server: tuple[str, Any],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = server
    events: list[list[Any]] = []
    up = Updater(_cfg(allow_http=True), emit=events.append, state_dir=tmp_path,
                 version=OLD, slot="")
    monkeypatch.setattr(up, "_verify_locally", lambda path: None)
    ok, _ = up.request(url, BLOB_SHA, len(BLOB), NEW, "c-7")
    assert ok
    up._thread.join(30)  # type: ignore[union-attr]
    state = ust.read_state(tmp_path / "update/state.json")
    assert state["phase"] == "requested", state
    req = json.loads((tmp_path / "update/request.json").read_text())
    assert req["version"] == NEW and (tmp_path / "update" / req["bundle"]).read_bytes() == BLOB
    phases = [r.text for ev in events for r in ev if r.name == "update"]
    assert phases[0] == "downloading" and phases[-2:] == ["verified", "requested"]
    assert any(r.name == "update:progress" and r.value == 100 for ev in events for r in ev)


def test_updater_resumes_a_download_after_a_restart(tmp_path: Path) -> None:
    state = ust.new_state()
    state.update(phase="downloading", target={"version": NEW, "url": "https://u/b",
                                              "sha256": SHA, "size": None})
    ust.write_state(tmp_path / "update/state.json", state)
    called = threading.Event()

    def download(target: dict, dest: Path, progress: Any) -> Path:
        called.set()
        raise dl.DownloadError("offline")

    up = Updater(_cfg(), emit=lambda r: None, state_dir=tmp_path, version=OLD, slot="",
                 downloader=download)
    up.start()
    assert called.wait(10)


def test_gate_is_confirmed_or_fails_at_its_deadline(tmp_path: Path) -> None:
    wall, mono = Clock(), Clock(0.0)
    state = ust.new_state()
    state.update(phase="gate", target={"version": NEW}, from_version=OLD,
                 gate={"s": 120.0, "deadline": wall.t + 600, "starts": 1, "max_starts": 3,
                       "ok": False})
    path = tmp_path / "update/state.json"
    ust.write_state(path, state)
    events: list[list[Any]] = []
    up = Updater(_cfg(), emit=events.append, state_dir=tmp_path, version=NEW, slot=NEW,
                 clock=wall, mono=mono)
    up.start()
    for t in range(0, 200, 10):  # no publication acknowledged: never confirmed
        mono.t = float(t)
        assert up.gate_tick(ready=True, published=0, watchdog_ok=True) is None
    wall.t += 601
    assert up.gate_tick(ready=True, published=0, watchdog_ok=True) == EX_GATE_FAILED
    # another start, publishing this time: confirmed after gate_s of a kept watchdog
    wall.t -= 601
    up = Updater(_cfg(), emit=events.append, state_dir=tmp_path, version=NEW, slot=NEW,
                 clock=wall, mono=mono)
    mono.t = 1000.0
    assert up.gate_tick(ready=True, published=1, watchdog_ok=True) is None
    mono.t = 1100.0
    assert up.gate_tick(ready=True, published=1, watchdog_ok=False) is None  # broken
    mono.t = 1150.0
    assert up.gate_tick(ready=True, published=1, watchdog_ok=True) is None  # starts again
    mono.t = 1270.0
    assert up.gate_tick(ready=True, published=2, watchdog_ok=True) is None
    state = ust.read_state(path)
    assert state["phase"] == "confirmed" and state["gate"]["ok"] is True
    assert state["result"]["outcome"] == "confirmed"
    assert up.summary() == f"confirmed {NEW}"
    assert [r.text for r in up.records()] == [NEW, f"confirmed {NEW}"]


def test_the_old_release_reports_a_rollback_once(tmp_path: Path) -> None:
    state = ust.new_state()
    state.update(phase="rolled_back", target={"version": NEW},
                 result={"version": NEW, "outcome": "rolled_back", "reason": "3 starts",
                         "at": 1.0, "reported": False})
    ust.write_state(tmp_path / "update/state.json", state)
    events: list[list[Any]] = []
    for _ in range(2):
        Updater(_cfg(), emit=events.append, state_dir=tmp_path, version=OLD,
                slot=OLD).start()
    assert len(events) == 1
    assert {r.name: r.text for r in events[0]} == {"update": "rolled_back",
                                                   "update:reason": "3 starts"}


def test_state_file_reads_torn_or_foreign_as_idle(tmp_path: Path) -> None:
    p = tmp_path / "state.json"
    for raw in (b"", b"{", b"[]", b'{"phase": "bogus"}', b"\xff" * 10):
        p.write_bytes(raw)
        assert ust.read_state(p)["phase"] == "idle"
    p.unlink()
    p.symlink_to(tmp_path / "elsewhere")
    assert ust.read_state(p)["phase"] == "idle"


# -- the real thing: a signed bundle, agent/update/bundle.py, a venv from its wheels ---------------
def test_install_a_signed_bundle_end_to_end(node: guard.Paths, tmp_path: Path) -> None:
    """``make bundle``'s own code signs a bundle around a tiny wheel; the installer verifies
    it with the pinned key, extracts it and builds the release's venv offline with pip;
    the same bundle with a file changed is refused."""
    import subprocess

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from test_install import fake_wheel
    from update_rig import load_bundle_tool

    from agent.update.install import machine_arch

    key = Ed25519PrivateKey.generate()
    node.keys.mkdir(parents=True)
    (node.keys / "fleet.pub").write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    mod = load_bundle_tool()
    top = mod.assemble(tmp_path / "stage", [fake_wheel(tmp_path, NEW)], version=NEW,
                       arch=machine_arch(), pyver="3", extras="", signing_key=key,
                       migrations=[], created="2026-12-07T00:00:00Z")
    built = mod.make_tarball(top, tmp_path / "dist")
    shutil.copy(built, node.update_dir / built.name)
    sha = hashlib.sha256(built.read_bytes()).hexdigest()
    state = guard.new_state()
    state.update(phase="requested", target={"version": NEW, "sha256": sha})
    guard.write_state(node.state, state)
    guard.write_atomic(node.request, json.dumps({"version": NEW, "bundle": built.name}).encode())
    restarts: list[int] = []
    code, line = Installer(node, Options(gate_s=60, max_starts=2,
                                         restart=lambda: restarts.append(1))).run()
    assert code == 0, line
    release = node.releases / NEW
    out = subprocess.run([release / "venv/bin/citynode", "version"], capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == f"citynode {NEW}"
    assert json.loads((release / "MANIFEST.json").read_bytes())["version"] == NEW
    assert guard.link_target(node.current) == NEW and restarts == [1]
    assert node.config.read_text() == CONFIG  # no migrations: the file is as it was
    # tampered: one byte of a listed file changed, the signature no longer covers it
    with tarfile.open(built) as tf:
        members = [(m, tf.extractfile(m).read() if m.isfile() else None)  # type: ignore
                   for m in tf.getmembers()]
    bad = node.update_dir / "bad.tar.gz"
    with tarfile.open(bad, "w:gz") as tf:
        for m, data in members:
            if data is not None and m.name.endswith("citynode.toml"):
                data = data + b"# x\n"
                m.size = len(data)
            tf.addfile(m, io.BytesIO(data) if data is not None else None)
    state = guard.read_state(node.state)
    state.update(phase="requested", target={"version": "0.3.0"})
    guard.write_state(node.state, state)
    guard.write_atomic(node.request, json.dumps({"version": "0.3.0", "bundle": bad.name}
                                                ).encode())
    code, line = Installer(node, Options(restart=lambda: restarts.append(1))).run()
    assert code == 1 and guard.read_state(node.state)["phase"] == "failed", line
    assert "signed manifest" in line
    assert guard.link_target(node.current) == NEW and restarts == [1]


def test_a_release_that_cannot_start_in_its_gate_is_restarted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """78 (configuration) is not restarted by systemd; in a health gate the daemon exits
    70 instead, so the next start brings the guard in to roll back."""
    from agent.tools.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[node]\nid = 1\n")
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    assert main(["run", "--config", str(bad)]) == 78
    state = ust.new_state()
    state.update(phase="gate", target={"version": NEW}, gate={"s": 120, "ok": False})
    ust.write_state(tmp_path / "update/state.json", state)
    assert ust.gate_pending()
    assert main(["run", "--config", str(bad)]) == 70
    state["gate"]["ok"] = True
    ust.write_state(tmp_path / "update/state.json", state)
    assert main(["run", "--config", str(bad)]) == 78


def test_birth_and_health_name_the_slot_and_the_last_update(tmp_path: Path) -> None:
    """Only a daemon that runs from a release folder or has updated says so: every other
    node's birth keeps its bytes."""
    from agent.core import config
    from agent.core.daemon import Node
    from agent.wire import formats

    cfg = config.parse(f'[node]\nid = "n1"\nstate_dir = "{tmp_path}"\n',
                       check_devices=False)
    node = Node(cfg)
    plain = node.birth().payload

    def names(payload: bytes) -> dict[str, Any]:
        return {r.name: r.text for r in formats.decode(payload).records}

    node.updater = Updater(cfg, emit=lambda r: None, state_dir=tmp_path, version=OLD, slot="")
    assert "slot" not in names(node.birth().payload) and len(node.birth().payload) == len(plain)
    state = ust.new_state()
    state.update(phase="rolled_back", target={"version": NEW},
                 result={"version": NEW, "outcome": "rolled_back", "reason": "3 starts"})
    ust.write_state(tmp_path / "update/state.json", state)
    node.updater = Updater(cfg, emit=lambda r: None, state_dir=tmp_path, version=OLD, slot=OLD)
    got = names(node.birth().payload)
    assert got["slot"] == OLD and got["update"] == f"rolled_back {NEW}"
    status = node.updater.status()
    assert status["slot"] == OLD and status["result"]["reason"] == "3 starts"


def test_status_table_shows_the_release_and_the_last_update() -> None:
    from agent.tools.status import _update_lines

    assert _update_lines(None) == [] and _update_lines({"slot": "", "phase": "idle"}) == []
    assert _update_lines({"slot": OLD, "phase": "rolled_back", "target": NEW,
                          "result": {"version": NEW, "outcome": "rolled_back",
                                     "reason": "3 starts"}}) == [
        f"  release {OLD}, last update rolled_back {NEW} (3 starts)"]
    assert _update_lines({"slot": OLD, "phase": "downloading", "target": NEW,
                          "result": None}) == [f"  release {OLD}, update downloading {NEW}"]


def test_a_models_release_s_models_are_the_ones_the_daemon_loads(tmp_path: Path) -> None:
    """A models-only bundle installs as a release whose venv is the running release's:
    the daemon, started through /opt/citynode/current/venv, takes current/models/."""
    from agent.models.runtime import MODELS_DIR, model_path

    base = tmp_path / "opt/citynode/releases/0.2.0"
    (base / "venv").mkdir(parents=True)
    models = tmp_path / "opt/citynode/releases/0.2.0+models.1"
    (models / "models").mkdir(parents=True)
    (models / "venv").symlink_to("../0.2.0/venv")
    (tmp_path / "opt/citynode/current").symlink_to("releases/0.2.0+models.1")
    prefix = str(tmp_path / "opt/citynode/current/venv")
    assert model_path("fall", prefix) == MODELS_DIR / "fall.tflite"  # no manifest: not ours
    (models / "MANIFEST.json").write_text("{}")
    assert model_path("fall", prefix) == MODELS_DIR / "fall.tflite"  # no such model in it
    (models / "models/fall.tflite").write_bytes(b"TFL3")
    assert model_path("fall", prefix) == tmp_path / "opt/citynode/current/models/fall.tflite"
    assert model_path("fall", str(base / "venv")) == MODELS_DIR / "fall.tflite"
    assert model_path("fall") == MODELS_DIR / "fall.tflite"  # this checkout
