"""oneM2M request and response primitives in JSON over MQTT, with no I/O.

Sources (oneM2M TS-0004 V3 "Service Layer Core Protocol", TS-0010 V3 "MQTT Protocol
Binding"; Mobius 2.5's own behaviour where it differs, as ../shared/reference notes):

* primitives: TS-0004 clause 7.2.1 (request: ``op``, ``to``, ``fr``, ``rqi``, ``ty``,
  ``pc``, ``rvi``; response: ``rsc``, ``rqi``, ``pc``) with the short names of clause 8.2
  and the JSON serialisation of clause 8.4; TS-0010 clauses 6.5.1 and 6.5.2. A primitive
  may arrive bare or wrapped in ``{"m2m:rqp": ...}`` / ``{"m2m:rsp": ...}`` (Mobius sends
  notifications bare and accepts both);
* operations, resource types and status codes: TS-0004 clauses 6.3.4.2.5
  (m2m:operation), 6.3.4.2.1 (m2m:resourceType), 6.6.3 (response status codes);
* topics: TS-0010 clause 6.4.2 (a request to the CSE on
  ``/oneM2M/req/<originator>/<receiver>/json``), 6.4.3 (its response on
  ``/oneM2M/resp/<originator>/<receiver>/json``; the CSE's requests to the AE, here
  notifications, on ``/oneM2M/req/<CSE>/<AE-ID>/json`` and the AE's response on
  ``/oneM2M/resp/<CSE>/<AE-ID>/json``), 6.5.4 (the ``/json`` suffix). An ID in a topic
  loses its leading "/" and any other "/" becomes ":";
* notifications: TS-0004 clause 7.5.1 (m2m:sgn with ``nev.rep`` the created
  contentInstance, ``vrq`` a verification request, ``sud`` the subscription's deletion).

Parsing never raises: anything that is not the primitive expected is None.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agent.wire.model import MAX_PAYLOAD

# TS-0004 clause 6.3.4.2.5: m2m:operation.
CREATE, RETRIEVE, UPDATE, DELETE, NOTIFY = 1, 2, 3, 4, 5
# TS-0004 clause 6.3.4.2.1: m2m:resourceType.
AE, CONTAINER, CONTENT_INSTANCE, SUBSCRIPTION = 2, 3, 4, 23
# TS-0004 clause 6.6.3: response status codes used here.
OK, CREATED, DELETED, UPDATED = 2000, 2001, 2002, 2004
BAD_REQUEST, NOT_FOUND, OPERATION_NOT_ALLOWED, REQUEST_TIMEOUT = 4000, 4004, 4005, 4008
CONFLICT = 4105  # the resource name is taken: for our own resources, "already there"
#: TS-0004: ORIGINATOR_HAS_NOT_REGISTERED. Mobius answers an AE create whose AE-ID is in use
#: with it ("aei is duplicated"), so for the AE it means "already registered".
NOT_REGISTERED = 4106
#: TS-0004 clause 6.3.4.2.19: notificationEventType "create of direct child resource".
CREATE_OF_DIRECT_CHILD = 3
#: TS-0004 clause 6.3.4.2.18: notificationContentType "all attributes".
ALL_ATTRIBUTES = 1
RELEASE = "2a"  # the release version indicator Mobius 2.5 speaks (TS-0004 clause 7.2.1.1)


def topic_id(entity: str) -> str:
    """An AE-ID or CSE-ID as a topic level (TS-0010 clause 6.4.2)."""
    return entity.lstrip("/").replace("/", ":")


@dataclass(frozen=True, slots=True)
class Topics:
    """The four topics of one AE talking to its registrar CSE (TS-0010 clause 6.4)."""

    originator: str  # the AE-ID
    cse_id: str  # "/Mobius2"

    @property
    def request(self) -> str:
        """AE -> CSE requests."""
        return f"/oneM2M/req/{topic_id(self.originator)}/{topic_id(self.cse_id)}/json"

    @property
    def response(self) -> str:
        """CSE -> AE responses to them."""
        return f"/oneM2M/resp/{topic_id(self.originator)}/{topic_id(self.cse_id)}/json"

    @property
    def notification(self) -> str:
        """CSE -> AE requests (notifications)."""
        return f"/oneM2M/req/{topic_id(self.cse_id)}/{topic_id(self.originator)}/json"

    @property
    def notification_response(self) -> str:
        """AE -> CSE responses to notifications."""
        return f"/oneM2M/resp/{topic_id(self.cse_id)}/{topic_id(self.originator)}/json"


def dumps(obj: Any) -> bytes:
    """Compact JSON, UTF-8 (TS-0004 clause 8.4)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def request(op: int, to: str, fr: str, rqi: str, *, ty: int | None = None,
            pc: Any = None) -> bytes:
    """A request primitive (TS-0004 clause 7.2.1.1), bare as Mobius's examples send it."""
    prim: dict[str, Any] = {"op": op, "to": to, "fr": fr, "rqi": rqi, "rvi": RELEASE}
    if ty is not None:
        prim["ty"] = ty
    if pc is not None:
        prim["pc"] = pc
    return dumps(prim)


def response(rsc: int, rqi: str, *, to: str, fr: str) -> bytes:
    """A response primitive without content (TS-0004 clause 7.2.1.2)."""
    return dumps({"rsc": rsc, "rqi": rqi, "to": to, "fr": fr, "rvi": RELEASE})


@dataclass(frozen=True, slots=True)
class Response:
    rsc: int
    rqi: str
    pc: Any = None

    @property
    def debug(self) -> str:
        """Mobius's reason for an error (``pc`` = ``{"m2m:dbg": "..."}``), short."""
        dbg = self.pc.get("m2m:dbg") if isinstance(self.pc, dict) else None
        return dbg[:200] if isinstance(dbg, str) else ""


@dataclass(frozen=True, slots=True)
class Request:
    op: int
    rqi: str
    fr: str = ""
    to: str = ""
    pc: Any = None


def _load(payload: bytes) -> Any:
    """The JSON value of a payload, or None when it is not JSON (or too large)."""
    if not isinstance(payload, (bytes, bytearray)) or len(payload) > MAX_PAYLOAD:
        return None
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def _unwrap(obj: Any, key: str) -> dict[str, Any] | None:
    if isinstance(obj, dict) and isinstance(obj.get(key), dict):
        obj = obj[key]
    return obj if isinstance(obj, dict) else None


def _int(value: Any) -> int | None:
    """A JSON integer, or one written as a string ("2001"), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 9:
        return int(value)
    return None


def _rqi(value: Any) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= 256 else None


def parse_response(payload: bytes) -> Response | None:
    """A response primitive (``rsc`` and ``rqi`` at least), or None."""
    prim = _unwrap(_load(payload), "m2m:rsp")
    if prim is None:
        return None
    rsc, rqi = _int(prim.get("rsc")), _rqi(prim.get("rqi"))
    if rsc is None or rqi is None:
        return None
    return Response(rsc, rqi, prim.get("pc"))


def parse_request(payload: bytes) -> Request | None:
    """A request primitive (``op`` and ``rqi`` at least), or None."""
    prim = _unwrap(_load(payload), "m2m:rqp")
    if prim is None:
        return None
    op, rqi = _int(prim.get("op")), _rqi(prim.get("rqi"))
    if op is None or rqi is None:
        return None
    fr, to = prim.get("fr"), prim.get("to")
    return Request(op, rqi, fr if isinstance(fr, str) else "", to if isinstance(to, str) else "",
                   prim.get("pc"))


@dataclass(frozen=True, slots=True)
class Notification:
    """What a notification (TS-0004 clause 7.5.1.1, m2m:sgn) says."""

    kind: str  # "content" (a contentInstance was created), "verify", "deleted", "other"
    con: Any = None  # the created contentInstance's content
    ri: str = ""  # its resource ID, to drop a notification delivered twice
    sur: str = ""  # the subscription it came from


def parse_notification(pc: Any) -> Notification | None:
    """The notification in a NOTIFY request's content, or None when there is none."""
    sgn = pc.get("m2m:sgn") if isinstance(pc, dict) else None
    if not isinstance(sgn, dict):
        return None
    sur = sgn.get("sur") if isinstance(sgn.get("sur"), str) else ""
    if sgn.get("vrq") is True:
        return Notification("verify", sur=sur)
    if sgn.get("sud") is True:
        return Notification("deleted", sur=sur)
    nev = sgn.get("nev")
    rep = nev.get("rep") if isinstance(nev, dict) else None
    cin = rep.get("m2m:cin") if isinstance(rep, dict) else None
    if not isinstance(cin, dict) or "con" not in cin:
        return Notification("other", sur=sur)
    ri = cin.get("ri") if isinstance(cin.get("ri"), str) else ""
    return Notification("content", cin["con"], ri, sur)


def command_bytes(con: Any) -> bytes:
    """A command's bytes from a contentInstance's ``con``: a JSON object as compact JSON; a
    string (a platform that sent the command as text) as its own UTF-8 bytes. Anything else
    goes as JSON too: the command processor refuses it and says why in the results."""
    if isinstance(con, str):
        return con.strip().encode("utf-8", "replace")
    try:
        return dumps(con)
    except (ValueError, TypeError, RecursionError):
        return b""


# -- the AsyncAPI channels (citynode asyncapi) ----------------------------------------
_PARAMETERS = {
    "originator": "the node's AE-ID ([uplink.onem2m] originator, default \"S\" + the AE name)",
    "cse": "the CSE-ID without its \"/\" ([uplink.onem2m] cse_id, default Mobius2)",
}
_REQUEST = {
    "type": "object",
    "description": "A oneM2M request primitive (TS-0004 clause 7.2.1.1, JSON clause 8.4)",
    "required": ["op", "to", "fr", "rqi"],
    "properties": {
        "op": {"type": "integer", "enum": [1, 5],
               "description": "1 create (from the node), 5 notify (from the CSE)"},
        "to": {"type": "string", "description": "target, e.g. Mobius/<ae>/<container>"},
        "fr": {"type": "string", "description": "the originator (AE-ID or CSE-ID)"},
        "rqi": {"type": "string", "description": "request identifier, fresh per request"},
        "ty": {"type": "integer", "enum": [2, 3, 4, 23],
               "description": "resource type to create: AE, container, contentInstance, "
                              "subscription"},
        "rvi": {"type": "string", "const": RELEASE},
        "pc": {"type": "object", "description": "content: m2m:ae, m2m:cnt, m2m:cin, m2m:sub "
                                                "or (notify) m2m:sgn"},
    },
}
_CIN = {
    "type": "object",
    "description": "The con of a contentInstance the node creates",
    "required": ["kind", "time", "unix", "session", "seq", "historical"],
    "properties": {
        "kind": {"type": "string",
                 "enum": ["telemetry", "health", "event", "alarm", "state", "result"]},
        "time": {"type": "string", "format": "date-time", "description": "UTC, ISO 8601"},
        "unix": {"type": "number", "description": "the same time, Unix seconds"},
        "session": {"type": "integer", "description": "boot session (docs/payload.md)"},
        "seq": {"type": "integer", "description": "sequence number within the session"},
        "historical": {"type": "boolean", "description": "it waited through an outage"},
        "sensor": {"type": "string", "description": "the sensor of a sensor container"},
        "type": {"type": "string", "description": "that sensor's device type"},
        "alarm": {"type": "boolean", "description": "events container: an alarm"},
        "readings": {"type": "object", "additionalProperties": {
            "type": "object", "properties": {
                "v": {"type": "number"}, "vs": {"type": "string"}, "vb": {"type": "boolean"},
                "u": {"type": "string", "description": "unit (docs/payload.md section 6)"},
                "min": {"type": "number"}, "max": {"type": "number"},
                "t": {"type": "number", "description": "the record's own time, Unix s"}}}},
        "values": {"type": "object", "description": "state and results: name -> value"},
    },
}
_RESPONSE = {
    "type": "object",
    "description": "A oneM2M response primitive (TS-0004 clause 7.2.1.2)",
    "required": ["rsc", "rqi"],
    "properties": {
        "rsc": {"type": "integer", "description": "response status code (TS-0004 6.6)"},
        "rqi": {"type": "string", "description": "the request's identifier"},
        "pc": {"description": "the created resource, or m2m:dbg with the reason"},
        "to": {"type": "string"}, "fr": {"type": "string"}, "rvi": {"type": "string"},
    },
}


def channels() -> list[Any]:
    """The topics of the MQTT binding as :class:`agent.wire.formats.Channel` entries."""
    from agent.wire.formats import Channel
    from drivers import catalogue

    dust = catalogue.first_of_kind("particulate")
    example_cin = {"op": 1, "to": "Mobius/seoul-jongno-0001/pm", "fr": "Sseoul-jongno-0001",
                   "rqi": "3f9a1c-17", "ty": 4, "rvi": RELEASE, "pc": {"m2m:cin": {
                       "cnf": "application/json:0", "con": {
                           "kind": "telemetry", "time": "2025-11-23T12:14:20Z",
                           "unix": 1763900060, "session": 3, "seq": 1441,
                           "historical": False, "sensor": "pm", "type": dust,
                           "readings": {"pm25": {"v": 12, "min": 10, "max": 15, "u": "ug/m3"},
                                        "n": {"v": 29}}}}}}
    example_sgn = {"op": 5, "rqi": "rnrzk9nEAs", "to": "mqtt://broker:1883/Sseoul-jongno-0001",
                   "fr": "/Mobius2", "pc": {"m2m:sgn": {
                       "sur": "Mobius/seoul-jongno-0001/commands/citynode",
                       "nev": {"rep": {"m2m:cin": {"con": {"id": "c-101", "cmd": "ping"}}},
                               "net": 3}}}}
    ct = "application/json"
    request = _REQUEST | {"properties": _REQUEST["properties"] | {"pc": {
        "type": "object", "description": "m2m:ae, m2m:cnt, m2m:sub or m2m:cin whose con is:",
        "properties": {"m2m:cin": {"type": "object", "properties": {"con": _CIN}}}}}}
    return [
        Channel("request", "/oneM2M/req/{originator}/{cse}/json", "send",
                "Requests to the CSE: create the AE, its containers, the subscription on "
                "commands, and one contentInstance per message (TS-0010 6.4.2)",
                ct, request, parameters=_PARAMETERS, examples=(example_cin,)),
        Channel("response", "/oneM2M/resp/{originator}/{cse}/json", "receive",
                "The CSE's responses; a message is delivered at rsc 2000/2001/2004 "
                "(TS-0010 6.4.3)", ct, _RESPONSE, parameters=_PARAMETERS,
                examples=({"rsc": 2001, "rqi": "3f9a1c-17"},)),
        Channel("notification", "/oneM2M/req/{cse}/{originator}/json", "receive",
                "Notifications of the subscription on the commands container: a "
                "contentInstance whose con is a command of docs/commands.md",
                ct, _REQUEST, parameters=_PARAMETERS, examples=(example_sgn,)),
        Channel("notification-response", "/oneM2M/resp/{cse}/{originator}/json", "send",
                "The node's answer to each notification, at once (rsc 2000)", ct, _RESPONSE,
                parameters=_PARAMETERS,
                examples=({"rsc": 2000, "rqi": "rnrzk9nEAs", "to": "/Mobius2",
                           "fr": "Sseoul-jongno-0001", "rvi": RELEASE},)),
    ]
