"""Every device's capture decoder by name, for ``citynode frames DEVICE`` and the doctor.

Each device's spec (``drivers/<device>/spec.py``) names its decoder: serial devices a
:class:`~drivers.spec.FrameCodec` over a byte stream, I2C devices a
:class:`~drivers.spec.CaptureCodec` over captured transfers. Rejected spans always become
``{"type": "rejected", "reason": ...}`` so installers read all devices alike.

Both walks stream: a capture of any size is decoded chunk by chunk (line by line), with
memory bounded by the longest frame, and every byte (every transfer) is accounted for
exactly once: in a decoded event or in a rejected one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from . import catalogue
from .i2ccapture import BadLine, Record
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


def decode_stream(codec: FrameCodec, chunks: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """Decode a byte stream, yielding one dict per event with its byte offset.

    Feed it chunks (``citynode frames`` reads 64 KiB at a time): the decoder holds at most
    one incomplete frame between them, so memory does not grow with the stream.
    """
    dec = codec.decoder()
    offset = 0

    def emit(events: list[Any]) -> Iterator[dict[str, Any]]:
        nonlocal offset
        for ev in events:
            doc, n = codec.describe(ev)
            yield {"offset": offset, "length": n, **doc}
            offset += n

    for chunk in chunks:
        yield from emit(dec.feed(chunk))
    yield from emit(dec.flush())


@dataclass
class CaptureTally:
    """What :func:`decode_capture_stream` made of a capture: ``decoded + rejected ==
    transfers`` once it has ended, and ``bad_lines`` lines were not transfers at all."""

    transfers: int = 0
    decoded: int = 0
    rejected: int = 0
    bad_lines: int = 0
    #: Bad lines whose rejected entry was dropped before it was yielded (at most
    #: ``keep_bad_lines`` wait between two transfers; a printer shows a few anyway).
    unreported: int = 0
    #: Transfers with no event of their own yet (a register address waiting for its
    #: read), by address: decided by the next event at that address, or at the end.
    pending: dict[int, int] = field(default_factory=dict)

    def settle(self, addr: int | None, decoded: bool, limit: int | None = None) -> None:
        """Count waiting transfers at ``addr`` (every address for None) as decoded or not."""
        for a in [addr] if addr is not None else list(self.pending):
            n = self.pending.pop(a, 0)
            if limit is not None and n > limit:
                self.pending[a] = n - limit
                n = limit
            if decoded:
                self.decoded += n
            else:
                self.rejected += n


def decode_capture_stream(codec: CaptureCodec, items: Iterable[Record | BadLine],
                          tally: CaptureTally | None = None,
                          keep_bad_lines: int = 100) -> Iterator[dict[str, Any]]:
    """Decode captured transfers (and :class:`BadLine` entries) lazily, accounting for each.

    A transfer is decoded when an event that is not ``rejected`` came of it, rejected when
    only rejected ones did. A transfer with no event of its own (a register address
    written for the read after it, a command whose reply comes later) counts as the next
    event at its address counts; transfers to other addresses as the decoder's summary
    line; anything still waiting at the end gets a ``rejected`` entry of its own, so no
    transfer goes unmentioned. Bad lines become rejected entries with their line number.
    """
    t = tally if tally is not None else CaptureTally()
    bad: deque[dict[str, Any]] = deque()
    state: dict[str, Any] = {"addr": None, "events": 0, "decoded": False, "ended": False}

    def close() -> None:
        """The decoder asked for the next transfer: the current one has all its events."""
        addr = state["addr"]
        if addr is None:
            return
        if state["events"]:
            t.settle(addr, state["decoded"])
            t.decoded += state["decoded"]
            t.rejected += not state["decoded"]
        else:
            t.pending[addr] = t.pending.get(addr, 0) + 1
        state.update(addr=None, events=0, decoded=False)

    def records() -> Iterator[Record]:
        for item in items:
            if isinstance(item, BadLine):
                t.bad_lines += 1
                if len(bad) < keep_bad_lines:
                    bad.append({"type": "rejected", "line": item.line,
                                "reason": f"line {item.line}: {item.reason}"})
                else:
                    t.unreported += 1
                continue
            close()
            t.transfers += 1
            state["addr"] = item[0]
            yield item
        close()
        state["ended"] = True

    for doc in codec.decode(records()):
        while bad:
            yield bad.popleft()
        ok = doc.get("type") != "rejected"
        if not state["ended"]:
            state["events"] += 1
            state["decoded"] = state["decoded"] or ok
        elif isinstance(doc.get("ignored"), dict):  # the walk's line for other addresses
            for where, n in doc["ignored"].items():
                t.settle(int(where, 16), False, n)
        else:  # said at the end about transfers that waited (a command with no reply)
            addr = doc.get("addr")
            t.settle(int(addr, 16) if isinstance(addr, str) else None, ok)
        yield doc
    while bad:
        yield bad.popleft()
    for addr, n in sorted(t.pending.items()):
        what = f"{n} transfers" if n > 1 else "1 transfer"
        yield {"type": "rejected", "addr": f"0x{addr:02x}", "transfers": n,
               "reason": f"{what} to 0x{addr:02x} with nothing decoded after "
               f"{'them' if n > 1 else 'it'}: a register address or command with no read"}
        t.rejected += n
    t.pending.clear()
