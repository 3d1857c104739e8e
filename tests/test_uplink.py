"""The MQTT uplink against a real mosquitto, a dead port and a 3.1.1-only fake broker."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from agent.core.config import MqttConfig
from agent.core.sampling import backoff_delay
from agent.tools.simulate import Subscriber, free_port
from agent.wire import formats
from agent.wire.formats import Format, senml
from agent.wire.model import Pack, Record
from agent.wire.spool import TELEMETRY, Spool
from agent.wire.uplink import Message, TokenBucket, Uplink

ROOT = Path(__file__).resolve().parent.parent
CBOR, JSON = formats.get("senml-cbor"), formats.get("senml-json")


def message(topic: str, pack: Pack, kind: str = "telemetry", fmt: Format = CBOR) -> Message:
    """As the daemon builds it: the format's payload, content type and historical mark."""
    enc = fmt.encode(pack)
    return Message(topic, enc.payload, content_type=fmt.content_type, kind=kind, mark=enc.mark)


@pytest.fixture
def spool(tmp_path):
    s = Spool(tmp_path / "spool.db", batch_s=0)
    yield s
    s.close()


def wait_for(pred, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_backoff_is_full_jitter_and_capped():
    import random

    rng = random.Random(1)
    delays = [backoff_delay(a, 1.0, 30.0, rng) for a in range(40) for _ in range(20)]
    assert all(0 <= d <= 30.0 for d in delays)
    early = [backoff_delay(0, 1.0, 30.0, rng) for _ in range(200)]
    assert max(early) <= 1.0 and min(early) < 0.2  # spread over [0, 1], not lock-step
    late = [backoff_delay(20, 1.0, 30.0, rng) for _ in range(200)]
    assert max(late) > 25 and min(late) < 5


@pytest.mark.parametrize("protocol", ["5", "3.1.1", "auto"])
def test_publishes_in_order_and_acknowledged(mosquitto, protocol, spool):
    got: list[str] = []
    sub = Subscriber(mosquitto.host, mosquitto.port, "t/#", lambda t, d, r: got.append(t))
    sub.start()
    cfg = MqttConfig(host=mosquitto.host, port=mosquitto.port, protocol=protocol)
    up = Uplink(cfg, f"test-{protocol}", spool)
    up.start()
    try:
        for i in range(50):
            up.publish(message(f"t/{i}", Pack(0, 1, i, [Record("x", value=i)])))
        assert up.flush(10)
        assert wait_for(lambda: len(got) == 50, 5)
        assert got == [f"t/{i}" for i in range(50)]
        assert up.published == 50 and up.protocol_name == ("3.1.1" if protocol == "3.1.1" else "5")
    finally:
        up.stop()
        sub.stop()


def test_refused_connection_logged_once_per_state_change(caplog, spool):
    port = free_port()  # nothing listens here
    cfg = MqttConfig(host="127.0.0.1", port=port, backoff_initial_s=0.01, backoff_max_s=1.0)
    up = Uplink(cfg, "test-refused", spool)
    caplog.set_level(logging.INFO, logger="citynode.uplink")
    up.start()
    try:
        up.publish(Message("t/x", b"\x80"))
        time.sleep(1.0)  # many attempts at 10 ms .. 1 s backoff
        lines = [r for r in caplog.records if "uplink" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert "cannot connect" in lines[0].getMessage()
        assert up.pending() == 1  # kept, not dropped
    finally:
        up.stop(timeout=0.2)


def test_messages_survive_an_outage(mosquitto, spool):
    from netproxy import TcpProxy

    proxy = TcpProxy((mosquitto.host, mosquitto.port))
    got: list[str] = []
    sub = Subscriber(mosquitto.host, mosquitto.port, "r/#", lambda t, d, r: got.append(t))
    sub.start()
    cfg = MqttConfig(host="127.0.0.1", port=proxy.port, backoff_initial_s=0.05,
                     backoff_max_s=0.5)
    up = Uplink(cfg, "test-outage", spool)
    up.start()
    try:
        assert wait_for(lambda: up.connected, 5)
        proxy.cut()
        assert wait_for(lambda: not up.connected, 5)
        for i in range(10):
            up.publish(Message(f"r/{i}", b"\x80"))
        time.sleep(1.0)  # retries meet a refused connection
        assert got == [] and up.pending() == 10
        proxy.restore()
        # The uplink reconnects by itself and delivers everything it held, in order.
        assert up.flush(15)
        assert wait_for(lambda: len(got) == 10, 5)
        assert got == [f"r/{i}" for i in range(10)]
        assert up.reconnects >= 1
    finally:
        up.stop(timeout=1)
        sub.stop()
        proxy.close()


def test_events_go_before_telemetry_backlog_and_backlog_is_historical(mosquitto, spool):
    got: list[tuple[str, bool]] = []
    sub = Subscriber(mosquitto.host, mosquitto.port, "o/#",
                     lambda t, d, r: got.append((t, d.get("historical", False))))
    sub.start()
    cfg = MqttConfig(host=mosquitto.host, port=mosquitto.port)
    up = Uplink(cfg, "test-lanes", spool)
    for i in range(30):  # a backlog accepted before any connection, in both formats
        pack = Pack(1000 + i, 1, i, [Record("x", value=i)])
        if i % 10 == 9:  # as tools and older versions spooled it: no content type, no mark
            spool.put(TELEMETRY, f"o/t/{i}", CBOR.encode(pack).payload)
        else:
            up.publish(message(f"o/t/{i}", pack, fmt=(CBOR, JSON)[i % 2]))
    up.publish(message("o/alarm", Pack(2000, 1, 30, [Record("fire", text="on")]), kind="event"))
    time.sleep(1.1)  # the backlog is older than the connection by more than the 1 s slack
    up.start()
    try:
        assert up.flush(10) and wait_for(lambda: len(got) == 31, 5)
        assert got[0] == ("o/alarm", True)  # alarm first, though accepted last
        assert [t for t, _ in got[1:]] == [f"o/t/{i}" for i in range(30)]  # order kept
        assert all(h for _, h in got)  # all waited through the "outage"
        live = message("o/live", Pack(3000, 1, 31, [Record("x", value=1)]))
        up.publish(live)
        assert up.flush(5) and wait_for(lambda: len(got) == 32, 5)
        assert got[-1] == ("o/live", False)
    finally:
        up.stop(timeout=1)
        sub.stop()


def test_drain_rate_bounds_the_backlog_drain(mosquitto, spool):
    got: list[float] = []
    sub = Subscriber(mosquitto.host, mosquitto.port, "d/#", lambda t, d, r: got.append(
        time.monotonic()))
    sub.start()
    for i in range(40):
        spool.put("telemetry", f"d/{i}", b"\x81\xa1\x00\x61\x78")
    up = Uplink(MqttConfig(host=mosquitto.host, port=mosquitto.port), "test-rate", spool,
                drain_rate=20)
    up.start()
    try:
        assert up.flush(10) and wait_for(lambda: len(got) == 40, 5)
        rate = (len(got) - 21) / (got[-1] - got[20])  # after the one-second burst
        assert 12 < rate < 28, rate
    finally:
        up.stop(timeout=1)
        sub.stop()


def test_token_bucket():
    t = [0.0]
    b = TokenBucket(10, clock=lambda: t[0])
    assert sum(b.take() for _ in range(100)) == 10  # a burst of one second
    t[0] += 0.5
    assert sum(b.take() for _ in range(100)) == 5
    assert all(TokenBucket(0).take() for _ in range(1000))  # 0 = unlimited


class Fake311Broker(threading.Thread):
    """Speaks just enough MQTT 3.1.1: refuses protocol level 5, accepts level 4."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen()
        self.srv.settimeout(0.2)
        self.port = self.srv.getsockname()[1]
        self.levels: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    data = conn.recv(1024)
                except OSError:
                    continue
                # fixed header (1) + remaining length (1) + "\0\4MQTT" (6) -> level byte at 8
                level = data[8] if len(data) > 8 else 0
                self.levels.append(level)
                if level != 4:
                    conn.sendall(b"\x20\x02\x00\x01")  # CONNACK: unacceptable protocol version
                    continue
                conn.sendall(b"\x20\x02\x00\x00")
                while not self.stop.is_set():
                    try:
                        if not conn.recv(1024):
                            break
                    except OSError:
                        break


def test_auto_falls_back_to_311_when_broker_refuses_5():
    fake = Fake311Broker()
    fake.start()
    cfg = MqttConfig(host="127.0.0.1", port=fake.port, protocol="auto",
                     backoff_initial_s=0.05, backoff_max_s=0.2)
    up = Uplink(cfg, "test-fallback", Spool(Path(tempfile.mkdtemp()) / "s.db"))
    up.start()
    try:
        assert wait_for(lambda: up.connected, 10), fake.levels
        assert fake.levels[0] == 5 and 4 in fake.levels
        assert up.protocol_name == "3.1.1"
    finally:
        up.stop(timeout=0.5)
        fake.stop.set()


# -- marking the backlog historical --------------------------------------------------------
def backlog_packs() -> list[Pack]:
    return [
        Pack(1763900000, 3, 1440, [Record("pm25", value=12.4), Record("w", value=1234.5)]),
        Pack(1763900071.482, 2**32 - 1, 2**40, [Record("pm:health", text="errors", t=-1.5)]),
        Pack(1763900000, 3, None, [Record("door", flag=True)] * 30),  # a two-byte array head
    ]


def test_backlog_is_marked_by_its_format_without_decoding(spool, monkeypatch):
    up = Uplink(MqttConfig(host="127.0.0.1"), "test-mark", spool)
    expected = []
    for fmt in (CBOR, JSON):
        for pack in backlog_packs():
            up.publish(message("t", pack, fmt=fmt))
            pack.historical = True
            expected.append(fmt.encode(pack).payload)
    up._connected_wall = time.time() + 10  # everything spooled is older than the connection

    def no_decoding(payload: bytes) -> Pack:
        raise AssertionError("the uplink decoded a payload that had a mark")

    monkeypatch.setattr(senml, "decode", no_decoding)
    items = spool.iter_ready(TELEMETRY)
    assert all(item.mark is not None for item in items)
    assert [up._wire(item)[0] for item in items] == expected
    assert up.historical == len(expected)


def test_rows_without_a_mark_are_marked_by_decoding(spool):
    """Spools written before marks existed, and rows put without a content type: decoded
    and re-encoded in the representation they came in, as before marks existed."""
    up = Uplink(MqttConfig(host="127.0.0.1"), "test-old", spool)
    expected = []
    for fmt in (CBOR, JSON):
        for pack in backlog_packs():
            spool.put(TELEMETRY, "t", fmt.encode(pack).payload, content_type=fmt.content_type)
            spool.put(TELEMETRY, "t", fmt.encode(pack).payload)  # no content type either
            back = formats.decode(fmt.encode(pack).payload)
            back.historical = True
            expected += [(fmt.encode(back).payload[:1], back)] * 2
    spool.put(TELEMETRY, "t", b"\x80", content_type=CBOR.content_type)  # not a pack: as it is
    spool.put(TELEMETRY, "t", b"raw", content_type="application/octet-stream")
    up._connected_wall = time.time() + 10
    sent = [up._wire(m)[0] for m in spool.iter_ready(TELEMETRY)]
    assert sent[-2:] == [b"\x80", b"raw"]
    assert [(data[:1], formats.decode(data)) for data in sent[:-2]] == expected
    assert up.historical == len(expected)


def test_live_messages_are_not_marked(spool):
    up = Uplink(MqttConfig(host="127.0.0.1"), "test-live", spool)
    up._connected_wall = time.time() - 10
    up.publish(message("t", backlog_packs()[0]))
    item = spool.iter_ready(TELEMETRY)[0]
    assert up._wire(item)[0] == CBOR.encode(backlog_packs()[0]).payload
    assert up.historical == 0


def test_the_uplink_knows_no_payload_format() -> None:
    code = ("import sys\nimport agent.wire.uplink\n"
            "print(sorted(m for m in sys.modules if m.startswith('agent.wire.formats.')))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["[]"]
