"""``citynode sdcard-kit``: prepare a freshly flashed SD card so the node installs itself.

An installer flashes 64-bit Raspberry Pi OS Lite, mounts the card's boot (FAT) partition
and runs::

    citynode sdcard-kit --out /media/$USER/bootfs --bundle citynode-bundle-0.1.0-aarch64.tar.gz \\
        --config pole-0042.toml --credentials mqtt.toml

Everything is checked at the desk, before anything is written: the configuration (with
agent.core.config, exactly as the node will), the bundle's MANIFEST and SHA256SUMS, the secret
files against the paths the configuration names. The kit then goes to ``citynode/`` on the
boot partition, and ``cmdline.txt`` gets Raspberry Pi OS's own first-boot hook (the one
Raspberry Pi Imager uses)::

    systemd.run=/boot/firmware/citynode/firstboot.sh systemd.run_success_action=reboot
    systemd.unit=kernel-command-line.target

systemd runs every ``systemd.run=`` entry in order, so this composes with an Imager
``firstrun.sh`` already on the card (ours is appended after it). The first boot needs no
network: it installs from the bundle with install.sh, moves the secrets into /etc/citynode
with the right owner and modes and deletes them from the FAT partition, enables citynode,
removes its hook and writes ``citynode/FIRSTBOOT-RESULT.txt`` (and the journal, tag
``citynode-firstboot``). docs/install.md has the whole workflow.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import os
import re
import shutil
import ssl
import stat
import sys
import tarfile
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from drivers.files import NotRegularFile, kind_of, resolve_target, write_atomic

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_CANTCREAT = 73
EX_CONFIG = 78

KIT_DIR = "citynode"
BOOT_MOUNT = "/boot/firmware"  # where Raspberry Pi OS bookworm mounts the FAT partition
HOOK_RUN = f"systemd.run={BOOT_MOUNT}/{KIT_DIR}/firstboot.sh"
HOOK_EXTRA = ("systemd.run_success_action=reboot", "systemd.unit=kernel-command-line.target")
SECRET_DIR = PurePosixPath("/etc/citynode")
MAX_CONFIG_BYTES = 1 << 20  # a configuration is a few KB
MAX_SECRET_BYTES = 1 << 20  # a PEM CA bundle is about 220 KB
MAX_CMDLINE_BYTES = 64 * 1024  # the firmware reads a few KB
_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


class BundleError(Exception):
    """The bundle is unusable: corrupt, tampered with, or not a citynode bundle."""


class KitError(Exception):
    """Something an installer must fix before the kit can be written."""

    def __init__(self, message: str, code: int = EX_USAGE) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class BundleInfo:
    path: Path
    top: str
    version: str
    arch: str
    python: str
    extras: str
    manifest: dict[str, str]
    files: list[str] = field(default_factory=list)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def verify_bundle(path: str | os.PathLike[str]) -> BundleInfo:
    """Check a bundle the way install.sh will, so a bad one is refused at the desk.

    Every file must be listed in SHA256SUMS with the right digest (an unlisted wheel would
    be picked up by pip's --find-links), paths must stay inside one top directory, and
    ``path.sha256`` beside the bundle, when present, must match the whole archive.
    """
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"{p} not found")
    side = Path(f"{p}.sha256")
    if side.is_file():
        want = side.read_text().split()[:1]
        if not want or want[0] != _sha256_file(p):
            raise BundleError(f"{p.name} does not match {side.name} (corrupt or replaced)")
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(p, "r:gz") as tar:
            for m in tar:
                parts = PurePosixPath(m.name).parts
                if m.name.startswith("/") or ".." in parts:
                    raise BundleError(f"{p.name} has an unsafe path {m.name!r}")
                if m.issym() or m.islnk() or m.isdev():
                    raise BundleError(f"{p.name} has a link or device {m.name!r}")
                if m.isfile():
                    fh = tar.extractfile(m)
                    contents[m.name] = fh.read() if fh else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError(f"{p.name} is not a readable .tar.gz: {exc}") from None
    tops = {PurePosixPath(n).parts[0] for n in contents}
    if len(tops) != 1:
        raise BundleError(f"{p.name} must hold exactly one top-level directory")
    top = tops.pop()
    rel = {n[len(top) + 1:]: data for n, data in contents.items()}
    if "SHA256SUMS" not in rel or "MANIFEST" not in rel:
        raise BundleError(f"{p.name} has no SHA256SUMS or MANIFEST: not a citynode bundle")
    listed: dict[str, str] = {}
    for line in rel["SHA256SUMS"].decode("utf-8", "replace").splitlines():
        m = re.fullmatch(r"([0-9a-f]{64}) [ *](.+)", line)
        if not m:
            raise BundleError(f"{p.name}: malformed SHA256SUMS line {line[:80]!r}")
        listed[m.group(2)] = m.group(1)
    for name, data in rel.items():
        if name == "SHA256SUMS":
            continue
        if name not in listed:
            raise BundleError(f"{p.name}: {name} is not in SHA256SUMS (tampered?)")
        if _sha256(data) != listed[name]:
            raise BundleError(f"{p.name}: {name} does not match its SHA256SUMS entry "
                              "(corrupt or tampered)")
    missing = sorted(set(listed) - set(rel))
    if missing:
        raise BundleError(f"{p.name}: listed in SHA256SUMS but missing: {missing[:3]}")
    manifest = dict(line.split("=", 1) for line in
                    rel["MANIFEST"].decode("utf-8", "replace").splitlines() if "=" in line)
    if manifest.get("name") != "citynode":
        raise BundleError(f"{p.name} is not a citynode bundle (MANIFEST name)")
    for need in ("install.sh", "firstboot/firstboot.sh"):
        if need not in rel:
            raise BundleError(f"{p.name} has no {need}")
    return BundleInfo(path=p, top=top, version=manifest.get("version", "?"),
                      arch=manifest.get("arch", "?"), python=manifest.get("python", "?"),
                      extras=manifest.get("extras", ""), manifest=manifest,
                      files=sorted(rel))


# -- secrets -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SecretKind:
    option: str  # command-line option (without --)
    key: str  # configuration key that names the file on the node
    private: bool  # 0600 owned by the service user, else 0644 root


SECRETS = (
    SecretKind("credentials", "mqtt.credentials_file", True),
    SecretKind("key", "mqtt.key_file", True),
    SecretKind("cert", "mqtt.cert_file", False),
    SecretKind("ca", "mqtt.ca_file", False),
    SecretKind("hmac-key", "commands.hmac_key_file", True),
)


def _config_value(cfg: object, dotted: str) -> str:
    obj = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return str(obj or "")


def _read_limited(path: str | Path, what: str, limit: int) -> bytes:
    """All of an input (``-``: standard input), read once, at most ``limit`` bytes: /dev/zero
    or a huge file must not fill the memory, a FIFO must not hang (agent.core.inputs)."""
    from agent.core import inputs

    try:
        return inputs.read_input(path, limit=limit)
    except inputs.InputError as exc:
        raise KitError(f"{what} {exc}", exc.code) from None


def _check_secret_content(kind: SecretKind, src: Path, data: bytes) -> None:
    """Catch the wrong file passed to the wrong option, without ever printing its content."""
    if not data.strip():
        raise KitError(f"--{kind.option} {src} is empty", EX_DATAERR)
    if kind.option == "credentials":
        try:
            doc = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise KitError(f"--credentials {src} is not valid TOML ({exc})", EX_DATAERR) from None
        if set(doc) != {"username", "password"} or not all(
                isinstance(v, str) and v for v in doc.values()):
            raise KitError(f'--credentials {src} must hold exactly username = "..." and '
                           'password = "..."', EX_DATAERR)
    elif kind.option == "key" and b"PRIVATE KEY-----" not in data:
        raise KitError(f"--key {src} is not a PEM private key", EX_DATAERR)
    elif kind.option in ("cert", "ca") and b"-----BEGIN CERTIFICATE-----" not in data:
        raise KitError(f"--{kind.option} {src} is not a PEM certificate", EX_DATAERR)


def plan_secrets(cfg: object, given: dict[str, str | None]
                 ) -> list[tuple[SecretKind, Path, str, bytes]]:
    """Match each secret file to the path the configuration expects it at on the node; each
    is read once, here (what was checked is what goes on the card)."""
    plan: list[tuple[SecretKind, Path, str, bytes]] = []
    for kind in SECRETS:
        dest = _config_value(cfg, kind.key)
        src = given.get(kind.option)
        inside = dest and PurePosixPath(dest).parent == SECRET_DIR and ".." not in dest
        if src is None:
            if inside:
                raise KitError(f"the configuration sets {kind.key} = \"{dest}\" but no "
                               f"--{kind.option} FILE was given: the node would refuse to "
                               "start", EX_CONFIG)
            continue  # unused, or a file the image already has (e.g. the system CAs)
        if not dest:
            raise KitError(f"--{kind.option} given but the configuration does not set "
                           f"{kind.key}: add {kind.key} = \"{SECRET_DIR}/...\"", EX_CONFIG)
        if not inside:
            raise KitError(f"{kind.key} = \"{dest}\": the SD-card kit installs secrets into "
                           f"{SECRET_DIR}/ only", EX_CONFIG)
        path = Path(src)
        data = _read_limited(src, f"--{kind.option}", MAX_SECRET_BYTES)
        _check_secret_content(kind, path, data)
        plan.append((kind, path, dest, data))
    dests = [d for _, _, d, _ in plan]
    if len(set(dests)) != len(dests):
        raise KitError("two secret files would go to the same path on the node", EX_CONFIG)
    by_opt = {k.option: data for k, _, _, data in plan}
    if ("cert" in by_opt) != ("key" in by_opt):
        raise KitError("--cert and --key go together (mutual TLS)", EX_USAGE)
    if "cert" in by_opt:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:  # the bytes read above (a pipe cannot be read twice), in a private folder
            with tempfile.TemporaryDirectory() as tmp:
                cert, key = Path(tmp, "cert.pem"), Path(tmp, "key.pem")
                cert.write_bytes(by_opt["cert"])
                key.write_bytes(by_opt["key"])
                ctx.load_cert_chain(cert, key, password=lambda: b"")
        except (ssl.SSLError, OSError):
            raise KitError("--cert and --key do not belong together (or the key has a "
                           "passphrase, which a node cannot type)", EX_DATAERR) from None
    return plan


def plan_fleet_keys(paths: list[str], taken: set[str]) -> list[tuple[str, bytes]]:
    """Each ``--fleet-key`` as (``NAME.pub``, its PEM), checked to be an Ed25519 public key:
    first boot puts it in /etc/citynode/keys/ (docs/updates.md)."""
    from agent.tools.provision import FLEET_KEY_NAME
    from agent.update.bundle import BundleError, load_public_key

    out: list[tuple[str, bytes]] = []
    for src in paths:
        stem = PurePosixPath(src).name.removesuffix(".pub")
        if not FLEET_KEY_NAME.fullmatch(stem):
            raise KitError(f"--fleet-key {src}: name the file NAME.pub with letters, digits, "
                           "'.', '_' or '-'")
        name = f"{stem}.pub"
        if name in taken or name in {n for n, _ in out}:
            raise KitError(f"--fleet-key {src}: a second file named {name}; rename one")
        data = _read_limited(src, "--fleet-key", 8192)
        try:
            load_public_key(data, f"--fleet-key {src}")
        except BundleError as exc:
            raise KitError(f"{exc} (citynode keys generate writes NAME.pub)",
                           EX_DATAERR) from None
        out.append((name, data))
    return out


# -- cmdline.txt -------------------------------------------------------------------------------
def add_hook(cmdline: str) -> tuple[str, bool]:
    """Append our first-boot hook to the single line of cmdline.txt; (new text, changed)."""
    lines = cmdline.splitlines() or [""]
    tokens = lines[0].split()
    if HOOK_RUN in tokens:
        return cmdline, False
    tokens.append(HOOK_RUN)
    tokens += [t for t in HOOK_EXTRA if t not in tokens]
    return " ".join([" ".join(tokens), *lines[1:]]).rstrip() + "\n", True


def remove_hook(cmdline: str) -> str:
    """What firstboot.sh does, in Python for tests and for `--undo`."""
    lines = cmdline.splitlines() or [""]
    tokens = [t for t in lines[0].split() if t != HOOK_RUN]
    if not any(t.startswith("systemd.run=") for t in tokens):
        tokens = [t for t in tokens if t not in HOOK_EXTRA]
    return " ".join([" ".join(tokens), *lines[1:]]).rstrip() + "\n"


# -- the kit -----------------------------------------------------------------------------------
def _write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """A new file in the staging folder, which this run created empty."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as fh:
        fh.write(data)
    with contextlib.suppress(OSError):  # a FAT boot partition has no modes
        path.chmod(mode)


def _own_dir(path: Path, what: str) -> bool:
    """Whether ``path`` is a real directory (True), missing (False); anything else there
    (a symlink, a file, a FIFO) is refused: the kit replaces only its own folder."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise KitError(f"{path}: {exc.strerror}", EX_CANTCREAT) from None
    if not stat.S_ISDIR(st.st_mode):
        raise KitError(f"{path} ({what}) is {kind_of(st.st_mode)}, not a directory: move it "
                       "away; nothing was written", EX_CANTCREAT)
    return True


def _cmdline_target(out: Path) -> Path | None:
    """The cmdline.txt to hook (through a symlink, its target), None when there is none."""
    cmdline = out / "cmdline.txt"
    if not os.path.lexists(cmdline):
        return None
    try:
        return resolve_target(cmdline)
    except NotRegularFile as exc:
        raise KitError(f"{cmdline}: {exc.strerror}; nothing was written", EX_CANTCREAT) from None
    except OSError as exc:
        raise KitError(f"{cmdline}: {exc.strerror}; nothing was written", EX_CANTCREAT) from None


def write_kit(args: argparse.Namespace) -> int:
    from agent.core.config import ConfigError, parse

    out = Path(args.out)
    if not out.is_dir():
        raise KitError(f"--out {out} is not a directory (mount the card's boot partition, "
                       "e.g. /media/$USER/bootfs)", EX_NOINPUT)
    config_bytes = _read_limited(args.config, "--config", MAX_CONFIG_BYTES)
    try:
        cfg = parse(config_bytes.decode("utf-8"), args.config, check_devices=False)
    except UnicodeDecodeError as exc:
        raise KitError(f"configuration refused, nothing written: {args.config} is not UTF-8 "
                       f"text (byte {exc.start})", EX_CONFIG) from None
    except ConfigError as exc:
        raise KitError(f"configuration refused, nothing written: {exc}", EX_CONFIG) from None
    if args.hostname and not _HOSTNAME.match(args.hostname):
        raise KitError(f"--hostname {args.hostname!r}: letters, digits and '-', 1-63 "
                       "characters, not starting or ending with '-'")
    plan = plan_secrets(cfg, {k.option: getattr(args, k.option.replace("-", "_"))
                              for k in SECRETS})
    fleet = plan_fleet_keys(getattr(args, "fleet_key", None) or [],
                            {PurePosixPath(d).name for _, _, d, _ in plan})
    try:
        info = verify_bundle(args.bundle)
    except BundleError as exc:
        raise KitError(f"bundle refused, nothing written: {exc}", EX_DATAERR) from None
    if info.arch != "aarch64" and not args.allow_arch:
        raise KitError(f"the bundle is for {info.arch}; a Raspberry Pi needs an aarch64 "
                       "bundle (make bundle)", EX_DATAERR)

    cmdline = _cmdline_target(out)
    kit = out / KIT_DIR
    if _own_dir(kit, "the kit") and not args.force:
        raise KitError(f"{kit} already exists (a kit from an earlier run?): --force "
                       "replaces it", EX_CANTCREAT)
    cmdline_text = (_read_limited(cmdline, "cmdline.txt", MAX_CMDLINE_BYTES)
                    if cmdline is not None else b"")
    need = info.path.stat().st_size + (1 << 20)
    if shutil.disk_usage(out).free < need:
        raise KitError(f"{out} has less than {need >> 20} MiB free", EX_CANTCREAT)

    staging = out / f".{KIT_DIR}.new"
    try:
        if _own_dir(staging, "a kit left half written"):
            shutil.rmtree(staging)
        staging.mkdir()
        with tarfile.open(info.path, "r:gz") as tar:
            def member(name: str) -> bytes:
                fh = tar.extractfile(f"{info.top}/{name}")
                return fh.read() if fh else b""

            _write(staging / "install.sh", member("install.sh"), 0o755)
            _write(staging / "firstboot.sh", member("firstboot/firstboot.sh"), 0o755)
        shutil.copyfile(info.path, staging / info.path.name)
        _write(staging / "citynode.toml", config_bytes, 0o600)
        manifest = io.StringIO()
        for kind, _, dest, data in plan:
            name = PurePosixPath(dest).name
            _write(staging / "secrets" / name, data, 0o600)
            owner = "citynode" if kind.private else "root"
            mode = "0600" if kind.private else "0644"
            manifest.write(f"{mode} {owner} {_sha256(data)} {name} {dest}\n")
        for name, data in fleet:  # public: 0644 root, moved like the secrets
            _write(staging / "secrets" / name, data, 0o644)
            manifest.write(f"0644 root {_sha256(data)} {name} {SECRET_DIR}/keys/{name}\n")
        if plan or fleet:
            _write(staging / "secrets" / "MANIFEST", manifest.getvalue().encode(), 0o600)
        created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        env = {"BUNDLE": info.path.name, "VERSION": info.version, "ARCH": info.arch,
               "NODE_ID": cfg.node.id, "HOSTNAME": args.hostname or "", "CREATED": created}
        _write(staging / "kit.env", "".join(f"{k}={v}\n" for k, v in env.items()).encode())
        hook_line = " ".join((HOOK_RUN, *HOOK_EXTRA))
        _write(staging / "README.txt", (
            "citynode SD-card kit (citynode sdcard-kit). At the first boot, firstboot.sh\n"
            "installs citynode from the bundle, moves citynode.toml and secrets/ into\n"
            "/etc/citynode (and deletes them here), enables the service, removes its hook\n"
            "from cmdline.txt and writes FIRSTBOOT-RESULT.txt and firstboot.log here.\n\n"
            f"The hook appended to cmdline.txt (same line):\n  {hook_line}\n").encode())
        if kit.exists():
            shutil.rmtree(kit)
        staging.rename(kit)
    except OSError as exc:  # a read-only or full card, a card pulled out
        shutil.rmtree(staging, ignore_errors=True)
        raise KitError(f"cannot write the kit to {out}: {exc.strerror or exc}",
                       EX_CANTCREAT) from None

    print(f"kit for node {cfg.node.id}: citynode {info.version} ({info.arch}) -> {kit}")
    for kind, _, dest, _ in plan:
        perms = "0600 citynode" if kind.private else "0644 root"
        print(f"  secret {kind.option:<11} -> {dest} ({perms})")
    for name, _ in fleet:
        print(f"  fleet key {name:<8} -> {SECRET_DIR}/keys/{name} (0644 root)")
    if cmdline is not None:
        text = cmdline_text.decode("utf-8", "surrogateescape")
        new, changed = add_hook(text)
        if changed:
            try:
                (kit / "cmdline.txt.orig").write_bytes(cmdline_text)
                # Atomic: a card pulled out mid-write must still boot.
                write_atomic(cmdline, new.encode("utf-8", "surrogateescape"))
            except OSError as exc:
                raise KitError(f"the kit is in {kit}, but {cmdline} could not be changed "
                               f"({exc.strerror or exc}): append to its line: {HOOK_RUN} "
                               f"{' '.join(HOOK_EXTRA)}", EX_CANTCREAT) from None
            others = sum(t.startswith("systemd.run=") for t in new.split()) - 1
            after = " after the existing firstrun hook" if others else ""
            shown = (f"{cmdline} (through the symlink cmdline.txt)"
                     if os.path.islink(out / "cmdline.txt") else "cmdline.txt")
            print(f"  {shown}: first-boot hook added{after} "
                  f"(original in {KIT_DIR}/cmdline.txt.orig)")
        else:
            print("  cmdline.txt: first-boot hook already present")
        print("Next: eject the card, boot the Pi (no network needed); it reboots once when "
              f"done. Then read {KIT_DIR}/FIRSTBOOT-RESULT.txt on the boot partition, or "
              "journalctl -t citynode-firstboot on the node.")
    else:
        print(f"  {out} has no cmdline.txt, so it is not a boot partition: copy {KIT_DIR}/ "
              "to the card's boot partition and append to the line in its cmdline.txt:\n"
              f"  {hook_line}")
    return 0


def cmd_sdcard_kit(args: argparse.Namespace) -> int:
    try:
        return write_kit(args)
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code


def register(sub: argparse._SubParsersAction, default_cfg: str) -> None:  # type: ignore[type-arg]
    """Add ``citynode sdcard-kit`` to the command line (called by agent.tools.cli)."""
    k = sub.add_parser(
        "sdcard-kit",
        help="put an offline install kit on a Raspberry Pi OS SD card's boot partition",
        description="Write citynode/ (bundle, configuration, secrets, first-boot script) onto "
                    "the boot partition of a freshly flashed 64-bit Raspberry Pi OS card and "
                    "hook it into cmdline.txt; the node installs itself at first boot, "
                    "without network. See docs/install.md.")
    k.add_argument("--out", required=True, metavar="DIR",
                   help="the mounted boot partition (e.g. /media/$USER/bootfs), or an empty "
                        "directory to copy later")
    k.add_argument("--bundle", required=True, metavar="FILE",
                   help="offline bundle from make bundle (citynode-bundle-*-aarch64.tar.gz)")
    k.add_argument("--config", required=True, metavar="FILE",
                   help="this node's citynode.toml (validated before anything is written)")
    k.add_argument("--credentials", metavar="FILE", help="MQTT username/password TOML "
                   "(goes to mqtt.credentials_file, 0600)")
    k.add_argument("--cert", metavar="FILE", help="client certificate (mqtt.cert_file)")
    k.add_argument("--key", metavar="FILE", help="client private key (mqtt.key_file, 0600)")
    k.add_argument("--ca", metavar="FILE", help="broker CA bundle (mqtt.ca_file)")
    k.add_argument("--hmac-key", metavar="FILE",
                   help="command signing key (commands.hmac_key_file, 0600)")
    k.add_argument("--fleet-key", action="append", metavar="FILE",
                   help="a fleet public key (NAME.pub) to pin in /etc/citynode/keys/: the node "
                   "installs updates signed with it (docs/updates.md); repeatable")
    k.add_argument("--hostname", default="", help="set the node's host name at first boot")
    k.add_argument("--force", action="store_true", help="replace a kit already on the card")
    k.add_argument("--allow-arch", action="store_true",
                   help="accept a bundle that is not aarch64 (tests, x86 nodes)")
    k.set_defaults(func=cmd_sdcard_kit)
