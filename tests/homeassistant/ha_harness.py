"""A small paho harness that drives a Home Assistant session against a real broker (as
the uplink does: will before connecting, subscriptions and opening on CONNACK, inbound to
``receive``, reactions published), and a watcher that reads what the broker keeps."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from agent.wire.model import Pack
from agent.wire.session import Item, Out, Session


def wait_for(cond: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or cond}")


class Harness:
    """One session on one connection (MQTT 3.1.1, as Home Assistant's broker add-on
    speaks it by default)."""

    def __init__(self, port: int, session: Session) -> None:
        self.port, self.session = port, session
        self.lock = threading.Lock()
        self.pending: list[mqtt.MQTTMessageInfo] = []
        self.connected = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"node-{uuid.uuid4().hex[:6]}",
                        protocol=MQTTProtocolVersion.MQTTv311)
        will = session.will(Pack(time=time.time(), session=1, seq=None))
        if will is not None:
            c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self.client = c

    def _on_connect(self, client, userdata, flags, rc, props) -> None:
        for topic in self.session.subscriptions():
            client.subscribe(topic, qos=1)
        self.publish(self.session.opening())
        self.connected.set()

    def _on_message(self, client, userdata, msg) -> None:
        r = self.session.receive(msg.topic, bytes(msg.payload), retained=bool(msg.retain))
        if r.reopen:
            self.publish(self.session.opening())
        self.publish(r.send)

    def publish(self, outs: list[Out]) -> None:
        for o in outs:
            info = self.client.publish(o.topic, o.payload, qos=o.qos, retain=o.retain)
            with self.lock:
                self.pending.append(info)

    def render(self, item: Item) -> None:
        self.publish(self.session.render(item))

    def flush(self, timeout: float = 10.0) -> None:
        """Until the broker has acknowledged everything published so far."""
        with self.lock:
            pending, self.pending = self.pending, []
        for info in pending:
            info.wait_for_publish(timeout)

    def __enter__(self) -> Harness:
        self.client.connect("127.0.0.1", self.port, keepalive=5)
        self.client.loop_start()
        assert self.connected.wait(10), "the harness did not connect"
        self.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()
        self.client.disconnect()  # clean: the broker drops the will
        self.client.loop_stop()

    def vanish(self) -> None:
        """Gone without a DISCONNECT (power cut): the broker publishes the will."""
        self.client.loop_stop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()


class Watcher:
    """Records every message on ``topic`` (Home Assistant's view of the broker)."""

    def __init__(self, port: int, topic: str = "#") -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ha-{uuid.uuid4().hex[:6]}",
                        protocol=MQTTProtocolVersion.MQTTv311)
        c.on_connect = lambda cl, u, f, rc, p: (cl.subscribe(topic, qos=1), None)[1]
        c.on_subscribe = lambda *a: self.ready.set()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port, keepalive=30)
        c.loop_start()
        assert self.ready.wait(10), "the watcher did not subscribe"
        self.client = c

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def on(self, topic: str) -> list[bytes]:
        with self.lock:
            return [p for t, p, _ in self.messages if t == topic]

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(port: int, topic: str = "#", settle: float = 0.7) -> dict[str, bytes]:
    """What the broker keeps under ``topic``: a fresh subscriber's retained messages."""
    w = Watcher(port, topic)
    time.sleep(settle)
    w.close()
    out: dict[str, bytes] = {}
    for t, p, was_retained in w.messages:
        if was_retained:
            out[t] = p
    return out
