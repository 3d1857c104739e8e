"""One spool, several uplinks: each reader gets every message once it is accepted, in
order, whatever the others do; a row is deleted only when every reader has it; restarts
re-send at most what a reader had above its saved position; the bound is shared."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from agent.wire.spool import EVENT, LANES, TELEMETRY, Spool

READERS = ("main", "mobius", "ha")


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def unread(spool: Spool, reader: int, lane: str) -> list[int]:
    return [m.id for m in spool.iter_ready(lane, limit=10**6, reader=reader)]


def test_a_row_stays_until_every_reader_has_it(tmp_path):
    s = Spool(tmp_path / "s.db", batch_s=0, readers=READERS)
    m = s.put(EVENT, "t", b"alarm")
    for k in range(len(READERS) - 1):
        s.ack(EVENT, m.id, reader=k)
        s.flush()
        assert s.depth() == 1
        assert unread(s, k, EVENT) == []
        assert unread(s, len(READERS) - 1, EVENT) == [m.id]
    s.ack(EVENT, m.id, reader=len(READERS) - 1)
    s.flush()
    assert s.depth() == 0 and s.backlog(0) == s.backlog(2) == 0


def test_a_reader_that_is_down_holds_back_no_other(tmp_path):
    s = Spool(tmp_path / "s.db", batch_s=0, readers=("main", "mobius"))
    sent = [s.put(TELEMETRY, "t", b"%d" % i).id for i in range(50)]
    for i in sent:
        s.ack(TELEMETRY, i, reader=0)
    assert unread(s, 0, TELEMETRY) == [] and s.backlog(0) == 0
    assert unread(s, 1, TELEMETRY) == sent and s.backlog(1) == 50


def test_positions_survive_a_restart_and_new_readers_start_now(tmp_path):
    path = tmp_path / "s.db"
    s = Spool(path, batch_s=0, readers=("main", "mobius"))
    ids = [s.put(TELEMETRY, "t", b"x").id for _ in range(10)]
    for i in ids[:6]:
        s.ack(TELEMETRY, i, reader=0)
    for i in ids[:3]:
        s.ack(TELEMETRY, i, reader=1)
    s.close()
    s = Spool(path, batch_s=0, readers=("main", "mobius", "ha"))
    assert unread(s, 0, TELEMETRY) == ids[6:]
    assert unread(s, 1, TELEMETRY) == ids[3:]
    assert unread(s, 2, TELEMETRY) == []  # added later: from now on
    assert s.depth() == 7  # the first three every reader had: deleted
    n = s.put(TELEMETRY, "t", b"y").id
    assert unread(s, 2, TELEMETRY) == [n]
    s.close()


def test_ids_are_never_given_twice_when_every_reader_had_everything(tmp_path):
    """Every reader had message 1 (never written: it was sent within its batch), the
    positions were saved, the lane is empty: after a restart the next message is 2,
    not a second 1 that every reader would take as had."""
    path = tmp_path / "s.db"
    s = Spool(path, batch_s=1.0, readers=("main", "mobius"))
    m = s.put(TELEMETRY, "t", b"x")
    s.ack(TELEMETRY, m.id, reader=0)
    s.ack(TELEMETRY, m.id, reader=1)
    s.close()
    s = Spool(path, batch_s=1.0, readers=("main", "mobius"))
    n = s.put(TELEMETRY, "t", b"y")
    assert n.id == m.id + 1
    assert unread(s, 0, TELEMETRY) == unread(s, 1, TELEMETRY) == [n.id]
    s.close()


def test_an_uplink_added_to_a_single_uplink_node_gets_its_backlog(tmp_path):
    path = tmp_path / "s.db"
    s = Spool(path, batch_s=0)
    ids = [s.put(EVENT, "t", b"x").id for _ in range(4)]
    s.close()
    s = Spool(path, batch_s=0, readers=("main", "mobius"))
    assert unread(s, 0, EVENT) == ids and unread(s, 1, EVENT) == ids
    s.close()


class Readers(RuleBasedStateMachine):
    """Random puts, acknowledgements in any order per reader, commits, evictions by a
    small bound, and restarts; the model is what each reader still lacks."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.clock = Clock()
        self.accepted: dict[str, list[int]] = {lane: [] for lane in LANES}
        self.got: list[dict[str, set[int]]] = [{lane: set() for lane in LANES}
                                              for _ in READERS]
        self.open()

    def open(self) -> None:
        self.spool = Spool(self.dir / "s.db", batch_s=1.0, max_bytes=64 * 1024,
                           readers=READERS, clock=self.clock)

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(lane=st.sampled_from(LANES), size=st.integers(1, 3000))
    def put(self, lane: str, size: int) -> None:
        m = self.spool.put(lane, "t", b"x" * size)
        self.accepted[lane].append(m.id)

    @rule(k=st.integers(0, len(READERS) - 1), lane=st.sampled_from(LANES),
          pick=st.integers(0, 10**6), n=st.integers(1, 5))
    def ack(self, k: int, lane: str, pick: int, n: int) -> None:
        ready = unread(self.spool, k, lane)
        if not ready:
            return
        for i in ready[pick % len(ready):][:n]:
            self.spool.ack(lane, i, reader=k)
            self.got[k][lane].add(i)

    @rule(dt=st.floats(0, 3))
    def tick(self, dt: float) -> None:
        self.clock.t += dt
        self.spool.maintain()

    @rule()
    def restart(self) -> None:
        """A clean stop: nothing a reader had is sent to it again... except what it had
        above its saved position, which it may get again (at-least-once)."""
        self.spool.close()
        self.open()
        for k in range(len(READERS)):
            for lane in LANES:
                again = set(unread(self.spool, k, lane))
                self.got[k][lane] -= again  # sent again: fine, consumers drop duplicates

    @invariant()
    def every_reader_gets_everything_it_lacks_in_order(self) -> None:
        for k in range(len(READERS)):
            for lane in LANES:
                ready = unread(self.spool, k, lane)
                assert ready == sorted(ready)
                assert not set(ready) & self.got[k][lane]
                # What it lacks and was not evicted is ready for it: nothing lost.
                evicted_below = min(ready) if ready else self.spool.last_id(lane) + 1
                lacking = [i for i in self.accepted[lane]
                           if i not in self.got[k][lane] and i >= evicted_below]
                assert ready == lacking

    @invariant()
    def counts_add_up(self) -> None:
        s = self.spool
        for k in range(len(READERS)):
            assert s.backlog(k) == sum(len(unread(s, k, lane)) for lane in LANES)
        stored = {(lane, i) for k in range(len(READERS)) for lane in LANES
                  for i in unread(s, k, lane)}
        assert s.depth() == len(stored)

    @invariant()
    def the_bound_holds(self) -> None:
        assert self.spool.bytes <= self.spool.max_bytes + 3100


Readers.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
TestReaders = Readers.TestCase
