"""The PMS5003 itself, emulated: the device side of the protocol, with no I/O.

Behaviour follows the datasheet and what field drivers learned (see
``sensor-protocols.md`` section 1): it powers up in active mode and streams a
32-byte frame every 2.3 s ("stable mode"); E1 00 / E1 01 switch to passive /
active mode with an 8-byte ack; E2 asks for one frame in passive mode; E4 00
puts it to sleep (ack, then silence); E4 01 wakes it *without* an ack and back
in **active** mode, whatever mode it was in, and its first frames after a wake
are zeros, then noisy, for ``warmup_s``. Commands with a bad checksum are
ignored, as the real sensor does. Commands may arrive split or glued together.

Run it behind a pty with :class:`drivers.emulation.SerialEmulator`::

    >>> from drivers.emulation import SerialEmulator
    >>> emu = SerialEmulator(PMS5003Model(default_source()), "/tmp/citynode/pms0")
    >>> emu.start()

Values come from a *source*: :func:`replay_csv` replays a real recording,
:func:`builtin_profile` makes up a plausible urban day, :func:`default_source`
picks the first that is available.
"""

from __future__ import annotations

import csv
import itertools
import logging
import math
import numbers
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from ..emulation import uart
from .codec import CMD_MODE, CMD_POWER, CMD_READ, START, encode_ack, encode_frame, parse_command

log = logging.getLogger(__name__)

#: Where the recorded data lives relative to the repository root, and the
#: environment variable that overrides it.
CSV_ENV = "CITYNODE_PMS5003_CSV"
CSV_RELATIVE = Path("..") / "shared" / "data" / "pms5003" / "pms5003_tidy.csv"
STABLE_INTERVAL_S = 2.3  # datasheet: "stable mode" frame interval
WARMUP_S = 30.0  # datasheet: stable data at least 30 s after wake-up


#: Field names of one frame's values, as in :class:`drivers.pms5003.Frame`.
VALUE_NAMES = (
    "pm1_cf1", "pm25_cf1", "pm10_cf1", "pm1", "pm25", "pm10",
    "n0_3", "n0_5", "n1_0", "n2_5", "n5_0", "n10",
)


class PMValues(NamedTuple):
    """One frame's worth of values: µg/m³ (CF=1 and atmospheric), counts per 0.1 L."""

    pm1_cf1: int
    pm25_cf1: int
    pm10_cf1: int
    pm1: int
    pm25: int
    pm10: int
    counts: tuple[int, int, int, int, int, int] = (0, 0, 0, 0, 0, 0)

    @property
    def masses(self) -> tuple[int, int, int, int, int, int]:
        return (self.pm1_cf1, self.pm25_cf1, self.pm10_cf1, self.pm1, self.pm25, self.pm10)

    def as_dict(self) -> dict[str, int]:
        """Named like the fields of :class:`drivers.pms5003.Frame` and the driver's quantities."""
        return dict(zip(VALUE_NAMES, (*self.masses, *self.counts), strict=True))


ZERO = PMValues(0, 0, 0, 0, 0, 0)

#: A source is called with the model's clock and returns the next values; an
#: iterator of values (or of 6/12-tuples) is accepted too.
Source = Callable[[float], PMValues]
SourceLike = Source | Iterable[PMValues] | Iterable[tuple[int, ...]]


def counts_from_masses(pm1: float, pm25: float, pm10: float) -> tuple[int, ...]:
    """Plausible particle counts (per 0.1 L, >0.3 ... >10 µm) for CF=1 masses.

    Fitted by eye to published real frames (e.g. 3/4/7 µg/m³ gave 795, 249,
    27, 6, 3, 3); counts never increase with size, as on the real sensor.
    """
    fine = max(pm1, 0.0)
    mid = max(pm25 - pm1, 0.0)
    coarse = max(pm10 - pm25, 0.0)
    raw = (
        260 * fine + 30 * mid + 20,
        80 * fine + 12 * mid + 5,
        6 * fine + 4 * mid + 0.5 * coarse,
        2.5 * mid + 1.0 * coarse,
        0.8 * coarse,
        0.3 * coarse,
    )
    out: list[int] = []
    ceiling = 0xFFFF
    for v in raw:
        ceiling = min(ceiling, max(0, round(v)))
        out.append(ceiling)
    return tuple(out)


def atm_from_cf1(cf1: float) -> float:
    """PMS5003 "atmospheric" value from the CF=1 value: equal up to ~30 µg/m³, then lower.

    Matches the relation in the recorded CSV within a few µg/m³.
    """
    if cf1 <= 30:
        return cf1
    return max(cf1 * 2 / 3, 30 + (cf1 - 30) * 0.5)


def values_from_cf1(pm1_cf1: float, pm25_cf1: float, pm10_cf1: float) -> PMValues:
    """Complete a frame (atmospheric values, counts) from the three CF=1 masses."""
    c = [max(0, min(0xFFFF, round(v))) for v in (pm1_cf1, pm25_cf1, pm10_cf1)]
    c[1] = max(c[1], c[0])
    c[2] = max(c[2], c[1])
    atm = [round(atm_from_cf1(v)) for v in c]
    return PMValues(*c, *atm, counts_from_masses(*c))  # type: ignore[arg-type]


def coerce_values(v: PMValues | tuple[int, ...]) -> PMValues:
    """Accept a :class:`PMValues`, 6 masses (counts made up), or 6 masses + 6 counts.

    The counts may also come as a 7th item holding a 6-tuple; numbers are rounded to ints.
    """
    if isinstance(v, PMValues):
        return v
    if len(v) == 7 and isinstance(v[6], (tuple, list)) and len(v[6]) == 6:
        v = (*v[:6], *v[6])
    if len(v) in (6, 12) and all(isinstance(x, numbers.Real) for x in v):
        t = tuple(round(x) for x in v)
        if len(t) == 6:
            return PMValues(*t, counts_from_masses(*t[:3]))  # type: ignore[arg-type]
        return PMValues(*t[:6], t[6:])  # type: ignore[arg-type]
    raise ValueError(f"PMS5003 values need 6 masses (+ 6 counts), got {v!r}")


def as_source(source: SourceLike) -> Source:
    """Turn a callable or an iterable of values into a :data:`Source`."""
    return uart.as_source(source, coerce_values)


# -- sources -------------------------------------------------------------------
class CsvReplay:
    """Replay a ``pms5003_tidy.csv`` recording, looping at the end.

    ``speed`` is recording seconds per emulator second (1 = real time, 300 = a
    5-minute row every second); ``None`` moves on one row per frame. Gaps longer
    than ``max_gap_s`` (logger off for days) are squeezed to the median step.
    """

    COLUMNS = ("pm1_cf1", "pm25_cf1", "pm10_cf1", "pm1_atm", "pm25_atm", "pm10_atm")

    def __init__(
        self, path: str | os.PathLike[str], speed: float | None = 1.0, max_gap_s: float = 900.0
    ) -> None:
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive (or None for one row per frame)")
        self.path = Path(path)
        self.speed = speed
        self.rows, times = self._load(self.path)
        steps = sorted(b - a for a, b in itertools.pairwise(times) if b > a)
        median = steps[(len(steps) - 1) // 2] if steps else 1.0  # lower median
        # Replay offsets: real spacing, except long gaps become one median step.
        self.offsets = [0.0]
        for a, b in itertools.pairwise(times):
            gap = b - a
            self.offsets.append(self.offsets[-1] + (median if gap > max_gap_s else max(gap, 0.0)))
        self.duration = self.offsets[-1] + median
        self._t0: float | None = None
        self._row = -1

    @classmethod
    def _load(cls, path: Path) -> tuple[list[PMValues], list[float]]:
        rows: list[tuple[float, PMValues]] = []
        skipped = 0
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            have = reader.fieldnames or ()
            missing = [c for c in ("datetime_local", *cls.COLUMNS) if c not in have]
            if missing:
                raise ValueError(f"{path}: missing columns {missing}")
            for rec in reader:
                try:
                    t = datetime.fromisoformat(rec["datetime_local"]).timestamp()
                    m = [int(float(rec[c])) for c in cls.COLUMNS]
                except (TypeError, ValueError):
                    skipped += 1
                    continue
                if any(not 0 <= v <= 0xFFFF for v in m):
                    skipped += 1
                    continue
                rows.append((t, PMValues(*m, counts_from_masses(*m[:3]))))  # type: ignore[arg-type]
        if not rows:
            raise ValueError(f"{path}: no usable rows")
        if skipped:
            log.warning("%s: skipped %d unusable rows", path, skipped)
        rows.sort(key=lambda r: r[0])
        return [v for _, v in rows], [t for t, _ in rows]

    @property
    def description(self) -> str:
        pace = "one row per frame" if self.speed is None else f"speed x{self.speed:g}"
        return f"replay of {self.path} ({len(self.rows)} rows, {pace})"

    def __call__(self, now: float) -> PMValues:
        if self.speed is None:
            self._row = (self._row + 1) % len(self.rows)
            return self.rows[self._row]
        if self._t0 is None:
            self._t0 = now
        t = ((now - self._t0) * self.speed) % self.duration
        lo, hi = 0, len(self.offsets) - 1
        while lo < hi:  # last row with offset <= t
            mid = (lo + hi + 1) // 2
            if self.offsets[mid] <= t:
                lo = mid
            else:
                hi = mid - 1
        return self.rows[lo]


def replay_csv(
    path: str | os.PathLike[str], speed: float | None = 1.0, max_gap_s: float = 900.0
) -> CsvReplay:
    """A source replaying a recorded ``pms5003_tidy.csv`` (see :class:`CsvReplay`)."""
    return CsvReplay(path, speed=speed, max_gap_s=max_gap_s)


class DiurnalProfile:
    """Made-up but plausible urban PM: a daily cycle, weather drift, noise, spikes.

    Background PM2.5 (CF=1) around 12 µg/m³ with a morning rush-hour peak, a
    bigger evening peak (traffic, heating, the boundary layer settling) and a
    clean early morning; slow log-normal drift over hours; a few short plumes
    (a bus idling, a barbecue) a day. Seeded, so a run can be repeated.
    """

    def __init__(
        self,
        seed: int | None = 0,
        *,
        base: float = 12.0,
        start_hour: float | None = None,
        speed: float = 1.0,
        spikes_per_day: float = 6.0,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.seed = seed
        self.rng = random.Random(seed)
        self.base = base
        self.speed = speed
        self.spikes_per_day = spikes_per_day
        if start_hour is None:
            lt = time.localtime()
            start_hour = lt.tm_hour + lt.tm_min / 60 + lt.tm_sec / 3600
        self.start_hour = start_hour % 24
        self._t0: float | None = None
        self._last = 0.0
        self._drift = 0.0  # log-scale, hours
        self._noise = 0.0  # log-scale, minutes
        self._spike = 0.0  # µg/m³, decays over minutes

    @property
    def description(self) -> str:
        return f"built-in diurnal urban profile (seed {self.seed}, speed x{self.speed:g})"

    def cycle(self, hour: float) -> float:
        """Daily shape, a multiplier around 1 (about 0.6 at 4 am, 1.9 at 8 pm)."""

        def bump(centre: float, width: float) -> float:
            d = (hour - centre + 12) % 24 - 12
            return math.exp(-0.5 * (d / width) ** 2)

        return 0.6 + 0.6 * bump(8.0, 1.3) + 1.3 * bump(20.0, 2.5) + 0.2 * bump(13.0, 3.0)

    def __call__(self, now: float) -> PMValues:
        if self._t0 is None:
            self._t0 = self._last = now
        dt = max(0.0, now - self._last) * self.speed  # simulated seconds
        self._last = now
        rng = self.rng
        self._drift = _ou(self._drift, dt, 4 * 3600.0, 0.35, rng)
        self._noise = _ou(self._noise, dt, 120.0, 0.12, rng)
        self._spike *= math.exp(-dt / 300.0)
        if rng.random() < 1 - math.exp(-dt * self.spikes_per_day / 86400.0):
            self._spike += rng.uniform(15.0, 120.0)
        hour = (self.start_hour + (now - self._t0) * self.speed / 3600.0) % 24
        pm25 = self.base * self.cycle(hour) * math.exp(self._drift + self._noise) + self._spike
        # Combustion plumes are mostly fine particles; background has some coarse dust.
        fine_share = 0.62 + 0.3 * min(self._spike / max(pm25, 1e-6), 1.0)
        pm1 = pm25 * min(fine_share * rng.uniform(0.95, 1.05), 1.0)
        pm10 = pm25 * rng.uniform(1.08, 1.2) + 2.0 * math.exp(self._noise)
        return values_from_cf1(pm1, pm25, pm10)


def _ou(x: float, dt: float, tau: float, sigma: float, rng: random.Random) -> float:
    """One exact step of an Ornstein-Uhlenbeck process (mean 0, stationary sd ``sigma``)."""
    if dt <= 0:
        return x
    a = math.exp(-dt / tau)
    return x * a + sigma * math.sqrt(1 - a * a) * rng.gauss(0.0, 1.0)


def builtin_profile(seed: int | None = 0, **kwargs: float) -> DiurnalProfile:
    """A source of plausible urban values for when no recording is at hand."""
    return DiurnalProfile(seed, **kwargs)


def find_csv() -> Path | None:
    """The recording to replay: ``$CITYNODE_PMS5003_CSV``, else ../shared/data beside the repo."""
    env = os.environ.get(CSV_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            # Explicitly configured and wrong: say so rather than quietly make data up.
            raise FileNotFoundError(f"{CSV_ENV}={env}: no such file")
        return p
    repo_root = Path(__file__).resolve().parents[2]
    p = repo_root / CSV_RELATIVE
    return p if p.is_file() else None


def default_source(seed: int | None = 0, speed: float | None = 1.0) -> Source:
    """Replay the recorded CSV if it can be found, else the built-in profile."""
    path = find_csv()
    if path is not None:
        src: Source = replay_csv(path, speed=speed)
    else:
        src = builtin_profile(seed, speed=speed or 1.0)
    log.info("PMS5003 emulator values: %s", getattr(src, "description", src))
    return src


# -- the device ----------------------------------------------------------------
#: A data frame the model sent (``solicited``: a reply to E2 in passive mode).
SentFrame = uart.SentFrame


class PMS5003Model:
    """Device side of a PMS5003 (implements :class:`drivers.emulation.DeviceModel`).

    ``receive`` and ``tick`` return a list of chunks, one frame or ack each.
    State (:attr:`mode`, :attr:`asleep`, :attr:`sent`, :attr:`stats`) is public
    so tests and the simulator can look at it.
    """

    def __init__(
        self,
        source: SourceLike | None = None,
        *,
        interval_s: float = STABLE_INTERVAL_S,
        warmup_s: float = WARMUP_S,
        seed: int | None = 0,
        version: int = 0x97,
        keep_sent: int = 1000,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if warmup_s < 0:
            raise ValueError("warmup_s must not be negative")
        self.source: Source = as_source(source) if source is not None else builtin_profile(seed)
        self.interval_s = interval_s
        self.warmup_s = warmup_s
        self.version = version
        self.rng = random.Random(seed)
        self.sent: deque[SentFrame[PMValues]] = deque(maxlen=keep_sent)
        self.stats = {
            "frames": 0, "acks": 0, "commands": 0, "reads": 0,
            "bad_commands": 0, "ignored_bytes": 0, "wakes": 0, "sleeps": 0, "resets": 0,
        }
        self._commands = uart.CommandBuffer(START, 7, parse_command, self.stats)
        self.mode = "active"
        self.asleep = False
        self._warm_from = float("-inf")  # wake time of the current warm-up
        self._next_frame: float | None = None  # set on the first call (power-up)

    # -- DeviceModel ----------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list[bytes]:
        """Host bytes in (any chunking, garbage allowed); acks and frames out."""
        self._power_up(now)
        out: list[bytes] = []
        # Commands with a bad checksum are ignored, as the real sensor does.
        for cmd, arg in self._commands.feed(data):
            out += self._command(cmd, arg, now)
        return out

    def tick(self, now: float) -> list[bytes]:
        """Active mode: one frame per ``interval_s`` (never a burst after a stall)."""
        self._power_up(now)
        if self.asleep or self.mode != "active" or self._next_frame is None:
            return []
        if now < self._next_frame:
            return []
        self._next_frame += self.interval_s
        if self._next_frame <= now:  # we were not ticked for a while
            self._next_frame = now + self.interval_s
        return [self._frame(now, solicited=False)]

    # -- the SET pin and the power supply ---------------------------------------
    def sleep(self, now: float) -> None:
        """Fan and laser off (E4 00, or the SET pin pulled low)."""
        self._power_up(now)
        self.asleep = True
        self.stats["sleeps"] += 1

    def wake(self, now: float) -> None:
        """Fan on (E4 01, or SET high): back in active mode, warm-up if it was asleep."""
        self._power_up(now)
        if self.asleep:
            self._warm_from = now
        self.asleep = False
        self.mode = "active"
        self._next_frame = now + self.interval_s
        self.stats["wakes"] += 1

    def reset(self, now: float) -> None:
        """Power cycle (brown-out, re-plugged adapter): active mode, fan spinning up."""
        self._commands.clear()
        self.mode = "active"
        self.asleep = False
        self._warm_from = now
        self._next_frame = now + self.interval_s
        self.stats["resets"] += 1

    def warming_up(self, now: float) -> bool:
        return not self.asleep and now - self._warm_from < self.warmup_s

    # -- internals --------------------------------------------------------------
    def _power_up(self, now: float) -> None:
        if self._next_frame is None:
            self._next_frame = now + self.interval_s

    def _ack(self, cmd: int, data: int) -> bytes:
        self.stats["acks"] += 1
        return encode_ack(cmd, data)

    def _command(self, cmd: int, data: int, now: float) -> list[bytes]:
        if cmd == CMD_POWER and data == 1:
            self.wake(now)
            return []  # the real sensor does not acknowledge a wake
        if cmd == CMD_POWER and data == 0:
            self.sleep(now)
            return [self._ack(cmd, data)]
        if cmd == CMD_MODE and data in (0, 1):
            self.mode = "passive" if data == 0 else "active"
            if self.mode == "active":
                self._next_frame = now + self.interval_s
            return [self._ack(cmd, data)]
        if cmd == CMD_READ:
            self.stats["reads"] += 1
            if self.asleep or self.mode != "passive":
                return []
            return [self._frame(now, solicited=True)]
        self.stats["bad_commands"] += 1  # a valid frame with a command it does not know
        return []

    def _frame(self, now: float, solicited: bool) -> bytes:
        values = coerce_values(self.source(now))
        warming = self.warming_up(now)
        if warming:
            values = self._unstable(values, now)
        raw = encode_frame(*values.masses, counts=values.counts, version=self.version)
        self.sent.append(SentFrame(now, values, raw, warming, solicited))
        self.stats["frames"] += 1
        return raw

    def _unstable(self, v: PMValues, now: float) -> PMValues:
        """Warm-up output: zeros while the fan spins up, then erratic values."""
        if now - self._warm_from < self.warmup_s / 2:
            return ZERO
        f = self.rng.uniform(0.2, 1.6)
        masses = [min(0xFFFF, round(m * f)) for m in v.masses]
        return PMValues(*masses, counts_from_masses(*masses[:3]))  # type: ignore[arg-type]
