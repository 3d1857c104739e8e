"""Signed bundles (issue 18, item 2): agent/update/bundle.py, deploy/bundle.py's manifest and
signature, ``citynode keys`` and ``provision --fleet-key``.

Every bundle here is built by deploy/bundle.py's own functions (assemble, assemble_models,
make_tarball) around a tiny fake wheel: the same manifest writer as ``make bundle``, no
network. Tampering is generated (hypothesis): a byte flipped in any member, members added,
removed or renamed, another bundle's signature, another key, the wrong architecture, an
older version, a downgrade flag set without re-signing, a min_version above the running
one. Each must end in a BundleError with a one-line reason, never another exception.
Hostile tarballs (traversal, links, devices, huge or many members, oversized headers, a
gzip bomb) are refused with bounded memory (tracemalloc).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from update_rig import load_bundle_tool

from agent.tools import sdcard
from agent.tools.cli import main
from agent.update import bundle as B
from agent.update.bundle import BundleError

ROOT = Path(__file__).resolve().parent.parent
RUNNING = "0.2.0"
CREATED = "2026-12-01T00:00:00Z"


BUNDLE = load_bundle_tool()


def fake_wheel(dest: Path, version: str) -> Path:
    path = dest / f"citynode-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("citynode_stub.py", f"VERSION = {version!r}\n")
    return path


@pytest.fixture(scope="module")
def keys() -> tuple[Ed25519PrivateKey, Ed25519PrivateKey]:
    return Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()


class Factory:
    """Signed and unsigned bundles, built once each by deploy/bundle.py's functions."""

    def __init__(self, tmp: Path, fleet: Ed25519PrivateKey) -> None:
        self.tmp, self.fleet, self.made = tmp, fleet, 0

    def release(self, *, version: str = "0.3.0", arch: str = "aarch64",
                key: Any = "fleet", **kw: Any) -> Path:
        self.made += 1
        d = self.tmp / f"r{self.made}"
        d.mkdir()
        wheel = fake_wheel(d, version)
        # a name as long as numpy's: the tarball then carries pax headers
        long = d / ("numpy-1.26.4-cp311-cp311-manylinux_2_17_aarch64.manylinux2014_aarch64."
                    "manylinux_2_28_aarch64.whl")
        long.write_bytes(b"PK\x05\x06" + bytes(18))
        top = BUNDLE.assemble(d / "stage", [wheel, long], version=version, arch=arch,
                              pyver="3.11",
                              extras="", root=ROOT, created=CREATED, migrations=[],
                              signing_key=self.fleet if key == "fleet" else key, **kw)
        return BUNDLE.make_tarball(top, d / "dist")

    def models(self, *, version: str = "0.2.0+models.1", key: Any = "fleet",
               **kw: Any) -> Path:
        self.made += 1
        d = self.tmp / f"m{self.made}"
        top = BUNDLE.assemble_models(d / "stage", version=version, root=ROOT,
                                     created=CREATED,
                                     signing_key=self.fleet if key == "fleet" else key, **kw)
        return BUNDLE.make_tarball(top, d / "dist")


@pytest.fixture(scope="module")
def factory(tmp_path_factory: pytest.TempPathFactory, keys: Any) -> Factory:
    return Factory(tmp_path_factory.mktemp("bundles"), keys[0])


@pytest.fixture(scope="module")
def good(factory: Factory) -> Path:
    return factory.release()


@pytest.fixture(scope="module")
def pinned(keys: Any) -> list[Any]:
    return [keys[0].public_key()]


def verify(path: Path, pinned: list[Any], **kw: Any) -> B.Manifest:
    args = {"running_version": RUNNING, "arch": "aarch64", **kw}
    return B.verify(path, pinned, **args)


def refused(path: Path, pinned: list[Any], **kw: Any) -> str:
    """The reason ``path`` is refused: a BundleError with one non-empty line, nothing else."""
    try:
        verify(path, pinned, **kw)
    except BundleError as exc:
        reason = str(exc)
        assert reason and "\n" not in reason and len(reason) <= 400, repr(reason)
        return reason
    raise AssertionError(f"{path.name} was accepted")


# -- tarball surgery --------------------------------------------------------------------------
Members = list[tuple[tarfile.TarInfo, bytes | None]]


def read_members(path: Path) -> Members:
    out: Members = []
    with tarfile.open(path, "r:gz") as tar:
        for m in tar.getmembers():
            fh = tar.extractfile(m) if m.isfile() else None
            out.append((m, fh.read() if fh else None))
    return out


def write_members(members: Members, dest: Path, fmt: int = tarfile.GNU_FORMAT) -> Path:
    with tarfile.open(dest, "w:gz", format=fmt) as tar:
        for m, data in members:
            m = tarfile.TarInfo(m.name) if m is None else m
            if data is not None:
                m.size = len(data)
            tar.addfile(m, io.BytesIO(data) if data is not None else None)
    return dest


def file_info(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode = len(data), 0o644
    return ti, data


def top_of(members: Members) -> str:
    return members[0][0].name.split("/")[0]


def resum(members: Members) -> Members:
    """SHA256SUMS made consistent again (so a test isolates the change it means)."""
    top = top_of(members)
    hashes = {m.name[len(top) + 1:]: hashlib.sha256(d).hexdigest() for m, d in members
              if d is not None and not m.name.endswith("/SHA256SUMS")}
    text = B.sums_text(hashes)
    return [(m, text if m.name == f"{top}/SHA256SUMS" else d) for m, d in members]


def replace(members: Members, rel: str, data: bytes) -> Members:
    top = top_of(members)
    return [(m, data if m.name == f"{top}/{rel}" else d) for m, d in members]


def member_data(members: Members, rel: str) -> bytes:
    top = top_of(members)
    (data,) = [d for m, d in members if m.name == f"{top}/{rel}"]
    assert data is not None
    return data


# -- a good bundle --------------------------------------------------------------------------
def test_a_good_bundle_verifies_and_extracts_exactly_its_files(good: Path, pinned: Any,
                                                               tmp_path: Path) -> None:
    m = verify(good, pinned)
    assert (m.version, m.arch, m.kind, m.downgrade, m.min_version) == (
        "0.3.0", "aarch64", "release", False, B.UPDATABLE_SINCE)
    assert m.signed_by == B.fingerprint(pinned[0]) and m.created == CREATED
    assert m.extra["python"] == "3.11" and m.migrations == []
    members = read_members(good)
    assert m.raw == member_data(members, "MANIFEST.json")
    inside = {mi.name.split("/", 1)[1] for mi, d in members if d is not None}
    assert set(m.files) == inside - set(B.META)
    dest = tmp_path / "release"
    written = B.extract(good, m, dest)
    assert sorted(written) == sorted(m.files)
    on_disk = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert on_disk == set(m.files)
    for rel, entry in m.files.items():
        data = (dest / rel).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry["sha256"], entry["size"])
        want = 0o755 if rel in BUNDLE.EXECUTABLE else 0o644  # as the bundler marks them
        assert stat.S_IMODE((dest / rel).stat().st_mode) == want, rel


def test_the_offline_installers_checks_still_hold(good: Path, tmp_path: Path) -> None:
    """install.sh and sdcard-kit read MANIFEST and SHA256SUMS: both still match, and every
    file (MANIFEST.json and MANIFEST.sig too) is listed, as install.sh demands."""
    info = sdcard.verify_bundle(good)
    assert {"MANIFEST", "MANIFEST.json", "MANIFEST.sig", "SHA256SUMS"} <= set(info.files)
    with tarfile.open(good) as tar:
        tar.extractall(tmp_path, filter="data")
    top = next(tmp_path.iterdir())
    proc = subprocess.run(["sha256sum", "--strict", "--quiet", "-c", "SHA256SUMS"], cwd=top,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    listed = {ln.split("  ", 1)[1] for ln in (top / "SHA256SUMS").read_text().splitlines()}
    assert listed == {p.relative_to(top).as_posix() for p in top.rglob("*")
                      if p.is_file() and p.name != "SHA256SUMS"}


def test_openssl_verifies_the_signature_by_hand(good: Path, keys: Any, tmp_path: Path) -> None:
    """docs/updates.md's recovery recipe: openssl checks MANIFEST.sig with NAME.pub."""
    members = read_members(good)
    (tmp_path / "MANIFEST.json").write_bytes(member_data(members, "MANIFEST.json"))
    sig = member_data(members, "MANIFEST.sig").split()
    (tmp_path / "sig.bin").write_bytes(base64.b64decode(sig[2]))
    (tmp_path / "fleet.pub").write_bytes(keys[0].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    proc = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "fleet.pub",
                           "-rawin", "-in", "MANIFEST.json", "-sigfile", "sig.bin"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 and "rawin" in proc.stderr:
        pytest.skip("this openssl has no -rawin (OpenSSL < 3)")
    assert proc.returncode == 0 and "Verified Successfully" in proc.stdout, proc.stderr
    assert sig[1].decode() == B.fingerprint(keys[0])


def test_unsigned_bundle_is_refused_but_readable(factory: Factory, pinned: Any) -> None:
    unsigned = factory.release(key=None)
    assert "unsigned" in refused(unsigned, pinned)
    assert B.read_manifest(unsigned).version == "0.3.0"  # what it claims, unverified
    sdcard.verify_bundle(unsigned)  # the offline installers take it


def test_no_pinned_key_refuses_everything(good: Path) -> None:
    assert "no fleet key is pinned" in refused(good, [])


# -- what the node decides ------------------------------------------------------------------
def test_versions_architecture_and_downgrades(factory: Factory, pinned: Any) -> None:
    assert "for x86_64, this node is aarch64" in refused(factory.release(arch="x86_64"), pinned)
    assert verify(factory.release(arch="x86_64"), pinned, arch="x86_64").arch == "x86_64"
    older = factory.release(version="0.1.9")
    assert "older than the running citynode 0.2.0" in refused(older, pinned)
    same = factory.release(version=RUNNING)
    assert "the same as" in refused(same, pinned)
    assert verify(factory.release(version="0.1.9", downgrade=True), pinned).downgrade
    high = factory.release(min_version="0.2.1")
    assert "updates 0.2.1 or newer only" in refused(high, pinned)
    assert verify(high, pinned, running_version="0.2.1").version == "0.3.0"
    assert verify(factory.release(version="0.2.0.post1"), pinned).version == "0.2.0.post1"
    assert "the running version" in refused(factory.release(), pinned, running_version="x")


def test_models_bundle(factory: Factory, pinned: Any, tmp_path: Path) -> None:
    models = factory.models()
    m = verify(models, pinned)  # models 0.2.0+models.1 over a node running 0.2.0
    assert (m.kind, m.arch) == ("models", "any")
    assert set(m.files) == {"models/fall.tflite", "models/fall.json"}
    assert m.files["models/fall.tflite"]["sha256"] == hashlib.sha256(
        (ROOT / "agent/models/fall.tflite").read_bytes()).hexdigest()
    assert verify(models, pinned, arch="x86_64").arch == "any"
    # against the models the node has installed, not the release
    assert "installed models" in refused(models, pinned, models_version="0.2.0+models.2")
    assert verify(models, pinned, models_version="0.2.0+models.0").version == m.version
    B.extract(models, m, tmp_path / "m")
    assert (tmp_path / "m/models/fall.json").read_bytes() == (
        ROOT / "agent/models/fall.json").read_bytes()


# -- tampering ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def variants(factory: Factory, keys: Any, good: Path) -> dict[str, Path]:
    """Properly built bundles whose MANIFEST.sig or manifest the tampering borrows."""
    return {"other_version": factory.release(version="0.4.0"),
            "other_key": factory.release(key=keys[1])}


TAMPER = ["flip", "add", "remove", "rename", "dup", "swap_sig", "other_key",
          "resign_other_key", "forge_downgrade", "forge_min_version", "forge_version"]
#: Examples per kind of tampering (a flip has the most places to go).
EXAMPLES = {"flip": 40, "other_key": 1}


@pytest.mark.parametrize("how", TAMPER)
def test_tampered_bundles_are_refused_with_one_line(how: str, good: Path,
                                                     variants: dict[str, Path], keys: Any,
                                                     pinned: Any,
                                                     tmp_path_factory: pytest.TempPathFactory
                                                     ) -> None:
    @settings(max_examples=EXAMPLES.get(how, 8), deadline=None, database=None,
              derandomize=True, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        tamper(how, data, good, variants, keys, pinned, tmp_path_factory)

    one()


def tamper(how: str, data: st.DataObject,
                                                     good: Path, variants: dict[str, Path],
                                                     keys: Any, pinned: Any,
                                                     tmp_path_factory: pytest.TempPathFactory
                                                     ) -> None:
    members = read_members(good)
    files = [i for i, (m, d) in enumerate(members) if d is not None]
    top = top_of(members)
    if how == "flip":  # any byte of any member, MANIFEST.json, .sig and SHA256SUMS included
        i = data.draw(st.sampled_from(files))
        m, d = members[i]
        assert d is not None
        if not d:
            d = b"\x00"
        at = data.draw(st.integers(0, len(d) - 1))
        bit = data.draw(st.integers(1, 255))
        members[i] = (m, d[:at] + bytes([d[at] ^ bit]) + d[at + 1:])
    elif how == "add":
        name = data.draw(st.sampled_from(["wheels/evil-1.0-py3-none-any.whl", "install.sh.new",
                                          "x", "MANIFEST.json.bak", "udev/extra.rules"]))
        blob = data.draw(st.binary(max_size=64))
        members.append(file_info(f"{top}/{name}", blob))
        if data.draw(st.booleans()):
            members = resum(members)
    elif how == "remove":
        del members[data.draw(st.sampled_from(files))]
        if data.draw(st.booleans()):
            members = resum(members)
    elif how == "rename":
        i = data.draw(st.sampled_from(files))
        m, d = members[i]
        new = tarfile.TarInfo(m.name + data.draw(st.sampled_from([".x", "~", "2"])))
        members[i] = (new, d)
        if data.draw(st.booleans()):
            members = resum(members)
    elif how == "dup":  # the same file twice: a tar reader keeps the last one
        i = data.draw(st.sampled_from(files))
        members.append(members[i])
    elif how == "swap_sig":  # a genuine signature of another manifest, same key
        other = member_data(read_members(variants["other_version"]), "MANIFEST.sig")
        members = resum(replace(members, "MANIFEST.sig", other))
    elif how == "other_key":  # a whole bundle signed by a key the node does not pin
        members = read_members(variants["other_key"])
    elif how == "resign_other_key":  # this manifest, re-signed by the other key
        raw = member_data(members, "MANIFEST.json")
        members = resum(replace(members, "MANIFEST.sig", B.sign(keys[1], raw)))
    else:  # the manifest edited, signature and SHA256SUMS left as they were, or re-summed
        doc = json.loads(member_data(members, "MANIFEST.json"))
        if how == "forge_downgrade":
            doc["downgrade"] = True
            doc["version"] = "0.0.1"
        elif how == "forge_min_version":
            doc["min_version"] = "0.0.0"
        else:
            doc["version"] = "9.9.9"
        members = replace(members, "MANIFEST.json", B.manifest_bytes(doc))
        if data.draw(st.booleans()):
            members = resum(members)
    bad = write_members(members, tmp_path_factory.mktemp("bad") / good.name)
    reason = refused(bad, pinned)
    if how == "other_key" or how == "resign_other_key":
        assert "unknown key" in reason
    if how.startswith("forge") or how == "swap_sig":
        assert "signature" in reason or "SHA256SUMS" in reason


@settings(max_examples=40, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_byte_of_the_compressed_file(data: st.DataObject, good: Path, pinned: Any,
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    """A byte flipped anywhere in the .tar.gz itself: a BundleError, or (a gzip header's
    time stamp, a CRC tar never reads up to) the very same verified bundle."""
    blob = bytearray(good.read_bytes())
    at = data.draw(st.integers(0, len(blob) - 1))
    blob[at] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.sampled_from([None, None, None, at + 1, len(blob) // 2]))
    bad = tmp_path_factory.mktemp("gz") / good.name
    bad.write_bytes(bytes(blob[:cut]))
    try:
        m = verify(bad, pinned)
    except BundleError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert m.raw == verify(good, pinned).raw


def test_extract_rechecks_a_bundle_swapped_after_verify(good: Path, factory: Factory,
                                                        pinned: Any, tmp_path: Path) -> None:
    m = verify(good, pinned)
    other = factory.release(version="0.5.0")  # genuine, but not what was verified
    dest = tmp_path / "r"
    with pytest.raises(BundleError, match=r"changed since it was verified|differs"):
        B.extract(other, m, dest)
    assert not dest.exists()  # nothing half-written left behind
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").write_text("x")
    with pytest.raises(BundleError, match="not an empty folder"):
        B.extract(good, m, tmp_path / "full")


# -- hostile tarballs ------------------------------------------------------------------------
def _gz(raw: bytes, dest: Path) -> Path:
    import gzip

    dest.write_bytes(gzip.compress(raw, compresslevel=1))
    return dest


def _tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]],
               fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for ti, data in members:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _special(name: str, kind: bytes, **attrs: Any) -> tuple[tarfile.TarInfo, None]:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    for k, v in attrs.items():
        setattr(ti, k, v)
    return ti, None


def _huge_header(name: str, size: int) -> bytes:
    """A tar header claiming ``size`` bytes, with a few bytes of data only."""
    ti = tarfile.TarInfo(name)
    ti.size = size
    return ti.tobuf(tarfile.GNU_FORMAT) + b"x" * 512


SMALL = B.Limits(members=50, file_bytes=1 << 20, total_bytes=2 << 20, header_bytes=4096)


def hostile_cases(tmp: Path) -> dict[str, tuple[Path, B.Limits]]:
    t = "citynode-bundle-9-aarch64"
    ok = file_info(f"{t}/a", b"a")
    cases: dict[str, tuple[bytes, B.Limits]] = {
        "dotdot": (_tar_bytes([ok, file_info(f"{t}/../../etc/passwd", b"x")]), B.LIMITS),
        "absolute": (_tar_bytes([file_info("/etc/cron.d/evil", b"x")]), B.LIMITS),
        "symlink": (_tar_bytes([ok, _special(f"{t}/wheels", tarfile.SYMTYPE,
                                             linkname="/etc")]), B.LIMITS),
        "hardlink": (_tar_bytes([ok, _special(f"{t}/h", tarfile.LNKTYPE,
                                              linkname="/etc/shadow")]), B.LIMITS),
        "device": (_tar_bytes([ok, _special(f"{t}/null", tarfile.CHRTYPE, devmajor=1,
                                            devminor=3)]), B.LIMITS),
        "fifo": (_tar_bytes([ok, _special(f"{t}/p", tarfile.FIFOTYPE)]), B.LIMITS),
        "two_tops": (_tar_bytes([ok, file_info("other/b", b"b")]), B.LIMITS),
        "beside_top": (_tar_bytes([file_info("loose", b"x")]), B.LIMITS),
        "huge_member": (_huge_header(f"{t}/big", 600 << 30), B.LIMITS),
        "big_member": (_tar_bytes([file_info(f"{t}/big", bytes(2 << 20))]), SMALL),
        "bomb": (_tar_bytes([file_info(f"{t}/z{i}", bytes(900 << 10)) for i in range(4)]),
                 SMALL),
        "many": (_tar_bytes([file_info(f"{t}/f{i}", b"") for i in range(SMALL.members + 5)]),
                 SMALL),
        "many_default": (_tar_bytes([file_info(f"{t}/f{i}", b"")
                                     for i in range(B.LIMITS.members + 2)]), B.LIMITS),
        "pax_huge": (_tar_bytes([_pax(f"{t}/a", {"comment": "x" * 200_000})],
                                fmt=tarfile.PAX_FORMAT), B.LIMITS),
        "long_names": (_tar_bytes([file_info(f"{t}/{'d' * 100}/{'n' * 200}", b"x")]), SMALL),
        "empty": (b"", B.LIMITS),
        "zeros": (bytes(10240), B.LIMITS),
        "not_tar": (os.urandom(4096), B.LIMITS),
    }
    out = {}
    for name, (raw, limits) in cases.items():
        out[name] = (_gz(raw, tmp / f"{name}.tar.gz"), limits)
    (tmp / "not_gzip.tar.gz").write_bytes(b"PK\x03\x04 not a gzip")
    out["not_gzip"] = (tmp / "not_gzip.tar.gz", B.LIMITS)
    out["missing"] = (tmp / "missing.tar.gz", B.LIMITS)
    os.mkfifo(tmp / "a-fifo.tar.gz")
    out["fifo_file"] = (tmp / "a-fifo.tar.gz", B.LIMITS)
    return out


def _pax(name: str, headers: dict[str, str]) -> tuple[tarfile.TarInfo, bytes]:
    ti, data = file_info(name, b"a")
    ti.pax_headers = headers
    return ti, data


def test_hostile_tarballs_are_refused_in_bounded_memory(tmp_path: Path, pinned: Any) -> None:
    reasons = {}
    for name, (path, limits) in hostile_cases(tmp_path).items():
        for fn in ("verify", "read_manifest"):
            tracemalloc.start()
            try:
                if fn == "verify":
                    B.verify(path, pinned, running_version=RUNNING, arch="aarch64",
                             limits=limits)
                else:
                    B.read_manifest(path, limits)
            except BundleError as exc:
                reasons[name] = str(exc)
            else:
                raise AssertionError(f"{name}: {fn} accepted it")
            finally:
                _, peak = tracemalloc.get_traced_memory()
                tracemalloc.stop()
            assert peak < 8 << 20, f"{name}: {fn} peaked at {peak >> 20} MiB"
            assert reasons[name] and "\n" not in reasons[name]
    assert "unsafe" in reasons["dotdot"] and "unsafe" in reasons["absolute"]
    assert "a link" in reasons["symlink"] and "a link" in reasons["hardlink"]
    assert "device or FIFO" in reasons["device"] and "device or FIFO" in reasons["fifo"]
    assert "more than" in reasons["huge_member"] and "more than" in reasons["big_member"]
    assert "uncompressed" in reasons["bomb"] or "bytes of files" in reasons["bomb"]
    assert "more than 50 members" in reasons["many"]
    assert f"more than {B.LIMITS.members} members" in reasons["many_default"]
    assert "extended tar header" in reasons["pax_huge"]
    assert "not a regular file" in reasons["fifo_file"]
    assert "no such file" in reasons["missing"]
    print("\n".join(f"{k}: {v}" for k, v in sorted(reasons.items())))


# -- versions -------------------------------------------------------------------------------
VERSION = st.builds(
    lambda rel, pre, post, dev, local: ".".join(map(str, rel)) + (pre or "") + (post or "")
    + (dev or "") + (local or ""),
    st.lists(st.integers(0, 12), min_size=1, max_size=4),
    st.one_of(st.none(), st.builds(lambda k, n: f"{k}{n}", st.sampled_from(["a", "b", "rc"]),
                                   st.integers(0, 3))),
    st.one_of(st.none(), st.integers(0, 3).map(lambda n: f".post{n}")),
    st.one_of(st.none(), st.integers(0, 3).map(lambda n: f".dev{n}")),
    st.one_of(st.none(), st.lists(st.sampled_from(["1", "2", "10", "a", "models", "x1"]),
                                  min_size=1, max_size=3).map(lambda p: "+" + ".".join(p))))


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(a=VERSION, b=VERSION)
def test_versions_compare_as_packaging_does(a: str, b: str) -> None:
    from packaging.version import Version

    want = (Version(a) > Version(b)) - (Version(a) < Version(b))
    assert B.compare_versions(a, b) == want, (a, b)


@pytest.mark.parametrize("text", ["", "v1.0", "1.0-beta", "1..0", "01.x", "1.0+", "1.0 2",
                                  "1" * 20, "1.0+UPPER_"])
def test_what_is_not_a_version(text: str) -> None:
    with pytest.raises(ValueError):
        B.parse_version(text)


# -- keys -----------------------------------------------------------------------------------
def test_keys_generate_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "keys"
    assert main(["keys", "generate", "--out", str(out), "--name", "fleet-2026"]) == 0
    private, public = out / "fleet-2026.key", out / "fleet-2026.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    key = B.load_private_key(private.read_bytes())
    assert B.fingerprint(B.load_public_key(public.read_bytes())) == B.fingerprint(key)
    fp = B.fingerprint(key)
    assert fp in capsys.readouterr().out
    before = private.read_bytes()
    assert main(["keys", "generate", "--out", str(out), "--name", "fleet-2026"]) == 73
    assert "refusing to overwrite" in capsys.readouterr().err
    assert private.read_bytes() == before
    public.unlink()  # a lone public key name in the way is refused too, the other way round
    (out / "other.pub").write_text("x")
    assert main(["keys", "generate", "--out", str(out), "--name", "other"]) == 73
    assert not (out / "other.key").exists()
    assert main(["keys", "show", str(private)]) == 0
    assert capsys.readouterr().out.split()[:2] == ["ed25519", fp]
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    (tmp_path / "b64.pub").write_bytes(base64.b64encode(raw) + b"\n")
    assert main(["keys", "show", str(tmp_path / "b64.pub")]) == 0
    assert capsys.readouterr().out.split()[1] == fp
    (tmp_path / "rsa.pub").write_bytes(b"ssh-rsa AAAA x\n")
    assert main(["keys", "show", str(tmp_path / "rsa.pub")]) == 65
    assert main(["keys", "show", str(tmp_path / "nothere.pub")]) == 66
    assert main(["keys", "generate", "--out", str(tmp_path / "k2"), "--name", "a/b"]) == 64
    (tmp_path / "file").write_text("x")
    assert main(["keys", "generate", "--out", str(tmp_path / "file")]) == 73
    capsys.readouterr()


def test_make_bundle_signs_a_models_bundle(tmp_path: Path) -> None:
    """deploy/bundle.py's command line, as make bundle KIND=models SIGNING_KEY=... runs it
    (no wheels, no network)."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    (tmp_path / "fleet.key").write_bytes(pem)
    (tmp_path / "fleet.key").chmod(0o600)
    env = {**os.environ, "SIGNING_KEY": str(tmp_path / "fleet.key")}
    proc = subprocess.run([sys.executable, str(ROOT / "deploy/bundle.py"), "--kind", "models",
                           "--out", str(tmp_path / "dist"), "--min-version", "0.1.0"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = Path(proc.stdout.strip().splitlines()[-1])
    assert "signed by" in proc.stderr
    m = B.verify(out, [key.public_key()], running_version="0.1.0", arch="aarch64")
    assert m.kind == "models" and m.version.startswith("0.1.0+models.")
    bad = subprocess.run([sys.executable, str(ROOT / "deploy/bundle.py"), "--kind", "models",
                          "--out", str(tmp_path / "dist"),
                          "--signing-key", str(ROOT / "README.md")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "README.md" in bad.stderr


# -- pinning and the warning ---------------------------------------------------------------
def test_provision_pins_fleet_keys(tmp_path: Path, keys: Any,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    pem = keys[0].public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "fleet.pub").write_bytes(pem)
    raw = keys[1].public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    (tmp_path / "spare").write_bytes(base64.b64encode(raw) + b"\n")
    import grp
    import pwd

    me = f"{pwd.getpwuid(os.geteuid()).pw_name}:{grp.getgrgid(os.getegid()).gr_name}"
    base = ["provision", "--node-id", "n1", "--broker", "127.0.0.1:1", "--no-check",
            "--config", str(tmp_path / "citynode.toml"), "--secrets-dir",
            str(tmp_path / "etc"), "--owner", me]
    assert main([*base, "--fleet-key", str(tmp_path / "fleet.pub"), "--fleet-key",
                 str(tmp_path / "spare")]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert B.fingerprint(keys[0]) in out
    kd = tmp_path / "etc/keys"
    assert sorted(p.name for p in kd.iterdir()) == ["fleet.pub", "spare.pub"]
    assert stat.S_IMODE((kd / "fleet.pub").stat().st_mode) == 0o644
    pinned = B.load_public_keys(kd)
    assert {B.fingerprint(k) for k in pinned} == {B.fingerprint(keys[0]),
                                                  B.fingerprint(keys[1])}
    assert B.update_keys_problem(True, kd) is None
    (tmp_path / "bad.pub").write_text("not a key\n")
    assert main([*base, "--fleet-key", str(tmp_path / "bad.pub")]) == 65
    assert main([*base, "--fleet-key", str(tmp_path / "nothere.pub")]) == 66
    assert main([*base, "--fleet-key", str(tmp_path / "fleet.pub"), "--fleet-key",
                 str(tmp_path / "fleet.pub")]) == 64
    (tmp_path / "odd name.pub").write_bytes(pem)
    assert main([*base, "--fleet-key", str(tmp_path / "odd name.pub")]) == 64
    (tmp_path / "x").mkdir()  # another key under a pinned name: only with --force
    (tmp_path / "x/spare").write_bytes(pem)
    assert main([*base, "--fleet-key", str(tmp_path / "x/spare")]) == 73
    capsys.readouterr()


def test_update_keys_problem(tmp_path: Path, keys: Any) -> None:
    kd = tmp_path / "etc/citynode/keys"
    assert B.update_keys_problem(True, kd) is None  # not a node: no /etc/citynode
    (tmp_path / "etc/citynode").mkdir(parents=True)
    assert "no fleet key is pinned" in (B.update_keys_problem(True, kd) or "")
    assert B.update_keys_problem(False, kd) is None
    kd.mkdir()
    (kd / "broken.pub").write_text("x\n")
    assert "broken.pub" in (B.update_keys_problem(True, kd) or "")
    (kd / "broken.pub").write_bytes(keys[0].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert B.update_keys_problem(True, kd) is None


def test_the_daemon_does_not_load_cryptography_to_import_the_module() -> None:
    code = ("import sys, agent.update.bundle as b; b.compare_versions('1.0', '1.1'); "
            "print('cryptography' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_verify_in_a_process_of_its_own(good: Path, keys: Any, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m agent.update.bundle``: what the daemon may run to keep cryptography out
    of its memory."""
    kd = tmp_path / "keys"
    kd.mkdir()
    (kd / "fleet.pub").write_bytes(keys[0].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    argv = [str(good), "--running", RUNNING, "--arch", "aarch64", "--keys", str(kd)]
    assert B.main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["version"], doc["signed_by"]) == ("0.3.0", B.fingerprint(keys[0]))
    assert B.main([*argv[:2], "0.9.0", *argv[3:]]) == 65
    assert "older than the running" in capsys.readouterr().err


def test_sdcard_kit_pins_fleet_keys(good: Path, keys: Any, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The kit carries the key; first boot installs it like the secrets (0644 root)."""
    pem = keys[0].public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "fleet.pub").write_bytes(pem)
    (tmp_path / "node.toml").write_text('[node]\nid = "pole-1"\n'
                                        '[mqtt]\nhost = "mqtt.example.net"\n')
    boot = tmp_path / "boot"
    boot.mkdir()
    args = ["sdcard-kit", "--out", str(boot), "--bundle", str(good), "--config",
            str(tmp_path / "node.toml")]
    assert main([*args, "--fleet-key", str(tmp_path / "fleet.pub")]) == 0, \
        capsys.readouterr().err
    assert "fleet key fleet.pub" in capsys.readouterr().out
    assert (boot / "citynode/secrets/fleet.pub").read_bytes() == pem
    line = (boot / "citynode/secrets/MANIFEST").read_text().split()
    assert line == ["0644", "root", hashlib.sha256(pem).hexdigest(), "fleet.pub",
                    "/etc/citynode/keys/fleet.pub"]
    (tmp_path / "bad.pub").write_text("nope\n")
    assert main([*args, "--force", "--fleet-key", str(tmp_path / "bad.pub")]) == 65
    assert "bad.pub" in capsys.readouterr().err
