"""Every topic the Home Assistant session publishes or subscribes to, with JSON Schemas of
its payloads (for ``citynode asyncapi``). The shapes are those of :mod:`.entities` and
:mod:`.session`; the discovery payload's keys are Home Assistant's (home-assistant.io/
integrations/mqtt "Discovery payload", /integrations/sensor.mqtt, /integrations/event.mqtt).
"""

from __future__ import annotations

from typing import Any

from agent.wire.formats import Channel
from agent.wire.formats.homeassistant.entities import EVENT_TYPES, HEALTH_STATES

JSON = "application/json"
TEXT = "text/plain"
HA = "{discovery_prefix}"
BASE = "{prefix}/{node}/ha"
_PARAMS = {"discovery_prefix": "Home Assistant's discovery prefix ([uplink.homeassistant] "
                               "discovery_prefix, default homeassistant)"}
_NUMBER_OR_NULL = {"type": ["number", "null"]}
_TIME = {"type": ["string", "null"], "format": "date-time",
         "description": "the pack's time, ISO 8601 in UTC"}
_HEAD = {"time": _TIME,
         "session": {"type": "integer", "minimum": 0, "description": "boot session (b)"},
         "seq": {"type": ["integer", "null"], "minimum": 0, "description": "sequence (q)"}}

_DEVICE = {
    "type": "object",
    "required": ["identifiers", "name", "manufacturer", "model", "sw_version"],
    "properties": {
        "identifiers": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                        "description": "[node id]"},
        "name": {"type": "string"}, "manufacturer": {"const": "citynode"},
        "model": {"type": "string", "description": "the sensors' device types"},
        "sw_version": {"type": "string"}, "suggested_area": {"type": "string"},
    },
}
CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "A Home Assistant discovery configuration (an empty payload removes "
                   "the entity).",
    "required": ["name", "unique_id", "state_topic", "availability", "device", "origin"],
    "properties": {
        "name": {"type": "string"},
        "unique_id": {"type": "string", "pattern": "^citynode_"},
        "default_entity_id": {"type": "string"},
        "state_topic": {"type": "string"},
        "value_template": {"type": "string"},
        "device_class": {"type": "string"},
        "unit_of_measurement": {"type": "string"},
        "state_class": {"enum": ["measurement", "total", "total_increasing"]},
        "suggested_display_precision": {"type": "integer", "minimum": 0},
        "expire_after": {"type": "integer", "minimum": 1},
        "entity_category": {"const": "diagnostic"},
        "options": {"type": "array", "items": {"type": "string"}},
        "event_types": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "availability": {"type": "array", "items": {
            "type": "object", "required": ["topic"], "properties": {"topic": {"type": "string"}}}},
        "qos": {"const": 1},
        "device": _DEVICE,
        "origin": {"type": "object", "required": ["name"],
                   "properties": {"name": {"type": "string"}, "sw_version": {"type": "string"}}},
    },
}
STATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One report: every announced quantity by object id (<sensor>_<quantity>, "
                   "null when the report has none), extremes as <object>_min/_max, other "
                   "records by their name made safe (pm:n -> pm_n).",
    "required": ["time", "session"],
    "properties": _HEAD,
    "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
}
DIAGNOSTICS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "The node's health: node_<record> (uptime, cpu, rss, spool...) and "
                   "<sensor>_health.",
    "required": ["time"],
    "properties": {**_HEAD, "node_uptime": _NUMBER_OR_NULL, "node_spool": _NUMBER_OR_NULL},
    "patternProperties": {"_health$": {"enum": [*HEALTH_STATES, None]}},
    "additionalProperties": {"type": ["number", "string", "boolean", "null"]},
}
EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "An event entity's event: its type and the records of the alarm or "
                   "event as attributes.",
    "required": ["event_type", "subject", "time", "historical"],
    "properties": {**_HEAD, "event_type": {"type": "string"}, "subject": {"type": "string"},
                   "historical": {"type": "boolean"},
                   "event": {"type": "string",
                             "description": "the event's own name when event_type is other"},
                   "value": {"type": ["number", "string", "boolean"]}},
    "additionalProperties": {"type": ["number", "string", "boolean"]},
}
AVAILABILITY_SCHEMA: dict[str, Any] = {"type": "string", "enum": ["online", "offline"]}


def channels() -> list[Channel]:
    from drivers import catalogue

    dust = catalogue.first_of_kind("particulate")
    return [
        Channel("config", f"{HA}/{{component}}/{{node}}/{{object}}/config", "send",
                "Discovery configuration of one entity (retained; empty: removed)", JSON,
                CONFIG_SCHEMA, retain=True,
                parameters={**_PARAMS, "component": "sensor or event",
                            "object": "the entity's object id (<sensor>_<quantity>, "
                                      "node_<record>, <sensor>_health, alarm_<family>, events)"},
                examples=({"name": "pm PM2.5", "unique_id": "citynode_node-1_pm_pm25",
                           "default_entity_id": "sensor.node_1_pm_pm25",
                           "state_topic": "citynode/node-1/ha/state",
                           "value_template": "{{ value_json.pm_pm25 }}",
                           "device_class": "pm25", "unit_of_measurement": "\u03bcg/m\u00b3",
                           "state_class": "measurement", "suggested_display_precision": 0,
                           "availability": [{"topic": "citynode/node-1/ha/availability"}],
                           "qos": 1,
                           "device": {"identifiers": ["node-1"], "name": "node-1",
                                      "manufacturer": "citynode", "model": dust,
                                      "sw_version": "0.1.0"},
                           "origin": {"name": "citynode", "sw_version": "0.1.0"}},)),
        Channel("config_sweep", f"{HA}/{{component}}/{{node}}/{{object}}/config", "receive",
                "This node's retained discovery configurations (subscribed with + for "
                "component and object): one that is no entity now is removed", JSON,
                CONFIG_SCHEMA, parameters={**_PARAMS, "component": "any platform",
                                           "object": "any object id"}),
        Channel("state", f"{BASE}/state", "send",
                "Every report as one JSON state the sensor entities read (retained)", JSON,
                STATE_SCHEMA, retain=True,
                examples=({"time": "2025-11-23T12:14:20+00:00", "session": 3, "seq": 1441,
                           "pm_pm1": 8, "pm_pm25": 12, "pm_pm10": 20, "pm_pm25_min": 10,
                           "pm_pm25_max": 15, "pm_n": 29},)),
        Channel("diagnostics", f"{BASE}/diagnostics", "send",
                "The node's health for the diagnostic entities (retained)", JSON,
                DIAGNOSTICS_SCHEMA, retain=True),
        Channel("event", f"{BASE}/event/{{object}}", "send",
                "Alarms (fall, fire, household) and events (a sensor's health, a bay's "
                "state) for the event entities", JSON, EVENT_SCHEMA,
                parameters={"object": "alarm_fall, alarm_fire, alarm_household or events "
                                      f"(event types {', '.join(EVENT_TYPES)})"},
                examples=({"event_type": "alarm", "subject": "fall",
                           "time": "2025-11-23T12:15:01.250+00:00", "historical": False,
                           "session": 3, "seq": 1450, "score": 0.93},)),
        Channel("availability", f"{BASE}/availability", "send",
                "online in every opening; offline as the will and on the node's goodbye "
                "(retained)", TEXT, AVAILABILITY_SCHEMA, retain=True),
        Channel("status", f"{HA}/status", "receive",
                "Home Assistant's birth and will: online makes the node announce again",
                TEXT, AVAILABILITY_SCHEMA, parameters=dict(_PARAMS)),
    ]
