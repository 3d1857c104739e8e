"""Every kind of thing a path can name, for tests of code that writes files: the writer
must replace only a regular file (or create a missing one), and write through symlinks."""

from __future__ import annotations

import os
import socket
import stat
import tempfile
from pathlib import Path


def _can_mknod() -> bool:
    with tempfile.TemporaryDirectory() as d:
        try:
            os.mknod(os.path.join(d, "null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        except OSError:
            return False
        return True


CAN_MKNOD = _can_mknod()
#: Every kind of thing a path can name. chardev is a /dev/null (1, 3) of our own.
KINDS = ["regular", "missing", "link", "dangling", "chain", "dir", "fifo", "socket",
         "link_to_dir", "link_to_fifo", "loop", *(["chardev", "link_to_chardev"]
                                                  if CAN_MKNOD else [])]
#: Kinds whose write goes through: the final target is a regular file or missing.
WRITABLE = {"regular", "missing", "link", "dangling", "chain"}


def make(path: Path, kind: str, content: bytes = b"old") -> None:
    """Put a ``kind`` at ``path`` (its folder exists); links point inside the same folder,
    regular files hold ``content``."""
    other = path.with_name(path.name + ".target")
    if kind == "regular":
        path.write_bytes(content)
    elif kind == "dir":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    elif kind == "chardev":
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    elif kind == "link":
        other.write_bytes(content)
        path.symlink_to(other.name)
    elif kind == "dangling":
        path.symlink_to(other.name)
    elif kind == "chain":
        other.write_bytes(content)
        mid = path.with_name(path.name + ".mid")
        mid.symlink_to(other.name)
        path.symlink_to(mid.name)
    elif kind == "loop":
        path.symlink_to(path.name + ".loop")
        path.with_name(path.name + ".loop").symlink_to(path.name)
    elif kind.startswith("link_to_"):
        make(other, kind.removeprefix("link_to_"), content)
        path.symlink_to(other.name)
    else:
        assert kind == "missing"


def snapshot(folder: Path) -> dict[str, tuple[int, int, bytes | str | None]]:
    """Every entry's type, device number and contents (or link text): what must not change."""
    out = {}
    for p in sorted(folder.iterdir()):
        st = os.lstat(p)
        body: bytes | str | None = None
        if stat.S_ISREG(st.st_mode):
            body = p.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            body = os.readlink(p)
        out[p.name] = (stat.S_IFMT(st.st_mode), st.st_rdev, body)
    return out


def check_outcome(folder: Path, name: str, kind: str, before: dict, wrote: bool,
                  data: bytes | None = None) -> None:
    """A refused write changed nothing; an accepted one replaced only the final target,
    keeping every link; no temporary file is left either way. ``data``: what the target
    must hold now (None: not checked)."""
    after = snapshot(folder)
    assert not [n for n in after if n.endswith(".tmp")], after
    if not wrote:
        assert after == before
        return
    path = folder / name
    real = Path(os.path.realpath(path))
    assert real.is_file() and (data is None or real.read_bytes() == data)
    for n, (fmt, rdev, body) in before.items():
        if folder / n != real:
            assert after[n] == (fmt, rdev, body), n  # the links themselves are kept
    assert os.path.islink(path) == (kind in ("link", "dangling", "chain"))
