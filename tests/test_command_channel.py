"""The shared command channel (drivers/families/commands.py) on a toy request/reply device.

The SDS011 and LD2450 tests check it through their protocols; these check its promises
directly, whatever the device: one command in flight, at most ``1 + retries`` sends each,
every command settled exactly once (confirmed, refused or given up), late answers counted
as duplicates.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.families.commands import CommandChannel, NoReply
from drivers.ld2450 import protocol as ld2450
from drivers.sds011 import protocol as sds011


@dataclass(frozen=True, slots=True)
class Cmd:
    n: int
    raw: bytes


def cmd(n: int) -> Cmd:
    return Cmd(n, b"C" + bytes([n]))


class Toy(CommandChannel[Cmd, Callable[[], "Cmd | None"]]):
    """Replies are b"R" + number + b"+" (done) or b"-" (refused); the queue holds steps."""

    def __init__(self, retries: int = 2) -> None:
        super().__init__(1.0, retries)
        self.refused: list[Cmd] = []
        self.done: list[Cmd] = []
        self.given_up: list[Cmd] = []

    def _make(self, item: Callable[[], Cmd | None]) -> Cmd | None:
        return item()

    def _gave_up(self, request: Cmd, now: float) -> None:
        self.given_up.append(request)

    def send(self, n: int | None, now: float) -> None:
        self._queue.append(lambda: None if n is None else cmd(n))
        self._pump(now)

    def reply(self, raw: bytes, now: float) -> str:
        req = self._inflight
        why = None if req is not None and raw == b"R" + bytes([req.n]) + b"+" else "not it"
        answered = req is not None and raw[:2] == b"R" + bytes([req.n])
        verdict = self._settle(raw, why, answered)
        if req is not None and verdict in ("confirmed", "refused"):
            (self.done if verdict == "confirmed" else self.refused).append(req)
            self._pump(now)
        return verdict


def test_a_command_is_sent_again_when_overdue_then_given_up() -> None:
    ch = Toy(retries=2)
    ch.send(1, 0.0)
    assert ch.data_to_send() == b"C\x01" and ch.busy
    assert ch.tick(0.5) == [] and ch.data_to_send() == b""
    assert ch.tick(1.0) == [] and ch.data_to_send() == b"C\x01"
    assert ch.tick(2.0) == [] and ch.data_to_send() == b"C\x01"
    assert ch.tick(3.0) == [NoReply(cmd(1), 3)]
    assert (ch.resends, ch.no_replies, ch.given_up, ch.busy) == (2, 1, [cmd(1)], False)


def test_the_queue_waits_for_the_reply_and_skips_steps_with_nothing_to_send() -> None:
    ch = Toy()
    ch.send(1, 0.0)
    ch.send(None, 0.0)
    ch.send(2, 0.0)
    assert ch.data_to_send() == b"C\x01"
    assert ch.reply(b"R\x01+", 0.1) == "confirmed"
    assert ch.data_to_send() == b"C\x02"  # the empty step made no request
    assert ch.reply(b"R\x01+", 0.2) == "duplicate"  # the late answer to a resend of 1
    assert ch.reply(b"R\x07+", 0.2) == "mismatch"  # the wait for 2 goes on
    assert ch.reply(b"R\x02-", 0.3) == "refused"
    assert (ch.confirmed, ch.duplicates, ch.mismatches, ch.busy) == (1, 1, 1, False)
    assert ch.reply(b"R\x02-", 0.4) == "duplicate"  # nothing in flight, but a known answer


def test_bad_timing_is_refused() -> None:
    with pytest.raises(ValueError):
        Toy(retries=-1)
    with pytest.raises(ValueError):
        sds011.SDS011Protocol(reply_timeout_s=0)


def test_the_devices_keep_their_own_no_reply_events() -> None:
    sds = sds011.NoReply(sds011.Request(b"x", 1, "work"), 4)
    ld = ld2450.NoReply(ld2450.Request(0xFF, b"y", "enable configuration"), 3)
    assert isinstance(sds, NoReply) and isinstance(ld, NoReply)
    assert not isinstance(ld, sds011.NoReply) and (sds.request.cmd, sds.attempts) == (1, 4)
    assert "after 3 tries" in ld.reason and "RX wired" in ld.reason
    assert sds == sds011.NoReply(sds011.Request(b"x", 1, "work"), 4) and hash(sds)
    with pytest.raises(AttributeError):
        sds.attempts = 5  # type: ignore[misc]
    assert sds011.SDS011Protocol.no_reply_type is sds011.NoReply
    assert ld2450.LD2450Protocol.no_reply_type is ld2450.NoReply


actions = st.lists(st.one_of(
    st.tuples(st.just("send"), st.integers(0, 5) | st.none()),
    st.tuples(st.just("wait"), st.sampled_from([0.0, 0.3, 1.0, 2.5])),
    st.tuples(st.just("reply"), st.sampled_from(["ok", "refuse", "other", "again"])),
), max_size=60)


@settings(max_examples=300, deadline=None)
@given(actions, st.integers(0, 3))
def test_every_command_is_settled_once_and_sent_at_most_one_plus_retries_times(
        steps: list[tuple[str, object]], retries: int) -> None:
    ch = Toy(retries)
    now, sent, made, last = 0.0, Counter[bytes](), 0, b""
    for what, arg in steps:
        if what == "send":
            ch.send(arg, now)  # type: ignore[arg-type]
            made += arg is not None
        elif what == "wait":
            now += arg  # type: ignore[operator]
            ch.tick(now)
        else:
            req = ch._inflight
            n = req.n if req is not None else 9
            raw = {"ok": b"R" + bytes([n]) + b"+", "refuse": b"R" + bytes([n]) + b"-",
                   "other": b"R\x08+", "again": last}[arg]  # type: ignore[index]
            if raw and ch.reply(raw, now) in ("confirmed", "refused"):
                last = raw
        out = ch.data_to_send()
        # One command at a time: what goes out is the command in flight, whole.
        assert out in (b"", getattr(ch._inflight, "raw", None))
        if out:
            sent[out] += 1
        assert ch.busy == (ch._inflight is not None or bool(ch._queue))
    settled = len(ch.done) + len(ch.refused) + len(ch.given_up)
    assert settled + (ch._inflight is not None) + sum(
        1 for step in ch._queue if step() is not None) == made
    assert (ch.confirmed, ch.no_replies) == (len(ch.done), len(ch.given_up))
    assert ch.resends == sum(sent.values()) - (settled + (ch._inflight is not None))
    # Commands with the same number share their bytes: bound the sends per command made.
    per_number = Counter(c.n for c in ch.done + ch.refused + ch.given_up)
    if ch._inflight is not None:
        per_number[ch._inflight.n] += 1
    for raw, times in sent.items():
        assert times <= (1 + retries) * per_number[raw[1]]
