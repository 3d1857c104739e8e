"""The fleet's state as the broker shows it, with no I/O: messages in, node rows out.

:class:`FleetModel` is fed every message ``citynode fleet`` receives (topic, payload,
retained flag, arrival time) and keeps, per node, what an operator asks about: online or
offline and why (the retained birth, last will or goodbye on ``state``), version, slot
and last update result (birth and health records), degraded sensors (``<sensor>:health``
in health reports and events), spool backlog (``spool``, ``spool_bytes``, ``evicted_*``),
update progress (the ``update`` record of events) and when the node was last heard from.

Everything it reads comes from the network, so nothing is trusted: a payload that does
not decode, a topic outside ``<prefix>/<node>/<leaf>``, a node id the configuration
would refuse, a value of the wrong type, are counted and dropped, never raised; every
text kept is cut to a bound and stripped of control characters; the number of nodes
tracked is capped (:data:`DEFAULT_MAX_NODES`), and so is every per-node table. Memory
is therefore bounded by ``max_nodes`` whatever the broker sends.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

#: Nodes tracked at most by default (a 50,000-node city fits); ``--max-nodes`` changes it.
DEFAULT_MAX_NODES = 50_000
#: The most ``--max-nodes`` may ask for (about 1 KiB a node).
MAX_NODES_LIMIT = 1_000_000
#: Sensors remembered per node (a node has a handful; more is a hostile payload).
MAX_SENSORS = 32
#: Characters kept of any text from a payload (versions, reasons, sensor names).
MAX_TEXT = 64
#: Characters kept of the birth's sensor list.
MAX_SENSOR_LIST = 256
#: Health states that need no attention (as ``citynode status`` judges them).
FINE = frozenset({"ok", "warming_up", "sleeping", "stopped"})
#: Update phases that end an update (docs/updates.md): the first one is success.
UPDATE_OUTCOMES = ("confirmed", "rolled_back", "failed", "refused")
#: The topic leaves a node publishes on (docs/payload.md section 1).
LEAVES = ("state", "health", "event", "telemetry", "result")
#: A node id as ``[node] id`` allows it.
NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
#: Bytes decoded at most; a node never sends more (agent.wire.model.MAX_PAYLOAD).
MAX_PAYLOAD = 256 * 1024

_CONTROLS = {c: "?" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def clean(value: Any, limit: int = MAX_TEXT) -> str:
    """Text from a payload, safe to print: no control characters (a payload must not move
    the operator's cursor), no unpaired surrogates, at most ``limit`` characters."""
    text = str(value)[: limit + 1].translate(_CONTROLS)
    text = text.encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(slots=True)
class NodeState:
    """What is known of one node; times are the watcher's wall clock (Unix seconds)."""

    node: str
    status: str = "unknown"  # online, offline, unknown (no state message seen yet)
    reason: str = ""  # offline: lost (the will) or shutdown (the goodbye)
    state_at: float | None = None  # the state message's bt
    session: int | None = None  # boot session of the last birth
    version: str = ""
    slot: str = ""
    update: str = ""  # the update's state: the birth's or health's summary, or an event's phase
    update_phase: str = ""  # its phase (the summary's first word)
    update_reason: str = ""  # why, when an event said
    update_at: float | None = None
    interval_s: float | None = None
    sensors: str = ""
    degraded: dict[str, str] = field(default_factory=dict)  # sensor -> health state
    health_at: dict[str, float] = field(default_factory=dict)  # sensor -> bt of that state
    spool: int | None = None
    spool_bytes: int | None = None
    evicted: int | None = None
    first_seen: float = 0.0
    last_heard: float | None = None  # the last live (not retained) message
    messages: int = 0


@dataclass(frozen=True, slots=True)
class Row:
    """One node as the view shows it: the state plus what the watcher judged."""

    state: NodeState
    silent_s: float | None  # seconds since last heard, when over the silence limit
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(slots=True)
class Counters:
    """Messages the model took and dropped, and why (the view prints them)."""

    messages: int = 0
    malformed: int = 0  # did not decode, or not a pack citynode sends
    foreign: int = 0  # a topic outside <prefix>/<node>/<leaf>, or an invalid node id
    filtered: int = 0  # a node the id pattern leaves out
    over_cap: int = 0  # a node beyond max_nodes


def _decode(payload: bytes) -> Any:
    """The payload as a Pack, or None when it is not one (any error: hostile bytes)."""
    if not payload or len(payload) > MAX_PAYLOAD:
        return None
    try:
        from agent.wire import formats

        return formats.decode(bytes(payload))
    except Exception:  # bytes from the network: whatever fails is malformed
        return None


class FleetModel:
    """The fleet's nodes from the messages under ``<prefix>/+/<leaf>``; never raises."""

    def __init__(self, prefix: str, *, pattern: str = "*", max_nodes: int = DEFAULT_MAX_NODES,
                 decode: Callable[[bytes], Any] = _decode) -> None:
        self.prefix = prefix.rstrip("/")
        self.pattern = pattern or "*"
        self.max_nodes = max(1, int(max_nodes))
        self.nodes: dict[str, NodeState] = {}
        self.counters = Counters()
        self._decode = decode
        self._head = self.prefix + "/"

    # -- input ---------------------------------------------------------------------------
    def split(self, topic: str) -> tuple[str, str] | None:
        """(node, leaf) of a topic under the prefix, or None."""
        if not isinstance(topic, str) or not topic.startswith(self._head):
            return None
        node, sep, leaf = topic[len(self._head):].partition("/")
        if not sep or leaf not in LEAVES or not NODE_ID.fullmatch(node):
            return None
        return node, leaf

    def matches(self, node: str) -> bool:
        return fnmatch.fnmatchcase(node, self.pattern)

    def node(self, node: str, now: float) -> NodeState | None:
        """The node's state, made on first sight unless the cap is reached."""
        st = self.nodes.get(node)
        if st is None:
            if len(self.nodes) >= self.max_nodes:
                self.counters.over_cap += 1
                return None
            st = self.nodes[node] = NodeState(node, first_seen=now)
        return st

    def feed(self, topic: str, payload: bytes, *, retained: bool = False,
             now: float) -> tuple[str, str, Any] | None:
        """Take one message; returns (node, leaf, decoded pack or None) when it was a
        node's message this model tracks, else None. Never raises."""
        self.counters.messages += 1
        where = self.split(topic)
        if where is None:
            self.counters.foreign += 1
            return None
        node, leaf = where
        if not self.matches(node):
            self.counters.filtered += 1
            return None
        st = self.node(node, now)
        if st is None:
            return None
        st.messages += 1
        if not retained:
            st.last_heard = now
        if leaf == "telemetry":  # only proof of life: not decoded
            return node, leaf, None
        if not payload:  # a retained message cleared (empty): forget the state
            if leaf == "state":
                st.status, st.reason = "unknown", ""
            return node, leaf, None
        pack = self._decode(payload)
        if pack is None or not getattr(pack, "records", None):
            self.counters.malformed += 1
            return node, leaf, None
        try:
            records = records_of(pack.records)
            bt = _number(getattr(pack, "time", None)) or now
            historical = bool(getattr(pack, "historical", False))
            if leaf == "state":
                self._state(st, records, bt, _int(getattr(pack, "session", None)))
            elif leaf == "health":
                self._health(st, records, bt)
            elif leaf == "event":
                self._event(st, records, bt, historical)
        except Exception:  # a pack shaped like nothing seen: dropped
            self.counters.malformed += 1
            return node, leaf, None
        return node, leaf, pack

    def _state(self, st: NodeState, recs: dict[str, Any], bt: float,
               session: int | None) -> None:
        status = recs.get("status")
        if status not in ("online", "offline"):
            self.counters.malformed += 1
            return
        st.status, st.state_at = status, bt
        st.reason = clean(recs.get("reason", ""), 32) if status == "offline" else ""
        if status != "online":
            return
        if session is not None and session != st.session:
            st.degraded.clear()  # a new boot session reports its sensors afresh
            st.health_at.clear()
            st.session = session
        for name in ("version", "slot"):
            if isinstance(recs.get(name), str):
                setattr(st, name, clean(recs[name]))
        self._update_summary(st, recs, bt)
        interval = _number(recs.get("interval"))
        if interval is not None and 0 < interval <= 86400:
            st.interval_s = interval
        if isinstance(recs.get("sensors"), str):
            st.sensors = clean(recs["sensors"], MAX_SENSOR_LIST)

    def _sensor_health(self, st: NodeState, recs: dict[str, Any], bt: float) -> None:
        for name, value in recs.items():
            if not name.endswith(":health") or not isinstance(value, str):
                continue
            sensor = clean(name[: -len(":health")], 32)
            if bt < st.health_at.get(sensor, -math.inf):
                continue  # older than what is known (a backlog sent late)
            if value in FINE:
                st.degraded.pop(sensor, None)
                st.health_at[sensor] = bt
            elif sensor in st.degraded or len(st.degraded) < MAX_SENSORS:
                st.degraded[sensor] = clean(value, 32)
                st.health_at[sensor] = bt
            if len(st.health_at) > 2 * MAX_SENSORS:  # forget the oldest fine ones
                for old in sorted(st.health_at, key=st.health_at.__getitem__):
                    if len(st.health_at) <= MAX_SENSORS or old in st.degraded:
                        continue
                    del st.health_at[old]

    def _health(self, st: NodeState, recs: dict[str, Any], bt: float) -> None:
        self._sensor_health(st, recs, bt)
        for name, attr in (("spool", "spool"), ("spool_bytes", "spool_bytes")):
            v = _number(recs.get(name))
            if v is not None and v >= 0:
                setattr(st, attr, int(min(v, 2**62)))
        ev = [_number(recs.get(k)) for k in ("evicted_tele", "evicted_ev")]
        if any(v is not None for v in ev):
            st.evicted = int(min(sum(v for v in ev if v is not None and v >= 0), 2**62))
        for name in ("version", "slot"):
            if isinstance(recs.get(name), str):
                setattr(st, name, clean(recs[name]))
        self._update_summary(st, recs, bt)

    @staticmethod
    def _update_summary(st: NodeState, recs: dict[str, Any], bt: float) -> None:
        """The birth's and health's ``update`` record (``rolled_back 0.2.0``): the node's
        own summary, newer than any event before it."""
        summary = recs.get("update")
        if isinstance(summary, str) and summary.strip() and (st.update_at is None
                                                             or bt >= st.update_at):
            st.update, st.update_at = clean(summary), bt
            phase = clean(summary.split()[0], 32)
            if phase != st.update_phase:
                st.update_phase, st.update_reason = phase, ""

    def _event(self, st: NodeState, recs: dict[str, Any], bt: float,
               historical: bool) -> None:
        self._sensor_health(st, recs, bt)
        phase = recs.get("update")
        if isinstance(phase, str) and (st.update_at is None or bt >= st.update_at):
            st.update_phase, st.update_at = clean(phase, 32), bt
            st.update_reason = clean(update_reason(recs))
            st.update = st.update_phase

    # -- output --------------------------------------------------------------------------
    def rows(self, now: float, *, silent_after: float = 3.0, version: str = "*",
             problems_only: bool = False) -> list[Row]:
        """The nodes that pass the version filter, those needing attention first."""
        out = []
        for st in self.nodes.values():
            if version not in ("", "*") and not fnmatch.fnmatchcase(st.version, version):
                continue
            row = judge(st, now, silent_after)
            if problems_only and row.ok:
                continue
            out.append(row)
        out.sort(key=lambda r: (r.ok, r.state.node))
        return out


def _int(value: Any) -> int | None:
    v = _number(value)
    return int(v) if v is not None and v.is_integer() else None


def records_of(records: Iterable[Any]) -> dict[str, Any]:
    """Name -> value (number, text or flag) of a pack's records; the first of a name wins,
    and only names of a sane length are kept."""
    out: dict[str, Any] = {}
    for r in records:
        name = getattr(r, "name", None)
        if not isinstance(name, str) or not 0 < len(name) <= 80 or name in out:
            continue
        for attr in ("text", "value", "flag"):
            v = getattr(r, attr, None)
            if v is not None:
                out[name] = v
                break
        if len(out) >= 4 * MAX_SENSORS + 32:
            break
    return out


def update_reason(recs: dict[str, Any]) -> str:
    """Why an update event says what it says: the first text among the names a reason
    goes by (``reason``, ``update:reason``, ``error``, ``detail``)."""
    for name in ("reason", "update:reason", "error", "detail"):
        if isinstance(recs.get(name), str):
            return recs[name]
    return ""


def judge(st: NodeState, now: float, silent_after: float) -> Row:
    """The node's problems: offline, degraded sensors, silent for longer than
    ``silent_after`` report intervals (an online node only), a failed update."""
    problems: list[str] = []
    silent: float | None = None
    if st.status == "offline":
        problems.append(f"offline ({st.reason or 'no reason'})")
    elif st.status == "unknown":
        problems.append("no state")
    if st.degraded:
        problems.append("sensors " + ", ".join(f"{k} {v}" for k, v in
                                               sorted(st.degraded.items())))
    if st.status == "online" and st.interval_s and silent_after > 0:
        quiet = now - (st.last_heard if st.last_heard is not None else st.first_seen)
        if quiet > silent_after * st.interval_s:
            silent = quiet
            problems.append(f"silent {quiet:.0f} s")
    if st.update_phase in UPDATE_OUTCOMES[1:]:
        problems.append(f"update {st.update_phase}"
                        + (f" ({st.update_reason})" if st.update_reason else ""))
    return Row(st, silent, tuple(problems))


def row_doc(row: Row, now: float) -> dict[str, Any]:
    """A row for ``--json``: every field a script may want, nulls where unknown."""
    st = row.state
    return {
        "node": st.node, "status": st.status, "reason": st.reason or None,
        "since": st.state_at, "session": st.session, "version": st.version or None,
        "slot": st.slot or None, "update": st.update or None,
        "update_phase": st.update_phase or None, "update_reason": st.update_reason or None,
        "interval_s": st.interval_s, "sensors": st.sensors or None,
        "degraded": dict(sorted(st.degraded.items())), "spool": st.spool,
        "spool_bytes": st.spool_bytes, "evicted": st.evicted,
        "last_heard_s": None if st.last_heard is None else round(now - st.last_heard, 1),
        "silent_s": None if row.silent_s is None else round(row.silent_s, 1),
        "problems": list(row.problems), "ok": row.ok,
    }
