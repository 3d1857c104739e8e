"""One uplink's conversation with its platform, with no I/O (in the manner of h11).

The uplink (:mod:`agent.wire.uplink`) owns the socket, the spool position, backoff and
ordering; a :class:`Session` owns what the platform expects: which topics to subscribe
to, the last will, what to say when a connection comes up (a oneM2M registration, a
Sparkplug NBIRTH, Home Assistant discovery), how each spooled message goes on the wire,
and what an inbound message means (a command, a response that confirms a delivery, a
request to announce again). Every output format (:mod:`agent.wire.formats`) makes one
session per uplink that uses it; a session lives as long as its uplink, across
connections.

Delivery: a spooled message leaves the spool for an uplink when every :class:`Out` it
was rendered into is delivered: at the broker's PUBACK when ``token`` is None, or when
the session reports the token in :attr:`Reaction.confirmed` (or ``refused``), e.g. on
a oneM2M response. Until then it is kept and, after a lost connection, sent again.

Call order, per connection: :meth:`Session.will` (before connecting; it begins a new
connection), then on CONNACK :meth:`Session.subscriptions` and :meth:`Session.opening`;
spooled messages are rendered only while :meth:`Session.ready` is true; inbound
messages go to :meth:`Session.receive`, and :meth:`Session.poll` runs on every turn of
the uplink's loop (timeouts, retries); :meth:`Session.lost` when the connection drops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agent.wire.model import Kind, Pack
    from agent.wire.topics import Topics


@dataclass(slots=True)
class Out:
    """One MQTT publication."""

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 1
    content_type: str = ""  # MQTT 5 content type (dropped on 3.1.1)
    #: None: delivered at the broker's PUBACK (at once for QoS 0). A token: delivered
    #: only when the session confirms it (a platform's own response).
    token: str | None = None
    correlation: bytes | None = None  # MQTT 5 correlation data (native command results)


@dataclass(slots=True)
class Command:
    """A downlink command for the node's command processor (agent/core/commands.py):
    the same bytes a native command message carries, signature included."""

    data: bytes
    correlation: bytes | None = None
    response_topic: str | None = None


@dataclass(slots=True)
class Reaction:
    """What an inbound message or a poll means to the uplink."""

    confirmed: list[str] = field(default_factory=list)  # tokens delivered
    refused: list[tuple[str, str]] = field(default_factory=list)  # (token, why): dropped, counted
    send: list[Out] = field(default_factory=list)  # publish now (responses, a rebirth)
    commands: list[Command] = field(default_factory=list)
    #: Say the opening again now (a server that lost our resources, a host that restarted).
    reopen: bool = False


@dataclass(slots=True)
class Item:
    """A spooled message as a session sees it.

    ``payload`` is in the spool's format (``content_type``, a SenML format);
    :meth:`pack` decodes it once when a session needs the records.
    """

    kind: Kind
    topic: str  # as spooled: the home uplink's topic, or a command's response topic
    payload: bytes
    content_type: str = ""
    mark: int | None = None  # where the spool's format marks it historical
    retain: bool = False
    historical: bool = False  # it waited through an outage of this uplink
    created: float = 0.0
    correlation: bytes | None = None
    _pack: Pack | None = None

    def pack(self) -> Pack:
        if self._pack is None:
            from agent.wire import formats

            self._pack = formats.decode(self.payload, self.content_type)
            if self.historical:
                self._pack.historical = True
        return self._pack


@dataclass(frozen=True, slots=True)
class SensorInfo:
    """A configured sensor as its records name it: ``<prefix><quantity>`` for readings
    (``temp``, ``b.dist_mm``), with ``:min``/``:max`` after them for window statistics,
    and ``<name>:<fact>`` for its own facts (``air:n``, ``air:health``, ``door:in``)."""

    name: str
    type: str  # device type, as in the catalogue
    prefix: str = ""
    quantities: tuple[str, ...] = ()  # what it reports (SensorConfig.reported())


@dataclass(frozen=True, slots=True)
class Context:
    """What a session knows of its node and uplink."""

    node: str  # the node's id
    topics: Topics  # this uplink's native topics (its prefix)
    home: Topics  # the topics spooled rows carry (the [mqtt] prefix)
    boot: int  # the boot session number
    version: str  # citynode's version
    sensors: tuple[tuple[str, str], ...]  # (name, device type) as configured
    state_dir: Path  # where a session may keep what must survive a restart
    uplink: str  # this uplink's name ("main" for [mqtt])
    host: str = ""  # the broker, for points of access
    port: int = 1883
    options: Any = None  # the format's Options from [[uplink]] (or its defaults)
    interval_s: float = 60.0  # the report interval
    commands: bool = False  # whether the node takes commands ([commands] enabled)
    sensor_info: tuple[SensorInfo, ...] = ()

    def split(self, record: str) -> tuple[str | None, str, str]:
        """(sensor or None for the node's own, quantity or fact, statistic or "") of a
        record name: ``temp:max`` -> ("climate", "temp", "max"), ``air:n`` -> ("air",
        "n", ""), ``uptime`` -> (None, "uptime", "")."""
        for s in self.sensor_info:
            for q in s.quantities:
                name = s.prefix + q
                if record == name:
                    return s.name, q, ""
                if record.startswith(name + ":"):
                    return s.name, q, record[len(name) + 1:]
        for s in self.sensor_info:
            if record.startswith(s.name + ":"):
                return s.name, record[len(s.name) + 1:], ""
        return None, record, ""


class Session(Protocol):
    """See the module docstring for the call order."""

    def subscriptions(self) -> list[str]:
        """Topic filters to subscribe to (QoS 1) on every connect."""
        ...

    def will(self, offline: Pack) -> Out | None:
        """The last will for the next connection; ``offline`` is the node's unnumbered
        "offline, lost" state. Called before every connection attempt."""
        ...

    def opening(self) -> list[Out]:
        """What to send first on a new connection, before anything spooled. A session
        may also have ``connected_to(host, port)``, called just before, with the broker
        of this connection (another than ``Context.host`` after a failover): oneM2M's
        point of access names it."""
        ...

    def ready(self) -> bool:
        """Whether spooled messages may flow (e.g. the registration was confirmed)."""
        ...

    def render(self, item: Item) -> list[Out]:
        """The publications of one spooled message; [] when this platform has nothing
        to send for it (it then counts as delivered)."""
        ...

    def receive(self, topic: str, payload: bytes, *, retained: bool = False,
                correlation: bytes | None = None, response_topic: str | None = None) -> Reaction:
        """An inbound message on one of the subscriptions (``retained``: the broker
        kept it; a retained command must never be acted on, a retained Sparkplug STATE
        is how a host says it is there)."""
        ...

    def poll(self, now: float) -> Reaction:
        """Timeouts and retries; ``now`` is time.monotonic()."""
        ...

    def lost(self) -> None:
        """The connection dropped: forget what was outstanding on it."""
        ...

    def status(self) -> dict[str, Any]:
        """A few facts for ``citynode status`` and health (e.g. registered: true)."""
        ...
