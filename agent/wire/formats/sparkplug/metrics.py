"""Which Sparkplug metric each citynode record is: device, name, alias, datatype, unit.

Naming (docs/platforms.md, "Sparkplug B"): every configured sensor is a Sparkplug device
whose id is the sensor's name; what belongs to no sensor is a metric of the edge node.

* ``[prefix.]quantity`` (a window's central value) is metric ``quantity`` of the sensor
  that measures it: the device id tells sensors apart, so the prefix is dropped;
  ``[prefix.]quantity:min`` and ``:max`` are ``min/quantity`` and ``max/quantity``
  (folders, Sparkplug 3.0 section 6.4.6: "/" separates folders in a metric name);
* ``sensor:x`` is metric ``x`` of device ``sensor`` (``pm:n`` is ``n``, ``pm:q`` is
  ``q``, ``pm:health`` is ``health``, ``pm:aq`` is ``aq``);
* any other ``subject:x`` (an alarm's ``fall:event``, ``bays:occ``) is the node's
  ``subject/x``; a plain name (``uptime``, ``status``) is the node's metric of that name.

Every birth declares: for the node ``bdSeq``, ``Node Control/Rebirth``, with commands
on ``Node Control/Command`` and ``Node Control/Command Result``, the birth's facts
(``status``, ``version``, ``boot``, ``interval``, ``sensors``) and the health report's
numbers; for each sensor ``Properties/Hardware Model`` (its device type), ``n``, ``q``,
``health``, ``aq`` (PM sensors) and each reported quantity with ``min/`` and ``max/``.
A name first seen later (an alarm's fields) is learned: see the aliases below.

Which sensor a quantity record belongs to: the one that reports it with the prefix it
carries (the configuration, :class:`agent.wire.session.SensorInfo`). Given only sensor
names and device types, the one whose device type measures it (drivers/catalogue.py);
when several do, the one whose prefix it carries, found in the pack itself: a sensor's
window records come together and end with its ``sensor:n`` or ``sensor:q`` record
(agent/core/aggregate.py), and sensors report in configuration order. A prefix, once
placed, stays with its sensor.

Datatypes: a quantity with a resolution of 1 or coarser is Int64 (counts, bytes, ug/m3),
a finer one Float (float32 keeps 7 digits, more than the 0.05 % the SenML encoding
keeps); a number the catalogue does not know is Double; text is String, a flag
Boolean; the daemon's start (``boot``) is a DateTime. Units go in each birth's metric
as the property ``engUnit`` (String), the property Eclipse Tahu's examples and Ignition
use for engineering units.

Aliases (Sparkplug 3.0 section 6.4.6: unique across the edge node, in every birth) are
derived, not counted, so they stay the same across restarts and rebirths: the node's
metrics have 1 to 255, sensor number k (in configuration order, from 1) has
``k * 256 + m``. ``m`` 1 to 127 is a fixed slot (the catalogue's quantities of its
device type, in the order of its spec); names first seen at run time take the next free
``m`` from 128 and are kept with the bdSeq in the state directory, so they too keep
their alias and are in every later birth. ``Node Control/Rebirth`` has no alias
(Sparkplug 3.0 section 5.17, "Commands").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent.wire import quantities
from agent.wire.formats.sparkplug.protobuf import (
    BOOLEAN,
    DATETIME,
    DOUBLE,
    FLOAT,
    INT64,
    STRING,
    TEXTS,
    Value,
)
from agent.wire.model import Record

NODE = ""  # the device id of the edge node's own metrics
REBIRTH = "Node Control/Rebirth"
COMMAND = "Node Control/Command"
RESULT = "Node Control/Command Result"
BDSEQ = "bdSeq"
MODEL = "Properties/Hardware Model"
#: Aliases per sensor: fixed slots below LEARNED, names learned at run time from it.
BLOCK, LEARNED = 256, 128
#: The health report's numbers (agent/core/health.py), in their fixed alias order.
HEALTH = ("uptime", "cpu", "rss", "disk_free", "spool", "spool_bytes", "evicted_tele",
          "evicted_ev", "reconnects", "historical", "cmd_ok", "cmd_refused")
#: The birth's facts (agent/core/daemon.py, birth()).
STATE = ("status", "version", "boot", "interval", "sensors")
STATS = ("min", "max")

Sort = Literal["value", "text", "flag"]


def sort_of(record: Record) -> Sort:
    return "value" if record.value is not None else "text" if record.text is not None \
        else "flag"


def sort_of_type(datatype: int) -> Sort:
    return "flag" if datatype == BOOLEAN else "text" if datatype in TEXTS else "value"


def numeric_type(key: str) -> int:
    """The datatype of a number by the catalogue's resolution for record name ``key``."""
    q = quantities.lookup(key)
    if q is None or not q.resolution:
        return DOUBLE
    return INT64 if q.resolution >= 1 else FLOAT


def datatype_for(key: str, sort: Sort) -> int:
    return numeric_type(key) if sort == "value" else STRING if sort == "text" else BOOLEAN


@dataclass(slots=True)
class Def:
    """A metric as the births declare it, with its latest value (None: null)."""

    name: str
    alias: int
    datatype: int
    unit: str = ""
    value: Value | None = None
    t: int | None = None  # the value's time, ms since the epoch
    key: str = ""  # the record name its unit and datatype come from


def convert(d: Def, record: Record) -> Value | None:
    """A record's value in its metric's datatype; None (null) when it does not fit."""
    if d.datatype == BOOLEAN:
        return record.flag
    if d.datatype in TEXTS:
        return record.text
    v = record.value
    if v is None:
        return None
    if d.datatype == DATETIME:
        ms = round(v * 1000)
        return ms if 0 <= ms < 1 << 64 else None
    if d.datatype == INT64:
        n = round(v)
        return n if -(1 << 63) <= n < 1 << 63 else None
    if d.datatype == FLOAT:
        return v if abs(v) <= 3.4028234663852886e38 else None
    return v


def _node_slots(commands: bool) -> list[tuple[int, str, int, str]]:
    """The node's fixed metrics: (slot, name, datatype, unit). Slots never move, so a
    metric keeps its alias when another one comes or goes (commands on or off)."""
    slots: list[tuple[int, str, int, str]] = [(1, BDSEQ, INT64, "")]
    if commands:
        slots += [(2, COMMAND, STRING, ""), (3, RESULT, STRING, "")]
    slots += [(4, "status", STRING, ""), (5, "version", STRING, ""), (6, "boot", DATETIME, ""),
              (7, "interval", DOUBLE, "s"), (8, "sensors", STRING, "")]
    slots += [(16 + i, n, numeric_type(n), quantities.unit(n)) for i, n in enumerate(HEALTH)]
    return slots


def _device_slots(measured: Sequence[str], reported: frozenset[str] | None
                  ) -> list[tuple[int, str, int, str, str]]:
    """A sensor's fixed metrics: (slot, name, datatype, unit, key). A quantity's slots
    follow its place in the device type's spec, whether or not it is reported (then it
    is left out), so choosing other quantities moves no alias."""
    slots = [(1, MODEL, STRING, "", ""), (2, "n", INT64, "", "_:n"), (3, "q", INT64, "", "_:q"),
             (4, "health", STRING, "", "")]
    if {"pm25", "pm10"} & set(reported if reported is not None else measured):
        slots.append((5, "aq", INT64, "", "_:aq"))  # the air-quality bands ([report] kr_band)
    for i, q in enumerate(measured):
        base = 8 + 3 * i
        if base + 2 >= LEARNED:
            break
        if reported is not None and q not in reported:
            continue
        slots.append((base, q, numeric_type(q), quantities.unit(q), q))
        for j, stat in enumerate(STATS, 1):
            key = f"{q}:{stat}"
            slots.append((base + j, f"{stat}/{q}", numeric_type(key), quantities.unit(key), key))
    return slots


class Table:
    """Every device's metrics, in birth order; learns names the births did not have."""

    def __init__(self, sensors: Sequence[tuple[str, ...]], measured: dict[str, tuple[str, ...]],
                 *, commands: bool, learned: dict[str, Any] | None = None,
                 reported: dict[str, frozenset[str]] | None = None) -> None:
        self.devices: dict[str, dict[str, Def]] = {NODE: {}}
        self.block: dict[str, int] = {NODE: 0}
        self.model: dict[str, str] = {}
        for slot, name, dtype, unit in _node_slots(commands):
            self.devices[NODE][name] = Def(name, slot, dtype, unit, key=name)
        for k, (sensor, dtype_name, *_) in enumerate(sensors, 1):
            self.block[sensor] = k
            self.model[sensor] = dtype_name
            defs = self.devices[sensor] = {}
            chosen = (reported or {}).get(sensor)
            for slot, name, dtype, unit, key in _device_slots(measured.get(sensor, ()), chosen):
                defs[name] = Def(name, k * BLOCK + slot, dtype, unit, key=key)
            defs[MODEL].value = dtype_name
        self._learned: dict[str, dict[str, list[Any]]] = {}
        for device, names in (learned or {}).items():
            if device in self.devices and isinstance(names, dict):
                for name, entry in names.items():
                    self._restore(device, name, entry)

    def _restore(self, device: str, name: Any, entry: Any) -> None:
        """A learned metric from the state file; anything malformed is left out."""
        if not (isinstance(name, str) and isinstance(entry, list) and len(entry) == 3):
            return
        m, dtype, key = entry
        if not (isinstance(m, int) and LEARNED <= m < BLOCK and dtype in
                (INT64, FLOAT, DOUBLE, STRING, BOOLEAN, DATETIME) and isinstance(key, str)):
            return
        defs = self.devices[device]
        alias = self.block[device] * BLOCK + m
        if name in defs or any(d.alias == alias for d in defs.values()):
            return
        unit = quantities.unit(key) if dtype not in (STRING, BOOLEAN) else ""
        defs[name] = Def(name, alias, dtype, unit, key=key)
        self._learned.setdefault(device, {})[name] = [m, dtype, key]

    def learned(self) -> dict[str, dict[str, list[Any]]]:
        """What to keep in the state file: device -> name -> [slot, datatype, key]."""
        return self._learned

    def get(self, device: str, name: str, record: Record, key: str) -> tuple[Def | None, bool]:
        """The metric of a record: (its Def, whether it was new), (None, False) when its
        device has no room for another. A record whose sort (number, text, flag) differs
        from its name's metric gets a metric of its own, ``name (text)`` and so on."""
        defs = self.devices[device]
        sort = sort_of(record)
        d = defs.get(name)
        if d is not None and sort_of_type(d.datatype) != sort:
            name = f"{name} ({sort})"
            d = defs.get(name)
        if d is not None:
            return d, False
        used = {x.alias % BLOCK if device else x.alias for x in defs.values()}
        free = next((m for m in range(LEARNED, BLOCK) if m not in used), None)
        if free is None:
            return None, False
        dtype = datatype_for(key, sort)
        unit = quantities.unit(key) if sort == "value" else ""
        d = defs[name] = Def(name, self.block[device] * BLOCK + free, dtype, unit, key=key)
        self._learned.setdefault(device, {})[name] = [free, dtype, key]
        return d, True


class Placer:
    """Which device and metric name a record is (the module docstring's rules)."""

    def __init__(self, sensors: Sequence[tuple[Any, ...]],
                 measured: dict[str, Sequence[str]]) -> None:
        self.sensors = [s[0] for s in sensors]
        self.measured = {s: frozenset(measured.get(s, ())) for s in self.sensors}
        #: sensor -> its prefix ("k.", or ""), given or learned from packs.
        self.prefix_of: dict[str, str] = {}
        #: (prefix, quantity) -> sensor, as placed.
        self.owner: dict[tuple[str, str], str] = {}
        for s in sensors:
            if len(s) > 2 and isinstance(s[2], str):  # (name, type, prefix), None: unknown
                self.prefix_of[s[0]] = s[2]

    def _quantity(self, base: str) -> tuple[str, str] | None:
        """(prefix, quantity) when ``base`` is a quantity some sensor here measures."""
        prefix, dot, q = base.rpartition(".")
        if any(q in m for m in self.measured.values()):
            return prefix + dot, q
        return None

    def place(self, names: Sequence[str]) -> list[tuple[str, str, str]]:
        """(device, metric name, key) for each record name; the key is the record name
        its unit and datatype come from (:func:`agent.wire.quantities.lookup`)."""
        parsed: list[tuple[str, ...]] = []
        for name in names:
            base, sep, stat = name.partition(":")
            qty = self._quantity(base)
            if qty and (not sep or stat in STATS):
                parsed.append(("q", qty[0], qty[1], stat))
            elif sep and base in self.measured:
                parsed.append(("s", base, stat))
            elif sep:
                parsed.append(("n", f"{base}/{stat}", f"_:{stat}"))
            else:
                parsed.append(("n", name, name))
        out: list[tuple[str, str, str]] = []
        order: dict[str, list[str]] = {}  # quantity -> prefixes seen in this pack, in order
        for i, p in enumerate(parsed):
            if p[0] == "s":
                out.append((p[1], p[2], f"_:{p[2]}"))
            elif p[0] == "n":
                out.append((NODE, p[1], p[2]))
            else:
                _, prefix, q, stat = p
                seen = order.setdefault(q, [])
                if prefix not in seen:
                    seen.append(prefix)
                sensor = self._owner(prefix, q, parsed, i, seen)
                name = f"{stat}/{q}" if stat else q
                key = f"{q}:{stat}" if stat else q
                if sensor is None:
                    out.append((NODE, f"{prefix}{q}" + (f"/{stat}" if stat else ""), key))
                else:
                    out.append((sensor, name, key))
        return out

    def _owner(self, prefix: str, q: str, parsed: list[tuple[str, ...]], at: int,
               seen: list[str]) -> str | None:
        if (prefix, q) in self.owner:
            return self.owner[prefix, q]
        cands = [s for s in self.sensors
                 if q in self.measured[s] and self.prefix_of.get(s, prefix) == prefix]
        if len(cands) > 1:  # the next "sensor:x" record of one of them closes its group
            ahead = next((p[1] for p in parsed[at + 1:] if p[0] == "s" and p[1] in cands), None)
            if ahead is not None:
                cands = [ahead]
            else:  # sensors report in configuration order
                unplaced = [p for p in seen if (p, q) not in self.owner]
                free = [s for s in cands if s not in self.prefix_of]
                nth = unplaced.index(prefix)
                cands = [free[nth]] if nth < len(free) else []
        if len(cands) != 1:
            return None
        self.owner[prefix, q] = cands[0]
        self.prefix_of.setdefault(cands[0], prefix)
        return cands[0]
