"""What the UART sensor models share (PMS5003, SDS011): value sources, the record
of frames sent, and the reassembly of host commands from any chunking of bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

V = TypeVar("V")
C = TypeVar("C")


def as_source(source: Any, coerce: Callable[[Any], V]) -> Callable[[float], Any]:
    """Turn a callable or an iterable of values into a source (called with the model's clock).

    A callable is used as it is; an iterable's items go through ``coerce``.
    """
    if callable(source):
        return source  # type: ignore[no-any-return]
    it: Iterator[Any] = iter(source)

    def _next(now: float) -> V:
        return coerce(next(it))

    _next.description = f"iterator {source!r}"  # type: ignore[attr-defined]
    return _next


@dataclass(frozen=True, slots=True)
class SentFrame(Generic[V]):
    """A data frame the model sent: when, what, and whether it was warm-up junk."""

    t: float
    values: V
    raw: bytes
    warming_up: bool
    solicited: bool  # an answer to the host's read request rather than an active-mode frame


class CommandBuffer(Generic[C]):
    """Host bytes in, whole valid commands out, as the sensor's UART sees them.

    Commands start with ``header`` and are ``length`` bytes long; ``parse`` returns
    None for an invalid one (bad checksum or tail), which the sensor ignores: the
    search for a header then resumes one byte on. Bytes before a header are
    ignored; a trailing first header byte is kept, as it may start the next
    command. ``stats`` (the model's) counts "commands", "bad_commands" and
    "ignored_bytes".
    """

    def __init__(
        self, header: bytes, length: int, parse: Callable[[bytes], C | None], stats: dict[str, int]
    ) -> None:
        self.header = header
        self.length = length
        self.parse = parse
        self.stats = stats
        self._buf = bytearray()

    def feed(self, data: bytes) -> Iterable[C]:
        """Add bytes; yield each complete valid command (lazily: act on one before the next)."""
        self._buf += data
        while True:
            i = self._buf.find(self.header)
            if i < 0:
                # Keep a trailing first header byte: it may start the next command.
                keep = 1 if self._buf.endswith(self.header[:1]) else 0
                self._ignore(len(self._buf) - keep)
                return
            self._ignore(i)
            if len(self._buf) < self.length:
                return
            cmd = self.parse(bytes(self._buf[:self.length]))
            if cmd is None:
                # Invalid: the sensor ignores it; look for a header inside it.
                self.stats["bad_commands"] += 1
                self._ignore(1)
                continue
            del self._buf[:self.length]
            self.stats["commands"] += 1
            yield cmd

    def clear(self) -> None:
        """Forget a partial command (power cycle)."""
        self._buf.clear()

    def _ignore(self, n: int) -> None:
        if n > 0:
            del self._buf[:n]
            self.stats["ignored_bytes"] += n
