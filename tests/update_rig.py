"""Releases, keys and a bundle server for the update tests (tests/test_nspawn_update.py).

Everything a real rollout needs, made per test session on the host:

* a signing key pair (``citynode keys generate``), whose public half the container pins in
  /etc/citynode/keys/ as provisioning does;
* release bundles for the container's architecture built from the working tree the way
  ``make bundle SIGNING_KEY=...`` builds them, each from a temporary copy of the tree with
  its version bumped and, for the faulty releases, a patch applied (the tree itself is never
  edited): a good one, one that crashes on start, one that hangs (its main loop stops, so
  the watchdog pings stop), one that starts but cannot publish, an older one; a tampered
  bundle is a good one with a byte flipped after signing;
* a test CA and a server certificate for 127.0.0.1 (``cryptography``), for the HTTPS bundle
  server that runs inside the container (tests/ota_server.py: ranges, a bandwidth limit,
  death mid-transfer), since the container has no network;
* the small programs run inside the container with a tools venv of their own (the
  releases come and go under the tests): a subscriber that records the node's messages
  decoded, and a signer that sends a command with the node's HMAC key.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import importlib.util
import io
import ipaddress
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
#: Where the container sees the rig's files (read-only bind) and keeps its own.
MNT = "/mnt/ota"
SRV = "/srv/ota"
TOOLS = f"{SRV}/venv"
PORT = 8443


def load_bundle_tool(root: Path = ROOT) -> ModuleType:
    """deploy/bundle.py of ``root`` as a module (it is a script, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bundle_tool_{abs(hash(root))}",
                                                  root / "deploy" / "bundle.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -- TLS ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PKI:
    ca: Path
    cert: Path
    key: Path


def make_pki(out: Path) -> PKI:
    """A test CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    later = now + dt.timedelta(days=30)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "citynode update test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(later)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(later)
            .add_extension(x509.SubjectAlternativeName([
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    pki = PKI(out / "ca.pem", out / "server.pem", out / "server.key")
    pki.ca.write_bytes(ca.public_bytes(pem))
    pki.cert.write_bytes(cert.public_bytes(pem))
    pki.key.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    pki.key.chmod(0o600)
    return pki


# -- the tree and its variants -------------------------------------------------------------------
#: A patch: file (relative to the tree) -> [(old text, new text)], each old text found once.
Patch = Mapping[str, list[tuple[str, str]]]


def patched_tree(dest: Path, version: str, patch: Patch | None = None) -> Path:
    """A copy of the working tree at ``dest`` with ``__version__`` set and ``patch`` applied."""
    tool = load_bundle_tool()
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*tool.NOT_SOURCE))
    edits: dict[str, list[tuple[str, str]]] = {"agent/__init__.py": []}
    init = (dest / "agent" / "__init__.py").read_text()
    current = tool.project_version()
    edits["agent/__init__.py"].append((f'__version__ = "{current}"', f'__version__ = "{version}"'))
    for name, pairs in (patch or {}).items():
        edits.setdefault(name, []).extend(pairs)
    for name, pairs in edits.items():
        path = dest / name
        text = init if name == "agent/__init__.py" else path.read_text()
        for old, new in pairs:
            if text.count(old) != 1:
                raise AssertionError(f"patch for {name}: {old!r} found {text.count(old)} times "
                                     "(the tree changed: update the rig's patch)")
            text = text.replace(old, new)
        path.write_text(text)
    return dest


#: Crashes on start: the daemon exits 1 before it is READY, every time (a crash loop).
CRASH: Patch = {"agent/core/daemon.py": [(
    "    def run(self) -> int:\n        try:\n",
    "    def run(self) -> int:\n        raise SystemExit('update test: this release crashes')\n"
    "        try:\n")]}

#: Hangs: READY, then the main loop stops for good, so the watchdog pings stop.
HANG: Patch = {"agent/core/daemon.py": [(
    "        while not self._stop.is_set():\n            main_beat()\n",
    "        while not self._stop.is_set():\n            main_beat()\n"
    "            time.sleep(86400)  # update test: this release hangs\n")]}


#: Cannot publish: a configuration migration points the uplink at a port nobody listens on
#: (the guard restores the file on rollback).
NOWHERE: Patch = {"agent/update/migrate.py": [(
    "MIGRATIONS: dict[str, Migration] = {}\n",
    "MIGRATIONS: dict[str, Migration] = {}\n\n\n"
    "def _uplink_nowhere(text: str, data: dict[str, Any]) -> str:\n"
    "    \"\"\"Update test: the broker moves to a port nobody listens on.\"\"\"\n"
    "    return text.replace(\"port = 1883\", \"port = 9\")\n\n\n"
    "MIGRATIONS[\"test-uplink-nowhere\"] = _uplink_nowhere\n")]}


# -- keys and bundles ----------------------------------------------------------------------------
def generate_keys(out: Path) -> tuple[Path, Path]:
    """A fleet signing key pair made by ``citynode keys generate`` (private 0600, public)."""
    proc = subprocess.run([str(Path(sys.executable).with_name("citynode")), "keys", "generate",
                           "--out", str(out)], capture_output=True, text=True, timeout=60)
    if proc.returncode:
        raise AssertionError(f"citynode keys generate: {proc.stdout}{proc.stderr}")
    private = [p for p in out.iterdir() if not p.name.endswith(".pub")]
    public = [p for p in out.iterdir() if p.name.endswith(".pub")]
    assert len(private) == 1 and len(public) == 1, sorted(out.iterdir())
    assert private[0].stat().st_mode & 0o777 == 0o600, oct(private[0].stat().st_mode)
    return private[0], public[0]


@dataclass(frozen=True)
class Bundle:
    path: Path
    version: str
    sha256: str
    size: int

    @property
    def name(self) -> str:
        return self.path.name


def describe(path: Path, version: str) -> Bundle:
    return Bundle(path, version, hashlib.sha256(path.read_bytes()).hexdigest(),
                  path.stat().st_size)


def build_bundle(work: Path, out: Path, name: str, *, key: Path, version: str | None = None,
                 patch: Patch | None = None, arch: str = "x86_64",
                 extra: tuple[str, ...] = ()) -> Bundle:
    """``make bundle SIGNING_KEY=key ARCH=arch`` of the tree (``version`` None) or of a copy
    with that version and ``patch``: the copy's own deploy/bundle.py builds it, so a
    variant's migrations and code are its own. Written to ``out/<name>.tar.gz``."""
    tree = ROOT
    if version is not None:
        tree = patched_tree(work / f"tree-{name}", version, patch)
    dist = work / f"dist-{name}"
    proc = subprocess.run([sys.executable, str(tree / "deploy" / "bundle.py"), "--arch", arch,
                           "--out", str(dist), "--signing-key", str(key), *extra],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise AssertionError(f"bundle {name}: {proc.stderr[-3000:]}")
    built = Path(proc.stdout.strip().splitlines()[-1])
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{name}.tar.gz"
    shutil.copyfile(built, dest)
    if tree is not ROOT:
        shutil.rmtree(tree, ignore_errors=True)
    shutil.rmtree(dist, ignore_errors=True)
    return describe(dest, version or load_bundle_tool().project_version())


def tamper(src: Bundle, dest: Path, member: str = "citynode-") -> Bundle:
    """``src`` with one byte of a file's content inverted after signing (in the first
    member whose name contains ``member``, the project's wheel by default), gzipped again:
    what a compromised mirror would serve. Its hash is new, so a command naming it gets
    past the download's sha256 check and must be stopped by the signed manifest."""
    raw = bytearray(gzip.decompress(src.path.read_bytes()))
    with tarfile.open(fileobj=io.BytesIO(bytes(raw))) as tar:
        info = next(m for m in tar.getmembers()
                    if m.isfile() and member in m.name.rsplit("/", 1)[-1] and m.size > 64)
    i = info.offset_data + info.size // 2
    raw[i] ^= 0xFF
    dest.write_bytes(gzip.compress(bytes(raw), compresslevel=6))
    return describe(dest, src.version)


def older_version(version: str) -> str:
    """A version older than ``version``: the last number less one, else a .dev1 of it."""
    parts = version.split(".")
    if all(p.isdigit() for p in parts) and int(parts[-1]) > 0:
        return ".".join([*parts[:-1], str(int(parts[-1]) - 1)])
    return f"{version}.dev1"


# -- programs run inside the container ----------------------------------------------------------
#: Records every message under citynode/<node>/# as a JSON line, decoded, until killed.
EVENTS = """
import json, sys, time
from agent.tools.simulate import Subscriber
out = open(sys.argv[2], "a", buffering=1)
def got(topic, doc, retained):
    out.write(json.dumps({"t": round(time.time(), 3), "topic": topic, "retained": retained,
                          "data": doc}, default=str) + "\\n")
sub = Subscriber("127.0.0.1", 1883, f"citynode/{sys.argv[1]}/#", got)
sub.start()
print("subscribed", flush=True)
while True:
    time.sleep(3600)
"""

#: Signs a command with the node's HMAC key and publishes it (QoS 1): argv node, key file, JSON.
SEND = """
import json, sys
import paho.mqtt.publish as publish
from agent.core.commands import sign_command
key = open(sys.argv[2], "rb").read().removesuffix(b"\\n").removesuffix(b"\\r")
cmd = sign_command(json.loads(sys.argv[3]), key)
publish.single(f"citynode/{sys.argv[1]}/command", json.dumps(cmd), qos=1,
               hostname="127.0.0.1", port=1883)
print(json.dumps(cmd))
"""


def records(doc: object) -> dict[str, object]:
    """A decoded SenML pack as {name: value} (the last of each name wins)."""
    out: dict[str, object] = {}
    recs = doc.get("records", []) if isinstance(doc, dict) else []
    for r in recs:
        if isinstance(r, dict) and "n" in r:
            out[str(r["n"])] = next((r[k] for k in ("vs", "v", "vb", "vd") if k in r), None)
    return out

