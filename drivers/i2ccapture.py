"""Captured I2C transfers (``citynode frames`` on ``ADDR W|R HEX`` lines): the walk that
every chip's capture decoder shares.

A record is ``(7-bit address, "W" or "R", bytes)``, ``None`` for the bytes of a NACKed
transfer (see :func:`drivers.emulation.i2c.parse_capture`). A decoder looks only at its
chip's addresses; transfers to other addresses are counted and reported once, at the end,
as one ``rejected`` event, so a capture of a busy bus still decodes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["CaptureWalk", "Record"]

Record = tuple[int, str, "bytes | None"]


class CaptureWalk:
    """``for addr, kind, data, head in walk(records)``, then ``yield from walk.summary()``.

    ``head`` is the start of every event about that transfer (its index and address).
    ``passthrough`` addresses are handed on too (the general call) but are not named as
    the chip's own in the summary."""

    def __init__(self, addresses: Iterable[int], passthrough: Iterable[int] = ()) -> None:
        self.addresses = tuple(addresses)
        self._wanted = set(self.addresses) | set(passthrough)
        self.others: Counter[int] = Counter()

    def __call__(self, records: Iterable[Record]
                 ) -> Iterator[tuple[int, str, bytes | None, dict[str, Any]]]:
        for i, (addr, kind, data) in enumerate(records):
            if addr not in self._wanted:
                self.others[addr] += 1
                continue
            yield addr, kind, data, {"transfer": i, "addr": f"0x{addr:02x}"}

    def skip(self, addr: int) -> None:
        """A passthrough transfer the decoder did not want after all."""
        self.others[addr] += 1

    def summary(self) -> Iterator[dict[str, Any]]:
        if self.others:
            where = ", ".join(f"0x{a:02x} ({n})" for a, n in sorted(self.others.items()))
            yield {"type": "rejected", "reason": f"transfers to addresses other than "
                   f"{'/'.join(f'0x{a:02x}' for a in self.addresses)} ignored: {where}"}
