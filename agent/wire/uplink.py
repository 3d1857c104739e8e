"""The MQTT uplinks: paho-mqtt 2.x, MQTT 5 with a 3.1.1 fallback, QoS 1, fed by the spool.

A node has one uplink per configured platform ([mqtt], each [[uplink]]); each is one
broker connection with its own thread, backoff, health and position in the one spool
(:class:`agent.wire.spool.Spool` readers), and speaks through its format's session
(:mod:`agent.wire.session`: the platform's topics, births, responses, commands). An
outage of one holds no other back. :class:`Uplinks` gives the daemon one face for all.

Every numbered message (birth, events, results, telemetry, health) waits in the
durable :class:`agent.wire.spool.Spool` and leaves it only when the broker has
acknowledged it (PUBACK); whatever was in flight when a connection dropped is sent
again after the next connect. Delivery is at-least-once; consumers drop duplicates by
(boot session, sequence).

Order of sending on a connection (docs/spool.md section 1): the birth first, then what
was accepted less than a second before the connection came up or since (*live*), then
what waited through an outage (*history*). Live: events and results in order, the
format's announcements, then telemetry in order. History: events, then telemetry, each
in order, the telemetry at most ``drain_rate`` a second so a fleet coming back at once
does not flatten the broker. History is marked historical by its format (SenML: "h":
true) and keeps its original timestamps; so is anything accepted more than a second
before the session said the platform was ready (a oneM2M CSE that came back after its
broker, say). A retained message goes retained only on the connection it was accepted
in: an older birth sent late must not replace the current.

No gap in ``q``: numbering and acceptance happen under one lock (``accept_lock``), so
acceptance order is number order; a connection starts with a commit, an event's
commit takes the telemetry batch before it along, and live telemetry goes out in
order, so nothing is sent while something accepted before it is neither on disk nor
earlier on the same connection. A crash can lose only the newest messages.
The goodbye goes last: after everything accepted before it was sent (or the stop's
timeout ran out), and no reconnect after it.

Each connection uses a fresh paho client so no state of a dead session leaks into
the next. Reconnects back off exponentially with full jitter and a cap, and the
log gets one line per change of state, not one per attempt.

Broker failover (``failover`` in [mqtt] or [[uplink]]): when a connection is lost or
cannot be made, the next connection goes to the next broker of the list (wrapping
round), one log line per move (``EVENT=broker_failover``); the backoff is the same as
for one broker. The uplink stays on a broker that works and goes back to the first only
when told (:meth:`Uplink.use_broker`, the ``broker`` command) or on a restart. The spool
position is the uplink's, not the broker's: what the old broker did not acknowledge is
sent again on the new connection, in the order above.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.core.config import MqttConfig
from agent.core.sampling import backoff_delay
from agent.wire import formats
from agent.wire.model import Kind, Pack
from agent.wire.mqtt import connack_code, fall_back, first_protocol, new_client, version_name
from agent.wire.security import SecurityError
from agent.wire.session import Command, Context, Item, Out, Reaction, Session
from agent.wire.spool import EVENT, LANES, TELEMETRY, Spool, Spooled
from agent.wire.topics import Topics

log = logging.getLogger("citynode.uplink")

MAX_INFLIGHT = 20
READ_AHEAD = 32  # spooled messages read per query
HISTORY_AFTER_S = 1.0  # accepted longer than this before the connection: history ("h")
GOODBYE_S = 2.0  # how long a stop waits for the goodbye's PUBACK beyond its timeout
MAX_CORRELATIONS = 1000  # MQTT 5 correlation data of results not yet acknowledged
#: kind -> spool lane. Births and results are spooled too (on disk at once, like events):
#: every number the node gives out is then durable before anything numbered later is.
LANE_OF = {"event": EVENT, "alarm": EVENT, "state": EVENT, "result": EVENT,
           "telemetry": TELEMETRY, "health": TELEMETRY}
LIVE, HISTORY = True, False
#: Sending order of the spooled parts on a connection (lane, live); the format's
#: per-connection announcements go between the live events and the live telemetry.
PARTS = ((EVENT, LIVE), (TELEMETRY, LIVE), (EVENT, HISTORY), (TELEMETRY, HISTORY))


@dataclass(slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool = False
    content_type: str = ""
    kind: Kind = "telemetry"
    correlation: bytes | None = None  # MQTT 5 correlation data (command results)
    mark: int | None = None  # where the format marks it historical (formats.Encoded.mark)
    #: Unnumbered and meaningful on this connection only (a format's announcements): kept
    #: in memory, sent after the birth, dropped when the connection drops.
    per_connection: bool = False


Inbound = Callable[[str, bytes, bytes | None, str | None], None]
#: Spooled messages a connection has started and not finished (PUBACKs, responses).
MAX_OPEN_ITEMS = MAX_INFLIGHT


def default_session(cfg: MqttConfig, fmt: str = formats.DEFAULT) -> Session:
    """The native session on ``cfg``'s prefix, taking spooled topics as they are (for an
    uplink built without one: tools and tests)."""
    topics = Topics(cfg.prefix, "node")
    return formats.get(fmt).session(Context(
        node="node", topics=topics, home=topics, boot=0, version="", sensors=(),
        state_dir=Path("."), uplink="main", host=cfg.host,
        port=cfg.port))


def _item_of(msg: Message) -> Item:
    return Item(msg.kind, msg.topic, msg.payload, msg.content_type, msg.mark, msg.retain,
                correlation=msg.correlation)


class TokenBucket:
    """``rate`` per second with a burst of one second's worth; rate 0 means unlimited."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = max(1.0, rate)
        self._last = clock()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = self._clock()
        self._tokens = min(max(1.0, self.rate), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class Uplink:
    """Publishes spooled messages to one broker from a background thread, through its
    format's session."""

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        spool: Spool,
        *,
        session: Session | None = None,
        name: str = "main",
        reader: int = 0,
        drain_rate: float = 0.0,
        will: Callable[[], Message | Pack] | None = None,
        on_connect: Callable[[], list[Message]] = lambda: [],
        subscribe: str | None = None,
        on_message: Inbound | None = None,
        on_command: Callable[[Command], None] | None = None,
        configure_client: Callable[[mqtt.Client], None] = lambda c: None,
        rng: random.Random | None = None,
        accept_lock: threading.RLock | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.spool = spool
        self.name = name
        self.reader = reader
        self.session = session if session is not None else default_session(cfg)
        self.will = will
        self._on_connect_msgs = on_connect
        self._subscribe = subscribe
        self._on_message = on_message
        self._on_command = on_command
        self._configure_client = configure_client
        self._rng = rng or random.Random()
        self._bucket = TokenBucket(drain_rate)
        #: Held while a message is numbered and accepted (the daemon passes its sequence
        #: lock), so that acceptance order is number order.
        self._accept = accept_lock if accept_lock is not None else threading.RLock()
        self._wall = wall
        self._wakeup = spool.wakeups[reader]
        # Per connection: what the session says first (and whenever it reacts), and the
        # goodbye; neither is spooled.
        self._announce: collections.deque[Out] = collections.deque(maxlen=10000)
        #: Messages for this connection only (a goodbye, a format's announcement): rendered
        #: by the uplink's own thread, so a session is only ever used from one thread.
        self._direct: collections.deque[Message] = collections.deque(maxlen=1000)
        # mid -> (the spooled message it belongs to or None, the publication)
        self._inflight: dict[int, tuple[tuple[str, int] | None, Out]] = {}
        # Spooled messages started on this connection: publications not yet delivered.
        self._open: dict[tuple[str, int], int] = {}
        self._tokens: dict[str, tuple[str, int] | None] = {}
        self._correlation: dict[tuple[str, int], bytes] = {}
        # Per connection: ids up to the boundary are history; ids up to ``_before`` were
        # accepted before it came up (not retained on it); the opening is its birth.
        self._boundary: dict[str, int] = {lane: 0 for lane in LANES}
        self._before: dict[str, int] = {lane: 0 for lane in LANES}
        self._opening: collections.deque[Spooled] = collections.deque()
        self._opening_ids: set[tuple[str, int]] = set()
        self._cursor: dict[tuple[str, bool], int] = {part: 0 for part in PARTS}
        self._ready: dict[tuple[str, bool], collections.deque[Spooled]] = {
            part: collections.deque() for part in PARTS}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._closing = False  # the goodbye is due: nothing spooled goes out, no reconnect
        self._thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._connected = False
        self._connack: int | None = None
        self._connack_text = ""
        self._protocol = first_protocol(cfg.protocol)
        #: (host, port) of each broker, the primary first; ``broker`` is the one in use.
        self.brokers: list[tuple[str, int]] = cfg.brokers()
        self.broker = 0
        self._wanted: int | None = None  # a broker the ``broker`` command asked for
        self._spoken: dict[int, MQTTProtocolVersion] = {}  # broker -> version it accepted
        self._dropped = False  # the last connection was lost: the next one moves on
        self._moves = 0  # moves since the last connection (all down: quieter log)
        # Per connection: subscriptions awaiting their SUBACK (mid -> topic, tries) and
        # refused ones to ask for again (topic -> when, tries).
        self._subscribing: dict[int, tuple[str, int]] = {}
        self._resubscribe: dict[str, tuple[float, int]] = {}
        self.state = "starting"
        self.reconnects = 0
        self.published = 0
        self.refused = 0
        self.historical = 0
        self.connected_since: float | None = None
        self._connected_wall = 0.0
        # When the session last became ready on this connection (the platform answered):
        # what was accepted more than HISTORY_AFTER_S before then waited, so is historical.
        self._ready_wall = 0.0
        self._session_ready = False
        self._ready_before = False  # it has been ready on this connection already

    # -- public API ------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def protocol_name(self) -> str:
        return version_name(self._protocol)

    def publish(self, msg: Message) -> Spooled | None:
        """Accept a message: spooled (durable) by lane, or kept for this connection."""
        if msg.per_connection:
            with self._lock:
                self._direct.append(msg)
            self._wakeup.set()
            return None
        with self._accept:
            if not msg.correlation:
                return self._put(msg)
            with self._lock:  # known before the uplink thread can read the row
                item = self._put(msg)
                self.remember(item, msg.correlation)
            return item

    def remember(self, item: Spooled, correlation: bytes) -> None:
        """The MQTT 5 correlation data of a spooled result (held until it is delivered)."""
        self._correlation[item.key] = correlation
        while len(self._correlation) > MAX_CORRELATIONS:  # evicted, never acked
            del self._correlation[next(iter(self._correlation))]

    def _put(self, msg: Message) -> Spooled:
        return self.spool.put(LANE_OF.get(msg.kind, EVENT), msg.topic, msg.payload,
                              retain=msg.retain, content_type=msg.content_type,
                              created=self._wall(), mark=msg.mark, kind=msg.kind)

    def pending(self) -> int:
        """Messages this uplink has not delivered yet: its spool backlog and what it
        holds for the connection (a goodbye)."""
        with self._lock:
            direct = len(self._direct) + sum(
                key is None for key, _ in self._inflight.values())
        return direct + self.spool.backlog(self.reader)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"uplink-{self.name}",
                                        daemon=True)
        self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until everything accepted is acknowledged, or the timeout passes."""
        self.spool.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.pending():
                return True
            if not self._connected and self._stop.is_set():
                break
            time.sleep(0.05)
        return not self.pending()

    def stop(self, goodbye: Callable[[], Message] | None = None, timeout: float = 5.0) -> None:
        """Flush (up to ``timeout``), then send the goodbye last if connected, disconnect.

        ``goodbye`` builds (and numbers) the message only when it is about to be sent,
        so a stop while disconnected gives out no number."""
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        if goodbye is not None:
            with self._accept:
                if self.close_for_goodbye():
                    self.say_goodbye(goodbye())
            self.wait_goodbye(max(0.0, deadline - time.monotonic()) + GOODBYE_S)
        self.halt(timeout)

    def halt(self, timeout: float = 5.0) -> None:
        """Disconnect and end the thread."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout + 2)
        self.spool.flush()

    def close_for_goodbye(self) -> bool:
        """Nothing spooled is started after this and no new connection is made, so no
        number follows the goodbye. True if connected (a goodbye can be sent); call
        with the accept lock held. What was accepted before is on disk or sent."""
        self._closing = True
        if not self._connected:
            return False
        self.spool.flush()
        return True

    def say_goodbye(self, msg: Message) -> None:
        with self._lock:
            self._direct.append(msg)
        self._wakeup.set()

    def wait_goodbye(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self._connected:
            with self._lock:
                if not self._direct and not self._announce and \
                        not any(k is None for k, _ in self._inflight.values()):
                    return
            time.sleep(0.02)

    @property
    def broker_address(self) -> str:
        """host:port of the broker in use (IPv6 in brackets)."""
        host, port = self.brokers[self.broker]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def use_broker(self, index: int) -> str:
        """Ask the uplink's thread to move to broker ``index`` (0: the primary) now:
        the connection in use is closed and what it had not delivered is sent again on
        the new one. ValueError when there is no such broker."""
        if not 0 <= index < len(self.brokers):
            raise ValueError(f"uplink {self.name} has brokers 0 to {len(self.brokers) - 1}")
        self._wanted = index
        self._wakeup.set()
        host, port = self.brokers[index]
        return f"uplink {self.name}: moving to broker {index} ({host}:{port})"

    def status(self) -> dict[str, Any]:
        """This uplink for ``citynode status`` and health (``broker``: the index of the
        broker in use, with failover brokers only)."""
        failover = {"broker": self.broker} if len(self.brokers) > 1 else {}
        return {"name": self.name, "host": self.broker_address, **failover,
                "connected": self._connected, "state": self.state,
                "backlog": self.spool.backlog(self.reader), "published": self.published,
                "refused": self.refused, "reconnects": self.reconnects,
                "historical": self.historical, **self.session.status()}

    # -- connection ------------------------------------------------------------
    def _set_state(self, state: str, level: int = logging.INFO) -> None:
        if state != self.state:
            self.state = state
            log.log(level, "uplink %s %s", self.name, state,
                    extra={"EVENT": "uplink_state", "UPLINK": self.name})

    def _will(self) -> Out | None:
        if self.will is None:
            return None
        made = self.will()
        if isinstance(made, Message):  # tools and tests: the will as it goes
            return Out(made.topic, made.payload, retain=made.retain,
                       content_type=made.content_type)
        return self.session.will(made)

    def _new_client(self) -> mqtt.Client:
        c = new_client(self.client_id, self._protocol)
        c.max_inflight_messages_set(MAX_INFLIGHT)
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_publish = self._handle_publish
        c.on_message = self._handle_message
        c.on_subscribe = self._handle_subscribe
        self._configure_client(c)
        will = self._will()
        if will is not None:
            props = None
            if self._protocol == MQTTProtocolVersion.MQTTv5 and will.content_type:
                props = Properties(PacketTypes.WILLMESSAGE)
                props.ContentType = will.content_type
            c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain,
                       properties=props)
        return c

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self.spool.maintain()
            if self._wanted is not None and not self._closing:
                attempt = 0
                self._switch_broker()
            if self._client is None:
                if self._closing:  # a goodbye was due: no connection after it
                    self._stop.wait(0.05)
                    continue
                if self._dropped:
                    self._dropped = False
                    self._move("connection lost")
                if self._try_connect():
                    attempt = 0
                    self._moves = 0
                else:
                    delay = backoff_delay(attempt, self.cfg.backoff_initial_s,
                                          self.cfg.backoff_max_s, self._rng)
                    attempt += 1
                    self._move("cannot connect")
                    self._pause(delay)
                    continue
            client = self._client
            assert client is not None
            rc = client.loop(timeout=0.02)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not self._client_alive():
                self._teardown(f"connection lost ({mqtt.error_string(rc)})")
                continue
            if self._connected:
                self._retry_subscriptions(client)
                self._react(self.session.poll(time.monotonic()))
            if self._connected and not self._send_some(client):
                # Nothing to send: sleep in paho's select until traffic or a new message.
                self._wakeup.clear()
                if not self._inflight:
                    self._wakeup.wait(0.2)
        if self._client is not None:
            try:
                self._client.disconnect()
                self._client.loop(timeout=0.2)
            except (OSError, ValueError):
                pass
            self._teardown("stopped")

    def _move(self, why: str) -> None:
        """On to the next broker of the list (wrapping round), if there is more than one."""
        if len(self.brokers) < 2:
            return
        self._go(self.broker + 1 if self.broker + 1 < len(self.brokers) else 0, why,
                 logging.WARNING if self._moves < len(self.brokers) else logging.DEBUG)
        self._moves += 1

    def _go(self, index: int, why: str, level: int) -> None:
        was, self.broker = self.broker_address, index
        # Another broker may speak another version: what it spoke last time, else ask.
        self._protocol = self._spoken.get(index, first_protocol(self.cfg.protocol))
        log.log(level, "uplink %s: broker %s, moving to broker %d (%s; 0 is the primary)",
                self.name, f"{was} {why}" if why != "told" else f"{was} left as told", index,
                self.broker_address,
                extra={"EVENT": "broker_failover", "UPLINK": self.name})

    def _switch_broker(self) -> None:
        """The ``broker`` command: close the connection in use (what it did not deliver is
        read again from the spool) and connect to the broker asked for."""
        index, self._wanted = self._wanted, None
        if index is None or (index == self.broker and self._client is not None):
            return
        if self._client is not None:
            client = self._client
            try:
                client.disconnect()
                client.loop(timeout=0.1)
            except (OSError, ValueError):
                pass
            self._teardown(f"moving to broker {index} as told")
        self._dropped = False
        self._moves = 0
        if index != self.broker:
            self._go(index, "told", logging.WARNING)

    def _pause(self, seconds: float) -> None:
        """Back off, still committing the spool's telemetry batches meanwhile; a
        ``broker`` command ends the wait."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline and \
                self._wanted is None:
            self.spool.maintain()
            self._stop.wait(min(0.5, max(0.0, deadline - time.monotonic())))

    def _client_alive(self) -> bool:
        # Set by the disconnect callback or a refused CONNACK.
        return self._client is not None and self._connack in (None, 0)

    def _try_connect(self) -> bool:
        self._connack = None
        host, port = self.brokers[self.broker]
        try:
            client = self._new_client()
            client.connect(host, port, keepalive=self.cfg.keepalive_s)
        except SecurityError as exc:  # e.g. the key's mode changed while running
            self._set_state(f"disconnected: {exc}", logging.ERROR)
            return False
        except (TimeoutError, OSError, ValueError) as exc:
            self._set_state(f"disconnected: cannot connect to {self.broker_address} ({exc})",
                            logging.WARNING)
            return False
        deadline = time.monotonic() + 10
        while self._connack is None and time.monotonic() < deadline and not self._stop.is_set():
            self.spool.maintain()  # a slow CONNACK must not hold a telemetry batch back
            if client.loop(timeout=0.1) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
        if self._connack == 0:
            self._client = client
            self._spoken[self.broker] = self._protocol
            return True
        reason = "no CONNACK" if self._connack is None else f"refused ({self._connack_text})"
        try:
            client.disconnect()
        except (OSError, ValueError):
            pass
        fallback = fall_back(self.cfg.protocol, self._protocol, self._connack)
        if fallback is not None:
            self._protocol = fallback
            log.info("broker does not speak MQTT 5; falling back to 3.1.1",
                     extra={"EVENT": "protocol_fallback", "UPLINK": self.name})
            return self._try_connect()
        self._set_state(f"disconnected: broker {reason}", logging.WARNING)
        return False

    def _handle_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connack = connack_code(reason_code)
        self._connack_text = str(reason_code)
        if self._connack != 0:
            return
        if self.connected_since is not None:
            self.reconnects += 1
        self.connected_since = time.monotonic()
        self._connected_wall = self._wall()
        self._set_state(f"connected to {self.broker_address} (MQTT {self.protocol_name})")
        topics = list(self.session.subscriptions())
        if self._subscribe:
            topics.append(self._subscribe)
        with self._lock:
            self._subscribing.clear()
            self._resubscribe.clear()
        for topic in dict.fromkeys(topics):
            self._subscribe_to(client, topic)
        with self._accept:  # nothing is numbered meanwhile
            cutoff = self._connected_wall - HISTORY_AFTER_S
            self._open_parts({lane: self.spool.last_id_before(lane, cutoff) for lane in LANES},
                             {lane: self.spool.last_id(lane) for lane in LANES})
            moved = getattr(self.session, "connected_to", None)  # optional (session.py)
            if moved is not None:
                moved(*self.brokers[self.broker])
            with self._lock:
                self._announce.extend(self.session.opening())
            self._session_ready = self._ready_before = self.session.ready()
            self._ready_wall = self._connected_wall
            for m in [] if self._closing else self._on_connect_msgs():
                item = self.publish(m)
                if item is not None:
                    self._opening.append(item)
                    self._opening_ids.add(item.key)
        # Everything accepted before the connection is on disk before any message of it
        # is sent (the birth's own commit has usually done it already): a crash now can
        # lose no number below one the broker gets.
        self.spool.flush()
        self._connected = True

    def _open_parts(self, boundary: dict[str, int], before: dict[str, int]) -> None:
        self._boundary, self._before = boundary, before
        self._opening.clear()
        self._opening_ids.clear()
        for lane, live in PARTS:
            self._cursor[(lane, live)] = boundary[lane] if live else 0
            self._ready[(lane, live)].clear()

    def _subscribe_to(self, client: mqtt.Client, topic: str, tries: int = 0) -> None:
        rc, mid = client.subscribe(topic, qos=1)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            with self._lock:
                self._subscribing[mid] = (topic, tries)

    def _handle_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        """A refused subscription (a cluster broker that cannot create the session's
        consumer yet, say) is asked for again on this connection, backing off; without
        it the node would not hear its commands until the next connection."""
        with self._lock:
            topic, tries = self._subscribing.pop(mid, ("", 0))
        if not topic or all(int(getattr(rc, "value", rc)) < 0x80 for rc in reason_codes):
            return
        delay = backoff_delay(tries, self.cfg.backoff_initial_s, self.cfg.backoff_max_s,
                              self._rng)
        log.log(logging.WARNING if tries == 0 else logging.DEBUG,
                "uplink %s: %s refused the subscription to %s; asking again", self.name,
                self.broker_address, topic,
                extra={"EVENT": "subscribe_refused", "UPLINK": self.name})
        with self._lock:
            self._resubscribe[topic] = (time.monotonic() + delay, tries + 1)

    def _retry_subscriptions(self, client: mqtt.Client) -> None:
        if not self._resubscribe:
            return
        now = time.monotonic()
        with self._lock:
            due = [(t, n) for t, (at, n) in self._resubscribe.items() if at <= now]
            for topic, _ in due:
                del self._resubscribe[topic]
        for topic, tries in due:
            self._subscribe_to(client, topic, tries)

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected = False
        self._connack = -1 if self._connack == 0 else self._connack

    def _handle_message(self, client, userdata, msg) -> None:
        props = getattr(msg, "properties", None)
        correlation = getattr(props, "CorrelationData", None) if props else None
        response = getattr(props, "ResponseTopic", None) if props else None
        try:
            if self._on_message is not None and msg.topic == self._subscribe:
                if msg.retain:
                    log.warning("ignored a retained message on %s (clear it: publish an empty "
                                "retained message)", msg.topic, extra={"EVENT": "command_retained"})
                    return
                self._on_message(msg.topic, bytes(msg.payload), correlation, response)
                return
            self._react(self.session.receive(msg.topic, bytes(msg.payload),
                                             retained=bool(msg.retain),
                                             correlation=correlation, response_topic=response))
        except Exception:  # a handler bug must not take the uplink down
            log.exception("inbound message handler failed",
                          extra={"EVENT": "command_handler_error", "UPLINK": self.name})

    def _react(self, r: Reaction) -> None:
        """What the session made of an inbound message or a poll."""
        if r.reopen:
            with self._lock:
                self._announce.extend(self.session.opening())
        if r.send:
            with self._lock:
                self._announce.extend(r.send)
        for token in r.confirmed:
            self._deliver(self._tokens.pop(token, None))
        for token, why in r.refused:
            if token in self._tokens:
                self.refused += 1
                log.warning("uplink %s: %s refused a message: %s", self.name,
                            self.cfg.host, why, extra={"EVENT": "publish_refused",
                                                       "UPLINK": self.name})
                self._deliver(self._tokens.pop(token))
        for command in r.commands:
            if self._on_command is not None:
                self._on_command(command)
            elif self._on_message is not None:
                self._on_message("", command.data, command.correlation, command.response_topic)
        if r.send or r.reopen:
            self._wakeup.set()

    def _deliver(self, key: tuple[str, int] | None) -> None:
        """One publication of a spooled message is delivered; the message is, once all are."""
        if key is None or key not in self._open:
            return
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]
            with self._lock:
                self._correlation.pop(key, None)
            self.spool.ack(key[0], key[1], self.reader)

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            entry = self._inflight.pop(mid, None)
        if entry is None:
            return
        key, out = entry
        rc = int(getattr(reason_code, "value", 0))
        if rc >= 0x80:
            # Refused (not authorised, quota): retrying will not help; count and drop.
            log.warning("broker refused message on %s: %s", out.topic, reason_code,
                        extra={"EVENT": "publish_refused", "UPLINK": self.name})
            self.refused += 1
            if out.token is not None:
                self._tokens.pop(out.token, None)
                self._deliver(key)
                return
        else:
            self.published += 1
        if out.token is None:
            self._deliver(key)

    # -- sending ---------------------------------------------------------------
    def _next(self) -> Spooled | Out | None:
        """The next message by the order of the module docstring, or None: what the
        session says first, then (once it is ready) the birth, live events, the goodbye,
        live telemetry, history."""
        ready = self.session.ready()
        if ready and not self._session_ready:
            self._became_ready()
        self._session_ready = ready
        with self._lock:
            if self._announce:
                return self._announce.popleft()
        if not ready or len(self._open) >= MAX_OPEN_ITEMS:
            return self._direct_next() if self._closing else None
        if not self._closing:
            if self._opening:
                return self._opening.popleft()
            item = self._take(EVENT, LIVE)
            if item is not None:
                return item
        out = self._direct_next()
        if out is not None or self._closing:
            return out
        return self._take(TELEMETRY, LIVE) or self._take(EVENT, HISTORY) or \
            self._take(TELEMETRY, HISTORY)

    def _became_ready(self) -> None:
        """The session can deliver again: what waited more than HISTORY_AFTER_S for it is
        historical. The first time on a connection, nothing spooled has been taken yet, so
        the live/history boundary moves too: that backlog drains at ``drain_rate`` after
        the live messages, as after a broker outage (a fleet whose CSE comes back)."""
        self._ready_wall = self._wall()
        if self._ready_before:
            return
        self._ready_before = True
        with self._accept:
            cutoff = self._ready_wall - HISTORY_AFTER_S
            boundary = {lane: self.spool.last_id_before(lane, cutoff) for lane in LANES}
        for lane, upto in boundary.items():
            if upto > self._boundary[lane]:
                self._boundary[lane] = self._cursor[(lane, LIVE)] = upto
                self._ready[(lane, LIVE)].clear()
                self._ready[(lane, HISTORY)].clear()

    def _direct_next(self) -> Out | None:
        """The next publication of the per-connection messages, rendered here."""
        while True:
            with self._lock:
                if not self._direct:
                    return None
                msg = self._direct.popleft()
            outs = self.session.render(_item_of(msg))
            if outs:
                with self._lock:
                    self._announce.extendleft(reversed(outs[1:]))
                return outs[0]

    def _take(self, lane: str, live: bool) -> Spooled | None:
        part = (lane, live)
        ready = self._ready[part]
        if not ready:
            # Read ahead a little: one query per READ_AHEAD messages, memory independent
            # of the backlog. The live parts are looked up only when the spool has taken
            # a message since, so a new alarm is seen at once and costs no query before.
            after = self._cursor[part]
            if live:
                if self.spool.last_id(lane) <= after:
                    return None
                ready.extend(self.spool.iter_ready(lane, after, limit=READ_AHEAD,
                                                   reader=self.reader))
            else:
                upto = self._boundary[lane]
                if after >= upto:
                    return None
                ready.extend(self.spool.iter_ready(lane, after, limit=READ_AHEAD, upto=upto,
                                                   reader=self.reader))
                if not ready:
                    self._cursor[part] = upto  # the rest was acknowledged or evicted
            if ready:
                self._cursor[part] = ready[-1].id
            else:
                return None
        if lane == TELEMETRY and not live and not self._bucket.take():
            return None
        item = ready.popleft()
        if item.key in self._opening_ids:  # the birth: sent first already
            return self._take(lane, live)
        return item

    def _history(self, item: Spooled) -> bool:
        """Accepted more than HISTORY_AFTER_S before the current connection came up."""
        return item.id <= self._boundary[item.lane]

    def _render(self, item: Spooled) -> list[Out]:
        """A spooled message's publications as they go out now: history marked, a
        retained state that waited not retained (the connection's birth is current)."""
        historical = item.created < self._ready_wall - HISTORY_AFTER_S
        with self._lock:
            corr = self._correlation.get(item.key)
        view = Item(item.kind or kind_of(item.topic), item.topic, item.payload,
                    item.content_type, item.mark, item.retain, historical, item.created, corr)
        outs = self.session.render(view)
        if historical and outs and outs[0].payload is not item.payload:
            self.historical += 1
        if item.retain and item.id <= self._before[item.lane]:
            for out in outs:
                out.retain = False
        return outs

    def _properties(self, out: Out) -> Properties | None:
        if self._protocol != MQTTProtocolVersion.MQTTv5 or not (out.content_type or
                                                                 out.correlation):
            return None
        props = Properties(PacketTypes.PUBLISH)
        if out.content_type:
            props.ContentType = out.content_type
        if out.correlation:
            props.CorrelationData = out.correlation
        return props

    def _send_some(self, client: mqtt.Client) -> bool:
        """Publish while the in-flight window has room; False if there was nothing to send."""
        sent = False
        while len(self._inflight) < MAX_INFLIGHT:
            item = self._next()
            if item is None:
                return sent
            if isinstance(item, Out):
                if not self._send(client, None, item):
                    with self._lock:
                        self._announce.appendleft(item)
                    return sent
                sent = True
                continue
            try:
                outs = self._render(item)
            except Exception:  # a row no session can read must not stop the others
                log.exception("uplink %s cannot render spooled %s message %d: skipped",
                              self.name, item.lane, item.id,
                              extra={"EVENT": "render_error", "UPLINK": self.name})
                self.refused += 1
                self.spool.ack(item.lane, item.id, self.reader)
                continue
            sent = True
            if not outs:  # nothing for this platform: delivered as far as it goes
                self.spool.ack(item.lane, item.id, self.reader)
                continue
            self._open[item.key] = len(outs)
            for out in outs:
                if out.token is not None:
                    self._tokens[out.token] = item.key
                if not self._send(client, item.key, out):
                    # The connection is going: what was started is read again after it.
                    self._teardown("publish failed")
                    return sent
        return True

    def _send(self, client: mqtt.Client, key: tuple[str, int] | None, out: Out) -> bool:
        info = client.publish(out.topic, out.payload, qos=out.qos, retain=out.retain,
                              properties=self._properties(out))
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        if out.qos == 0:
            self.published += 1
            if out.token is None:
                self._deliver(key)
            return True
        with self._lock:
            self._inflight[info.mid] = (key, out)
        return True

    def _teardown(self, why: str) -> None:
        client, self._client = self._client, None
        self._connected = False
        with self._lock:
            # Spooled messages are read again from the spool, oldest unacknowledged first;
            # what was kept for this connection (announcements, a goodbye) is dropped.
            self._inflight.clear()
            self._announce.clear()
            self._direct.clear()
            self._open.clear()
            self._tokens.clear()
        self.session.lost()
        self._open_parts({lane: 0 for lane in LANES}, {lane: 0 for lane in LANES})
        if client is not None:
            sock = client.socket()
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        level = logging.INFO if why == "stopped" else logging.WARNING
        self._dropped = why != "stopped"
        self._set_state(f"disconnected: {why}", level)


def kind_of(topic: str) -> Kind:
    """The kind of a row spooled before rows kept their kind: by its topic's leaf."""
    leaf = topic.rsplit("/", 1)[-1]
    return {"telemetry": "telemetry", "health": "health", "state": "state",
            "result": "result"}.get(leaf, "event")  # type: ignore[return-value]


class Uplinks:
    """Every uplink of a node behind the one face the daemon uses: a message is
    accepted once (one spool row), and each uplink delivers it in its own time."""

    def __init__(self, members: list[Uplink]) -> None:
        if not members:
            raise ValueError("no uplink")
        self.members = members
        self.spool = members[0].spool
        self._accept = members[0]._accept

    # What the status and health of a single uplink said, for the whole: the first.
    @property
    def connected(self) -> bool:
        """Every uplink is connected."""
        return all(u.connected for u in self.members)

    @property
    def state(self) -> str:
        return "; ".join(f"{u.name} {u.state}" for u in self.members) \
            if len(self.members) > 1 else self.members[0].state

    def __getattr__(self, name: str) -> Any:  # client_id, protocol_name, connected_since...
        return getattr(self.members[0], name)

    @property
    def reconnects(self) -> int:
        return sum(u.reconnects for u in self.members)

    @property
    def historical(self) -> int:
        return sum(u.historical for u in self.members)

    @property
    def published(self) -> int:
        return sum(u.published for u in self.members)

    @property
    def refused(self) -> int:
        return sum(u.refused for u in self.members)

    def publish(self, msg: Message) -> Spooled | None:
        if msg.per_connection:
            for u in self.members:
                u.publish(msg)
            return None
        with self._accept:
            item = self.members[0].publish(msg)
            if item is not None and msg.correlation:
                for u in self.members[1:]:
                    with u._lock:
                        u.remember(item, msg.correlation)
            return item

    def pending(self) -> int:
        """The most any uplink has yet to deliver."""
        return max(u.pending() for u in self.members)

    def start(self) -> None:
        for u in self.members:
            u.start()

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all([u.flush(max(0.0, deadline - time.monotonic())) for u in self.members])

    def stop(self, goodbye: Callable[[], Message] | None = None, timeout: float = 5.0) -> None:
        """Flush every uplink (the same ``timeout`` for all), then one goodbye, numbered
        once, to every uplink still connected, and disconnect them."""
        deadline = time.monotonic() + timeout
        self.flush(timeout)
        if goodbye is not None:
            with self._accept:
                open_ = [u for u in self.members if u.close_for_goodbye()]
                if open_:
                    msg = goodbye()
                    for u in open_:
                        u.say_goodbye(msg)
            for u in open_:  # they send at once; each waits what is left of the time
                u.wait_goodbye(max(0.0, deadline - time.monotonic()) + GOODBYE_S)
        for u in self.members:
            u._stop.set()
        for u in self.members:
            u.halt(max(0.0, deadline - time.monotonic()))

    def status(self) -> list[dict[str, Any]]:
        return [u.status() for u in self.members]
