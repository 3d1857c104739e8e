"""The durable store-and-forward spool: nothing accepted is lost, alarms go first.

Every message is written to SQLite (WAL mode, fsync'd commits) before it becomes
eligible to send, and deleted only after the broker's PUBACK. Two lanes, two
tables: ``event`` (events and alarms: committed and synced at once, never
evicted unless events alone exceed the bound) and ``telemetry`` (commits batched
every ``batch_s`` to spare the SD card; the oldest evicted first when the spool
is full, every eviction counted). Each row keeps the payload's content type and its
format's historical mark (:mod:`agent.wire.formats`), so a backlog is marked as such
without decoding it.

Why these choices (docs/spool.md has the measurements):

* one rowid table per lane and no secondary index, so an insert dirties one page;
* 1 KiB pages, so a commit writes about 1 KiB of WAL instead of 4;
* acknowledgements are deleted in the next commit that happens anyway, or after
  ``ack_flush_s``: a crash in between only re-sends what the broker already has,
  which consumers drop by (boot session, sequence);
* a store that cannot be opened or fails its integrity check is moved aside
  (``spool.db.corrupt-<time>``) and a new one started: it never blocks start-up.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("citynode.spool")

EVENT, TELEMETRY = "event", "telemetry"
LANES = (EVENT, TELEMETRY)  # drain order
_SCHEMA = """
CREATE TABLE IF NOT EXISTS {lane} (
    id INTEGER PRIMARY KEY,
    created REAL NOT NULL,
    topic TEXT NOT NULL,
    retain INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    payload BLOB NOT NULL,
    mark INTEGER
);
"""
#: Added after the first release: where the format marks a pack historical (NULL: it
#: decodes). Stores created before it get the column when opened.
_MARK = "ALTER TABLE {lane} ADD COLUMN mark INTEGER"
_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
ROW_OVERHEAD = 48  # bytes per row beyond topic and payload, for the size bound
ACK_BATCH_MAX = 1000  # acknowledged ids held before their deletion is committed


@dataclass(slots=True)
class Spooled:
    """A message as the spool keeps it."""

    lane: str
    id: int
    created: float  # Unix time the message was accepted
    topic: str
    payload: bytes
    retain: bool = False
    content_type: str = ""
    mark: int | None = None  # the format's historical marker position (agent.wire.formats)

    @property
    def key(self) -> tuple[str, int]:
        return (self.lane, self.id)

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic) + ROW_OVERHEAD


class SpoolError(Exception):
    """The spool could not store a message even after evicting (disk full)."""


class Spool:
    """Thread-safe durable queue with an event lane and a telemetry lane."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 32 * 1024**2,
        batch_s: float = 1.0,
        ack_flush_s: float = 60.0,
        memory_limit: int = 1000,
        send_uncommitted: bool = True,
        clock=time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.batch_s = batch_s
        self.ack_flush_s = ack_flush_s
        self.memory_limit = memory_limit
        self.send_uncommitted = send_uncommitted
        self._clock = clock
        self._lock = threading.RLock()
        self.quarantined: Path | None = None
        #: Set whenever messages become eligible to send: the uplink sleeps on it.
        self.ready = threading.Event()
        self.disk_full = False
        # Not yet committed (telemetry batch, or anything while the disk is full).
        self._pending: list[Spooled] = []
        self._pending_since: float | None = None
        # Acknowledged but not yet deleted on disk.
        self._acked: dict[str, set[int]] = {lane: set() for lane in LANES}
        self._acked_since: float | None = None
        self._next_id: dict[str, int] = {}
        self._db = self._open()
        self.counts = {lane: 0 for lane in LANES}
        self.bytes = 0
        self.evicted = {lane: 0 for lane in LANES}
        self.commits = 0
        self._load_state()

    # -- opening, quarantine -----------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=5.0)
        db.execute("PRAGMA page_size = 1024")
        # Exclusive before WAL: the wal-index then lives in this process's memory, not
        # in a memory-mapped -shm file whose 4 KiB pages the kernel would write back
        # after every commit (60 % of the spool's writes to the card, measured).
        db.execute("PRAGMA locking_mode = EXCLUSIVE")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA wal_autocheckpoint = 256")
        db.execute("PRAGMA journal_size_limit = 262144")
        # 512 KiB of page cache, not SQLite's default 2 MiB: the spool appends and reads
        # its oldest rows, so a big cache buys nothing, and the node's memory is budgeted
        # (45 MiB in all; the drain and memory figures are in docs/spool.md)
        db.execute("PRAGMA cache_size = -512")
        for lane in LANES:
            db.execute(_SCHEMA.format(lane=lane))
            columns = {row[1] for row in db.execute(f"PRAGMA table_info({lane})")}
            if "mark" not in columns:  # written by an older version: rows keep NULL
                db.execute(_MARK.format(lane=lane))
        db.execute(_META)
        db.execute("BEGIN IMMEDIATE")  # take the lock now: one daemon per spool
        db.execute("COMMIT")
        row = db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {row}")
        return db

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._connect()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                # Healthy but in use: another citynode runs on this state directory.
                raise SpoolError(f"spool {self.path} is in use by another process") from exc
            return self._quarantine(exc)
        except sqlite3.DatabaseError as exc:
            return self._quarantine(exc)

    def _quarantine(self, exc: Exception) -> sqlite3.Connection:
        """Move an unusable store aside and start a new one: never block start-up."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, f"{target}{suffix}")
        self.quarantined = target
        log.error("spool %s is unusable (%s): moved to %s, starting a new one", self.path,
                  exc, target, extra={"EVENT": "spool_quarantined"})
        return self._connect()

    def _load_state(self) -> None:
        for lane in LANES:
            n, size, top = self._db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0), "
                f"COALESCE(MAX(id), 0) FROM {lane}").fetchone()
            self.counts[lane] = n
            self.bytes += size + n * ROW_OVERHEAD
            self._next_id[lane] = top + 1
        for key, value in self._db.execute("SELECT key, value FROM meta"):
            lane = key.removeprefix("evicted_")
            if lane in self.evicted:
                self.evicted[lane] = value

    # -- writing -------------------------------------------------------------------
    def put(self, lane: str, topic: str, payload: bytes, *, retain: bool = False,
            content_type: str = "", created: float | None = None,
            mark: int | None = None) -> Spooled:
        """Accept a message. Events are on disk when this returns; telemetry within batch_s
        (unless the broker has acknowledged it by then)."""
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}")
        with self._lock:
            msg = Spooled(lane, self._next_id[lane], time.time() if created is None else created,
                          topic, payload, retain, content_type, mark)
            self._next_id[lane] += 1
            self._pending.append(msg)
            self.counts[lane] += 1
            self.bytes += msg.size
            if self._pending_since is None:
                self._pending_since = self._clock()
            if lane == EVENT or self.batch_s == 0:
                self._commit()
            self.ready.set()
            return msg

    def maintain(self) -> None:
        """Commit a due telemetry batch or deferred deletions; call about once a second."""
        with self._lock:
            now = self._clock()
            due = self._pending_since is not None and now - self._pending_since >= self.batch_s
            acks_due = self._acked_since is not None and now - self._acked_since >= self.ack_flush_s
            if due or acks_due:
                self._commit()

    def flush(self) -> None:
        """Commit everything now (at shutdown)."""
        with self._lock:
            self._commit()

    def _commit(self) -> None:
        if not self._pending and not any(self._acked.values()):
            self._pending_since = self._acked_since = None
            return
        self._evict_if_needed()
        pending, acked = self._pending, {k: set(v) for k, v in self._acked.items()}
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for lane, ids in acked.items():
                if ids:
                    self._db.executemany(f"DELETE FROM {lane} WHERE id = ?",
                                         [(i,) for i in ids])
            for lane in LANES:
                rows = [(m.id, m.created, m.topic, int(m.retain), m.content_type, m.payload,
                         m.mark) for m in pending if m.lane == lane]
                if rows:
                    self._db.executemany(
                        f"INSERT INTO {lane} (id, created, topic, retain, content_type, payload,"
                        " mark) VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback()
            self._on_write_error(exc)
            return
        self.commits += 1
        if pending:
            self.ready.set()
        self._pending = []
        self._pending_since = None
        for lane, ids in acked.items():
            self._acked[lane] -= ids
        self._acked_since = None
        if self.disk_full:
            self.disk_full = False
            log.warning("spool writable again: %d message(s) committed", len(pending),
                        extra={"EVENT": "spool_recovered"})

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def _on_write_error(self, exc: sqlite3.OperationalError) -> None:
        """Disk full or I/O error: keep accepting in memory (bounded), evict, retry later."""
        if not self.disk_full:
            self.disk_full = True
            log.error("spool cannot write (%s): keeping up to %d messages in memory and "
                      "evicting old telemetry", exc, self.memory_limit,
                      extra={"EVENT": "spool_write_error"})
        self._evict_oldest(TELEMETRY, max(1, self.counts[TELEMETRY] // 10), on_disk_only=True)
        # Bound what waits in memory: drop the oldest pending telemetry first.
        while len(self._pending) > self.memory_limit:
            idx = next((i for i, m in enumerate(self._pending) if m.lane == TELEMETRY), 0)
            self._forget(self._pending.pop(idx))

    # -- bounding ------------------------------------------------------------------
    def _forget(self, m: Spooled) -> None:
        self.counts[m.lane] -= 1
        self.bytes -= m.size
        self.evicted[m.lane] += 1

    def _evict_if_needed(self) -> None:
        if self.bytes <= self.max_bytes:
            return
        target = int(self.max_bytes * 0.9)
        for lane in (TELEMETRY, EVENT):
            while self.bytes > target and self.counts[lane] > 0:
                if lane == EVENT and self.counts[TELEMETRY]:
                    break
                before = self.bytes
                per_row = max(1, self.bytes // max(1, sum(self.counts.values())))
                self._evict_oldest(lane, max(64, (self.bytes - target) // per_row + 1))
                if self.bytes == before:
                    break
        log.warning("spool over %d bytes: evicted, totals now %s", self.max_bytes,
                    self.evicted, extra={"EVENT": "spool_evicted"})

    def _evict_oldest(self, lane: str, n: int, on_disk_only: bool = False) -> None:
        """Delete the ``n`` oldest rows of a lane in one statement (one fsync, not n)."""
        rows = self._db.execute(
            f"SELECT id, LENGTH(payload) + LENGTH(topic) FROM {lane} ORDER BY id LIMIT ?",
            (n,)).fetchall()
        if not rows:
            if not on_disk_only:
                # Only not-yet-committed messages remain: drop the oldest of those.
                keep, dropped = [], 0
                for m in self._pending:
                    if m.lane == lane and dropped < n:
                        self._forget(m)
                        dropped += 1
                    else:
                        keep.append(m)
                self._pending = keep
            return
        top = rows[-1][0]
        acked = self._acked[lane]
        victims = [size for i, size in rows if i not in acked]  # acked ones are counted out
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(f"DELETE FROM {lane} WHERE id <= ?", (top,))
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                "SET value = excluded.value",
                (f"evicted_{lane}", self.evicted[lane] + len(victims)))
            self._db.execute("COMMIT")
        except sqlite3.OperationalError:
            self._rollback()
            return
        self._acked[lane] = {i for i in acked if i > top}
        self.counts[lane] -= len(victims)
        self.bytes -= sum(victims) + len(victims) * ROW_OVERHEAD
        self.evicted[lane] += len(victims)

    # -- reading and acknowledging ---------------------------------------------------
    def iter_ready(self, lane: str, after: int = 0, limit: int = 100) -> list[Spooled]:
        """Messages of a lane with id > after, oldest first, not yet acknowledged.

        Committed messages are ready. So is telemetry still in its batch window when
        ``send_uncommitted`` is on (the default): if the broker acknowledges it
        within the window it is never written at all, and a crash inside the window
        would lose it either way, so nothing is exposed that strict ordering would
        protect; at one report a minute this removes nearly every write to the card.
        While the disk is full, everything in memory is ready: sending it beats
        holding an alarm back.
        """
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, created, topic, retain, content_type, payload, mark FROM {lane} "
                "WHERE id > ? ORDER BY id LIMIT ?", (after, limit)).fetchall()
            acked = self._acked[lane]
            out = [Spooled(lane, i, c, t, p, bool(r), ct, mk)
                   for i, c, t, r, ct, p, mk in rows if i not in acked]
            early = self.disk_full or (self.send_uncommitted and lane == TELEMETRY)
            if early and len(out) < limit:
                out += [m for m in self._pending if m.lane == lane and m.id > after]
            return out[:limit]

    def ack(self, lane: str, msg_id: int) -> None:
        """The broker has the message: delete it in the next commit."""
        with self._lock:
            if msg_id in self._acked[lane]:
                return
            for m in self._pending:
                if m.lane == lane and m.id == msg_id:  # sent before its commit: never written
                    self._pending.remove(m)
                    if not self._pending:
                        self._pending_since = None
                    self.counts[lane] -= 1
                    self.bytes -= m.size
                    return
            row = self._db.execute(f"SELECT LENGTH(payload) + LENGTH(topic) FROM {lane} "
                                   "WHERE id = ?", (msg_id,)).fetchone()
            if row is None:
                return  # evicted while in flight: already counted out
            self._acked[lane].add(msg_id)
            self.counts[lane] -= 1
            self.bytes -= row[0] + ROW_OVERHEAD
            if self._acked_since is None:
                self._acked_since = self._clock()
            if len(self._acked[lane]) >= ACK_BATCH_MAX:
                self._commit()  # a fast drain: keep memory and re-sends after a crash bounded

    # -- status ----------------------------------------------------------------------
    def depth(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "depth": sum(self.counts.values()),
                "events": self.counts[EVENT],
                "telemetry": self.counts[TELEMETRY],
                "bytes": self.bytes,
                "evicted_events": self.evicted[EVENT],
                "evicted_telemetry": self.evicted[TELEMETRY],
                "disk_full": int(self.disk_full),
            }

    def close(self) -> None:
        with self._lock:
            self._commit()
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()
