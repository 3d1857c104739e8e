"""Fire in a room from climate, gas and particle readings (sans-I/O).

Feed ``update(t, values)`` with whatever the node measured at ``t`` (any subset of
:data:`QUANTITIES`, in physical units); sensors may report at different rates and
drop out for a while. The detector evaluates at most once a second and returns one
:class:`FireEvent` per change of state (``fire`` / ``clear``). The same
:class:`FireDetector` runs in the daemon, in ``citynode detect fire`` (offline replay),
in ``bench/eval_fire.py`` and, through :class:`FeatureExtractor`, in the training code
(``training/fire/train.py`` imports it, so the model sees exactly what it is fed here).
docs/fire.md explains it for operators and platform people.

Two kinds of evidence, combined with a plain OR and hysteresis:

* the **model** (``agent/models/fire.tflite``): a tiny int8 MLP on :data:`MODEL_FEATURES`,
  rates of rise and surges of the three core quantities every node has (temperature,
  humidity, eCO2); its probability must stay at or above the metadata's ``threshold``
  for ``model_persist_s``. Absolute temperature and humidity levels are deliberately
  not model inputs: they say where and when a recording was made, not whether
  something burns.
* physical **rules** (:class:`FireConfig`), usable with any sensor subset:

  - ``heat_fixed``: temperature >= 57 °C (a common fixed heat-detector rating, 135 °F,
    inside the 54-65 °C static response range of EN 54-5 class A1);
  - ``heat_rise``: >= 8 °C/min over the last minute for ``heat_persist_s``
    (rate-of-rise heat detectors use 15 °F/min = 8.3 °C/min);
  - ``smoke``: PM2.5 (or PM1/PM10, or particle number) well above its slow baseline
    (x5 and +150 ug/m3) for several readings. A surge while the air is saturated
    or the humidity jumps (shower, kettle: optical counters see droplets) does not
    alarm alone;
  - ``smoke_gas``: a smoke-like or steam-like particle surge *and* a gas (TVOC) surge
    or a temperature rise of >= 2 °C/min together;
  - a TVOC surge alone never alarms (cleaning sprays, alcohol, cooking); it is
    corroborating evidence only.

The state goes to ``fire`` when any of them holds; it returns to ``clear`` only after
``clear_s`` with the model below its clear threshold (metadata ``trained.model_clear_threshold``,
half-way between the threshold and the probability of "nothing rises") and no rule active.

A model that cannot be loaded or run (:class:`~agent.models.runtime.ModelError`) is
dropped: :attr:`FireDetector.health` says why (the daemon reports it as a sensor-health
fault) and the rules keep working.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CLEAR",
    "CORE",
    "FIRE",
    "MODEL_FEATURES",
    "QUANTITIES",
    "FeatureExtractor",
    "FireConfig",
    "FireDetector",
    "FireEvent",
]

FIRE = "fire"
CLEAR = "clear"

#: Everything :meth:`FireDetector.update` accepts, in physical units.
QUANTITIES = ("temperature_c", "humidity_pct", "eco2_ppm", "tvoc_ppb", "pressure_hpa",
              "pm1_0", "pm2_5", "pm10", "nc0_5", "nc1_0", "nc2_5")
#: What the model needs; every node with an SGP30 and a climate sensor has them.
CORE = ("temperature_c", "humidity_pct", "eco2_ppm")
#: The model's input, in order (the metadata's ``features`` must say the same).
#: Each one-sided, with a dead zone for ordinary rates (0 = nothing fire-like), so that
#: with the model's non-negative weights more of any of them can only raise the
#: probability: falling temperature or rising humidity can never be learned as "fire"
#: (they were, from the data set's sessions).
MODEL_FEATURES = ("t_rise_1m", "t_rise_10m", "rh_fall_1m", "eco2_rise_1m", "eco2_rise_10m",
                  "eco2_surge")
NAN = math.nan
SGP30_ECO2_FLOOR = 400.0  # the sensor never reports less: "no gas" reads 400 ppm


@dataclass(frozen=True)
class FireConfig:
    """Thresholds and timings of the rules and of the combination (written to fire.json)."""

    smooth_s: float = 10.0          # "now" is the median of the last smooth_s (a glitch is ignored)
    stale_s: float = 300.0          # older than this, a quantity counts as not measured
    baseline_s: float = 1800.0      # slow baseline: the lowest value of the last 30 min
    baseline_min_span_s: float = 300.0  # a baseline needs this much history
    # heat
    heat_fixed_c: float = 57.0
    heat_rise_c_per_min: float = 8.0
    heat_persist_s: float = 10.0
    # particles (smoke)
    smoke_ratio: float = 5.0
    smoke_pm_delta_ugm3: float = 150.0
    smoke_nc_delta_cm3: float = 1000.0
    smoke_min_readings: int = 3
    smoke_persist_s: float = 15.0
    steam_rh_pct: float = 90.0      # a particle surge at or above this RH looks like steam/fog
    steam_rh_jump_pct: float = 10.0  # ... or with RH up this much within steam_window_s
    steam_window_s: float = 300.0
    # gas and weak heat (corroboration only)
    gas_ratio: float = 5.0
    gas_tvoc_delta_ppb: float = 1000.0
    warm_rise_c_per_min: float = 2.0
    # model inputs: rates below these dead zones are weather, heating, people (not fire)
    model_t_dead_c_per_min: float = 1.0   # for the 1-min and the 10-min rise
    model_rh_dead_pct_per_min: float = 1.0
    # model combination
    model_warmup_s: float = 600.0   # no model alarm in the first 10 min of eCO2 (gas sensor
                                    # warm-up: an SGP30 drifts while its baseline settles)
    model_persist_s: float = 10.0
    clear_ratio: float = 0.6        # used when the metadata has no model_clear_threshold
    clear_s: float = 120.0
    eval_every_s: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Series:
    """Samples of one quantity, kept for ``keep_s``; lookups by time (bisect)."""

    __slots__ = ("keep_s", "start", "ts", "vs")

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self.ts: list[float] = []
        self.vs: list[float] = []
        self.start = 0

    def add(self, t: float, v: float) -> None:
        self.ts.append(t)
        self.vs.append(v)
        cut = t - self.keep_s
        if self.ts[self.start] < cut:
            self.start = bisect.bisect_left(self.ts, cut, self.start)
            if self.start > 4096 and self.start * 2 > len(self.ts):
                del self.ts[:self.start], self.vs[:self.start]
                self.start = 0

    @property
    def last_t(self) -> float | None:
        return self.ts[-1] if len(self.ts) > self.start else None

    @property
    def first_t(self) -> float | None:
        return self.ts[self.start] if len(self.ts) > self.start else None

    def level(self, t: float, span: float, stale: float) -> tuple[float, float]:
        """(time, value) of the level at ``t``: median of (t-span, t], else the last sample
        no older than ``stale``; (nan, nan) when there is none."""
        hi = bisect.bisect_right(self.ts, t, self.start)
        lo = bisect.bisect_right(self.ts, t - span, self.start, hi)
        if hi > lo:
            vs = sorted(self.vs[lo:hi])
            n = len(vs)
            med = vs[n // 2] if n % 2 else 0.5 * (vs[n // 2 - 1] + vs[n // 2])
            return sum(self.ts[lo:hi]) / n, med
        if hi > self.start and t - self.ts[hi - 1] <= stale:
            return self.ts[hi - 1], self.vs[hi - 1]
        return NAN, NAN

    def minimum(self, t0: float, t1: float) -> float:
        lo = bisect.bisect_left(self.ts, t0, self.start)
        hi = bisect.bisect_right(self.ts, t1, lo)
        return min(self.vs[lo:hi]) if hi > lo else NAN


class FeatureExtractor:
    """Levels, rates of rise and surges from irregular, gappy samples.

    Shared by the detector and the training code. A rate is (level now - level
    ``window`` ago) / the time actually between them, both levels being medians of
    ``smooth_s``; when samples are missing around the older point the nearest older
    sample is used, and the rate is NaN unless at least half the window is covered.
    Anything that cannot be computed is NaN, never a guess.
    """

    def __init__(self, config: FireConfig | None = None) -> None:
        self.cfg = config or FireConfig()
        self.series: dict[str, _Series] = {}
        self.new_samples: dict[str, int] = {}

    def add(self, t: float, values: Mapping[str, float | None]) -> None:
        for q, v in values.items():
            if q not in QUANTITIES:
                raise ValueError(f"unknown quantity {q!r} (accepted: {', '.join(QUANTITIES)})")
            if v is None:
                continue
            v = float(v)
            if not math.isfinite(v):
                raise ValueError(f"{q} {v!r} is not a finite number")
            s = self.series.get(q)
            if s is None:
                s = self.series[q] = _Series(self.cfg.baseline_s + 120.0)
            last = s.last_t
            if last is not None and t < last:
                raise ValueError(f"t {t} is earlier than the previous {q} sample ({last})")
            s.add(t, v)
            self.new_samples[q] = self.new_samples.get(q, 0) + 1

    def level(self, q: str, t: float) -> float:
        s = self.series.get(q)
        return NAN if s is None else s.level(t, self.cfg.smooth_s, self.cfg.stale_s)[1]

    def rate_per_min(self, q: str, t: float, window_s: float) -> float:
        """Rise of ``q`` per minute over the last ``window_s`` (negative: falling)."""
        s = self.series.get(q)
        if s is None:
            return NAN
        t1, v1 = s.level(t, self.cfg.smooth_s, self.cfg.stale_s)
        if math.isnan(v1):
            return NAN
        t0, v0 = s.level(t - window_s, self.cfg.smooth_s, 0.5 * window_s)
        if math.isnan(v0) and s.first_t is not None and s.first_t > t - window_s:
            t0, v0 = s.level(s.first_t + self.cfg.smooth_s, self.cfg.smooth_s, 0.0)  # young
        if math.isnan(v0) or t1 - t0 < 0.5 * window_s:
            return NAN
        return (v1 - v0) / (t1 - t0) * 60.0

    def baseline(self, q: str, t: float) -> float:
        """Slow baseline: lowest sample of the last ``baseline_s`` (NaN: too little history)."""
        s = self.series.get(q)
        if s is None or s.first_t is None or t - s.first_t < self.cfg.baseline_min_span_s:
            return NAN
        return s.minimum(t - self.cfg.baseline_s, t)

    def model_features(self, t: float) -> list[float]:
        """:data:`MODEL_FEATURES` at ``t`` (NaN where the data do not allow it)."""
        eco2 = self.level("eco2_ppm", t)
        base = self.baseline("eco2_ppm", t)
        x = [self.rate_per_min("temperature_c", t, 60.0),     # degC/min
             self.rate_per_min("temperature_c", t, 600.0),
             -self.rate_per_min("humidity_pct", t, 60.0),     # %RH/min falling (heat dries air)
             self.rate_per_min("eco2_ppm", t, 60.0),          # ppm/min
             self.rate_per_min("eco2_ppm", t, 600.0),
             eco2 - base]                                     # ppm above the 30-min floor
        dead = (self.cfg.model_t_dead_c_per_min, self.cfg.model_t_dead_c_per_min,
                self.cfg.model_rh_dead_pct_per_min, 0.0, 0.0, 0.0)
        return [max(0.0, v - d) if v == v else NAN for v, d in zip(x, dead, strict=True)]


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
    """Model + physical rules with hysteresis; see the module docstring.

    ``model``: ``True`` (default) loads the shipped ``agent/models/fire.tflite``;
    a path loads that file; a loaded :class:`~agent.models.runtime.Model` is used as is;
    ``None``/``False`` runs on the rules alone (``health["model"] == "disabled"``).
    """

    def __init__(self, model: Any = True, *, config: FireConfig | None = None) -> None:
        self.cfg = config or FireConfig()
        self.features = FeatureExtractor(self.cfg)
        self.state = CLEAR
        self.model: Any = None
        self.threshold = 0.5
        self.clear_threshold = 0.3
        self.health: dict[str, Any] = {"model": "disabled", "error": None}
        self.last: dict[str, Any] = {}
        self._last_eval: float | None = None
        self._since: dict[str, float | None] = {"model": None, "heat_rise": None,
                                                "smoke": None}
        self._smoke_readings = 0
        self._quiet_since: float | None = None
        self._seen_pm: dict[str, int] = {}
        if model is True:
            from agent.models.runtime import model_path

            model = model_path("fire")
        if model is not None and model is not False:
            self._load(model)

    # -- model -------------------------------------------------------------------------
    def _load(self, model: Any) -> None:
        from agent.models.runtime import Model, ModelError

        try:
            m = model if isinstance(model, Model) else Model.load(
                Path(os.fspath(model)), expect_task="fire")
            if tuple(m.meta.features) != MODEL_FEATURES:
                raise ModelError(f"{m.path}: model features {list(m.meta.features)} are not "
                                 f"the detector's {list(MODEL_FEATURES)}")
            if m.meta.input_shape != (1, len(MODEL_FEATURES)):
                raise ModelError(f"{m.path}: input_shape {list(m.meta.input_shape)}, the "
                                 f"detector feeds [1, {len(MODEL_FEATURES)}]")
        except ModelError as e:
            self._fault(str(e))
            return
        self.model = m
        self.threshold = m.meta.threshold
        self.clear_threshold = float(m.meta.trained.get(
            "model_clear_threshold", self.threshold * self.cfg.clear_ratio))
        self.health = {"model": "ok", "error": None, **m.describe()}

    def _fault(self, message: str) -> None:
        self.model = None
        self.health = {"model": "fault", "error": message}

    @property
    def healthy(self) -> bool:
        """False when a model was asked for and is not running (a sensor-health fault)."""
        return self.health["model"] != "fault"

    # -- feeding -----------------------------------------------------------------------
    def update(self, t: float, values: Mapping[str, float | None]) -> list[FireEvent]:
        """Add the readings taken at ``t``; ValueError for unknown names or bad values."""
        self.features.add(t, values)
        return self.tick(t)

    def tick(self, t: float) -> list[FireEvent]:
        """Evaluate at ``t`` if a second has passed since the last evaluation."""
        if self._last_eval is not None and t - self._last_eval < self.cfg.eval_every_s:
            return []
        self._last_eval = t
        return self._evaluate(t)

    # -- decision ----------------------------------------------------------------------
    def _held(self, key: str, active: bool, t: float, persist_s: float) -> bool:
        if not active:
            self._since[key] = None
            return False
        if self._since[key] is None:
            self._since[key] = t
        return t - (self._since[key] or t) >= persist_s

    def _smoke(self, t: float, rh: float, rh_jump: float) -> tuple[bool, bool, float, dict]:
        """(surge, steam_like, score, evidence) of the particle channel with the best data."""
        cfg, fx = self.cfg, self.features
        for q, delta in (("pm2_5", cfg.smoke_pm_delta_ugm3), ("pm1_0", cfg.smoke_pm_delta_ugm3),
                         ("pm10", cfg.smoke_pm_delta_ugm3), ("nc0_5", cfg.smoke_nc_delta_cm3),
                         ("nc1_0", cfg.smoke_nc_delta_cm3), ("nc2_5", cfg.smoke_nc_delta_cm3)):
            now = fx.level(q, t)
            base = fx.baseline(q, t)
            if math.isnan(now) or math.isnan(base):
                continue
            need = max(base * cfg.smoke_ratio, base + delta)
            surge = now >= need
            steam = surge and (rh >= cfg.steam_rh_pct or rh_jump >= cfg.steam_rh_jump_pct)
            ev = {"particles": q, "level": _r(now, 1), "baseline": _r(base, 1)}
            return surge, steam, min(1.0, max(0.0, now / need)), ev
        return False, False, 0.0, {}

    def _evaluate(self, t: float) -> list[FireEvent]:
        cfg, fx = self.cfg, self.features
        temp = fx.level("temperature_c", t)
        rise1 = fx.rate_per_min("temperature_c", t, 60.0)
        rh = fx.level("humidity_pct", t)
        rh_jump = fx.rate_per_min("humidity_pct", t, cfg.steam_window_s) * (
            cfg.steam_window_s / 60.0)
        reasons: list[str] = []
        scores = [0.0]

        # model
        p = None
        if self.model is not None:
            x = fx.model_features(t)
            if all(math.isfinite(v) for v in x):
                from agent.models.runtime import ModelError

                try:
                    p = self.model.predict([x])
                except ModelError as e:
                    self._fault(str(e))
        eco2_since = fx.series["eco2_ppm"].first_t if "eco2_ppm" in fx.series else None
        warm = eco2_since is not None and t - eco2_since >= cfg.model_warmup_s
        if p is not None:
            scores.append(p)
            if self._held("model", warm and p >= self.threshold, t, cfg.model_persist_s):
                reasons.append("model")
        else:
            self._since["model"] = None

        # heat
        if temp >= cfg.heat_fixed_c:
            reasons.append("heat_fixed")
        scores.append(min(1.0, max(0.0, temp / cfg.heat_fixed_c)) if math.isfinite(temp) else 0)
        if math.isfinite(rise1):
            scores.append(min(1.0, max(0.0, rise1 / cfg.heat_rise_c_per_min)))
        if self._held("heat_rise", rise1 >= cfg.heat_rise_c_per_min, t, cfg.heat_persist_s):
            reasons.append("heat_rise")

        # particles: count distinct new readings that show the surge
        surge, steam, s_score, s_ev = self._smoke(t, rh, rh_jump)
        q = s_ev.get("particles")
        if q is not None:
            n = fx.new_samples.get(q, 0)
            if n != self._seen_pm.get(q):
                self._seen_pm[q] = n
                self._smoke_readings = self._smoke_readings + 1 if surge else 0
        elif not surge:
            self._smoke_readings = 0
        smoke_held = self._held("smoke", surge, t, cfg.smoke_persist_s) and (
            self._smoke_readings >= cfg.smoke_min_readings)
        tvoc, tvoc_base = fx.level("tvoc_ppb", t), fx.baseline("tvoc_ppb", t)
        gas = (math.isfinite(tvoc) and math.isfinite(tvoc_base)
               and tvoc >= max(tvoc_base * cfg.gas_ratio, tvoc_base + cfg.gas_tvoc_delta_ppb))
        warming = rise1 >= cfg.warm_rise_c_per_min
        if smoke_held and not steam:
            reasons.append("smoke")
            scores.append(s_score)
        elif smoke_held and (gas or warming):
            reasons.append("smoke_gas")
            scores.append(s_score)
        elif surge:
            scores.append(0.5 * s_score)

        # combination with hysteresis
        model_quiet = p is None or p < self.clear_threshold
        quiet = (not reasons and model_quiet and not (surge and not steam)
                 and not rise1 >= cfg.heat_rise_c_per_min)
        score = max(scores)
        self.last = {"t": t, "score": score, "model_p": p, "reasons": reasons}
        events: list[FireEvent] = []
        if self.state == CLEAR and reasons:
            self.state = FIRE
            self._quiet_since = None
            events.append(FireEvent(t, FIRE, score, self._evidence(
                reasons, p, temp, rise1, rh, s_ev, gas, steam)))
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
                        reasons, p, temp, rise1, rh, s_ev, gas, steam)))
        return events

    def _evidence(self, reasons: list[str], p: float | None, temp: float, rise1: float,
                  rh: float, s_ev: dict, gas: bool, steam: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"reasons": reasons,
                             "model_p": None if p is None else round(p, 3),
                             "model": self.health["model"],
                             "temperature_c": _r(temp), "t_rise_c_per_min": _r(rise1),
                             "humidity_pct": _r(rh, 1)}
        if s_ev:
            d.update(s_ev)
            d["steam_like"] = steam
        if gas:
            d["gas_surge"] = True
        return d
