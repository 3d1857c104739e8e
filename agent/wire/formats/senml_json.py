"""SenML in minified JSON (RFC 8428 section 5): text labels, for platforms that want text.

Marking history in place: the first record starts with the pack's fields in a fixed
order (base time, session, sequence), all numbers, and ``"h":true`` follows them.
``encode`` records the offset of the comma after them; ``historical`` checks what
precedes it and inserts ``,"h":true`` there (or finds it there, for a pack already
historical).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from agent.wire.formats import Channel, Encoded, Publication, senml
from agent.wire.model import NodeInfo, Pack
from agent.wire.native import NativeSession
from agent.wire.session import Context

_HISTORICAL = b',"' + senml.HISTORICAL.encode() + b'":true'
#: What precedes the mark in a payload this module encoded (numbers as json.dumps writes them).
_HEAD = re.compile(rb'\[\{"bt":-?[0-9.eE+-]+,"b":[0-9]+(,"q":[0-9]+)?')


@dataclass(frozen=True, slots=True)
class SenmlJson:
    name: str = "senml-json"
    content_type: str = "application/senml+json"
    packs: bool = True

    def encode(self, pack: Pack) -> Encoded:
        data = senml.dumps(senml.record_maps(pack, cbor=False), cbor=False)
        # '[' + the head up to "h" without its closing '}': where "h" goes (or is).
        first = senml.head(pack, cbor=False)
        first.pop(senml.HISTORICAL, None)
        return Encoded(data, len(json.dumps(first, separators=(",", ":"))))

    def historical(self, payload: bytes, mark: int | None) -> bytes:
        if mark is not None and _HEAD.fullmatch(payload, 0, mark):
            after = payload[mark:mark + len(_HISTORICAL)]
            if after == _HISTORICAL:
                return payload  # marked already
            if after.startswith(b',"n":'):
                return payload[:mark] + _HISTORICAL + payload[mark:]
        return senml.remark(payload)

    def decode(self, payload: bytes) -> Pack:
        return senml.decode(payload)

    def on_connect(self, node: NodeInfo) -> list[Publication]:
        return []

    def session(self, ctx: Context) -> NativeSession:
        return NativeSession(self, ctx)

    def channels(self) -> list[Channel]:
        return senml.channels(self, cbor=False)


FORMAT = SenmlJson()
