"""The node as a Sparkplug B edge node: births, data, deaths, rebirths and the primary host.

The conversation of Eclipse Sparkplug 3.0 (sections cited by number and TCK id), with
no I/O but the state file (``sparkplug-<uplink>.json`` in the state directory: the
bdSeq and the metrics learned at run time) and no clock but ``clock``:

* :meth:`will`, before every connection attempt: NDEATH on
  ``spBv1.0/<group>/NDEATH/<edge node>`` with the next bdSeq (Int64, 0 to 255, one more
  each CONNECT; kept in the state file so a restart does not repeat it), QoS 1, not
  retained (section 5.4, tck-id-message-flow-edge-node-birth-publish-will-message-*);
* subscriptions: NCMD of this edge node, and with a primary host its STATE topic
  (section 5.4, tck-id-message-flow-edge-node-ncmd-subscribe);
* :meth:`opening`: NBIRTH (seq 0, bdSeq, ``Node Control/Rebirth`` false, every node
  metric with name, alias, datatype, timestamp, value or is_null, and ``engUnit``), then a
  DBIRTH for each configured sensor (sections 4.2.1 and 4.2.2, section 5.4). With
  ``primary_host`` set, nothing until that host's STATE says online (section 5.4,
  tck-id-message-flow-edge-node-birth-publish-phid-wait): spooled messages wait;
* each spooled message: DDATA per sensor and NDATA for the node's records, with aliases
  and without names or datatypes, every metric with its timestamp (ms), ``is_historical``
  on what was made before the births of this connection (it waited through an outage or
  for the primary host), and ``seq`` one more than the message before, 0 after
  255, across NBIRTH, DBIRTH, NDATA, DDATA and DDEATH (section 6.4.5). A record whose
  metric the births did not have first makes the node born again with it (section 5.11:
  a new NBIRTH and DBIRTH sequence is how an edge node adds metrics at run time);
* a sensor whose health turns ``disconnected`` gets a DDEATH (section 5.7,
  tck-id-operational-behavior-device-ddeath); its next record brings a DBIRTH first;
* the goodbye (a graceful stop) is an NDEATH with the connection's bdSeq
  (section 5.5, tck-id-operational-behavior-edge-node-intentional-disconnect-ndeath);
* NCMD ``Node Control/Rebirth`` true: NBIRTH and DBIRTHs again at once, seq from 0, same
  bdSeq (section 5.17, tck-id-operational-behavior-data-commands-rebirth-action-*);
  ``Node Control/Command`` (String): a command of docs/commands.md, signature included;
  its result comes back as the String metric ``Node Control/Command Result`` (JSON);
* primary host STATE ``{"online": false, "timestamp": ...}`` not older than the last
  online one: NDEATH now and nothing more until it is online again, then births again
  (section 5.5, tck-id-operational-behavior-edge-node-termination-host-offline). The node
  stays connected instead of disconnecting: its bdSeq then stays the same, which the
  host sees as a new birth after a death of the same session.

One deviation, an option: Sparkplug asks for QoS 0 on births and data (section 4.2.1);
citynode publishes them with QoS 1 by default, because a message leaves the node's spool
only when the broker acknowledges it (docs/spool.md). Host applications receive them
the same. ``qos = 0`` is the letter of the specification, at the price of losing what
is in flight when a connection drops.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from agent.wire.formats import PayloadError
from agent.wire.formats.sparkplug import Options
from agent.wire.formats.sparkplug import metrics as mt
from agent.wire.formats.sparkplug import protobuf as pb
from agent.wire.model import Pack, Record
from agent.wire.session import Command, Context, Item, Out, Reaction

log = logging.getLogger("citynode.uplink")

NAMESPACE = "spBv1.0"
DISCONNECTED = "disconnected"
#: A message made this long before the births of its connection is historical.
LATE_S = 2.0


def _sensors(ctx: Context) -> tuple[list[tuple[str, str, str | None]],
                                    dict[str, tuple[str, ...]], dict[str, frozenset[str]]]:
    """(name, device type, prefix or None when unknown) of each configured sensor, the
    quantities of its device type's spec (drivers/catalogue.py) in order, and those it
    reports."""
    from drivers import catalogue  # loaded by the configuration already

    infos = {i.name: i for i in ctx.sensor_info}
    sensors: list[tuple[str, str, str | None]] = []
    spec: dict[str, tuple[str, ...]] = {}
    reported: dict[str, frozenset[str]] = {}
    for name, dtype in ctx.sensors or tuple((i.name, i.type) for i in ctx.sensor_info):
        info = infos.get(name)
        sensors.append((name, dtype, info.prefix if info else None))
        try:
            spec[name] = tuple(catalogue.get(dtype).quantities)
        except KeyError:
            spec[name] = ()
        reported[name] = frozenset(info.quantities if info and info.quantities else spec[name])
    return sensors, spec, reported


F = TypeVar("F", bound=Callable[..., Any])


def _locked(method: F) -> F:
    """One call at a time: the uplink's thread calls the session, and the daemon's stop
    renders the goodbye from its own; seq and the births must not interleave."""
    @functools.wraps(method)
    def call(self: SparkplugSession, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)
    return call  # type: ignore[return-value]


class SparkplugSession:
    """One uplink speaking Sparkplug B (see the module docstring)."""

    def __init__(self, ctx: Context, clock: Callable[[], float] = time.time) -> None:
        opts = ctx.options if isinstance(ctx.options, Options) else Options()
        self._lock = threading.RLock()
        self.ctx = ctx
        self.clock = clock
        self.group = opts.group_id
        self.edge = opts.edge_node or ctx.node
        self.primary = opts.primary_host
        self.qos = opts.qos
        self.path = Path(ctx.state_dir) / f"sparkplug-{ctx.uplink}.json"
        state = self._load()
        last = state.get("bdseq")
        self._last_bdseq: int | None = last if isinstance(last, int) and 0 <= last < 256 \
            else None
        self.bdseq: int | None = None  # this connection's, from will()
        sensors, spec, reported = _sensors(ctx)
        self.devices = [s[0] for s in sensors]
        learned = state.get("learned")
        self.table = mt.Table(sensors, spec, commands=ctx.commands, reported=reported,
                              learned=learned if isinstance(learned, dict) else None)
        self.placer = mt.Placer(sensors, reported)
        self.table.devices[mt.NODE]["version"].value = ctx.version
        self.table.devices[mt.NODE]["interval"].value = float(ctx.interval_s)
        self.table.devices[mt.NODE]["sensors"].value = ",".join(f"{s[0]}:{s[1]}" for s in sensors)
        self._seq = 0
        self._born = False
        self._born_at = 0.0
        self._dead: set[str] = set()
        self._host_online = False
        self._host_ts: float | None = None  # the latest STATE timestamp taken
        self.births = 0
        self.rebirths = 0
        self.skipped = 0  # records with no metric (a device full of learned names)
        self.unreadable = 0  # spooled rows that do not decode, NCMDs that do not either
        self.ignored = 0  # NCMD metrics that are not commands, retained NCMDs

    # -- topics ----------------------------------------------------------------------
    def topic(self, verb: str, device: str = mt.NODE) -> str:
        t = f"{NAMESPACE}/{self.group}/{verb}/{self.edge}"
        return f"{t}/{device}" if device else t

    @property
    def state_topic(self) -> str:
        return f"{NAMESPACE}/STATE/{self.primary}"

    # -- the state file --------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _save(self) -> None:
        """Write the state file whole (a temporary file renamed over it, synced)."""
        data = json.dumps({"bdseq": self._last_bdseq, "learned": self.table.learned()},
                          separators=(",", ":"), sort_keys=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w") as f:  # a symlink planted there is not followed
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.warning("cannot keep the Sparkplug state in %s: %s", self.path, exc,
                        extra={"EVENT": "state_file_error", "UPLINK": self.ctx.uplink})

    # -- Session ---------------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        topics = [self.topic("NCMD")]
        if self.primary:
            topics.append(self.state_topic)
        return topics

    def _next_bdseq(self) -> int:
        self.bdseq = 0 if self._last_bdseq is None else (self._last_bdseq + 1) % 256
        self._last_bdseq = self.bdseq
        self._save()
        return self.bdseq

    @_locked
    def will(self, offline: Pack) -> Out | None:
        self.lost()
        self._next_bdseq()
        return self._ndeath()

    def _ndeath(self) -> Out:
        """NDEATH: the bdSeq metric alone and a timestamp, no seq (section 6.4.25)."""
        now = self._now()
        payload = pb.Payload(timestamp=now, metrics=[
            pb.Metric(mt.BDSEQ, timestamp=now, datatype=pb.INT64, value=self.bdseq)])
        return Out(self.topic("NDEATH"), pb.encode(payload), retain=False, qos=1)

    @_locked
    def opening(self) -> list[Out]:
        self._born = False
        self._seq = 0
        if self.primary and not self._host_online:
            return []  # births wait for the primary host
        return self._births()

    def ready(self) -> bool:
        return self._born

    @_locked
    def render(self, item: Item) -> list[Out]:
        try:
            pack = item.pack()
        except PayloadError as exc:
            self.unreadable += 1
            log.warning("Sparkplug uplink %s cannot read a spooled message: %s",
                        self.ctx.uplink, exc, extra={"EVENT": "render_error"})
            return []
        kind = item.kind or pack.kind
        status = next((r.text for r in pack.records if r.name == "status"), None)
        if kind == "state" and status == "offline":
            if not self._born:
                return []
            self._born = False
            return [self._ndeath()]
        records = self._result(pack) if kind == "result" else pack.records
        # Made before this Sparkplug session began (an outage, a primary host away): not a
        # current value for the host (section 6.4.6, is_historical).
        late = pack.time < self._born_at - LATE_S
        return self._data(pack, records, kind, item.historical or pack.historical or late)

    @_locked
    def receive(self, topic: str, payload: bytes, *, retained: bool = False,
                correlation: bytes | None = None, response_topic: str | None = None) -> Reaction:
        if topic == self.topic("NCMD"):
            return self._ncmd(payload, retained)
        if self.primary and topic == self.state_topic:
            return self._state(payload)
        return Reaction()

    def poll(self, now: float) -> Reaction:
        return Reaction()

    @_locked
    def lost(self) -> None:
        self._born = False
        self._host_online = False
        self._dead.clear()

    @_locked
    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sparkplug": f"{self.group}/{self.edge}", "bdseq": self.bdseq,
                               "born": self._born, "births": self.births,
                               "rebirths": self.rebirths}
        if self.primary:
            out["primary_host"] = "online" if self._host_online else "offline"
        for name in ("skipped", "unreadable", "ignored"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        return out

    # -- births and data -------------------------------------------------------------
    def _now(self) -> int:
        return round(self.clock() * 1000)

    def _take_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    def _out(self, verb: str, device: str, payload: pb.Payload) -> Out:
        """A message with QoS as configured. DATA messages leave datatypes out (section
        6.4.6, tck-id-payloads-metric-datatype-not-req): the births said them."""
        births = verb.endswith("BIRTH")
        return Out(self.topic(verb, device), pb.encode(payload, datatypes=births), qos=self.qos)

    def _birth_metric(self, d: mt.Def, now: int) -> pb.Metric:
        props = {"engUnit": (pb.STRING, d.unit)} if d.unit else {}
        return pb.Metric(d.name, alias=d.alias, timestamp=d.t or now, datatype=d.datatype,
                         value=d.value, is_null=d.value is None, properties=props)

    def _births(self) -> list[Out]:
        """NBIRTH (seq 0) and every sensor's DBIRTH: the node is born on this connection."""
        if self.bdseq is None:  # an uplink without a will (tools): a bdSeq all the same
            self._next_bdseq()
        now = self._now()
        node = self.table.devices[mt.NODE]
        node[mt.BDSEQ].value = self.bdseq
        node[mt.BDSEQ].t = now
        node["status"].value = "online"
        metrics = [self._birth_metric(node[mt.BDSEQ], now),
                   pb.Metric(mt.REBIRTH, timestamp=now, datatype=pb.BOOLEAN, value=False)]
        metrics += [self._birth_metric(d, now) for d in node.values() if d.name != mt.BDSEQ]
        self._seq = 0
        outs = [self._out("NBIRTH", mt.NODE, pb.Payload(now, metrics, self._take_seq()))]
        outs += [self._dbirth(device, now) for device in self.devices]
        self._born = True
        self._born_at = self.clock()
        self._dead.clear()
        self.births += 1
        return outs

    def _dbirth(self, device: str, now: int) -> Out:
        metrics = [self._birth_metric(d, now) for d in self.table.devices[device].values()]
        return self._out("DBIRTH", device, pb.Payload(now, metrics, self._take_seq()))

    @staticmethod
    def _result(pack: Pack) -> list[Record]:
        """A command's result records as one JSON text (docs/commands.md names them)."""
        values: dict[str, Any] = {}
        for r in pack.records:
            v = r.value if r.value is not None else r.text if r.text is not None else r.flag
            values[r.name] = int(v) if isinstance(v, float) and v.is_integer() else v
        return [Record(mt.RESULT, text=json.dumps(values, separators=(",", ":")))]

    def _data(self, pack: Pack, records: list[Record], kind: str | None,
              historical: bool) -> list[Out]:
        """NDATA and DDATA for a pack's records (births first when something is new)."""
        if kind == "result":
            placed = [(mt.NODE, mt.RESULT, mt.RESULT)]
        else:
            placed = self.placer.place([r.name for r in records])
        groups: dict[str, list[tuple[mt.Def, Record]]] = {}
        learned = False
        for r, (device, name, key) in zip(records, placed, strict=True):
            d, new = self.table.get(device, name, r, key)
            if d is None:
                self.skipped += 1
                continue
            learned |= new
            groups.setdefault(device, []).append((d, r))
        outs: list[Out] = []
        if learned:
            self._save()
            log.info("Sparkplug uplink %s: new metrics, born again", self.ctx.uplink,
                     extra={"EVENT": "sparkplug_rebirth", "UPLINK": self.ctx.uplink})
            self.rebirths += 1
        if learned or not self._born:
            if self.primary and not self._host_online:  # no births, so no data either
                self.skipped += len(records)
                return []
            outs += self._births()
        now = self._now()
        for device, items in groups.items():
            if device in self._dead:
                self._dead.discard(device)
                outs.append(self._dbirth(device, now))
            metrics = []
            for d, r in items:
                t = round((pack.time + (r.t or 0.0)) * 1000)
                value = mt.convert(d, r)
                if not historical and (d.t is None or t >= d.t):
                    d.value, d.t = value, t
                metrics.append(pb.Metric(alias=d.alias, timestamp=max(0, t), value=value,
                                         datatype=d.datatype, is_null=value is None,
                                         is_historical=historical))
            payload = pb.Payload(now, metrics, self._take_seq())
            outs.append(self._out("DDATA" if device else "NDATA", device, payload))
            if kind == "event" and device and any(
                    d.name == "health" and r.text == DISCONNECTED for d, r in items):
                self._dead.add(device)
                outs.append(self._out("DDEATH", device, pb.Payload(now, [], self._take_seq())))
        return outs

    # -- inbound ---------------------------------------------------------------------
    def _ncmd(self, payload: bytes, retained: bool) -> Reaction:
        if retained:  # kept by the broker: it would act again at every connect
            self.ignored += 1
            return Reaction()
        try:
            cmd = pb.decode(payload)
        except pb.ProtobufError as exc:
            self.unreadable += 1
            log.warning("Sparkplug uplink %s: unreadable NCMD: %s", self.ctx.uplink, exc,
                        extra={"EVENT": "command_unreadable", "UPLINK": self.ctx.uplink})
            return Reaction()
        by_alias = {d.alias: d.name for d in self.table.devices[mt.NODE].values()}
        reaction = Reaction()
        rebirth = False
        for m in cmd.metrics:
            name = m.name if m.name is not None else by_alias.get(m.alias or -1)
            if name == mt.REBIRTH and m.value is True:
                rebirth = True
            elif name == mt.COMMAND and self.ctx.commands and isinstance(m.value, str) \
                    and m.value:
                reaction.commands.append(Command(m.value.encode()))
            else:
                self.ignored += 1
        if rebirth and (self._host_online or not self.primary) and self.bdseq is not None:
            self.rebirths += 1
            reaction.send = self._births()
        return reaction

    def _state(self, payload: bytes) -> Reaction:
        """The primary host's STATE (section 6.4.27): JSON ``online`` and ``timestamp``."""
        try:
            state = json.loads(payload)
        except (ValueError, RecursionError):
            self.unreadable += 1
            return Reaction()
        if not isinstance(state, dict):
            self.unreadable += 1
            return Reaction()
        online, ts = state.get("online"), state.get("timestamp")
        if not isinstance(online, bool) or isinstance(ts, bool) or \
                not isinstance(ts, int | float) or not math.isfinite(ts):
            self.unreadable += 1
            return Reaction()
        if self._host_ts is not None and ts < self._host_ts:
            return Reaction()  # an older session's STATE (a late will): not the host now
        newer = self._host_ts is not None and ts > self._host_ts
        self._host_ts = ts
        if online:
            # the host has come (back): births, also when its offline STATE went unseen
            # (a newer session of the host); its own retained STATE again is no news
            again = not self._host_online or newer
            self._host_online = True
            return Reaction(reopen=again)
        self._host_online = False
        if self._born:  # section 5.5: its death now; it stays connected (module docstring)
            self._born = False
            return Reaction(send=[self._ndeath()])
        return Reaction()

