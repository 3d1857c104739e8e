"""Logging to journald's native protocol, or to stderr; never silently dropped.

python-systemd's JournalHandler costs about 4 MiB of RSS and drops records without a word when
the journal socket is missing.  The native protocol (systemd.journal-fields(7),
https://systemd.io/JOURNAL_NATIVE_PROTOCOL/) is small: one datagram of ``KEY=value`` lines
to ``/run/systemd/journal/socket``, a length-prefixed form for values holding a newline, and a
sealed memfd passed with SCM_RIGHTS for entries too large for a datagram.

    >>> log = setup_logging("auto", "info", node_id="n1")
    >>> log.getChild("pm").info("reopened %s", port, extra={"SENSOR": "pm", "EVENT": "reopen"})

Structured fields are the record attributes named like journald fields (upper case, digits,
underscore, not starting with ``_``), usually given with ``extra=``.  On stderr they are
appended as ``[KEY=value ...]`` so a console or a stderr-captured unit loses nothing.
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import re
import socket
import stat
import struct
import sys
from collections.abc import Iterator
from typing import TextIO

__all__ = [
    "DEFAULT_SOCKET",
    "JournalHandler",
    "NodeIdFilter",
    "StderrFormatter",
    "journal_fields",
    "setup_logging",
    "syslog_priority",
]

DEFAULT_SOCKET = "/run/systemd/journal/socket"
SOCKET_ENV = "CITYNODE_JOURNAL_SOCKET"
APP_LOGGER = "citynode"

#: What journald accepts from a client: no leading underscore (trusted fields) or digit.
_FIELD_RE = re.compile(r"[A-Z][A-Z0-9_]{0,63}\Z")
#: Which record attributes count as structured fields before validation.
_CANDIDATE_RE = re.compile(r"[A-Z0-9][A-Z0-9_]*\Z")
#: Set by the handler itself; an ``extra=`` of the same name is ignored.
_RESERVED = frozenset({
    "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "CODE_FUNC",
    "LOGGER", "THREAD_NAME",
})
#: Errors after which the payload goes in a memfd, as libsystemd's sd_journal_sendv does.
_TOO_BIG = (errno.EMSGSIZE, errno.ENOBUFS)
_SNDBUF = 8 * 1024 * 1024
_MARK = "_citynode_handler"


def syslog_priority(levelno: int) -> int:
    """Map a logging level to a syslog priority (CRITICAL=2 ... DEBUG=7)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno > logging.INFO:
        return 5  # between INFO and WARNING: "notice"
    if levelno >= logging.INFO:
        return 6
    return 7


def journal_fields(record: logging.LogRecord) -> Iterator[tuple[str, object]]:
    """Yield the valid structured fields a record carries, in a stable order.

    Invalid names (too long, leading digit) are skipped; None values mean "absent".
    """
    for name in sorted(vars(record)):
        if name in _RESERVED or not _CANDIDATE_RE.match(name) or not _FIELD_RE.match(name):
            continue
        value = getattr(record, name)
        if value is not None:
            yield name, value


def _encode_value(value: object) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8", "backslashreplace")


def _encode_field(name: str, value: object) -> bytes:
    """One field in the native protocol; the length-prefixed form when it holds a newline."""
    data = _encode_value(value)
    key = name.encode("ascii")
    if b"\n" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


class StderrFormatter(logging.Formatter):
    """``LEVEL logger: message [KEY=value ...]``, then the traceback if any.

    The first line carries everything but the traceback, so grep and a stderr-captured unit
    still see the structured fields.
    """

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line = f"{record.levelname} {record.name}: {message}"
        fields = [f"{k}={_quote(v)}" for k, v in journal_fields(record)]
        if fields:
            line += " [" + " ".join(fields) + "]"
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _quote(value: object) -> str:
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)
    if text and not any(c in text for c in ' "=[]\n\r\t'):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") + '"'


class JournalHandler(logging.Handler):
    """Sends records to journald with the native protocol; falls back to stderr.

    Too large for a datagram (EMSGSIZE/ENOBUFS): the entry goes in a sealed memfd, as
    libsystemd does.  Any other failure (socket missing, journald gone) writes the record to
    ``sys.stderr`` with StderrFormatter, after a one-line notice each time the journal
    becomes unreachable; the next record tries the journal again.  Sends block like
    sd_journal_send(3) does.  ``sndbuf`` is the socket send buffer asked for (the kernel caps
    it at twice net.core.wmem_max): entries larger than it go through the memfd.
    """

    def __init__(
        self,
        identifier: str = "citynode",
        socket_path: str | None = None,
        level: int = logging.NOTSET,
        sndbuf: int = _SNDBUF,
    ) -> None:
        super().__init__(level)
        self.sndbuf = sndbuf
        self.identifier = identifier
        self.socket_path = socket_path or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
        self.setFormatter(logging.Formatter("%(message)s"))
        self.fallback_formatter: logging.Formatter = StderrFormatter()
        self._sock: socket.socket | None = None
        self._failing = False

    def payload(self, record: logging.LogRecord) -> bytes:
        """The native-protocol bytes for one record (also handy for tests)."""
        parts = [
            _encode_field("MESSAGE", self.format(record)),
            _encode_field("PRIORITY", syslog_priority(record.levelno)),
            _encode_field("SYSLOG_IDENTIFIER", self.identifier),
            _encode_field("CODE_FILE", record.pathname),
            _encode_field("CODE_LINE", record.lineno),
            _encode_field("CODE_FUNC", record.funcName),
            _encode_field("LOGGER", record.name),
            _encode_field("THREAD_NAME", record.threadName),
        ]
        parts.extend(_encode_field(k, v) for k, v in journal_fields(record))
        return b"".join(parts)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = self.payload(record)
        except Exception:  # a log call must never raise; handleError reports it
            self.handleError(record)
            return
        try:
            self._send(data)
        except OSError as exc:
            self._fallback(record, exc)
            return
        self._failing = False

    def close(self) -> None:
        self.acquire()
        try:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        finally:
            self.release()
        super().close()

    def _socket(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:  # capped by net.core.wmem_max; bigger entries take the memfd path
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
            except OSError:
                pass
            self._sock = sock
        return self._sock

    def _send(self, data: bytes) -> None:
        sock = self._socket()
        try:
            sock.sendto(data, self.socket_path)
            return
        except OSError as exc:
            if exc.errno not in _TOO_BIG:
                raise
        fd = os.memfd_create("citynode-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            # journald only maps a memfd carrying exactly these four seals.
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                        | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL)
            rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            sock.sendmsg([], rights, 0, self.socket_path)
        finally:
            os.close(fd)

    def _fallback(self, record: logging.LogRecord, exc: OSError) -> None:
        stream: TextIO | None = sys.stderr
        if stream is None:
            self.handleError(record)
            return
        try:
            if not self._failing:
                self._failing = True
                stream.write(f"citynode: journal {self.socket_path} unavailable ({exc}); "
                             "logging to stderr\n")
            stream.write(self.fallback_formatter.format(record) + "\n")
            stream.flush()
        except Exception:  # as above
            self.handleError(record)


class NodeIdFilter(logging.Filter):
    """Stamps NODE_ID on every record that lacks one (a handler filter, so child loggers too)."""

    def __init__(self, node_id: str) -> None:
        super().__init__()
        self.node_id = node_id

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "NODE_ID", None) is None:
            record.NODE_ID = self.node_id
        return True


def setup_logging(
    target: str = "auto",
    level: str | int = "info",
    identifier: str = "citynode",
    node_id: str | None = None,
    *,
    socket_path: str | None = None,
    stream: TextIO | None = None,
) -> logging.Logger:
    """Configure the "citynode" logger and return it; calling again replaces its handler.

    ``target``: "journal", "stderr", or "auto" (journal when the socket exists, unless
    stderr is a terminal outside systemd).  The socket
    defaults to $CITYNODE_JOURNAL_SOCKET, then /run/systemd/journal/socket.  ``stream`` is the
    stderr target (default: sys.stderr at emit time).  The logger does not propagate, so
    nothing is printed twice if someone configures the root logger too.
    """
    if target not in ("auto", "journal", "stderr"):
        raise ValueError(f"log target must be auto, journal or stderr, not {target!r}")
    if isinstance(level, int):
        levelno = level
    else:
        levelno = logging.getLevelNamesMapping().get(level.upper(), -1)
        if levelno < 0:
            raise ValueError(f"unknown log level {level!r}")
    path = socket_path or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    if target == "auto":
        # A person running citynode in a terminal wants to see its logs there.
        interactive = (stream or sys.stderr).isatty() and "JOURNAL_STREAM" not in os.environ
        target = "journal" if _is_socket(path) and not interactive else "stderr"

    logger = logging.getLogger(APP_LOGGER)
    for old in [h for h in logger.handlers if getattr(h, _MARK, False)]:
        logger.removeHandler(old)
        old.close()
    handler: logging.Handler
    if target == "journal":
        handler = JournalHandler(identifier, path)
    else:
        handler = _StderrHandler(stream)
        handler.setFormatter(StderrFormatter())
    setattr(handler, _MARK, True)
    if node_id is not None:
        handler.addFilter(NodeIdFilter(node_id))
    logger.addHandler(handler)
    logger.setLevel(levelno)
    logger.propagate = False
    return logger


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler that looks up sys.stderr per record (pytest swaps it; so may a daemon)."""

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream or sys.stderr)
        self._fixed = stream is not None

    def emit(self, record: logging.LogRecord) -> None:
        if not self._fixed:
            self.stream = sys.stderr
        super().emit(record)


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False
