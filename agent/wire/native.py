"""citynode's own conversation: ``<prefix>/<node>/<leaf>`` topics, payloads in a pack format.

The session of the SenML formats (docs/payload.md). A spooled message keeps its bytes
when the uplink's format is the spool's (marked historical in place, no decoding), and
is decoded and encoded again when it is another pack format; its topic's leaf moves
under this uplink's prefix. Commands arrive on ``<prefix>/<node>/command``; a retained
one is never acted on (it would be handed over again at every reconnect).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from agent.wire import formats
from agent.wire.session import Command, Context, Item, Out, Reaction

if TYPE_CHECKING:
    from agent.wire.formats import Format
    from agent.wire.model import Pack

log = logging.getLogger("citynode.uplink")


class NativeSession:
    """One uplink speaking citynode's own topics in a pack format (SenML)."""

    def __init__(self, fmt: Format, ctx: Context) -> None:
        self.fmt = fmt
        self.ctx = ctx
        self._home = f"{ctx.home.prefix}/{ctx.home.node}/"
        #: [mqtt]'s uplink, whose format is the spool's: it sends what it was given.
        self._main = ctx.uplink == "main"
        self.ignored_retained = 0

    def subscriptions(self) -> list[str]:
        return [self.ctx.topics.command] if self.ctx.commands else []

    def will(self, offline: Pack) -> Out | None:
        return Out(self.ctx.topics.state, self.fmt.encode(offline).payload, retain=True,
                   content_type=self.fmt.content_type)

    def opening(self) -> list[Out]:
        return []

    def ready(self) -> bool:
        return True

    def topic(self, spooled: str) -> str:
        """A spooled topic under this uplink's prefix. A command's own response topic
        (MQTT 5) stays as it is on the [mqtt] uplink, and is the result topic elsewhere."""
        if spooled.startswith(self._home):
            return self.ctx.topics._t(spooled[len(self._home):])
        if self._main:
            return spooled
        return self.ctx.topics.result

    def render(self, item: Item) -> list[Out]:
        data, content_type = self._payload(item)
        return [Out(self.topic(item.topic), data, retain=item.retain,
                    content_type=content_type, correlation=item.correlation)]

    def _payload(self, item: Item) -> tuple[bytes, str]:
        """In this uplink's format. The [mqtt] uplink sends rows as they were spooled (a
        row from before ``[report] format`` changed keeps its format); a row that no
        format reads goes as it is: nothing accepted is lost."""
        same = item.content_type == self.fmt.content_type or not item.content_type
        if same or self._main:
            fmt = self.fmt if same else formats.for_content_type(item.content_type)
            data = fmt.historical(item.payload, item.mark) if item.historical else item.payload
            return data, item.content_type or self.fmt.content_type
        try:
            return self.fmt.encode(item.pack()).payload, self.fmt.content_type
        except (formats.PayloadError, ValueError):
            return item.payload, item.content_type

    def receive(self, topic: str, payload: bytes, *, retained: bool = False,
                correlation: bytes | None = None, response_topic: str | None = None) -> Reaction:
        if topic != self.ctx.topics.command:
            return Reaction()
        if retained:
            self.ignored_retained += 1
            log.warning("ignored a retained message on %s (clear it: publish an empty retained "
                        "message)", topic, extra={"EVENT": "command_retained"})
            return Reaction()
        return Reaction(commands=[Command(payload, correlation, response_topic)])

    def poll(self, now: float) -> Reaction:
        return Reaction()

    def lost(self) -> None:
        """Nothing is outstanding beyond the broker's PUBACKs, which the uplink tracks."""

    def status(self) -> dict[str, Any]:
        return {}
