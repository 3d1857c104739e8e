"""Build the offline install bundle: ``make bundle`` (aarch64) or ``make bundle ARCH=x86_64``.

A node on a pole often has no network worth the name at install time, and a fleet should
run exactly the versions that were tested. The bundle therefore carries every runtime
wheel for the target (CPython 3.11 on aarch64 by default), the project's own wheel, pip
(to bootstrap a venv where python3-venv is missing), install.sh, the systemd unit, the
example configuration, the udev rules and the first-boot script, with a MANIFEST and a
SHA256SUMS that install.sh and ``citynode sdcard-kit`` verify before using anything.

Binary wheels come from the package index for the target platform (``pip download
--platform``); a dependency published only as an sdist is built into a wheel here with
``pip wheel``, which is accepted only if the result is pure Python (``py3-none-any``).

    python deploy/bundle.py [--arch aarch64|x86_64] [--extras tflite] [--out dist]
"""

from __future__ import annotations

import argparse
import configparser
import datetime as dt
import hashlib
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

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
ARCH_ALIASES = {"arm64": "aarch64", "aarch64": "aarch64", "amd64": "x86_64", "x86_64": "x86_64"}
# Debian bookworm has glibc 2.36: every manylinux tag up to 2_36 runs there.
GLIBC_MAX = 36
# What goes into the bundle besides the wheels: (source relative to ROOT, name in the bundle).
FILES = [
    ("deploy/install.sh", "install.sh"),
    ("deploy/citynode.service", "citynode.service"),
    ("deploy/citynode.toml", "citynode.toml"),
    ("deploy/udev/99-citynode.rules", "udev/99-citynode.rules"),
    ("deploy/firstboot/firstboot.sh", "firstboot/firstboot.sh"),
    ("README.md", "README.md"),
    ("docs/install.md", "install.md"),
]
EXECUTABLE = {"install.sh", "firstboot/firstboot.sh"}


def say(msg: str) -> None:
    print(f"bundle: {msg}", file=sys.stderr, flush=True)


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


def assemble(stage: Path, wheels: Sequence[Path], *, version: str, arch: str, pyver: str,
             extras: str, root: Path = ROOT, created: str | None = None) -> Path:
    """Lay out ``stage/citynode-bundle-<version>-<arch>/`` with MANIFEST and SHA256SUMS."""
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
    created = created or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = {
        "name": "citynode", "version": version, "arch": arch, "python": pyver,
        "extras": extras, "created": created, "source": git_source() if root == ROOT else "test",
        "wheels": str(len(wheels)),
    }
    (top / "MANIFEST").write_text("".join(f"{k}={v}\n" for k, v in manifest.items()))
    files = sorted(p for p in top.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    (top / "SHA256SUMS").write_text(
        "".join(f"{sha256(p)}  {p.relative_to(top).as_posix()}\n" for p in files))
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
          python: str = sys.executable) -> Path:
    t0 = time.monotonic()
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
                       extras=extras)
        out = make_tarball(top, out_dir)
    sys.path.insert(0, str(ROOT))
    from agent.tools.sdcard import BundleError, verify_bundle

    try:
        info = verify_bundle(out)
    except BundleError as exc:
        raise SystemExit(f"bundle: the new bundle does not verify: {exc}") from None
    say(f"verified: {len(info.files)} files, citynode {info.version} for {info.arch}")
    say(f"wrote {out} ({human(out.stat().st_size)}, {len(wheels)} wheels) "
        f"in {time.monotonic() - t0:.0f} s")
    print(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="aarch64", help="aarch64 (the Pi, default) or x86_64")
    p.add_argument("--extras", default="", help="comma-separated extras, e.g. tflite")
    p.add_argument("--python", dest="pyver", default="3.11", help="target CPython version")
    p.add_argument("--out", default=str(ROOT / "dist"), help="output directory")
    args = p.parse_args(argv)
    arch = ARCH_ALIASES.get(args.arch)
    if arch is None:
        p.error(f"--arch {args.arch}: use aarch64 or x86_64")
    build(arch, args.extras.replace(" ", ""), Path(args.out), args.pyver)
    return 0


if __name__ == "__main__":
    sys.exit(main())
