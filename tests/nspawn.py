"""A real systemd in systemd-nspawn, for the system tests (``make test-nspawn``).

The root file system is Debian bookworm from debootstrap (about a minute, then cached
under /var/cache/citynode-test); every boot runs on a throw-away overlay
(``--volatile=overlay``), so tests never change the cached copy. The container has no
network of its own (``--private-network``): citynode is installed from wheels built
on the host, as from an offline bundle, and talks to a mosquitto inside.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
import warnings
from pathlib import Path

CACHE = Path(os.environ.get("CITYNODE_TEST_CACHE", "/var/cache/citynode-test"))
MIRROR = os.environ.get("CITYNODE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "mosquitto",
            "ca-certificates", "procps")


def require() -> None:
    """Skip the test, with the reason, where no container can be booted here."""
    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root (systemd-nspawn)")
    if missing_tools():
        pytest.skip(f"missing {', '.join(missing_tools())} (apt-get install systemd-container "
                    "debootstrap)")


def missing_tools() -> list[str]:
    return [t for t in ("systemd-nspawn", "debootstrap", "nsenter")
            if shutil.which(t) is None]


def rootfs() -> Path:
    """The cached bookworm root (built on first use; a marker file says it is whole)."""
    key = hashlib.sha256(" ".join(PACKAGES).encode()).hexdigest()[:12]
    root = CACHE / f"bookworm-amd64-{key}"
    if (root / ".citynode-complete").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
                    "bookworm", str(tmp), MIRROR], check=True, capture_output=True,
                   timeout=1200)
    (tmp / ".citynode-complete").write_text(time.strftime("%F %T\n"))
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


class BootFailed(RuntimeError):
    """The container did not come up; the message carries what was seen."""


class Container:
    """One booted container; :meth:`sh` runs a command inside with ``nsenter``.

    A boot that stalls is tried once more (with a warning and what was seen), because
    the stall is the host's (it happened once in CI: systemd in the container printed
    nothing for two minutes), not citynode's; a second stall fails the test.
    """

    _count = 0

    def __init__(self, root: Path, binds: dict[str, str], log: Path, *,
                 attempts: int = 2) -> None:
        self.root = root
        self.log = log
        for attempt in range(1, attempts + 1):
            try:
                self._boot(binds)
                return
            except BootFailed as e:
                if attempt == attempts:
                    raise
                warnings.warn(f"container boot {attempt} failed, trying again: {e}",
                              stacklevel=2)

    def _boot(self, binds: dict[str, str]) -> None:
        Container._count += 1
        # A name of its own per boot: nspawn keeps per-name state under /run that an
        # earlier container may have left behind.
        self.machine = f"citynode-test-{os.getpid()}-{Container._count}"
        args = ["systemd-nspawn", "-D", str(self.root), "--volatile=overlay", "--boot",
                "--console=passive", "--private-network", "--register=no", "--keep-unit",
                f"--machine={self.machine}"]
        for host, inside in binds.items():
            args.append(f"--bind-ro={host}:{inside}")
        self.pid: int | None = None
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        try:
            self.pid = self._init_pid()
            self.wait_booted()
        except Exception as e:  # a container that did not come up is not left running
            seen = self._diagnose()
            self._kill()
            self._log.close()
            if isinstance(e, BootFailed | RuntimeError):
                raise BootFailed(f"{e}; {seen}") from e
            raise

    def _init_pid(self, timeout: float = 30.0) -> int:
        """The container's PID 1 (a child of nspawn that is PID 1 in its namespace).

        nspawn's short-lived helper child is not it: joining that one would run the
        probe in the wrong namespaces.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BootFailed(f"systemd-nspawn exited: {self.log.read_text()[-2000:]}")
            kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
            for kid in kids:
                if _namespace_pid(int(kid)) == 1:
                    return int(kid)
            time.sleep(0.1)
        raise BootFailed("the container's init did not start")

    def _diagnose(self) -> str:
        """What a stalled boot looked like, for the failure message."""
        code = self.proc.poll()
        parts = ["nspawn running" if code is None else f"nspawn exited {code}"]
        pid = self.pid
        if pid is not None:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                state = next(ln for ln in status.splitlines() if ln.startswith("State:"))
                wchan = Path(f"/proc/{pid}/wchan").read_text()
                parts.append(f"init {pid} {state.split(None, 1)[1]} in {wchan or '-'}")
            except (OSError, StopIteration):
                parts.append(f"init {pid} gone")
        self._log.flush()
        tail = self.log.read_bytes()[-600:].decode("utf-8", "replace").strip()
        parts.append(f"console ends: {tail!r}")
        return "; ".join(parts)

    def sh(self, script: str, *, check: bool = True, timeout: float = 120.0,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "/bin/sh", "-c", script],
                              capture_output=True, text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise AssertionError(f"in the container: {script!r} exited {proc.returncode}\n"
                                 f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
        return proc

    def wait_booted(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        state = "not asked"
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running 2>/dev/null || true",
                            check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.3)
        raise BootFailed(f"the container did not finish booting in {timeout:.0f} s "
                         f"(state {state!r})")

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} -p {','.join(props)}").stdout
        return dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        self.sh(f"mkdir -p \"$(dirname {path})\" && cat > {path} && chmod {mode} {path}",
                input=text)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.sh("systemctl poweroff", check=False, timeout=30)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self._kill()
        self._log.close()

    def _kill(self) -> None:
        """End the container for good. SIGKILL to systemd-nspawn alone leaves the
        container's init running (reparented to PID 1, services and all); SIGKILL to a
        PID namespace's init ends every process in it, then nspawn exits by itself."""
        for pid in {self.pid, *(int(k) for k in subprocess.run(
                ["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True
                ).stdout.split())} - {None}:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _namespace_pid(pid: int) -> int | None:
    """The PID a process has in its own PID namespace (None if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return None
