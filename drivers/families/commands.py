"""The command side of a request/reply serial protocol, as a state machine with the clock passed in.

Shared by the SDS011 and LD2450 protocols (:mod:`drivers.sds011.protocol`,
:mod:`drivers.ld2450.protocol`): both devices answer every command, take one at a time and
sometimes lose one, so the host keeps one command in flight, sends it again when its reply is
overdue, gives it up after ``retries`` more tries, and tells a late answer to an earlier try
(a duplicate) from a reply to something else (a mismatch).

What differs stays with each device: what its requests and replies look like, whether a
reply confirms the command in flight, what a confirmed command means, and what is sent next
(:meth:`CommandChannel._make` turns each queued item into a request, or into nothing).
Like h11, it does no I/O: the protocol collects the bytes to write from
:meth:`CommandChannel.data_to_send`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar


class Command(Protocol):
    """What the channel needs of a request: the bytes that send it."""

    @property
    def raw(self) -> bytes: ...


R = TypeVar("R", bound=Command)
Q = TypeVar("Q")

#: What a reply means for the command in flight (see :meth:`CommandChannel._settle`).
Verdict = Literal["confirmed", "duplicate", "refused", "mismatch"]


@dataclass(frozen=True, slots=True)
class NoReply(Generic[R]):
    """A command the device never answered, after every try."""

    request: R
    attempts: int


class CommandChannel(ABC, Generic[R, Q]):
    """One command in flight at a time, the rest queued; overdue ones sent again.

    Subclasses queue items in :attr:`_queue`, say what request an item stands for in
    :meth:`_make`, judge each reply and pass the verdict's facts to :meth:`_settle`, and may
    react to a command given up in :meth:`_gave_up`. Counters: ``confirmed``, ``mismatches``,
    ``duplicates``, ``resends``, ``no_replies``.
    """

    #: The event :meth:`tick` reports a command given up with (a subclass of :class:`NoReply`).
    no_reply_type: ClassVar[type[NoReply[Any]]] = NoReply

    def __init__(self, reply_timeout_s: float, retries: int) -> None:
        if reply_timeout_s <= 0 or retries < 0:
            raise ValueError("reply_timeout_s must be positive and retries not negative")
        self.reply_timeout_s = reply_timeout_s
        self.retries = retries
        self.confirmed = 0
        self.mismatches = 0
        self.duplicates = 0
        self.resends = 0
        self.no_replies = 0
        self._outbox = bytearray()
        self._queue: deque[Q] = deque()
        self._inflight: R | None = None
        self._attempts = 0
        self._deadline = 0.0
        self._last_reply: bytes | None = None

    # -- for the subclass ------------------------------------------------------------------------
    @abstractmethod
    def _make(self, item: Q) -> R | None:
        """The request a queued item stands for now; None: nothing to send for it."""

    def _gave_up(self, request: R, now: float) -> None:
        """``request`` went unanswered after every try (it is no longer in flight)."""

    def _forget(self) -> None:
        """Drop the queue and the command in flight (the port was reopened)."""
        self._queue.clear()
        self._inflight = None

    def _pump(self, now: float) -> None:
        """Send the next queued command if none is in flight."""
        while self._inflight is None and self._queue:
            req = self._make(self._queue.popleft())
            if req is None:
                continue
            self._inflight = req
            self._attempts = 1
            self._deadline = now + self.reply_timeout_s
            self._outbox += req.raw

    def _settle(self, raw: bytes, why: str | None, answered: bool) -> Verdict:
        """What a reply (its bytes ``raw``) means for the command in flight.

        ``why`` says why it does not confirm that command (None: it does; always set when
        none is in flight), ``answered`` whether it still answers that command (the same
        command, refused or with another value: the device will not do better on a retry).
        A confirmed or refused command leaves the flight; the caller pumps the queue once it
        has taken in what the reply says. A repeat of the last settling reply is the late
        answer to an earlier try (``duplicates``); any other reply is a ``mismatches`` and
        the wait goes on. Refusals are counted by the caller.
        """
        if why is not None:
            if raw == self._last_reply:
                self.duplicates += 1
                return "duplicate"
            if not answered:
                self.mismatches += 1
                return "mismatch"
        else:
            self.confirmed += 1
        self._last_reply = raw
        self._inflight = None
        return "confirmed" if why is None else "refused"

    # -- the host's side ---------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A command is waiting for its reply, or queued."""
        return self._inflight is not None or bool(self._queue)

    def data_to_send(self) -> bytes:
        """Bytes the host should write to the device now (empties the outbox)."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def tick(self, now: float) -> list[Any]:
        """Send a command again whose reply is overdue; give it up after ``retries`` more tries."""
        events: list[Any] = []
        req = self._inflight
        if req is not None and now >= self._deadline:
            if self._attempts <= self.retries:
                self._attempts += 1
                self.resends += 1
                self._outbox += req.raw
                self._deadline = now + self.reply_timeout_s
            else:
                self.no_replies += 1
                self._inflight = None
                events.append(self.no_reply_type(req, self._attempts))
                self._gave_up(req, now)
        self._pump(now)
        return events
