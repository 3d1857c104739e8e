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
* a commit takes everything accepted so far, in the order it was accepted (an event
  takes the telemetry batch before it along), so the disk always holds everything
  accepted up to some point: a crash never keeps a message and loses one accepted
  before it, and the uplink sends nothing of a connection before what came earlier
  is on disk or on the wire (docs/spool.md section 1: no gap in ``q``);
* acknowledgements are deleted in the next commit that happens anyway, at the latest
  ``batch_s`` after the acknowledgement: a crash in between re-sends only what the
  broker took in that window, which consumers drop by (boot session, sequence);
* eviction removes the oldest rows until the counted size is back at 90 % of the
  bound, not a row more, in statements of at most ``EVICT_ROWS`` rows;
* several uplinks read one spool, each with its own delivery position (*readers*): a
  message is kept once and deleted when every reader has it. A reader's position is
  the id below which it has everything (plus what it has above, in memory); with more
  than one reader the positions are saved with the commits that happen anyway, so a
  crash makes a reader send again at most what it had above its position (consumers
  drop duplicates by boot session and sequence). A reader that is down holds rows back
  from deletion, never another reader; the size bound and eviction are shared;
* a store that is corrupt (not a database, malformed, fails its integrity check) is
  moved aside (``spool.db.corrupt-<time>``) and a new one started: it never blocks
  start-up. A location that cannot hold a store (a directory, a read-only file system,
  no permission, a parent that cannot be created) is not corruption: nothing is moved
  and :class:`SpoolLocationError` says why (the daemon exits 78, EX_CONFIG).
"""

from __future__ import annotations

import errno
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
    mark INTEGER,
    kind TEXT
);
"""
#: Added after the first release: where the format marks a pack historical (NULL: it
#: decodes). Stores created before it get the column when opened.
_MARK = "ALTER TABLE {lane} ADD COLUMN mark INTEGER"
#: Added with several uplinks: what the message is (telemetry, alarm...), so a platform's
#: session need not guess it from the topic. NULL in older rows: the topic's leaf tells.
_KIND = "ALTER TABLE {lane} ADD COLUMN kind TEXT"
_META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
_POS = "pos:{reader}:{lane}"  # meta key of a reader's saved position
ROW_OVERHEAD = 48  # bytes per row beyond topic and payload, for the size bound
ACK_BATCH_MAX = 1000  # acknowledged ids held before their deletion is committed
EVICT_ROWS = 256  # rows one eviction statement looks at: bounded work, no minimum
EVICT_TO = 0.9  # an eviction round stops at this share of max_bytes


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
    kind: str | None = None  # agent.wire.model.Kind; None in rows of older versions

    @property
    def key(self) -> tuple[str, int]:
        return (self.lane, self.id)

    @property
    def size(self) -> int:
        return len(self.payload) + len(self.topic) + ROW_OVERHEAD


class SpoolError(Exception):
    """The spool cannot be opened now (another citynode holds it, no space left), or could
    not store a message even after evicting (disk full): a restart may help."""


class SpoolLocationError(SpoolError):
    """The configured place cannot hold a spool: a configuration problem that a restart
    cannot fix (the daemon exits 78), never treated as a corrupt store."""


# SQLite's primary result codes (https://sqlite.org/rescode.html) that decide what an
# error at open means: in use, no space, or a store that is damaged.
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_FULL = 5, 6, 13
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def location_problem(path: str | os.PathLike[str]) -> str | None:
    """Why this process cannot keep a spool at ``path``, or None if it can.

    It needs a regular file (or none yet) in a directory where files can be created,
    on a writable file system; a missing directory is fine if it can be created. The
    test is real (a probe file is created in the nearest existing directory and removed
    again), so it tells why SQLite could not open the store: permissions, a read-only
    mount, a pseudo file system such as /proc.
    """
    target = Path(os.path.abspath(path))
    leaf = _leaf(target)
    if leaf.is_dir():
        return "is a directory: give the database's file name (e.g. spool.db in it)"
    if os.path.lexists(leaf) and not leaf.is_file():
        return "exists and is not a regular file"
    nearest = target.parent
    while not os.path.lexists(nearest) and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        return f"{nearest} is not a directory"
    missing = "" if nearest == target.parent else f" (to create {target.parent})"
    try:
        if os.statvfs(nearest).f_flag & os.ST_RDONLY:
            return f"{nearest} is on a read-only file system{missing}"
    except OSError as exc:
        return f"cannot use {nearest}: {exc.strerror}"
    probe = nearest / f".{target.name}.probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        # ENOENT in a directory that exists: a pseudo file system such as /proc or /sys
        why = "it takes no new files" if exc.errno == errno.ENOENT else exc.strerror
        return f"cannot create files in {nearest}{missing}: {why}"
    try:
        os.unlink(probe)
    except OSError:
        pass
    if leaf.is_file():
        try:
            os.close(os.open(leaf, os.O_RDWR))
        except OSError as exc:
            return f"cannot be opened for writing: {exc.strerror}"
    return None


def _leaf(path: Path) -> Path:
    """The file SQLite opens: a symlink's target (which it creates if missing), else the
    path itself. Folders on the way are taken as they are: the daemon creates missing
    ones, but not through a symlink to nothing."""
    return Path(os.path.realpath(path)) if os.path.islink(path) else path


class Spool:
    """Thread-safe durable queue with an event lane and a telemetry lane."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 32 * 1024**2,
        batch_s: float = 1.0,
        ack_flush_s: float | None = None,
        memory_limit: int = 1000,
        send_uncommitted: bool = True,
        readers: tuple[str, ...] = ("main",),
        clock=time.monotonic,
    ) -> None:
        if not readers or len(set(readers)) != len(readers):
            raise ValueError(f"spool readers must be distinct and at least one: {readers}")
        self.path = Path(path)
        self.readers = tuple(readers)
        self.max_bytes = max_bytes
        self.batch_s = batch_s
        # Deletions ride with the batch: a kill re-sends at most one window's acknowledged
        # messages, not a minute's (docs/spool.md section 1).
        self.ack_flush_s = batch_s if ack_flush_s is None else ack_flush_s
        self.memory_limit = memory_limit
        self.send_uncommitted = send_uncommitted
        self._clock = clock
        self._lock = threading.RLock()
        self.quarantined: Path | None = None
        #: Set whenever messages become eligible to send, one per reader: its uplink
        #: sleeps on it. ``ready`` is the first reader's.
        self.wakeups = [threading.Event() for _ in self.readers]
        self.ready = self.wakeups[0]
        self.disk_full = False
        # Not yet committed (telemetry batch, or anything while the disk is full).
        self._pending: list[Spooled] = []
        self._pending_since: float | None = None
        # Acknowledged by every reader but not yet deleted on disk.
        self._acked: dict[str, set[int]] = {lane: set() for lane in LANES}
        self._acked_since: float | None = None
        # Per reader: its position (it has every id up to it) and what it has above.
        self._pos: list[dict[str, int]] = [{lane: 0 for lane in LANES} for _ in self.readers]
        self._got: list[dict[str, set[int]]] = [{lane: set() for lane in LANES}
                                               for _ in self.readers]
        self._saved_pos: dict[str, int] = {}  # meta values as last committed
        self.behind = [0 for _ in self.readers]  # stored messages each reader lacks
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
            if "kind" not in columns:
                db.execute(_KIND.format(lane=lane))
        db.execute(_META)
        db.execute("BEGIN IMMEDIATE")  # take the lock now: one daemon per spool
        db.execute("COMMIT")
        row = db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"integrity check failed: {row}")
        return db

    def _open(self) -> sqlite3.Connection:
        """Open the store; a corrupt one is quarantined, an unusable place refused."""
        try:
            leaf = _leaf(self.path)
            odd = os.path.lexists(leaf) and not leaf.is_file()  # a directory, a device
            problem = location_problem(self.path) if odd else None
            if not problem:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                leaf.parent.mkdir(parents=True, exist_ok=True)  # a symlink's target's
        except OSError as exc:
            problem = location_problem(self.path) or f"cannot use it: {exc.strerror}"
        if problem:
            raise SpoolLocationError(f"spool {self.path}: {problem}")
        try:
            return self._connect()
        except sqlite3.Error as exc:
            self._refuse_unless_corrupt(exc)
            return self._quarantine(exc)

    def _refuse_unless_corrupt(self, exc: sqlite3.Error) -> None:
        """Raise unless ``exc`` means the store itself is damaged (the only case that
        moving it aside can cure)."""
        code = getattr(exc, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
            # Healthy but in use: another citynode runs on this state directory.
            raise SpoolError(f"spool {self.path} is in use by another process") from exc
        if primary == _SQLITE_FULL:
            raise SpoolError(f"spool {self.path}: no space left on its file system") from exc
        problem = location_problem(self.path)
        if problem:
            raise SpoolLocationError(f"spool {self.path}: {problem}") from exc
        if primary not in (None, _SQLITE_CORRUPT, _SQLITE_NOTADB) and not os.path.exists(
                self.path):
            raise SpoolError(f"spool {self.path} cannot be created: {exc}") from exc

    def _quarantine(self, exc: Exception) -> sqlite3.Connection:
        """Move a damaged store aside and start a new one: never block start-up.

        Only what was actually moved is reported; if the store cannot be moved, or a new
        one cannot be started beside it, that is a problem of the location."""
        stamp = time.strftime("%Y%m%dT%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        moved: list[str] = []
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if not os.path.lexists(src):
                continue
            try:
                os.replace(src, f"{target}{suffix}")
            except OSError as err:
                done = f" (moved {', '.join(moved)})" if moved else " (nothing moved)"
                raise SpoolLocationError(
                    f"spool {self.path} is damaged ({exc}) and {src.name} cannot be moved "
                    f"aside: {err.strerror}{done}") from exc
            moved.append(f"{src.name} to {target.name}{suffix}")
        if moved:
            self.quarantined = target
            log.error("spool %s is unusable (%s): moved to %s, starting a new one", self.path,
                      exc, target, extra={"EVENT": "spool_quarantined"})
        else:
            log.error("spool %s is unusable (%s): starting a new one", self.path, exc,
                      extra={"EVENT": "spool_quarantined"})
        try:
            return self._connect()
        except sqlite3.Error as again:
            self._refuse_unless_corrupt(again)
            raise SpoolError(f"spool {self.path}: a new store cannot be started either "
                             f"({again})") from again

    def _load_state(self) -> None:
        for lane in LANES:
            n, size, top = self._db.execute(
                f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0), "
                f"COALESCE(MAX(id), 0) FROM {lane}").fetchone()
            self.counts[lane] = n
            self.bytes += size + n * ROW_OVERHEAD
            self._next_id[lane] = top + 1
        saved: dict[str, int] = {}
        for key, value in self._db.execute("SELECT key, value FROM meta"):
            lane = key.removeprefix("evicted_")
            if lane in self.evicted:
                self.evicted[lane] = value
            elif key.startswith("pos:"):
                saved[key] = value
        self._load_positions(saved)

    def _load_positions(self, saved: dict[str, int]) -> None:
        """Each reader's position: as saved; a reader new to a spool that has positions
        starts at the present, and with none saved (a spool of one reader) every reader
        starts at the beginning, so an uplink added to a node gets its backlog. Rows that
        every reader has (their deletion was lost in a crash) are deleted now."""
        keep = {_POS.format(reader=r, lane=lane) for r in self.readers for lane in LANES}
        for key, value in saved.items():  # ids are never given twice: a reader at 9 with
            lane = key.rsplit(":", 1)[-1]  # an empty lane would take a new 9 as had
            if lane in self._next_id:
                self._next_id[lane] = max(self._next_id[lane], value + 1)
        for k, reader in enumerate(self.readers):
            for lane in LANES:
                key = _POS.format(reader=reader, lane=lane)
                start = self._next_id[lane] - 1 if saved else 0
                self._pos[k][lane] = min(saved.get(key, start), self._next_id[lane] - 1)
        stale = [key for key in saved if key not in keep]
        low = {lane: min(p[lane] for p in self._pos) for lane in LANES}
        if stale or any(low.values()):
            self._db.execute("BEGIN IMMEDIATE")
            for key in stale:
                self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
            for lane, top in low.items():
                if top:
                    self._db.execute(f"DELETE FROM {lane} WHERE id <= ?", (top,))
            self._db.execute("COMMIT")
            if any(low.values()):
                self.counts = {lane: 0 for lane in LANES}
                self.bytes = 0
                for lane in LANES:
                    n, size = self._db.execute(
                        f"SELECT COUNT(*), COALESCE(SUM(LENGTH(payload) + LENGTH(topic)), 0) "
                        f"FROM {lane}").fetchone()
                    self.counts[lane] = n
                    self.bytes += size + n * ROW_OVERHEAD
        self._saved_pos = {key: value for key, value in saved.items() if key in keep}
        for k in range(len(self.readers)):
            self.behind[k] = sum(
                self._db.execute(f"SELECT COUNT(*) FROM {lane} WHERE id > ?",
                                 (self._pos[k][lane],)).fetchone()[0] for lane in LANES)

    # -- writing -------------------------------------------------------------------
    def put(self, lane: str, topic: str, payload: bytes, *, retain: bool = False,
            content_type: str = "", created: float | None = None,
            mark: int | None = None, kind: str | None = None) -> Spooled:
        """Accept a message. Events are on disk when this returns; telemetry within batch_s
        (unless the broker has acknowledged it by then)."""
        if lane not in LANES:
            raise ValueError(f"unknown lane {lane!r}")
        with self._lock:
            msg = Spooled(lane, self._next_id[lane], time.time() if created is None else created,
                          topic, payload, retain, content_type, mark, kind)
            self._next_id[lane] += 1
            self._pending.append(msg)
            self.counts[lane] += 1
            self.bytes += msg.size
            for k in range(len(self.readers)):
                self.behind[k] += 1
            if self._pending_since is None:
                self._pending_since = self._clock()
            if lane == EVENT or self.batch_s == 0:
                self._commit()
            self._wake()
            return msg

    def _wake(self) -> None:
        for event in self.wakeups:
            event.set()

    def last_id(self, lane: str) -> int:
        """The id of the last message accepted in ``lane`` (0 if none ever was)."""
        with self._lock:
            return self._next_id[lane] - 1

    def last_id_before(self, lane: str, wall: float, scan: int = 1024) -> int:
        """The id of the newest message of ``lane`` accepted before ``wall`` (Unix time).

        Ids follow acceptance, so it is looked for from the newest back: only what came
        in since ``wall`` is read. Past ``scan`` rows (a clock set back) the rest counts
        as older."""
        with self._lock:
            for m in reversed(self._pending):
                if m.lane == lane and m.created < wall:
                    return m.id
            rows = self._db.execute(f"SELECT id, created FROM {lane} ORDER BY id DESC LIMIT ?",
                                    (scan,)).fetchall()
            for i, created in rows:
                if created < wall:
                    return i
            return rows[-1][0] - 1 if len(rows) == scan else 0

    def maintain(self) -> None:
        """Commit a due telemetry batch or deferred deletions; call at least every batch_s
        (the uplink calls it on every turn of its loop)."""
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

    def _positions_due(self) -> dict[str, int]:
        """Positions to save with this commit: only with several readers (one reader's
        acknowledged rows are deleted, which says it all) and only those that moved."""
        if len(self.readers) < 2:
            return {}
        now = {_POS.format(reader=r, lane=lane): self._pos[k][lane]
               for k, r in enumerate(self.readers) for lane in LANES}
        return {key: v for key, v in now.items() if self._saved_pos.get(key) != v}

    def _commit(self) -> None:
        moved = self._positions_due()
        if not self._pending and not any(self._acked.values()) and not moved:
            self._pending_since = self._acked_since = None
            return
        self._evict_if_needed()
        pending, acked = self._pending, {k: set(v) for k, v in self._acked.items()}
        try:
            self._db.execute("BEGIN IMMEDIATE")
            if moved:
                self._db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                    "SET value = excluded.value", list(moved.items()))
            for lane, ids in acked.items():
                if ids:
                    self._db.executemany(f"DELETE FROM {lane} WHERE id = ?",
                                         [(i,) for i in ids])
            for lane in LANES:
                rows = [(m.id, m.created, m.topic, int(m.retain), m.content_type, m.payload,
                         m.mark, m.kind) for m in pending if m.lane == lane]
                if rows:
                    self._db.executemany(
                        f"INSERT INTO {lane} (id, created, topic, retain, content_type, payload,"
                        " mark, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self._db.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback()
            self._on_write_error(exc)
            return
        self.commits += 1
        if pending:
            self._wake()
        self._pending = []
        self._pending_since = None
        for lane, ids in acked.items():
            self._acked[lane] -= ids
        self._acked_since = None
        self._saved_pos.update(moved)
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
        self._evict_oldest(TELEMETRY, self.bytes, rows=max(1, self.counts[TELEMETRY] // 10),
                           on_disk_only=True)
        # Bound what waits in memory: drop the oldest pending telemetry first.
        while len(self._pending) > self.memory_limit:
            idx = next((i for i, m in enumerate(self._pending) if m.lane == TELEMETRY), 0)
            self._forget(self._pending.pop(idx))

    # -- bounding ------------------------------------------------------------------
    def _forget(self, m: Spooled) -> None:
        self.counts[m.lane] -= 1
        self.bytes -= m.size
        self.evicted[m.lane] += 1
        for k in range(len(self.readers)):  # gone for everyone: no reader waits for it
            if not self._has(k, m.lane, m.id):
                self.behind[k] -= 1
                self._got[k][m.lane].add(m.id)
                self._advance(k, m.lane)

    def _has(self, k: int, lane: str, msg_id: int) -> bool:
        return msg_id <= self._pos[k][lane] or msg_id in self._got[k][lane]

    def _advance(self, k: int, lane: str) -> None:
        """Move reader k's position over what it has and over ids no longer stored (taken
        by every reader before a restart, or evicted), so its set stays small."""
        got, pos = self._got[k][lane], self._pos[k][lane]
        while True:
            while pos + 1 in got:
                pos += 1
                got.discard(pos)
            if not got or pos + 1 >= self._next_id[lane]:
                break
            nxt = self._next_stored(lane, pos)
            if nxt is None or nxt == pos + 1:
                break
            pos = nxt - 1  # pos + 1 .. nxt - 1 are stored no more
        self._pos[k][lane] = pos

    def _next_stored(self, lane: str, after: int) -> int | None:
        row = self._db.execute(f"SELECT MIN(id) FROM {lane} WHERE id > ?", (after,)).fetchone()
        ids = [m.id for m in self._pending if m.lane == lane and m.id > after]
        if row and row[0] is not None:
            ids.append(row[0])
        return min(ids) if ids else None

    def _evict_if_needed(self) -> None:
        """Over the bound: evict the oldest telemetry (events only when no telemetry is
        left) until the counted size is at most EVICT_TO of the bound, and no further."""
        if self.bytes <= self.max_bytes:
            return
        target = int(self.max_bytes * EVICT_TO)
        for lane in (TELEMETRY, EVENT):
            while self.bytes > target and self.counts[lane] > 0:
                if lane == EVENT and self.counts[TELEMETRY]:
                    break
                if not self._evict_oldest(lane, self.bytes - target):
                    break
        log.warning("spool over %d bytes: evicted, totals now %s", self.max_bytes,
                    self.evicted, extra={"EVENT": "spool_evicted"})

    def _evict_oldest(self, lane: str, need: int, *, rows: int = EVICT_ROWS,
                      on_disk_only: bool = False) -> bool:
        """Free at least ``need`` counted bytes from the oldest of ``lane``, looking at no
        more than ``rows`` rows: the shortest run of oldest rows that frees it, deleted in
        one statement (one fsync, not one per row). False if nothing could be freed."""
        found = self._db.execute(
            f"SELECT id, LENGTH(payload) + LENGTH(topic) FROM {lane} ORDER BY id LIMIT ?",
            (rows,)).fetchall()
        if not found:
            if on_disk_only:
                return False
            # Only not-yet-committed messages remain: drop the oldest of those.
            keep, freed, gone = [], 0, []
            for m in self._pending:
                if m.lane == lane and freed < need:
                    gone.append(m)
                    freed += m.size
                else:
                    keep.append(m)
            self._pending = keep
            for m in gone:
                self._forget(m)
            if not self._pending:
                self._pending_since = None
            return freed > 0
        acked = self._acked[lane]
        victims: list[int] = []  # counted sizes; acknowledged rows are counted out already
        top, freed = found[-1][0], 0
        for i, size in found:
            if i not in acked:
                victims.append(size)
                freed += size + ROW_OVERHEAD
            if freed >= need:
                top = i
                break
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
            return False
        self._acked[lane] = {i for i in acked if i > top}
        self.counts[lane] -= len(victims)
        self.bytes -= freed
        self.evicted[lane] += len(victims)
        for k in range(len(self.readers)):
            lacked = sum(1 for i, _ in found if i <= top and i not in acked
                         and not self._has(k, lane, i))
            self.behind[k] -= lacked
            if self._pos[k][lane] < top:
                self._pos[k][lane] = top
                self._got[k][lane] = {i for i in self._got[k][lane] if i > top}
                self._advance(k, lane)
        return True

    # -- reading and acknowledging ---------------------------------------------------
    def iter_ready(self, lane: str, after: int = 0, limit: int = 100,
                   upto: int | None = None, reader: int = 0) -> list[Spooled]:
        """Messages of a lane with after < id (<= upto), oldest first, that ``reader``
        (an index into ``readers``) does not have yet.

        Committed messages are ready. So is telemetry still in its batch window when
        ``send_uncommitted`` is on (the default): if the broker acknowledges it
        within the window it is never written at all; the uplink sends it only after
        everything accepted before it is on disk or on the wire, so a crash inside
        the window loses at most the newest messages, never one below a delivered
        ``q``; at one report a minute this removes nearly every write to the card.
        While the disk is full, everything in memory is ready: sending it beats
        holding an alarm back.
        """
        top = upto if upto is not None else self._next_id[lane]
        with self._lock:
            acked = self._acked[lane] | self._got[reader][lane]
            out: list[Spooled] = []
            after = max(after, self._pos[reader][lane])
            cursor = after
            while len(out) < limit and cursor < top:
                # Acknowledged rows wait for their deletion: read past them, so a batch
                # of them never hides what follows.
                rows = self._db.execute(
                    f"SELECT id, created, topic, retain, content_type, payload, mark, kind "
                    f"FROM {lane} WHERE id > ? AND id <= ? ORDER BY id LIMIT ?",
                    (cursor, top, limit)).fetchall()
                out += [Spooled(lane, i, c, t, p, bool(r), ct, mk, kd)
                        for i, c, t, r, ct, p, mk, kd in rows if i not in acked]
                if len(rows) < limit:
                    break
                cursor = rows[-1][0]
            early = self.disk_full or (self.send_uncommitted and lane == TELEMETRY)
            if early and len(out) < limit:
                out += [m for m in self._pending
                        if m.lane == lane and after < m.id <= top and m.id not in acked]
            return out[:limit]

    def ack(self, lane: str, msg_id: int, reader: int = 0) -> None:
        """``reader``'s broker has the message; once every reader has it, it is deleted
        in the next commit."""
        with self._lock:
            if msg_id in self._acked[lane]:
                return
            if len(self.readers) == 1:  # it has it: everyone has it
                self._done(lane, msg_id)
                return
            if self._has(reader, lane, msg_id) or not self._stored(lane, msg_id):
                return  # evicted while in flight: already counted out
            self._got[reader][lane].add(msg_id)
            self.behind[reader] -= 1
            everyone = all(self._has(k, lane, msg_id) for k in range(len(self.readers)))
            self._advance(reader, lane)
            if everyone:
                self._done(lane, msg_id)

    def _stored(self, lane: str, msg_id: int) -> bool:
        if any(m.lane == lane and m.id == msg_id for m in self._pending):
            return True
        return self._db.execute(f"SELECT 1 FROM {lane} WHERE id = ?",
                                (msg_id,)).fetchone() is not None

    def _done(self, lane: str, msg_id: int) -> None:
        """Every reader has the message: forget it now or delete it in the next commit."""
        with self._lock:
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

    def backlog(self, reader: int = 0) -> int:
        """Stored messages that ``reader`` does not have yet."""
        with self._lock:
            if len(self.readers) == 1:
                return sum(self.counts.values())
            return self.behind[reader]

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
