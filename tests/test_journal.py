"""JournalHandler against a fake journald that parses the native protocol, and its fallbacks."""

from __future__ import annotations

import array
import fcntl
import logging
import os
import socket
import struct
import sys
import tempfile
from collections.abc import Iterator

import pytest

from agent.core.journal import (
    JournalHandler,
    StderrFormatter,
    setup_logging,
    syslog_priority,
)

ALL_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def parse_native(data: bytes) -> list[tuple[str, bytes]]:
    """Decode journald's native protocol, both ``KEY=value`` and the length-prefixed form."""
    fields = []
    pos = 0
    while pos < len(data):
        nl = data.index(b"\n", pos)
        eq = data.find(b"=", pos, nl)
        if eq >= 0:
            fields.append((data[pos:eq].decode(), data[eq + 1 : nl]))
            pos = nl + 1
        else:
            name = data[pos:nl].decode()
            (size,) = struct.unpack_from("<Q", data, nl + 1)
            start = nl + 9
            fields.append((name, data[start : start + size]))
            assert data[start + size : start + size + 1] == b"\n"
            pos = start + size + 1
    return fields


class FakeJournald:
    """A datagram socket where journald's would be; receives entries like journald does."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.raw: list[bytes] = []
        self.via_memfd = 0

    def entry(self, timeout: float = 1.0) -> dict[str, str]:
        """The next entry as a dict (fields must not repeat)."""
        self.sock.settimeout(timeout)
        data, ancdata, _flags, _addr = self.sock.recvmsg(1 << 21, socket.CMSG_SPACE(16))
        for level, kind, payload in ancdata:
            assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            for fd in fds:
                try:
                    # journald only accepts a memfd with exactly these seals
                    assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) == ALL_SEALS
                    data = os.pread(fd, os.fstat(fd).st_size, 0)
                    self.via_memfd += 1
                finally:
                    os.close(fd)
        self.raw.append(data)
        fields = parse_native(data)
        names = [k for k, _ in fields]
        assert len(names) == len(set(names)), names
        return {k: v.decode(errors="surrogateescape") for k, v in fields}

    def empty(self) -> bool:
        self.sock.settimeout(0.05)
        try:
            self.sock.recv(1 << 21)
        except TimeoutError:
            return True
        return False

    def close(self, unlink: bool = True) -> None:
        self.sock.close()
        if unlink and os.path.exists(self.path):
            os.unlink(self.path)


@pytest.fixture
def sockdir() -> Iterator[str]:
    # Short on purpose: sockaddr_un paths stop at 107 bytes, pytest's tmp_path can be longer.
    with tempfile.TemporaryDirectory(prefix="cn-") as tmp:
        yield tmp


@pytest.fixture
def journald(sockdir: str) -> Iterator[FakeJournald]:
    fake = FakeJournald(os.path.join(sockdir, "socket"))
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def restore_app_logger() -> Iterator[None]:
    """setup_logging changes the "citynode" logger globally: put it back for other tests."""
    logger = logging.getLogger("citynode")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for h in list(logger.handlers):
        if h not in saved[0]:
            logger.removeHandler(h)
            h.close()
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    """A private logger (so pytest's root handlers see nothing twice) with no handler yet."""
    log = logging.getLogger("citynode.test.journal")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    yield log
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()


def test_fields(journald: FakeJournald, logger: logging.Logger) -> None:
    logger.addHandler(JournalHandler(socket_path=journald.path))
    logger.warning("reopening %s", "/dev/ttyAMA0",
                   extra={"NODE_ID": "n1", "SENSOR": "pm", "EVENT": "reopen", "RETRY": 3})
    e = journald.entry()
    assert e["MESSAGE"] == "reopening /dev/ttyAMA0"
    assert e["PRIORITY"] == "4"
    assert e["SYSLOG_IDENTIFIER"] == "citynode"
    assert e["CODE_FILE"] == __file__
    assert int(e["CODE_LINE"]) > 0
    assert e["CODE_FUNC"] == "test_fields"
    assert e["LOGGER"] == "citynode.test.journal"
    assert e["THREAD_NAME"] == "MainThread"
    assert (e["NODE_ID"], e["SENSOR"], e["EVENT"], e["RETRY"]) == ("n1", "pm", "reopen", "3")
    assert b"MESSAGE=reopening /dev/ttyAMA0\n" in journald.raw[-1]  # simple form when it can


@pytest.mark.parametrize(
    ("level", "priority"),
    [(logging.DEBUG, "7"), (logging.INFO, "6"), (25, "5"), (logging.WARNING, "4"),
     (logging.ERROR, "3"), (logging.CRITICAL, "2")],
)
def test_priority(journald: FakeJournald, logger: logging.Logger, level: int,
                  priority: str) -> None:
    logger.addHandler(JournalHandler("node-x", socket_path=journald.path))
    logger.log(level, "m")
    e = journald.entry()
    assert e["PRIORITY"] == priority == str(syslog_priority(level))
    assert e["SYSLOG_IDENTIFIER"] == "node-x"


def test_traceback_uses_binary_safe_form(journald: FakeJournald, logger: logging.Logger) -> None:
    logger.addHandler(JournalHandler(socket_path=journald.path))
    try:
        _ = 1 / 0
    except ZeroDivisionError:
        logger.exception("sampling failed", extra={"SENSOR": "pm", "EVENT": "crash"})
    e = journald.entry()
    assert e["PRIORITY"] == "3"
    head, _, trace = e["MESSAGE"].partition("\n")
    assert head == "sampling failed"
    assert trace.startswith("Traceback (most recent call last):")
    assert "ZeroDivisionError: division by zero" in trace
    size = struct.pack("<Q", len(e["MESSAGE"].encode()))
    assert b"MESSAGE\n" + size + b"sampling failed\nTraceback" in journald.raw[-1]
    assert (e["SENSOR"], e["EVENT"]) == ("pm", "crash")


def test_field_name_validation(journald: FakeJournald, logger: logging.Logger) -> None:
    logger.addHandler(JournalHandler(socket_path=journald.path))
    logger.info("hello", extra={
        "lower": "skipped: not a field",
        "_PRIVATE": "skipped: trusted fields are journald's",
        "1ABC": "skipped: leading digit",
        "A" * 65: "skipped: too long",
        "B" * 64: "kept",
        "OK_1": "kept",
        "MULTI": "line1\nline2",
        "RAW": b"\xff\x00bytes",
        "MESSAGE": "skipped: cannot spoof",
        "PRIORITY": "0",
        "GONE": None,
    })
    e = journald.entry()
    extras = set(e) - {"MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE",
                       "CODE_FUNC", "LOGGER", "THREAD_NAME"}
    assert extras == {"B" * 64, "OK_1", "MULTI", "RAW"}
    assert e["MESSAGE"] == "hello" and e["PRIORITY"] == "6"
    assert e["MULTI"] == "line1\nline2"
    assert parse_native(journald.raw[-1])[-1] == ("RAW", b"\xff\x00bytes")


def test_oversized_entry_goes_through_sealed_memfd(journald: FakeJournald,
                                                   logger: logging.Logger) -> None:
    # A tiny send buffer makes the kernel answer EMSGSIZE at 64 KiB, as it would on a Pi
    # (net.core.wmem_max 208 KiB) for entries of a few hundred KiB.
    logger.addHandler(JournalHandler(socket_path=journald.path, sndbuf=4096))
    logger.info("small")
    assert journald.entry()["MESSAGE"] == "small" and journald.via_memfd == 0
    big = "x" * 65536 + "\nend"
    logger.info(big, extra={"EVENT": "big"})
    e = journald.entry()
    assert journald.via_memfd == 1
    assert e["MESSAGE"] == big and e["EVENT"] == "big"
    assert journald.raw[-1].startswith(b"MESSAGE\n")


def test_missing_socket_falls_back_to_stderr(sockdir: str, logger: logging.Logger,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(sockdir, "nothing-here")
    logger.addHandler(JournalHandler(socket_path=path))
    logger.warning("first", extra={"SENSOR": "pm"})
    logger.error("second")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"citynode: journal {path} unavailable")
    assert err[1:] == ["WARNING citynode.test.journal: first [SENSOR=pm]",
                       "ERROR citynode.test.journal: second"]


def test_socket_disappears_and_comes_back(sockdir: str, logger: logging.Logger,
                                          capfd: pytest.CaptureFixture[str]) -> None:
    path = os.path.join(sockdir, "socket")
    fake = FakeJournald(path)
    logger.addHandler(JournalHandler(socket_path=path))
    logger.info("one")
    assert fake.entry()["MESSAGE"] == "one"

    fake.close(unlink=False)  # journald died: the socket file stays, nobody listens
    logger.info("two", extra={"EVENT": "x"})
    os.unlink(path)  # and now the file is gone too
    logger.info("three")
    err = capfd.readouterr().err.splitlines()
    assert "unavailable" in err[0] and "Connection refused" in err[0]
    assert err[1:] == ["INFO citynode.test.journal: two [EVENT=x]",
                       "INFO citynode.test.journal: three"]

    fake = FakeJournald(path)  # journald restarted: back to the journal, nothing on stderr
    logger.info("four")
    assert fake.entry()["MESSAGE"] == "four"
    assert capfd.readouterr().err == ""
    fake.close()
    logger.info("five")  # a new outage is announced again
    err = capfd.readouterr().err.splitlines()
    assert len(err) == 2 and "unavailable" in err[0]


def test_stderr_formatter() -> None:
    fmt = StderrFormatter()
    try:
        raise ValueError("bad frame")
    except ValueError:
        record = logging.LogRecord("citynode.pm", logging.ERROR, __file__, 1, "checksum %s",
                                   ("0x12",), exc_info=sys.exc_info())
    record.SENSOR = "pm"
    record.NOTE = 'two words "quoted"'
    record.EMPTY = ""
    first, *rest = fmt.format(record).split("\n")
    assert first == ('ERROR citynode.pm: checksum 0x12 '
                     '[EMPTY="" NOTE="two words \\"quoted\\"" SENSOR=pm]')
    assert rest[0] == "Traceback (most recent call last):"
    assert rest[-1] == "ValueError: bad frame"


def test_setup_stderr_idempotent_with_node_id(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("stderr", "debug", node_id="n7")
    log = setup_logging("stderr", "debug", node_id="n7")
    assert log.name == "citynode" and len(log.handlers) == 1 and not log.propagate
    log.getChild("pm").debug("frame ok", extra={"SENSOR": "pm"})
    log.info("up", extra={"NODE_ID": "override"})
    assert capsys.readouterr().err.splitlines() == [
        "DEBUG citynode.pm: frame ok [NODE_ID=n7 SENSOR=pm]",
        "INFO citynode: up [NODE_ID=override]",
    ]
    setup_logging("stderr", "warning")  # no node id now, and a higher level
    log.info("hidden")
    log.warning("shown")
    assert capsys.readouterr().err == "WARNING citynode: shown\n"


def test_setup_auto_uses_journal_when_socket_exists(
    journald: FakeJournald, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CITYNODE_JOURNAL_SOCKET", journald.path)
    log = setup_logging("auto", "info", identifier="citynode-t", node_id="n1")
    assert isinstance(log.handlers[0], JournalHandler)
    log.getChild("power").info("hello", extra={"SENSOR": "ina219"})
    log.debug("below level")
    e = journald.entry()
    assert (e["MESSAGE"], e["NODE_ID"], e["SENSOR"]) == ("hello", "n1", "ina219")
    assert e["SYSLOG_IDENTIFIER"] == "citynode-t" and e["LOGGER"] == "citynode.power"
    assert journald.empty()
    assert capsys.readouterr().err == ""


def test_setup_auto_without_socket_uses_stderr(
    sockdir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    log = setup_logging("auto", socket_path=os.path.join(sockdir, "absent"))
    assert not isinstance(log.handlers[0], JournalHandler)
    log.info("plain")
    assert capsys.readouterr().err == "INFO citynode: plain\n"


def test_setup_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="target"):
        setup_logging("syslog")
    with pytest.raises(ValueError, match="level"):
        setup_logging("stderr", "loud")
