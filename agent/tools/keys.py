"""``citynode keys``: the fleet's Ed25519 keys that sign update bundles (docs/updates.md).

``citynode keys generate --out DIR [--name NAME]`` makes a key pair on the (offline)
build machine: ``NAME.key``, the private key as unencrypted PEM (PKCS#8), mode 0600, and
``NAME.pub``, the public key as PEM (SubjectPublicKeyInfo, what ``openssl pkey -pubout``
writes); an existing file of either name is never overwritten (a key that signed a
fleet's bundles must not be lost to a typo). ``make bundle SIGNING_KEY=DIR/NAME.key``
signs with the private key; ``citynode provision --fleet-key DIR/NAME.pub`` pins the
public one on a node. ``citynode keys show FILE`` prints the fingerprint of a public or
private key file (a public key may also be one line of base64 of its 32 raw bytes): the
sha256 of the raw public key, the same that MANIFEST.sig names, so an operator can tell
which key signed a bundle and which keys a node trusts.

Exit codes: 0 done; 64 usage; 65 FILE is not an Ed25519 key; 66 FILE is missing or
unreadable; 73 a key of that name exists in DIR, or DIR cannot be made or written.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import stat
import sys
from pathlib import Path

EX_USAGE, EX_DATAERR, EX_CANTCREAT = 64, 65, 73
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_KEY_BYTES = 8192


class KeyFail(Exception):
    """One line and its exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def _out_dir(out: Path) -> Path:
    """``out``, made (0700) when missing; anything but a folder there is refused."""
    try:
        st = os.stat(out)
    except FileNotFoundError:
        if os.path.lexists(out):
            raise KeyFail(EX_CANTCREAT, f"--out {out}: a symlink to nothing; nothing was "
                          "written") from None
        try:
            out.mkdir(mode=0o700, parents=True)
        except OSError as exc:
            raise KeyFail(EX_CANTCREAT, f"--out {out}: cannot create: "
                          f"{exc.strerror or exc}") from None
        return out
    except OSError as exc:  # a symlink loop, a component that is a file
        raise KeyFail(EX_CANTCREAT, f"--out {out}: {exc.strerror or exc}; nothing was "
                      "written") from None
    if not stat.S_ISDIR(st.st_mode):
        raise KeyFail(EX_CANTCREAT, f"--out {out}: not a directory; nothing was written")
    return out


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """A new file (never over an existing one, never through a symlink), synced."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def generate(out: Path, name: str) -> tuple[Path, Path, str]:
    """Write NAME.key (0600) and NAME.pub into ``out``: (private, public, fingerprint)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.update.bundle import fingerprint

    if not NAME.fullmatch(name) or name.endswith((".key", ".pub")):
        raise KeyFail(EX_USAGE, f"--name {name!r}: 1-64 letters, digits, '.', '_' or '-', "
                      "starting with a letter or digit, without .key or .pub (added here)")
    d = _out_dir(out)
    private, public = d / f"{name}.key", d / f"{name}.pub"
    for p in (private, public):
        if os.path.lexists(p):
            raise KeyFail(EX_CANTCREAT, f"{p} exists: refusing to overwrite a key (a lost "
                          "signing key cannot be recovered); choose another --name or DIR")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        _write_new(private, pem, 0o600)
    except OSError as exc:
        raise KeyFail(EX_CANTCREAT, f"{private}: cannot write: {exc.strerror or exc}") from None
    try:
        _write_new(public, pub, 0o644)
    except OSError as exc:
        with contextlib.suppress(OSError):  # no private key without its public half
            private.unlink()
        raise KeyFail(EX_CANTCREAT, f"{public}: cannot write: {exc.strerror or exc}; nothing "
                      "was kept") from None
    return private, public, fingerprint(key)


def show(path: str) -> str:
    """One line: ``ed25519 FINGERPRINT public|private key PATH`` (and a warning line for a
    private key others may read)."""
    from agent.core.inputs import InputError, read_input
    from agent.update.bundle import BundleError, fingerprint, load_private_key, load_public_key

    try:
        data = read_input(path, limit=MAX_KEY_BYTES)
    except InputError as exc:
        raise KeyFail(exc.code, str(exc)) from None
    shown = "<stdin>" if path == "-" else path
    try:
        if b"PRIVATE KEY-----" in data:
            key = load_private_key(data, shown)
            line = f"ed25519 {fingerprint(key)} private key {shown}"
            with contextlib.suppress(OSError):
                mode = os.stat(path).st_mode if path != "-" else 0
                if stat.S_ISREG(mode) and mode & 0o077:
                    line += (f"\nwarning: {shown} is readable by others (mode "
                             f"{mode & 0o777:04o}): chmod 600 it")
            return line
        return f"ed25519 {fingerprint(load_public_key(data, shown))} public key {shown}"
    except BundleError as exc:
        raise KeyFail(EX_DATAERR, str(exc)) from None


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        private, public, fp = generate(Path(args.out), args.name)
    except KeyFail as exc:
        print(f"citynode keys generate: error: {exc}", file=sys.stderr)
        return exc.code
    print(f"private key {private} (mode 0600): signs bundles; keep it offline and backed up\n"
          f"public key  {public}: pin it on nodes (citynode provision --fleet-key {public})\n"
          f"fingerprint ed25519 {fp}\n"
          f"Next: make bundle SIGNING_KEY={private}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    try:
        print(show(args.file))
    except KeyFail as exc:
        print(f"citynode keys show: error: {exc}", file=sys.stderr)
        return exc.code
    return 0


def register(sub: argparse._SubParsersAction, default_cfg: str) -> None:  # type: ignore[type-arg]
    """Add ``citynode keys`` to the command line (called by agent.tools.cli)."""
    k = sub.add_parser("keys", help="the fleet's Ed25519 keys that sign update bundles "
                       "(docs/updates.md)")
    ksub = k.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    g = ksub.add_parser("generate", help="make a signing key pair: NAME.key (private, 0600) "
                        "and NAME.pub (public, PEM); never overwrites")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="where to write them (made 0700 if missing)")
    g.add_argument("--name", default="fleet",
                   help="file names NAME.key and NAME.pub (default fleet)")
    g.set_defaults(func=cmd_generate)
    s = ksub.add_parser("show", help="the fingerprint of a public or private key file, as "
                        "MANIFEST.sig names it")
    s.add_argument("file", metavar="FILE", help="a .pub or .key file ('-': standard input)")
    s.set_defaults(func=cmd_show)
