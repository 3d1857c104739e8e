"""sd_notify and the progress-gated watchdog against a socket we bind ourselves, as PID 1 would."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Self

import pytest

from agent.core.systemd import STATUS_MAX, Notifier, Watchdog


class Listener:
    """Our side of NOTIFY_SOCKET: collects the datagrams the agent sends."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name

    def recv(self, timeout: float = 1.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536).decode()
        return dict(line.split("=", 1) for line in data.split("\n") if line)

    def drain(self) -> list[dict[str, str]]:
        out = []
        while True:
            try:
                out.append(self.recv(timeout=0.001))
            except TimeoutError:
                return out

    def count_pings(self, duration: float) -> int:
        """Count WATCHDOG=1 datagrams arriving within ``duration`` seconds."""
        end = time.monotonic() + duration
        pings = 0
        while (left := end - time.monotonic()) > 0:
            try:
                msg = self.recv(timeout=left)
            except TimeoutError:
                break
            pings += msg.get("WATCHDOG") == "1"
        return pings


@pytest.fixture
def path_listener() -> Iterator[Listener]:
    with tempfile.TemporaryDirectory(prefix="cn-") as tmp:
        path = os.path.join(tmp, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        yield Listener(sock, path)
        sock.close()


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"citynode-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    yield Listener(sock, "@" + name)
    sock.close()


class Captured(logging.Handler):
    """Records from one logger, whatever setup_logging did to propagation elsewhere."""

    def __init__(self, name: str) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger(name)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def __enter__(self) -> Self:
        self.logger.addHandler(self)
        self._level = self.logger.level
        self.logger.setLevel(logging.DEBUG)
        return self

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self._level)


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_messages_arrive(kind: str, request: pytest.FixtureRequest) -> None:
    listener: Listener = request.getfixturevalue(f"{kind}_listener")
    n = Notifier.from_env({"NOTIFY_SOCKET": listener.name})
    assert n.enabled
    assert n.ready()
    assert listener.recv() == {"READY": "1"}
    assert n.status("sampling pm, power\nnext line")
    assert listener.recv() == {"STATUS": "sampling pm, power next line"}
    assert n.watchdog()
    assert listener.recv() == {"WATCHDOG": "1"}
    assert n.stopping()
    assert listener.recv() == {"STOPPING": "1"}
    n.close()


def test_ready_with_status_reloading_and_extend(path_listener: Listener) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": path_listener.name})
    n.ready("3 sensors up")
    assert path_listener.recv() == {"READY": "1", "STATUS": "3 sensors up"}
    n.reloading()
    msg = path_listener.recv()
    assert msg["RELOADING"] == "1" and int(msg["MONOTONIC_USEC"]) > 0
    n.extend_timeout(45)
    assert path_listener.recv() == {"EXTEND_TIMEOUT_USEC": "45000000"}
    n.notify(ERRNO=5, BUSERROR="a\nb")
    assert path_listener.recv() == {"ERRNO": "5", "BUSERROR": "a b"}


def test_status_is_capped(path_listener: Listener) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": path_listener.name})
    n.status("x" * 1000)
    status = path_listener.recv()["STATUS"]
    assert len(status) == STATUS_MAX and status.endswith("...")


def test_from_os_environ(path_listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_listener.name)
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier.from_env()
    assert n.watchdog_interval == 3.0
    n.ready()
    assert path_listener.recv() == {"READY": "1"}


def test_noop_without_notify_socket() -> None:
    n = Notifier.from_env({"WATCHDOG_USEC": "1000000"})
    assert not n.enabled and n.watchdog_interval is None
    assert n.ready() is False and n.status("x") is False and n.watchdog() is False
    assert n._sock is None  # not even a socket was made
    wd = Watchdog(n)
    beat = wd.register("pm")
    beat()
    wd.start()
    assert wd._thread is None and wd.check() is False
    wd.stop()


def test_send_error_reported_once() -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "/nonexistent/citynode/notify"})
    with Captured("citynode.systemd") as cap:
        assert n.ready() is False
        assert n.status("still fine") is False
        assert n.watchdog() is False
    assert len(cap.records) == 1
    assert cap.records[0].EVENT == "notify_error"
    assert "nonexistent" in cap.records[0].getMessage()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WATCHDOG_USEC": "200000"}, 0.2),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.2),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "junk"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_env(env: dict[str, str], expected: float | None) -> None:
    n = Notifier.from_env({"NOTIFY_SOCKET": "@whatever", **env})
    assert n.watchdog_interval == expected


def test_watchdog_pid_mismatch_disables_pings(path_listener: Listener) -> None:
    env = {"NOTIFY_SOCKET": path_listener.name, "WATCHDOG_USEC": "100000",
           "WATCHDOG_PID": str(os.getpid() + 1)}
    wd = Watchdog(Notifier.from_env(env))
    assert not wd.enabled
    with wd:
        assert path_listener.count_pings(0.1) == 0


def _beat_forever(
    beat: Callable[[], None], stop: threading.Event, every: float = 0.005
) -> threading.Thread:
    def run() -> None:
        while not stop.wait(every):
            beat()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_watchdog_pings_only_while_sources_progress(path_listener: Listener) -> None:
    env = {"NOTIFY_SOCKET": path_listener.name, "WATCHDOG_USEC": "100000"}
    wd = Watchdog(Notifier.from_env(env), period=0.02)
    assert wd.interval == 0.1 and wd.stall_after == 0.1
    pm_stop, power_stop, pm_again = threading.Event(), threading.Event(), threading.Event()
    with Captured("citynode.systemd") as cap, wd:
        pm = wd.register("pm")
        _beat_forever(pm, pm_stop)
        _beat_forever(wd.register("power"), power_stop)
        assert path_listener.count_pings(0.15) >= 4  # about 7 expected

        pm_stop.set()  # the PM loop hangs; power keeps going
        time.sleep(wd.stall_after + 2 * wd.period)
        path_listener.drain()
        assert path_listener.count_pings(0.15) == 0

        stalls = [r for r in cap.records if getattr(r, "EVENT", "") == "watchdog_stall"]
        assert len(stalls) == 1 and stalls[0].SENSOR == "pm"
        assert stalls[0].levelno == logging.ERROR

        _beat_forever(pm, pm_again)  # the PM loop comes back
        assert path_listener.count_pings(0.2) >= 2  # about 9 expected
        recovered = [r for r in cap.records if getattr(r, "EVENT", "") == "watchdog_recovered"]
        assert [r.SENSOR for r in recovered] == ["pm"]
    pm_again.set()
    power_stop.set()
    assert wd._thread is None
    path_listener.drain()
    assert path_listener.count_pings(0.06) == 0  # stopped means stopped


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_check_deterministic(path_listener: Listener) -> None:
    clock = FakeClock()
    n = Notifier(path_listener.name, watchdog_interval=10.0)
    wd = Watchdog(n, clock=clock)
    pm = wd.register("pm")
    slow = wd.register("parking", stall_after=60.0)  # a loop that legitimately sleeps long
    with Captured("citynode.systemd") as cap:
        clock.now += 9
        assert wd.check()  # registering counts as a first beat
        clock.now += 2
        assert not wd.check() and not wd.check()  # pm: 11 s > 10 s
        assert len(cap.records) == 1 and cap.records[0].SENSOR == "pm"
        pm()
        assert wd.check()
        clock.now += 50  # parking silent for 61 s, pm for 50 s
        pm()
        assert not wd.check()
        assert cap.records[-1].SENSOR == "parking"
        slow.close()  # parking was shut down on purpose: it no longer holds pings back
        assert wd.check()
    assert wd.pings == 3
    assert len(path_listener.drain()) == 3


def test_watchdog_without_sources_pings_while_alive(abstract_listener: Listener) -> None:
    wd = Watchdog(Notifier(abstract_listener.name), interval=0.1, period=0.02)
    with wd:
        assert abstract_listener.count_pings(0.1) >= 2
