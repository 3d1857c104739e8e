"""SenML in CBOR (RFC 8428 section 6): integer labels, canonical key order, the default.

Marking history in place: canonical CBOR sorts a map's keys by their encoding, so
the one-byte integer labels come first, then the one-letter text labels ``"b"``,
``"h"``, ``"q"``. ``"h": true`` therefore goes right after the session (``"b"``)
entry of the first record, whose map header counts one entry more. ``encode``
records that byte offset (where ``"h"`` is, for a pack already historical);
``historical`` checks that the session entry ends there and splices three bytes in.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from agent.wire.formats import Channel, Encoded, Publication, senml
from agent.wire.model import NodeInfo, Pack
from agent.wire.native import NativeSession
from agent.wire.session import Context

#: ``"h": true``: text string of length 1, "h", simple value true.
_HISTORICAL = b"\x61\x68\xf5"
_MAP0, _MAP_LAST = 0xA0, 0xB7  # one-byte map headers: 0..23 entries


def _head_len(initial: int) -> int:
    """Bytes of a CBOR item's head (an unsigned integer, an array's header), from its
    first byte; 0 for lengths that are indefinite or reserved."""
    info = initial & 0x1F
    return 1 if info < 24 else {24: 2, 25: 3, 26: 5, 27: 9}.get(info, 0)


def _after_session(payload: bytes, at: int, mark: int) -> bool:
    """Whether the session entry ("b": unsigned) of the first record, whose map header is
    at ``at``, ends at ``mark``: where "h" goes, or is."""
    for size in (1, 2, 3, 5, 9):
        start = mark - size
        if (start - 2 > at and payload[start - 2:start] == b"\x61\x62"
                and payload[start] >> 5 == 0 and _head_len(payload[start]) == size):
            return True
    return False


@dataclass(frozen=True, slots=True)
class SenmlCbor:
    name: str = "senml-cbor"
    content_type: str = "application/senml+cbor"
    packs: bool = True

    def encode(self, pack: Pack) -> Encoded:
        maps = senml.record_maps(pack, cbor=True)
        data = senml.dumps(maps, cbor=True)
        # The entries sorting before "h" are encoded exactly as in the whole map, and the
        # first map's header is one byte (at most 7 entries), as is this one's.
        before = {k: v for k, v in maps[0].items() if isinstance(k, int) or k < senml.HISTORICAL}
        mark = _head_len(data[0]) + len(cbor2.dumps(before, canonical=True))
        return Encoded(data, mark)

    def historical(self, payload: bytes, mark: int | None) -> bytes:
        at = _head_len(payload[0]) if payload and payload[0] >> 5 == 4 else 0  # an array
        if mark is not None and at and mark <= len(payload) and _after_session(payload, at, mark):
            if payload[mark:mark + len(_HISTORICAL)] == _HISTORICAL:
                return payload  # marked already
            after = payload[mark:mark + 2]  # the sequence key, the next record or the end
            room = _MAP0 <= payload[at] < _MAP_LAST
            if room and (after in (b"", b"\x61\x71") or after[0] >> 5 == 5):
                return b"".join((payload[:at], bytes((payload[at] + 1,)), payload[at + 1:mark],
                                 _HISTORICAL, payload[mark:]))
        return senml.remark(payload)

    def decode(self, payload: bytes) -> Pack:
        return senml.decode(payload)

    def on_connect(self, node: NodeInfo) -> list[Publication]:
        return []

    def session(self, ctx: Context) -> NativeSession:
        return NativeSession(self, ctx)

    def channels(self) -> list[Channel]:
        return senml.channels(self, cbor=True)


FORMAT = SenmlCbor()
