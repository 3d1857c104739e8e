"""What Home Assistant is told: the node's entities, their discovery configuration, and
where each record of a pack goes in the JSON state they read.

Sources (Home Assistant documentation and core, as of 2025):

- discovery topic and payload, ``unique_id``, the ``device`` and ``origin`` blocks,
  ``availability``: home-assistant.io/integrations/mqtt, "MQTT Discovery";
- sensor keys (``state_topic``, ``value_template``, ``device_class``,
  ``unit_of_measurement``, ``state_class``, ``suggested_display_precision``,
  ``expire_after``, ``entity_category``, ``options`` for ``enum``):
  home-assistant.io/integrations/sensor.mqtt and /integrations/sensor ("Device class",
  "State class"); the units each device class accepts and the state classes it allows are
  core's ``DEVICE_CLASS_UNITS`` and ``DEVICE_CLASS_STATE_CLASSES``
  (homeassistant/components/sensor/const.py), which tests/test_homeassistant.py encodes;
- event entities (``event_types``, a JSON payload with ``event_type`` and attributes):
  home-assistant.io/integrations/event.mqtt;
- ``default_entity_id`` (``<domain>.<object id>``) replaced ``object_id`` in Home
  Assistant 2025.10 (``object_id`` is refused from 2026.4), so only ``default_entity_id``
  is sent: older versions ignore unknown keys ("Discovery payload") and name the entity
  after the device and the entity's name.

Units are Home Assistant's spelling of the node's SenML units (:data:`UNITS`), micro with
the Greek letter mu (U+03BC) as Home Assistant's constants write it.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from agent.wire.formats.homeassistant import Options
    from agent.wire.session import Context

MICRO = "\u03bc"


class Meaning(NamedTuple):
    """How Home Assistant shows one quantity: its label and, where Home Assistant has
    one, its device class; the state class (None: not a number to keep statistics of)."""

    label: str
    device_class: str | None = None
    state_class: str | None = "measurement"


#: The node's SenML units (drivers/quantities.py, agent/wire/quantities.py) as Home
#: Assistant writes them; None: no unit (counts, ratios 0..1, raw signals).
UNITS: dict[str, str | None] = {
    "": None,
    "/": None,
    "count": None,
    "ug/m3": f"{MICRO}g/m\u00b3",
    "/cm3": "/cm\u00b3",
    "um": f"{MICRO}m",
    "Cel": "\u00b0C",
    "%RH": "%",
    "%": "%",
    "hPa": "hPa",
    "W": "W",
    "V": "V",
    "A": "A",
    "kWh": "kWh",
    "Hz": "Hz",
    "m": "m",
    "g": "g",  # standard gravity; no device class, so Home Assistant converts nothing
    "ppm": "ppm",
    "ppb": "ppb",
    "lx": "lx",
    "s": "s",
    "B": "B",
}

#: The devices' quantities (drivers/quantities.py by record name): label, device class.
QUANTITIES: dict[str, Meaning] = {
    "pm1": Meaning("PM1.0", "pm1"),
    "pm25": Meaning("PM2.5", "pm25"),
    "pm10": Meaning("PM10", "pm10"),
    # CF=1 is Plantower's factory calibration, not the atmospheric mass Home Assistant's
    # pm classes mean: no class.
    "pm1_cf1": Meaning("PM1.0 CF=1"),
    "pm25_cf1": Meaning("PM2.5 CF=1"),
    "pm10_cf1": Meaning("PM10 CF=1"),
    "n0_3": Meaning(f"Particles >0.3 {MICRO}m"),
    "n0_5": Meaning(f"Particles >0.5 {MICRO}m"),
    "n1_0": Meaning(f"Particles >1.0 {MICRO}m"),
    "n2_5": Meaning(f"Particles >2.5 {MICRO}m"),
    "n5_0": Meaning(f"Particles >5.0 {MICRO}m"),
    "n10": Meaning(f"Particles >10 {MICRO}m"),
    "pm4": Meaning("PM4.0"),
    "nc0_5": Meaning("Number concentration PM0.5"),
    "nc1_0": Meaning("Number concentration PM1.0"),
    "nc2_5": Meaning("Number concentration PM2.5"),
    "nc4_0": Meaning("Number concentration PM4.0"),
    "nc10": Meaning("Number concentration PM10"),
    "tps": Meaning("Typical particle size"),
    "temp": Meaning("Temperature", "temperature"),
    "rh": Meaning("Humidity", "humidity"),
    "pressure": Meaning("Pressure", "atmospheric_pressure"),
    "w": Meaning("Power", "power"),
    "v": Meaning("Voltage", "voltage"),
    "a": Meaning("Current", "current"),
    # the meter's own counter: it only grows, and starts again from 0 on a reset
    "kwh": Meaning("Energy", "energy", "total_increasing"),
    "hz": Meaning("Frequency", "frequency"),
    "pf": Meaning("Power factor", "power_factor"),
    "d": Meaning("Distance", "distance"),
    "ax": Meaning("Acceleration X"),
    "ay": Meaning("Acceleration Y"),
    "az": Meaning("Acceleration Z"),
    "amag": Meaning("Peak acceleration"),
    # estimated from H2 by the SGP30, shown as the CO2 it stands for
    "eco2": Meaning("eCO2", "carbon_dioxide"),
    "tvoc": Meaning("TVOC", "volatile_organic_compounds_parts"),
    "h2_raw": Meaning("H2 raw signal"),
    "ethanol_raw": Meaning("Ethanol raw signal"),
    "lux": Meaning("Illuminance", "illuminance"),
    "uvi": Meaning("UV index"),
    "targets": Meaning("People tracked"),
    "motion": Meaning("Motion share"),
    "in": Meaning("People in"),
    "out": Meaning("People out"),
    "ppl": Meaning("People"),
    "pres": Meaning("Presence share"),
}

#: The node's own health records (agent/core/health.py) as diagnostic entities.
NODE_DIAGNOSTICS: dict[str, Meaning] = {
    "uptime": Meaning("Uptime", "duration", "total_increasing"),
    "cpu": Meaning("CPU"),
    "rss": Meaning("Memory", "data_size"),
    "disk_free": Meaning("Free disk", "data_size"),
    "spool": Meaning("Spool depth"),
    "spool_bytes": Meaning("Spool size", "data_size"),
    "evicted_tele": Meaning("Telemetry evicted", None, "total_increasing"),
    "evicted_ev": Meaning("Events evicted", None, "total_increasing"),
    "reconnects": Meaning("Reconnects", None, "total_increasing"),
    "historical": Meaning("Sent late", None, "total_increasing"),
    "cmd_ok": Meaning("Commands accepted", None, "total_increasing"),
    "cmd_refused": Meaning("Commands refused", None, "total_increasing"),
}

#: A sensor's health (agent/core/sampling.py Health), an ``enum`` sensor's options.
HEALTH_STATES = ("ok", "warming_up", "sleeping", "stale", "errors", "disconnected", "stopped")

#: Event type of whatever an event entity does not list (Home Assistant drops an
#: ``event_type`` its entity does not declare).
OTHER = "other"


class Alarm(NamedTuple):
    """One family of alarms as an event entity: the sensor kinds that make it possible
    (drivers/spec.py Kind), its event types, its label."""

    kinds: tuple[str, ...]
    event_types: tuple[str, ...]
    label: str


#: Alarms (kind "alarm") by subject: the fall alarm (agent/detectors/fall.py FallAlarm),
#: fire (agent/detectors/fire.py), the household's plugs and inactivity
#: (agent/detectors/activity.py, protection.py), whose subjects are "home" or a plug.
ALARMS: dict[str, Alarm] = {
    "fall": Alarm(("motion",), ("fall_pending", "alarm", "cancelled", OTHER), "Fall alarm"),
    "fire": Alarm(("climate", "gas", "particulate"), ("fire", "clear", OTHER), "Fire alarm"),
    "household": Alarm(("power",), ("inactivity_alarm", "activity_resumed", "unusual_use",
                                    "cutoff", "on", "off", "active", "standby", OTHER),
                       "Household"),
}
#: Everything else with kind "event": a sensor's health, a bay's or a bin's state, the
#: spool: ``event_type`` is the record's suffix (``pm:health`` -> "health").
EVENT_TYPES = ("health", "state", "spool", OTHER)

_UNSAFE = re.compile(r"[^a-z0-9_]")


def key(name: str) -> str:
    """A record name as a JSON key and object id: lower case, [a-z0-9_] only."""
    return _UNSAFE.sub("_", name.lower())


def template(obj: str) -> str:
    """The ``value_template`` that reads one key of the JSON state."""
    return "{{ value_json." + obj + " }}"


def precision(resolution: float | None) -> int | None:
    """Decimals that show a value of this resolution (0.01 -> 2); None when unknown."""
    if not resolution or resolution <= 0 or not math.isfinite(resolution):
        return None
    return max(0, -math.floor(math.log10(resolution) + 1e-9))


def meaning(quantity: str) -> Meaning:
    """A device quantity's label and classes (a new quantity shows by its name)."""
    return QUANTITIES.get(quantity, Meaning(quantity))


@dataclass(frozen=True, slots=True)
class Sensor:
    """One configured sensor as discovery sees it."""

    name: str
    type: str
    kind: str
    quantities: tuple[str, ...]
    prefix: str | None  # the record prefix ("b."); None when the context does not say


@dataclass(slots=True)
class Entity:
    """One Home Assistant entity: its platform, object id and configuration keys (besides
    the ones every entity of the node shares)."""

    component: str  # "sensor" or "event"
    object: str
    name: str
    keys: dict[str, Any] = field(default_factory=dict)


def _sensors(ctx: Context) -> list[Sensor]:
    """The configured sensors with the quantities they report: ``ctx.sensor_info`` says
    exactly (record prefix, ``reported()``: a ranger that watches a bay reports no
    distance); a context with only (name, type) pairs gets every quantity of the device
    and no known prefix. An unknown device type has no quantities."""
    from drivers import catalogue

    out = []
    infos = getattr(ctx, "sensor_info", ())
    entries = [(i.name, i.type, i.prefix, tuple(i.quantities)) for i in infos] or \
        [(str(e[0]), str(e[1]), None, None) for e in ctx.sensors]
    for name, type_, prefix, reported in entries:
        try:
            spec = catalogue.get(type_)
        except KeyError:
            out.append(Sensor(key(name), type_, "", (), prefix))
            continue
        qs = tuple(spec.quantities) if reported is None else \
            tuple(q for q in reported if q in spec.quantities)
        out.append(Sensor(key(name), spec.type, spec.kind, qs, prefix))
    return out


class Layout:
    """The node's entities and topics for one uplink, from its context and options."""

    def __init__(self, ctx: Context, options: Options) -> None:
        from agent.wire import quantities

        self.node = ctx.node
        self.options = options
        self.prefix = options.discovery_prefix
        self.status_topic = options.status_topic or f"{self.prefix}/status"
        base = ctx.topics._t("ha")  # beside the node's native topics, never on them
        self.state_topic = f"{base}/state"
        self.diagnostics_topic = f"{base}/diagnostics"
        self.availability_topic = f"{base}/availability"
        self.event_base = f"{base}/event"
        self.unique_prefix = f"citynode_{self.node}_"
        self.sensors = _sensors(ctx)
        types = list(dict.fromkeys(s.type for s in self.sensors))
        self.device: dict[str, Any] = {
            "identifiers": [self.node],
            "name": options.node_name or self.node,
            "manufacturer": "citynode",
            "model": ", ".join(types) if types else "citynode node",
            "sw_version": ctx.version,
        }
        if options.suggested_area:
            self.device["suggested_area"] = options.suggested_area
        self.origin = {"name": "citynode", "sw_version": ctx.version}
        self.entities: list[Entity] = []
        #: JSON keys of the state and diagnostics messages that entities read.
        self.state_keys: list[str] = []
        self.diagnostic_keys: list[str] = []
        #: Alarm subject families announced, by subject ("fall" -> "alarm_fall").
        self.alarm_objects: dict[str, str] = {}
        self.power_sensors = {s.name for s in self.sensors if s.kind == "power"}
        self._build(quantities)

    # -- the entities ------------------------------------------------------------------
    def _add(self, entity: Entity) -> None:
        if all(e.object != entity.object for e in self.entities):
            self.entities.append(entity)

    def _build(self, quantities: Any) -> None:
        for s in self.sensors:
            for q in s.quantities:
                self._add(self._measured(f"{s.name}_{q}", f"{s.name} {meaning(q).label}",
                                         meaning(q), quantities.CATALOGUE.get(q)))
        kinds = {s.kind for s in self.sensors}
        for subject, alarm in ALARMS.items():
            if kinds & set(alarm.kinds):
                obj = f"alarm_{subject}"
                self.alarm_objects[subject] = obj
                self._add(Entity("event", obj, alarm.label, {
                    "state_topic": f"{self.event_base}/{obj}",
                    "event_types": list(alarm.event_types)}))
        self._add(Entity("event", "events", "Events", {
            "state_topic": f"{self.event_base}/events", "event_types": list(EVENT_TYPES)}))
        self._add(Entity("sensor", "node_last_report", "Last report", {
            "state_topic": self.state_topic, "value_template": "{{ value_json.time }}",
            "device_class": "timestamp", "entity_category": "diagnostic"}))
        for name, m in NODE_DIAGNOSTICS.items():
            self._add(self._measured(f"node_{name}", m.label, m, quantities.CATALOGUE.get(name),
                                     diagnostic=True))
        for s in self.sensors:
            obj = f"{s.name}_health"
            self._add(Entity("sensor", obj, f"{s.name} health", {
                "state_topic": self.diagnostics_topic,
                "value_template": template(obj),
                "device_class": "enum", "options": list(HEALTH_STATES),
                "entity_category": "diagnostic"}))
        for e in self.entities:
            topic = e.keys.get("state_topic")
            if e.component == "sensor" and e.object != "node_last_report":
                (self.diagnostic_keys if topic == self.diagnostics_topic
                 else self.state_keys).append(e.object)

    def _measured(self, obj: str, name: str, m: Meaning, q: Any, *,
                  diagnostic: bool = False) -> Entity:
        keys: dict[str, Any] = {
            "state_topic": self.diagnostics_topic if diagnostic else self.state_topic,
            "value_template": template(obj),
        }
        if m.device_class:
            keys["device_class"] = m.device_class
        unit = UNITS.get(q.unit) if q is not None else None
        if unit:
            keys["unit_of_measurement"] = unit
        if m.state_class:
            keys["state_class"] = m.state_class
        digits = precision(q.resolution if q is not None else None)
        if digits is not None:
            keys["suggested_display_precision"] = digits
        if diagnostic:
            keys["entity_category"] = "diagnostic"
        elif self.options.expire_after_s:
            keys["expire_after"] = self.options.expire_after_s
        return Entity("sensor", obj, name, keys)

    # -- discovery messages ------------------------------------------------------------
    def config_topic(self, e: Entity) -> str:
        """``<discovery_prefix>/<component>/<node_id>/<object_id>/config``: the node id
        is the topic's node level, which Home Assistant leaves to the publisher."""
        return f"{self.prefix}/{e.component}/{self.node}/{e.object}/config"

    def config(self, e: Entity) -> dict[str, Any]:
        """The discovery payload of one entity (Home Assistant's full key names)."""
        return {
            "name": e.name,
            "unique_id": self.unique_prefix + e.object,
            "default_entity_id": f"{e.component}.{key(self.node)}_{e.object}",
            **e.keys,
            "availability": [{"topic": self.availability_topic}],
            "qos": 1,
            "device": self.device,
            "origin": self.origin,
        }

    def configs(self) -> dict[str, bytes]:
        """Every discovery topic and its payload, in announcement order."""
        return {self.config_topic(e): dumps(self.config(e)) for e in self.entities}


def dumps(data: Any) -> bytes:
    """Compact UTF-8 JSON (units keep their own characters: °C, μg/m³)."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode()
