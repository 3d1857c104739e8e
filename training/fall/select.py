"""Choose the fall detector's parameters on training subjects only (numpy; no TensorFlow).

:func:`select` is the whole rule, and it sees only what it is given: the candidates of the
training subjects, each with a model score from a model that never saw that subject (nor,
in the nested procedure, the outer fold's test subjects). :func:`run_selection` builds
those inputs for every outer fold and for the shipped model (``training.fall.nested``).

The grid (:data:`GRID`) is fixed in advance on physical grounds, not fitted:

- ``trigger_g`` 1.8-3 g: below 99 % of fall impacts at 50 Hz, above most walking;
- ``settle_s`` / ``still_s``: 2 to 4 s after the impact (SisFall recordings go on 4 s or
  more after 99 % of the falls; a home lets the wearer lie for minutes);
- ``still_std_g`` 0.05-0.2 g (lying reads 0.01-0.05, walking 0.2 and more);
- ``orientation_deg`` 20-50 degrees (upright -> lying is 60-110);
- ``lying_deg`` off or 40-60 degrees (the posture after the impact, from the upright axis:
  lying on the floor rather than sitting in a chair);
- ``max_tilt_before_deg`` off or 60-75 degrees (upright before the impact: rolling over in
  bed is not a fall; a fall out of bed is missed then);
- ``impact_g`` off or 2.5-3.5 g, with ``freefall_g`` 0.5-0.7 g: the impact must be hard,
  or come after a free fall (the lowest |a| in the second before it). Lying down quickly
  onto a bed peaks at 2-2.7 g after a dip of only 0.7-0.8 g; this check was added after
  seeing those daily activities pass every other check (on the development subjects, so
  the grid, not the values, saw them);
- the model ``threshold`` 0.5-0.98.

The rule: among the settings whose false alarms per hour of daily activity (ADL) on the
training subjects are at most ``target_fa_per_h``, take the highest fall sensitivity; the
settings within one standard error of it (``sqrt(p (1 - p) / n)``, n = training fall
trials) count as ties, and of those the most conservative wins: fewest false alarms, then
fewest ADL impacts that pass the physical confirmation (less reliance on the model for
people it never saw), then the higher model threshold, the higher trigger, the longer
still window, the lower stillness limit, the larger orientation change, the stricter
lying and upright-before checks. If no setting meets the target, the fewest false alarms
win (then sensitivity), and the choice says so (``met`` False).

The replay is exact: the same candidates, the same :func:`~agent.detectors.fall.confirms`
and the detector's refractory period, so the figures are what the detector would do
(``tests/test_fall_nested.py`` checks it against the detector).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from agent.detectors.fall import DEFAULTS, RATE_HZ, ConfirmStats, confirms

from .data import N_FOLDS, fold_of, load_trials, subjects

TARGET_FA_PER_H = 0.2

# (trigger_g, settle_s, still_s) need a pass of the detector each; the rest is post hoc.
GRID: dict[str, tuple[float, ...]] = {
    "trigger_g": (1.8, 2.0, 2.5, 3.0),
    "still_std_g": (0.05, 0.1, 0.15, 0.2),
    "orientation_deg": (20.0, 30.0, 40.0, 50.0),
    "lying_deg": (0.0, 40.0, 50.0, 60.0),
    "max_tilt_before_deg": (180.0, 75.0, 60.0),
    "impact_g": (0.0, 2.5, 3.0, 3.5),
    "freefall_g": (0.5, 0.6, 0.7),
    "threshold": (0.5, 0.7, 0.8, 0.9, 0.95, 0.98),
}
WINDOWS: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.0, 2.0), (1.0, 3.0))  # settle, still
TUNED = ("trigger_g", "settle_s", "still_s", "still_std_g", "orientation_deg", "lying_deg",
         "max_tilt_before_deg", "impact_g", "freefall_g")


@dataclass(frozen=True)
class TrialInfo:
    subject: str
    activity: str     # D01..D19, F01..F15
    seconds: float

    @property
    def is_fall(self) -> bool:
        return self.activity.startswith("F")


@dataclass
class Pass:
    """The candidates of one detector pass (one trigger and still window) over all trials.

    Parallel arrays, one entry per candidate, in trial then time order; ``window`` indexes
    the scored windows (-1: not scored, because it fails even the loosest confirmation).
    """

    trigger_g: float
    settle_s: float
    still_s: float
    trial: np.ndarray            # int, index into the trial list
    p: np.ndarray                # int, 50 Hz sample index of the impact in its trial
    stats: np.ndarray            # float (n, 6): still_std_g, orientation, tilt before,
                                 # tilt after, peak_g, dip_g
    window: np.ndarray           # int


@dataclass
class Figures:
    fall_trials: int
    detected: int
    adl_trials: int
    adl_flagged: int             # ADL trials with at least one false alarm
    false_alarms: int
    adl_hours: float
    adl_confirmed: int           # ADL candidates passing the physical confirmation

    @property
    def sensitivity(self) -> float:
        return self.detected / self.fall_trials if self.fall_trials else 0.0

    @property
    def fa_per_h(self) -> float:
        return self.false_alarms / self.adl_hours if self.adl_hours else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"sensitivity": round(self.sensitivity, 4), "fall_trials": self.fall_trials,
                "detected": self.detected, "adl_trials": self.adl_trials,
                "adl_flagged": self.adl_flagged, "false_alarms": self.false_alarms,
                "adl_hours": round(self.adl_hours, 3), "fa_per_h": round(self.fa_per_h, 3),
                "adl_confirmed": self.adl_confirmed}


@dataclass
class Choice:
    params: dict[str, float]     # the TUNED detector parameters
    threshold: float
    figures: Figures
    met: bool                    # the false-alarm target was met on the training subjects
    ties: int                    # settings within one standard error of the best
    settings: int                # settings tried
    subjects: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"params": self.params, "threshold": self.threshold,
                "training_figures": self.figures.to_dict(), "target_met": self.met,
                "ties": self.ties, "settings": self.settings, "subjects": self.subjects}


# -- the replay -----------------------------------------------------------------------------

STATS = ("still_std_g", "orientation_deg", "tilt_before_deg", "tilt_after_deg", "peak_g",
         "dip_g")


def _stats_row(s: ConfirmStats) -> tuple[float, ...]:
    return tuple(getattr(s, f) for f in STATS)


def _params(still_std: float, orient: float, lying: float, tb: float, impact: float = 0.0,
            freefall: float = 0.0) -> dict[str, float]:
    return {"still_std_g": still_std, "orientation_deg": orient, "lying_deg": lying,
            "max_tilt_before_deg": tb, "impact_g": impact,
            "freefall_g": freefall if impact > 0.0 else 0.0}


def _post_hoc(grid: dict[str, tuple[float, ...]]) -> list[dict[str, float]]:
    """The post-hoc confirmation settings of the grid (the free-fall level only matters
    with an impact level)."""
    out = []
    for std, orient, lying, tb in product(grid["still_std_g"], grid["orientation_deg"],
                                          grid["lying_deg"], grid["max_tilt_before_deg"]):
        for imp in grid.get("impact_g", (0.0,)):
            for ff in (grid.get("freefall_g", (0.0,)) if imp > 0.0 else (0.0,)):
                out.append(_params(std, orient, lying, tb, imp, ff))
    return out


def confirm_mask(stats: np.ndarray, params: dict[str, float]) -> np.ndarray:
    """:func:`~agent.detectors.fall.confirms` over rows of :data:`STATS` (slow: the
    reference that the fast version is tested against)."""
    out = np.empty(len(stats), dtype=bool)
    for i, row in enumerate(stats.tolist()):
        out[i] = confirms(ConfirmStats(**dict(zip(STATS, row, strict=True))), params)
    return out


def _confirm_fast(stats: np.ndarray, params: dict[str, float]) -> np.ndarray:
    m = (stats[:, 0] <= params["still_std_g"]) & (stats[:, 1] >= params["orientation_deg"])
    if params["lying_deg"] > 0.0:
        m &= stats[:, 3] >= params["lying_deg"]
    if params["max_tilt_before_deg"] < 180.0:
        m &= stats[:, 2] <= params["max_tilt_before_deg"]
    if params.get("impact_g", 0.0) > 0.0:
        m &= (stats[:, 4] >= params["impact_g"]) | (stats[:, 5] <= params["freefall_g"])
    return m


def _events(ps: Pass, hit: np.ndarray, n_trials: int, refr_n: int) -> np.ndarray:
    """Events per trial from the candidates that would fire, with the refractory period."""
    events = np.zeros(n_trials, dtype=np.int64)
    last_trial, last_p = -1, 0
    for i in np.flatnonzero(hit).tolist():
        tr, p = int(ps.trial[i]), int(ps.p[i])
        if tr == last_trial and p - last_p < refr_n:
            continue
        events[tr] += 1
        last_trial, last_p = tr, p
    return events


def replay(ps: Pass, scores: np.ndarray, trials: Sequence[TrialInfo], keep: np.ndarray,
           params: dict[str, float], threshold: float,
           refractory_s: float = DEFAULTS["refractory_s"]) -> tuple[Figures, np.ndarray]:
    """Figures of one setting over the trials where ``keep`` is True, and the number of
    events per trial (what the detector would emit: confirmed, score >= threshold, not
    within the refractory period of the previous event)."""
    conf = _confirm_fast(ps.stats, params) & keep[ps.trial]
    sc = np.where(ps.window >= 0, scores[np.maximum(ps.window, 0)], np.nan)
    events = _events(ps, conf & (sc >= threshold), len(trials),
                     round(refractory_s * RATE_HZ))
    is_fall = np.array([t.is_fall for t in trials], dtype=bool)
    secs = np.array([t.seconds for t in trials])
    adl, fall = keep & ~is_fall, keep & is_fall
    return Figures(fall_trials=int(fall.sum()), detected=int((events[fall] > 0).sum()),
                   adl_trials=int(adl.sum()), adl_flagged=int((events[adl] > 0).sum()),
                   false_alarms=int(events[adl].sum()), adl_hours=float(secs[adl].sum()) / 3600,
                   adl_confirmed=int((conf & adl[ps.trial]).sum())), events


# -- the selection --------------------------------------------------------------------------

def _settings(ps: Pass, scores: np.ndarray, trials: Sequence[TrialInfo], keep: np.ndarray,
              grid: dict[str, tuple[float, ...]],
              ) -> Iterable[tuple[Figures, dict[str, float], float]]:
    """Every post-hoc setting of one pass over the kept trials (same figures as
    :func:`replay`, faster: only candidates that can confirm, events counted exactly only
    where they can differ from "any hit")."""
    is_fall = np.array([t.is_fall for t in trials], dtype=bool)
    secs = np.array([t.seconds for t in trials])
    adl_t, fall_t = keep & ~is_fall, keep & is_fall
    n_fall, n_adl, hours = int(fall_t.sum()), int(adl_t.sum()), float(secs[adl_t].sum()) / 3600
    m = keep[ps.trial] & (ps.window >= 0)      # only these can ever be confirmed
    sub = Pass(ps.trigger_g, ps.settle_s, ps.still_s, ps.trial[m], ps.p[m], ps.stats[m],
               ps.window[m])
    sc = scores[sub.window]
    on_adl = adl_t[sub.trial]
    on_fall = fall_t[sub.trial]
    refr_n = round(DEFAULTS["refractory_s"] * RATE_HZ)
    nt = len(trials)
    for params in _post_hoc(grid):
        conf = _confirm_fast(sub.stats, params)
        adl_confirmed = int((conf & on_adl).sum())
        full = {"trigger_g": ps.trigger_g, "settle_s": ps.settle_s, "still_s": ps.still_s,
                **params}
        for thr in grid["threshold"]:
            hit = conf & (sc >= thr)
            detected = int(np.unique(sub.trial[hit & on_fall]).size)
            adl_hit = hit & on_adl
            if adl_hit.any():
                ev = _events(sub, adl_hit, nt, refr_n)
                fa, flagged = int(ev.sum()), int((ev > 0).sum())
            else:
                fa = flagged = 0
            yield (Figures(n_fall, detected, n_adl, flagged, fa, hours, adl_confirmed),
                   full, thr)


def select(passes: Sequence[Pass], scores: np.ndarray, trials: Sequence[TrialInfo],
           train_subjects: Iterable[str], target_fa_per_h: float = TARGET_FA_PER_H,
           grid: dict[str, tuple[float, ...]] = GRID) -> Choice:
    """The parameters for ``train_subjects``, from their trials only (see the module doc).

    ``scores[w]`` is the model score of scored window ``w``; only windows of candidates of
    the training subjects are read.
    """
    train = sorted(set(train_subjects))
    keep = np.array([t.subject in train for t in trials], dtype=bool)
    rows = [r for ps in passes if ps.trigger_g in grid["trigger_g"]
            for r in _settings(ps, scores, trials, keep, grid)]
    if not rows:
        raise ValueError("no setting to choose from: empty grid or no passes")
    met = [r for r in rows if r[0].fa_per_h <= target_fa_per_h]
    pool = met if met else rows
    if not met:   # nothing meets the target: the fewest false alarms, then the most falls
        least = min(r[0].false_alarms for r in pool)
        pool = [r for r in pool if r[0].false_alarms == least]
    best = max(r[0].sensitivity for r in pool)
    n = max(1, pool[0][0].fall_trials)
    tol = math.sqrt(best * (1.0 - best) / n)
    ties = [r for r in pool if r[0].sensitivity >= best - tol - 1e-12]

    def conservative(r: tuple[Figures, dict[str, float], float]) -> tuple[float, ...]:
        fig, p, thr = r
        lying = p["lying_deg"] if p["lying_deg"] > 0 else -1.0
        return (fig.false_alarms, fig.adl_confirmed, -thr, -p["trigger_g"],
                -(p["settle_s"] + p["still_s"]), p["still_std_g"], -p["orientation_deg"],
                -lying, p["max_tilt_before_deg"], -p["impact_g"],
                p["freefall_g"] if p["impact_g"] > 0 else 9.0, -fig.sensitivity)

    fig, params, thr = min(ties, key=conservative)
    return Choice(params=params, threshold=thr, figures=fig, met=bool(met), ties=len(ties),
                  settings=len(rows), subjects=train)


# -- building the inputs from SisFall -------------------------------------------------------

def collect_passes(windows: Sequence[tuple[float, float]] = WINDOWS,
                   triggers: Sequence[float] = GRID["trigger_g"],
                   only: set[str] | None = None,
                   ) -> tuple[list[TrialInfo], list[Pass], np.ndarray, list[tuple[int, int]]]:
    """Every trial through the real detector once per (trigger, still window).

    Returns the trials, the passes, the feature windows to score (float32, (m, 200, 4))
    and their keys (trial index, impact sample). A window is kept only for candidates that
    pass the loosest confirmation of the grid: the others can never become an event.
    """
    from .data import candidates

    loose = _params(max(GRID["still_std_g"]), min(GRID["orientation_deg"]), 0.0, 180.0, 0.0)
    trials: list[TrialInfo] = []
    acc: dict[tuple[float, float, float], dict[str, list[Any]]] = {
        (tg, se, st): {"trial": [], "p": [], "stats": [], "window": []}
        for tg in triggers for se, st in windows}
    keys: dict[tuple[int, int], int] = {}
    feats: list[np.ndarray] = []
    for ti, tr in enumerate(load_trials(only=only)):
        trials.append(TrialInfo(tr.subject, tr.activity, tr.duration_s))
        for (tg, se, st), a in acc.items():
            for c in candidates(tr, trigger_g=tg, settle_s=se, still_s=st):
                s = c.stats
                p = round(c.t * RATE_HZ)
                w = -1
                if confirms(s, loose):
                    w = keys.get((ti, p), -1)
                    if w < 0:
                        w = keys[(ti, p)] = len(feats)
                        feats.append(np.asarray(c.features, dtype=np.float32))
                a["trial"].append(ti)
                a["p"].append(p)
                a["stats"].append(_stats_row(s))
                a["window"].append(w)
    passes = [Pass(tg, se, st, np.array(a["trial"], dtype=np.int64),
                   np.array(a["p"], dtype=np.int64),
                   np.array(a["stats"], dtype=np.float64).reshape(-1, len(STATS)),
                   np.array(a["window"], dtype=np.int64))
              for (tg, se, st), a in acc.items()]
    x = np.stack(feats) if feats else np.zeros((0, 200, 4), np.float32)
    return trials, passes, x, sorted(keys, key=keys.__getitem__)


def model_scores(path: Path, x: np.ndarray) -> np.ndarray:
    """Scores of a saved int8 model through the node's runtime (tf.lite without one)."""
    from .train import tflite_scores

    return tflite_scores(path, x) if len(x) else np.zeros(0)


def nested_scores(folds_dir: Path, trials: Sequence[TrialInfo], x: np.ndarray,
                  keys: Sequence[tuple[int, int]], subs: list[str],
                  ) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Per outer fold k, every window scored by inner model (k, fold of its subject)
    (NaN for fold k's own subjects: never used); and every window scored by the outer
    model of its subject's fold (for the shipped parameters)."""
    fold_w = np.array([fold_of(trials[ti].subject, subs) for ti, _p in keys], dtype=np.int64)
    inner: dict[int, np.ndarray] = {}
    outer = np.full(len(keys), np.nan)
    for j in range(N_FOLDS):
        rows = np.flatnonzero(fold_w == j)
        outer[rows] = model_scores(folds_dir / f"fold{j}.tflite", x[rows])
    for k in range(N_FOLDS):
        sc = np.full(len(keys), np.nan)
        for j in range(N_FOLDS):
            if j == k:
                continue
            rows = np.flatnonzero(fold_w == j)
            path = folds_dir / f"inner{k}{j}.tflite"
            meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            saw = set(meta["trained"]["subjects"])
            scored = {trials[keys[r][0]].subject for r in rows.tolist()}
            if saw & scored or saw & {s for s in subs if fold_of(s, subs) == k}:
                raise SystemExit(f"error: {path} saw subjects it must not: retrain "
                                 "(python -m training.fall.nested --retrain)")
            sc[rows] = model_scores(path, x[rows])
        inner[k] = sc
    return inner, outer


def _write_params(path: Path, choice: Choice, note: dict[str, Any]) -> None:
    meta = json.loads(path.read_text(encoding="utf-8"))
    meta["threshold"] = choice.threshold
    th = dict(meta.get("thresholds", {}))
    th.update(choice.params)
    meta["thresholds"] = th
    meta.setdefault("trained", {})["selection"] = note
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def run_selection(folds_dir: Path | None = None, models_dir: Path | None = None) -> int:
    """Choose per outer fold and for the shipped model; write the JSON files."""
    from .nested import FOLDS_DIR, NESTED_JSON
    from .train import MODELS_DIR

    folds_dir = folds_dir or FOLDS_DIR
    models_dir = models_dir or MODELS_DIR
    t0 = time.time()
    subs = subjects()
    trials, passes, x, keys = collect_passes()
    print(f"{len(trials)} trials, {len(passes)} detector passes, {len(x)} windows to score; "
          f"{time.time() - t0:.0f} s", flush=True)
    inner, outer = nested_scores(folds_dir, trials, x, keys, subs)
    print(f"scored; {time.time() - t0:.0f} s", flush=True)
    out: dict[str, Any] = {
        "method": "nested subject-wise cross-validation (training/fall/select.py)",
        "target_fa_per_h": TARGET_FA_PER_H, "grid": {**GRID, "windows": WINDOWS},
        "folds": []}
    for k in range(N_FOLDS):
        held = [s for s in subs if fold_of(s, subs) == k]
        train = [s for s in subs if s not in held]
        ch = select(passes, inner[k], trials, train)
        note = {"chosen_on": train, "scores": f"inner{k}j models", "target_met": ch.met}
        _write_params(folds_dir / f"fold{k}.json", ch, note)
        out["folds"].append({"fold": k, "held_out": held, **ch.to_dict()})
        f = ch.figures
        print(f"fold {k}: {ch.params} threshold {ch.threshold}; on its training subjects: "
              f"sensitivity {100 * f.sensitivity:.1f} %, {f.false_alarms} false alarms in "
              f"{f.adl_hours:.2f} h, {ch.ties} ties; {time.time() - t0:.0f} s", flush=True)
    ch = select(passes, outer, trials, subs)
    _write_params(models_dir / "fall.json", ch, {
        "chosen_on": subs, "scores": "fold models (inner CV over all subjects)",
        "target_met": ch.met})
    out["shipped"] = ch.to_dict()
    f = ch.figures
    print(f"shipped: {ch.params} threshold {ch.threshold}; cross-validated on all subjects: "
          f"sensitivity {100 * f.sensitivity:.1f} %, {f.false_alarms} false alarms in "
          f"{f.adl_hours:.2f} h", flush=True)
    out["runtime_s"] = round(time.time() - t0)
    nested = folds_dir / NESTED_JSON.name
    nested.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(f"written {nested}, fold*.json, fall.json; {time.time() - t0:.0f} s")
    return 0
