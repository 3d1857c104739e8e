"""Every device's codec by name, for ``citynode frames DEVICE``.

A device registers a factory for its incremental decoder and a function that
turns each decoder event into a JSON-ready dict. Rejected spans always become
``{"type": "rejected", "reason": ...}`` so installers read all devices alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .pms5003 import codec as pms


class StreamDecoder(Protocol):
    def feed(self, data: bytes) -> list[Any]: ...
    def flush(self) -> list[Any]: ...


@dataclass(frozen=True)
class Codec:
    description: str
    decoder: Callable[[], StreamDecoder]
    describe: Callable[[Any], tuple[dict[str, Any], int]]  # event -> (json, bytes consumed)


def _pms_describe(ev: Any) -> tuple[dict[str, Any], int]:
    if isinstance(ev, pms.Frame):
        return {"type": "frame", **ev.as_dict()}, len(ev.raw)
    if isinstance(ev, pms.Ack):
        return {"type": "ack", "cmd": f"{ev.cmd:02x}", "data": ev.data}, len(ev.raw)
    return {"type": "rejected", "reason": ev.reason, "bytes": ev.data.hex(" ")}, len(ev.data)


CODECS: dict[str, Codec] = {
    "pms5003": Codec("Plantower PMS5003/PMS7003 (UART 9600 8N1)", pms.FrameDecoder, _pms_describe),
}
ALIASES = {"pms7003": "pms5003", "pmsa003": "pms5003"}


def get(name: str) -> Codec:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in CODECS:
        raise KeyError(f"unknown device {name!r}; known: {', '.join(sorted(CODECS))}")
    return CODECS[key]


def decode_stream(codec: Codec, chunks: Iterable[bytes]) -> Iterable[dict[str, Any]]:
    """Decode a byte stream, yielding one dict per event with its byte offset."""
    dec = codec.decoder()
    offset = 0

    def emit(events: list[Any]) -> Iterable[dict[str, Any]]:
        nonlocal offset
        for ev in events:
            doc, n = codec.describe(ev)
            yield {"offset": offset, "length": n, **doc}
            offset += n

    for chunk in chunks:
        yield from emit(dec.feed(chunk))
    yield from emit(dec.flush())
