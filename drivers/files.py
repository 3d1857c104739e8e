"""Replacing a file atomically: a reader, or the card after a power cut, finds the old
contents or the new ones, never half of them.

One function for every file the node rewrites in place (its state, baselines, the
configuration, credentials, the status snapshot), so each gets the same care: a
temporary file beside the target (same file system, so the rename is atomic), its mode
and owner set before any data is in it, optionally flushed to the card before the rename
and the folder after it, and removed again if anything fails.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Names tried for the temporary file before giving up (each is random).
TEMP_TRIES = 100


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, mode: int | None = None,
                 fsync: bool = True, owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` with ``data`` (a str is written as UTF-8).

    ``mode``: the file's permission bits, whatever the umask (None: those of a file
    ``open()`` creates, 0o666 less the umask). ``owner``: (uid, gid) to give the file
    when they are not the process's own. ``fsync``: flush the file before the rename and
    the folder after it, so the new contents survive a power cut; False for files that
    are worthless after one (it spares the SD card). OSError on failure.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = _create_temp(path)
    try:
        try:
            if owner is not None and owner != (os.geteuid(), os.getegid()):
                os.fchown(fd, *owner)
            if mode is not None:
                os.fchmod(fd, mode)  # after fchown, which may clear set-id bits
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        fsync_dir(path.parent)


def fsync_dir(folder: str | os.PathLike[str]) -> None:
    """Flush a folder's entries (a rename in it) to the card."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new hidden file beside ``path``, created with open()'s mode (0o666 less the umask)
    and never one that exists already (two writers do not share a temporary file)."""
    for _ in range(TEMP_TRIES):
        tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")
