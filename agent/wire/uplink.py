"""The MQTT uplink: paho-mqtt 2.x, MQTT 5 with a 3.1.1 fallback, QoS 1, fed by the spool.

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
true) and keeps its original timestamps. A retained message goes retained only on the
connection it was accepted in: an older birth sent late must not replace the current.

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
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.core.config import MqttConfig
from agent.core.sampling import backoff_delay
from agent.wire import formats
from agent.wire.model import Kind
from agent.wire.mqtt import connack_code, fall_back, first_protocol, new_client, version_name
from agent.wire.security import SecurityError
from agent.wire.spool import EVENT, LANES, TELEMETRY, Spool, Spooled

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
    """Publishes spooled messages to one broker from a background thread."""

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        spool: Spool,
        *,
        drain_rate: float = 0.0,
        will: Callable[[], Message] | None = None,
        on_connect: Callable[[], list[Message]] = lambda: [],
        subscribe: str | None = None,
        on_message: Inbound | None = None,
        configure_client: Callable[[mqtt.Client], None] = lambda c: None,
        rng: random.Random | None = None,
        accept_lock: threading.RLock | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self.spool = spool
        self.will = will
        self._on_connect_msgs = on_connect
        self._subscribe = subscribe
        self._on_message = on_message
        self._configure_client = configure_client
        self._rng = rng or random.Random()
        self._bucket = TokenBucket(drain_rate)
        #: Held while a message is numbered and accepted (the daemon passes its sequence
        #: lock), so that acceptance order is number order.
        self._accept = accept_lock if accept_lock is not None else threading.RLock()
        self._wall = wall
        self._direct: collections.deque[Message] = collections.deque(maxlen=1000)
        self._inflight: dict[int, Spooled | Message] = {}
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
        self.state = "starting"
        self.reconnects = 0
        self.published = 0
        self.refused = 0
        self.historical = 0
        self.connected_since: float | None = None
        self._connected_wall = 0.0

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
            self.spool.ready.set()
            return None
        with self._accept:
            if not msg.correlation:
                return self._put(msg)
            with self._lock:  # known before the uplink thread can read the row
                item = self._put(msg)
                self._correlation[item.key] = msg.correlation
                while len(self._correlation) > MAX_CORRELATIONS:  # evicted, never acked
                    del self._correlation[next(iter(self._correlation))]
            return item

    def _put(self, msg: Message) -> Spooled:
        return self.spool.put(LANE_OF.get(msg.kind, EVENT), msg.topic, msg.payload,
                              retain=msg.retain, content_type=msg.content_type,
                              created=self._wall(), mark=msg.mark)

    def pending(self) -> int:
        with self._lock:
            direct = len(self._direct) + sum(
                isinstance(m, Message) for m in self._inflight.values())
        return direct + self.spool.depth()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
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
            self._say_goodbye(goodbye, max(0.0, deadline - time.monotonic()) + GOODBYE_S)
        self._stop.set()
        if self._thread:
            self._thread.join(timeout + 2)
        self.spool.flush()

    def _say_goodbye(self, goodbye: Callable[[], Message], wait: float) -> None:
        """The goodbye after everything accepted before it: nothing spooled is started
        after it and no new connection is made, so no number follows it."""
        with self._accept:
            self._closing = True
            if not self._connected:
                return
            self.spool.flush()  # what was accepted before it is on disk, or already sent
            msg = goodbye()
            with self._lock:
                self._direct.append(msg)
        self.spool.ready.set()
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self._connected:
            with self._lock:
                if msg not in self._direct and msg not in self._inflight.values():
                    return
            time.sleep(0.02)

    # -- connection ------------------------------------------------------------
    def _set_state(self, state: str, level: int = logging.INFO) -> None:
        if state != self.state:
            self.state = state
            log.log(level, "uplink %s", state, extra={"EVENT": "uplink_state"})

    def _new_client(self) -> mqtt.Client:
        c = new_client(self.client_id, self._protocol)
        c.max_inflight_messages_set(MAX_INFLIGHT)
        c.on_connect = self._handle_connect
        c.on_disconnect = self._handle_disconnect
        c.on_publish = self._handle_publish
        c.on_message = self._handle_message
        self._configure_client(c)
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
            self.spool.maintain()
            if self._client is None:
                if self._closing:  # a goodbye was due: no connection after it
                    self._stop.wait(0.05)
                    continue
                if self._try_connect():
                    attempt = 0
                else:
                    delay = backoff_delay(attempt, self.cfg.backoff_initial_s,
                                          self.cfg.backoff_max_s, self._rng)
                    attempt += 1
                    self._pause(delay)
                    continue
            client = self._client
            assert client is not None
            rc = client.loop(timeout=0.02)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or not self._client_alive():
                self._teardown(f"connection lost ({mqtt.error_string(rc)})")
                continue
            if self._connected and not self._send_some(client):
                # Nothing to send: sleep in paho's select until traffic or a new message.
                self.spool.ready.clear()
                if not self._inflight:
                    self.spool.ready.wait(0.2)
        if self._client is not None:
            try:
                self._client.disconnect()
                self._client.loop(timeout=0.2)
            except (OSError, ValueError):
                pass
            self._teardown("stopped")

    def _pause(self, seconds: float) -> None:
        """Back off, still committing the spool's telemetry batches meanwhile."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.spool.maintain()
            self._stop.wait(min(0.5, max(0.0, deadline - time.monotonic())))

    def _client_alive(self) -> bool:
        # Set by the disconnect callback or a refused CONNACK.
        return self._client is not None and self._connack in (None, 0)

    def _try_connect(self) -> bool:
        self._connack = None
        try:
            client = self._new_client()
            client.connect(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        except SecurityError as exc:  # e.g. the key's mode changed while running
            self._set_state(f"disconnected: {exc}", logging.ERROR)
            return False
        except (TimeoutError, OSError, ValueError) as exc:
            self._set_state(f"disconnected: cannot connect to {self.cfg.host}:{self.cfg.port} "
                            f"({exc})", logging.WARNING)
            return False
        deadline = time.monotonic() + 10
        while self._connack is None and time.monotonic() < deadline and not self._stop.is_set():
            self.spool.maintain()  # a slow CONNACK must not hold a telemetry batch back
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
        fallback = fall_back(self.cfg.protocol, self._protocol, self._connack)
        if fallback is not None:
            self._protocol = fallback
            log.info("broker does not speak MQTT 5; falling back to 3.1.1",
                     extra={"EVENT": "protocol_fallback"})
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
        self._set_state(f"connected to {self.cfg.host}:{self.cfg.port} (MQTT {self.protocol_name})")
        if self._subscribe:
            client.subscribe(self._subscribe, qos=1)
        with self._accept:  # nothing is numbered meanwhile
            cutoff = self._connected_wall - HISTORY_AFTER_S
            self._open_parts({lane: self.spool.last_id_before(lane, cutoff) for lane in LANES},
                             {lane: self.spool.last_id(lane) for lane in LANES})
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

    def _handle_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected = False
        self._connack = -1 if self._connack == 0 else self._connack

    def _handle_message(self, client, userdata, msg) -> None:
        if self._on_message is None:
            return
        if msg.retain:
            # A retained command would be handed over again at every reconnect: never act on it.
            log.warning("ignored a retained message on %s (clear it: publish an empty retained "
                        "message)", msg.topic, extra={"EVENT": "command_retained"})
            return
        props = getattr(msg, "properties", None)
        correlation = getattr(props, "CorrelationData", None) if props else None
        response = getattr(props, "ResponseTopic", None) if props else None
        try:
            self._on_message(msg.topic, bytes(msg.payload), correlation, response)
        except Exception:  # a handler bug must not take the uplink down
            log.exception("command handler failed", extra={"EVENT": "command_handler_error"})

    def _handle_publish(self, client, userdata, mid, reason_code, properties) -> None:
        with self._lock:
            item = self._inflight.pop(mid, None)
            if isinstance(item, Spooled):
                self._correlation.pop(item.key, None)
        if item is None:
            return
        rc = int(getattr(reason_code, "value", 0))
        if rc >= 0x80:
            # Refused (not authorised, quota): retrying will not help; count and drop.
            log.warning("broker refused message on %s: %s", item.topic, reason_code,
                        extra={"EVENT": "publish_refused"})
            self.refused += 1
        else:
            self.published += 1
        if isinstance(item, Spooled):
            self.spool.ack(item.lane, item.id)

    # -- sending ---------------------------------------------------------------
    def _next(self) -> Spooled | Message | None:
        """The next message by the order of the module docstring, or None."""
        if not self._closing:
            if self._opening:
                return self._opening.popleft()
            item = self._take(EVENT, LIVE)
            if item is not None:
                return item
        with self._lock:
            if self._direct:
                return self._direct.popleft()
        if self._closing:
            return None
        return self._take(TELEMETRY, LIVE) or self._take(EVENT, HISTORY) or \
            self._take(TELEMETRY, HISTORY)

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
                ready.extend(self.spool.iter_ready(lane, after, limit=READ_AHEAD))
            else:
                upto = self._boundary[lane]
                if after >= upto:
                    return None
                ready.extend(self.spool.iter_ready(lane, after, limit=READ_AHEAD, upto=upto))
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

    def _wire(self, item: Spooled | Message) -> tuple[bytes, Properties | None, bool]:
        """Payload, properties and retain flag as the message goes out now."""
        data, retain, corr = item.payload, item.retain, None
        if isinstance(item, Spooled):
            if item.created < self._connected_wall - HISTORY_AFTER_S:
                data = self._historical(item)
            if retain and item.id <= self._before[item.lane]:
                retain = False  # a state that waited: the connection's birth is current
            with self._lock:
                corr = self._correlation.get(item.key)
        else:
            corr = item.correlation
        props = None
        if self._protocol == MQTTProtocolVersion.MQTTv5:
            ctype = item.content_type
            if ctype or corr:
                props = Properties(PacketTypes.PUBLISH)
                if ctype:
                    props.ContentType = ctype
                if corr:
                    props.CorrelationData = corr
        return data, props, retain

    def _historical(self, item: Spooled) -> bytes:
        """Mark a pack that waited through an outage; its timestamps stay as they were.
        Its format does it, at the mark stored with the row (no decoding)."""
        data = formats.for_content_type(item.content_type).historical(item.payload, item.mark)
        if data is not item.payload:
            self.historical += 1
        return data

    def _send_some(self, client: mqtt.Client) -> bool:
        """Publish while the in-flight window has room; False if there was nothing to send."""
        sent = False
        while len(self._inflight) < MAX_INFLIGHT:
            item = self._next()
            if item is None:
                return sent
            data, props, retain = self._wire(item)
            info = client.publish(item.topic, data, qos=1, retain=retain, properties=props)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._requeue(item)
                return sent
            sent = True
            with self._lock:
                self._inflight[info.mid] = item
        return True

    def _requeue(self, item: Spooled | Message) -> None:
        if isinstance(item, Message):
            with self._lock:
                self._direct.appendleft(item)
        elif item.key in self._opening_ids:
            self._opening.appendleft(item)
        else:
            self._ready[(item.lane, not self._history(item))].appendleft(item)

    def _teardown(self, why: str) -> None:
        client, self._client = self._client, None
        self._connected = False
        with self._lock:
            # Spooled messages are read again from the spool, oldest unacknowledged first;
            # what was kept for this connection (announcements, a goodbye) is dropped.
            self._inflight.clear()
            self._direct.clear()
        self._open_parts({lane: 0 for lane in LANES}, {lane: 0 for lane in LANES})
        if client is not None:
            sock = client.socket()
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        level = logging.INFO if why == "stopped" else logging.WARNING
        self._set_state(f"disconnected: {why}", level)
