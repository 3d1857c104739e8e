"""What each spooled message becomes in oneM2M: containers and the ``con`` of their
contentInstances (the shapes are in the package's docstring).

A telemetry pack holds every sensor's window; oneM2M platforms read one container per
sensor, so the pack is split. Record names say which sensor a record is of in two ways
(docs/payload.md section 5): ``<sensor>:<fact>`` names the sensor; a reading
(``[prefix.]pm25[:min|max]``) belongs to the sensor that reports that quantity with that
prefix (the daemon's :class:`agent.wire.session.SensorInfo`). Without those (a session
made from names and device types only) a reading goes to the sensor whose device
measures it (drivers/<device>/spec.py); when two do, the order in which the daemon
writes a window (sensor by sensor in configuration order, each block ending with its
``<sensor>:n``/``:q`` records) decides, and the prefix seen is remembered. Records of no
sensor (``bays:occ``, a bin's fill) go to the ``node`` container.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.wire.model import Pack, Record, to_readable
from agent.wire.session import SensorInfo

#: Containers of the node itself; a sensor of the same name gets "<name>-sensor" (a sensor
#: name cannot contain "-", so that name is free).
NODE, HEALTH, EVENTS, STATE, COMMANDS, RESULTS = (
    "node", "health", "events", "state", "commands", "results")
RESERVED = (NODE, HEALTH, EVENTS, STATE, COMMANDS, RESULTS)
CONTAINER_OF_KIND = {"health": HEALTH, "event": EVENTS, "alarm": EVENTS, "state": STATE,
                     "result": RESULTS}
STATS = ("min", "max")  # a quantity's window statistics, folded into its reading


@dataclass(frozen=True, slots=True)
class Sensor:
    name: str
    type: str
    container: str
    quantities: frozenset[str]
    prefix: str | None = None  # None: not known (attributed by order, see above)


def sensors_of(configured: Iterable[tuple[str, str]],
               info: Iterable[SensorInfo] = ()) -> list[Sensor]:
    """The configured sensors with their containers, the quantities they report and their
    prefixes: from ``info`` when the daemon gave it, else from the device types (an
    unknown type measures nothing the session can attribute)."""
    from drivers import catalogue

    def measured(typ: str) -> frozenset[str]:
        try:
            return frozenset(catalogue.get(typ).quantities)
        except KeyError:
            return frozenset()

    def container(name: str) -> str:
        return f"{name}-sensor" if name in RESERVED else name

    known = list(info)
    if known:
        return [Sensor(s.name, s.type, container(s.name),
                       frozenset(s.quantities) or measured(s.type), s.prefix) for s in known]
    return [Sensor(name, typ, container(name), measured(typ)) for name, typ in configured]


def iso(t: float) -> str | None:
    """UTC ISO 8601 with a Z, milliseconds only when there are some; None off the calendar."""
    try:
        ms = round(t * 1000)
        secs, frac = divmod(ms, 1000)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    except (OverflowError, OSError, ValueError):
        return None
    return f"{text}.{frac:03d}Z" if frac else f"{text}Z"


def unix(t: float) -> int | float:
    t = round(t, 3)
    return int(t) if math.isfinite(t) and t.is_integer() else t


def head(kind: str, pack: Pack) -> dict[str, Any]:
    return {"kind": kind, "time": iso(pack.time), "unix": unix(pack.time),
            "session": pack.session, "seq": pack.seq, "historical": bool(pack.historical)}


def _value(shown: dict[str, Any]) -> tuple[str, Any]:
    for label in ("v", "vs", "vb"):
        if label in shown:
            return label, shown[label]
    return "v", None


def readings(pairs: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """``{name: {"v": ..., "u": ..., "min": ..., "max": ...}}`` from (name, readable record)
    pairs; ``name:min`` and ``name:max`` join ``name``."""
    out: dict[str, dict[str, Any]] = {}
    for name, shown in pairs:
        base, stat = name, None
        for s in STATS:
            if name.endswith(":" + s) and len(name) > len(s) + 1:
                base, stat = name[:-len(s) - 1], s
        entry = out.setdefault(base, {})
        label, value = _value(shown)
        entry[stat or label] = value
        if shown.get("u"):
            entry.setdefault("u", shown["u"])
        if "t" in shown and stat is None:
            entry["t"] = shown["t"]
    return out


class Renderer:
    """Splits packs into (container, con) pairs; remembers prefixes across packs."""

    def __init__(self, sensors: list[Sensor]) -> None:
        self.sensors = sensors
        self._index = {s.name: i for i, s in enumerate(sensors)}
        # sensor -> its record prefix ("" or "b."): given, or learnt from the windows
        self._prefix: dict[str, str] = {s.name: s.prefix for s in sensors
                                        if s.prefix is not None}

    def containers(self) -> list[str]:
        """Every container the AE needs, sensors first."""
        return [s.container for s in self.sensors] + [NODE, HEALTH, EVENTS, STATE, RESULTS]

    def render(self, kind: str, pack: Pack) -> list[tuple[str, dict[str, Any]]]:
        shown = to_readable(pack)["records"]
        if kind == "telemetry":
            return self._telemetry(pack, shown)
        con = head(kind, pack)
        if kind in ("state", "result"):
            con["values"] = {s["n"]: _value(s)[1] for s in shown}
        else:
            if kind in ("event", "alarm"):
                con["alarm"] = kind == "alarm"
            con["readings"] = readings((s["n"], s) for s in shown)
        return [(CONTAINER_OF_KIND.get(kind, NODE), con)] if shown else []

    def _telemetry(self, pack: Pack, shown: list[dict[str, Any]]
                   ) -> list[tuple[str, dict[str, Any]]]:
        groups: dict[int | None, list[tuple[str, dict[str, Any]]]] = {}
        cursor = 0  # sensors before it have ended their block in this pack
        for rec, readable in zip(pack.records, shown, strict=True):
            at, name, cursor = self._attribute(rec, cursor)
            groups.setdefault(at, []).append((name, readable))
        out = []
        for at, pairs in sorted(groups.items(), key=lambda g: len(self.sensors) if g[0] is None
                                else g[0]):
            con = head("telemetry", pack)
            if at is None:
                out.append((NODE, con | {"readings": readings(pairs)}))
            else:
                s = self.sensors[at]
                out.append((s.container, con | {"sensor": s.name, "type": s.type,
                                                "readings": readings(pairs)}))
        return out

    def _attribute(self, rec: Record, cursor: int) -> tuple[int | None, str, int]:
        """(sensor index or None, the record's name there, the new cursor)."""
        base, colon, stat = rec.name.partition(":")
        if colon and stat not in STATS and base in self._index:
            at = self._index[base]
            return at, stat, max(cursor, at + 1)
        prefix, _, quantity = base.rpartition(".")
        prefix = f"{prefix}." if prefix else ""
        at = self._owner(quantity, prefix, cursor)
        if at is None:
            return None, rec.name, cursor
        self._prefix.setdefault(self.sensors[at].name, prefix)
        return at, quantity + (f":{stat}" if colon else ""), cursor

    def _owner(self, quantity: str, prefix: str, cursor: int) -> int | None:
        measuring = [i for i, s in enumerate(self.sensors) if quantity in s.quantities]
        if not measuring:
            return None
        if all(self.sensors[i].prefix is not None for i in measuring):  # told: exact
            exact = [i for i in measuring if self.sensors[i].prefix == prefix]
            return exact[0] if exact else None
        ahead = [i for i in measuring if i >= cursor] or measuring
        for pool in (ahead, measuring):
            for i in pool:
                if self._prefix.get(self.sensors[i].name) == prefix:
                    return i
        for i in ahead:
            if self.sensors[i].name not in self._prefix:
                return i
        return ahead[0]
