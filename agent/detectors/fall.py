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
         lying:  still span's gravity >= lying_deg from upright_axis (0: off)
         was up: gravity before <= max_tilt_before_deg from upright_axis (180: off)
         a fall: peak >= impact_g, or a free fall before it (dip <= freefall_g) (0: off)
    -> only if confirmed: the model on the window [impact - pre_s, impact + post_s)
       (features :data:`FEATURES`), fall if its probability >= threshold
    -> ``fall`` event at the impact time; refractory_s before the next one.

Without a usable model (none shipped, load or inference failure: ``ModelError``) the
detector keeps running on rules alone: a confirmed candidate whose peak is at least
``rule_peak_g`` is a fall, with a rule score (not a probability). :attr:`health` says
which mode it is in and why, for the daemon's sensor-health report. The rules alone
catch fewer falls (93 % instead of 97 % on subjects never seen) and raise far more
false alarms (1.75 instead of 0.28 per hour of daily activity: collapsing into a chair,
rolling over in bed, sitting down quickly); docs/fall.md has the figures.

:class:`FallAlarm` is the local cancel window (buzzer, "I'm OK" button) between a
detected fall and the alarm sent upstream; agent/features/fall_alarm.py wires it to GPIO.

Pure Python (``math``, ``bisect``, a bounded ``deque``), no numpy: importing it costs
the daemon 12.6 MiB of its 45 MiB memory target (``make bench``). Per sample there is
only resampling, |a| and the trigger; the window statistics and features are computed
for a candidate.
The arithmetic follows numpy's (``interp``, row norms, pairwise sums; dot products may
differ in the last bit), so bench/eval_fall.py's figures did not move when numpy went.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain, islice, pairwise
from operator import lt, sub
from pathlib import Path
from typing import Any

from agent.models.runtime import Model, ModelError, model_path

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
    "confirms",
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
# overrides them with the values chosen by nested cross-validation (training/fall/select.py),
# keyword arguments override both. Why these defaults: see FallDetector.
DEFAULTS: dict[str, float] = {
    "trigger_g": 2.0,         # 99 % of SisFall fall impacts exceed it at 50 Hz; lying down
                              # slowly or sitting into a car rarely does
    "merge_s": 1.0,           # one impact (hands, hip, shoulder) is one candidate
    "settle_s": 1.0,          # bounce and roll after the impact are not "moving"
    "still_s": 1.0,           # how long the person must then lie still (see FallDetector)
    "still_std_g": 0.15,      # walking is >= 0.2 g, lying 0.01-0.05 g
    "orientation_deg": 30.0,  # upright -> lying is 60-110 deg; sitting down 10-40
    "lying_deg": 0.0,         # posture after, from upright: lying 60-90, sitting 0-40 (0: off)
    "max_tilt_before_deg": 180.0,  # posture before: rolling over in bed starts at ~90
                                   # (180: off; a fall out of bed starts lying too)
    "impact_g": 0.0,          # a hard impact, or else a free fall before it: lying down
    "freefall_g": 0.0,        # quickly peaks at 2-2.7 g after a dip of 0.7-0.8 g (0: off)
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
    tilt_after_deg: float = math.nan  # gravity in the still span vs upright_axis (lying ~90)


@dataclass(frozen=True, slots=True)
class Candidate:
    """What ``on_candidate`` receives for every candidate impact (training, tuning).

    ``features``: :func:`window_features` of the window, ``window`` rows of
    ``len(FEATURES)`` float32 values in physical units, as lists (the node has no
    numpy); ``np.asarray(c.features, dtype=np.float32)`` gives the array.
    """

    t: float
    features: list[list[float]]
    stats: ConfirmStats
    confirmed: bool


# -- shared with training -------------------------------------------------------------------
# Lists out, no numpy (see the module docstring); arrays in are welcome: anything with
# ``tolist`` (or a float64 buffer) is converted first.

Rows = list[list[float]]
_NEVER = 1 << 62  # "no decision due": larger than any resampled index


def _floats(x: Any) -> list[float]:
    """``np.asarray(x, dtype=np.float64).reshape(-1)`` as a list (bisect wants a list)."""
    f64 = str(getattr(x, "dtype", "")) == "float64"   # tolist already gives floats
    if hasattr(x, "tolist"):
        x = x.tolist()
    if isinstance(x, (int, float)):
        return [float(x)]
    x = list(x)
    if x and _nested(x[0]):
        x, f64 = _flatten(x), False
    return x if f64 else list(map(float, x))


def _nested(v: Any) -> bool:
    return hasattr(v, "__len__") and not isinstance(v, (str, bytes))


def _flatten(rows: list[Any]) -> list[Any]:
    """Nested rows of equal length to one list, row-major (like numpy's ``reshape``)."""
    while rows and _nested(rows[0]):
        rows = [r.tolist() if hasattr(r, "tolist") else r for r in rows]
        if len(set(map(len, rows))) != 1:
            raise ValueError("rows of samples must all have the same length")
        rows = list(chain.from_iterable(rows))
    return rows


def _columns(acc: Any) -> tuple[Sequence[float], Sequence[float], Sequence[float]]:
    """(ax, ay, az) columns of floats from n rows or 3n values, like ``reshape(-1, 3)``.

    A contiguous float64 buffer (a numpy array, through the buffer protocol) is copied
    into an ``array('d')`` at memory speed: bench/eval_fall.py pushes hours of 200 Hz
    data through here, and a Python float per value would double its run time.
    """
    try:
        with memoryview(acc) as mv:
            if (mv.format == "d" and mv.c_contiguous and mv.nbytes % 24 == 0
                    and (mv.ndim == 1 or (mv.ndim == 2 and mv.shape[1] == 3))):
                a = array("d")
                a.frombytes(mv.cast("B"))
                return a[0::3], a[1::3], a[2::3]
    except (TypeError, ValueError, BufferError):   # no usable buffer: lists, tuples
        pass
    flat = _flatten(acc.tolist() if hasattr(acc, "tolist") else list(acc))
    if len(flat) % 3:
        raise ValueError("acc must hold three values (ax, ay, az) per sample")
    return (list(map(float, flat[0::3])), list(map(float, flat[1::3])),
            list(map(float, flat[2::3])))


def _rows(x: Any) -> Sequence[Sequence[float]]:
    return x.tolist() if hasattr(x, "tolist") else x


def _finite(*cols: Sequence[float]) -> bool:
    # A sum is finite only if every term is; an overflowing sum gets the exact check.
    return all(math.isfinite(sum(c)) or all(map(math.isfinite, c)) for c in cols)


def _resample(ts: Sequence[float], xs: Sequence[float], ys: Sequence[float],
              zs: Sequence[float], t0: float, rate_hz: float, k0: int,
              k1: int) -> Iterator[tuple[float, float, float]]:
    """(ax, ay, az) at ``t0 + k / rate_hz``, k = k0..k1: ``numpy.interp`` on each axis.

    Its arithmetic to the last bit: before ``ts[0]`` the first sample, from ``ts[-1]``
    on the last, at a sample's own time that sample. ``FallDetector._segment`` has it
    inlined (tests check that both agree).
    """
    last = len(ts) - 1
    j = 0
    for k in range(k0, k1 + 1):
        g = t0 + k / rate_hz
        i = bisect_right(ts, g, j)
        j = i - 1 if i else 0
        tj = ts[j]
        if j == last or tj >= g:
            yield xs[j], ys[j], zs[j]
        else:
            d, dt = g - tj, ts[i] - tj
            x, y, z = xs[j], ys[j], zs[j]
            yield ((xs[i] - x) / dt * d + x, (ys[i] - y) / dt * d + y,
                   (zs[i] - z) / dt * d + z)


def resample_linear(t: Sequence[float] | Any, acc: Sequence[Sequence[float]] | Any,
                    rate_hz: float = RATE_HZ, t0: float | None = None) -> Rows:
    """Offline version of the detector's resampler: ``acc`` at ``t0 + k / rate_hz``.

    For plotting and tests; the detector resamples incrementally with the same grid and
    the same interpolation, so both agree to the last bit. Rows of (ax, ay, az).
    """
    ts = _floats(t)
    xs, ys, zs = _columns(acc)
    t0 = ts[0] if t0 is None else float(t0)
    k_end = math.floor((ts[-1] - t0) * rate_hz + 1e-9)
    return [list(p) for p in _resample(ts, xs, ys, zs, t0, rate_hz, 0, k_end)]


def _norms(rows: Sequence[Sequence[float]]) -> list[float]:
    sqrt = math.sqrt
    return [sqrt(x * x + y * y + z * z) for x, y, z in rows]


def _unit(v: Any) -> tuple[float, float, float]:
    x, y, z = _floats(v)
    n = math.sqrt(x * x + y * y + z * z)
    return x / n, y / n, z / n


def _gravity_dir(rows: Sequence[Sequence[float]]) -> tuple[float, float, float]:
    sx = sy = sz = 0.0
    for x, y, z in rows:
        sx += x
        sy += y
        sz += z
    n = len(rows) or 1
    gx, gy, gz = sx / n, sy / n, sz / n
    norm = math.sqrt(gx * gx + gy * gy + gz * gz)
    return (gx / norm, gy / norm, gz / norm) if norm > 1e-6 else (0.0, 0.0, 1.0)


def _pairwise_sum(v: Sequence[float], lo: int, n: int) -> float:
    """numpy's summation order (8 accumulators, halves above 128 values): the stillness
    threshold was tuned on numpy's ``std``, this gives it to the last bit."""
    if n < 8:
        s = 0.0
        for i in range(lo, lo + n):
            s += v[i]
        return s
    if n <= 128:
        r = list(v[lo:lo + 8])
        i = 8
        while i < n - n % 8:
            for a in range(8):
                r[a] += v[lo + i + a]
            i += 8
        s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for rest in range(lo + i, lo + n):
            s += v[rest]
        return s
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(v, lo, n2) + _pairwise_sum(v, lo + n2, n - n2)


def _std(v: Sequence[float]) -> float:
    n = len(v)
    m = _pairwise_sum(v, 0, n) / n
    return math.sqrt(_pairwise_sum([(x - m) * (x - m) for x in v], 0, n) / n)


def window_features(win: Sequence[Sequence[float]] | Any, rate_hz: float = RATE_HZ,
                    ref_s: float = REF_S, upright: Sequence[float] = UPRIGHT) -> Rows:
    """Model input from a window of resampled (ax, ay, az) in g: ``len(win)`` rows of 4.

    ``amag`` = |a|; ``avert`` = a along the gravity direction of the window's first
    ``ref_s`` (before the fall); ``ahorz`` = the rest of |a|; ``aup`` = a along the
    wearer's upright axis (posture: standing and sitting read ~1, lying ~0). The first
    three do not depend on how the sensor is worn; ``aup`` tells a fall from someone
    already lying who rolls over. All clipped to +-CLIP_G and rounded to float32, the
    model's input type, so training sees exactly what the node feeds the model.
    """
    rows = _rows(win)
    gx, gy, gz = _gravity_dir(rows[: max(1, round(ref_s * rate_hz))])
    ux, uy, uz = _unit(upright)
    sqrt, lo, hi = math.sqrt, -CLIP_G, CLIP_G
    flat: list[float] = []
    for x, y, z in rows:
        amag = sqrt(x * x + y * y + z * z)
        av = x * gx + y * gy + z * gz
        h = amag * amag - av * av
        flat += (amag, av, sqrt(h) if h > 0.0 else 0.0, x * ux + y * uy + z * uz)
    f = array("f", [lo if v < lo else hi if v > hi else v for v in flat]).tolist()
    return [f[i:i + 4] for i in range(0, len(f), 4)]


def confirmation_stats(ctx: Sequence[Sequence[float]] | Any, impact: int,
                       rate_hz: float = RATE_HZ, *,
                       settle_s: float = DEFAULTS["settle_s"],
                       still_s: float = DEFAULTS["still_s"],
                       ref_s: float = REF_S,
                       upright: Sequence[float] | None = None) -> ConfirmStats:
    """Peak, pre-impact dip, stillness and orientation change around ``ctx[impact]``.

    ``ctx`` starts ``pre_s`` before the impact (its first ``ref_s`` give the gravity
    direction before) and reaches at least ``settle_s + still_s`` after it.
    """
    rows = _rows(ctx)
    a = impact + round(settle_s * rate_hz)
    b = a + max(2, round(still_s * rate_hz))
    span = rows[a:b]
    if len(span) < 2:
        raise ValueError("the context does not reach the end of the still span")
    before = _gravity_dir(rows[: max(1, round(ref_s * rate_hz))])
    after = _gravity_dir(span)
    dip = min(_norms(rows[max(0, impact - round(rate_hz)):impact + 1]))
    tilt = tilt_after = math.nan
    if upright is not None:
        up = _unit(upright)
        tilt, tilt_after = _angle_deg(before, up), _angle_deg(after, up)
    return ConfirmStats(peak_g=_norms(rows[impact:impact + 1])[0], dip_g=dip,
                        still_std_g=_std(_norms(span)),
                        orientation_deg=_angle_deg(before, after), tilt_before_deg=tilt,
                        tilt_after_deg=tilt_after)


def _angle_deg(u: Sequence[float], v: Sequence[float]) -> float:
    c = u[0] * v[0] + u[1] * v[1] + u[2] * v[2]
    return math.degrees(math.acos(max(-1.0, min(1.0, c))))


def confirms(stats: ConfirmStats, params: dict[str, float]) -> bool:
    """The physical confirmation: still, turned, and (when asked) lying after, upright
    before, and a hard impact or a free fall. One function for the detector and
    training/fall/select.py (the tuning)."""
    lying, up_before = params.get("lying_deg", 0.0), params.get("max_tilt_before_deg", 180.0)
    impact = params.get("impact_g", 0.0)
    return (stats.still_std_g <= params["still_std_g"]
            and stats.orientation_deg >= params["orientation_deg"]
            and (lying <= 0.0 or stats.tilt_after_deg >= lying)
            and (up_before >= 180.0 or stats.tilt_before_deg <= up_before)
            and (impact <= 0.0 or stats.peak_g >= impact
                 or stats.dip_g <= params.get("freefall_g", 0.0)))


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
    metadata ``thresholds``, which training/fall/select.py chooses by cross-validation):
    ``trigger_g`` (2 g) is below 99 % of fall impacts at 50 Hz, above walking and
    lying down slowly; ``settle_s + still_s`` (2 s) must fit in the seconds a SisFall
    recording goes on after a fall -- in a real home people lie for minutes, and a
    longer ``still_s`` would cut false alarms further at the cost of a later alarm;
    ``still_std_g`` separates lying (0.01-0.05 g) from walking (>= 0.2 g);
    ``orientation_deg`` separates lying from sitting down hard (10-30 degrees at the
    waist); ``lying_deg``, ``max_tilt_before_deg`` and ``impact_g``/``freefall_g`` are
    further checks, off by default (see :func:`confirms`). ``upright_axis``: what the
    accelerometer reads, as a direction, when the wearer stands (default: SisFall's belt
    mounting, y pointing down).
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
        try:
            ux, uy, uz = _floats(UPRIGHT if up is None else up)
            norm = math.sqrt(ux * ux + uy * uy + uz * uz)
        except (TypeError, ValueError):
            norm = math.nan
        if not (math.isfinite(norm) and norm >= 1e-6):
            raise ValueError(f"upright_axis {up!r}: expected three numbers, not all zero")
        self.upright_axis = (ux / norm, uy / norm, uz / norm)
        r = self.rate_hz
        self._merge_n = max(1, round(p["merge_s"] * r))
        self._need_n = max(self.post_n, round((p["settle_s"] + p["still_s"]) * r) + 1)
        self._refr_n = round(p["refractory_s"] * r)
        # Enough for every pending decision's context: pre_n before its impact, and it
        # is decided at most max(need_n, merge_n) samples after it.
        self._buf_n = self.pre_n + self._merge_n + self._need_n + 2
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
        self._last_a: tuple[float, float, float] = (0.0, 0.0, 0.0)
        # the last _buf_n resampled samples, (ax, ay, az); index _k - 1 is the newest
        self._buf: deque[tuple[float, float, float]] = deque(maxlen=self._buf_n)
        self._merge_last = -1               # candidate being merged: its last index, or -1
        self._peak = 0                      # its highest |a| so far: index and value
        self._peak_m = 0.0
        self._pending: list[int] = []       # finalised impacts awaiting post data
        self._due = _NEVER                  # index at which _pending[0] can be decided
        self._last_fall = -(10 ** 12)

    def reset(self) -> None:
        """Forget the signal (a new wearer, a sensor restart); keeps the model and health."""
        self._reset()

    def update(self, t: float, ax: float, ay: float, az: float) -> list[Event]:
        """One sample (seconds, g); returns the events it completes."""
        try:
            t, ax, ay, az = float(t), float(ax), float(ay), float(az)
        except (TypeError, ValueError):
            raise ValueError("samples must be finite numbers") from None
        isfinite = math.isfinite
        if not (isfinite(t) and isfinite(ax) and isfinite(ay) and isfinite(az)):
            raise ValueError("samples must be finite numbers")
        last = self._last_t
        if last is not None:
            if t <= last:
                raise ValueError(f"t {t} is not after the previous sample {last}")
            if t - last > self.params["max_gap_s"]:
                self._reset()
        return self._segment((t,), (ax,), (ay,), (az,))

    def update_many(self, t: Sequence[float] | Any,
                    acc: Sequence[Sequence[float]] | Any) -> list[Event]:
        """A block of samples, times strictly increasing; same result as one by one.

        ``t``: n times; ``acc``: n rows (ax, ay, az) or 3n values; sequences or arrays
        (anything with ``tolist``, e.g. numpy's, which the module never imports).
        """
        try:
            ts = _floats(t)
            xs, ys, zs = _columns(acc)
        except TypeError:
            raise ValueError("samples must be finite numbers") from None
        n = len(ts)
        if len(xs) != n:
            raise ValueError("t and acc have different lengths")
        if not n:
            return []
        if not _finite(ts, xs, ys, zs):
            raise ValueError("samples must be finite numbers")
        last = self._last_t
        if last is not None and ts[0] <= last:
            raise ValueError(f"t {ts[0]} is not after the previous sample {last}")
        if not all(map(lt, ts, ts[1:])):
            raise ValueError("sample times must be strictly increasing")
        # Split at holes longer than max_gap_s: never interpolate across them.
        gap = self.params["max_gap_s"]
        cuts = [0] if last is not None and ts[0] - last > gap else []
        if n > 1 and max(map(sub, ts[1:], ts)) > gap:
            cuts += [i + 1 for i, d in enumerate(map(sub, ts[1:], ts)) if d > gap]
        if not cuts:
            return self._segment(ts, xs, ys, zs)
        events: list[Event] = []
        bounds = [0, *cuts, n]
        for lo, hi in pairwise(bounds):
            if lo in cuts:
                self._reset()
            if hi > lo:
                events += self._segment(ts[lo:hi], xs[lo:hi], ys[lo:hi], zs[lo:hi])
        return events

    def _segment(self, ts: Sequence[float], xs: Sequence[float], ys: Sequence[float],
                 zs: Sequence[float]) -> list[Event]:
        """Samples without a hole, after the previous one: resample, trigger, decide.

        The hot loop, once per resampled sample: state in locals, no calls but sqrt
        (and bisect); the window statistics only when an impact is due.
        """
        if self._anchor is None:
            self._anchor = ts[0]
        if self._last_t is not None:   # interpolate from the previous block's last sample
            lx, ly, lz = self._last_a
            ts, xs, ys, zs = [self._last_t, *ts], [lx, *xs], [ly, *ys], [lz, *zs]
        self._last_t, self._last_a = ts[-1], (xs[-1], ys[-1], zs[-1])
        k0 = self._k
        k_end = math.floor((ts[-1] - self._anchor) * self.rate_hz + 1e-9)
        if k_end < k0:
            return []
        events: list[Event] = []
        sqrt, append = math.sqrt, self._buf.append
        trig, merge_n, need_n = self.params["trigger_g"], self._merge_n, self._need_n
        pending = self._pending
        merge_last, peak, peak_m, due = self._merge_last, self._peak, self._peak_m, self._due
        t0, r, last, j, step = self._anchor, self.rate_hz, len(ts) - 1, 0, 0
        k = k0
        try:   # an on_candidate or model exception leaves the state consistent
            for k in range(k0, k_end + 1):
                # _resample inlined (a generator step per sample costs as much as the rest),
                # and when the grid falls on samples (SisFall's 200 Hz) the next one is
                # tried before a search: a third less time for bench/ and training/.
                g = t0 + k / r
                i = j + step
                if i <= last and ts[i] == g:
                    j = i
                    x, y, z = xs[j], ys[j], zs[j]
                else:
                    i = bisect_right(ts, g, j)
                    i = i - 1 if i else 0
                    step, j = i - j, i
                    tj = ts[j]
                    if j == last or tj >= g:
                        x, y, z = xs[j], ys[j], zs[j]
                    else:
                        i = j + 1
                        d, dt = g - tj, ts[i] - tj
                        x, y, z = xs[j], ys[j], zs[j]
                        x, y, z = ((xs[i] - x) / dt * d + x, (ys[i] - y) / dt * d + y,
                                   (zs[i] - z) / dt * d + z)
                m = sqrt(x * x + y * y + z * z)
                append((x, y, z))
                if merge_last < 0:
                    if m >= trig:      # a new candidate: its peak within merge_n samples
                        peak, peak_m, merge_last = k, m, k + merge_n - 1
                elif m > peak_m:
                    peak, peak_m = k, m
                if k == merge_last:
                    if not pending:
                        due = peak + need_n - 1
                    pending.append(peak)
                    merge_last = -1
                if k >= due:
                    while pending and pending[0] + need_n <= k + 1:
                        ev = self._decide(pending.pop(0), k + 1)
                        if ev is not None:
                            events.append(ev)
                    due = pending[0] + need_n - 1 if pending else _NEVER
        finally:
            self._k = k + 1
            self._merge_last, self._peak, self._peak_m = merge_last, peak, peak_m
            self._due = due
        return events

    def _context(self, p: int, end: int) -> list[tuple[float, float, float]]:
        """Samples [p - pre_n, p + need_n), the start edge-padded after a (re)start."""
        buf = self._buf
        s0 = end - len(buf)                 # resampled index of buf[0]
        lo = p - self.pre_n - s0
        ctx = list(islice(buf, max(0, lo), p + self._need_n - s0))
        if lo < 0:
            ctx[:0] = ctx[:1] * -lo
        return ctx

    def _decide(self, p: int, end: int) -> Event | None:
        if p - self._last_fall < self._refr_n:
            return None
        pr = self.params
        ctx = self._context(p, end)
        stats = confirmation_stats(ctx, self.pre_n, self.rate_hz, settle_s=pr["settle_s"],
                                   still_s=pr["still_s"], upright=self.upright_axis)
        confirmed = confirms(stats, pr)
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
        self._merge_last = -1
        self._due = _NEVER
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
