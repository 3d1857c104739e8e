"""A doorway under a VL53L1X, for its emulator: people walking through, seen by each ROI.

The sensor hangs at the top of a door frame (or from the ceiling of a narrow passage),
looking straight down at the floor ``mount_mm`` below it: UM2600's set-up, whose reference
profile is a 2.4 m door jamb. x runs along the walking direction, 0 under the sensor and
positive on the side that SPAD column 15 looks at, so zone 1 of UM2600 (columns 8-15,
centre 231) sees x > 0; a walker going "in" walks from x < 0 to x > 0, through zone 0 then
zone 1.

What one measurement sees (:meth:`Doorway.measure`): the ROI's columns are a fan of angles
(27 degrees over 16 SPADs, VL53L1X datasheet: field of view), so at depth z it covers an
x-interval; a person is a head (a 0.1 m disc at their height) over shoulders (their radius,
0.2 m lower), each covering part of that interval. Every surface in the ROI returns light
in proportion to the share of the ROI it fills over its distance squared; the strongest
return is the distance reported (a head 0.7 m away outshines the floor at 2.4 m from about
8 % of the ROI). Rows are not modelled: a person is taken to fill the ROI across the door.
Ranges beyond the distance mode's reach (1.3 m short, 4 m long, UM2510) are signal
failures. Noise is Gaussian, smaller with longer timing budgets.

Faults a real doorway has: range-status errors at random (signal fail, sigma fail, out of
bounds), and covered spells (a hand, a sticker, dirt on the cover glass: a few centimetres,
valid or sigma fail).

:class:`Doorway` takes a fixed list of :class:`Walker`\\ s (tests: it has the truth,
:meth:`Doorway.truth`); :func:`scripted_doorway` makes one at random; :class:`EndlessDoorway`
makes walkers for ever from a seed, for the daemon's emulated bus (``citynode simulate``).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from .codec import GRID, MAX_RANGE_MM, OUT_OF_BOUNDS, SIGMA_FAIL, SIGNAL_FAIL, VALID, roi_span

FOV_DEG = 27.0  # VL53L1X datasheet: field of view of the full 16 x 16 SPAD array
#: A walker is in view from this far before the line to this far after it (m).
PATH_M = 2.0
HEAD_RADIUS_M = 0.10
SHOULDER_DROP_M = 0.20
#: Reflectance of what the sensor sees (hair and clothes are darker than a floor).
PERSON_REFLECTANCE = 0.2
FLOOR_REFLECTANCE = 0.35

Direction = Literal["in", "out"]


@dataclass(frozen=True, slots=True)
class Walker:
    """One person under the sensor.

    ``t_cross``: when they cross x = 0 (for one who turns back: when they reach the turn
    point). ``turn_at_m``: None for one who walks through; else they walk to this distance
    past the line (negative: short of it), wait ``pause_s``, and walk back the way they came.
    """

    t_cross: float
    direction: Direction = "in"
    speed_mps: float = 1.2
    height_m: float = 1.7
    radius_m: float = 0.22
    turn_at_m: float | None = None
    pause_s: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in ("in", "out"):
            raise ValueError(f"direction is 'in' or 'out', not {self.direction!r}")
        if not (self.speed_mps > 0 and 0.5 <= self.height_m <= 2.3 and self.radius_m > 0):
            raise ValueError("a walker needs a positive speed and radius, height 0.5..2.3 m")

    @property
    def passes(self) -> bool:
        return self.turn_at_m is None

    @property
    def start(self) -> float:
        return self.t_cross - (PATH_M + (self.turn_at_m or 0.0)) / self.speed_mps

    @property
    def end(self) -> float:
        if self.turn_at_m is None:
            return self.t_cross + PATH_M / self.speed_mps
        return self.t_cross + self.pause_s + (PATH_M + self.turn_at_m) / self.speed_mps

    def x(self, t: float) -> float | None:
        """Where the walker is along x at ``t`` (None: out of view)."""
        if not self.start <= t <= self.end:
            return None
        if self.turn_at_m is None:
            s = (t - self.t_cross) * self.speed_mps
        elif t <= self.t_cross:
            s = self.turn_at_m - (self.t_cross - t) * self.speed_mps
        elif t <= self.t_cross + self.pause_s:
            s = self.turn_at_m
        else:
            s = self.turn_at_m - (t - self.t_cross - self.pause_s) * self.speed_mps
        return s if self.direction == "in" else -s


def column_edges_deg(first: int, stop: int) -> tuple[float, float]:
    """The angles (from vertical, positive towards x > 0) of the outer edges of SPAD
    columns ``first`` .. ``stop - 1``."""
    step = FOV_DEG / GRID
    return (first - GRID / 2) * step, (stop - GRID / 2) * step


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


class Doorway:
    """The doorway's truth for the emulator (see the module docstring).

    ``noise_mm``: standard deviation of a range at a 33 ms budget (scaled by
    sqrt(33 / budget)); ``signal_fail``, ``sigma_fail``, ``out_of_bounds``: the chance of
    each range-status error per measurement; ``covered``: (start, end) spells when the cover
    glass is blocked. Deterministic for a seed and a sequence of calls.
    """

    def __init__(self, walkers: Iterable[Walker] = (), *, mount_mm: float = 2400.0,
                 noise_mm: float = 8.0, signal_fail: float = 0.0, sigma_fail: float = 0.0,
                 out_of_bounds: float = 0.0,
                 covered: Sequence[tuple[float, float]] = (), seed: int | None = 0) -> None:
        if not 300 <= mount_mm <= 6000:
            raise ValueError("mount_mm is the sensor's height over the floor: 300..6000 mm")
        for p in (signal_fail, sigma_fail, out_of_bounds):
            if not 0 <= p <= 1:
                raise ValueError("error rates are 0..1")
        self.walkers = sorted(walkers, key=lambda w: w.start)
        self._starts = [w.start for w in self.walkers]
        self._longest = max((w.end - w.start for w in self.walkers), default=0.0)
        self.mount_mm = float(mount_mm)
        self.noise_mm = noise_mm
        self.signal_fail, self.sigma_fail, self.out_of_bounds = (
            signal_fail, sigma_fail, out_of_bounds)
        self.covered = sorted(covered)
        self.rng = random.Random(seed)

    # -- the truth ------------------------------------------------------------------------
    def truth(self) -> list[tuple[float, Direction]]:
        """Every passage: (time the walker crossed x = 0, direction), in time order."""
        return sorted((w.t_cross, w.direction) for w in self.walkers if w.passes)

    def active(self, t: float) -> list[Walker]:
        """The walkers in view at ``t``."""
        hi = bisect.bisect_right(self._starts, t)
        lo = bisect.bisect_left(self._starts, t - self._longest)
        return [w for w in self.walkers[lo:hi] if w.start <= t <= w.end]

    def is_covered(self, t: float) -> bool:
        return any(a <= t < b for a, b in self.covered)

    # -- one measurement ------------------------------------------------------------------
    def measure(self, t: float, centre: int, width: int, height: int, mode: str = "long",
                budget_ms: int = 33) -> tuple[int, int, int]:
        """What the chip reports for a measurement at ``t`` through an ROI: (distance in mm,
        range status in the ULD's numbering, signal in kcps)."""
        rng = self.rng
        if self.is_covered(t):
            status = SIGMA_FAIL if rng.random() < 0.3 else VALID
            return rng.randint(5, 35), status, 40_000
        _rows, cols = roi_span(centre, width, height)
        a0, a1 = column_edges_deg(max(cols.start, 0), min(cols.stop, GRID))
        t0, t1 = math.tan(math.radians(a0)), math.tan(math.radians(a1))
        floor_z = self.mount_mm / 1000.0
        returns: list[tuple[float, float]] = []  # (distance m, signal weight)
        covered_share = 0.0
        for w in self.active(t):
            x = w.x(t)
            if x is None:
                continue
            for radius, top in ((HEAD_RADIUS_M, w.height_m),
                                (w.radius_m, w.height_m - SHOULDER_DROP_M)):
                z = floor_z - top
                if z <= 0.02:
                    continue
                lo, hi = z * t0, z * t1
                share = _overlap(lo, hi, x - radius, x + radius) / (hi - lo)
                if share > 0:
                    returns.append((z, share * PERSON_REFLECTANCE / (z * z)))
                    covered_share = max(covered_share, share)
        returns.append((floor_z, (1 - covered_share) * FLOOR_REFLECTANCE / (floor_z ** 2)))
        z, weight = max(returns, key=lambda r: r[1])
        sigma = self.noise_mm * math.sqrt(33.0 / max(budget_ms, 15))
        mm = max(0, round(z * 1000.0 + rng.gauss(0.0, sigma)))
        signal = int(min(60_000, weight * 20_000))
        roll = rng.random()
        if mm > MAX_RANGE_MM.get(mode, 4000):
            return 0, SIGNAL_FAIL, 0
        if roll < self.signal_fail:
            return rng.randint(0, 8000), SIGNAL_FAIL, 0
        roll -= self.signal_fail
        if roll < self.sigma_fail:
            return mm + round(rng.gauss(0.0, 200.0)), SIGMA_FAIL, signal
        roll -= self.sigma_fail
        if roll < self.out_of_bounds:
            return mm + rng.randint(0, 400), OUT_OF_BOUNDS, signal
        return mm, VALID, signal


def random_walker(rng: random.Random, t_cross: float, hesitation_share: float) -> Walker:
    """A plausible adult or child, walking through or (with ``hesitation_share``) turning
    back short of the far zone."""
    direction: Direction = "in" if rng.random() < 0.5 else "out"
    height = min(1.95, max(1.05, rng.gauss(1.66, 0.12)))
    common = {"direction": direction, "speed_mps": rng.uniform(0.8, 1.7),
              "height_m": height, "radius_m": rng.uniform(0.17, 0.26)}
    if rng.random() < hesitation_share:
        return Walker(t_cross, turn_at_m=rng.uniform(-0.45, 0.1),
                      pause_s=rng.uniform(0.0, 2.0), **common)  # type: ignore[arg-type]
    return Walker(t_cross, **common)  # type: ignore[arg-type]


def spaced_times(rng: random.Random, start: float, end: float, rate_per_min: float,
                 gap_s: float) -> list[float]:
    """Poisson arrivals over [start, end) at ``rate_per_min``, none closer than ``gap_s``
    (UM2600's counter sees one person at a time: two walking a step apart are one)."""
    times: list[float] = []
    t = start
    rate_s = rate_per_min / 60.0
    while rate_s > 0:
        t += rng.expovariate(rate_s)
        if t >= end:
            break
        if not times or t - times[-1] >= gap_s:
            times.append(t)
    return times


def scripted_doorway(seed: int, duration_s: float, *, rate_per_min: float = 6.0,
                     hesitation_share: float = 0.15, gap_s: float = 4.0, start: float = 0.0,
                     **faults: float) -> Doorway:
    """``duration_s`` of a doorway with random walkers, seeded; ``faults`` are
    :class:`Doorway`'s error rates and ``noise_mm``. The truth is :meth:`Doorway.truth`."""
    rng = random.Random(seed)
    times = spaced_times(rng, start + PATH_M, start + duration_s - PATH_M, rate_per_min, gap_s)
    walkers = [random_walker(rng, t, hesitation_share) for t in times]
    return Doorway(walkers, seed=seed, **faults)  # type: ignore[arg-type]


class EndlessDoorway(Doorway):
    """Walkers for ever, made on demand in 60 s blocks from ``seed`` (the daemon's emulated
    bus runs on the monotonic clock, whose origin is unknown). Keeps the last few blocks."""

    BLOCK_S = 60.0

    def __init__(self, seed: int, *, rate_per_min: float = 4.0, hesitation_share: float = 0.1,
                 gap_s: float = 4.0, **kw: float) -> None:
        super().__init__(seed=seed, **kw)  # type: ignore[arg-type]
        self.seed, self.rate_per_min = seed, rate_per_min
        self.hesitation_share, self.gap_s = hesitation_share, gap_s
        self._blocks: dict[int, list[Walker]] = {}

    def _block(self, k: int) -> list[Walker]:
        got = self._blocks.get(k)
        if got is None:
            rng = random.Random(f"{self.seed}:{k}")
            start = k * self.BLOCK_S
            times = spaced_times(rng, start + self.gap_s / 2, start + self.BLOCK_S
                                 - self.gap_s / 2, self.rate_per_min, self.gap_s)
            got = [random_walker(rng, t, self.hesitation_share) for t in times]
            self._blocks[k] = got
            for old in [b for b in self._blocks if b < k - 2]:
                del self._blocks[old]
        return got

    def active(self, t: float) -> list[Walker]:
        k = math.floor(t / self.BLOCK_S)
        return [w for b in (k - 1, k, k + 1) for w in self._block(b) if w.start <= t <= w.end]
