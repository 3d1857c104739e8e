"""The node on its real architecture: Debian bookworm arm64 (64-bit Raspberry Pi OS) under QEMU.

Root only (debootstrap, chroot, mounts). The arm64 root filesystem takes about 4-5 minutes
to build under emulation, so it is cached under /var/cache/citynode-test/, keyed by a
checksum of everything that goes into it, and each test works on a throw-away overlay of
the cached copy (the cache is never modified). What is proved here:

(a) install.sh installs from the aarch64 offline bundle with no network at all
    (``unshare --net``), the venv's Python is aarch64 and ``citynode version`` runs;
(b) the SD-card kit's first-boot script, run against /boot/firmware inside the chroot,
    installs, moves the secrets off the FAT partition with the right owner and modes,
    removes its cmdline.txt hook and reports OK in FIRSTBOOT-RESULT.txt;
(c) the installed node runs for 30 s on emulated sensors and its messages reach a
    mosquitto on the host (the chroot shares the host's network namespace).

``python tests/test_arm64.py`` builds (or finds) the cached chroot without running tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CITYNODE_TEST_CACHE", "/var/cache/citynode-test"))
MIRROR = os.environ.get("CITYNODE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
INCLUDE = "python3,python3-venv,ca-certificates"
# Bump when the way the chroot is built changes: the key changes, a new cache is made.
RECIPE = f"v1 debootstrap --arch=arm64 --foreign --variant=minbase --include={INCLUDE} {SUITE}"

pytestmark = pytest.mark.arm64


def chroot_key() -> str:
    """Checksum of every input of the chroot, so a changed recipe never reuses a stale cache."""
    return hashlib.sha256(f"{RECIPE}|{MIRROR}".encode()).hexdigest()[:16]


def why_not_runnable() -> str | None:
    """Why this machine cannot run the arm64 tests, or None when it can."""
    if os.geteuid() != 0:
        return "needs root (debootstrap, chroot, mounts): sudo make test-arm64"
    for tool in ("debootstrap", "qemu-aarch64-static", "unshare", "chroot"):
        if shutil.which(tool) is None:
            return (f"{tool} is not installed: apt-get install -y qemu-user-static "
                    "binfmt-support debootstrap")
    if platform.machine() == "aarch64":
        return None  # a real arm64 machine: no emulation needed
    return ensure_binfmt()


def ensure_binfmt() -> str | None:
    """Register QEMU for aarch64 binaries (binfmt_misc), as the reference doc says."""
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not Path("/proc/sys/fs/binfmt_misc/status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc",
                        "/proc/sys/fs/binfmt_misc"], capture_output=True, check=False)
    if not entry.exists() and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True,
                       check=False)
    if not entry.exists() or "enabled" not in entry.read_text():
        return ("binfmt_misc has no enabled qemu-aarch64 entry: mount -t binfmt_misc "
                "binfmt_misc /proc/sys/fs/binfmt_misc && update-binfmts --enable qemu-aarch64")
    return None


def build_chroot(log: bool = True) -> Path:
    """The cached arm64 root filesystem, built once (about 4-5 minutes under QEMU)."""
    target = CACHE / f"{SUITE}-arm64-{chroot_key()}"
    if (target / ".citynode-complete").exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    work = CACHE / f".build-{chroot_key()}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    t0 = time.monotonic()

    def run(cmd: list[str]) -> None:
        if log:
            print(f"# {' '.join(cmd)}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n"
                               f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")

    try:
        run(["debootstrap", "--arch=arm64", "--foreign", "--variant=minbase",
             f"--include={INCLUDE}", SUITE, str(work), MIRROR])
        if platform.machine() != "aarch64":
            shutil.copy2(shutil.which("qemu-aarch64-static") or "", work / "usr/bin/")
        run(["chroot", str(work), "/debootstrap/debootstrap", "--second-stage"])
        (work / ".citynode-complete").write_text(f"{RECIPE}\n{MIRROR}\n")
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # a half-built root is never reused
        if (target / ".citynode-complete").exists():  # built meanwhile by another run
            return target
        raise
    if log:
        print(f"# arm64 chroot built in {time.monotonic() - t0:.0f} s: {target}",
              file=sys.stderr)
    return target


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base() -> Path:
    problem = why_not_runnable()
    if problem:
        pytest.skip(problem)
    return build_chroot()


@pytest.fixture(scope="module")
def aarch64_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real offline bundle for aarch64 (CITYNODE_ARM64_BUNDLE reuses a built one)."""
    given = os.environ.get("CITYNODE_ARM64_BUNDLE")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, str(ROOT / "deploy/bundle.py"), "--arch", "aarch64",
                           "--extras", "tflite", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(proc.stdout.strip().splitlines()[-1])


def pi4_cpuinfo(cpus: int) -> str:
    """/proc/cpuinfo of a Raspberry Pi 4 Model B (Cortex-A72) on a 64-bit kernel."""
    core = ("processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
            "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
            "CPU part\t: 0xd08\nCPU revision\t: 3\n\n")
    return ("".join(core.format(n=n) for n in range(cpus))
            + "Hardware\t: BCM2835\nRevision\t: c03111\nSerial\t\t: 10000000c0ffee42\n"
            "Model\t\t: Raspberry Pi 4 Model B Rev 1.1\n")


@contextlib.contextmanager
def overlay(base: Path, work: Path) -> Iterator[Path]:
    """A writable throw-away view of the cached chroot, with /proc and /dev inside."""
    upper, wdir, merged = work / "upper", work / "work", work / "merged"
    for d in (upper, wdir, merged):
        d.mkdir(parents=True)
    mounts: list[Path] = []

    def mount(*args: str, target: Path) -> None:
        subprocess.run(["mount", *args, str(target)], check=True, capture_output=True)
        mounts.append(target)

    try:
        try:
            mount("-t", "overlay", "overlay", "-o",
                  f"lowerdir={base},upperdir={upper},workdir={wdir}", target=merged)
        except subprocess.CalledProcessError:  # no overlayfs here: a plain copy (slower)
            merged.rmdir()
            subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(merged)], check=True)
        mount("-t", "proc", "proc", target=merged / "proc")
        # qemu-user shows the host's /proc/cpuinfo (x86): give the chroot a Pi 4's. The
        # model runtime (XNNPACK) reads it and /sys to choose its kernels, and refuses
        # to compile a model without them
        (work / "cpuinfo").write_text(pi4_cpuinfo(os.cpu_count() or 1))
        mount("--bind", str(work / "cpuinfo"), target=merged / "proc" / "cpuinfo")
        mount("--bind", "/sys", target=merged / "sys")  # cpu lists, as on the Pi
        mount("--bind", "/dev", target=merged / "dev")
        mount("--bind", "/dev/pts", target=merged / "dev/pts")
        yield merged
    finally:
        for m in reversed(mounts):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)


def in_chroot(root: Path, *cmd: str, net: bool = True, timeout: float = 600,
              check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command inside the chroot; ``net=False`` gives it no network at all."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "LANG": "C.UTF-8", "HOME": "/root", "TMPDIR": "/tmp"}
    prefix = [] if net else ["unshare", "--net"]
    proc = subprocess.run([*prefix, "chroot", str(root), *cmd], capture_output=True, text=True,
                          env=env, timeout=timeout)
    if check:
        assert proc.returncode == 0, f"{cmd}: {proc.returncode}\n{proc.stdout[-4000:]}\n" \
                                     f"{proc.stderr[-4000:]}"
    return proc


def _member(bundle: Path, name: str) -> bytes:
    with tarfile.open(bundle) as tar:
        top = tar.getnames()[0].split("/")[0]
        fh = tar.extractfile(f"{top}/{name}")
        assert fh is not None
        return fh.read()


def _elf_machine(path: Path) -> int:
    """e_machine of an ELF file: 183 is AArch64, 62 is x86-64."""
    return int.from_bytes(path.read_bytes()[18:20], "little")


@pytest.fixture(scope="module")
def installed(base: Path, aarch64_bundle: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[str]]]:
    """install.sh from the aarch64 bundle inside the chroot, twice, with no network."""
    with overlay(base, tmp_path_factory.mktemp("installed")) as root:
        for f in (aarch64_bundle, Path(f"{aarch64_bundle}.sha256")):
            shutil.copy2(f, root / "root" / f.name)
        (root / "root/install.sh").write_bytes(_member(aarch64_bundle, "install.sh"))
        outputs = []
        for _ in range(2):
            t0 = time.monotonic()
            proc = in_chroot(root, "bash", "/root/install.sh", "--bundle",
                             f"/root/{aarch64_bundle.name}", "--no-enable", net=False)
            outputs.append(proc.stdout)
            print(f"# install.sh in the arm64 chroot: {time.monotonic() - t0:.0f} s",
                  file=sys.stderr)
        yield root, outputs


# -- (a) install ---------------------------------------------------------------------------
@pytest.mark.timeout(1500)
def test_installs_offline_from_the_aarch64_bundle(installed: tuple[Path, list[str]]):
    root, (first, second) = installed
    assert "installed citynode" in first and "nothing changed" in second, second
    venv = "/opt/citynode/venv/bin"
    machine = in_chroot(root, f"{venv}/python", "-c", "import platform; print(platform.machine())")
    assert machine.stdout.strip() == "aarch64"
    version = in_chroot(root, f"{venv}/citynode", "version")
    assert version.stdout.strip().startswith("citynode ")
    # The compiled dependencies are aarch64 code, imported and working.
    proc = in_chroot(root, f"{venv}/python", "-c",
                     "import cbor2, msgspec, paho.mqtt, serial, smbus2, gpiozero\n"
                     "import msgspec._core as c; print(c.__file__)\n"
                     "print(msgspec.json.encode({'a': cbor2.loads(cbor2.dumps([1]))}).decode())")
    so_file, encoded = proc.stdout.split()
    assert encoded == '{"a":[1]}'
    assert _elf_machine(root / so_file.lstrip("/")) == 183
    # The shipped models run on the Pi's architecture with ai-edge-litert: every .tflite the
    # bundle installed, which is the fall model alone (fire detection runs on rules).
    proc = in_chroot(root, f"{venv}/python", "-c",
                     "from agent.models import Model, model_path\n"
                     "for p in sorted(model_path('fall').parent.glob('*.tflite')):\n"
                     "    m = Model.load(p)\n"
                     "    print(p.stem, m.runtime, m.predict([[0.0] * len(m.meta.features)] * "
                     "m.meta.window if len(m.meta.input_shape) == 2 else "
                     "[0.0] * len(m.meta.features)))")
    lines = dict(ln.split(" ", 1) for ln in proc.stdout.strip().splitlines())
    assert set(lines) == {"fall"}, proc.stdout + proc.stderr
    assert all(v.startswith("ai-edge-litert ") for v in lines.values()), lines
    passwd = (root / "etc/passwd").read_text()
    assert "citynode:" in passwd and ":/var/lib/citynode:/usr/sbin/nologin" in passwd
    assert (root / "etc/systemd/system/citynode.service").is_file()


# -- (b) first boot ------------------------------------------------------------------------
NODE_TOML = """\
[node]
id = "pole-0042"

[mqtt]
host = "mqtt.example.net"
tls = true
ca_file = "/etc/citynode/ca.crt"
cert_file = "/etc/citynode/node.crt"
key_file = "/etc/citynode/node.key"
credentials_file = "/etc/citynode/mqtt.toml"

[commands]
hmac_key_file = "/etc/citynode/command.key"

[[sensor]]
type = "pms5003"
name = "pm"
port = "/dev/ttyAMA0"
"""
CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 "
           "fsck.repair=yes rootwait quiet\n")


def _secrets(d: Path) -> dict[str, Path]:
    d.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj", "/CN=pole-0042",
                    "-keyout", str(d / "node.key"), "-out", str(d / "node.crt")],
                   check=True, capture_output=True)
    (d / "mqtt.toml").write_text('username = "pole-0042"\npassword = "s3cret"\n')
    (d / "command.key").write_bytes(os.urandom(32).hex().encode())
    return {"credentials": d / "mqtt.toml", "cert": d / "node.crt", "key": d / "node.key",
            "ca": d / "node.crt", "hmac-key": d / "command.key"}


@pytest.mark.timeout(1500)
def test_first_boot_from_an_sdcard_kit(base: Path, aarch64_bundle: Path, tmp_path: Path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (test certificates)")
    secrets = _secrets(tmp_path / "secrets")
    config = tmp_path / "pole-0042.toml"
    config.write_text(NODE_TOML)
    with overlay(base, tmp_path / "ovl") as root:
        boot = root / "boot/firmware"
        boot.mkdir(parents=True)
        (boot / "cmdline.txt").write_text(CMDLINE)
        (boot / "config.txt").write_text("dtparam=audio=on\n[pi4]\narm_boost=1\n")
        args = [arg for opt, path in secrets.items() for arg in (f"--{opt}", str(path))]
        kit = subprocess.run([sys.executable, "-m", "agent", "sdcard-kit", "--out", str(boot),
                              "--bundle", str(aarch64_bundle), "--config", str(config),
                              "--hostname", "pole-0042", *args],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
        assert kit.returncode == 0, kit.stdout + kit.stderr
        assert "systemd.run=/boot/firmware/citynode/firstboot.sh" in \
            (boot / "cmdline.txt").read_text()
        t0 = time.monotonic()
        proc = in_chroot(root, "/boot/firmware/citynode/firstboot.sh", net=False)
        print(f"# first boot in the arm64 chroot: {time.monotonic() - t0:.0f} s", file=sys.stderr)
        result = (boot / "citynode/FIRSTBOOT-RESULT.txt").read_text()
        log = (boot / "citynode/firstboot.log").read_text()
        print(result, file=sys.stderr)
        assert result.splitlines()[0] == "OK", result + log + proc.stdout
        assert "citynode 0." in result and "pole-0042" in result

        ids = {r.split(":")[0]: int(r.split(":")[2])
               for r in (root / "etc/passwd").read_text().splitlines()}
        gids = {r.split(":")[0]: int(r.split(":")[2])
                for r in (root / "etc/group").read_text().splitlines()}
        want = {"mqtt.toml": (0o600, ids["citynode"]), "node.key": (0o600, ids["citynode"]),
                "command.key": (0o600, ids["citynode"]), "node.crt": (0o644, 0),
                "ca.crt": (0o644, 0)}
        for name, (mode, uid) in want.items():
            st = (root / "etc/citynode" / name).stat()
            assert (st.st_mode & 0o777, st.st_uid) == (mode, uid), name
        st = (root / "etc/citynode/citynode.toml").stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, 0, gids["citynode"])
        assert (root / "etc/citynode/citynode.toml").read_text() == NODE_TOML
        assert (root / "etc/citynode/mqtt.toml").read_bytes() == secrets["credentials"].read_bytes()
        # Nothing secret left on the FAT partition, and the hook is gone.
        assert not (boot / "citynode/secrets").exists()
        assert not (boot / "citynode/citynode.toml").exists()
        cmdline = (boot / "cmdline.txt").read_text()
        assert "systemd.run" not in cmdline and "kernel-command-line" not in cmdline
        assert "console=serial0" not in cmdline and "root=PARTUUID=4e639091-02" in cmdline
        assert "enable_uart=1" in (boot / "config.txt").read_text()
        assert (root / "etc/hostname").read_text().strip() == "pole-0042"
        assert "s3cret" not in log and "s3cret" not in result


# -- (c) the node runs ---------------------------------------------------------------------
@pytest.mark.timeout(1500)
def test_node_runs_on_arm64_and_its_messages_arrive(installed: tuple[Path, list[str]],
                                                    tmp_path: Path):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from agent.tools.simulate import Mosquitto, find_mosquitto
    from agent.wire import formats
    from agent.wire.model import to_readable

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed on the host (make deps-system)")
    root, _ = installed
    broker = Mosquitto(tmp_path)
    broker.start()
    got: list[tuple[str, dict]] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="arm64-test-sub",
                      protocol=MQTTProtocolVersion.MQTTv5)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("citynode/#", qos=1)
    sub.on_message = lambda c, u, m: got.append(
        (m.topic, to_readable(formats.decode(m.payload))))
    try:
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        # The node as the service user, on emulated sensors, against the host's broker.
        proc = in_chroot(root, "setpriv", "--reuid=citynode", "--regid=citynode",
                         "--init-groups", "env", "HOME=/var/lib/citynode",
                         "/opt/citynode/venv/bin/citynode", "simulate", "--duration", "30",
                         "--interval", "5", "--broker", f"{broker.host}:{broker.port}",
                         "--workdir", "/tmp/sim", timeout=180, check=False)
        time.sleep(1)
    finally:
        sub.loop_stop()
        sub.disconnect()
        broker.stop()
    telemetry = [doc for topic, doc in got if topic == "citynode/sim-node-1/telemetry"]
    print(f"# arm64 node: {len(telemetry)} telemetry of {len(got)} messages", file=sys.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert telemetry, f"no telemetry; got {[t for t, _ in got]}\n{proc.stderr[-3000:]}"
    names = {r.get("n") for doc in telemetry for r in doc.get("records", [])}
    assert "pm25" in names, names


if __name__ == "__main__":
    problem = why_not_runnable()
    if problem:
        sys.exit(problem)
    print(build_chroot())
