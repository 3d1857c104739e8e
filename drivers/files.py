"""Replacing a file atomically: a reader, or the card after a power cut, finds the old
contents or the new ones, never half of them.

One function for every file the node rewrites in place (its state, baselines, the
configuration, credentials, the status snapshot), so each gets the same care: a
temporary file beside the target (same file system, so the rename is atomic), its mode
and owner set before any data is in it, optionally flushed to the card before the rename
and the folder after it, and removed again if anything fails.

It only ever replaces a regular file (or creates a missing one). The rename would
otherwise put a file where a device node, a FIFO, a socket or a directory was (run as
root, ``--config /dev/null`` once turned /dev/null into a text file). A symlink is
followed to its final target, which gets the new contents and keeps the link, as an
editor does; the target must itself be a regular file or missing.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

#: Names tried for the temporary file before giving up (each is random).
TEMP_TRIES = 100


class NotRegularFile(OSError):
    """The path names something other than a regular file: never ours to replace."""


def kind_of(mode: int) -> str:
    """What a file is, for a message: "a directory", "a character device"..."""
    for test, name in ((stat.S_ISREG, "a regular file"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "a special file"


def resolve_target(path: str | os.PathLike[str]) -> Path:
    """The file a write to ``path`` replaces: ``path``, or the final target of its symlinks.

    Returns an absolute path that is a regular file or does not exist (its folder may not
    exist either: the caller's open then fails with FileNotFoundError). Raises
    :class:`NotRegularFile` when it exists as anything else, OSError(ELOOP) for a symlink
    loop, NotADirectoryError when a component of the path is a file.
    """
    real = Path(os.path.realpath(path))  # not strict: a dangling link resolves to its target
    try:
        st = os.lstat(real)
    except FileNotFoundError:
        return real
    if stat.S_ISLNK(st.st_mode):  # realpath stops at a loop
        raise OSError(errno.ELOOP, "is a symbolic link loop", os.fspath(path))
    if not stat.S_ISREG(st.st_mode):
        shown = os.fspath(path) if os.fspath(path) == str(real) else f"{path} -> {real}"
        raise NotRegularFile(errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EEXIST,
                             f"is {kind_of(st.st_mode)}, not a regular file; refusing to "
                             "replace it", shown)
    return real


def write_atomic(path: str | os.PathLike[str], data: bytes | str, *, mode: int | None = None,
                 fsync: bool = True, owner: tuple[int, int] | None = None) -> Path:
    """Replace ``path`` with ``data`` (a str is written as UTF-8); return the file written.

    ``mode``: the file's permission bits, whatever the umask (None: those of a file
    ``open()`` creates, 0o666 less the umask). ``owner``: (uid, gid) to give the file
    when they are not the process's own. ``fsync``: flush the file before the rename and
    the folder after it, so the new contents survive a power cut; False for files that
    are worthless after one (it spares the SD card). A symlink is written through to its
    target (the path returned). OSError on failure; :class:`NotRegularFile` (an OSError)
    when the target is a directory, device, FIFO or socket, which is left as it was.
    """
    target = resolve_target(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = _create_temp(target)
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
        if resolve_target(target) != target:  # replaced by a link meanwhile: check again
            raise OSError(errno.EAGAIN, "changed while being written", os.fspath(path))
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    if fsync:
        fsync_dir(target.parent)
    return target


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
