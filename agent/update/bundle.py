"""Signed bundles: read, verify and extract a citynode bundle without trusting any of it.

A bundle is a ``.tar.gz`` holding one top directory (``citynode-bundle-<version>-<arch>/``
from ``make bundle``, ``citynode-models-<version>-any/`` from ``--kind models``) with:

- ``MANIFEST.json``: what the bundle is (``version``, ``arch``, ``min_version``, ``kind``,
  ``downgrade``, ``created``, ``migrations``) and every other file in it with its sha256
  and size (``files``), paths relative to the top directory;
- ``MANIFEST.sig``: one line ``ed25519 <key fingerprint> <base64 signature>`` over the
  exact bytes of ``MANIFEST.json`` (the fingerprint is the sha256 of the raw 32-byte
  public key, as ``citynode keys show`` prints it);
- ``SHA256SUMS``: the sha256sum listing of every other file, which install.sh and
  ``citynode sdcard-kit`` check (offline installs need no key); its exact text follows from
  the signed manifest, so it is required and checked too;
- the files the manifest lists, and nothing else.

Nothing is trusted before it is checked: the tarball is read as a stream with bounds on
member count, sizes, names and header lengths (:class:`Limits`), links, devices, absolute
paths and ``..`` are refused, every file is hashed while it streams past, and the
signature is checked with the fleet keys pinned in ``/etc/citynode/keys/*.pub`` before
the manifest's content is believed. :func:`extract` reads the bundle again and checks each
file while writing it: a bundle swapped between :func:`verify` and :func:`extract` cannot
slip anything in. Every refusal is a :class:`BundleError` with a one-line reason.

Versions compare as PEP 440 (packaging) does, for the subset ``N(.N)*[{a|b|rc}N][.postN]
[.devN][+local]``: ``1.0.dev1 < 1.0a1 < 1.0rc1 < 1.0 == 1.0.0 < 1.0.post1 < 1.0+x.1 <
1.1``. Sans I/O apart from reading the files it is given; ``cryptography`` (Ed25519) is
imported only when a key or signature is used, never on the daemon's start-up path.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "KEYS_DIR",
    "LIMITS",
    "UPDATABLE_SINCE",
    "BundleError",
    "Limits",
    "Manifest",
    "compare_versions",
    "extract",
    "fingerprint",
    "load_private_key",
    "load_public_key",
    "load_public_keys",
    "manifest_bytes",
    "parse_version",
    "read_manifest",
    "sign",
    "sums_text",
    "update_keys_problem",
    "verify",
    "verify_contents",
]

#: Where a node keeps the fleet's public keys (written by ``citynode provision --fleet-key``).
KEYS_DIR = "/etc/citynode/keys"
#: The oldest citynode that can install a bundle over the air (the first with this module):
#: ``make bundle``'s default ``min_version``.
UPDATABLE_SINCE = "0.1.0"
MANIFEST_NAME = "MANIFEST.json"
SIG_NAME = "MANIFEST.sig"
SUMS_NAME = "SHA256SUMS"
#: Members that describe the bundle rather than belong to it (never extracted).
META = (MANIFEST_NAME, SIG_NAME, SUMS_NAME)
FORMAT = 1
ARCHES = ("aarch64", "x86_64", "any")
KINDS = ("release", "models")
CHUNK = 1 << 16
MAX_KEY_FILE_BYTES = 8192
MAX_KEY_FILES = 64
_SIG_LINE = re.compile(rb"ed25519 ([0-9a-f]{64}) ([A-Za-z0-9+/]{86}==)\n")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PATH_PART = re.compile(r"[A-Za-z0-9_+@=,-][A-Za-z0-9._+@=,-]*")
_VERSION = re.compile(r"(\d{1,9}(?:\.\d{1,9}){0,7})(?:(a|b|rc)(\d{1,9}))?(?:\.post(\d{1,9}))?"
                      r"(?:\.dev(\d{1,9}))?(?:\+([a-z0-9]{1,20}(?:\.[a-z0-9]{1,20}){0,7}))?")
_CREATED = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
             tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


class BundleError(Exception):
    """A bundle that must not be installed; ``str()`` is one line saying why."""

    def __init__(self, reason: str) -> None:
        super().__init__(" ".join(str(reason).split())[:400])


@dataclass(frozen=True)
class Limits:
    """Bounds on what reading a bundle may cost: memory stays near ``header_bytes`` +
    ``manifest_bytes`` whatever the bundle holds, time near ``total_bytes`` of gunzip."""

    members: int = 4096
    file_bytes: int = 512 << 20  # the largest wheel (numpy, LiteRT) is about 20 MiB
    total_bytes: int = 1 << 30  # uncompressed: a gzip bomb stops here
    manifest_bytes: int = 1 << 20
    sig_bytes: int = 1024
    header_bytes: int = 64 << 10  # one pax or GNU long-name header
    headers_in_a_row: int = 8
    name_chars: int = 255


LIMITS = Limits()


@dataclass
class Manifest:
    """A bundle's MANIFEST.json. ``files``: path -> {"sha256", "size", "executable"}.
    ``signed_by`` is the fingerprint of the key that verified it ("" when read unverified,
    by :func:`read_manifest`); ``raw`` the exact signed bytes (a release keeps them as its
    MANIFEST.json); ``top`` the bundle's top directory; ``extra`` other informative keys
    (python, extras, source)."""

    version: str
    arch: str
    min_version: str
    kind: str
    downgrade: bool
    created: str
    files: dict[str, dict[str, Any]]
    migrations: list[str] = field(default_factory=list)
    name: str = "citynode"
    top: str = ""
    raw: bytes = b""
    signed_by: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# -- versions -------------------------------------------------------------------------------
def parse_version(text: str) -> tuple[Any, ...]:
    """A sort key with PEP 440's order for the subset in the module docstring; ValueError
    for anything else."""
    m = _VERSION.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{str(text)[:40]!r} is not a version (N.N.N[aN|bN|rcN][.postN]"
                         "[.devN][+local])")
    rel_s, pre_l, pre_n, post, dev, local = m.groups()
    release = [int(x) for x in rel_s.split(".")]
    while len(release) > 1 and release[-1] == 0:
        release.pop()
    if pre_l is None and post is None and dev is not None:
        pre: tuple[Any, ...] = (0,)  # 1.0.dev1 comes before 1.0a1
    elif pre_l is None:
        pre = (2,)
    else:
        pre = (1, ("a", "b", "rc").index(pre_l), int(pre_n))
    post_k = (0,) if post is None else (1, int(post))
    dev_k = (2,) if dev is None else (1, int(dev))
    local_k: tuple[Any, ...] = (0,) if local is None else (1, tuple(
        (1, int(s), "") if s.isdigit() else (0, 0, s) for s in local.split(".")))
    return tuple(release), pre, post_k, dev_k, local_k


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as ``a`` is older than, the same as or newer than ``b``."""
    ka, kb = parse_version(a), parse_version(b)
    return (ka > kb) - (ka < kb)


# -- keys -----------------------------------------------------------------------------------
def _ed25519() -> Any:
    """The cryptography module, imported when first needed (about 6 MiB of RSS)."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - a broken installation
        raise BundleError("the cryptography package is missing (pip install "
                          "'cryptography>=42'): no signature can be checked") from None
    return ed25519


def _raw_public(key: Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """The sha256 (hex) of the raw 32-byte public key: what MANIFEST.sig names."""
    pub = key.public_key() if hasattr(key, "public_key") else key
    return hashlib.sha256(_raw_public(pub)).hexdigest()


def load_public_key(data: bytes, name: str = "key") -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (``-----BEGIN PUBLIC KEY-----``, as ``citynode keys
    generate`` writes and ``openssl pkey -pubout`` prints) or one line of base64 of the
    raw 32 bytes; BundleError naming ``name`` for anything else."""
    ed = _ed25519()
    text = data.strip()
    if text.startswith(b"-----BEGIN PUBLIC KEY-----"):
        from cryptography.exceptions import UnsupportedAlgorithm
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_public_key(text)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise BundleError(f"{name}: not a readable PEM public key ({exc})") from None
        if not isinstance(key, ed.Ed25519PublicKey):
            raise BundleError(f"{name}: a {type(key).__name__.removeprefix('_')}, not an "
                              "Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise BundleError(f"{name}: not an Ed25519 public key (PEM, or base64 of 32 bytes)")
    return ed.Ed25519PublicKey.from_public_bytes(raw)


def load_private_key(data: bytes, name: str = "key") -> Ed25519PrivateKey:
    """An unencrypted PEM (PKCS#8) Ed25519 private key, as ``citynode keys generate``
    writes it."""
    ed = _ed25519()
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise BundleError(f"{name}: the private key has a passphrase; make bundle needs it "
                          "unencrypted (keep it on the offline build machine)") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise BundleError(f"{name}: not a PEM private key ({exc})") from None
    if not isinstance(key, ed.Ed25519PrivateKey):
        raise BundleError(f"{name}: not an Ed25519 private key (citynode keys generate)")
    return key


def _read_small(path: Path, limit: int) -> bytes:
    """A regular file of at most ``limit`` bytes; opening never blocks on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise BundleError(f"{path}: not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise BundleError(f"{path}: larger than {limit} bytes, not a key")
    return data


def load_public_keys(directory: str | os.PathLike[str] = KEYS_DIR) -> list[Ed25519PublicKey]:
    """Every ``*.pub`` in ``directory`` (none if it does not exist). A file there that is
    not a key is an error, not skipped: a pinned key that silently does not count would
    leave the node refusing every update without saying why."""
    d = Path(directory)
    try:
        names = sorted(p for p in d.iterdir() if p.name.endswith(".pub"))
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise BundleError(f"{d}: cannot list the pinned keys: {exc.strerror or exc}") from None
    if len(names) > MAX_KEY_FILES:
        raise BundleError(f"{d}: more than {MAX_KEY_FILES} pinned keys")
    keys = []
    for p in names:
        try:
            data = _read_small(p, MAX_KEY_FILE_BYTES)
        except OSError as exc:
            raise BundleError(f"pinned key {p}: {exc.strerror or exc}") from None
        keys.append(load_public_key(data, f"pinned key {p}"))
    return keys


def update_keys_problem(enabled: bool, directory: str | os.PathLike[str] = KEYS_DIR
                        ) -> str | None:
    """What ``config check`` and ``doctor`` say when updates are on but no bundle could
    ever verify: no key pinned, or a pinned file that is not a key. None when fine, and on
    a machine that is not a node (the keys folder's parent, /etc/citynode, is missing: a
    laptop checking a file)."""
    if not enabled or not Path(directory).parent.is_dir():
        return None
    try:
        keys = load_public_keys(directory)
    except BundleError as exc:
        return f"[update] is enabled but {exc}: every update will be refused"
    if not keys:
        return (f"[update] is enabled but no fleet key is pinned in {directory} (citynode "
                "provision --fleet-key FILE.pub): every update will be refused")
    return None


def sign(private_key: Ed25519PrivateKey, manifest: bytes) -> bytes:
    """MANIFEST.sig for ``manifest``: ``ed25519 <fingerprint> <base64 signature>\\n``."""
    sig = private_key.sign(manifest)
    return b"ed25519 %s %s\n" % (fingerprint(private_key).encode(), base64.b64encode(sig))


# -- the manifest ---------------------------------------------------------------------------
def manifest_bytes(doc: dict[str, Any]) -> bytes:
    """The one way MANIFEST.json is written (sorted keys, two-space indent, ASCII)."""
    return (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n").encode()


def sums_text(hashes: dict[str, str]) -> bytes:
    """SHA256SUMS for ``{path: sha256}``: sha256sum's format, sorted by path, so its
    exact bytes follow from the signed manifest."""
    return "".join(f"{hashes[n]}  {n}\n" for n in sorted(hashes)).encode()


def _check_path(name: object, limits: Limits) -> str:
    if not isinstance(name, str) or not 0 < len(name) <= limits.name_chars:
        raise BundleError(f"manifest: a file name that is not a path: {str(name)[:60]!r}")
    if not all(_PATH_PART.fullmatch(p) for p in name.split("/")) or name in META:
        raise BundleError(f"manifest: unsafe or reserved file name {name[:60]!r}")
    return name


def _want(doc: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BundleError(f"manifest: {key!r} is missing or not a "
                          f"{getattr(kind, '__name__', 'value')}")
    return value


def parse_manifest(raw: bytes, limits: Limits = LIMITS) -> Manifest:
    """MANIFEST.json's bytes as a :class:`Manifest`, every field checked; BundleError."""
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError(f"MANIFEST.json is not JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict):
        raise BundleError("MANIFEST.json is not a JSON object")
    fmt = doc.get("format")
    if type(fmt) is not int or fmt != FORMAT:
        raise BundleError(f"MANIFEST.json format {str(fmt)[:20]!r}: this citynode reads "
                          f"format {FORMAT} (a newer bundle format needs a newer citynode)")
    if doc.get("name") != "citynode":
        raise BundleError("MANIFEST.json: not a citynode bundle (name)")
    fields: dict[str, Any] = {}
    for key in ("version", "min_version"):
        value = _want(doc, key, str)
        try:
            parse_version(value)
        except ValueError as exc:
            raise BundleError(f"manifest: {key}: {exc}") from None
        fields[key] = value
    arch, kind = _want(doc, "arch", str), _want(doc, "kind", str)
    if arch not in ARCHES:
        raise BundleError(f"manifest: arch {arch[:20]!r} is not one of {', '.join(ARCHES)}")
    if kind not in KINDS:
        raise BundleError(f"manifest: kind {kind[:20]!r} is not one of {', '.join(KINDS)}")
    created = _want(doc, "created", str)
    if not _CREATED.fullmatch(created):
        raise BundleError("manifest: created is not YYYY-MM-DDTHH:MM:SSZ")
    downgrade = _want(doc, "downgrade", bool)
    migrations = _want(doc, "migrations", list)
    if not all(isinstance(m, str) and 0 < len(m) <= 100 for m in migrations):
        raise BundleError("manifest: migrations must be names (strings)")
    listed = _want(doc, "files", dict)
    if len(listed) > limits.members:
        raise BundleError(f"manifest: more than {limits.members} files")
    files: dict[str, dict[str, Any]] = {}
    total = 0
    for name, entry in listed.items():
        _check_path(name, limits)
        if not isinstance(entry, dict) or set(entry) - {"sha256", "size", "executable"}:
            raise BundleError(f"manifest: {name[:60]}: an entry is {{sha256, size}}")
        sha, size = entry.get("sha256"), entry.get("size")
        executable = entry.get("executable", False)
        if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
            raise BundleError(f"manifest: {name[:60]}: sha256 is not 64 hex digits")
        if not isinstance(size, int) or isinstance(size, bool) or \
                not 0 <= size <= limits.file_bytes:
            raise BundleError(f"manifest: {name[:60]}: size is not 0..{limits.file_bytes}")
        if not isinstance(executable, bool):
            raise BundleError(f"manifest: {name[:60]}: executable is not true or false")
        total += size
        files[name] = {"sha256": sha, "size": size, "executable": executable}
    names = set(files)
    for name in files:  # a file cannot also be a folder of another one
        if any(str(up) in names for up in PurePosixPath(name).parents):
            raise BundleError(f"manifest: {name[:60]} is inside another listed file")
    if total > limits.total_bytes:
        raise BundleError(f"manifest: files add up to more than {limits.total_bytes} bytes")
    known = {"format", "name", "version", "min_version", "arch", "kind", "created",
             "downgrade", "migrations", "files"}
    return Manifest(version=fields["version"], arch=arch, min_version=fields["min_version"],
                    kind=kind, downgrade=downgrade, created=created, files=files,
                    migrations=list(migrations), raw=raw,
                    extra={k: v for k, v in doc.items() if k not in known})


# -- reading the tarball --------------------------------------------------------------------
class _Counted(io.RawIOBase):
    """The gunzipped stream, refusing to go past ``limit`` bytes (a gzip bomb)."""

    def __init__(self, raw: IO[bytes], limit: int) -> None:
        super().__init__()
        self._raw, self._limit, self._seen = raw, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self._raw.read(min(len(view), CHUNK))
        self._seen += len(data)
        if self._seen > self._limit:
            raise BundleError(f"more than {self._limit} bytes uncompressed")
        view[:len(data)] = data
        return len(data)


def _bounded_tarinfo(limits: Limits) -> type[tarfile.TarInfo]:
    """A TarInfo that refuses oversized or endless chains of pax / GNU long-name headers
    (tarfile reads each whole into memory, and recurses once per header)."""

    class Bounded(tarfile.TarInfo):
        def _proc_member(self, tar: tarfile.TarFile) -> Any:  # type: ignore[override]
            if self.type in _EXTENDED:
                depth = getattr(tar, "_citynode_headers", 0) + 1
                tar._citynode_headers = depth  # type: ignore[attr-defined]
                if self.size > limits.header_bytes or depth > limits.headers_in_a_row:
                    raise BundleError(f"an extended tar header of {self.size} bytes (or too "
                                      "many in a row): not a bundle make bundle wrote")
            elif self.type == tarfile.GNUTYPE_SPARSE:
                raise BundleError("a sparse file in the tarball: not a bundle make bundle "
                                  "wrote")
            else:
                tar._citynode_headers = 0  # type: ignore[attr-defined]
            return super()._proc_member(tar)  # type: ignore[misc]

    return Bounded


@dataclass
class _Member:
    rel: str  # path inside the top directory ("" for the top directory itself)
    info: tarfile.TarInfo
    fh: IO[bytes] | None


def _members(path: Path, limits: Limits) -> Iterator[_Member]:
    """Each member in order, checked by name and type, read as a stream; the caller reads
    (or skips) each file's bytes before asking for the next."""
    try:  # non-blocking: a FIFO in its place must not hang the reader
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BundleError(f"{path}: no such file") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read: {exc.strerror or exc}") from None
    raw = os.fdopen(fd, "rb")  # closed in the finally below
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BundleError(f"{path}: not a regular file")
        os.set_blocking(fd, True)
        stream = io.BufferedReader(_Counted(gzip.GzipFile(fileobj=raw, mode="rb"),
                                            limits.total_bytes + 2 * 512 * (limits.members
                                                                              + 2)), CHUNK)
        tar = tarfile.open(fileobj=stream, mode="r|", tarinfo=_bounded_tarinfo(limits))
        top: str | None = None
        seen: set[str] = set()
        count = 0
        while True:
            m = tar.next()
            if m is None:
                break
            count += 1
            if count > limits.members:
                raise BundleError(f"more than {limits.members} members")
            name = m.name
            if len(name) > limits.name_chars + 80 or name.startswith("/") or "\\" in name:
                raise BundleError(f"unsafe member name {name[:60]!r}")
            parts = name.rstrip("/").split("/") if m.isdir() else name.split("/")
            if any(p in ("", ".", "..") for p in parts):
                raise BundleError(f"unsafe member name {name[:60]!r} (empty, '.' or '..')")
            if top is None:
                top = parts[0]
            if parts[0] != top:
                raise BundleError("more than one top-level directory")
            rel = "/".join(parts[1:])
            if m.isdir():
                fh = None
            elif m.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and len(parts) > 1:
                if m.size > limits.file_bytes:
                    raise BundleError(f"{rel[:60]}: {m.size} bytes, more than "
                                      f"{limits.file_bytes}")
                fh = tar.extractfile(m)
            else:
                what = ("a link" if m.issym() or m.islnk() else
                        "a device or FIFO" if m.isdev() else
                        "a file beside the top directory" if m.isfile() else "an odd member")
                raise BundleError(f"{name[:60]!r} is {what}: refused")
            key = ("d:" if m.isdir() else "f:") + rel
            if key in seen or ("f:" + rel in seen) or (rel and "d:" + rel in seen):
                raise BundleError(f"{rel[:60]!r} is in the tarball twice")
            seen.add(key)
            yield _Member(rel, m, fh)
        if top is None:
            raise BundleError("an empty tarball")
    except BundleError:
        raise
    except _READ_ERRORS as exc:
        raise _unreadable(exc) from None
    finally:
        raw.close()


#: What tarfile, gzip and zlib raise for a corrupt or truncated stream.
_READ_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error, ValueError, UnicodeError,
                OverflowError, RecursionError)


def _unreadable(exc: BaseException) -> BundleError:
    detail = str(exc) or type(exc).__name__
    return BundleError(f"not a readable .tar.gz ({detail[:100]})")


def _read(fh: IO[bytes], n: int) -> bytes:
    """Up to ``n`` bytes of the current member; a corrupt stream is a BundleError."""
    try:
        return fh.read(n)
    except _READ_ERRORS as exc:
        raise _unreadable(exc) from None


def _hash_stream(fh: IO[bytes], size: int, sink: IO[bytes] | None = None) -> str:
    h = hashlib.sha256()
    left = size
    while left > 0:
        block = _read(fh, min(CHUNK, left))
        if not block:
            raise BundleError("a member ends early (truncated tarball)")
        left -= len(block)
        h.update(block)
        if sink is not None:
            sink.write(block)
    return h.hexdigest()


def _read_meta(fh: IO[bytes], size: int, limit: int, name: str) -> bytes:
    if size > limit:
        raise BundleError(f"{name} is {size} bytes, more than {limit}")
    data = _read(fh, size)
    if len(data) != size:
        raise BundleError(f"{name} ends early (truncated tarball)")
    return data


def read_manifest(bundle_path: str | os.PathLike[str], limits: Limits = LIMITS) -> Manifest:
    """The bundle's MANIFEST.json, parsed but NOT verified (to show what a bundle claims;
    :func:`verify` decides whether it is believed)."""
    path = Path(bundle_path)
    for member in _members(path, limits):
        if member.rel == MANIFEST_NAME and member.fh is not None:
            raw = _read_meta(member.fh, member.info.size, limits.manifest_bytes, MANIFEST_NAME)
            manifest = parse_manifest(raw, limits)
            manifest.top = member.info.name.split("/")[0]
            return manifest
    raise BundleError(f"{path.name} has no MANIFEST.json (a bundle from before signed "
                      "manifests?)")


def _check_signature(raw: bytes, sig: bytes | None, keys: Iterable[Ed25519PublicKey]) -> str:
    """The fingerprint of the pinned key that signed ``raw``, or BundleError."""
    if sig is None:
        raise BundleError("unsigned bundle (no MANIFEST.sig): nodes install only bundles "
                          "signed with a fleet key (make bundle SIGNING_KEY=...)")
    m = _SIG_LINE.fullmatch(sig)
    if m is None:
        raise BundleError("MANIFEST.sig is malformed (expected 'ed25519 FINGERPRINT "
                          "SIGNATURE')")
    want, b64 = m.group(1).decode(), m.group(2)
    signature = base64.b64decode(b64, validate=True)
    if len(signature) != 64 or base64.b64encode(signature) != b64:
        raise BundleError("MANIFEST.sig is malformed (the signature is not canonical base64)")
    pinned = {fingerprint(k): k for k in keys}
    if not pinned:
        raise BundleError(f"no fleet key is pinned ({KEYS_DIR}/*.pub): no bundle can verify")
    key = pinned.get(want)
    if key is None:
        raise BundleError(f"signed by an unknown key {want[:16]}... (pinned: "
                          f"{', '.join(f[:16] for f in sorted(pinned))})")
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(signature, raw)
    except InvalidSignature:
        raise BundleError(f"bad signature: MANIFEST.json was altered or MANIFEST.sig is not "
                          f"its signature (key {want[:16]}...)") from None
    return want


def verify(bundle_path: str | os.PathLike[str], keys: Iterable[Ed25519PublicKey], *,
           running_version: str, arch: str, models_version: str | None = None,
           limits: Limits = LIMITS) -> Manifest:
    """The bundle's manifest if a node running ``running_version`` on ``arch`` may install
    it; else BundleError with the reason. Checks, in order: the tarball's shape and bounds,
    the signature by a pinned key, every file's size and sha256 against the manifest (no
    file missing, none extra), SHA256SUMS, the architecture, the version (newer than the
    running one, or the installed models' ``models_version`` for a models bundle, unless
    the signed manifest says ``downgrade``) and ``min_version``."""
    manifest = verify_contents(bundle_path, keys, limits=limits)
    _check_target(manifest, running_version=running_version, arch=arch,
                  models_version=models_version)
    return manifest


def verify_contents(bundle_path: str | os.PathLike[str], keys: Iterable[Ed25519PublicKey],
                    *, limits: Limits = LIMITS) -> Manifest:
    """:func:`verify` without the node's side (architecture, versions): the bundle is
    intact and signed by one of ``keys``. ``make bundle`` checks what it wrote with it."""
    path = Path(bundle_path)
    key_list = list(keys)
    raw: bytes | None = None
    sig: bytes | None = None
    sums: bytes | None = None
    hashes: dict[str, tuple[str, int]] = {}
    dirs: set[str] = set()
    top = ""
    total = 0
    for member in _members(path, limits):
        top = top or member.info.name.split("/")[0]
        if member.fh is None:
            dirs.add(member.rel)
            continue
        size = member.info.size
        if member.rel == MANIFEST_NAME:
            raw = _read_meta(member.fh, size, limits.manifest_bytes, MANIFEST_NAME)
            hashes[member.rel] = (hashlib.sha256(raw).hexdigest(), size)
        elif member.rel == SIG_NAME:
            sig = _read_meta(member.fh, size, limits.sig_bytes, SIG_NAME)
            hashes[member.rel] = (hashlib.sha256(sig).hexdigest(), size)
        elif member.rel == SUMS_NAME:
            sums = _read_meta(member.fh, size, limits.manifest_bytes, SUMS_NAME)
        else:
            hashes[member.rel] = (_hash_stream(member.fh, size), size)
        total += size
        if total > limits.total_bytes:
            raise BundleError(f"more than {limits.total_bytes} bytes of files")
    if raw is None:
        raise BundleError(f"{path.name} has no MANIFEST.json: not a signed bundle (built "
                          "before signed manifests?)")
    signed_by = _check_signature(raw, sig, key_list)
    manifest = parse_manifest(raw, limits)
    manifest.top, manifest.signed_by = top, signed_by
    present = {n for n in hashes if n not in (MANIFEST_NAME, SIG_NAME)}
    extra = sorted(present - set(manifest.files))
    if extra:
        raise BundleError(f"{extra[0][:80]} is in the bundle but not in its signed manifest"
                          + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""))
    missing = sorted(set(manifest.files) - present)
    if missing:
        raise BundleError(f"{missing[0][:80]} is in the signed manifest but not in the bundle"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for name, entry in sorted(manifest.files.items()):
        sha, size = hashes[name]
        if size != entry["size"]:
            raise BundleError(f"{name[:80]}: {size} bytes, the signed manifest says "
                              f"{entry['size']}")
        if sha != entry["sha256"]:
            raise BundleError(f"{name[:80]}: sha256 differs from the signed manifest "
                              "(corrupt or tampered)")
    ancestors = {""} | {str(p) for n in manifest.files for p in PurePosixPath(n).parents}
    stray = sorted(d for d in dirs if d not in ancestors)
    if stray:
        raise BundleError(f"a folder {stray[0][:80]!r} that holds no listed file")
    if sums is None:
        raise BundleError("no SHA256SUMS: not a bundle make bundle wrote")
    if sums != sums_text({n: h for n, (h, _) in hashes.items()}):
        raise BundleError("SHA256SUMS does not match the signed manifest (tampered)")
    return manifest


def _check_target(manifest: Manifest, *, running_version: str, arch: str,
                  models_version: str | None) -> None:
    if manifest.arch not in ("any", arch):
        raise BundleError(f"the bundle is for {manifest.arch}, this node is {arch}")
    try:
        parse_version(running_version)
        if models_version is not None:
            parse_version(models_version)
    except ValueError as exc:
        raise BundleError(f"the running version: {exc}") from None
    if manifest.kind == "models" and models_version is not None:
        current, what = models_version, "installed models"
    else:
        current, what = running_version, "running citynode"
    newer = compare_versions(manifest.version, current)
    if newer <= 0 and not manifest.downgrade:
        raise BundleError(f"version {manifest.version} is "
                          f"{'the same as' if newer == 0 else 'older than'} the {what} "
                          f"{current}: refused (a downgrade must be signed as one: make "
                          "bundle DOWNGRADE=1)")
    if compare_versions(running_version, manifest.min_version) < 0:
        raise BundleError(f"this node runs {running_version}; the bundle updates "
                          f"{manifest.min_version} or newer only (install a release between "
                          "first)")


def _safe_parent(dest: Path, rel: str, made: list[Path]) -> Path:
    """The folder for ``rel`` under ``dest``, made here as real folders (never through a
    symlink someone placed there)."""
    parent = dest
    for part in PurePosixPath(rel).parts[:-1]:
        parent = parent / part
        try:
            os.mkdir(parent, 0o755)
            made.append(parent)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(parent).st_mode):
                raise BundleError(f"{parent} is in the way (not a folder)") from None
    return parent


def extract(bundle_path: str | os.PathLike[str], manifest: Manifest,
            dest_dir: str | os.PathLike[str], *, fsync: bool = True,
            limits: Limits = LIMITS) -> list[str]:
    """Write exactly the manifest's files under ``dest_dir`` (which must not exist, or be
    an empty folder), each checked against its size and sha256 while it is written (0755
    when ``executable``, else 0644). On any failure everything written is removed and
    BundleError raised. Returns the paths written. The caller keeps ``manifest.raw`` as
    the release's MANIFEST.json if it wants it: META members are never extracted."""
    dest = Path(dest_dir)
    try:
        os.mkdir(dest, 0o755)
        created_dest = True
    except FileExistsError:
        if not dest.is_dir() or dest.is_symlink() or any(dest.iterdir()):
            raise BundleError(f"{dest} exists and is not an empty folder") from None
        created_dest = False
    except OSError as exc:
        raise BundleError(f"{dest}: cannot create: {exc.strerror or exc}") from None
    written: list[Path] = []
    made: list[Path] = []
    try:
        done: set[str] = set()
        for member in _members(Path(bundle_path), limits):
            if member.fh is None or member.rel in META:
                continue
            entry = manifest.files.get(member.rel)
            if entry is None:
                raise BundleError(f"{member.rel[:80]} is not in the manifest (the bundle "
                                  "changed since it was verified?)")
            if member.info.size != entry["size"]:
                raise BundleError(f"{member.rel[:80]}: size differs from the manifest")
            target = _safe_parent(dest, member.rel, made) / PurePosixPath(member.rel).name
            mode = 0o755 if entry["executable"] else 0o644
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                         | os.O_CLOEXEC, 0o600)
            written.append(target)
            with os.fdopen(fd, "wb") as out:
                sha = _hash_stream(member.fh, entry["size"], out)
                if sha != entry["sha256"]:
                    raise BundleError(f"{member.rel[:80]}: sha256 differs from the manifest "
                                      "(the bundle changed since it was verified?)")
                out.flush()
                os.fchmod(out.fileno(), mode)
                if fsync:
                    os.fsync(out.fileno())
            done.add(member.rel)
        missing = sorted(set(manifest.files) - done)
        if missing:
            raise BundleError(f"{missing[0][:80]} is in the manifest but not in the bundle")
        if fsync:
            for d in [dest, *made]:
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
    except BaseException as exc:
        for p in reversed(written):
            p.unlink(missing_ok=True)
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
        if created_dest:
            with contextlib.suppress(OSError):
                dest.rmdir()
        if isinstance(exc, OSError):
            raise BundleError(f"cannot write {exc.filename or dest}: "
                              f"{exc.strerror or exc}") from None
        raise
    return [str(p.relative_to(dest)) for p in written]




def main(argv: list[str] | None = None) -> int:
    """``python -m agent.update.bundle BUNDLE --running V --arch A [--keys DIR]
    [--models-version V]``: :func:`verify` in a process of its own, so the daemon checks a
    download without keeping cryptography's ~10 MiB in its memory. Exit 0 with the
    manifest's summary as one JSON line, 65 with the reason on stderr, 64 usage."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m agent.update.bundle")
    p.add_argument("bundle")
    p.add_argument("--running", required=True, metavar="VERSION")
    p.add_argument("--arch", required=True, choices=ARCHES[:2])
    p.add_argument("--keys", default=KEYS_DIR, metavar="DIR")
    p.add_argument("--models-version", metavar="VERSION")
    args = p.parse_args(argv)
    try:
        m = verify(args.bundle, load_public_keys(args.keys), running_version=args.running,
                   arch=args.arch, models_version=args.models_version)
    except BundleError as exc:
        print(f"bundle refused: {exc}", file=sys.stderr)
        return 65
    print(json.dumps({"version": m.version, "kind": m.kind, "arch": m.arch,
                      "min_version": m.min_version, "downgrade": m.downgrade,
                      "signed_by": m.signed_by, "files": len(m.files),
                      "migrations": m.migrations}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
