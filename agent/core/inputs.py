"""Reading a command's input: a FILE, or ``-`` for standard input, never more than asked.

Every command that reads a file uses this, so they all agree on the grammar (``-`` is
stdin), on the exit codes (66 no input, 65 data error) and on bounds: a size limit is
checked before anything is read when the file says its size (a regular file), and again
while reading (stdin, a pipe, a character device such as ``/dev/zero``), so an input never
costs more memory than its limit. Opening never hangs: a FIFO without a writer reads as
empty, a directory is refused by name.

Standard library only: the daemon's configuration loader may use it too.
"""

from __future__ import annotations

import io
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, TextIO

__all__ = [
    "EX_DATAERR", "EX_NOINPUT", "STDIN", "InputError", "input_name", "open_input",
    "open_text_input", "read_input", "read_text",
]

EX_DATAERR = 65
EX_NOINPUT = 66
STDIN = "-"


class InputError(Exception):
    """An input that cannot be used: ``str()`` is one line naming it, ``code`` the exit code
    (66 missing, unreadable or not a file; 65 too large or not text)."""

    def __init__(self, name: str, message: str, code: int = EX_NOINPUT) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message
        self.code = code


def input_name(path: str | os.PathLike[str]) -> str:
    """How messages name an input: ``<stdin>`` for ``-``, else the path as given."""
    p = os.fspath(path)
    return "<stdin>" if p == STDIN else p


def _size_text(n: int) -> str:
    return f"{n // 1024} KiB" if n % 1024 == 0 and n < 1024**2 else (
        f"{n // 1024**2} MiB" if n % 1024**2 == 0 else f"{n} bytes")


class _Bounded(io.RawIOBase):
    """A raw stream that raises :class:`InputError` (65) once more than ``limit`` bytes
    have been read: stdin, a pipe or ``/dev/zero`` cannot say their size in advance."""

    def __init__(self, raw: BinaryIO, name: str, limit: int | None, close: bool) -> None:
        super().__init__()
        self._raw, self._name, self._limit, self._close = raw, name, limit, close
        self._seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        if self._limit is not None:
            # One byte beyond the limit is enough to know it is exceeded.
            view = view[:max(1, min(len(view), self._limit + 1 - self._seen))]
        try:
            n = self._raw.readinto(view)  # type: ignore[attr-defined]
        except OSError as exc:
            raise InputError(self._name, f"cannot read: {exc.strerror or exc}") from None
        n = n or 0
        self._seen += n
        if self._limit is not None and self._seen > self._limit:
            raise InputError(self._name, f"larger than {_size_text(self._limit)}", EX_DATAERR)
        return n

    def close(self) -> None:
        if not self.closed and self._close:
            self._raw.close()
        super().close()


def _open_path(path: str, name: str, limit: int | None) -> BinaryIO:
    """Open a named file for reading without blocking on a FIFO, refusing directories and
    (when ``limit`` is set) regular files known to be larger than it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(name, "no such file") from None
    except IsADirectoryError:
        raise InputError(name, "is a directory, not a file") from None
    except OSError as exc:
        raise InputError(name, f"cannot open: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputError(name, "is a directory, not a file")
        if limit is not None and stat.S_ISREG(st.st_mode) and st.st_size > limit:
            raise InputError(name, f"{st.st_size} bytes: larger than {_size_text(limit)}",
                             EX_DATAERR)
        os.set_blocking(fd, True)  # a FIFO with no writer has already read as empty
        return open(fd, "rb", buffering=0, closefd=True)
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def open_input(path: str | os.PathLike[str], *, limit: int | None = None) -> Iterator[BinaryIO]:
    """FILE, or standard input for ``-``, as a buffered binary stream.

    ``limit``: the most bytes it may hold; a regular file larger than that is refused before
    it is read, any other input as soon as it goes beyond it (:class:`InputError`, code 65).
    Missing, unreadable, a directory, or no standard input at all: :class:`InputError`, 66.
    Standard input is not closed on exit.
    """
    p = os.fspath(path)
    name = input_name(p)
    if p == STDIN:
        stdin = sys.stdin
        if stdin is None or getattr(stdin, "buffer", None) is None:
            raise InputError(name, "no standard input")
        raw: BinaryIO = stdin.buffer
        close = False
    else:
        raw = _open_path(p, name, limit)
        close = True
    stream = io.BufferedReader(_Bounded(raw, name, limit, close))
    try:
        yield stream  # type: ignore[misc]
    finally:
        stream.close()


@contextmanager
def open_text_input(path: str | os.PathLike[str], *,
                    limit: int | None = None) -> Iterator[TextIO]:
    """:func:`open_input` as UTF-8 text with universal newlines left to the reader
    (``newline=""``, what :mod:`csv` wants). A byte sequence that is not UTF-8 raises
    :class:`UnicodeDecodeError` while reading: :func:`read_text` turns it into code 65."""
    with open_input(path, limit=limit) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", newline="")  # type: ignore[arg-type]
        try:
            yield text
        finally:
            text.detach()


def read_input(path: str | os.PathLike[str], *, limit: int) -> bytes:
    """All of FILE or stdin, at most ``limit`` bytes (else :class:`InputError`, 65)."""
    with open_input(path, limit=limit) as f:
        return f.read()


def read_text(path: str | os.PathLike[str], *, limit: int) -> str:
    """All of FILE or stdin as UTF-8 text, at most ``limit`` bytes; :class:`InputError`
    with code 65 when it is larger or not UTF-8."""
    data = read_input(path, limit=limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(input_name(path), f"not UTF-8 text (byte {exc.start}: {exc.reason})",
                         EX_DATAERR) from None
