"""Fire in a room from gas, particle and heat readings (sans-I/O).

Feed ``update(t, values)`` with whatever the node measured at ``t`` (any subset of
:data:`QUANTITIES`, in physical units), at any cadence: one reading a second from the
sensor itself, or one a minute from the daemon's report windows. The detector
evaluates at most once a second and returns one :class:`FireEvent` per change of
state (``fire`` / ``clear``). The same :class:`FireDetector` runs in the daemon, in
``citynode detect fire`` and in ``bench/eval_fire.py``; docs/fire.md explains it for
operators and platform people, with the evaluation that chose its thresholds.

Why it is built this way (docs/fire.md has the figures):

* Every channel is judged against **its own slowly learned baseline** (what this room
  normally reads: :class:`Baseline`), never against an absolute level: rooms differ by
  hundreds of ppm and ppb, sensors by more.
* A fire is a **fast rise of several channels at once**. Each gas or particle channel
  "surges" when it stands ``delta`` above its baseline, ``ratio`` times it, *and* most
  of that excess built up within the last ``rise_window_s`` (a slow build-up is people,
  heating or the weather). One channel alone never alarms on gas: people and gas
  burners raise CO2 alone, sprays and cooking TVOC alone; a smouldering or flaming fire
  raises both.
* Rules (:class:`FireConfig`): ``gas`` (TVOC and CO2/eCO2 surge together); ``smoke``
  (a particle surge, not steam); ``smoke_gas`` (a particle surge while the air is
  steamy, confirmed by a gas surge or warming); ``heat_fixed`` (>= 57 °C, a fixed heat
  detector's rating); ``heat_rise`` (>= 8 °C/min, a rate-of-rise heat detector's).
  Each must hold for ``hold_s`` and over ``min_readings`` new readings, so a single
  glitch never alarms at 1 Hz and two report windows are needed at 1/min.
* **Warm-up and start-up never alarm**: the first readings of a channel (the SGP30's
  15 s of fixed 400 ppm / 0 ppb, a particle sensor's fan spin-up) are dropped, the
  baseline starts at the first real reading, and a rise is only counted from what the
  detector itself has seen.

No model: on the development fires and 20 nuisance days a model earned no place over
these rules (``bench/eval_fire.py`` compares them; docs/fire.md).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = [
    "CLEAR",
    "FIRE",
    "GAS",
    "PARTICLES",
    "QUANTITIES",
    "SHIPPED_SCALE",
    "Baseline",
    "FireConfig",
    "FireDetector",
    "FireEvent",
]

FIRE = "fire"
CLEAR = "clear"

#: Everything :meth:`FireDetector.update` accepts, in physical units.
QUANTITIES = ("temperature_c", "humidity_pct", "eco2_ppm", "tvoc_ppb", "pressure_hpa",
              "pm1_0", "pm2_5", "pm10", "nc0_5", "nc1_0", "nc2_5")
#: Gas channels (both must surge for the ``gas`` rule).
GAS = ("tvoc_ppb", "eco2_ppm")
#: Particle channels, best first (the first one measured is used).
PARTICLES = ("pm2_5", "pm1_0", "pm10", "nc0_5", "nc1_0", "nc2_5")
NAN = math.nan
#: The operating point the daemon ships (bench/eval_fire.py checks that its selection,
#: run on all development recordings, still picks it).
SHIPPED_SCALE = 0.6


@dataclass(frozen=True)
class FireConfig:
    """Thresholds and timings (docs/fire.md gives the reason for each).

    ``scale`` multiplies every gas and particle threshold: the excess (``delta``) and
    the part of the ratio above 1 (``ratio``). It is the one operating knob;
    :data:`SHIPPED_SCALE` is the point chosen by bench/eval_fire.py's selection on the
    development recordings (the same procedure it judges on held-out folds). Lower is
    more sensitive: earlier alarms, more false ones.
    """

    scale: float = SHIPPED_SCALE
    smooth_s: float = 10.0          # a level is the median of the last 10 s (one glitch ignored)
    stale_s: float = 300.0          # older than this, a quantity counts as not measured
    gas_warmup_s: float = 15.0      # SGP30: fixed 400 ppm / 0 ppb for 15 s after start
    particle_warmup_s: float = 30.0  # PMS5003/SPS30: 30 s for the fan to settle
    # baseline: learns rises slowly (a fire is not "normal"), follows falls quickly
    baseline_up_tau_s: float = 3600.0
    baseline_down_tau_s: float = 300.0
    # a surge's excess must have built within this window (rate of rise, not drift)
    rise_window_s: float = 600.0
    rise_share: float = 0.7
    # gas: both channels
    tvoc_delta_ppb: float = 400.0
    tvoc_ratio: float = 2.0
    tvoc_floor_ppb: float = 50.0    # ratio against at least this (a 0 ppb baseline)
    eco2_delta_ppm: float = 300.0
    eco2_ratio: float = 1.3
    eco2_floor_ppm: float = 400.0   # outdoor air; the SGP30 never reads less
    # particles (smoke)
    pm_delta_ugm3: float = 150.0
    pm_ratio: float = 5.0
    pm_floor_ugm3: float = 10.0
    nc_delta_cm3: float = 1000.0
    nc_ratio: float = 5.0
    nc_floor_cm3: float = 50.0
    steam_rh_pct: float = 90.0      # a particle surge at or above this RH looks like steam
    steam_rh_jump_pct: float = 10.0  # ... or with RH up this much within steam_window_s
    steam_window_s: float = 300.0
    # heat
    heat_fixed_c: float = 57.0
    heat_rise_c_per_min: float = 8.0
    warm_rise_c_per_min: float = 2.0   # corroborates a steamy particle surge
    # combination
    hold_s: float = 10.0
    clear_s: float = 300.0
    eval_every_s: float = 1.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"FireConfig.{name} = {value!r}: expected a finite number >= 0")
        if self.scale <= 0:
            raise ValueError("FireConfig.scale must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def scaled(self, factor: float) -> FireConfig:
        """These thresholds times ``factor`` (the config's ``[fire] threshold_scale``)."""
        return replace(self, scale=self.scale * factor)


class Baseline:
    """What a channel normally reads in this room: an asymmetric exponential average.

    It rises with time constant ``up_tau_s`` (an hour: a fire's minutes-long rise stays
    "above baseline", a new normal is learned within hours) and falls with
    ``down_tau_s`` (airing the room resets it quickly). Time-based, so it learns the
    same at 1 Hz and at one reading a minute; it starts at the first reading.
    """

    __slots__ = ("down_tau_s", "t", "up_tau_s", "value")

    def __init__(self, up_tau_s: float, down_tau_s: float) -> None:
        self.up_tau_s = up_tau_s
        self.down_tau_s = down_tau_s
        self.value = NAN
        self.t = NAN

    def update(self, t: float, level: float) -> None:
        if math.isnan(self.value):
            self.value, self.t = level, t
            return
        dt = max(0.0, t - self.t)
        tau = self.up_tau_s if level > self.value else self.down_tau_s
        self.value += (level - self.value) * (1.0 - math.exp(-dt / tau))
        self.t = t


class _Channel:
    """One quantity: recent readings (for the level), levels (for the rise), baseline."""

    __slots__ = ("baseline", "covered", "covered_before", "first_t", "last_t", "levels",
                 "recent", "rise_window_s", "seen_t", "smooth_s", "stale_s", "warmup_s")

    def __init__(self, cfg: FireConfig, warmup_s: float) -> None:
        self.smooth_s, self.stale_s, self.warmup_s = cfg.smooth_s, cfg.stale_s, warmup_s
        self.rise_window_s = max(cfg.rise_window_s, cfg.steam_window_s, 120.0)
        self.first_t: float | None = None
        self.seen_t: float | None = None    # the latest reading, warm-up included
        self.recent: deque[tuple[float, float]] = deque()
        self.levels: deque[tuple[float, float]] = deque()
        self.baseline = Baseline(cfg.baseline_up_tau_s, cfg.baseline_down_tau_s)
        self.last_t: float | None = None
        self.covered = 0.0          # seconds of readings so far (each: the time since the last)
        self.covered_before = 0.0   # ... before the latest reading

    def add(self, t: float, v: float) -> None:
        if self.first_t is None:
            self.first_t = t
        self.seen_t = t
        if t - self.first_t < self.warmup_s:
            return
        if self.last_t is not None:
            self.covered_before = self.covered
            self.covered += min(t - self.last_t, self.stale_s)
        self.last_t = t
        self.recent.append((t, v))
        while self.recent[0][0] <= t - self.smooth_s:
            self.recent.popleft()
        level = _median([x for _, x in self.recent])
        self.levels.append((t, level))
        while self.levels[0][0] < t - self.rise_window_s:
            self.levels.popleft()
        self.baseline.update(t, level)

    def level(self, t: float) -> float:
        if not self.levels or t - self.levels[-1][0] > self.stale_s:
            return NAN
        return self.levels[-1][1]

    def rise(self, t: float) -> float:
        """How far the level rose within the window: now minus the lowest level in it."""
        now = self.level(t)
        if math.isnan(now):
            return NAN
        return now - min(x for _, x in self.levels)


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


@dataclass(frozen=True, slots=True)
class Surge:
    """One channel judged against its baseline (the ``signals`` of an event)."""

    quantity: str
    level: float
    baseline: float
    excess: float       # level - baseline
    ratio: float        # level / max(baseline, floor)
    rise: float         # within the rise window
    need: float         # the excess this channel needs (delta x scale)
    surging: bool

    @property
    def score(self) -> float:
        """Excess over what is needed (1.0 = the threshold)."""
        return max(0.0, self.excess / self.need) if self.need > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"quantity": self.quantity, "level": _r(self.level, 1),
                "baseline": _r(self.baseline, 1), "excess": _r(self.excess, 1),
                "ratio": _r(self.ratio, 2), "rise": _r(self.rise, 1)}


@dataclass(frozen=True, slots=True)
class FireEvent:
    """A change of state; ``data`` holds the evidence (JSON-ready)."""

    t: float
    state: str
    score: float
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"t": self.t, "state": self.state, "score": round(self.score, 3)}
        d.update(self.data)
        return d


def _r(x: float, nd: int = 2) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, nd)


class FireDetector:
    """Physical rules against learned baselines, with hysteresis; see the module docstring."""

    def __init__(self, config: FireConfig | None = None) -> None:
        self.cfg = config or FireConfig()
        self.channels: dict[str, _Channel] = {}
        self.state = CLEAR
        self.last: dict[str, Any] = {}
        self._last_eval: float | None = None
        self._since: dict[str, float] = {}
        self._quiet_since: float | None = None
        self._steam_surge = False

    # -- feeding -----------------------------------------------------------------------
    def update(self, t: float, values: Mapping[str, float | None]) -> list[FireEvent]:
        """Add the readings taken at ``t``; ValueError for unknown names, bad values or a
        time earlier than the previous reading of the same quantity (nothing is added then:
        sensors feed the detector from their own threads, each in its own order)."""
        if not math.isfinite(t):
            raise ValueError(f"t {t!r} is not a finite number")
        clean: list[tuple[str, float]] = []
        for q, v in values.items():
            if q not in QUANTITIES:
                raise ValueError(f"unknown quantity {q!r} (accepted: {', '.join(QUANTITIES)})")
            if v is None:
                continue
            f = float(v)
            if not math.isfinite(f):
                raise ValueError(f"{q} {v!r} is not a finite number")
            ch = self.channels.get(q)
            if ch is not None and ch.seen_t is not None and t < ch.seen_t:
                raise ValueError(f"t {t} is earlier than the previous {q} reading ({ch.seen_t})")
            clean.append((q, f))
        for q, f in clean:
            ch = self.channels.get(q)
            if ch is None:
                warm = (self.cfg.gas_warmup_s if q in GAS else
                        self.cfg.particle_warmup_s if q in PARTICLES else 0.0)
                ch = self.channels[q] = _Channel(self.cfg, warm)
            ch.add(t, f)
        return self.tick(t)

    def tick(self, t: float) -> list[FireEvent]:
        """Evaluate at ``t`` if a second has passed since the last evaluation."""
        if self._last_eval is not None and t - self._last_eval < self.cfg.eval_every_s:
            return []
        self._last_eval = t
        return self._evaluate(t)

    # -- evidence ----------------------------------------------------------------------
    def surge(self, q: str, t: float) -> Surge | None:
        """``q`` judged against its baseline at ``t`` (None: not measured or warming up)."""
        ch = self.channels.get(q)
        if ch is None:
            return None
        level = ch.level(t)
        if math.isnan(level):
            return None
        cfg, k = self.cfg, self.cfg.scale
        if q == "tvoc_ppb":
            delta, ratio, floor = cfg.tvoc_delta_ppb, cfg.tvoc_ratio, cfg.tvoc_floor_ppb
        elif q == "eco2_ppm":
            delta, ratio, floor = cfg.eco2_delta_ppm, cfg.eco2_ratio, cfg.eco2_floor_ppm
        elif q.startswith("nc"):
            delta, ratio, floor = cfg.nc_delta_cm3, cfg.nc_ratio, cfg.nc_floor_cm3
        else:
            delta, ratio, floor = cfg.pm_delta_ugm3, cfg.pm_ratio, cfg.pm_floor_ugm3
        base = ch.baseline.value
        excess = level - base
        rel = level / max(base, floor)
        rise = ch.rise(t)
        need = delta * k
        surging = (excess >= need and rel >= 1.0 + (ratio - 1.0) * k
                   and rise >= cfg.rise_share * min(excess, need * 2.0))
        return Surge(q, level, base, excess, rel, rise, need, surging)

    def _held(self, key: str, active: bool, t: float, quantities: tuple[str, ...]) -> bool:
        """Whether ``active`` has been seen over ``hold_s`` of readings of ``quantities``.

        Each reading stands for the time since the one before it (at most ``stale_s``):
        at 1 Hz the condition must hold for ``hold_s`` seconds of readings; a one-minute
        report window, already an average, counts as the minute it covers.
        """
        if not active:
            self._since.pop(key, None)
            return False
        covered = min(self.channels[q].covered for q in quantities)
        if key not in self._since:
            self._since[key] = min(self.channels[q].covered_before for q in quantities)
        return covered - self._since[key] >= self.cfg.hold_s

    def heat(self, t: float) -> tuple[float, float]:
        """(temperature now, its rise in °C/min over the last minute)."""
        ch = self.channels.get("temperature_c")
        if ch is None:
            return NAN, NAN
        now = ch.level(t)
        past = [(tt, x) for tt, x in ch.levels if tt <= t - 60.0]
        if math.isnan(now) or not past:
            return now, NAN
        t0, v0 = past[-1]
        return now, (now - v0) / (t - t0) * 60.0 if t - t0 <= 120.0 else NAN

    def humidity(self, t: float) -> tuple[float, float, bool]:
        """(RH now, its rise within ``steam_window_s``, whether the air looks steamy:
        saturated, or humidity jumping as from a shower or a kettle)."""
        ch = self.channels.get("humidity_pct")
        if ch is None:
            return NAN, NAN, False
        rh = ch.level(t)
        past = [x for tt, x in ch.levels if tt >= t - self.cfg.steam_window_s]
        jump = rh - min(past) if past and math.isfinite(rh) else NAN
        return rh, jump, rh >= self.cfg.steam_rh_pct or jump >= self.cfg.steam_rh_jump_pct

    # -- decision ----------------------------------------------------------------------
    def _evaluate(self, t: float) -> list[FireEvent]:
        cfg = self.cfg
        reasons: list[str] = []
        signals: list[Surge] = []
        tvoc, eco2 = self.surge("tvoc_ppb", t), self.surge("eco2_ppm", t)
        gas_pair = tvoc is not None and eco2 is not None
        gas = gas_pair and tvoc.surging and eco2.surging
        if self._held("gas", gas, t, GAS):
            reasons.append("gas")
        particles = next((s for q in PARTICLES if (s := self.surge(q, t)) is not None), None)
        temp, rise1 = self.heat(t)
        rh, _jump, steamy = self.humidity(t)
        # steam seen at any time during a particle surge marks the whole surge: droplets
        # outlast the humidity jump that announced them
        surging = particles is not None and particles.surging
        self._steam_surge = surging and (steamy or self._steam_surge)
        steamy = steamy or self._steam_surge
        if particles is not None and self._held("particles", surging, t,
                                                (particles.quantity,)):
            one_gas = any(s is not None and s.surging for s in (tvoc, eco2))
            if one_gas or rise1 >= cfg.warm_rise_c_per_min:
                reasons.append("smoke")
            elif tvoc is None and eco2 is None and not steamy:
                reasons.append("smoke_only")
        if temp >= cfg.heat_fixed_c:
            reasons.append("heat_fixed")
        heat_rising = rise1 >= cfg.heat_rise_c_per_min
        if self._held("heat_rise", heat_rising, t, ("temperature_c",)):
            reasons.append("heat_rise")
        for s in (tvoc, eco2, particles):
            if s is not None:
                signals.append(s)
        # the gas pair counts as its weaker channel (one gas alone never alarms)
        scores = [min(tvoc.score, eco2.score) if gas_pair else 0.0]
        if particles is not None:
            scores.append(particles.score)
        if math.isfinite(temp):
            scores.append(max(0.0, temp / cfg.heat_fixed_c))
        if math.isfinite(rise1):
            scores.append(max(0.0, rise1 / cfg.heat_rise_c_per_min))
        score = min(max(scores), 10.0)
        self.last = {"t": t, "score": score, "reasons": reasons}
        # clear only when every channel is back near its baseline (a plateau of smoke is no
        # rise any more, but it is still a fire)
        quiet = not reasons and not any(s.excess >= s.need for s in signals) and not heat_rising
        events: list[FireEvent] = []
        if self.state == CLEAR and reasons:
            self.state = FIRE
            self._quiet_since = None
            events.append(FireEvent(t, FIRE, score, self._evidence(
                reasons, signals, temp, rise1, rh, steamy)))
        elif self.state == FIRE:
            if not quiet:
                self._quiet_since = None
            else:
                if self._quiet_since is None:
                    self._quiet_since = t
                if t - self._quiet_since >= cfg.clear_s:
                    self.state = CLEAR
                    self._quiet_since = None
                    events.append(FireEvent(t, CLEAR, score, self._evidence(
                        reasons, signals, temp, rise1, rh, steamy)))
        return events

    @staticmethod
    def _evidence(reasons: list[str], signals: list[Surge], temp: float, rise1: float,
                  rh: float, steamy: bool) -> dict[str, Any]:
        return {"reasons": reasons,
                "signals": [s.to_dict() for s in signals],
                "temperature_c": _r(temp), "t_rise_c_per_min": _r(rise1),
                "humidity_pct": _r(rh, 1), "steam_like": steamy}
