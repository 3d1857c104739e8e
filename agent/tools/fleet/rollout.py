"""A staged rollout with no I/O: rings of nodes, each node's outcome, the stop rule.

``citynode fleet send`` asks :func:`plan` for the rings, then for each ring hands the
:class:`Ring` what happens (the command was published, the broker refused it, a result
or an update event arrived, time passed) and asks whether the ring is over and whether
its failure rate stops the rollout. The MQTT side is in :mod:`agent.tools.fleet.main`.

A node's outcome is ``ok`` (the result said ``status`` = ``ok``; with ``wait_update``, the
node then reported the update ``confirmed``), or a failure: ``error`` (the result said
``error``: refused, bad signature, failed...), ``timeout`` (no result, or no update
outcome, in time), ``refused`` (the broker refused the publish), ``nokey`` (no key to
sign for it), or ``update`` (rolled back, failed, refused). A ring's failure rate is its
failures over its nodes; above ``max_failure_rate`` the rollout stops after that ring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.tools.fleet.model import UPDATE_OUTCOMES, clean, update_reason

#: The rings when none are given: one node, then ten, then a hundred at a time.
DEFAULT_RINGS = (1, 10, 100)
#: Most rings ``--ring`` may list.
MAX_RINGS = 32


def plan(nodes: Sequence[str], sizes: Sequence[int]) -> list[list[str]]:
    """Split ``nodes`` (in order) into rings of ``sizes``; after the listed sizes, further
    rings of the last size until every node has one."""
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError("ring sizes must be 1 or more")
    rings: list[list[str]] = []
    at, i = 0, 0
    while at < len(nodes):
        size = sizes[min(i, len(sizes) - 1)]
        rings.append(list(nodes[at:at + size]))
        at += size
        i += 1
    return rings


@dataclass(slots=True)
class Outcome:
    """One node's part in a ring."""

    node: str
    command_id: str = ""
    state: str = "pending"  # pending, sent, updating, ok, error, timeout, refused, nokey, update
    detail: str = ""
    sent_at: float | None = None
    done_at: float | None = None
    accepted_at: float | None = None  # result ok while waiting for the update outcome
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.state not in ("pending", "sent", "updating")

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    def doc(self) -> dict[str, Any]:
        return {"node": self.node, "id": self.command_id or None, "outcome": self.state,
                "ok": self.ok, "detail": self.detail or None,
                "elapsed_s": None if self.sent_at is None or self.done_at is None
                else round(self.done_at - self.sent_at, 2),
                "data": self.data or None}


class Ring:
    """One ring of a rollout: its nodes' outcomes as results and events come in."""

    def __init__(self, index: int, nodes: Sequence[str], *, timeout_s: float,
                 wait_update: bool = False, update_timeout_s: float = 0.0,
                 target_version: str = "") -> None:
        self.index = index
        self.outcomes = {n: Outcome(n) for n in nodes}
        self.timeout_s = timeout_s
        self.wait_update = wait_update
        self.update_timeout_s = update_timeout_s
        self.target_version = target_version
        self._by_id: dict[tuple[str, str], Outcome] = {}

    # -- what happens ---------------------------------------------------------------------
    def sent(self, node: str, command_id: str, now: float) -> None:
        o = self.outcomes[node]
        o.command_id, o.state, o.sent_at = command_id, "sent", now
        self._by_id[(node, command_id)] = o

    def fail(self, node: str, state: str, detail: str, now: float) -> None:
        """A failure known before or without a result (no key, the broker refused)."""
        o = self.outcomes[node]
        if not o.final:
            o.state, o.detail, o.done_at = state, clean(detail, 200), now
            o.sent_at = o.sent_at if o.sent_at is not None else now

    def result(self, node: str, records: dict[str, Any], now: float) -> bool:
        """A result pack's records from ``node``; True when it answered our command."""
        ident = records.get("id")
        o = self._by_id.get((node, ident)) if isinstance(ident, str) else None
        if o is None or o.state != "sent":
            return False
        if records.get("status") == "ok":
            o.data = {k: v for k, v in records.items()
                      if k not in ("id", "cmd", "status") and isinstance(v, str | int | float)}
            o.data = {k: clean(v, 200) if isinstance(v, str) else
                      int(v) if isinstance(v, float) and v.is_integer() and abs(v) < 2**53
                      else v for k, v in list(o.data.items())[:8]}
            if self.wait_update:
                o.state, o.accepted_at = "updating", now
                o.detail = "accepted; waiting for the update's outcome"
                return True
            o.state, o.done_at = "ok", now
            return True
        err = records.get("error")
        o.state, o.done_at = "error", now
        o.detail = clean(err if isinstance(err, str) else "error", 200)
        return True

    def event(self, node: str, records: dict[str, Any], now: float, *,
              historical: bool = False) -> bool:
        """An event from ``node``: with ``wait_update``, its update phase; True when it
        ended (or advanced) that node's update."""
        o = self.outcomes.get(node)
        phase = records.get("update")
        if (o is None or historical or not isinstance(phase, str)
                or o.state not in ("sent", "updating")):
            return False
        if not self.wait_update:
            return False
        version = records.get("version")
        if self.target_version and isinstance(version, str) and version != self.target_version:
            return False  # another update's news
        ident = records.get("id")
        if isinstance(ident, str) and ident != o.command_id:
            return False
        if o.state == "sent":  # the event came before the result: accepted all the same
            o.accepted_at = now
        reason = update_reason(records)
        if phase == UPDATE_OUTCOMES[0]:
            o.state, o.done_at, o.detail = "ok", now, "confirmed"
        elif phase in UPDATE_OUTCOMES:
            o.state, o.done_at = "update", now
            o.detail = clean(phase + (f": {reason}" if reason else ""), 200)
        else:
            o.state = "updating"
            o.detail = clean(phase + (f" ({reason})" if reason else ""), 200)
        return True

    def tick(self, now: float) -> None:
        """Time out what waited too long."""
        for o in self.outcomes.values():
            if o.state == "sent" and o.sent_at is not None and now - o.sent_at > self.timeout_s:
                o.state, o.done_at = "timeout", now
                o.detail = f"no result within {self.timeout_s:g} s"
            elif (o.state == "updating" and o.accepted_at is not None
                  and now - o.accepted_at > self.update_timeout_s):
                o.state, o.done_at = "timeout", now
                o.detail = (f"no update outcome within {self.update_timeout_s:g} s "
                            f"(last: {o.detail})")

    # -- what it means --------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return all(o.final for o in self.outcomes.values())

    def deadline(self) -> float:
        """The latest time anything of this ring can still be waited for."""
        times = []
        for o in self.outcomes.values():
            if o.state == "sent" and o.sent_at is not None:
                times.append(o.sent_at + self.timeout_s)
            elif o.state == "updating" and o.accepted_at is not None:
                times.append(o.accepted_at + self.update_timeout_s)
        return max(times, default=-math.inf)

    @property
    def failures(self) -> int:
        return sum(1 for o in self.outcomes.values() if o.final and not o.ok)

    @property
    def failure_rate(self) -> float:
        return self.failures / len(self.outcomes) if self.outcomes else 0.0

    def doc(self, max_failure_rate: float) -> dict[str, Any]:
        n = len(self.outcomes)
        return {"ring": self.index, "nodes": n, "ok": n - self.failures,
                "failed": self.failures, "failure_rate": round(self.failure_rate, 4),
                "stopped": self.failure_rate > max_failure_rate,
                "outcomes": [o.doc() for o in self.outcomes.values()]}
