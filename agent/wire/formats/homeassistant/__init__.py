"""Home Assistant MQTT discovery: the node as one Home Assistant device, its quantities as
entities, its alarms as event entities.

Home Assistant's MQTT integration ("MQTT Discovery", home-assistant.io/integrations/mqtt,
sections "Discovery messages", "Discovery topic", "Discovery payload", "Birth and last
will messages") reads a retained JSON configuration per entity on
``<discovery_prefix>/<component>/[<node_id>/]<object_id>/config``; an empty payload on
that topic removes the entity. This format's session (:mod:`.session`) announces every
quantity of every configured sensor there, mirrors each report as one retained JSON state
that the entities read with ``value_template``, sends alarms to ``event`` entities
(home-assistant.io/integrations/event.mqtt), keeps an availability topic (``online`` in
its opening, ``offline`` as its will and on the node's goodbye), announces everything
again when Home Assistant says ``online`` on its status topic, and removes the entities of
a sensor that left the configuration.

The module's top level stays light (the configuration imports :class:`Options` at every
start); the tables and the session load in :meth:`HomeAssistant.session`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import msgspec

from agent.wire.formats import Channel, PlatformFormat

if TYPE_CHECKING:
    from agent.wire.session import Context, Session

#: An MQTT topic of one or more levels without wildcards, as Home Assistant's discovery
#: prefix and status topic are.
Topic = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*\Z")]


class Options(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[uplink.homeassistant]``: where Home Assistant listens and how the node shows."""

    #: Home Assistant's discovery prefix (its MQTT options; "homeassistant" by default).
    discovery_prefix: Topic = "homeassistant"
    #: The device's name in Home Assistant; "" = the node id.
    node_name: Annotated[str, msgspec.Meta(max_length=64)] = ""
    #: Seconds after which Home Assistant shows a quantity as unavailable when no report
    #: came (its ``expire_after``); 0 = never (availability still says when the node is
    #: gone). A few report intervals is a sensible value.
    expire_after_s: Annotated[int, msgspec.Meta(ge=0, le=7 * 86400)] = 0
    #: Home Assistant's birth and will topic; "" = ``<discovery_prefix>/status``.
    status_topic: Annotated[str, msgspec.Meta(
        pattern=r"^([A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*)?\Z")] = ""
    #: The area Home Assistant suggests for the device ("" = none).
    suggested_area: Annotated[str, msgspec.Meta(max_length=64)] = ""


class HomeAssistant(PlatformFormat):
    """A platform format: it renders spooled messages in its session, never whole packs."""

    name = "homeassistant"
    content_type = "application/json"

    def session(self, ctx: Context) -> Session:
        from agent.wire.formats.homeassistant.session import HomeAssistantSession

        return HomeAssistantSession(ctx)

    def channels(self) -> list[Channel]:
        from agent.wire.formats.homeassistant.channels import channels

        return channels()


FORMAT = HomeAssistant()
