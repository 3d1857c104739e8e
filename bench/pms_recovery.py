"""PMS5003 frame recovery: our FrameDecoder against pimoroni's ``pms5003`` on a damaged line.

Run ``python -m bench.pms_recovery`` from the repository root (``make bench``
runs it with the others). It sends a deterministic stream of PMS5003 frames
(values as ``drivers.pms5003.emulator.default_source`` picks them: the recorded
CSV one row per frame, or the built-in urban day from midnight) through
``drivers.emulation.FaultInjector`` tuned so that about 10 % of the bytes the
sensor sent are affected: garbage inserted before or inside frames (rich in
``42 4D`` start bytes), single bit flips anywhere in a frame (start bytes and
length field included), frames cut short and frames lost. Every frame that went
out unchanged is "intact", and its byte offset in the stream is known.

Readers of the same bytes:

* ours, fed in random-size chunks (1-96 bytes, any UART read size), ``flush()``
  at the end; no timing help at all;
* ours as the daemon drives it (``drivers/pms5003/device.py``): each frame
  interval's bytes in 1-4 reads, then ``expire()`` for the silence before the
  next frame (longer than ``LINE_IDLE_S``);
* pimoroni's ``PMS5003.read()``, called in a loop as its examples and the
  daemons built on it do, every exception caught, counted and the loop carried
  on. Its constructor runs for real with the GPIO pins (``gpiodevice.get_pin``)
  stubbed and ``serial.Serial`` replaced by :class:`FakeSerial`, which serves
  the same bytes as pyserial would with pimoroni's ``timeout=4``: one frame
  interval's bytes every 2.3 s on a virtual clock, a read returns short when
  the bytes it asks for have not arrived within 4 s. Its ``time`` module is
  pointed at that clock (its 5 s start-of-frame timeout uses ``time.time()``).

A frame counts as recovered only when it is decoded at the offset where an
intact frame starts (and its values are the ones sent); a frame decoded
anywhere else is a false frame. CPU time is ``time.process_time`` around the
reading loop only (best of a few runs); pimoroni's includes the fake serial
port, whose own share is estimated by replaying the same read calls and shown.

Target (the exit code is 1 when it fails): our decoder recovers every intact
frame, with the values sent, in both modes. False frames are shown but are not
part of the target: damage can add up to a frame whose 16-bit sum still holds
(a bit flip plus garbage inside that shifts the sum by as much), which no
reader of this protocol can tell from a good frame.
"""

from __future__ import annotations

import bisect
import gc
import itertools
import random
import sys
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from unittest import mock

from drivers.emulation import FaultCounts, FaultInjector
from drivers.pms5003.codec import Ack, Event, Frame, FrameDecoder, Rejected, encode_frame
from drivers.pms5003.device import LINE_IDLE_S
from drivers.pms5003.emulator import (
    STABLE_INTERVAL_S,
    PMValues,
    builtin_profile,
    coerce_values,
    find_csv,
    replay_csv,
)

N_FRAMES = 20_000
SEED = 20251123
FRAME_LEN = 32
#: Per-frame fault rates; with up to 12 garbage bytes a burst they affect ~10 % of the bytes.
FAULTS = {"noise": 0.30, "checksum": 0.10, "truncate": 0.04, "drop": 0.02}
MAX_NOISE_BYTES = 12
CHUNK_MAX = 96  # random read sizes for the stream mode: 1..CHUNK_MAX bytes
READS_PER_INTERVAL = 4  # daemon mode: one frame interval's bytes arrive in 1..4 reads
PIMORONI_TIMEOUT_S = 4.0  # serial.Serial(device, baudrate=9600, timeout=4) in pms5003.setup()
REPEATS = 5  # CPU figures are the best of this many runs (the results are identical)
SHOW_LOST = 5  # lost intact frames of ours to print in full


# -- the stream --------------------------------------------------------------------------
@dataclass(slots=True)
class Stream:
    data: bytes
    #: End offset of each frame interval's bytes (what arrives together on the line).
    interval_ends: list[int]
    #: Offset of every intact frame -> the values it carries.
    intact: dict[int, PMValues]
    #: The values of every frame sent, in order (frame i went out in interval i).
    sent: list[PMValues]
    source: str
    sent_bytes: int = 0
    noise_bytes: int = 0
    flipped_bytes: int = 0
    lost_bytes: int = 0
    #: Intact frames the injector counted as damaged (garbage inside that ended like them).
    rescued: int = 0
    counts: FaultCounts = field(default_factory=FaultCounts)

    @property
    def affected_bytes(self) -> int:
        return self.noise_bytes + self.flipped_bytes + self.lost_bytes


def build_stream(n: int = N_FRAMES, seed: int = SEED) -> Stream:
    """``n`` frames from the emulator's value source, damaged by a seeded FaultInjector."""
    # As default_source() picks it, but the built-in day starts at midnight, not now.
    path = find_csv()
    src = replay_csv(path, speed=None) if path else builtin_profile(seed, start_hour=0.0)
    inj = FaultInjector(**FAULTS, seed=seed, max_noise_bytes=MAX_NOISE_BYTES, header_len=0,
                        record=0)
    c = inj.counts
    buf = bytearray()
    ends: list[int] = []
    intact: dict[int, PMValues] = {}
    sent: list[PMValues] = []
    noise = flipped = lost = rescued = 0
    for i in range(n):
        values = coerce_values(src(i * STABLE_INTERVAL_S))
        raw = encode_frame(*values.masses, counts=values.counts)
        was_intact, was_noise, was_flip = c.intact, c.noise_bytes, c.checksum
        out = inj.apply(raw)
        added = c.noise_bytes - was_noise
        noise += added
        flipped += c.checksum - was_flip
        lost += len(raw) + added - len(out)  # cut tails and lost frames
        # Intact: the frame's 32 bytes are on the wire unchanged. Besides the chunks the
        # injector left intact (garbage before the frame at most), that takes in garbage
        # inserted inside a frame that happens to end with the frame's own first bytes
        # (42, or 42 4D): the whole frame still follows the garbage.
        at = out.rfind(raw)
        if at >= 0:
            intact[len(buf) + at] = values
            rescued += c.intact == was_intact
        else:
            assert c.intact == was_intact
        sent.append(values)
        buf += out
        ends.append(len(buf))
    return Stream(bytes(buf), ends, intact, sent, getattr(src, "description", repr(src)),
                  sent_bytes=n * FRAME_LEN, noise_bytes=noise, flipped_bytes=flipped,
                  lost_bytes=lost, rescued=rescued, counts=c)


def frame_values(f: Frame) -> tuple[int, ...]:
    return (f.pm1_cf1, f.pm25_cf1, f.pm10_cf1, f.pm1, f.pm25, f.pm10, f.n0_3, f.n0_5,
            f.n1_0, f.n2_5, f.n5_0, f.n10)


def sent_values(v: PMValues) -> tuple[int, ...]:
    return (*v.masses, *v.counts)


# -- results -----------------------------------------------------------------------------
@dataclass(slots=True)
class Result:
    label: str
    cpu_s: float
    recovered: int = 0
    false_frames: list[int] = field(default_factory=list)  # offsets
    false_sent_values: int = 0  # false frames whose values are those sent in that interval
    false_acks: int = 0
    wrong_values: int = 0
    lost: list[int] = field(default_factory=list)  # offsets of intact frames not recovered
    discarded: int = 0
    exceptions: Counter[str] = field(default_factory=Counter)
    harness_s: float = 0.0  # CPU spent in the fake serial port (pimoroni only)
    reads: int = 0  # serial read() calls (pimoroni only)
    notes: list[str] = field(default_factory=list)


def _score(res: Result, stream: Stream, decoded: list[tuple[int, tuple[int, ...]]]) -> None:
    """Match frames decoded at (offset, values) against the intact frames."""
    found = set()
    for off, vals in decoded:
        sent = stream.intact.get(off)
        if sent is None:
            res.false_frames.append(off)
            # A damaged frame passing the checksum may still carry what was sent there.
            k = bisect.bisect_right(stream.interval_ends, off)
            if k < len(stream.sent) and vals == sent_values(stream.sent[k]):
                res.false_sent_values += 1
            continue
        found.add(off)
        res.recovered += 1
        if vals != sent_values(sent):
            res.wrong_values += 1
    res.lost = sorted(set(stream.intact) - found)


@contextmanager
def _no_gc() -> Iterator[None]:
    """Time without the cyclic collector, as timeit does (both readers alike)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# -- ours --------------------------------------------------------------------------------
def _random_chunks(data: bytes, rng: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rng.randint(1, CHUNK_MAX)
        out.append(data[i:i + n])
        i += n
    return out


def _daemon_reads(stream: Stream, rng: random.Random) -> list[list[bytes]]:
    """Each frame interval's bytes, split as 1..READS_PER_INTERVAL serial reads."""
    reads, start = [], 0
    for end in stream.interval_ends:
        k = min(rng.randint(1, READS_PER_INTERVAL), max(end - start, 1))
        cuts = sorted(rng.sample(range(start + 1, end), k - 1)) if k > 1 else []
        bounds = [start, *cuts, end]
        reads.append([stream.data[a:b] for a, b in itertools.pairwise(bounds)])
        start = end
    return reads


def run_ours_stream(chunks: list[bytes]) -> tuple[float, list[Event], FrameDecoder]:
    dec = FrameDecoder()
    events: list[Event] = []
    with _no_gc():
        t0 = time.process_time()
        for chunk in chunks:
            events += dec.feed(chunk)
        events += dec.flush()
        cpu = time.process_time() - t0
    return cpu, events, dec


def run_ours_daemon(reads: list[list[bytes]]) -> tuple[float, list[Event], FrameDecoder]:
    dec = FrameDecoder()
    events: list[Event] = []
    with _no_gc():
        t0 = time.process_time()
        for interval in reads:
            for chunk in interval:
                events += dec.feed(chunk)
            if dec.buffered:  # 2.3 s of silence before the next frame > LINE_IDLE_S
                events += dec.expire()
        events += dec.flush()
        cpu = time.process_time() - t0
    return cpu, events, dec


def score_ours(label: str, stream: Stream, runs: list[tuple[float, list[Event], FrameDecoder]]
               ) -> tuple[Result, list[tuple[int, Event]]]:
    cpu = min(r[0] for r in runs)
    _, events, dec = runs[0]
    res = Result(label, cpu, discarded=dec.counters.discarded_bytes)
    placed: list[tuple[int, Event]] = []
    decoded = []
    off = 0
    for ev in events:
        placed.append((off, ev))
        if isinstance(ev, Frame):
            decoded.append((off, frame_values(ev)))
            off += len(ev.raw)
        elif isinstance(ev, Ack):
            res.false_acks += 1
            off += len(ev.raw)
        else:
            off += len(ev.data)
    if off != len(stream.data):
        res.notes.append(f"events account for {off} bytes of {len(stream.data)}")
    _score(res, stream, decoded)
    return res, placed


# -- pimoroni ------------------------------------------------------------------------------
class FakeSerial:
    """The bytes of :class:`Stream` as ``serial.Serial(..., timeout=4)`` hands them out.

    Frame interval ``k`` arrives whole at ``(k + 1) * 2.3`` s on a virtual clock;
    ``read(n)`` returns at once when ``n`` bytes have arrived, else waits for
    them up to the timeout and returns what it has (as pyserial does).
    """

    def __init__(self, stream: Stream, timeout: float = PIMORONI_TIMEOUT_S) -> None:
        self.data = stream.data
        self.ends = stream.interval_ends
        self.timeout = timeout
        self.pos = 0  # next byte to hand out
        self.avail = 0  # bytes arrived so far
        self.k = 0  # next frame interval to arrive
        self.t = 0.0

    # pimoroni's use of the time module, on this clock
    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s

    def read(self, size: int = 1) -> bytes:
        pos = self.pos
        end = pos + size
        if end <= self.avail:
            self.pos = end
            return self.data[pos:end]
        return self._wait(pos, end)

    def _wait(self, pos: int, end: int) -> bytes:
        deadline = self.t + self.timeout
        ends, k = self.ends, self.k
        while self.avail < end and k < len(ends) and (k + 1) * STABLE_INTERVAL_S <= deadline:
            self.t = max(self.t, (k + 1) * STABLE_INTERVAL_S)
            self.avail = ends[k]
            k += 1
        self.k = k
        if self.avail < end:
            self.t = deadline
            end = self.avail
        self.pos = end
        return self.data[pos:end]

    def flushInput(self) -> None:  # pyserial's old name, which pimoroni calls
        self.pos = self.avail

    reset_input_buffer = flushInput

    def close(self) -> None:
        pass


class RecordingSerial(FakeSerial):
    """Same bytes, same clock; remembers each read (for the diagnosis, never timed)."""

    def __init__(self, stream: Stream) -> None:
        super().__init__(stream)
        self.calls: list[tuple[int, int]] = []  # (offset, size asked)
        self.time_calls = 0

    def now(self) -> float:
        self.time_calls += 1
        return self.t

    def read(self, size: int = 1) -> bytes:
        self.calls.append((self.pos, size))
        return super().read(size)


#: cpu, (offset, values) of each frame returned, exceptions by type, (offset, exception), port
PimoroniRun = tuple[float, list[tuple[int, tuple[int, ...]]], Counter[str],
                    list[tuple[int, str]], FakeSerial]


class _FakeLines:
    """What ``gpiodevice.get_pin`` hands back: pimoroni only calls set_value on it."""

    def set_value(self, offset: int, value: object) -> None:
        pass


def import_pimoroni() -> tuple[types.ModuleType | None, str]:
    """The pms5003 module and how it was obtained ("" when it imported as installed)."""
    try:
        import pms5003
        return pms5003, ""
    except ModuleNotFoundError as exc:
        if exc.name == "pms5003":
            return None, "not installed (pip install pms5003, or the bench extra)"
        missing = exc.name
    except ImportError as exc:  # gpiod without a usable libgpiod on this platform
        missing = str(exc)
    # Its GPIO modules are missing or broken here: stub exactly what pms5003 imports.
    line = types.ModuleType("gpiod.line")
    line.Direction = types.SimpleNamespace(OUTPUT="output")  # type: ignore[attr-defined]
    line.Value = types.SimpleNamespace(ACTIVE=1, INACTIVE=0)  # type: ignore[attr-defined]
    gpiod = types.ModuleType("gpiod")
    gpiod.LineSettings = lambda **kw: kw  # type: ignore[attr-defined]
    gpiod.line = line  # type: ignore[attr-defined]
    gpiodevice = types.ModuleType("gpiodevice")
    gpiodevice.get_pin = lambda pin, label, settings: (_FakeLines(), 0)  # type: ignore[attr-defined]
    stubs = {"gpiod": gpiod, "gpiod.line": line, "gpiodevice": gpiodevice}
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        import pms5003
    except ImportError as exc:
        return None, f"cannot be imported even with GPIO modules stubbed: {exc}"
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return pms5003, f"gpiod/gpiodevice stubbed as modules ({missing})"


def run_pimoroni(pms5003: types.ModuleType, stream: Stream,
                 serial_factory: Callable[[Stream], FakeSerial]) -> PimoroniRun:
    """Construct pimoroni's PMS5003 on stubbed GPIO and a fake port; read() until the end."""
    ser = serial_factory(stream)
    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(
            pms5003.gpiodevice, "get_pin", lambda pin, label, settings: (_FakeLines(), 0)))
        stack.enter_context(mock.patch.object(pms5003.serial, "Serial", lambda *a, **k: ser))
        stack.enter_context(mock.patch.object(
            pms5003, "time", types.SimpleNamespace(time=ser.now, sleep=ser.sleep)))
        sensor = pms5003.PMS5003(device="/dev/fake-ttyAMA0")
        read = sensor.read
        end = len(stream.data)
        decoded: list[tuple[int, tuple[int, ...]]] = []
        errors: Counter[str] = Counter()
        raised: list[tuple[int, str]] = []  # (offset reached, exception)
        stack.enter_context(_no_gc())
        t0 = time.process_time()
        while ser.pos < end:
            try:
                data = read()
            except Exception as exc:  # as a daemon must: log, count, read on
                errors[type(exc).__name__] += 1
                raised.append((ser.pos, type(exc).__name__))
                continue
            decoded.append((ser.pos - FRAME_LEN, data.data[:12]))
        cpu = time.process_time() - t0
    return cpu, decoded, errors, raised, ser


def harness_cpu(stream: Stream, calls: list[tuple[int, int]], time_calls: int) -> float:
    """CPU the fake port and clock take for the same calls pimoroni made (loop cost removed)."""
    sizes = [n for _, n in calls]
    ser = FakeSerial(stream)
    ser.sleep(0.2)  # pimoroni's reset() before its first read
    read, now = ser.read, ser.now
    reps = range(time_calls)
    with _no_gc():
        t0 = time.process_time()
        for n in sizes:
            read(n)
        for _ in reps:
            now()
        t1 = time.process_time()
        for _n in sizes:
            pass
        for _ in reps:
            pass
        t2 = time.process_time()
    return max(0.0, (t1 - t0) - (t2 - t1))


def score_pimoroni(stream: Stream, runs: list[PimoroniRun], recorded: PimoroniRun,
                   harness: list[float]) -> tuple[Result, dict[str, int]]:
    """Timed runs, plus one untimed run that remembered every read (for the diagnosis)."""
    _, decoded, errors, raised, rec = recorded
    assert isinstance(rec, RecordingSerial)
    for run in runs:
        assert run[1] == decoded and run[3] == raised, "pimoroni run is not deterministic"
    res = Result("pimoroni pms5003 " + _version("pms5003") + ", read() loop",
                 min(r[0] for r in runs), exceptions=errors, harness_s=min(harness),
                 reads=len(rec.calls))
    _score(res, stream, decoded)
    res.discarded = len(stream.data) - FRAME_LEN * len(decoded)
    return res, _why_lost(stream, res.lost, rec.calls, raised)


def _why_lost(stream: Stream, lost: list[int], calls: list[tuple[int, int]],
              raised: list[tuple[int, str]]) -> dict[str, int]:
    """Which pimoroni read consumed the first byte of each intact frame it did not return."""
    starts = [p for p, _ in calls]
    timeouts = {p for p, name in raised if name == "ReadTimeoutError"}
    why: Counter[str] = Counter()
    for off in lost:
        # The last read starting at or before `off` is the one that consumed it (reads
        # that returned nothing start where the next one does).
        _, size = calls[bisect.bisect_right(starts, off) - 1]
        if size == 1:
            if off + 1 in timeouts:
                why["its 42 was the last byte read before a ReadTimeoutError (5 s without "
                    "a start)"] += 1
            elif off and stream.data[off - 1] == 0x42:
                why["its 42 taken for the 2nd start byte after a 42: the search restarts "
                    "on the next byte"] += 1
            else:
                why["skipped by the start-of-frame search"] += 1
        elif size == 2:
            why["swallowed as the length field of a false start"] += 1
        else:
            why["swallowed by the body of an earlier (damaged or false) frame"] += 1
    return dict(why)


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


# -- the report ----------------------------------------------------------------------------
def _describe_loss(stream: Stream, placed: list[tuple[int, Event]], off: int) -> list[str]:
    """The events around an intact frame our decoder did not return."""
    lines = [f"  intact frame at byte {off}: {stream.data[off:off + FRAME_LEN].hex(' ')}"]
    for p, ev in placed:
        size = len(ev.data) if isinstance(ev, Rejected) else len(ev.raw)
        if p + size <= off - 40 or p >= off + FRAME_LEN + 8:
            continue
        if isinstance(ev, Rejected):
            what = f"rejected {size} B: {ev.reason}"
        else:
            what = f"{type(ev).__name__} {size} B"
        lines.append(f"    @{p:>7}  {what}  [{stream.data[p:p + min(size, 40)].hex(' ')}]")
        if isinstance(ev, Frame | Ack) and p < off < p + size:
            # Accepted over this frame's start: would the decoder have chosen the same
            # had the bytes of both been in its buffer at once?
            span = stream.data[p:off + FRAME_LEN]
            again = FrameDecoder()
            evs = again.feed(span) + again.flush()
            got = [e for e in evs if isinstance(e, Frame) and e.raw == span[-FRAME_LEN:]]
            lines.append(
                f"      ^ this {size}-byte frame passed its checksum with the intact frame's "
                f"first {p + size - off} byte(s) as its last; fed these {len(span)} bytes at "
                f"once, the decoder "
                + ("returns the intact frame instead: the outcome depends on where reads "
                   "end (a frame starting inside an accepted one is only looked for when "
                   "it is complete in the buffer)" if got else "still loses the intact frame"))
    return lines


def main() -> int:
    t_start = time.monotonic()
    stream = build_stream()
    c = stream.counts
    n_intact = len(stream.intact)
    print(f"PMS5003 frame recovery on a damaged line: {N_FRAMES:,} frames "
          f"({stream.sent_bytes:,} bytes sent, {len(stream.data):,} on the wire), seed {SEED}")
    print(f"values: {stream.source}")
    print(f"faults per frame: {', '.join(f'{k} {v:g}' for k, v in FAULTS.items())}; "
          f"garbage 1-{MAX_NOISE_BYTES} bytes a burst, bit flips anywhere in the frame")
    print(f"affected bytes: {stream.affected_bytes:,} = "
          f"{stream.affected_bytes / stream.sent_bytes:.1%} of the bytes sent "
          f"({stream.noise_bytes:,} garbage inserted in {c.noise:,} bursts, {c.noise_inside:,} "
          f"inside a frame; {stream.flipped_bytes:,} bit-flipped; {stream.lost_bytes:,} lost "
          f"to {c.truncate:,} cut and {c.drop:,} dropped frames)")
    print(f"intact frames (all 32 bytes on the wire unchanged): {n_intact:,} of {N_FRAMES:,} "
          f"({n_intact / N_FRAMES:.1%}; {stream.rescued} of them are frames the injector counts "
          f"as damaged, whose inserted garbage ends with their own 42 or 42 4D); the other "
          f"frames cannot be recovered by anyone\n")

    rng = random.Random(SEED)
    chunks = _random_chunks(stream.data, rng)
    reads = _daemon_reads(stream, rng)
    pms5003, how = import_pimoroni()
    recorded = run_pimoroni(pms5003, stream, RecordingSerial) if pms5003 else None
    calls = recorded[4].calls if recorded and isinstance(recorded[4], RecordingSerial) else []
    time_calls = recorded[4].time_calls if recorded and isinstance(
        recorded[4], RecordingSerial) else 0
    # Interleaved, so that a busy moment on the machine hits every reader alike.
    stream_runs, daemon_runs, pim_runs, harness = [], [], [], []
    for _ in range(REPEATS):
        stream_runs.append(run_ours_stream(chunks))
        daemon_runs.append(run_ours_daemon(reads))
        if pms5003 is not None:
            pim_runs.append(run_pimoroni(pms5003, stream, FakeSerial))
            harness.append(harness_cpu(stream, calls, time_calls))
    ours_stream, placed_stream = score_ours(
        f"ours, random reads of 1-{CHUNK_MAX} B", stream, stream_runs)
    ours_daemon, placed_daemon = score_ours(
        f"ours, daemon: 1-{READS_PER_INTERVAL} reads/frame, expire()", stream, daemon_runs)
    results = [ours_stream, ours_daemon]
    why_lost: dict[str, int] = {}
    if pms5003 is None or recorded is None:
        print(f"pimoroni pms5003: skipped, {how}\n")
    else:
        pim, why_lost = score_pimoroni(stream, pim_runs, recorded, harness)
        results.append(pim)

    ref = ours_stream
    width = max(len(r.label) for r in results)
    head = (f"{'reader':<{width}}  {'recovered':>16}  {'lost':>5}  {'false':>5}  "
            f"{'us/intact':>9}  {'us/recov':>8}  {'CPU vs ours':>11}  {'discarded B':>11}")
    print(head)
    print("-" * len(head))
    for r in results:
        per_intact = r.cpu_s / n_intact * 1e6
        per_rec = r.cpu_s / r.recovered * 1e6 if r.recovered else float("nan")
        rec = f"{r.recovered:,} {r.recovered / n_intact:7.2%}"
        print(f"{r.label:<{width}}  {rec:>16}  {len(r.lost):>5}  {len(r.false_frames):>5}  "
              f"{per_intact:>9.2f}  {per_rec:>8.2f}  {r.cpu_s / ref.cpu_s:>10.2f}x  "
              f"{r.discarded:>11,}")
    print(f"(recovered: decoded at the offset of an intact frame, of {n_intact:,}; false: decoded "
          f"anywhere else; us: CPU microseconds per intact frame sent / per frame recovered, "
          f"best of {REPEATS}; CPU vs ours: against the first row)")

    print()
    for r in results:
        extra = []
        if r.wrong_values:
            extra.append(f"{r.wrong_values} recovered frames with wrong values")
        if r.false_frames:
            extra.append(f"of its {len(r.false_frames)} false frame(s), {r.false_sent_values} "
                         f"carry the values sent in that interval (a damaged frame that passed "
                         f"the checksum), {len(r.false_frames) - r.false_sent_values} values "
                         f"never sent")
        if r.false_acks:
            extra.append(f"{r.false_acks} false acks")
        extra += r.notes
        if extra:
            print(f"* {r.label}: {'; '.join(extra)}")
    if pms5003 is not None:
        pim = results[-1]
        stub = how or ("installed package imported as is; GPIO pins stubbed at "
                       "gpiodevice.get_pin, so its constructor (setup(), reset()) runs")
        print(f"* pimoroni: {stub}; serial.Serial replaced by a fake port (timeout 4 s, one "
              f"frame interval every {STABLE_INTERVAL_S} s on a virtual clock that its "
              f"time.time() also reads)")
        exc = ", ".join(f"{k} {v:,}" for k, v in pim.exceptions.most_common()) or "none"
        print(f"* pimoroni: exceptions caught and read() called again: {exc}")
        if pim.exceptions.get("error"):
            print("  (struct.error is not one of pimoroni's exception classes: a length field "
                  "other than 28 reaches struct.unpack; a daemon that catches only "
                  "ChecksumMismatchError/ReadTimeoutError/SerialTimeoutError dies on it)")
        if why_lost:
            print("* pimoroni: how its lost intact frames were lost:")
            for k, v in sorted(why_lost.items(), key=lambda kv: -kv[1]):
                print(f"    {v:>5,}  {k}")
        share = pim.harness_s / pim.cpu_s if pim.cpu_s else 0.0
        net = max(pim.cpu_s - pim.harness_s, 0.0)
        print(f"* pimoroni CPU includes the fake port and clock: about {share:.0%} of it "
              f"(replayed alone); without them {net / n_intact * 1e6:.2f} us per intact frame, "
              f"{net / ref.cpu_s:.2f}x ours. It made {pim.reads:,} read() calls "
              f"({pim.reads / max(pim.recovered, 1):.1f} per frame returned, most of them "
              f"one byte); on a real port each goes through pyserial's select() and os.read().")

    for r, placed in ((ours_stream, placed_stream), (ours_daemon, placed_daemon)):
        if r.lost or r.false_frames:
            print(f"\n{r.label}: {len(r.lost)} intact frame(s) lost, {len(r.false_frames)} "
                  f"false frame(s); the events around the first {min(SHOW_LOST, len(r.lost))} "
                  f"lost:")
            for off in r.lost[:SHOW_LOST]:
                for line in _describe_loss(stream, placed, off):
                    print(line)
            for off in r.false_frames[:SHOW_LOST]:
                print(f"  false frame at byte {off}: {stream.data[off:off + FRAME_LEN].hex(' ')}")

    print()
    ok = True
    for r in (ours_stream, ours_daemon):
        good = not r.lost and not r.wrong_values
        ok &= good
        print(f"target: every intact frame recovered ({r.label}): {'PASS' if good else 'FAIL'} "
              f"({r.recovered:,}/{n_intact:,}; false frames, not a target: "
              f"{len(r.false_frames)})")
    print(f"(bench took {time.monotonic() - t_start:.1f} s; LINE_IDLE_S {LINE_IDLE_S} s)")
    return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
