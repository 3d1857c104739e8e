"""oneM2M: the node as an ADN-AE of a oneM2M IN-CSE (KETI Mobius) over the MQTT binding.

A platform format (``[[uplink]] format = "onem2m"``): the node registers an AE with the
CSE and writes every spooled message as a contentInstance, speaking request and
response primitives in JSON (oneM2M TS-0004 clause 8.4) on the topics of the MQTT
binding (oneM2M TS-0010 clause 6.4, MQTT 3.1.1). What goes where:

* opening, on every connection (TS-0004 clause 7.4; each step after the one before is
  confirmed): the AE (``ty`` 2, ``api`` = ``app_id``, ``rr`` true, ``poa`` an
  ``mqtt://`` point of access, ``srv`` ["2a"]); one container (``ty`` 3, ``mni``) per
  configured sensor, and ``node``, ``health``, ``events``, ``state``, ``commands``,
  ``results``; a subscription (``ty`` 23) on ``commands`` that notifies the AE over MQTT.
  "Already exists" (4105, and Mobius's 4106 for an AE-ID in use) counts as done;
* telemetry: one contentInstance per sensor container with that sensor's readings, and
  one in ``node`` for records of no sensor; health in ``health``; events and alarms in
  ``events``; birth and goodbye in ``state``; command results in ``results``;
* commands: a contentInstance created in ``commands`` by the platform reaches the node as
  a notification; its ``con`` (a JSON object, or a string holding one) is a command of
  docs/commands.md, signature included; the result goes to ``results``.

The ``con`` of each contentInstance is a JSON object, e.g. in the container ``pm`` (a
fine-dust sensor; ``type`` is its device type)::

    {"kind": "telemetry", "time": "2025-11-23T12:14:20Z", "unix": 1763900060,
     "session": 3, "seq": 1441, "historical": false, "sensor": "pm", "type": "<type>",
     "readings": {"pm25": {"v": 12, "min": 10, "max": 15, "u": "ug/m3"}, "n": {"v": 29}}}

``readings`` holds each record by name (in a sensor's container without the sensor's
name or prefix: ``pm:n`` is ``n``); ``v``, ``vs`` or ``vb`` is its value, rounded to its
resolution; ``u`` its unit (docs/payload.md section 6); a record's ``:min`` and ``:max``
join it. Events and alarms add ``"alarm": true|false``. ``state`` and ``results`` carry
``values`` instead, plain name -> value (``{"id": "c-101", "status": "ok", ...}``).
A contentInstance's resource name is ``<time ms>-<session>-<seq>-<epoch>`` (13 and 10
digits; the epoch names the node's state directory): the CSE refuses a second copy of a
message (4105), so retries never store one twice, and Mobius's ``la`` (the greatest
name) is the newest reading. Arrival order is not sequence order: order by (session,
seq).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec

from agent.wire.formats import PlatformFormat

if TYPE_CHECKING:
    from agent.wire.formats import Channel
    from agent.wire.session import Context, Session

#: TS-0001 clause 7.2: a CSE-ID is "/" and an identifier; AE-IDs here are SP-relative
#: ("S..." or "C..."); resource names use the unreserved URI characters.
CseId = Annotated[str, msgspec.Meta(pattern=r"^/[A-Za-z0-9._~-]{1,64}\Z")]
ResourceName = Annotated[str, msgspec.Meta(pattern=r"^([A-Za-z0-9._~-]{1,64})?\Z")]
AppId = Annotated[str, msgspec.Meta(pattern=r"^[NR][A-Za-z0-9._~-]{0,63}\Z")]
AeId = Annotated[str, msgspec.Meta(pattern=r"^([CS][A-Za-z0-9._~-]{0,64})?\Z")]


class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``[uplink.onem2m]`` table."""

    #: The CSE-ID of the CSE the node registers with (Mobius: "/Mobius2"); without its
    #: "/" it names the CSE in the MQTT topics (TS-0010 clause 6.4.1).
    cse_id: CseId = "/Mobius2"
    #: The CSEBase's resource name: requests go to "<cse_name>/<ae>/<container>".
    cse_name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9._~-]{1,64}\Z")] = "Mobius"
    #: The AE's App-ID (TS-0001 clause 7.1.3: "N" + a name not registered with oneM2M).
    app_id: AppId = "Ncitynode"
    #: The AE's resource name; "" is the node id.
    ae: ResourceName = ""
    #: The AE-ID the node uses as originator; "" is "S" and the AE's resource name.
    originator: AeId = ""
    #: maxNrOfInstances of every container: the CSE keeps this many, dropping the oldest.
    mni: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 1000
    #: How long a request waits for its response before it is sent again (new rqi).
    request_timeout_s: Annotated[float, msgspec.Meta(ge=0.5, le=600)] = 10.0
    #: Timeouts of one request after which status() reports it as overdue; it is still
    #: retried (a message accepted by the node is never dropped for a silent server).
    max_retries: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 5
    #: The longest wait between two attempts of one request (1, 2, 4 ... s up to this).
    backoff_max_s: Annotated[float, msgspec.Meta(ge=1, le=3600)] = 60.0
    #: The AE's point of access; "" is mqtt://<uplink host>:<port>/<originator>.
    poa: Annotated[str, msgspec.Meta(max_length=256)] = ""


class Onem2m(PlatformFormat):
    """The format: it encodes no packs of its own; its session renders spooled ones."""

    name = "onem2m"
    #: TS-0004 clause 6.7: the media type of a JSON request primitive.
    content_type = "application/vnd.onem2m-preq+json"

    def session(self, ctx: Context) -> Session:
        from agent.wire.formats.onem2m.session import Onem2mSession, load_epoch

        return Onem2mSession(ctx, epoch=load_epoch(ctx.state_dir, ctx.uplink))

    def channels(self) -> list[Channel]:
        from agent.wire.formats.onem2m.primitives import channels

        return channels()


FORMAT = Onem2m()
