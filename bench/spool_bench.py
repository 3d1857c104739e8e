"""Spool bench: enqueue and drain rates, a day's backlog, SD-card writes, memory.

Run ``python -m bench.spool_bench`` from the repository root (``make bench`` runs
it with the others). It needs mosquitto (``agent.tools.simulate.Mosquitto`` starts a
private one on a free loopback port) and writes its spools to a temporary folder
under /var/tmp (or the folder in ``$CITYNODE_BENCH_DIR``), which must be on a
real block device, not tmpfs, for the fsync and byte figures to mean anything.
Everything it starts and creates is stopped and removed at the end.

Messages are realistic: telemetry packs are one 60 s PMS5003 window (pm1, pm25,
pm10 with mean, min and max, plus the sample count) aggregated by
``agent.core.aggregate`` from 30 simulated readings; health packs come from
``agent.core.health.HealthReporter``; events are sensor health transitions. Each
figure is printed next to a reference measured in the same run.

Targets (the exit code is 1 when one fails):

* a 24-hour backlog of a default node drained in at most 60 s, unthrottled;
* at most 5 MB written to the SD card per day at default settings;
* memory independent of the backlog: RSS with 100,000 stored messages at most
  3 MiB above RSS with none.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.core.aggregate import Aggregator, Quality
from agent.core.config import HealthConfig, MqttConfig, ReportConfig, SpoolConfig
from agent.core.health import HealthReporter
from agent.tools.simulate import Mosquitto
from agent.wire import formats
from agent.wire.model import Pack, Record
from agent.wire.spool import EVENT, LANES, TELEMETRY, Spool, Spooled
from agent.wire.topics import Topics
from agent.wire.uplink import MAX_INFLIGHT, Uplink
from drivers.base import Reading

ROOT = Path(__file__).resolve().parent.parent

# Targets (the issue "make bench figures").
TARGET_BACKLOG_S = 60.0
TARGET_BYTES_PER_DAY = 5_000_000  # 5 MB (decimal, as the issue writes it)
TARGET_RSS_SPREAD = 3 * 1024**2  # 3 MiB

# A default node (agent/core/config.py).
DEFAULT_SPOOL = SpoolConfig()
REPORT_S = ReportConfig().interval_s  # 60 s
HEALTH_S = HealthConfig().interval_s  # 300 s
DAY_S = 86_400
EVENTS_PER_DAY = 20

NODE = "seoul-jongno-0001"
TOPICS = Topics("citynode", NODE)
SESSION = 3
DAY_START = 1763856000  # 2025-11-23T00:00:00Z
FORMAT = formats.get("senml-cbor")
CTYPE = FORMAT.content_type

# Sizes of the runs (kept so that the whole bench takes well under two minutes).
ENQUEUE_SECONDS = 1.5  # per lane and for the reference
ENQUEUE_MAX = 20_000
ENQUEUE_TELEMETRY_SECONDS = 2.5  # past the first batch commit (batch_s 1)
ENQUEUE_MAX_BYTES = 1024**3
DRAIN_N = 5000
RATE_SAMPLE_S = 3.0  # how long the default drain_rate is sampled
RSS_BACKLOGS = (0, 10_000, 100_000)
RSS_DRAINED = 1000

_T0 = time.monotonic()


def progress(text: str) -> None:
    print(f"  [{time.monotonic() - _T0:5.1f} s] {text}", flush=True)


def mib(n: float) -> str:
    return f"{n / 1024**2:.1f} MiB"


# -- realistic messages ----------------------------------------------------------------
class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


_PM_RANGE = {q: (0.0, 1000.0) for q in ("pm1", "pm25", "pm10")}


#: The historical mark the format returned for each payload, which the daemon hands the
#: spool with it (a payload stands for its pack here: pools and days are lists of bytes).
MARKS: dict[bytes, int | None] = {}


def encode(pack: Pack) -> bytes:
    enc = FORMAT.encode(pack)
    MARKS[enc.payload] = enc.mark
    return enc.payload


def telemetry_payload(rng: random.Random, t: float, seq: int) -> bytes:
    """One 60 s window of one PMS5003 (30 readings at 2 s), as Node.report() sends it."""
    agg = Aggregator("pm", "", _PM_RANGE)
    base = rng.uniform(4.0, 40.0)
    for i in range(30):
        if rng.random() < 0.02:  # an occasional corrupt frame: 29 readings and pm:q = 4
            agg.flag(Quality.ERRORS)
            continue
        pm25 = max(0.0, rng.gauss(base, base * 0.15))
        agg.add(Reading({"pm1": round(pm25 * 0.65), "pm25": round(pm25),
                         "pm10": round(pm25 * 1.6 + rng.uniform(0, 4))},
                        t_mono=i * 2.0, t_wall=t - 60 + i * 2))
    records = agg.records(agg.close_window(), ReportConfig().stats)
    return encode(Pack(time=float(round(t)), session=SESSION, seq=seq, records=records))


def health_payload(reporter: HealthReporter, t: float, seq: int, spool_stats: dict[str, int],
                   reconnects: int = 0) -> bytes:
    records = reporter.records(sensors={"pm": "ok"}, spool=spool_stats,
                               uplink={"reconnects": reconnects, "historical": 0},
                               commands={"accepted": 0})
    return encode(Pack(time=float(round(t)), session=SESSION, seq=seq, records=records))


def event_payload(rng: random.Random, t: float, seq: int, state: str) -> bytes:
    """A sensor health transition: event packs keep milliseconds."""
    return encode(Pack(time=round(t + rng.random(), 3), session=SESSION, seq=seq,
                               records=[Record("pm:health", text=state)]))


_EMPTY_STATS = {"depth": 0, "bytes": 0, "evicted_telemetry": 0, "evicted_events": 0}


def day_schedule(seed: int = 1) -> list[tuple[float, str, str, bytes]]:
    """One day of a default node: (seconds into the day, lane, topic, payload), in order.

    Reports every 60 s; health 60 s after start and then every 300 s (so at the
    same instants as a report, as the daemon's schedule has it); 20 events.
    """
    rng = random.Random(seed)
    clock = FakeClock(0.0)
    reporter = HealthReporter(Path(tempfile.gettempdir()), clock=clock)
    out: list[tuple[float, str, str, bytes]] = []
    for k in range(1, int(DAY_S / REPORT_S) + 1):
        out.append((k * REPORT_S, TELEMETRY, TOPICS.telemetry, b""))
    h = min(60.0, HEALTH_S)
    while h <= DAY_S:
        out.append((h, TELEMETRY, TOPICS.health, b""))
        h += HEALTH_S
    for _ in range(EVENTS_PER_DAY):
        out.append((rng.uniform(1, DAY_S - 1), EVENT, TOPICS.event, b""))
    out.sort(key=lambda m: (m[0], m[2] != TOPICS.telemetry))
    day: list[tuple[float, str, str, bytes]] = []
    events = 0
    for seq, (s, lane, topic, _) in enumerate(out, start=1):
        t = DAY_START + s
        if topic == TOPICS.telemetry:
            data = telemetry_payload(rng, t, seq)
        elif topic == TOPICS.health:
            clock.t = s
            data = health_payload(reporter, t, seq, _EMPTY_STATS)
        else:
            data = event_payload(rng, t, seq, "ok" if events % 2 else "errors")
            events += 1
        day.append((s, lane, topic, data))
    return day


def telemetry_pool(n: int, seed: int = 2) -> list[bytes]:
    rng = random.Random(seed)
    return [telemetry_payload(rng, DAY_START + (i + 1) * REPORT_S, i + 1) for i in range(n)]


def fill(spool: Spool, messages: list[tuple[str, str, bytes, float]], chunk: int = 5000) -> None:
    """Store (lane, topic, payload, created) messages, committed in chunks."""
    for i, (lane, topic, data, created) in enumerate(messages, start=1):
        spool.put(lane, topic, data, content_type=CTYPE, created=created, mark=MARKS.get(data))
        if i % chunk == 0:
            spool.flush()
    spool.flush()


# -- process and file-system figures ---------------------------------------------------
def proc_io() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(": ") for line in f.read().splitlines())}


def vm_status() -> dict[str, int]:
    """VmRSS, VmHWM... of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Vm"):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def filesystem(path: Path) -> tuple[str, str, str]:
    """(mount point, type, device) of the file system holding ``path``."""
    real = os.path.realpath(path)
    best = ("", "?", "?")
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            mnt = mnt.replace("\\040", " ")
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best[0]):
                best = (mnt, fstype, dev)
    return best


def device_sectors_written(dev: str) -> int | None:
    """Sectors written by the whole block device (every process, the fs journal too)."""
    name = os.path.basename(os.path.realpath(dev)) if dev.startswith("/dev/") else dev
    try:
        with open("/proc/diskstats") as f:
            for line in f:
                parts = line.split()
                if parts[2] == name:
                    return int(parts[9])
    except (OSError, IndexError, ValueError):
        pass
    return None


def file_sizes(db: Path) -> dict[str, int]:
    return {suffix or "db": (os.path.getsize(f"{db}{suffix}")
                             if os.path.exists(f"{db}{suffix}") else 0)
            for suffix in ("", "-wal", "-shm")}


def bench_dir() -> Path:
    base = os.environ.get("CITYNODE_BENCH_DIR")
    candidates = [Path(base)] if base else [Path("/var/tmp"), ROOT]
    for c in candidates:
        if c.is_dir() and os.access(c, os.W_OK) and filesystem(c)[1] not in ("tmpfs", "ramfs"):
            return Path(tempfile.mkdtemp(prefix="citynode-spool-bench-", dir=c))
    return Path(tempfile.mkdtemp(prefix="citynode-spool-bench-", dir=candidates[0]))


# -- 1. enqueue ------------------------------------------------------------------------
def _timed(step: Callable[[int], None], seconds: float, limit: int) -> tuple[int, float]:
    n, t0 = 0, time.perf_counter()
    while n < limit and time.perf_counter() - t0 < seconds:
        step(n)
        n += 1
    return n, time.perf_counter() - t0


def enqueue_rates(work: Path, pool: list[bytes]) -> dict[str, float]:
    size = len(pool[0])
    ref_path = work / "fsync-reference.bin"
    fd = os.open(ref_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        def raw(i: int) -> None:
            os.write(fd, pool[i % len(pool)])
            os.fsync(fd)
        n, dt = _timed(raw, ENQUEUE_SECONDS, ENQUEUE_MAX)
    finally:
        os.close(fd)
        ref_path.unlink()
    ref = n / dt
    progress(f"reference os.write + os.fsync: {n} writes of {size} B in {dt:.2f} s")

    ev = Spool(work / "enqueue-event.db")
    n, dt = _timed(lambda i: ev.put(EVENT, TOPICS.event, pool[i % len(pool)],
                                    content_type=CTYPE, mark=MARKS.get(pool[i % len(pool)])),
                   ENQUEUE_SECONDS, ENQUEUE_MAX)
    ev.close()
    event = n / dt
    progress(f"event lane: {n} puts in {dt:.2f} s")

    # put() alone takes microseconds, so a second's batch is far beyond the default
    # max_bytes: the bound is raised for this test only, so that nothing is evicted.
    tl = Spool(work / "enqueue-telemetry.db", batch_s=DEFAULT_SPOOL.batch_s,
               max_bytes=ENQUEUE_MAX_BYTES)

    def tput(i: int) -> None:
        data = pool[i % len(pool)]
        tl.put(TELEMETRY, TOPICS.telemetry, data, content_type=CTYPE, mark=MARKS.get(data))
        tl.maintain()  # the uplink thread calls it every loop; here after every put

    t0 = time.perf_counter()
    n, _ = _timed(tput, ENQUEUE_TELEMETRY_SECONDS, 10**9)
    tl.flush()  # the last batch is durable too before the clock stops
    dt = time.perf_counter() - t0
    commits, evicted = tl.commits, tl.evicted[TELEMETRY]
    tl.close()
    tele = n / dt
    progress(f"telemetry lane: {n} puts in {dt:.2f} s ({commits} commits, {evicted} evicted)")

    print(f"\n1. Durable enqueue, {size}-byte telemetry packs, spool in the bench folder")
    print(f"   {'':<44} {'msgs/s':>9}  {'vs fsync floor':>14}")
    print(f"   {'os.write + os.fsync per message (reference)':<44} {ref:>9.0f}  {1:>13.2f}x")
    print(f"   {'event lane: committed + fsync per put':<44} {event:>9.0f}  {event / ref:>13.2f}x")
    label = f"telemetry lane: batch_s={DEFAULT_SPOOL.batch_s:g}, maintain()"
    print(f"   {label:<44} {tele:>9.0f}  {tele / ref:>13.2f}x")
    print(f"   (telemetry: {n} puts for {ENQUEUE_TELEMETRY_SECONDS:g} s, then flush(), timed to "
          f"the end of the last commit; max_bytes raised to {mib(ENQUEUE_MAX_BYTES)} for this "
          f"test so that nothing is evicted)")
    return {"ref": ref, "event": event, "telemetry": tele}


# -- 2. drain --------------------------------------------------------------------------
def drain_with_uplink(broker: Mosquitto, spool: Spool, client_id: str, drain_rate: float = 0.0,
                      timeout: float = 120.0) -> tuple[float, Uplink, bool]:
    """Start an Uplink on a filled spool; seconds until flush() returns."""
    up = Uplink(MqttConfig(host=broker.host, port=broker.port), client_id, spool,
                drain_rate=drain_rate)
    t0 = time.perf_counter()
    up.start()
    ok = up.flush(timeout)
    dt = time.perf_counter() - t0
    up.stop(timeout=1.0)
    return dt, up, ok and spool.depth() == 0


def bare_paho(broker: Mosquitto, topic: str, payloads: list[bytes], client_id: str) -> float:
    """A bare paho client: MQTT 5, QoS 1, max_inflight as the uplink; seconds to all PUBACKs."""
    acked = [0]
    connected, done = threading.Event(), threading.Event()

    def on_publish(client, userdata, mid, reason_code, properties) -> None:
        acked[0] += 1
        if acked[0] == len(payloads):
            done.set()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=MQTTProtocolVersion.MQTTv5)
    c.max_inflight_messages_set(MAX_INFLIGHT)
    c.on_connect = lambda *a: connected.set()
    c.on_publish = on_publish
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = CTYPE
    t0 = time.perf_counter()
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        if not connected.wait(10):
            raise TimeoutError("reference client: no CONNACK")
        for p in payloads:
            c.publish(topic, p, qos=1, properties=props)
        if not done.wait(120):
            raise TimeoutError(f"reference client: {acked[0]} of {len(payloads)} PUBACKs")
        dt = time.perf_counter() - t0
    finally:
        c.disconnect()
        c.loop_stop()
    return dt


def historical_cost(up: Uplink, payloads: list[bytes]) -> float:
    """Seconds the uplink spends marking these packs historical (at their format's mark)."""
    rows = [Spooled(TELEMETRY, i, 0.0, TOPICS.telemetry, p, False, CTYPE, MARKS.get(p))
            for i, p in enumerate(payloads, start=1)]
    t0 = time.perf_counter()
    for row in rows:
        up._historical(row)
    return time.perf_counter() - t0


def drain_rates(work: Path, broker: Mosquitto, pool: list[bytes]) -> dict[str, float]:
    payloads = [pool[i % len(pool)] for i in range(DRAIN_N)]
    created = time.time() - 3600
    best: dict[str, float] = {}
    for attempt in (1, 2):  # best of two, alternating, to steady the figure
        spool = Spool(work / f"drain-{attempt}.db")
        fill(spool, [(TELEMETRY, TOPICS.telemetry, p, created) for p in payloads])
        dt, up, ok = drain_with_uplink(broker, spool, f"bench-drain-{os.getpid()}-{attempt}")
        spool.close()
        if not ok:
            raise RuntimeError(f"uplink did not drain {DRAIN_N} messages (published "
                               f"{up.published})")
        best["uplink"] = min(best.get("uplink", dt), dt)
        progress(f"uplink drained {up.published} messages in {dt:.2f} s "
                 f"({up.historical} marked historical)")
        dt = bare_paho(broker, TOPICS.telemetry, payloads, f"bench-ref-{os.getpid()}-{attempt}")
        best["paho"] = min(best.get("paho", dt), dt)
        progress(f"bare paho published {DRAIN_N} messages in {dt:.2f} s")
        hist = historical_cost(up, payloads)
    up_rate, ref_rate = DRAIN_N / best["uplink"], DRAIN_N / best["paho"]
    print(f"\n2. Drain at QoS 1 to a private mosquitto {broker.host}:{broker.port}, "
          f"{DRAIN_N} telemetry packs, best of 2")
    print(f"   {'':<48} {'seconds':>8} {'msgs/s':>9}  {'vs bare paho':>12}")
    print(f"   {'bare paho, MQTT 5, max_inflight 20 (reference)':<48} {best['paho']:>8.2f} "
          f"{ref_rate:>9.0f}  {1:>11.2f}x")
    print(f"   {'spool + Uplink, drain_rate=0 (unthrottled)':<48} {best['uplink']:>8.2f} "
          f"{up_rate:>9.0f}  {up_rate / ref_rate:>11.2f}x")
    print(f"   (of the uplink's time, marking the packs historical takes {hist:.2f} s; "
          f"both include connecting)")
    return {"uplink": up_rate, "paho": ref_rate, "historical_s": hist}


# -- 3. a day's backlog ----------------------------------------------------------------
def backlog_24h(work: Path, broker: Mosquitto, day: list[tuple[float, str, str, bytes]],
                paho_rate: float) -> dict[str, float]:
    counts = {topic: sum(1 for m in day if m[2] == topic)
              for topic in (TOPICS.telemetry, TOPICS.health, TOPICS.event)}
    total = len(day)
    spool = Spool(work / "backlog.db")
    now = time.time()
    fill(spool, [(lane, topic, data, now - DAY_S + s) for s, lane, topic, data in day])
    stored = spool.stats()
    dt, up, ok = drain_with_uplink(broker, spool, f"bench-day-{os.getpid()}")
    spool.close()
    progress(f"24-hour backlog: {up.published} messages drained in {dt:.2f} s")

    # At the default drain_rate: events are not throttled; telemetry gets a token
    # bucket of drain_rate/s with one second's burst.
    rate = DEFAULT_SPOOL.drain_rate
    throttled = sum(1 for m in day if m[1] == TELEMETRY)
    computed = max(0.0, throttled - rate) / rate if rate else 0.0
    spool = Spool(work / "backlog-rate.db")
    fill(spool, [(lane, topic, data, now - DAY_S + s) for s, lane, topic, data in day])
    up2 = Uplink(MqttConfig(host=broker.host, port=broker.port), f"bench-rate-{os.getpid()}",
                 spool, drain_rate=rate)
    up2.start()
    deadline = time.monotonic() + 10
    while up2.published < rate + EVENTS_PER_DAY and time.monotonic() < deadline:
        time.sleep(0.01)  # past the burst
    n0, t0 = up2.published, time.perf_counter()
    time.sleep(RATE_SAMPLE_S)
    measured = (up2.published - n0) / (time.perf_counter() - t0)
    up2.stop(timeout=0.0)
    spool.close()
    progress(f"default drain_rate sampled for {RATE_SAMPLE_S:g} s: {measured:.1f} msgs/s")

    size = sum(len(m[3]) for m in day)
    print(f"\n3. 24-hour backlog of a default node: {counts[TOPICS.telemetry]} telemetry "
          f"(every {REPORT_S:g} s), {counts[TOPICS.health]} health (every {HEALTH_S:g} s), "
          f"{counts[TOPICS.event]} events = {total} messages, {size} payload bytes, "
          f"{stored['bytes']} spool bytes")
    print(f"   {'':<52} {'seconds':>8}")
    print(f"   {'bare paho at its rate above (reference, computed)':<52} "
          f"{total / paho_rate:>8.2f}")
    print(f"   {'spool + Uplink, drain_rate=0 (measured)':<52} {dt:>8.2f}  "
          f"({total / dt:.0f} msgs/s; {dt / (total / paho_rate):.1f}x the reference's time)")
    label = f"default drain_rate={rate:g}/s (computed from the count)"
    print(f"   {label:<52} {computed:>8.1f}  ({throttled} telemetry lane packs: a burst of "
          f"{rate:g}, then {rate:g}/s; events are not throttled)")
    print(f"   {'':<52} {'':>8}  (measured after the burst over {RATE_SAMPLE_S:g} s: "
          f"{measured:.1f} msgs/s -> {max(0.0, throttled - rate) / measured:.1f} s)")
    return {"seconds": dt, "ok": float(ok), "at_default": computed}


# -- 4. bytes per day ------------------------------------------------------------------
def replay_day(db: Path, day: list[tuple[float, str, str, bytes]],
               shm_writeback: bool = True, strict: bool = False) -> dict[str, int]:
    """Replay a connected day with a fake clock; what the process writes for the spool.

    The uplink's behaviour is reproduced at the instants it matters: maintain()
    every simulated second (the uplink calls it every 20 ms; nothing is due in
    between), and whatever was committed is read with iter_ready() and acknowledged
    in the same second (PUBACKs take milliseconds).

    ``shm_writeback``: after each second with database activity the -shm file
    (SQLite's mmap'd wal-index, in the spool folder) is fsync'd. On a node the
    kernel writes those dirty pages back within dirty_expire_centisecs (30 s) and
    commits are 60 s apart, so every commit's wal-index update reaches the card;
    in a compressed day each shm page would otherwise be counted once.
    """
    clock = FakeClock(1000.0)
    spool = Spool(db, max_bytes=DEFAULT_SPOOL.max_bytes, batch_s=DEFAULT_SPOOL.batch_s,
                  clock=clock, send_uncommitted=not strict)
    # The spool runs SQLite in exclusive locking mode, which keeps the wal-index in
    # process memory; should a -shm file exist, count its writeback as the kernel would.
    shm_fd = os.open(f"{db}-shm", os.O_RDONLY) if os.path.exists(f"{db}-shm") else None
    dev = filesystem(db)[2]
    sizes0 = file_sizes(db)
    after = {lane: 0 for lane in LANES}
    delivered = i = 0
    created0 = time.time() - DAY_S
    sectors0 = device_sectors_written(dev)
    io0 = proc_io()
    t0 = time.perf_counter()
    for s in range(1, DAY_S + 2):  # one second more: the last report's batch commits
        clock.t = 1000.0 + s
        active = False
        while i < len(day) and day[i][0] <= s:
            _, lane, topic, data = day[i]
            spool.put(lane, topic, data, content_type=CTYPE, created=created0 + s,
                      mark=MARKS.get(data))
            i += 1
            active = True
        commits = spool.commits
        spool.maintain()
        if active or spool.commits != commits:
            for lane in LANES:
                for m in spool.iter_ready(lane, after[lane]):
                    after[lane] = m.id
                    spool.ack(lane, m.id)
                    delivered += 1
            if shm_writeback and shm_fd is not None:
                os.fsync(shm_fd)
    io1 = proc_io()
    sectors1 = device_sectors_written(dev)
    replay_s = time.perf_counter() - t0
    sizes1 = file_sizes(db)
    if shm_fd is not None:
        os.close(shm_fd)
    out = {
        "wchar": io1["wchar"] - io0["wchar"],
        "write_bytes": io1["write_bytes"] - io0["write_bytes"],
        "growth": sum(sizes1.values()) - sum(sizes0.values()),
        "commits": spool.commits,
        "delivered": delivered,
        "device": (sectors1 - sectors0) * 512 if sectors0 is not None and sectors1 is not None
        else -1,
        **{f"size{k}": v for k, v in sizes1.items()},
    }
    io_close0 = proc_io()
    spool.close()
    io_close1 = proc_io()
    out["close_wchar"] = io_close1["wchar"] - io_close0["wchar"]
    out["close_write_bytes"] = io_close1["write_bytes"] - io_close0["write_bytes"]
    progress(f"replayed one day in {replay_s:.1f} s "
             f"({'strict: on disk before sent' if strict else 'default'}): {delivered} "
             f"messages, {out['commits']} commits")
    return out


def bytes_per_day(work: Path, day: list[tuple[float, str, str, bytes]]) -> dict[str, float]:
    db = work / "day" / "spool.db"
    r = replay_day(db, day)
    strict = replay_day(work / "day-strict" / "spool.db", day, strict=True)
    mount, fstype, dev = filesystem(db)
    wchar, wbytes, growth, commits = r["wchar"], r["write_bytes"], r["growth"], r["commits"]
    payload_bytes = sum(len(m[3]) + len(m[2]) for m in day)
    worst = max(wchar, wbytes, growth)
    print(f"\n4. Bytes written per day at default settings (batch_s={DEFAULT_SPOOL.batch_s:g}, "
          f"deletions within batch_s, report every {REPORT_S:g} s, health every "
          f"{HEALTH_S:g} s, "
          f"{EVENTS_PER_DAY} events)")
    print(f"   spool folder {db.parent} is on {mount} ({fstype}, {dev})"
          + ("  WARNING: not a block device, figures are meaningless"
             if fstype in ("tmpfs", "ramfs") else ""))
    print(f"   one simulated day replayed with a fake clock: {r['delivered']} messages stored, "
          f"sent and acknowledged, {commits} commits (each fsync'd)")
    print(f"   {'':<58} {'bytes/day':>10}  {'vs payload':>10}")
    print(f"   {'payload + topic bytes of the day (reference)':<58} {payload_bytes:>10}  "
          f"{1:>9.1f}x")
    print(f"   {'wchar: bytes passed to write()/pwrite() (/proc/self/io)':<58} {wchar:>10}  "
          f"{wchar / payload_bytes:>9.1f}x")
    print(f"   {'write_bytes: bytes dirtied in the page cache (4 KiB pages)':<58} "
          f"{wbytes:>10}  {wbytes / payload_bytes:>9.1f}x")
    label = "strict ([spool] send_uncommitted = false): write_bytes"
    print(f"   {label:<58} {strict['write_bytes']:>10}  "
          f"{strict['write_bytes'] / payload_bytes:>9.1f}x  ({strict['commits']} commits, "
          f"wchar {strict['wchar']})")
    print(f"   {'file growth: db + wal + shm, end minus start':<58} {growth:>10}  "
          f"{growth / payload_bytes:>9.1f}x")
    print(f"   per commit: {wchar / commits:.0f} B wchar, {wbytes / commits:.0f} B write_bytes; "
          f"files at the end: db {r['sizedb']}, wal {r['size-wal']}, "
          f"shm {r.get('size-shm', 0)} bytes")
    if r["device"] >= 0:
        print(f"   context only (whole device {dev} during the replay, every process and the "
              f"ext4 journal, not used): {r['device']} bytes")
    print(f"   close() (commit + checkpoint TRUNCATE), once per stop, not in the day: "
          f"{r['close_wchar']} B wchar, {r['close_write_bytes']} B write_bytes")
    print(f"   for PASS/FAIL the larger of wchar, write_bytes and file growth is used: {worst} "
          f"bytes/day")
    print(f"   (the cost is per commit, not per byte: {commits} fsync'd commits a day, each "
          f"dirtying at least one whole 4 KiB page of the WAL; docs/spool.md)")
    return {"worst": worst, "wchar": wchar, "write_bytes": wbytes, "growth": growth,
            "commits": commits}

# -- 5. memory against the backlog ----------------------------------------------------
def rss_child(db: str, host: str, port: int, drained: int) -> None:
    """In a fresh interpreter: open, stats, one batch, put a live batch, drain; print RSS."""
    base = vm_status()
    t0 = time.perf_counter()
    spool = Spool(db)
    open_s = time.perf_counter() - t0
    stats = spool.stats()
    batch = spool.iter_ready(TELEMETRY, 0)
    after_open = vm_status()
    # Every row does the same MQTT work: 1000 live telemetry packs are stored (as a
    # running node keeps doing) and the first 1000 in the spool are drained.
    for data in telemetry_pool(drained, seed=3):
        spool.put(TELEMETRY, TOPICS.telemetry, data, content_type=CTYPE, mark=MARKS.get(data))
    spool.flush()
    up = Uplink(MqttConfig(host=host, port=port), f"bench-rss-{os.getpid()}", spool)
    t1 = time.perf_counter()
    up.start()
    deadline = time.monotonic() + 60
    while up.published < drained and time.monotonic() < deadline:
        time.sleep(0.01)
    up.stop(timeout=0.0)
    drain_s = time.perf_counter() - t1
    end = vm_status()
    spool.close()
    print(json.dumps({"stats": stats, "batch": len(batch), "open_s": open_s,
                      "drain_s": drain_s, "published": up.published,
                      "base": base["VmRSS"], "open": after_open["VmRSS"],
                      "rss": end["VmRSS"], "hwm": end["VmHWM"]}))


def rss_vs_backlog(work: Path, broker: Mosquitto, pool: list[bytes]) -> dict[str, float]:
    sizes = {}
    now = time.time()
    for n in RSS_BACKLOGS:
        db = work / f"rss-{n}.db"
        spool = Spool(db)
        fill(spool, [(TELEMETRY, TOPICS.telemetry, pool[i % len(pool)], now - DAY_S)
                     for i in range(n)], chunk=10_000)
        sizes[n] = spool.stats()["bytes"]
        spool.close()
        progress(f"filled a spool with {n} telemetry packs ({mib(sizes[n])} counted, "
                 f"{mib(os.path.getsize(db))} on disk)")
    rows = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for n in RSS_BACKLOGS:
        code = (f"from bench.spool_bench import rss_child; "
                f"rss_child({str(work / f'rss-{n}.db')!r}, {broker.host!r}, {broker.port}, "
                f"{RSS_DRAINED})")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True, timeout=120)
        rows[n] = json.loads(out.stdout.strip().splitlines()[-1])
        progress(f"backlog {n}: VmRSS {mib(rows[n]['rss'])}, opened in "
                 f"{rows[n]['open_s']:.2f} s, {rows[n]['published']} sent")
    print(f"\n5. Memory against the backlog: a fresh process opens the spool, reads stats() and "
          f"one iter_ready() batch, stores {RSS_DRAINED} live packs and drains {RSS_DRAINED} "
          f"to mosquitto")
    print(f"   (max_bytes left at the default {mib(DEFAULT_SPOOL.max_bytes)}: "
          f"{RSS_BACKLOGS[-1]} packs take {mib(sizes[RSS_BACKLOGS[-1]])})")
    print(f"   {'backlog':>8} {'depth':>7} {'open s':>7} {'RSS imports':>12} {'RSS open':>10} "
          f"{'RSS end':>10} {'peak':>10} {'vs 0':>9}")
    ref = rows[RSS_BACKLOGS[0]]
    for n in RSS_BACKLOGS:
        r = rows[n]
        print(f"   {n:>8} {r['stats']['depth']:>7} {r['open_s']:>7.2f} {mib(r['base']):>12} "
              f"{mib(r['open']):>10} {mib(r['rss']):>10} {mib(r['hwm']):>10} "
              f"{(r['rss'] - ref['rss']) / 1024**2:>+7.1f} M")
    spread = max(r["rss"] for r in rows.values()) - min(r["rss"] for r in rows.values())
    delta = rows[RSS_BACKLOGS[-1]]["rss"] - ref["rss"]
    print(f"   spread of RSS at the end: {mib(spread)}; "
          f"peak spread {mib(max(r['hwm'] for r in rows.values()) - ref['hwm'])}")
    return {"delta": delta, "spread": spread}


# -- main ------------------------------------------------------------------------------
def mosquitto_version(broker: Mosquitto) -> str:
    try:
        out = subprocess.run([str(broker.binary), "-h"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return "mosquitto"
    return out.splitlines()[0].strip() if out else "mosquitto"


def main() -> int:
    global _T0
    _T0 = time.monotonic()
    print("Spool bench: agent/wire/spool.py + agent/wire/uplink.py at default settings "
          f"(max_bytes {mib(DEFAULT_SPOOL.max_bytes)}, batch_s {DEFAULT_SPOOL.batch_s:g}, "
          f"drain_rate {DEFAULT_SPOOL.drain_rate:g}/s)", flush=True)
    work = bench_dir()
    mount, fstype, dev = filesystem(work)
    print(f"bench folder {work} on {mount} ({fstype}, {dev}); Python {sys.version.split()[0]}, "
          f"SQLite {sqlite3.sqlite_version}, paho-mqtt {version('paho-mqtt')}",
          flush=True)
    broker: Mosquitto | None = None
    results: list[tuple[str, bool, str]] = []
    try:
        progress("building realistic packs")
        day = day_schedule()
        pool = telemetry_pool(1440)
        (work / "mosquitto").mkdir()
        broker = Mosquitto(work / "mosquitto")
        broker.start()
        progress(f"{mosquitto_version(broker)} on {broker.host}:{broker.port}")

        enqueue_rates(work, pool)
        drain = drain_rates(work, broker, pool)
        day_res = backlog_24h(work, broker, day, drain["paho"])
        results.append((f"24-hour backlog drained unthrottled in <= {TARGET_BACKLOG_S:g} s",
                        bool(day_res["ok"]) and day_res["seconds"] <= TARGET_BACKLOG_S,
                        f"{day_res['seconds']:.2f} s"))
        written = bytes_per_day(work, day)
        results.append((f"<= {TARGET_BYTES_PER_DAY / 1e6:g} MB written per day at default "
                        "settings (larger of wchar, write_bytes, file growth)",
                        written["worst"] <= TARGET_BYTES_PER_DAY,
                        f"{written['worst'] / 1e6:.2f} MB"))
        mem = rss_vs_backlog(work, broker, pool)
        results.append((f"RSS with {RSS_BACKLOGS[-1]} stored <= RSS with 0 + "
                        f"{mib(TARGET_RSS_SPREAD)}", mem["delta"] <= TARGET_RSS_SPREAD,
                        f"{mem['delta'] / 1024**2:+.1f} MiB"))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        print(f"error: {exc}", flush=True)
        return 1
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print()
    for label, ok, figure in results:
        print(f"target: {label}: {'PASS' if ok else 'FAIL'} ({figure})")
    return 0 if all(ok for _, ok, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
