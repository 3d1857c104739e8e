"""Whole over-the-air updates under a real systemd in systemd-nspawn (``make test-nspawn``).

One container for the module: the node is installed by install.sh from a signed bundle of
the working tree, the fleet key pinned, and every scenario starts from that release
(:meth:`Ota.reset` puts the node back by hand, the way docs/updates.md tells an operator
to). Bundles come from tests/update_rig.py; they are served over HTTPS from inside the
container (it has no network) by tests/ota_server.py, and the node's messages are recorded
by a subscriber inside it. Each scenario checks what the node reported as events, what
the state file and the links say, and what ``citynode status`` shows, and measures its
time (printed at the end of the module, quoted in docs/updates.md).
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import update_rig as rig
from nspawn import Container, require, rootfs

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.nspawn, pytest.mark.timeout(1800)]

NODE = "ota-1"
OPT = "/opt/citynode"
STATE = "/var/lib/citynode/update/state.json"
CONFIG_PATH = "/etc/citynode/citynode.toml"
CITYNODE = f"{OPT}/current/venv/bin/citynode"
GATE_S = 10  # the smallest [update] gate_s allowed
MAX_STARTS = 2
#: Shorter than the unit's 30 s, so a hung release is found quickly.
WATCHDOG_S = 6
CONFIG = """
[node]
id = "{node}"
[report]
interval_s = 2
[health]
interval_s = 10
[mqtt]
host = "127.0.0.1"
port = 1883
[commands]
hmac_key_file = "/etc/citynode/command.key"
[update]
gate_s = {gate_s}
max_starts = {max_starts}
ca_file = "/etc/citynode/update-ca.pem"
[[sensor]]
type = "sht3x"
name = "sht"
bus = "emulator"
read_interval_s = 0.5
"""


def config(max_starts: int = MAX_STARTS) -> str:
    """The node's configuration (the gate short, as a test can afford)."""
    return CONFIG.format(node=NODE, gate_s=GATE_S, max_starts=max_starts)


#: Bytes a second the bundle server sends when a test must catch a download midway.
SLOW = 500_000
FIGURES: dict[str, dict[str, float | str]] = {}


class Ota:
    """The container with citynode installed, a broker, a bundle server and a recorder."""

    def __init__(self, c: Container, base: str, bundles: dict[str, rig.Bundle]) -> None:
        self.c = c
        self.base = base
        self.bundles = bundles
        self._n = 0

    # -- the bundle server -----------------------------------------------------------------
    def serve(self, *, rate: int = 0, die_after: int | None = None) -> None:
        """(Re)start the HTTPS bundle server inside the container."""
        self.c.sh("systemctl stop ota-https; systemctl reset-failed ota-https; true",
                  check=False)
        args = (f"--root {rig.MNT}/files --cert {rig.MNT}/pki/server.pem "
                f"--key {rig.MNT}/pki/server.key --port {rig.PORT} "
                f"--log {rig.SRV}/requests.jsonl --rate {rate}")
        if die_after is not None:
            args += f" --die-after {die_after}"
        self.c.sh(f"systemd-run --unit=ota-https --property=Restart=no /usr/bin/python3 "
                  f"{rig.MNT}/ota_server.py {args}")
        self.wait(lambda: self.c.sh(f"python3 -c 'import socket; socket.create_connection("
                                    f"(\"127.0.0.1\", {rig.PORT}), 1)'", check=False)
                  .returncode == 0, 20, "the bundle server to listen")

    def requests(self, since: float = 0.0) -> list[dict[str, Any]]:
        out = self.c.sh(f"cat {rig.SRV}/requests.jsonl || true").stdout
        return [r for r in map(json.loads, out.splitlines()) if r["t"] >= since]

    # -- what the node says ------------------------------------------------------------------
    def messages(self, since: float, leaf: str) -> list[dict[str, Any]]:
        """What the recorder got on ``<prefix>/<node>/<leaf>`` since ``since``."""
        out = self.c.sh(f"cat {rig.SRV}/events.jsonl").stdout
        msgs = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
        return [m for m in msgs if m["t"] >= since and m["topic"].endswith("/" + leaf)]

    def update_events(self, since: float) -> list[dict[str, Any]]:
        """The ``update`` events since ``since``: {"t", "update", "update:reason", ...}."""
        out = []
        for m in self.messages(since, "event"):
            rec = rig.records(m["data"])
            if "update" in rec:
                out.append({"t": m["t"], **rec})
        return out

    def phases(self, since: float) -> list[str]:
        seen: list[str] = []
        for e in self.update_events(since):
            if not seen or seen[-1] != e["update"]:
                seen.append(str(e["update"]))
        return seen

    def wait_event(self, since: float, phases: tuple[str, ...], timeout: float
                   ) -> dict[str, Any]:
        """The first ``update`` event in ``phases`` after ``since``."""
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for e in self.update_events(since) if e["update"] in phases]
            return bool(found)

        self.wait(seen, timeout, f"an update event {phases} (seen: {self.phases(since)}; "
                  f"state: {self.state()}; journal: {self.journal(15)})")
        return found[0]

    def births(self, since: float) -> list[dict[str, Any]]:
        return [rig.records(m["data"]) | {"t": m["t"]} for m in self.messages(since, "state")
                if rig.records(m["data"]).get("status") == "online"]

    def state(self) -> dict[str, Any]:
        raw = self.c.sh(f"cat {STATE} || true").stdout
        return json.loads(raw) if raw.strip() else {}

    def link(self, name: str) -> str:
        return self.c.sh(f"readlink {OPT}/{name} || true").stdout.strip()

    def releases(self) -> set[str]:
        out = self.c.sh(f"ls -1 {OPT}/releases").stdout
        return {ln for ln in out.split() if not ln.startswith(".")}

    def status(self) -> dict[str, Any]:
        proc = self.c.sh(f"{CITYNODE} status --json", check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)

    def journal(self, lines: int = 40, unit: str = "citynode") -> str:
        return self.c.sh(f"journalctl -u {unit} -o cat --no-pager -n {lines}",
                         check=False).stdout[-4000:]

    def active(self) -> bool:
        return self.c.show("citynode", "ActiveState")["ActiveState"] == "active"

    @staticmethod
    def wait(pred: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    # -- what the platform does --------------------------------------------------------------
    def send_update(self, bundle: rig.Bundle, *, sha256: str | None = None) -> tuple[float, str]:
        """The signed ``update`` command for ``bundle``; (time sent, command id)."""
        self._n += 1
        cid = f"u-{self._n}-{bundle.version}"
        cmd = {"id": cid, "cmd": "update", "args": {
            "url": f"https://127.0.0.1:{rig.PORT}/{bundle.name}",
            "sha256": sha256 or bundle.sha256, "size": bundle.size, "version": bundle.version}}
        t0 = time.time()
        self.c.sh(f"{rig.TOOLS}/bin/python {rig.SRV}/send.py {NODE} /etc/citynode/command.key "
                  f"{shlex.quote(json.dumps(cmd))}")
        return t0, cid

    def result(self, cid: str, timeout: float = 20) -> dict[str, Any]:
        """The command's result records."""
        got: list[dict[str, Any]] = []

        def seen() -> bool:
            got[:] = [r for r in (rig.records(m["data"]) for m in self.messages(0, "result"))
                      if r.get("id") == cid]
            return bool(got)

        self.wait(seen, timeout, f"the result of {cid}")
        return got[0]

    # -- back to the installed release ---------------------------------------------------------
    def reset(self, max_starts: int = MAX_STARTS) -> None:
        """Put the node back on the release install.sh installed, by hand (docs/updates.md,
        "Recovering a node by hand"): stop, links back, other releases and the update
        state removed, the configuration back, start."""
        c = self.c
        c.sh("systemctl stop citynode citynode-update.path citynode-update.service; "
             "systemctl reset-failed citynode citynode-update.service; true")
        c.sh(f"cd {OPT} && ln -sfn releases/{self.base} .current.new && mv -T .current.new current"
             f" && rm -f previous && for d in releases/* releases/.[!.]*; do "
             f"[ \"$d\" = releases/{self.base} ] || rm -rf \"$d\"; done; "
             f"rm -rf /var/lib/citynode/update {CONFIG_PATH}.rollback")
        c.write(CONFIG_PATH, config(max_starts), "0640")
        c.sh(f"chgrp citynode {CONFIG_PATH} && systemctl start citynode-update.path && "
             "systemctl start citynode")
        assert self.link("current") == f"releases/{self.base}"


def _guard_ok(c: Container) -> None:
    c.sh(f"test -x {OPT}/bin/citynode-guard")
    assert "citynode-guard" in c.show("citynode", "ExecStartPre")["ExecStartPre"]


@pytest.fixture(scope="module")
def ota(tmp_path_factory):
    require()
    tmp = tmp_path_factory.mktemp("ota")
    t0 = time.monotonic()
    mnt = tmp / "mnt"
    files = mnt / "files"
    key, pub = rig.generate_keys(tmp / "keys")
    rig.make_pki(mnt / "pki")
    (mnt / "ota_server.py").write_text((ROOT / "tests" / "ota_server.py").read_text())
    work = tmp / "work"
    work.mkdir()
    base = rig.build_bundle(work, mnt, "base", key=key)
    v = base.version
    bundles = {
        "good": rig.build_bundle(work, files, "good", key=key, version=f"{v}.post1"),
        "crash": rig.build_bundle(work, files, "crash", key=key, version=f"{v}.post2",
                                  patch=rig.CRASH),
        "hang": rig.build_bundle(work, files, "hang", key=key, version=f"{v}.post3",
                                 patch=rig.HANG),
        "nowhere": rig.build_bundle(work, files, "nowhere", key=key, version=f"{v}.post4",
                                    patch=rig.NOWHERE),
        "older": rig.build_bundle(work, files, "older", key=key,
                                  version=rig.older_version(v)),
    }
    bundles["tampered"] = rig.tamper(bundles["good"], files / "tampered.tar.gz")
    FIGURES["build"] = {"bundles_s": round(time.monotonic() - t0, 1),
                        "bundle_bytes": bundles["good"].size}
    (mnt / "fleet.pub").write_bytes(pub.read_bytes())
    c = Container(rootfs(), {str(mnt): rig.MNT, str(ROOT / "deploy"): "/mnt/deploy"},
                  tmp / "console.log")
    try:
        t1 = time.monotonic()
        c.sh(f"/bin/bash /mnt/deploy/install.sh --bundle {rig.MNT}/base.tar.gz --force "
             "--no-boot-config", timeout=600)
        FIGURES["build"]["install_s"] = round(time.monotonic() - t1, 1)
        ota = Ota(c, v, bundles)
        assert ota.link("current") == f"releases/{v}", c.sh(f"ls -la {OPT}").stdout
        _guard_ok(c)
        # Provisioning: the fleet key pinned, the node's command key, the CA of the server.
        c.sh(f"install -d -m 0755 /etc/citynode/keys && install -m 0644 {rig.MNT}/fleet.pub "
             f"/etc/citynode/keys/fleet.pub && install -m 0644 {rig.MNT}/pki/ca.pem "
             "/etc/citynode/update-ca.pem")
        c.sh("umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' "
             "> /etc/citynode/command.key && chown citynode: /etc/citynode/command.key")
        c.write("/etc/systemd/system/citynode.service.d/test.conf",
                f"[Service]\nWatchdogSec={WATCHDOG_S}s\n")
        c.sh("systemctl daemon-reload && systemctl start mosquitto")
        # The tools: a venv of their own from the base bundle's wheels (releases come and go).
        c.sh(f"mkdir -p {rig.SRV}/base && tar -xzf {rig.MNT}/base.tar.gz -C {rig.SRV}/base && "
             f"python3 -m venv {rig.TOOLS} && {rig.TOOLS}/bin/pip install -q --no-index "
             f"--find-links {rig.SRV}/base/*/wheels citynode=={v}", timeout=600)
        c.write(f"{rig.SRV}/events.py", rig.EVENTS)
        c.write(f"{rig.SRV}/send.py", rig.SEND)
        c.sh(f"systemd-run --unit=ota-events {rig.TOOLS}/bin/python {rig.SRV}/events.py {NODE} "
             f"{rig.SRV}/events.jsonl")
        Ota.wait(lambda: c.sh(f"test -s {rig.SRV}/events.jsonl || "
                              "journalctl -u ota-events -o cat | grep -q subscribed",
                              check=False).returncode == 0, 30, "the recorder to subscribe")
        ota.serve()
        ota.reset()
        Ota.wait(ota.active, 60, "citynode to run")
        yield ota
    finally:
        c.stop()
        FIGURES["module"] = {"total_s": round(time.monotonic() - t0, 1)}
        if FIGURES:
            print("\nupdate figures (s):", json.dumps(FIGURES, indent=1))
            (ROOT / "build").mkdir(exist_ok=True)
            (ROOT / "build" / "nspawn-update-figures.json").write_text(
                json.dumps(FIGURES, indent=1) + "\n")


def _settled(ota: Ota, version: str, timeout: float = 60) -> dict[str, Any]:
    """The node runs ``version`` again, has said so in a birth and in its status."""
    ota.wait(lambda: ota.active() and ota.link("current") == f"releases/{version}"
             and ota.c.sh(f"{CITYNODE} status --json", check=False).returncode == 0,
             timeout, f"citynode {version} to run")
    return ota.status()


# -- the scenarios ---------------------------------------------------------------------------
def test_good_update_is_installed_switched_and_confirmed(ota: Ota) -> None:
    good = ota.bundles["good"]
    since, cid = ota.send_update(good)
    res = ota.result(cid)
    assert res["status"] == "ok", res
    verified = ota.wait_event(since, ("verified", "failed"), 60)
    assert verified["update"] == "verified", verified
    switched = ota.wait_event(since, ("gate", "failed", "rolled_back"), 240)
    assert switched["update"] == "gate", ota.phases(since)
    done = ota.wait_event(since, ("confirmed", "rolled_back", "failed"), GATE_S + 90)
    assert done["update"] == "confirmed", (done, ota.journal())
    # (``switching`` lasts less than the daemon's poll of the state: seen only when cut short)
    phases = ota.phases(since)
    for p in ("downloading", "verified", "requested", "installing", "gate", "confirmed"):
        assert p in phases, phases
    # The links, the release folders, the state.
    assert ota.link("current") == f"releases/{good.version}"
    assert ota.link("previous") == f"releases/{ota.base}"
    assert ota.releases() >= {ota.base, good.version}
    ota.c.sh(f"test -f {OPT}/releases/{good.version}/.complete && "
             f"test -f {OPT}/releases/{good.version}/MANIFEST.json")
    state = ota.state()
    assert state["phase"] == "confirmed" and state["gate"]["ok"], state
    assert state["result"]["outcome"] == "confirmed", state
    # The running daemon is the new release's, started by systemd.
    pid = ota.c.show("citynode", "MainPID")["MainPID"]
    exe = ota.c.sh(f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout
    assert f"{OPT}/current/venv/bin/" in exe or f"releases/{good.version}" in exe, exe
    # Birth, health and status say version, slot and last result.
    births = ota.births(since)
    assert births and births[-1]["version"] == good.version, births
    assert births[-1].get("slot") == good.version, births[-1]
    ota.wait(lambda: any(rig.records(m["data"]).get("update") == f"confirmed {good.version}"
                         for m in ota.messages(done["t"], "health")),
             30, "a health report with the update's result")
    snap = ota.status()
    assert snap["version"] == good.version, snap.get("version")
    assert snap["update"]["slot"] == good.version, snap["update"]
    assert snap["update"]["result"]["outcome"] == "confirmed", snap["update"]
    # Nothing was read twice: one full GET of the bundle.
    gets = [r for r in ota.requests(since) if r["path"].endswith(good.name)
            and r["phase"] == "end"]
    assert [(r["status"], r["sent"]) for r in gets] == [(200, good.size)], gets
    FIGURES["good"] = {"to_verified_s": round(verified["t"] - since, 1),
                       "to_switch_s": round(switched["t"] - since, 1),
                       "to_confirmed_s": round(done["t"] - since, 1)}


def _rolled_back(ota: Ota, name: str, timeout: float, max_starts: int = MAX_STARTS
                 ) -> dict[str, Any]:
    """Send bundle ``name``; it must be installed, fail its gate and be rolled back."""
    ota.reset(max_starts)
    _settled(ota, ota.base)
    bundle = ota.bundles[name]
    since, cid = ota.send_update(bundle)
    assert ota.result(cid)["status"] == "ok"
    installing = ota.wait_event(since, ("installing", "failed"), 120)
    assert installing["update"] == "installing", ota.phases(since)
    back = ota.wait_event(installing["t"], ("rolled_back", "confirmed", "failed"), timeout)
    assert back["update"] == "rolled_back", (back, ota.journal())
    snap = _settled(ota, ota.base)
    assert ota.link("current") == f"releases/{ota.base}"
    state = ota.state()
    assert state["phase"] == "rolled_back", state
    assert state["result"]["outcome"] == "rolled_back" and state["result"]["version"] == \
        bundle.version, state
    assert snap["version"] == ota.base
    assert snap["update"]["result"]["outcome"] == "rolled_back", snap["update"]
    births = ota.births(back["t"] - 5)
    assert births and births[-1]["version"] == ota.base, births
    assert births[-1].get("update") == f"rolled_back {bundle.version}", births[-1]
    assert ota.c.sh(f"cat {CONFIG_PATH}").stdout == config(max_starts)  # as it was
    FIGURES[name] = {"to_installing_s": round(installing["t"] - since, 1),
                     "to_rolled_back_s": round(back["t"] - since, 1),
                     "reason": str(back.get("update:reason"))}
    return back


def test_release_that_crashes_on_start_is_rolled_back(ota: Ota) -> None:
    back = _rolled_back(ota, "crash", 120)
    assert "starts" in str(back.get("update:reason")), back
    log = ota.journal(200)
    assert "this release crashes" in log, log


def test_release_that_hangs_is_killed_by_the_watchdog_and_rolled_back(ota: Ota) -> None:
    back = _rolled_back(ota, "hang", 180)
    assert "starts" in str(back.get("update:reason")), back
    log = ota.c.sh("journalctl -u citynode -o cat --no-pager").stdout
    assert "Watchdog timeout" in log, log[-3000:]


def test_release_that_cannot_publish_fails_its_gate_and_is_rolled_back(ota: Ota) -> None:
    # The release's migration moves the broker to port 9. The gate's deadline is
    # max_starts x (gate_s + 60 s) after the switch: one start allowed, to keep it short.
    back = _rolled_back(ota, "nowhere", GATE_S + 60 + 120, max_starts=1)
    reason = str(back.get("update:reason"))
    assert "deadline" in reason or "starts" in reason, back
    log = ota.c.sh("journalctl -u citynode -o cat --no-pager").stdout
    assert "no publication acknowledged" in log or "health gate failed" in log, log[-3000:]


def test_kill_during_download_resumes_from_the_partial_file(ota: Ota) -> None:
    ota.reset()
    _settled(ota, ota.base)
    good = ota.bundles["good"]
    # First the server dies a third of the way; then, throttled, the node is killed midway.
    ota.serve(die_after=good.size // 3)
    since, cid = ota.send_update(good)
    assert ota.result(cid)["status"] == "ok"
    ota.wait(lambda: any(r["status"] == "died" for r in ota.requests(since)), 60,
             "the server to die mid-transfer")
    ota.serve(rate=SLOW)
    part = f"/var/lib/citynode/update/citynode-bundle-{good.version}.tar.gz.part"

    def size() -> int:
        out = ota.c.sh(f"stat -c %s {part} || echo 0").stdout.strip()
        return int(out or 0)

    ota.wait(lambda: size() > good.size * 0.6, 120, "the download to pass 60 %")
    killed_at = size()
    ota.c.sh("systemctl kill -s KILL citynode")
    t_kill = time.time()
    ota.serve()  # full speed again
    done = ota.wait_event(since, ("confirmed", "rolled_back", "failed"), 300)
    assert done["update"] == "confirmed", (done, ota.phases(since), ota.journal())
    log = ota.requests(since)
    ranged = [r for r in log if r.get("phase") == "begin" and r.get("range")]
    # resumed after the server died, and again after the node was killed
    assert len(ranged) >= 2 and all(r["status"] == 206 for r in ranged), log
    assert 0 < ranged[0]["start"] <= good.size // 3, log
    assert killed_at - (1 << 20) <= ranged[-1]["start"] <= good.size, log
    last = [r for r in log if r.get("phase") == "end" and r["start"] == ranged[-1]["start"]]
    assert last and last[-1]["sent"] == good.size - ranged[-1]["start"], log
    assert not [r for r in log if r["status"] == 200 and r.get("phase") == "begin"][1:], log
    resumed = [e for e in ota.update_events(t_kill) if "resumed" in str(e.get("update:reason"))]
    assert resumed, ota.update_events(t_kill)
    assert ota.link("current") == f"releases/{good.version}"
    FIGURES["resume"] = {"to_confirmed_s": round(done["t"] - since, 1),
                         "killed_at_bytes": killed_at, "resumed_from": ranged[-1]["start"],
                         "kill_to_confirmed_s": round(done["t"] - t_kill, 1)}


#: Runs the real installer in citynode-update.service and SIGKILLs it at one checkpoint.
KILL_AT = """
import os, signal, sys
from agent.update import install
def checkpoint(step):
    if step == sys.argv[1]:
        print("killed at", step, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
paths = install.Paths()
code, line = install.Installer(paths, install.Options(arch=install.machine_arch(),
                                                      checkpoint=checkpoint)).run()
print(line)
sys.exit(code)
"""


def test_kill_during_the_switch_leaves_a_consistent_tree(ota: Ota) -> None:
    ota.reset()
    _settled(ota, ota.base)
    good = ota.bundles["good"]
    ota.c.write(f"{rig.SRV}/kill_at.py", KILL_AT)
    ota.c.write("/etc/systemd/system/citynode-update.service.d/test.conf",
                f"[Service]\nExecStart=\nExecStart={OPT}/current/venv/bin/python "
                f"{rig.SRV}/kill_at.py switching\n")
    ota.c.sh("systemctl daemon-reload")
    seen: set[str] = set()

    def consistent() -> bool:
        """``current`` names a complete release, whichever (checked at every poll)."""
        cur = ota.link("current")
        assert cur.startswith("releases/"), cur
        ota.c.sh(f"test -f {OPT}/{cur}/.complete")
        seen.add(cur)
        return True

    try:
        since, cid = ota.send_update(good)
        assert ota.result(cid)["status"] == "ok"
        ota.wait(lambda: consistent() and "killed at switching" in
                 ota.journal(80, "citynode-update"), 300,
                 "the installer to be killed in the switch")
        t_kill = time.time()
        assert "installing" in ota.phases(since), ota.phases(since)
        # As after a power cut: citynode starts again (the guard) while the path unit
        # starts the installer again; whichever comes first finishes the switch.
        ota.c.sh("systemctl restart --no-block citynode")
        done: list[dict[str, Any]] = []

        def finished() -> bool:
            consistent()
            done[:] = [e for e in ota.update_events(t_kill)
                       if e["update"] in ("confirmed", "rolled_back", "failed")]
            return bool(done)

        ota.wait(finished, GATE_S + 180, f"the update's outcome ({ota.phases(since)})")
    finally:
        ota.c.sh("rm -rf /etc/systemd/system/citynode-update.service.d && "
                 "systemctl daemon-reload")
    assert done[0]["update"] == "confirmed", (done, ota.journal())
    assert seen <= {f"releases/{ota.base}", f"releases/{good.version}"}, seen
    assert ota.link("current") == f"releases/{good.version}"
    assert ota.link("previous") == f"releases/{ota.base}"
    snap = _settled(ota, good.version)
    assert snap["version"] == good.version
    log = ota.journal(200, "citynode-update") + ota.journal(200)
    assert "switched to" in log or "citynode-guard: counted" in log, log
    FIGURES["switch_kill"] = {"kill_to_confirmed_s": round(done[0]["t"] - t_kill, 1)}


def _refused(ota: Ota, bundle: rig.Bundle, *, sha256: str | None = None) -> dict[str, Any]:
    """Send ``bundle``: refused, never installed; the failed event."""
    ota.reset()
    _settled(ota, ota.base)
    before = ota.releases()
    since, cid = ota.send_update(bundle, sha256=sha256)
    assert ota.result(cid)["status"] == "ok"  # accepted: what it is shows once downloaded
    failed = ota.wait_event(since, ("failed", "requested", "gate"), 120)
    assert failed["update"] == "failed", ota.phases(since)
    time.sleep(2)  # give a wrongly started installer time to show itself
    assert ota.releases() == before, ota.releases()
    assert ota.link("current") == f"releases/{ota.base}"
    assert ota.c.sh("test -e /var/lib/citynode/update/request.json", check=False).returncode
    assert "installing" not in ota.phases(since)
    state = ota.state()
    assert state["phase"] == "failed" and state["result"]["version"] == bundle.version, state
    assert ota.active()
    ota.wait(lambda: (ota.status()["update"].get("result") or {}).get("outcome") == "failed",
             30, "citynode status to show the refusal")
    return failed | {"since": since}


def test_tampered_bundle_is_refused(ota: Ota) -> None:
    tampered = ota.bundles["tampered"]
    ev = _refused(ota, tampered)
    assert "sha256" in str(ev["update:reason"]) or "hash" in str(ev["update:reason"]), ev
    # The same bundle announced with the good bundle's hash: the download refuses it.
    ev2 = _refused(ota, tampered, sha256=ota.bundles["good"].sha256)
    assert "differs from the announced" in str(ev2["update:reason"]), ev2
    FIGURES["tampered"] = {"to_refused_s": round(ev["t"] - ev["since"], 1),
                           "reason": str(ev["update:reason"]),
                           "reason_wrong_hash": str(ev2["update:reason"])}


def test_older_bundle_is_refused(ota: Ota) -> None:
    older = ota.bundles["older"]
    ev = _refused(ota, older)
    assert "newer" in str(ev["update:reason"]) or "older" in str(ev["update:reason"]), ev
    FIGURES["older"] = {"to_refused_s": round(ev["t"] - ev["since"], 1),
                        "reason": str(ev["update:reason"])}


def test_a_staged_rollout_with_citynode_fleet_waits_for_the_confirmation(ota: Ota) -> None:
    """What an ops engineer runs: ``citynode fleet send --cmd update --wait-update`` finds
    the node by its retained state, signs and sends the command, and returns when the
    node reports ``confirmed`` (exit 0, the outcome in --json)."""
    ota.reset()
    _settled(ota, ota.base)
    good = ota.bundles["good"]
    args = {"url": f"https://127.0.0.1:{rig.PORT}/{good.name}", "sha256": good.sha256,
            "size": good.size, "version": good.version}
    # The operator's own copy of the command key (a key the service user owns is refused:
    # that account could swap it).
    ota.c.sh("install -m 600 -o root /etc/citynode/command.key /root/command.key")
    t0 = time.monotonic()
    proc = ota.c.sh(
        f"{rig.TOOLS}/bin/citynode fleet send --broker 127.0.0.1:1883 --nodes {NODE} "
        f"--cmd update --args {shlex.quote(json.dumps(args))} --key /root/command.key "
        f"--wait-update --update-timeout {GATE_S + 240} --ring 1 --json",
        check=False, timeout=GATE_S + 300)
    took = time.monotonic() - t0
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-2000:], ota.journal())
    doc = json.loads(proc.stdout)
    outcomes = [o for ring in doc["rings"] for o in ring["outcomes"]]
    assert [(o["node"], o["outcome"], o["detail"]) for o in outcomes] == [
        (NODE, "ok", "confirmed")], doc
    _settled(ota, good.version)
    assert ota.state()["result"]["outcome"] == "confirmed"
    FIGURES["fleet_rollout"] = {"to_confirmed_s": round(took, 1)}
