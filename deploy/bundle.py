"""Build the offline install bundle: ``make bundle`` (aarch64) or ``make bundle ARCH=x86_64``.

A node on a pole often has no network worth the name at install time, and a fleet should
run exactly the versions that were tested. The bundle therefore carries every runtime
wheel for the target (CPython 3.11 on aarch64 by default), the project's own wheel, pip
(to bootstrap a venv where python3-venv is missing), install.sh, the systemd unit, the
example configuration, the udev rules and the first-boot script, with a MANIFEST and a
SHA256SUMS that install.sh and ``citynode sdcard-kit`` verify before using anything.

For updates over the air it also writes MANIFEST.json (version, arch, min_version, kind,
downgrade, created, migrations and every file's sha256 and size; agent/update/bundle.py
reads it) and, with a signing key (``--signing-key FILE``, or the environment's
SIGNING_KEY; ``make bundle SIGNING_KEY=...``), MANIFEST.sig: Ed25519 over MANIFEST.json's
exact bytes. An unsigned bundle still installs offline (install.sh, sdcard-kit); a node's
update path refuses it. ``--kind models`` bundles only agent/models' models and their
metadata (no wheels, no network), to update a fleet's models alone.

Binary wheels come from the package index for the target platform (``pip download
--platform``); a dependency published only as an sdist is built into a wheel here with
``pip wheel``, which is accepted only if the result is pure Python (``py3-none-any``).

    python deploy/bundle.py [--arch aarch64|x86_64] [--extras tflite] [--out dist]
        [--signing-key FILE] [--min-version V] [--downgrade] [--kind release|models]
        [--version V (models only)]
"""

from __future__ import annotations

import argparse
import configparser
import datetime as dt
import hashlib
import importlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ARCH_ALIASES = {"arm64": "aarch64", "aarch64": "aarch64", "amd64": "x86_64", "x86_64": "x86_64"}
# Debian bookworm has glibc 2.36: every manylinux tag up to 2_36 runs there.
GLIBC_MAX = 36
# What goes into the bundle besides the wheels: (source relative to ROOT, name in the bundle).
FILES = [
    ("deploy/install.sh", "install.sh"),
    ("deploy/citynode.service", "citynode.service"),
    ("deploy/citynode-update.service", "citynode-update.service"),
    ("deploy/citynode-update.path", "citynode-update.path"),
    ("agent/update/guard.py", "citynode-guard"),
    ("deploy/citynode.toml", "citynode.toml"),
    ("deploy/udev/99-citynode.rules", "udev/99-citynode.rules"),
    ("deploy/firstboot/firstboot.sh", "firstboot/firstboot.sh"),
    ("README.md", "README.md"),
    ("docs/install.md", "install.md"),
]
EXECUTABLE = {"install.sh", "firstboot/firstboot.sh", "citynode-guard"}
#: A models bundle: every model of agent/models and its metadata (same name, .json).
MODELS_DIR = "agent/models"
MAX_KEY_BYTES = 8192


def say(msg: str) -> None:
    print(f"bundle: {msg}", file=sys.stderr, flush=True)


def _signed() -> ModuleType:
    """agent/update/bundle.py of this checkout: the manifest's one writer and reader."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("agent.update.bundle")


def load_signing_key(path: str | os.PathLike[str]) -> Any:
    """The Ed25519 private key in ``path`` (``citynode keys generate``); SystemExit with
    one line when it is missing or not such a key."""
    signed = _signed()
    p = Path(path)
    try:
        st = p.stat()
        if not p.is_file():
            raise SystemExit(f"bundle: --signing-key {p}: not a regular file")
        with p.open("rb") as fh:
            data = fh.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise SystemExit(f"bundle: --signing-key {p}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_BYTES:
        raise SystemExit(f"bundle: --signing-key {p}: larger than {MAX_KEY_BYTES} bytes, "
                         "not a key")
    try:
        key = signed.load_private_key(data, f"--signing-key {p}")
    except signed.BundleError as exc:
        raise SystemExit(f"bundle: {exc}") from None
    if st.st_mode & 0o077:
        say(f"warning: {p} is readable by others (mode {st.st_mode & 0o777:04o}): chmod 600")
    return key


def migration_names() -> list[str]:
    """The configuration migrations this release carries, in the order they run
    (agent/update/migrate.py's registry): the node's installer applies them."""
    try:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        migrate = importlib.import_module("agent.update.migrate")
    except ImportError:
        return []
    return list(getattr(migrate, "MIGRATIONS", {}))


def file_table(top: Path) -> dict[str, dict[str, Any]]:
    """MANIFEST.json's ``files``: every file under ``top`` but the bundle's own metadata,
    with sha256, size and (when set) the executable bit."""
    meta = _signed().META
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(top.rglob("*")):
        rel = p.relative_to(top).as_posix()
        if p.is_symlink() or not p.is_file() or rel in meta:
            continue
        st = p.stat()
        entry: dict[str, Any] = {"sha256": sha256(p), "size": st.st_size}
        if st.st_mode & 0o111:
            entry["executable"] = True
        out[rel] = entry
    return out


def write_manifest(top: Path, *, version: str, arch: str, kind: str, min_version: str,
                   downgrade: bool, created: str, migrations: Sequence[str] = (),
                   signing_key: Any = None, extra: dict[str, str] | None = None) -> bytes:
    """Write MANIFEST.json (and MANIFEST.sig with ``signing_key``) for the files now under
    ``top``, then SHA256SUMS of everything; the manifest's bytes."""
    signed = _signed()
    for what, v in (("version", version), ("min_version", min_version)):
        try:
            signed.parse_version(v)
        except ValueError as exc:
            raise SystemExit(f"bundle: {what}: {exc}") from None
    doc = {**(extra or {}), "format": signed.FORMAT, "name": "citynode", "version": version,
           "arch": arch, "kind": kind, "min_version": min_version, "downgrade": downgrade,
           "created": created, "migrations": list(migrations), "files": file_table(top)}
    raw = signed.manifest_bytes(doc)
    signed.parse_manifest(raw)  # what a node will read: refuse to write what it refuses
    (top / signed.MANIFEST_NAME).write_bytes(raw)
    if signing_key is not None:
        (top / signed.SIG_NAME).write_bytes(signed.sign(signing_key, raw))
    write_sums(top)
    return raw


def write_sums(top: Path) -> None:
    """SHA256SUMS of every other file (install.sh and sdcard-kit check it offline), in the
    one order agent/update/bundle.py expects."""
    signed = _signed()
    files = [p for p in top.rglob("*") if p.is_file() and p.name != signed.SUMS_NAME]
    (top / signed.SUMS_NAME).write_bytes(signed.sums_text(
        {p.relative_to(top).as_posix(): sha256(p) for p in files}))


def project_version(root: Path = ROOT) -> str:
    """The version without importing the package (the build host need not run it)."""
    text = (root / "agent" / "__init__.py").read_text()
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if not m:
        raise SystemExit("bundle: no __version__ in agent/__init__.py")
    return m.group(1)


def extras_available(root: Path = ROOT) -> set[str]:
    cp = configparser.ConfigParser()
    cp.read(root / "setup.cfg")
    return set(cp["options.extras_require"]) if cp.has_section("options.extras_require") else set()


def platforms(arch: str) -> list[str]:
    """pip --platform tags a bookworm machine of this architecture accepts."""
    tags = [f"manylinux_2_{n}_{arch}" for n in range(GLIBC_MAX, 16, -1)]
    return [*tags, f"manylinux2014_{arch}"]


def wheel_ok(name: str, arch: str, pyver: str) -> bool:
    """Whether a wheel file name can be installed by CPython ``pyver`` on ``arch``."""
    parts = name[:-4].split("-")
    if len(parts) < 5:
        return False
    py, abi, plat = parts[-3], parts[-2], parts[-1]
    cp = "cp" + pyver.replace(".", "")
    py_ok = any(t in ("py3", cp) or (t.startswith("cp3") and abi == "abi3")
                for t in py.split("."))
    abi_ok = any(t in ("none", "abi3", cp) for t in abi.split("."))
    plat_ok = all(t == "any" or (t.startswith("manylinux") and t.endswith(arch))
                  for t in plat.split("."))
    return py_ok and abi_ok and plat_ok


def _pip(python: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run([python, "-m", "pip", *args], capture_output=True, text=True, env=env)


#: Not part of the project's source: left out of the copy the wheel is built from.
NOT_SOURCE = (".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache",
              ".ruff_cache", ".hypothesis")


def build_project_wheel(dest: Path, python: str) -> Path:
    """The project's own wheel, built from a clean copy of this checkout: setuptools packs
    whatever its ``build/`` directory still holds, so a file deleted from the tree (the
    fire model, gone since 2026.12) would otherwise go on shipping from an old build."""
    say("building the citynode wheel")
    with tempfile.TemporaryDirectory(prefix="citynode-wheel-") as tmp:
        src = Path(tmp) / "citynode"
        shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
        proc = _pip(python, "wheel", "--no-deps", "-q", "-w", str(dest), str(src))
    if proc.returncode:
        raise SystemExit(f"bundle: pip wheel failed:\n{proc.stdout}{proc.stderr}")
    wheels = sorted(dest.glob("citynode-*.whl"))
    if not wheels:
        raise SystemExit("bundle: pip wheel made no citynode wheel")
    return wheels[-1]


def target_only_requirements(project_wheel: Path, extras: str, arch: str,
                             pyver: str) -> list[str]:
    """Requirements whose environment marker holds on the target but not here.

    ``pip download --platform`` evaluates markers such as ``platform_machine ==
    "aarch64"`` on the machine it runs on, so it would silently leave them out of an
    aarch64 bundle built on a PC; they are fetched by name instead."""
    import zipfile

    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip always carries a copy
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    with zipfile.ZipFile(project_wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        lines = zf.read(meta).decode().splitlines()
    target = {"platform_machine": arch, "platform_system": "Linux", "sys_platform": "linux",
              "os_name": "posix", "python_version": pyver, "python_full_version": pyver + ".0",
              "implementation_name": "cpython", "platform_python_implementation": "CPython"}
    wanted = {""} | {e for e in extras.split(",") if e}
    out = []
    for ln in lines:
        if not ln.startswith("Requires-Dist:"):
            continue
        req = Requirement(ln.split(":", 1)[1].strip())
        if req.marker is None:
            continue
        on_target = any(req.marker.evaluate({**target, "extra": e}) for e in wanted)
        here = any(req.marker.evaluate({"extra": e}) for e in wanted)
        if on_target and not here:
            req.marker = None
            out.append(str(req))
    return out


def download_wheels(spec: str, project_dir: Path, dest: Path, arch: str, pyver: str,
                    python: str) -> list[Path]:
    """Every wheel ``spec`` needs on the target; sdist-only pure-Python deps built here."""
    local = dest.parent / "built-here"
    local.mkdir(exist_ok=True)
    plat_args = [a for p in platforms(arch) for a in ("--platform", p)]
    for _ in range(20):
        say(f"downloading wheels for {spec} (CPython {pyver}, {arch})")
        proc = _pip(python, "download", "-q", "--only-binary=:all:", *plat_args,
                    "--python-version", pyver, "--implementation", "cp",
                    "--find-links", str(project_dir), "--find-links", str(local),
                    "-d", str(dest), spec, "pip")
        if proc.returncode == 0:
            break
        m = re.search(r"No matching distribution found for (\S+)", proc.stderr)
        if not m:
            raise SystemExit(f"bundle: pip download failed:\n{proc.stderr[-3000:]}")
        missing = m.group(1)
        say(f"{missing} has no wheel for the target: building it here (must be pure Python)")
        before = set(local.glob("*.whl"))
        built = _pip(python, "wheel", "--no-deps", "-q", "-w", str(local), missing)
        new = set(local.glob("*.whl")) - before
        if built.returncode or not new:
            raise SystemExit(f"bundle: cannot build {missing}:\n{built.stderr[-2000:]}")
        for w in new:
            if not w.name.endswith("-none-any.whl"):
                raise SystemExit(f"bundle: {missing} is not pure Python ({w.name}) and has no "
                                 f"{arch} wheel on the index: build it on a {arch} machine")
    else:
        raise SystemExit("bundle: too many sdist-only dependencies; giving up")
    wheels = sorted(dest.glob("*.whl"))
    bad = [w.name for w in wheels if not wheel_ok(w.name, arch, pyver)]
    if bad:
        raise SystemExit(f"bundle: wheels that cannot run on {arch}/CPython {pyver}: {bad}")
    return wheels


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            h.update(block)
    return h.hexdigest()


def git_source() -> str:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def assemble(stage: Path, wheels: Sequence[Path], *, version: str, arch: str, pyver: str,
             extras: str, root: Path = ROOT, created: str | None = None,
             min_version: str | None = None, downgrade: bool = False,
             signing_key: Any = None, migrations: Sequence[str] | None = None) -> Path:
    """Lay out ``stage/citynode-bundle-<version>-<arch>/`` with MANIFEST, MANIFEST.json
    (MANIFEST.sig when signed) and SHA256SUMS."""
    top = stage / f"citynode-bundle-{version}-{arch}"
    (top / "wheels").mkdir(parents=True)
    for src, name in FILES:
        dst = top / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / src, dst)
        dst.chmod(0o755 if name in EXECUTABLE else 0o644)
    for w in wheels:
        shutil.copyfile(w, top / "wheels" / w.name)
        (top / "wheels" / w.name).chmod(0o644)
    created = created or now_utc()
    source = git_source() if root == ROOT else "test"
    manifest = {
        "name": "citynode", "version": version, "arch": arch, "python": pyver,
        "extras": extras, "created": created, "source": source,
        "wheels": str(len(wheels)),
    }
    (top / "MANIFEST").write_text("".join(f"{k}={v}\n" for k, v in manifest.items()))
    write_manifest(top, version=version, arch=arch, kind="release",
                   min_version=min_version or _signed().UPDATABLE_SINCE, downgrade=downgrade,
                   created=created, signing_key=signing_key,
                   migrations=migration_names() if migrations is None else migrations,
                   extra={"python": pyver, "extras": extras, "source": source})
    return top


def default_models_version(created: str, root: Path = ROOT) -> str:
    """A models bundle's version when none is given: the release's, plus the build time
    as a local label (``0.1.0+models.20261207143000``), newer than the release itself and
    than every earlier models bundle built for it."""
    return f"{project_version(root)}+models.{re.sub(r'[^0-9]', '', created)}"


def assemble_models(stage: Path, *, version: str, root: Path = ROOT,
                    created: str | None = None, min_version: str | None = None,
                    downgrade: bool = False, signing_key: Any = None) -> Path:
    """Lay out ``stage/citynode-models-<version>-any/models/``: every ``*.tflite`` of
    agent/models with its metadata (the ``.json`` of the same name), MANIFEST.json
    (kind "models", arch "any"), MANIFEST.sig when signed, and SHA256SUMS."""
    src = root / MODELS_DIR
    models = sorted(src.glob("*.tflite"))
    if not models:
        raise SystemExit(f"bundle: no *.tflite in {src}: nothing to bundle")
    top = stage / f"citynode-models-{version}-any"
    (top / "models").mkdir(parents=True)
    for model in models:
        for p in (model, model.with_suffix(".json")):
            if p.is_file():
                shutil.copyfile(p, top / "models" / p.name)
                (top / "models" / p.name).chmod(0o644)
    created = created or now_utc()
    write_manifest(top, version=version, arch="any", kind="models",
                   min_version=min_version or _signed().UPDATABLE_SINCE, downgrade=downgrade,
                   created=created, signing_key=signing_key,
                   extra={"source": git_source() if root == ROOT else "test"})
    return top


def make_tarball(top: Path, out_dir: Path) -> Path:
    """A .tar.gz of ``top`` (owner root, sorted, fixed mtime) and its .sha256 beside it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{top.name}.tar.gz"
    mtime = int(time.time())

    def norm(ti: tarfile.TarInfo) -> tarfile.TarInfo:
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = "root"
        ti.mtime = mtime
        return ti

    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=9) as tar:
        tar.add(top, arcname=top.name, recursive=False, filter=norm)
        for p in sorted(top.rglob("*")):
            tar.add(p, arcname=f"{top.name}/{p.relative_to(top).as_posix()}",
                    recursive=False, filter=norm)
    tmp.replace(out)
    Path(f"{out}.sha256").write_text(f"{sha256(out)}  {out.name}\n")
    return out


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} GiB"


def build(arch: str, extras: str, out_dir: Path, pyver: str = "3.11",
          python: str = sys.executable, *, kind: str = "release", version: str | None = None,
          min_version: str | None = None, downgrade: bool = False,
          signing_key: str | None = None) -> Path:
    t0 = time.monotonic()
    key = load_signing_key(signing_key) if signing_key else None  # before minutes of work
    if kind == "models":
        return _build_models(out_dir, t0, version=version, min_version=min_version,
                             downgrade=downgrade, key=key)
    version = project_version()
    unknown = {e for e in extras.split(",") if e} - extras_available()
    if unknown:
        raise SystemExit(f"bundle: unknown extras {sorted(unknown)}; setup.cfg has "
                         f"{sorted(extras_available())}")
    for src, _ in FILES:
        if not (ROOT / src).is_file():
            raise SystemExit(f"bundle: {src} is missing")
    with tempfile.TemporaryDirectory(prefix="citynode-bundle-") as tmp:
        tmpd = Path(tmp)
        projdir, wheeldir = tmpd / "project", tmpd / "wheels"
        projdir.mkdir()
        wheeldir.mkdir()
        build_project_wheel(projdir, python)
        spec = f"citynode[{extras}]=={version}" if extras else f"citynode=={version}"
        wheels = download_wheels(spec, projdir, wheeldir, arch, pyver, python)
        project_wheel = next(projdir.glob("citynode-*.whl"))
        for extra_spec in target_only_requirements(project_wheel, extras, arch, pyver):
            say(f"{extra_spec}: needed on {arch} only")
            wheels = download_wheels(extra_spec, projdir, wheeldir, arch, pyver, python)
        for w in wheels:
            say(f"  {w.name} ({human(w.stat().st_size)})")
        top = assemble(tmpd / "stage", wheels, version=version, arch=arch, pyver=pyver,
                       extras=extras, min_version=min_version, downgrade=downgrade,
                       signing_key=key)
        out = make_tarball(top, out_dir)
    from agent.tools.sdcard import BundleError, verify_bundle

    try:
        info = verify_bundle(out)
    except BundleError as exc:
        raise SystemExit(f"bundle: the new bundle does not verify: {exc}") from None
    say(f"verified: {len(info.files)} files, citynode {info.version} for {info.arch}")
    _check_signed(out, key)
    say(f"wrote {out} ({human(out.stat().st_size)}, {len(wheels)} wheels) "
        f"in {time.monotonic() - t0:.0f} s")
    print(out)
    return out


def _build_models(out_dir: Path, t0: float, *, version: str | None, min_version: str | None,
                  downgrade: bool, key: Any) -> Path:
    created = now_utc()
    version = version or default_models_version(created)
    with tempfile.TemporaryDirectory(prefix="citynode-models-") as tmp:
        top = assemble_models(Path(tmp), version=version, created=created,
                              min_version=min_version, downgrade=downgrade, signing_key=key)
        out = make_tarball(top, out_dir)
    _check_signed(out, key)
    say(f"wrote {out} ({human(out.stat().st_size)}, models {version}) "
        f"in {time.monotonic() - t0:.0f} s")
    print(out)
    return out


def _check_signed(out: Path, key: Any) -> None:
    """Read the new bundle back as a node will (its signature with the key's public half);
    an unsigned one only for its shape, and said so."""
    signed = _signed()
    try:
        if key is None:
            m = signed.read_manifest(out)
            say(f"UNSIGNED: {m.kind} {m.version}; install.sh and sdcard-kit accept it, a "
                "node's update refuses it (--signing-key FILE, make bundle SIGNING_KEY=...)")
            return
        m = signed.verify_contents(out, [key.public_key()])
    except signed.BundleError as exc:
        raise SystemExit(f"bundle: the new bundle does not verify: {exc}") from None
    say(f"signed by {m.signed_by[:16]}...: {m.kind} {m.version} for {m.arch}, "
        f"{len(m.files)} files, updates {m.min_version} or newer"
        + (", a DOWNGRADE" if m.downgrade else ""))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="aarch64", help="aarch64 (the Pi, default) or x86_64")
    p.add_argument("--extras", default="", help="comma-separated extras, e.g. tflite")
    p.add_argument("--python", dest="pyver", default="3.11", help="target CPython version")
    p.add_argument("--out", default=str(ROOT / "dist"), help="output directory")
    p.add_argument("--kind", choices=("release", "models"), default="release",
                   help="release (default): everything a node runs; models: agent/models' "
                   "models and their metadata only")
    p.add_argument("--version", help="models only: the models bundle's version (default: "
                   "the release's plus +models.<build time>)")
    p.add_argument("--min-version", metavar="V",
                   help="the oldest running citynode that may install this bundle over the "
                   "air (default: the first that can, agent/update/bundle.py UPDATABLE_SINCE)")
    p.add_argument("--downgrade", action="store_true",
                   help="allow nodes running a newer version to install this one (signed)")
    p.add_argument("--signing-key", metavar="FILE",
                   default=os.environ.get("SIGNING_KEY") or None,
                   help="Ed25519 private key (citynode keys generate) to sign MANIFEST.json "
                   "with (default: $SIGNING_KEY; none: an unsigned bundle)")
    args = p.parse_args(argv)
    arch = ARCH_ALIASES.get(args.arch)
    if arch is None:
        p.error(f"--arch {args.arch}: use aarch64 or x86_64")
    if args.version and args.kind != "models":
        p.error("--version is for --kind models (a release's version is the package's)")
    build(arch, args.extras.replace(" ", ""), Path(args.out), args.pyver, kind=args.kind,
          version=args.version, min_version=args.min_version, downgrade=args.downgrade,
          signing_key=args.signing_key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
