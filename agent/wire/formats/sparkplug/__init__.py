"""Sparkplug B (Eclipse Sparkplug 3.0): the node as an edge node, each sensor a device.

A platform format (``[[uplink]] format = "sparkplug"``) for SCADA and industrial
platforms (Ignition and other Sparkplug host applications). Topics are
``spBv1.0/<group_id>/<verb>/<edge_node>[/<sensor>]``; payloads are the Sparkplug B
protobuf ``Payload`` of Eclipse Tahu's ``sparkplug_b.proto`` (:mod:`.protobuf`, written
by hand: no protobuf library in the daemon). What the node says when is in
:mod:`.session`; how records become metrics (names, aliases, datatypes, units) in
:mod:`.metrics`; docs/platforms.md shows real messages.

This module stays cheap to import (the configuration reads every format's ``Options``):
the session and its tables load when an uplink uses the format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from agent.wire.formats import PlatformFormat

if TYPE_CHECKING:
    from agent.wire.formats import Channel
    from agent.wire.session import Context, Session

#: Sparkplug 3.0 section 4.1: group, edge node and device ids are UTF-8 without "+", "/"
#: or "#" (tck-id-topic-structure-namespace-valid-group-id and the others).
SparkplugId = Annotated[str, msgspec.Meta(pattern=r"^[^+/#\x00-\x1f]{1,64}\Z")]
OptionalId = Annotated[str, msgspec.Meta(pattern=r"^[^+/#\x00-\x1f]{0,64}\Z")]


class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``[uplink.sparkplug]`` table."""

    #: The Sparkplug group id: the second topic level, shared by the nodes of one site.
    group_id: SparkplugId = "citynode"
    #: The edge node id; "" is the node's id ([node] id).
    edge_node: OptionalId = ""
    #: The primary host application's id: births wait until its STATE
    #: (``spBv1.0/STATE/<id>``) says online, and messages stay spooled while it is
    #: offline. "" does without (births at every connect).
    primary_host: OptionalId = ""
    #: MQTT QoS of births and data: 1 (default) keeps citynode's delivery guarantee;
    #: 0 is what Sparkplug 3.0 section 4.2.1 asks (lost if the connection drops in flight).
    qos: Literal[0, 1] = 1


CONTENT_TYPE = "application/x-protobuf"


class Sparkplug(PlatformFormat):
    """The format: it encodes no packs of its own; its session renders spooled ones."""

    name = "sparkplug"
    content_type = CONTENT_TYPE

    def session(self, ctx: Context) -> Session:
        from agent.wire.formats.sparkplug.session import SparkplugSession

        return SparkplugSession(ctx)

    def channels(self) -> list[Channel]:
        return channels()


def _payload_schema(summary: str, *, seq: bool = True, names: bool = True) -> dict[str, Any]:
    """A Sparkplug B payload in JSON Schema terms: binary protobuf bytes; the decoded
    message's fields (Sparkplug 3.0 section 6.4.2's JSON form) under ``x-decoded``."""
    metric: dict[str, Any] = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "protobuf field 1" + (
                "; in births only" if names else "")},
            "alias": {"type": "integer", "minimum": 0, "description": "field 2 (uint64)"},
            "timestamp": {"type": "integer", "minimum": 0,
                          "description": "field 3: ms since the epoch, UTC"},
            "datatype": {"type": "integer", "minimum": 0, "maximum": 34,
                         "description": "field 4: Int64 4, Float 9, Double 10, Boolean 11, "
                                        "String 12, DateTime 13; in births only"},
            "is_historical": {"type": "boolean", "description": "field 5"},
            "is_null": {"type": "boolean", "description": "field 7"},
            "properties": {"type": "object", "description": "field 9: PropertySet; "
                           "engUnit (String) is the unit"},
            "value": {"description": "one of fields 10 to 15 by datatype"},
        },
    }
    decoded: dict[str, Any] = {
        "type": "object",
        "required": ["timestamp", "metrics"] + (["seq"] if seq else []),
        "properties": {
            "timestamp": {"type": "integer", "minimum": 0, "description": "field 1 (uint64)"},
            "metrics": {"type": "array", "items": metric, "description": "field 2"},
        },
    }
    if seq:
        decoded["properties"]["seq"] = {"type": "integer", "minimum": 0, "maximum": 255,
                                        "description": "field 3"}
    return {"type": "string", "format": "binary", "contentMediaType": CONTENT_TYPE,
            "description": f"{summary} Eclipse Tahu sparkplug_b.proto, message "
                           "org.eclipse.tahu.protobuf.Payload.",
            "x-decoded": decoded}


def _examples() -> dict[str, tuple[tuple[str, bytes], ...]]:
    """Real encodings (fixed times, the aliases the catalogue's first fine-dust sensor,
    named ``pm``, gets): a DDATA of one report window, a rebirth request, an NDEATH."""
    from agent.wire.formats.sparkplug import metrics as mt
    from agent.wire.formats.sparkplug import protobuf as pb
    from drivers import catalogue

    dust = catalogue.first_of_kind("particulate")
    t = 1763900060000
    table = mt.Table([("pm", dust)], {"pm": ("pm1", "pm25", "pm10")}, commands=True)
    pm = table.devices["pm"]
    values = [("pm25", 12), ("min/pm25", 10), ("max/pm25", 15), ("n", 29)]
    ddata = pb.Payload(t + 41, [pb.Metric(alias=pm[n].alias, timestamp=t, datatype=pb.INT64,
                                          value=v) for n, v in values], seq=3)
    shown = ", ".join(f"{n} (alias {pm[n].alias}) = {v}" for n, v in values)
    rebirth = pb.Payload(t, [pb.Metric(mt.REBIRTH, timestamp=t, datatype=pb.BOOLEAN,
                                       value=True)])
    death = pb.Payload(t, [pb.Metric(mt.BDSEQ, timestamp=t, datatype=pb.INT64, value=7)])
    return {
        "ddata": ((f"DDATA of device pm, seq 3, metrics at {t} ms: {shown}",
                   pb.encode(ddata, datatypes=False)),),
        "ncmd": (("Node Control/Rebirth = true", pb.encode(rebirth)),),
        "ndeath": (("bdSeq = 7", pb.encode(death)),),
    }


def channels() -> list[Channel]:
    """Every topic of the format, for ``citynode asyncapi``."""
    from agent.wire.formats import Channel

    ex = _examples()

    params = {"group_id": "[uplink.sparkplug] group_id (default citynode)",
              "edge_node": "[uplink.sparkplug] edge_node (default: the node id)"}
    dev = {**params, "device": "a configured sensor's name ([[sensor]] name)"}
    base = "spBv1.0/{group_id}/%s/{edge_node}"
    state = {"type": "object", "required": ["online", "timestamp"],
             "properties": {"online": {"type": "boolean"},
                            "timestamp": {"type": "integer", "minimum": 0,
                                          "description": "ms since the epoch, UTC"}}}
    return [
        Channel("nbirth", base % "NBIRTH", "send",
                "Edge node birth: seq 0, bdSeq, Node Control/Rebirth and every node metric "
                "with name, alias, datatype and engUnit; on each connect and rebirth.",
                CONTENT_TYPE, _payload_schema("NBIRTH."), parameters=params),
        Channel("ndeath", base % "NDEATH", "send",
                "Edge node death: the MQTT will (QoS 1, not retained) and the graceful "
                "goodbye; only the bdSeq metric, no seq.", CONTENT_TYPE,
                _payload_schema("NDEATH.", seq=False), qos=1, parameters=params,
                examples=ex["ndeath"]),
        Channel("ndata", base % "NDATA", "send",
                "Node metrics (health, state, alarms of no sensor, command results) by "
                "alias.", CONTENT_TYPE, _payload_schema("NDATA.", names=False),
                parameters=params),
        Channel("ncmd", base % "NCMD", "receive",
                "Node Control/Rebirth (Boolean true) and Node Control/Command (String: a "
                "command of docs/commands.md).", CONTENT_TYPE,
                _payload_schema("NCMD.", seq=False), parameters=params, examples=ex["ncmd"]),
        Channel("dbirth", base % "DBIRTH" + "/{device}", "send",
                "Sensor birth: every metric the sensor can report, with name, alias, "
                "datatype and engUnit.", CONTENT_TYPE, _payload_schema("DBIRTH."),
                parameters=dev),
        Channel("ddata", base % "DDATA" + "/{device}", "send",
                "A sensor's report window, events and health by alias.", CONTENT_TYPE,
                _payload_schema("DDATA.", names=False), parameters=dev, examples=ex["ddata"]),
        Channel("ddeath", base % "DDEATH" + "/{device}", "send",
                "The sensor is disconnected: no metrics, a seq.", CONTENT_TYPE,
                _payload_schema("DDEATH."), parameters=dev),
        Channel("state", "spBv1.0/STATE/{host_id}", "receive",
                "The primary host application's STATE (retained JSON), when "
                "[uplink.sparkplug] primary_host is set.", "application/json", state,
                parameters={"host_id": "[uplink.sparkplug] primary_host"},
                examples=({"online": True, "timestamp": 1763900000000},)),
    ]


FORMAT = Sparkplug()
