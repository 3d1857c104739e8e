"""The durable spool: order per lane, batching, crash safety, bounds, corruption, a full disk."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.wire.spool import EVENT, TELEMETRY, Spool

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def ids(spool: Spool, lane: str) -> list[int]:
    return [m.id for m in spool.iter_ready(lane, limit=10_000)]


def test_telemetry_acknowledged_within_its_batch_is_never_written(tmp_path):
    clock = Clock()
    s = Spool(tmp_path / "s.db", batch_s=1.0, clock=clock)  # send_uncommitted by default
    for _ in range(10):
        clock.t += 60
        m = s.put(TELEMETRY, "t", b"x" * 100)
        assert [x.id for x in s.iter_ready(TELEMETRY)] == [m.id]  # eligible at once
        s.ack(TELEMETRY, m.id)  # the broker has it
        clock.t += 1
        s.maintain()
    assert s.commits == 0 and s.depth() == 0
    # Not acknowledged in time (broker away): committed at the end of the window.
    s.put(TELEMETRY, "t", b"y")
    clock.t += 1.1
    s.maintain()
    assert s.commits == 1
    s.close()
    s = Spool(tmp_path / "s.db")
    assert [m.payload for m in s.iter_ready(TELEMETRY)] == [b"y"]
    s.close()


def test_strict_mode_events_at_once_telemetry_in_batches(tmp_path):
    clock = Clock()
    s = Spool(tmp_path / "s.db", batch_s=1.0, clock=clock, send_uncommitted=False)
    s.put(TELEMETRY, "t", b"1")
    s.put(TELEMETRY, "t", b"2")
    assert ids(s, TELEMETRY) == []  # not yet on disk, so not yet eligible
    assert s.depth() == 2  # but accepted and counted
    clock.t += 0.5
    s.maintain()
    assert ids(s, TELEMETRY) == []
    clock.t += 0.6
    s.maintain()
    assert ids(s, TELEMETRY) == [1, 2]
    s.put(EVENT, "e", b"alarm")
    assert ids(s, EVENT) == [1]  # committed (and fsync'd) before put() returned
    s.close()


def test_order_ack_and_restart(tmp_path):
    s = Spool(tmp_path / "s.db", batch_s=0)
    for i in range(5):
        s.put(TELEMETRY, f"t/{i}", bytes([i]))
    got = s.iter_ready(TELEMETRY)
    assert [m.topic for m in got] == [f"t/{i}" for i in range(5)]
    s.ack(TELEMETRY, 1)
    s.ack(TELEMETRY, 2)
    assert ids(s, TELEMETRY) == [3, 4, 5]  # acknowledged ones are never handed out again
    assert [m.id for m in s.iter_ready(TELEMETRY, after=3)] == [4, 5]
    s.close()
    s = Spool(tmp_path / "s.db")
    assert ids(s, TELEMETRY) == [3, 4, 5] and s.depth() == 3
    s.put(TELEMETRY, "t/5", b"x")
    s.flush()
    assert ids(s, TELEMETRY)[-1] == 6  # ids keep growing after a restart
    s.close()


def test_the_historical_mark_is_kept_with_each_row(tmp_path):
    s = Spool(tmp_path / "s.db", batch_s=1.0, clock=Clock())
    s.put(EVENT, "e", b"event", content_type="application/senml+cbor", mark=19)
    s.put(TELEMETRY, "t", b"pending", mark=7)  # in the batch window, not yet on disk
    s.put(TELEMETRY, "t", b"unmarked")
    assert [(m.payload, m.mark) for m in s.iter_ready(TELEMETRY)] == [
        (b"pending", 7), (b"unmarked", None)]
    s.close()
    s = Spool(tmp_path / "s.db")
    assert [(m.content_type, m.mark) for m in s.iter_ready(EVENT)] == [
        ("application/senml+cbor", 19)]
    assert [(m.payload, m.mark) for m in s.iter_ready(TELEMETRY)] == [
        (b"pending", 7), (b"unmarked", None)]
    s.close()


OLD_SCHEMA = """
CREATE TABLE {lane} (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    topic TEXT NOT NULL,
    retain INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    payload BLOB NOT NULL
);
"""


def test_a_spool_of_an_older_version_opens_and_drains(tmp_path):
    """Stores written before the mark column: nothing accepted is lost across an upgrade."""
    path = tmp_path / "s.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode = WAL")
    for lane in (EVENT, TELEMETRY):
        db.execute(OLD_SCHEMA.format(lane=lane))
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute("INSERT INTO meta VALUES ('evicted_telemetry', 4)")
    db.executemany("INSERT INTO telemetry VALUES (?, ?, ?, 0, 'application/senml+cbor', ?)",
                   [(i, 1000.0 + i, f"t/{i}", bytes([i])) for i in range(1, 4)])
    db.execute("INSERT INTO event VALUES (1, 999.0, 'e', 1, '', x'ff')")
    db.commit()
    db.close()
    s = Spool(path, batch_s=0)
    assert s.quarantined is None and s.depth() == 4 and s.evicted[TELEMETRY] == 4
    old = s.iter_ready(EVENT) + s.iter_ready(TELEMETRY)
    assert [(m.topic, m.payload, m.retain, m.mark) for m in old] == [
        ("e", b"\xff", True, None), ("t/1", b"\x01", False, None),
        ("t/2", b"\x02", False, None), ("t/3", b"\x03", False, None)]
    s.put(TELEMETRY, "t/4", b"\x04", mark=3)  # new rows beside the old ones
    for m in old:
        s.ack(m.lane, m.id)
    assert [(m.id, m.mark) for m in s.iter_ready(TELEMETRY)] == [(4, 3)]
    s.close()
    s = Spool(path)  # the upgraded store opens again as it is
    assert [(m.id, m.mark) for m in s.iter_ready(TELEMETRY)] == [(4, 3)]
    assert s.depth() == 1
    s.close()


def test_acks_deleted_in_the_next_commit_or_after_ack_flush(tmp_path):
    clock = Clock()
    s = Spool(tmp_path / "s.db", batch_s=1.0, ack_flush_s=30, clock=clock)
    s.put(EVENT, "e", b"1")
    commits = s.commits
    s.ack(EVENT, 1)
    s.maintain()
    assert s.commits == commits  # deletion deferred: saves a write
    clock.t += 31
    s.maintain()
    assert s.commits == commits + 1
    s.close()


CRASHER = """
import os, sys
sys.path.insert(0, {root!r})
from agent.wire.spool import Spool, EVENT, TELEMETRY
s = Spool({path!r}, batch_s=0.0)
for i in range(20):
    s.put(TELEMETRY, "t", str(i).encode())
s.put(EVENT, "e", b"alarm")
s.ack(TELEMETRY, 1)
os._exit(0)   # no close, no checkpoint: like SIGKILL
"""


def test_survives_a_crash_without_close(tmp_path):
    path = tmp_path / "s.db"
    subprocess.run([sys.executable, "-c", CRASHER.format(root=str(ROOT), path=str(path))],
                   check=True, timeout=30)
    s = Spool(path)
    assert s.quarantined is None
    assert ids(s, EVENT) == [1]
    # Everything accepted is there; the unflushed ack only means one duplicate.
    assert ids(s, TELEMETRY) == list(range(1, 21))
    s.close()


def test_corrupt_store_is_quarantined_not_fatal(tmp_path):
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not sqlite" * 100)
    s = Spool(path)
    assert s.quarantined is not None and s.quarantined.exists()
    s.put(EVENT, "e", b"x")
    assert ids(s, EVENT) == [1]
    s.close()


def test_truncated_store_is_quarantined(tmp_path):
    path = tmp_path / "s.db"
    s = Spool(path, batch_s=0)
    for _i in range(200):
        s.put(TELEMETRY, "t", os.urandom(100))
    s.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    s = Spool(path)
    assert s.quarantined is not None
    s.close()


def test_full_spool_evicts_oldest_telemetry_never_events(tmp_path):
    s = Spool(tmp_path / "s.db", max_bytes=64 * 1024, batch_s=0)
    for _ in range(5):
        s.put(EVENT, "e", b"E" * 200)
    for i in range(2000):
        s.put(TELEMETRY, "t", i.to_bytes(4, "big") + b"T" * 200)
    st = s.stats()
    assert st["bytes"] <= 64 * 1024
    assert st["events"] == 5 and st["evicted_events"] == 0
    assert st["evicted_telemetry"] > 0
    left = s.iter_ready(TELEMETRY, limit=10_000)
    # The newest telemetry is what stays.
    assert int.from_bytes(left[-1].payload[:4], "big") == 1999
    assert len(left) + st["evicted_telemetry"] == 2000
    s.close()
    s = Spool(tmp_path / "s.db", max_bytes=64 * 1024)
    assert s.stats()["evicted_telemetry"] == st["evicted_telemetry"]  # counted durably
    s.close()


def test_events_evicted_only_when_events_alone_exceed(tmp_path):
    s = Spool(tmp_path / "s.db", max_bytes=64 * 1024, batch_s=0)
    for i in range(600):
        s.put(EVENT, "e", i.to_bytes(4, "big") + b"E" * 200)
    st = s.stats()
    assert st["evicted_events"] > 0 and st["bytes"] <= 64 * 1024
    assert int.from_bytes(s.iter_ready(EVENT, limit=10_000)[-1].payload[:4], "big") == 599
    s.close()


@pytest.fixture
def tiny_fs(tmp_path):
    """A 200 KiB tmpfs: the disk-full case for real (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount tmpfs: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_keeps_accepting_and_sending(tiny_fs):
    s = Spool(tiny_fs / "s.db", max_bytes=10 * 1024**2, batch_s=0, memory_limit=500)
    filler = tiny_fs / "filler"
    with open(filler, "wb", buffering=0) as f:  # someone else fills the disk
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass
    for i in range(300):
        s.put(TELEMETRY, "t", i.to_bytes(4, "big") + b"T" * 100)
    s.put(EVENT, "e", b"alarm")
    assert s.disk_full
    # The alarm is not lost and is still eligible to send (from memory).
    assert [m.payload for m in s.iter_ready(EVENT)] == [b"alarm"]
    for m in s.iter_ready(EVENT):
        s.ack(EVENT, m.id)
    filler.unlink()
    s.put(EVENT, "e", b"after")
    assert not s.disk_full
    assert [m.payload for m in s.iter_ready(EVENT)] == [b"after"]
    s.close()


# -- item 12 of issue 14: bounded duplicates, exact eviction, reading past acknowledgements --
def crash(s: Spool) -> None:
    """Like SIGKILL: what is committed stays, what waits in memory (a telemetry batch,
    acknowledgements not yet deleted) is gone."""
    s._db.close()


def test_acknowledged_rows_are_deleted_within_batch_s(tmp_path):
    """A kill re-sends only what was acknowledged in the last batch window, not the last
    minute (the old default deferred deletions up to 60 s)."""
    clock = Clock()
    s = Spool(tmp_path / "s.db", batch_s=1.0, clock=clock)
    for i in range(5):
        s.put(EVENT, "e", bytes([i]))
    for m in s.iter_ready(EVENT):
        s.ack(EVENT, m.id)
    commits = s.commits
    s.maintain()
    assert s.commits == commits  # not at once: it rides with a commit within the window
    clock.t += 1.0
    s.maintain()
    assert s.commits == commits + 1
    crash(s)
    s = Spool(tmp_path / "s.db")
    assert ids(s, EVENT) == [] and s.depth() == 0  # nothing to send again
    s.close()


def test_batch_s_zero_deletes_at_the_next_maintain_not_one_commit_per_ack(tmp_path):
    s = Spool(tmp_path / "s.db", batch_s=0)
    for i in range(50):
        s.put(TELEMETRY, "t", bytes([i]))
    commits = s.commits
    for m in s.iter_ready(TELEMETRY):
        s.ack(TELEMETRY, m.id)
    assert s.commits == commits
    s.maintain()
    assert s.commits == commits + 1 and ids(s, TELEMETRY) == []
    s.close()


def test_reading_goes_past_acknowledged_rows_awaiting_deletion(tmp_path):
    """After a reconnect the uplink reads from the start; a read-ahead batch made only of
    acknowledged rows must not make the lane look empty."""
    s = Spool(tmp_path / "s.db", batch_s=5.0, clock=Clock())
    for i in range(100):
        s.put(EVENT, "e", bytes([i]))
    for i in range(1, 61):
        s.ack(EVENT, i)
    assert [m.id for m in s.iter_ready(EVENT, limit=32)] == list(range(61, 93))
    assert [m.id for m in s.iter_ready(EVENT, 0, limit=10, upto=65)] == list(range(61, 66))
    assert s.last_id(EVENT) == 100 and s.last_id(TELEMETRY) == 0
    s.close()


def test_one_eviction_round_stops_at_ninety_percent(tmp_path):
    """A small spool and big rows: the old minimum of 64 rows a round emptied the whole
    telemetry backlog at once."""
    row = 1000
    s = Spool(tmp_path / "s.db", max_bytes=64 * 1024, batch_s=0)
    size = row + 1 + 48  # payload + topic + ROW_OVERHEAD
    fits = s.max_bytes // size
    for i in range(fits):
        s.put(TELEMETRY, "t", i.to_bytes(4, "big") + b"T" * (row - 4))
    assert s.evicted[TELEMETRY] == 0
    s.put(TELEMETRY, "t", fits.to_bytes(4, "big") + b"T" * (row - 4))  # one over the bound
    target = int(s.max_bytes * 0.9)
    assert target - size < s.bytes <= target
    assert s.evicted[TELEMETRY] == (fits + 1) - s.counts[TELEMETRY]
    assert s.counts[TELEMETRY] >= fits * 0.85  # about a tenth went, not the backlog
    left = s.iter_ready(TELEMETRY, limit=10_000)
    assert int.from_bytes(left[0].payload[:4], "big") == s.evicted[TELEMETRY]  # the oldest
    s.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(max_kib=st.integers(64, 96),
       puts=st.lists(st.tuples(st.sampled_from([EVENT, TELEMETRY, TELEMETRY]),
                               st.integers(1, 6000)), min_size=40, max_size=200))
def test_eviction_takes_the_shortest_run_of_oldest_rows(tmp_path, max_kib, puts):
    """Against a model: after every commit the counted size is within the bound, and an
    eviction removed the oldest telemetry (events only when no telemetry is left), no
    more rows than needed to get back to 90 %."""
    path = tmp_path / f"evict-{uuid.uuid4().hex}.db"
    s = Spool(path, max_bytes=max_kib * 1024, batch_s=0)
    model: dict[str, list[int]] = {EVENT: [], TELEMETRY: []}
    target = int(s.max_bytes * 0.9)
    try:
        for lane, n in puts:
            before = dict(s.evicted)
            s.put(lane, "t", b"x" * n)
            model[lane].append(n + 1 + 48)
            gone = {k: s.evicted[k] - before[k] for k in model}
            last = 0
            for k in (TELEMETRY, EVENT):
                if gone[k]:
                    assert k == TELEMETRY or not model[TELEMETRY]
                    last = model[k][gone[k] - 1]
                    del model[k][:gone[k]]
            assert s.bytes == sum(model[EVENT]) + sum(model[TELEMETRY])
            assert s.counts == {k: len(v) for k, v in model.items()}
            assert s.bytes <= s.max_bytes
            if last:
                assert s.bytes <= target < s.bytes + last  # not a row more than needed
    finally:
        s.close()
