"""The MQTT uplink: paho-mqtt 2.x, MQTT 5 with a 3.1.1 fallback, QoS 1.

A message leaves the queue only when the broker has acknowledged it (PUBACK);
whatever was in flight when a connection dropped is sent again after the next
connect, so delivery is at-least-once and consumers drop duplicates by
(boot session, sequence). Each connection uses a fresh paho client so no state
of a dead session leaks into the next. Reconnects back off exponentially with
full jitter and a cap, and the log gets one line per change of state, not one
per attempt.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from .config import MqttConfig
from .sampling import backoff_delay

log = logging.getLogger("citynode.uplink")

MAX_INFLIGHT = 20


@dataclass(slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False
    content_type: str = ""
    kind: str = "telemetry"  # telemetry | event | state: which may be dropped first when full
    attempts: int = 0


class Uplink:
    """Publishes messages to one broker from a background thread."""

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        *,
        will: Callable[[], Message] | None = None,
        on_connect: Callable[[], list[Message]] = lambda: [],
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.will = will
        self._on_connect_msgs = on_connect
        self._rng = rng or random.Random()
        self._queue: collections.deque[Message] = collections.deque()
        self._inflight: dict[int, Message] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._connected = False
        self._connack: int | None = None
        self._protocol = (
            MQTTProtocolVersion.MQTTv311 if cfg.protocol == "3.1.1" else MQTTProtocolVersion.MQTTv5
        )
        self.state = "starting"
        self.reconnects = 0
        self.published = 0
        self.dropped = 0
        self.connected_since: float | None = None

    # -- public API ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def protocol_name(self) -> str:
        return "5" if self._protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1"

    def publish(self, msg: Message) -> None:
        """Queue a message; it stays queued until the broker acknowledges it."""
        with self._lock:
            if len(self._queue) >= self.cfg.queue_max:
                self._drop_one()
            self._queue.append(msg)
        self._wake.set()

    def pending(self) -> int:
        with self._lock:
            return len(self._queue) + len(self._inflight)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued is acknowledged, or the timeout passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pending():
                return True
            if not self._connected and self._stop.is_set():
                break
            time.sleep(0.05)
        return not self.pending()

    def stop(self, goodbye: Message | None = None, timeout: float = 5.0) -> None:
        """Send a goodbye (clean state) if connected, flush, disconnect."""
        if goodbye is not None and self._connected:
            self.publish(goodbye)
        self.flush(timeout)
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout + 2)

    # -- internals -------------------------------------------------------------
    def _drop_one(self) -> None:
        # Full: drop the oldest telemetry; events and state are kept.
        for i, m in enumerate(self._queue):
            if m.kind == "telemetry":
                del self._queue[i]
                break
        else:
            self._queue.popleft()
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("uplink queue full (%d): dropped %d messages so far",
                        self.cfg.queue_max, self.dropped, extra={"EVENT": "queue_full"})

    def _set_state(self, state: str, level: int = logging.INFO) -> None:
        if state != self.state:
            self.state = state
            log.log(level, "uplink %s", state, extra={"EVENT": "uplink_state"})

    def _new_client(self) -> mqtt.Client:
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=self._protocol,
            reconnect_on_failure=False,
        )
        c.max_inflight_messages_set(MAX_INFLIGHT)
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_publish = self._handle_publish
        if self.will is not None:
            will = self.will()
            props = None
            if self._protocol == MQTTProtocolVersion.MQTTv5 and will.content_type:
                props = Properties(PacketTypes.WILLMESSAGE)
                props.ContentType = will.content_type
            c.will_set(will.topic, will.payload, qos=1, retain=will.retain, properties=props)
        return c

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if self._client is None:
                if self._try_connect():
                    attempt = 0
                else:
                    delay = backoff_delay(attempt, self.cfg.backoff_initial_s,
                                          self.cfg.backoff_max_s, self._rng)
                    attempt += 1
                    self._stop.wait(delay)
                    continue
            client = self._client
            assert client is not None
            rc = client.loop(timeout=0.05)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not self._client_alive():
                self._teardown(f"connection lost ({mqtt.error_string(rc)})")
                continue
            if self._connected:
                self._send_some(client)
            else:
                self._wake.wait(0.01)
        if self._client is not None:
            try:
                self._client.disconnect()
                self._client.loop(timeout=0.2)
            except (OSError, ValueError):
                pass
            self._teardown("stopped")

    def _client_alive(self) -> bool:
        # Set by the disconnect callback or a refused CONNACK.
        return self._client is not None and self._connack in (None, 0)

    def _try_connect(self) -> bool:
        self._connack = None
        client = self._new_client()
        try:
            client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except (TimeoutError, OSError) as exc:
            self._set_state(f"disconnected: cannot reach {self.cfg.host}:{self.cfg.port} ({exc})",
                            logging.WARNING)
            return False
        # Wait for CONNACK.
        deadline = time.monotonic() + 10
        while self._connack is None and time.monotonic() < deadline and not self._stop.is_set():
            if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        if self._connack == 0:
            self._client = client
            return True
        reason = "no CONNACK" if self._connack is None else f"refused ({self._connack_text})"
        try:
            client.disconnect()
        except (OSError, ValueError):
            pass
        if (self.cfg.protocol == "auto" and self._protocol == MQTTProtocolVersion.MQTTv5
                and self._connack in (1, 132)):
            self._protocol = MQTTProtocolVersion.MQTTv311
            log.info("broker does not speak MQTT 5; falling back to 3.1.1",
                     extra={"EVENT": "protocol_fallback"})
            return self._try_connect()
        self._set_state(f"disconnected: broker {reason}", logging.WARNING)
        return False

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connack = int(getattr(reason_code, "value", reason_code))
        self._connack_text = str(reason_code)
        if self._connack != 0:
            return
        if self.connected_since is not None:
            self.reconnects += 1
        self._connected = True
        self.connected_since = time.monotonic()
        self._set_state(f"connected to {self.cfg.host}:{self.cfg.port} (MQTT {self.protocol_name})")
        extra = self._on_connect_msgs()
        with self._lock:
            # Birth first, then whatever was in flight on the last connection, then the rest.
            for m in reversed(extra):
                self._queue.appendleft(m)

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected = False
        self._connack = -1 if self._connack == 0 else self._connack

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            msg = self._inflight.pop(mid, None)
        if msg is None:
            return
        rc = int(reason_code.value) if hasattr(reason_code, "value") else 0
        if rc >= 0x80:
            # The broker refused it (e.g. not authorised): do not retry forever.
            log.warning("broker refused message on %s: %s", msg.topic, reason_code,
                        extra={"EVENT": "publish_refused"})
            self.dropped += 1
        else:
            self.published += 1

    def _send_some(self, client: mqtt.Client) -> None:
        while True:
            with self._lock:
                if not self._queue or len(self._inflight) >= MAX_INFLIGHT:
                    return
                msg = self._queue.popleft()
                props = None
                if self._protocol == MQTTProtocolVersion.MQTTv5 and msg.content_type:
                    props = Properties(PacketTypes.PUBLISH)
                    props.ContentType = msg.content_type
                msg.attempts += 1
                info = client.publish(msg.topic, msg.payload, qos=1, retain=msg.retain,
                                      properties=props)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._queue.appendleft(msg)
                    return
                self._inflight[info.mid] = msg

    def _teardown(self, why: str) -> None:
        client, self._client = self._client, None
        self._connected = False
        with self._lock:
            # Unacknowledged messages go back to the front, in their original order.
            for msg in reversed(list(self._inflight.values())):
                self._queue.appendleft(msg)
            self._inflight.clear()
        if client is not None:
            sock = client.socket()
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        level = logging.INFO if why == "stopped" else logging.WARNING
        self._set_state(f"disconnected: {why}", level)
