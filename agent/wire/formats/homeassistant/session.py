"""One uplink's conversation with Home Assistant (sans I/O: the uplink owns the socket).

- Opening (every connection, and again when Home Assistant says ``online`` on its status
  topic, home-assistant.io/integrations/mqtt "Birth and last will messages"): an empty
  retained payload on every discovery topic announced before and not now (the entity is
  deleted, "Discovery payload"), the retained discovery configuration of every entity
  (:mod:`.entities`), then the availability ``online`` (retained). The topics announced
  are kept in ``<state_dir>/homeassistant-<uplink>.json`` so that a sensor removed while
  the node was down is removed from Home Assistant at the next start.
- Rendering: a report becomes one retained JSON state (values by object id, ``null``
  for an announced quantity the report lacks, so Home Assistant shows it unknown rather
  than a stale value); an alarm or an event becomes an event entity's JSON
  (``event_type`` and attributes, home-assistant.io/integrations/event.mqtt); the health
  report and a sensor's health transitions a retained diagnostics JSON; the node's
  goodbye the availability ``offline``. Home Assistant keeps no history it is handed
  late, so a report or health that waited through an outage (or is older than one
  already shown) is not shown as current: it renders to nothing. Late alarms and events
  are sent, with ``historical: true``. Command results concern no entity: nothing.
- The will: availability ``offline``, retained.
- A safety net for removal: the session subscribes to its own node's discovery topics;
  a retained configuration there that carries this node's unique ids but is no entity
  of the configuration now (a removal lost with a connection, a lost state file) is
  answered with the empty payload that deletes it.
"""

from __future__ import annotations

import json
import logging
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.wire.formats import PayloadError
from agent.wire.formats.homeassistant import Options
from agent.wire.formats.homeassistant.entities import (
    ALARMS,
    EVENT_TYPES,
    NODE_DIAGNOSTICS,
    OTHER,
    Layout,
    dumps,
    key,
)
from agent.wire.session import Context, Item, Out, Reaction

if TYPE_CHECKING:
    from agent.wire.model import Pack, Record

log = logging.getLogger("citynode.uplink")

JSON = "application/json"
TEXT = "text/plain"
ONLINE = b"online"
OFFLINE = b"offline"
#: A retained configuration bigger than this is not one of ours (bounds parsing).
MAX_CONFIG = 16 * 1024
#: Keys every event message carries; a record never overwrites them.
_RESERVED = ("event_type", "subject", "time", "historical", "session", "seq")


def iso(t: float) -> str | None:
    """A Unix time as ISO 8601 in UTC (what a ``timestamp`` sensor reads), None if absurd."""
    try:
        dt = datetime.fromtimestamp(t, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return dt.isoformat(timespec="seconds" if float(t).is_integer() else "milliseconds")


def value(r: Record) -> Any:
    """A record's value for JSON: a number rounded to its quantity's resolution (as
    ``citynode decode`` shows it), a text, or a flag."""
    if r.value is None:
        return r.text if r.text is not None else r.flag
    from agent.wire import quantities

    v = r.value
    res = quantities.resolution(r.name)
    if res and res >= 1 and v.is_integer():
        return int(v)
    if res:
        return round(v, max(0, -math.floor(math.log10(res) + 1e-9)))
    return int(v) if v.is_integer() and abs(v) < 2 ** 53 else v


class HomeAssistantSession:
    """See the module docstring."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.options: Options = ctx.options if isinstance(ctx.options, Options) else Options()
        self.layout = Layout(ctx, self.options)
        self.configs = self.layout.configs()
        self.state_file = Path(ctx.state_dir) / f"homeassistant-{ctx.uplink}.json"
        prefix, node = self.layout.prefix, self.layout.node
        self.sweep = f"{prefix}/+/{node}/+/config"
        self._ours = re.compile(rf"{re.escape(prefix)}/[a-z_]+/{re.escape(node)}/[a-z0-9_]+"
                                r"/config\Z")
        self._last_state = -math.inf
        self._last_diag = -math.inf
        self._diag: dict[str, Any] = dict.fromkeys(self.layout.diagnostic_keys)
        self._entity_keys = set(self.layout.state_keys)
        self._exact: dict[str, str] = {}  # record name -> sensor, where the prefix is known
        self._by_quantity: dict[str, list[Any]] = {}
        for s in self.layout.sensors:
            for q in s.quantities:
                self._by_quantity.setdefault(q, []).append(s)
                if s.prefix is not None:
                    self._exact.setdefault(s.prefix + q, s.name)
        self.removed = 0
        self.reopened = 0

    # -- connection ----------------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        return [self.layout.status_topic, self.sweep]

    def will(self, offline: Pack) -> Out | None:
        return Out(self.layout.availability_topic, OFFLINE, retain=True, content_type=TEXT)

    def opening(self) -> list[Out]:
        previous = self._announced()
        outs = [Out(t, b"", retain=True) for t in previous if t not in self.configs]
        self.removed += len(outs)
        outs += [Out(t, p, retain=True, content_type=JSON) for t, p in self.configs.items()]
        outs.append(Out(self.layout.availability_topic, ONLINE, retain=True, content_type=TEXT))
        if set(previous) != set(self.configs):
            self._remember(list(self.configs))
        return outs

    def ready(self) -> bool:
        return True

    def poll(self, now: float) -> Reaction:
        return Reaction()

    def lost(self) -> None:
        """Nothing is outstanding beyond the broker's PUBACKs, which the uplink tracks."""

    def status(self) -> dict[str, Any]:
        return {"entities": len(self.layout.entities)}

    # -- the announced topics, across restarts -------------------------------------------
    def _announced(self) -> list[str]:
        """The discovery topics announced before (only topics of this node's shape: a
        damaged file never makes the node publish elsewhere)."""
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
            topics = data["announced"]
            if not isinstance(topics, list):
                raise TypeError("announced is not a list")
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s unreadable (%s): entities removed while it was lost stay until "
                        "their retained configuration is seen", self.state_file, exc,
                        extra={"EVENT": "ha_state_unreadable", "UPLINK": self.ctx.uplink})
            return []
        return [t for t in topics if isinstance(t, str) and self._ours.fullmatch(t)]

    def _remember(self, topics: list[str]) -> None:
        from drivers.files import write_atomic

        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.state_file, json.dumps({"version": 1, "announced": topics}))
        except OSError as exc:
            log.warning("cannot keep the announced entities in %s: %s", self.state_file, exc,
                        extra={"EVENT": "ha_state_write", "UPLINK": self.ctx.uplink})

    # -- inbound ---------------------------------------------------------------------------
    def receive(self, topic: str, payload: bytes, *, retained: bool = False,
                correlation: bytes | None = None, response_topic: str | None = None) -> Reaction:
        """Home Assistant's ``online`` (it started) -> announce again; a stale
        configuration of this node -> delete it. Anything else is ignored; nothing here
        raises."""
        try:
            if topic == self.layout.status_topic:
                # a retained birth is no news: it comes with every subscription, right
                # after this connection's own opening
                if bytes(payload).strip() == ONLINE and not retained:
                    self.reopened += 1
                    return Reaction(reopen=True)
            elif self._stale(topic, bytes(payload)):
                self.removed += 1
                return Reaction(send=[Out(topic, b"", retain=True)])
        except Exception:  # an inbound message must never take the uplink down
            log.exception("ignored a message on %s", topic,
                          extra={"EVENT": "ha_inbound", "UPLINK": self.ctx.uplink})
        return Reaction()

    def _stale(self, topic: str, payload: bytes) -> bool:
        if not payload or len(payload) > MAX_CONFIG or topic in self.configs \
                or not self._ours.fullmatch(topic):
            return False
        try:
            config = json.loads(payload)
        except (ValueError, RecursionError):
            return False
        if not isinstance(config, dict):
            return False
        uid = config.get("unique_id", config.get("uniq_id"))
        return isinstance(uid, str) and uid.startswith(self.layout.unique_prefix)

    # -- spooled messages ------------------------------------------------------------------
    def render(self, item: Item) -> list[Out]:
        try:
            pack = item.pack()
        except (PayloadError, ValueError) as exc:
            log.warning("a spooled %s message cannot be read for Home Assistant: %s",
                        item.kind, exc, extra={"EVENT": "ha_render", "UPLINK": self.ctx.uplink})
            return []
        if item.kind == "telemetry":
            return self._telemetry(pack)
        if item.kind == "health":
            return self._health(pack)
        if item.kind in ("event", "alarm"):
            return self._events(pack, alarm=item.kind == "alarm")
        if item.kind == "state":
            return self._state(pack)
        return []  # command results concern no entity

    def _head(self, pack: Pack) -> dict[str, Any]:
        return {"time": iso(pack.time), "session": pack.session, "seq": pack.seq}

    def _telemetry(self, pack: Pack) -> list[Out]:
        if pack.historical or pack.time < self._last_state:
            return []
        self._last_state = pack.time
        doc = {**self._head(pack), **dict.fromkeys(self.layout.state_keys)}
        owners = self._owners([r.name for r in pack.records])
        written: set[str] = set(_RESERVED)
        for r in pack.records:
            k = self._key(r.name, owners)
            if k is not None and k not in written:
                written.add(k)
                doc[k] = value(r)
        return [Out(self.layout.state_topic, dumps(doc), retain=True, content_type=JSON)]

    def _key(self, name: str, owners: dict[str, str]) -> str | None:
        """The JSON key of a record: ``<sensor>_<quantity>`` (the entity's object id) for
        a sensor's central value, ``..._min`` / ``..._max`` for its extremes, the record
        name made safe for everything else (``pm:n`` -> ``pm_n``); None for a record whose
        safe name is an entity's key that is not its own (it would show as that entity)."""
        base, sep, stat = name.partition(":")
        owner = owners.get(base) if not sep or stat in ("min", "max") else None
        if owner is None:
            safe = key(name)
            return None if safe in self._entity_keys else safe
        obj = f"{owner}_{base.rpartition('.')[2]}"
        return f"{obj}_{stat}" if sep else obj

    def _owners(self, names: list[str]) -> dict[str, str]:
        """Which sensor each measurement record of a report belongs to.

        ``[prefix.]quantity`` names no sensor: the prefix, where the context gives it,
        decides; a quantity only one sensor measures is that sensor's; otherwise the
        report's order does (a sensor's records are followed by its own ``<sensor>:n``,
        ``:q`` or feature records). Two records that would land on one sensor's quantity
        are both left under their own names rather than guessed."""
        owners: dict[str, str] = {}
        for i, name in enumerate(names):
            base, sep, stat = name.partition(":")
            if (sep and stat not in ("min", "max")) or base in owners:
                continue
            owner = self._owner(base, names, i)
            if owner is not None:
                owners[base] = owner
        seen: dict[tuple[str, str], str] = {}
        clash: set[str] = set()
        for base, owner in owners.items():
            slot = (owner, base.rpartition(".")[2])
            if slot in seen:
                clash.update((base, seen[slot]))
            seen.setdefault(slot, base)
        return {b: o for b, o in owners.items() if b not in clash}

    def _owner(self, base: str, names: list[str], at: int) -> str | None:
        if base in self._exact:
            return self._exact[base]
        unknown = [s.name for s in self._by_quantity.get(base.rpartition(".")[2], ())
                   if s.prefix is None]
        if len(unknown) == 1:
            return unknown[0]
        for later in names[at + 1:]:
            sensor, sep, _ = later.partition(":")
            if sep and sensor in unknown:
                return sensor
        return None

    def _diagnostics(self, pack: Pack, extra: dict[str, Any]) -> Out:
        doc = {**self._head(pack), **self._diag}
        for k, v in extra.items():
            doc.setdefault(k, v)
        return Out(self.layout.diagnostics_topic, dumps(doc), retain=True, content_type=JSON)

    def _health(self, pack: Pack) -> list[Out]:
        if pack.historical or pack.time < self._last_diag:
            return []
        self._last_diag = pack.time
        extra: dict[str, Any] = {}
        for r in pack.records:
            base, sep, stat = r.name.partition(":")
            if sep and stat == "health":
                k = f"{key(base)}_health"
            elif not sep and base in NODE_DIAGNOSTICS:
                k = f"node_{base}"
            else:
                k = key(r.name)
            if k in self._diag:
                self._diag[k] = value(r)
            elif k not in _RESERVED:
                extra[k] = value(r)
        return [self._diagnostics(pack, extra)]

    def _events(self, pack: Pack, *, alarm: bool) -> list[Out]:
        groups: dict[str, list[Record]] = {}
        for r in pack.records:
            groups.setdefault(r.name.partition(":")[0], []).append(r)
        outs: list[Out] = []
        health = False
        for subject, records in groups.items():
            obj, types = self._entity_of(subject, alarm)
            doc: dict[str, Any] = {"event_type": OTHER, "subject": subject,
                                   "time": iso(pack.time), "historical": pack.historical,
                                   "session": pack.session, "seq": pack.seq}
            event_type = None
            for r in records:
                _, sep, suffix = r.name.partition(":")
                if alarm and suffix == "event" and event_type is None:
                    event_type = str(value(r))
                    continue
                if not alarm and event_type is None:
                    event_type = suffix if sep else subject
                    doc.setdefault("value", value(r))
                    if suffix == "health" and f"{key(subject)}_health" in self._diag:
                        self._diag[f"{key(subject)}_health"] = value(r)
                        health = True
                    continue
                k = key(suffix) if sep else "value"
                if k not in _RESERVED:
                    doc.setdefault(k, value(r))
            if event_type in types:
                doc["event_type"] = event_type
            elif event_type is not None:
                doc["event"] = event_type
            outs.append(Out(f"{self.layout.event_base}/{obj}", dumps(doc), content_type=JSON))
        if health and not pack.historical and pack.time >= self._last_diag:
            self._last_diag = pack.time
            outs.append(self._diagnostics(pack, {}))
        return outs

    def _entity_of(self, subject: str, alarm: bool) -> tuple[str, tuple[str, ...]]:
        """The event entity a subject's records go to, and its event types."""
        if alarm:
            family = subject if subject in ("fall", "fire") else (
                "household" if subject == "home" or subject in self.layout.power_sensors
                else None)
            obj = self.layout.alarm_objects.get(family or "")
            if obj is not None and family is not None:
                return obj, ALARMS[family].event_types
        return "events", EVENT_TYPES

    def _state(self, pack: Pack) -> list[Out]:
        """The node's goodbye of this boot session: Home Assistant shows it unavailable.
        A goodbye of an earlier session, delivered late, says nothing about now."""
        status = next((r.text for r in pack.records if r.name == "status"), None)
        if status == "offline" and pack.session == self.ctx.boot and not pack.historical:
            return [Out(self.layout.availability_topic, OFFLINE, retain=True, content_type=TEXT)]
        return []
