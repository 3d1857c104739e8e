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
from typing import Any, NamedTuple

__all__ = ["BadLine", "CaptureWalk", "Record", "parse_line"]

Record = tuple[int, str, "bytes | None"]

#: The highest 7-bit I2C address: a capture line naming a larger one is not a transfer.
MAX_ADDRESS = 0x7F


class BadLine(NamedTuple):
    """A capture line that is not a transfer (``line`` counts from 1): reported as a
    rejected entry, never handed to a decoder."""

    line: int
    reason: str


def _shown(text: str, limit: int = 60) -> str:
    """A line as an error message quotes it: a 50 MB line must not become the message."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def parse_line(line: str) -> Record | None:
    """One ``ADDR W|R HEX`` capture line (``R NACK`` for a refused read); None for a blank
    line or a comment. ValueError says what is wrong with anything else."""
    text = line.split("#", 1)[0].strip()
    if not text:
        return None
    parts = text.split(None, 2)
    if len(parts) < 2 or parts[1].upper() not in ("W", "R"):
        raise ValueError(f"expected 'ADDR W|R HEX', got {_shown(line.strip())!r}")
    addr = int(parts[0], 16)
    if not 0 <= addr <= MAX_ADDRESS:
        raise ValueError(f"address {_shown(parts[0])} is not a 7-bit I2C address (00..7f)")
    rest = parts[2] if len(parts) > 2 else ""
    data = None if rest.strip().upper() == "NACK" else bytes.fromhex(rest)
    return addr, parts[1].upper(), data


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
        """One ``rejected`` event for every transfer to another address; ``ignored`` counts
        them by address, so ``citynode frames`` accounts for every transfer."""
        if self.others:
            where = ", ".join(f"0x{a:02x} ({n})" for a, n in sorted(self.others.items()))
            yield {"type": "rejected", "reason": f"transfers to addresses other than "
                   f"{'/'.join(f'0x{a:02x}' for a in self.addresses)} ignored: {where}",
                   "ignored": {f"0x{a:02x}": n for a, n in sorted(self.others.items())}}
