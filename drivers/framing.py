"""What the UART frame decoders share (PMS5003, SDS011): the byte buffer, rejected
spans with their reasons, and the feed / flush / expire bookkeeping that accounts
for every byte exactly once.

A decoder subclasses :class:`StreamDecoder` and supplies :meth:`~StreamDecoder._next`
(decode or reject at the front of the buffer) and :meth:`~StreamDecoder._find_start`
(where the next possible frame begins).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Protocol

TRUNCATED = "truncated: input ended inside a frame"
SILENCE = "incomplete frame, then silence"


@dataclass(frozen=True, slots=True)
class Rejected:
    """A span of bytes that was not part of any valid frame, and why."""

    data: bytes
    reason: str


class _Counters(Protocol):
    bad_frames: int
    discarded_bytes: int


class StreamDecoder(ABC):
    """Incremental decoder skeleton: feed it any chunking of the byte stream."""

    def __init__(self, counters: Any) -> None:
        self._buf = bytearray()
        self.counters: Any = counters

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """Add bytes and return every event they complete."""
        self._buf += data
        events: list[Any] = []
        while True:
            event = self._next()
            if event is None:
                return events
            events.append(event)

    def flush(self) -> list[Any]:
        """End of input: decide what can be; whatever else is buffered is truncated."""
        if not self._buf:
            return []
        events = self._settle()
        if not self._buf:
            return events
        self.counters.bad_frames += self._truncated_frame()
        return [*events, self._reject(len(self._buf), TRUNCATED)]

    def expire(self) -> list[Any]:
        """The line went quiet with a partial frame buffered: it will never complete.

        Drop the candidate (slide to the next possible start) and decode what
        follows, so the loss is reported when it happened rather than when the
        next frame arrives.
        """
        if not self._buf:
            return []
        events = self._settle()
        if not self._buf:
            return events
        self.counters.bad_frames += self._expired_frame()
        idx = self._resume_after_silence()
        events.append(self._reject(idx if idx > 0 else len(self._buf), SILENCE))
        return events + self.feed(b"")

    def reset(self) -> None:
        """Forget buffered bytes, as after re-opening a port."""
        self._buf.clear()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    # -- for subclasses ------------------------------------------------------------
    @abstractmethod
    def _next(self) -> Any | None:
        """The next event at the front of the buffer, or None until more bytes arrive."""

    @abstractmethod
    def _find_start(self, start: int) -> int:
        """Index of the next possible frame start at or after ``start``, or -1.

        A trailing partial start sequence counts: it may become a frame.
        """

    def _resume_after_silence(self) -> int:
        """On expire: where decoding resumes past the dropped candidate (-1: nowhere)."""
        return self._find_start(1)

    def _settle(self) -> list[Any]:
        """Input ends or stops: decide anything held back waiting for more bytes."""
        return []

    @abstractmethod
    def _truncated_frame(self) -> bool:
        """On flush: does what is left count as a bad (truncated) frame?"""

    def _expired_frame(self) -> bool:
        """On expire: does what is left count as a bad (incomplete) frame?"""
        return self._truncated_frame()

    def _reject(self, n: int, reason: str) -> Rejected:
        span = bytes(self._buf[:n])
        del self._buf[:n]
        self.counters.discarded_bytes += n
        return Rejected(span, reason)

    def _skip_to_start(self, reason: str, start: int = 0) -> Rejected | None:
        """Reject everything before the next possible start at or after ``start``."""
        if not self._buf:
            return None
        idx = self._find_start(start)
        if idx == 0:
            return None
        return self._reject(idx if idx > 0 else len(self._buf), reason)
