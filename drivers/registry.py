"""Every device's capture decoder by name, for ``citynode frames DEVICE`` and the doctor.

Each device's spec (``drivers/<device>/spec.py``) names its decoder: serial devices a
:class:`~drivers.spec.FrameCodec` over a byte stream, I2C devices a
:class:`~drivers.spec.CaptureCodec` over captured transfers. Rejected spans always become
``{"type": "rejected", "reason": ...}`` so installers read all devices alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import catalogue
from .spec import CaptureCodec, FrameCodec


def known() -> list[str]:
    """Device types that have a capture decoder."""
    return sorted(t for t, s in catalogue.specs().items() if s.frames is not None)


def get(name: str) -> FrameCodec | CaptureCodec:
    """The decoder of a device type or alias; KeyError names the known ones."""
    try:
        spec = catalogue.get(name)
    except KeyError:
        spec = None
    if spec is None or spec.frames is None:
        raise KeyError(f"unknown device {name!r}; known: {', '.join(known())}")
    return spec.frames()


def decode_stream(codec: FrameCodec, chunks: Iterable[bytes]) -> Iterable[dict[str, Any]]:
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
