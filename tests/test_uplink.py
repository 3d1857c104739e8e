"""The MQTT uplink against a real mosquitto, a dead port and a 3.1.1-only fake broker."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from agent.config import MqttConfig
from agent.sampling import backoff_delay
from agent.simulate import Subscriber, free_port
from agent.uplink import Message, Uplink


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
def test_publishes_in_order_and_acknowledged(mosquitto, protocol):
    got: list[str] = []
    sub = Subscriber(mosquitto.host, mosquitto.port, "t/#", lambda t, d, r: got.append(t))
    sub.start()
    cfg = MqttConfig(host=mosquitto.host, port=mosquitto.port, protocol=protocol)
    up = Uplink(cfg, f"test-{protocol}")
    up.start()
    try:
        from agent.payload import Pack, Record, encode

        for i in range(50):
            up.publish(Message(f"t/{i}", encode(Pack(0, 1, i, [Record("x", value=i)]))))
        assert up.flush(10)
        assert wait_for(lambda: len(got) == 50, 5)
        assert got == [f"t/{i}" for i in range(50)]
        assert up.published == 50 and up.protocol_name == ("3.1.1" if protocol == "3.1.1" else "5")
    finally:
        up.stop()
        sub.stop()


def test_refused_connection_logged_once_per_state_change(caplog):
    port = free_port()  # nothing listens here
    cfg = MqttConfig(host="127.0.0.1", port=port, backoff_initial_s=0.01, backoff_max_s=1.0)
    up = Uplink(cfg, "test-refused")
    caplog.set_level(logging.INFO, logger="citynode.uplink")
    up.start()
    try:
        up.publish(Message("t/x", b"\x80"))
        time.sleep(1.0)  # many attempts at 10 ms .. 1 s backoff
        lines = [r for r in caplog.records if "uplink" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]
        assert "cannot reach" in lines[0].getMessage()
        assert up.pending() == 1  # kept, not dropped
    finally:
        up.stop(timeout=0.2)


def test_messages_survive_broker_restart(tmp_path):
    from agent.simulate import Mosquitto, find_mosquitto

    if find_mosquitto() is None:
        pytest.skip("mosquitto is not installed")
    port = free_port()
    broker = Mosquitto(tmp_path, port=port)
    broker.start()
    got: list[str] = []
    cfg = MqttConfig(host="127.0.0.1", port=port, backoff_initial_s=0.05, backoff_max_s=0.5)
    up = Uplink(cfg, "test-restart")
    up.start()
    try:
        assert wait_for(lambda: up.connected, 5)
        broker.stop()
        assert wait_for(lambda: not up.connected, 5)
        for i in range(10):
            up.publish(Message(f"r/{i}", b"\x80"))
        broker = Mosquitto(tmp_path, port=port)
        broker.start()
        sub = Subscriber("127.0.0.1", port, "r/#", lambda t, d, r: got.append(t))
        sub.start()
        # The uplink reconnects by itself and delivers everything it held, in order.
        assert up.flush(15)
        assert wait_for(lambda: len(got) == 10, 5)
        assert got == [f"r/{i}" for i in range(10)]
        assert up.reconnects >= 1
        sub.stop()
    finally:
        up.stop(timeout=1)
        broker.stop()


def test_queue_bound_drops_oldest_telemetry_first():
    cfg = MqttConfig(host="127.0.0.1", port=free_port(), queue_max=10)
    up = Uplink(cfg, "test-bound")  # not started: nothing is sent
    up.publish(Message("e", b"\x80", kind="event"))
    for i in range(12):
        up.publish(Message(f"t{i}", b"\x80"))
    assert up.pending() == 10 and up.dropped == 3
    topics = [m.topic for m in up._queue]
    assert topics[0] == "e" and topics[1] == "t3"


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
    up = Uplink(cfg, "test-fallback")
    up.start()
    try:
        assert wait_for(lambda: up.connected, 10), fake.levels
        assert fake.levels[0] == 5 and 4 in fake.levels
        assert up.protocol_name == "3.1.1"
    finally:
        up.stop(timeout=0.5)
        fake.stop.set()
