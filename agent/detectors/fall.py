"""Fall of a person wearing an accelerometer, on the node itself (sans-I/O).

Feed ``update(t, ax, ay, az)`` (seconds, g) for every sample, or whole blocks with
``update_many(t, acc)``; both return :class:`Event` lists and give identical results.
The same :class:`FallDetector` runs in the daemon, in ``citynode detect fall`` (offline
replay), in ``bench/eval_fall.py`` and in ``training/fall/train.py`` (which collects its
candidate windows through ``on_candidate``), so what is trained is what runs.
docs/fall.md explains it for caregiver-platform people.

Pipeline::

    samples (any rate >= 50 Hz) -> linear resampling to rate_hz (50) -> ring buffer
    -> trigger: |a| >= trigger_g; the candidate impact is the highest |a| within
       merge_s of the first crossing (the model never runs on ordinary samples)
    -> wait until post_s after the impact, then confirmation (cheap, physical):
         still:  std of |a| over [impact + settle_s, + still_s] <= still_std_g
         turned: angle between gravity before (first ref_s of the window) and
                 during the still span >= orientation_deg
    -> only if confirmed: the model on the window [impact - pre_s, impact + post_s)
       (features :data:`FEATURES`), fall if its probability >= threshold
    -> ``fall`` event at the impact time; refractory_s before the next one.

Without a usable model (none shipped, load or inference failure: ``ModelError``) the
detector keeps running on rules alone: a confirmed candidate whose peak is at least
``rule_peak_g`` is a fall, with a rule score (not a probability). :attr:`health` says
which mode it is in and why, for the daemon's sensor-health report. The rules alone
catch fewer falls (93 % instead of 97.5 % in the held-out evaluation) and raise far more
false alarms (about 40 per 24 h of daily activity instead of none: collapsing into a
chair, rolling over in bed, sitting down quickly); docs/fall.md has the figures.

:class:`FallAlarm` is the local cancel window (buzzer, "I'm OK" button) between a
detected fall and the alarm sent upstream; agent/fall_alarm.py wires it to GPIO.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..models.runtime import Model, ModelError, model_path

__all__ = [
    "DEFAULTS",
    "FEATURES",
    "Candidate",
    "ConfirmStats",
    "Event",
    "FallAlarm",
    "FallDetector",
    "FallHealth",
    "confirmation_stats",
    "resample_linear",
    "window_features",
]

# Feature names in the model input's last axis; the model's metadata must list exactly these.
FEATURES = ("amag", "avert", "ahorz", "aup")
RATE_HZ = 50.0
PRE_S = 2.0    # window before the impact (the fall itself, the posture before it)
POST_S = 2.0   # window after the impact (the landing, the first moments on the floor)
REF_S = 1.0    # first part of the window: gravity direction "before"
CLIP_G = 8.0   # features are clipped: harder impacts say nothing more, int8 keeps resolution
# What the accelerometer reads (unit vector, sensor frame) when the wearer stands still:
# SisFall's belt mounting (y axis pointing down). A node worn otherwise sets upright_axis.
UPRIGHT = (0.0, -1.0, 0.0)

# Detector parameters and their defaults; the shipped model's metadata ("thresholds")
# overrides them with the values tuned on the training subjects, keyword arguments
# override both. Why these defaults: see FallDetector.
DEFAULTS: dict[str, float] = {
    "trigger_g": 2.0,         # 99 % of SisFall fall impacts exceed it at 50 Hz; lying down
                              # slowly or sitting into a car rarely does
    "merge_s": 1.0,           # one impact (hands, hip, shoulder) is one candidate
    "settle_s": 1.0,          # bounce and roll after the impact are not "moving"
    "still_s": 1.0,           # how long the person must then lie still (see FallDetector)
    "still_std_g": 0.15,      # walking is >= 0.2 g, lying 0.01-0.05 g
    "orientation_deg": 30.0,  # upright -> lying is 60-110 deg; sitting down 10-40
    "rule_peak_g": 3.0,       # rules alone (no model): a harder impact is required
    "refractory_s": 10.0,     # one fall, one event
    "max_gap_s": 0.5,         # a longer hole in the data restarts the detector
}


@dataclass(frozen=True, slots=True)
class Event:
    """One event; ``data`` holds the event-specific fields (JSON-ready)."""

    t: float
    event: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"t": self.t}
        if "score" in self.data:
            d["score"] = self.data["score"]
        d["event"] = self.event
        d.update((k, v) for k, v in self.data.items() if k != "score")
        return d


@dataclass(frozen=True, slots=True)
class FallHealth:
    """``ok`` False means a model fault: the daemon reports ``message`` as sensor health."""

    ok: bool
    mode: str                  # "model" or "rules"
    model: str | None = None   # "fall 2026.11.1" when a model is in use
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ConfirmStats:
    peak_g: float
    dip_g: float             # lowest |a| in the second before the impact (free fall ~0.3-0.6)
    still_std_g: float
    orientation_deg: float
    tilt_before_deg: float   # gravity before vs upright_axis (nan without one)


@dataclass(frozen=True, slots=True)
class Candidate:
    """What ``on_candidate`` receives for every candidate impact (training, tuning)."""

    t: float
    features: np.ndarray     # (window, len(FEATURES)) float32, physical units
    stats: ConfirmStats
    confirmed: bool


# -- shared with training -------------------------------------------------------------------

def resample_linear(t: np.ndarray, acc: np.ndarray, rate_hz: float = RATE_HZ,
                    t0: float | None = None) -> np.ndarray:
    """Offline version of the detector's resampler: ``acc`` at ``t0 + k / rate_hz``.

    For plotting and tests; the detector resamples incrementally with the same grid and
    the same interpolation, so both agree to the last bit.
    """
    t = np.asarray(t, dtype=np.float64)
    acc = np.asarray(acc, dtype=np.float64)
    t0 = float(t[0]) if t0 is None else t0
    k_end = math.floor((float(t[-1]) - t0) * rate_hz + 1e-9)
    g = t0 + np.arange(0, k_end + 1) / rate_hz
    return np.stack([np.interp(g, t, acc[:, j]) for j in range(3)], axis=1)


def _gravity_dir(ref: np.ndarray) -> np.ndarray:
    g = ref.mean(axis=0)
    n = float(np.linalg.norm(g))
    return g / n if n > 1e-6 else np.array([0.0, 0.0, 1.0])


def window_features(win: np.ndarray, rate_hz: float = RATE_HZ, ref_s: float = REF_S,
                    upright: Sequence[float] = UPRIGHT) -> np.ndarray:
    """Model input from a window of resampled (ax, ay, az) in g: (len, 4) float32.

    ``amag`` = |a|; ``avert`` = a along the gravity direction of the window's first
    ``ref_s`` (before the fall); ``ahorz`` = the rest of |a|; ``aup`` = a along the
    wearer's upright axis (posture: standing and sitting read ~1, lying ~0). The first
    three do not depend on how the sensor is worn; ``aup`` tells a fall from someone
    already lying who rolls over. All clipped to +-CLIP_G.
    """
    win = np.asarray(win, dtype=np.float64)
    gdir = _gravity_dir(win[: max(1, round(ref_s * rate_hz))])
    up = np.asarray(upright, dtype=np.float64)
    up = up / np.linalg.norm(up)
    amag = np.linalg.norm(win, axis=1)
    avert = win @ gdir
    ahorz = np.sqrt(np.maximum(amag * amag - avert * avert, 0.0))
    f = np.stack([amag, avert, ahorz, win @ up], axis=1)
    return np.clip(f, -CLIP_G, CLIP_G).astype(np.float32)


def confirmation_stats(ctx: np.ndarray, impact: int, rate_hz: float = RATE_HZ, *,
                       settle_s: float = DEFAULTS["settle_s"],
                       still_s: float = DEFAULTS["still_s"],
                       ref_s: float = REF_S,
                       upright: Sequence[float] | None = None) -> ConfirmStats:
    """Peak, pre-impact dip, stillness and orientation change around ``ctx[impact]``.

    ``ctx`` starts ``pre_s`` before the impact (its first ``ref_s`` give the gravity
    direction before) and reaches at least ``settle_s + still_s`` after it.
    """
    ctx = np.asarray(ctx, dtype=np.float64)
    mag = np.linalg.norm(ctx, axis=1)
    a = impact + round(settle_s * rate_hz)
    b = a + max(2, round(still_s * rate_hz))
    span = ctx[a:b]
    if len(span) < 2:
        raise ValueError("the context does not reach the end of the still span")
    before = _gravity_dir(ctx[: max(1, round(ref_s * rate_hz))])
    after = _gravity_dir(span)
    dip = mag[max(0, impact - round(rate_hz)):impact + 1].min()
    tilt = math.nan
    if upright is not None:
        up = np.asarray(upright, dtype=np.float64)
        tilt = _angle_deg(before, up / np.linalg.norm(up))
    return ConfirmStats(peak_g=float(mag[impact]), dip_g=float(dip),
                        still_std_g=float(np.linalg.norm(span, axis=1).std()),
                        orientation_deg=_angle_deg(before, after), tilt_before_deg=tilt)


def _angle_deg(u: np.ndarray, v: np.ndarray) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, float(u @ v)))))


def rule_score(peak_g: float, rule_peak_g: float) -> float:
    """0.5 at ``rule_peak_g``, 1.0 at twice that: a confidence, not a probability."""
    return max(0.0, min(1.0, 0.5 * peak_g / rule_peak_g))


# -- the detector ---------------------------------------------------------------------------

DEFAULT_MODEL = "default"


class FallDetector:
    """One wearer (see the module docstring).

    ``model``: ``"default"`` (the shipped agent/models/fall.tflite), a path, a loaded
    :class:`Model`, or ``None`` (rules only, on purpose: health stays ok). A model that
    cannot be loaded leaves the detector on rules with ``health.ok`` False.

    Parameters (keyword; defaults in :data:`DEFAULTS`, overridden by the model's
    metadata ``thresholds``; chosen on the SisFall subjects' cross-validated results):
    ``trigger_g`` (2 g) is below 99 % of fall impacts at 50 Hz, above walking and
    lying down slowly; ``settle_s + still_s`` (2 s) must fit in the seconds a SisFall
    recording goes on after a fall -- in a real home people lie for minutes, and a
    longer ``still_s`` would cut false alarms further at the cost of a later alarm;
    ``still_std_g`` separates lying (0.01-0.05 g) from walking (>= 0.2 g);
    ``orientation_deg`` separates lying from sitting down hard (10-30 degrees at the
    waist). ``upright_axis``: what the accelerometer reads, as a direction, when the
    wearer stands (default: SisFall's belt mounting, y pointing down).
    ``on_candidate(Candidate)`` sees every candidate, confirmed or not.
    """

    def __init__(self, model: Model | str | Path | None = DEFAULT_MODEL, *,
                 threshold: float | None = None,
                 on_candidate: Callable[[Candidate], None] | None = None,
                 upright_axis: Sequence[float] | None = None,
                 **params: float) -> None:
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
        self.model: Model | None = None
        self.health = FallHealth(ok=True, mode="rules", message="no model configured")
        if isinstance(model, Model):
            self._use_model(model)
        elif model is not None:
            path = model_path("fall") if model == DEFAULT_MODEL else Path(model)
            try:
                self._use_model(Model.load(path, expect_task="fall"))
            except ModelError as e:
                self._model_fault(str(e))
        meta = self.model.meta if self.model else None
        self.rate_hz = float(meta.sample_rate_hz) if meta else RATE_HZ
        self.window = int(meta.window) if meta else round((PRE_S + POST_S) * RATE_HZ)
        self.pre_n = self.window // 2
        self.post_n = self.window - self.pre_n
        p = dict(DEFAULTS)
        if meta:
            p.update({k: float(v) for k, v in meta.thresholds.items() if k in DEFAULTS})
        p.update(params)
        self.params = p
        self.threshold = (threshold if threshold is not None
                          else (meta.threshold if meta else 0.5))
        self.on_candidate = on_candidate
        up = upright_axis
        if up is None and meta and "upright_axis" in meta.thresholds:
            up = meta.thresholds["upright_axis"]
        up_a = np.asarray(UPRIGHT if up is None else up, dtype=np.float64).reshape(-1)
        if up_a.shape != (3,) or not np.all(np.isfinite(up_a)) or np.linalg.norm(up_a) < 1e-6:
            raise ValueError(f"upright_axis {up!r}: expected three numbers, not all zero")
        self.upright_axis = tuple(float(v) for v in up_a / np.linalg.norm(up_a))
        r = self.rate_hz
        self._merge_n = max(1, round(p["merge_s"] * r))
        self._need_n = max(self.post_n, round((p["settle_s"] + p["still_s"]) * r) + 1)
        self._refr_n = round(p["refractory_s"] * r)
        self._dt = 1.0 / r
        self.candidates = 0
        self.falls = 0
        self._reset()

    # -- model and health
    def _use_model(self, m: Model) -> None:
        meta = m.meta
        if meta.task != "fall":
            raise ModelError(f"{m.path}: a {meta.task!r} model is not a fall model")
        if tuple(meta.features) != FEATURES:
            self._model_fault(f"{m.path}: features {list(meta.features)}, this detector "
                              f"computes {list(FEATURES)}")
            return
        if meta.input_shape != (meta.window, len(FEATURES)):
            self._model_fault(f"{m.path}: input {list(meta.input_shape)} is not "
                              f"[window, {len(FEATURES)}]")
            return
        self.model = m
        self.health = FallHealth(ok=True, mode="model",
                                 model=f"{meta.name} {meta.version}")

    def _model_fault(self, message: str) -> None:
        self.model = None
        self.health = FallHealth(ok=False, mode="rules",
                                 message=f"fall model unavailable, rules only: {message}")

    @property
    def model_version(self) -> str | None:
        return self.model.meta.version if self.model else None

    # -- streaming state
    def _reset(self) -> None:
        self._anchor: float | None = None   # time of resampled index 0
        self._k = 0                         # next resampled index to produce
        self._last_t: float | None = None
        self._last_a: np.ndarray | None = None
        self._buf = np.zeros((0, 3))
        self._mag = np.zeros(0)
        self._start = 0                     # resampled index of _buf[0]
        self._scan = 0                      # trigger scanned up to (exclusive)
        self._active: list[int] | None = None  # [first crossing, peak index]
        self._pending: list[int] = []       # finalised impacts awaiting post data
        self._last_fall = -(10 ** 12)

    def reset(self) -> None:
        """Forget the signal (a new wearer, a sensor restart); keeps the model and health."""
        self._reset()

    def update(self, t: float, ax: float, ay: float, az: float) -> list[Event]:
        """One sample (seconds, g); returns the events it completes."""
        return self.update_many(np.array([t], dtype=np.float64),
                                np.array([[ax, ay, az]], dtype=np.float64))

    def update_many(self, t: Sequence[float] | np.ndarray,
                    acc: Sequence[Sequence[float]] | np.ndarray) -> list[Event]:
        """A block of samples, times strictly increasing; same result as one by one."""
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        acc = np.asarray(acc, dtype=np.float64).reshape(-1, 3)
        if len(t) != len(acc):
            raise ValueError("t and acc have different lengths")
        if not len(t):
            return []
        if not (np.all(np.isfinite(t)) and np.all(np.isfinite(acc))):
            raise ValueError("samples must be finite numbers")
        if self._last_t is not None and t[0] <= self._last_t:
            raise ValueError(f"t {t[0]} is not after the previous sample {self._last_t}")
        if len(t) > 1 and np.any(np.diff(t) <= 0):
            raise ValueError("sample times must be strictly increasing")
        events: list[Event] = []
        # Split at holes longer than max_gap_s: never interpolate across them.
        prev = np.concatenate([[self._last_t if self._last_t is not None else t[0]], t[:-1]])
        cuts = np.flatnonzero(t - prev > self.params["max_gap_s"])
        bounds = [0, *cuts.tolist(), len(t)]
        for i in range(len(bounds) - 1):
            lo, hi = bounds[i], bounds[i + 1]
            if lo in cuts:
                self._reset()
            events += self._segment(t[lo:hi], acc[lo:hi])
        return events

    def _segment(self, t: np.ndarray, acc: np.ndarray) -> list[Event]:
        if self._anchor is None:
            self._anchor = float(t[0])
        if self._last_t is not None:
            tt = np.concatenate([[self._last_t], t])
            aa = np.concatenate([self._last_a[None, :], acc])
        else:
            tt, aa = t, acc
        self._last_t, self._last_a = float(t[-1]), acc[-1].copy()
        k_end = math.floor((float(tt[-1]) - self._anchor) * self.rate_hz + 1e-9)
        if k_end < self._k:
            return []
        g = self._anchor + np.arange(self._k, k_end + 1) / self.rate_hz
        new = np.stack([np.interp(g, tt, aa[:, j]) for j in range(3)], axis=1)
        self._k = k_end + 1
        self._buf = np.concatenate([self._buf, new])
        self._mag = np.concatenate([self._mag, np.linalg.norm(new, axis=1)])
        events = self._process()
        self._trim()
        return events

    def _process(self) -> list[Event]:
        end = self._start + len(self._buf)
        mag, s0, trig = self._mag, self._start, self.params["trigger_g"]
        while self._scan < end:
            if self._active is not None:
                first, peak = self._active
                stop = min(end, first + self._merge_n)
                seg = mag[self._scan - s0: stop - s0]
                if len(seg):
                    j = self._scan + int(np.argmax(seg))
                    if mag[j - s0] > mag[peak - s0]:
                        self._active[1] = j
                self._scan = stop
                if stop == first + self._merge_n:
                    self._pending.append(self._active[1])
                    self._active = None
            else:
                hits = np.flatnonzero(mag[self._scan - s0:] >= trig)
                if not len(hits):
                    self._scan = end
                    break
                i = self._scan + int(hits[0])
                self._active = [i, i]
                self._scan = i + 1
        events: list[Event] = []
        while self._pending and self._pending[0] + self._need_n <= end:
            ev = self._decide(self._pending.pop(0))
            if ev is not None:
                events.append(ev)
        return events

    def _trim(self) -> None:
        keep_from = self._start + len(self._buf) - (self.pre_n + self._merge_n + self._need_n + 2)
        for i in ([self._active[0]] if self._active else []) + self._pending:
            keep_from = min(keep_from, i - self.pre_n)
        cut = keep_from - self._start
        if cut > 0:
            self._buf = self._buf[cut:]
            self._mag = self._mag[cut:]
            self._start += cut

    def _context(self, p: int) -> np.ndarray:
        """Samples [p - pre_n, p + need_n), the start edge-padded after a (re)start."""
        lo = p - self.pre_n - self._start
        ctx = self._buf[max(0, lo): p + self._need_n - self._start]
        if lo < 0:
            ctx = np.concatenate([np.repeat(ctx[:1], -lo, axis=0), ctx])
        return ctx

    def _decide(self, p: int) -> Event | None:
        if p - self._last_fall < self._refr_n:
            return None
        pr = self.params
        ctx = self._context(p)
        stats = confirmation_stats(ctx, self.pre_n, self.rate_hz, settle_s=pr["settle_s"],
                                   still_s=pr["still_s"], upright=self.upright_axis)
        confirmed = (stats.still_std_g <= pr["still_std_g"]
                     and stats.orientation_deg >= pr["orientation_deg"])
        t = self._anchor + p / self.rate_hz
        self.candidates += 1
        feats = None
        if self.on_candidate is not None:
            feats = window_features(ctx[: self.window], self.rate_hz,
                                    upright=self.upright_axis)
            self.on_candidate(Candidate(t, feats, stats, confirmed))
        if not confirmed:
            return None
        score: float | None = None
        if self.model is not None:
            if feats is None:
                feats = window_features(ctx[: self.window], self.rate_hz,
                                    upright=self.upright_axis)
            try:
                score = self.model.predict(feats)
            except ModelError as e:
                self._model_fault(str(e))
        if score is not None:
            if score < self.threshold:
                return None
            basis = "model"
        else:
            if stats.peak_g < pr["rule_peak_g"]:
                return None
            score, basis = rule_score(stats.peak_g, pr["rule_peak_g"]), "rules"
        self._last_fall = p
        self.falls += 1
        return Event(round(t, 3), "fall", {
            "score": round(score, 3), "basis": basis,
            "model": self.model_version,
            "peak_g": round(stats.peak_g, 2), "dip_g": round(stats.dip_g, 2),
            "still_std_g": round(stats.still_std_g, 3),
            "orientation_deg": round(stats.orientation_deg, 1),
            "tilt_before_deg": round(stats.tilt_before_deg, 1)})

    def flush(self) -> list[Event]:
        """End of the data: impacts without enough samples after them are dropped."""
        self._pending.clear()
        self._active = None
        return []


# -- the local cancel window ----------------------------------------------------------------

IDLE = "idle"
PENDING = "pending"


class FallAlarm:
    """Between a detected fall and the alarm upstream: ``cancel_s`` for "I'm OK".

    ``fall(event, now)`` enters ``pending`` (the daemon sounds the buzzer and lights the
    LED while :attr:`pending`); ``cancel(now)`` (the button) gives ``cancelled``;
    ``tick(now)`` gives ``alarm`` once ``cancel_s`` have passed. A second fall while
    pending keeps the first deadline and the higher score. ``now`` is a monotonic clock
    (the event's own ``t`` may be data time). Events carry the fall's fields.
    """

    def __init__(self, cancel_s: float = 30.0) -> None:
        if not cancel_s >= 0:
            raise ValueError("cancel_s must be >= 0")
        self.cancel_s = cancel_s
        self.state = IDLE
        self._fall: dict[str, Any] | None = None
        self._deadline = 0.0
        self._since = 0.0
        self._left = 0.0

    @property
    def pending(self) -> bool:
        return self.state == PENDING

    @property
    def remaining_s(self) -> float:
        """Seconds left to cancel, as of the last call (0 when idle)."""
        return self._left if self.pending else 0.0

    def fall(self, event: Event | dict[str, Any], now: float) -> list[Event]:
        d = event.to_dict() if isinstance(event, Event) else dict(event)
        if self.pending and self._fall is not None:
            if d.get("score", 0) > self._fall.get("score", 0):
                self._fall = {**d, "t": self._fall["t"]}
            return []
        self.state, self._fall = PENDING, d
        self._since, self._deadline = now, now + self.cancel_s
        self._left = self.cancel_s
        return [self._out("fall_pending", now), *self.tick(now)]

    def cancel(self, now: float) -> list[Event]:
        if not self.pending:
            return []
        ev = self._out("cancelled", now)
        self.state, self._fall = IDLE, None
        return [ev]

    def tick(self, now: float) -> list[Event]:
        if not self.pending:
            return []
        self._left = max(0.0, self._deadline - now)
        if now < self._deadline:
            return []
        ev = self._out("alarm", now)
        self.state, self._fall = IDLE, None
        return [ev]

    def _out(self, kind: str, now: float) -> Event:
        d = dict(self._fall or {})
        t = d.pop("t", now)
        d.pop("event", None)
        d["waited_s"] = round(now - self._since, 1)
        if kind == "fall_pending":
            d["cancel_s"] = self.cancel_s
        return Event(t, kind, d)
