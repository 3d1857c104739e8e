"""A real systemd in systemd-nspawn, for the system tests (``make test-nspawn``).

The root file system is Debian bookworm from debootstrap (about a minute, then cached
under /var/cache/citynode-test); every boot runs on a throw-away overlay
(``--volatile=overlay``), so tests never change the cached copy. The container has no
network of its own (``--private-network``): citynode is installed from wheels built
on the host, as from an offline bundle, and talks to a mosquitto inside.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
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


class Container:
    """One booted container; :meth:`sh` runs a command inside with ``nsenter``."""

    def __init__(self, root: Path, binds: dict[str, str], log: Path) -> None:
        self.root = root
        self.log = log
        args = ["systemd-nspawn", "-D", str(root), "--volatile=overlay", "--boot",
                "--console=passive", "--private-network", "--register=no", "--keep-unit",
                "--machine=citynode-test"]
        for host, inside in binds.items():
            args.append(f"--bind-ro={host}:{inside}")
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        try:
            self.pid = self._init_pid()
            self.wait_booted()
        except Exception:  # a container that did not come up is not left running
            self.proc.kill()
            self.proc.wait(10)
            self._log.close()
            raise

    def _init_pid(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited: {self.log.read_text()[-2000:]}")
            kids = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                                  text=True).stdout.split()
            if kids:
                return int(kids[0])
            time.sleep(0.1)
        raise RuntimeError("the container's init did not start")

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
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running 2>/dev/null || true",
                            check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.3)
        raise RuntimeError(f"the container did not finish booting (state {state!r})")

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
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
