"""Does a model earn its place beside the fire rules? (numpy only; ``bench/eval_fire.py``)

The candidate is the kind of model a node could run (a logistic regression: one int8
dense layer would hold it) on features that carry no absolute level and no time since
start: each gas channel's excess over its learned baseline and its rise in the last
10 minutes, both in units of the channel's rule threshold, plus the temperature's rise
and the humidity's jump. Everything is computed by the detector's own channels.

Leave-one-fire-out, with the nuisance days split into the same number of time blocks:
for each fold the model is trained on the other fires and the other blocks, its
threshold is set on those training data alone (just above the highest score held for
``hold_s`` on any fire-free training time, so it raises no training false alarm), and
the combined detector (rules OR model) is judged on the held-out fire and block. The
rules inside it use the fold's own operating point. The verdict compares the combined
detector with the rules alone, fold by fold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from agent.detectors.fire import FIRE, FireConfig, FireDetector
from training.fire.data import Fire, Row, windows

FEATURES = ("tvoc_excess", "eco2_excess", "tvoc_rise", "eco2_rise", "t_rise", "rh_jump")
SEED = 20261207
STEPS = 3000
L2 = 1e-3
LEARNING_RATE = 0.5


@dataclass
class Trace:
    """One recording replayed: per step its time, the rules' state and the features."""

    ts: np.ndarray
    rules: np.ndarray      # bool: the detector is in the fire state after this step
    x: np.ndarray          # (steps, len(FEATURES))


def _clip(v: float, hi: float = 10.0) -> float:
    return 0.0 if not math.isfinite(v) else max(0.0, min(hi, v))


def trace(rows: list[Row], config: FireConfig) -> Trace:
    """Replay ``rows`` through the rules at ``config``; features at every step."""
    det = FireDetector(config)
    ts, states, feats = [], [], []
    base = FireConfig()
    needs = {"tvoc_ppb": base.tvoc_delta_ppb, "eco2_ppm": base.eco2_delta_ppm}
    for t, values in rows:
        det.update(t, values)
        row = []
        for kind in ("excess", "rise"):
            for q in ("tvoc_ppb", "eco2_ppm"):
                s = det.surge(q, t)
                v = math.nan if s is None else (s.excess if kind == "excess" else s.rise)
                row.append(_clip(v / needs[q]))
        _temp, rise = det.heat(t)
        _rh, jump, _steamy = det.humidity(t)
        row += [_clip(rise), _clip(jump / 10.0)]
        ts.append(t)
        states.append(det.state == FIRE)
        feats.append(row)
    return Trace(np.asarray(ts, float), np.asarray(states, bool), np.asarray(feats, float))


def fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """Class-balanced L2 logistic regression by full-batch gradient descent (deterministic)."""
    w = np.zeros(x.shape[1])
    b = 0.0
    pos = max(1, int(y.sum()))
    neg = max(1, int((1 - y).sum()))
    weight = np.where(y > 0, 0.5 / pos, 0.5 / neg)
    for _ in range(STEPS):
        p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
        g = weight * (p - y)
        w -= LEARNING_RATE * (x.T @ g + L2 * w)
        b -= LEARNING_RATE * float(g.sum())
    return w, b


def score(tr: Trace, w: np.ndarray, b: float) -> np.ndarray:
    """The model's logit (thresholds in logit space: probabilities saturate at 1.0)."""
    return tr.x @ w + b


def held(tr: Trace, p: np.ndarray, hold_s: float, stale_s: float) -> np.ndarray:
    """Per step, the lowest score over the readings covering the last ``hold_s`` (the
    model must stay above its threshold that long, like a rule)."""
    out = np.full_like(p, -np.inf)
    for i in range(len(p)):
        covered, j, low = 0.0, i, p[i]
        while j > 0 and covered < hold_s:
            covered += min(tr.ts[j] - tr.ts[j - 1], stale_s)
            low = min(low, p[j])
            j -= 1
        if covered >= hold_s:
            out[i] = low
    return out


def episodes(active: np.ndarray, ts: np.ndarray, clear_s: float) -> list[float]:
    """Start times of alarm episodes: an episode ends after ``clear_s`` without activity."""
    starts: list[float] = []
    last_on = -math.inf
    for on, t in zip(active, ts, strict=True):
        if on:
            if t - last_on > clear_s:
                starts.append(float(t))
            last_on = t
    return starts


def _fold_data(traces: dict[str, Trace], fires: list[Fire], names: set[str],
               nuisance: Trace, blocks: list[tuple[float, float]]
               ) -> tuple[np.ndarray, np.ndarray]:
    """Training samples: fire recordings from ignition to the commercial alarm are
    positive, before ignition negative (the rest is left out); fire-free blocks negative."""
    xs, ys = [], []
    for f in fires:
        if f.name not in names:
            continue
        for cadence in ("native", "1 min"):
            tr = traces[f"{f.name}/{cadence}"]
            pos = (tr.ts >= f.ignition_t) & (tr.ts <= f.smoke_alarm_t)
            neg = tr.ts < f.ignition_t
            xs += [tr.x[pos], tr.x[neg]]
            ys += [np.ones(int(pos.sum())), np.zeros(int(neg.sum()))]
    inside = _in_blocks(nuisance.ts, blocks)
    xs.append(nuisance.x[inside])
    ys.append(np.zeros(int(inside.sum())))
    return np.concatenate(xs), np.concatenate(ys)


def _in_blocks(ts: np.ndarray, blocks: list[tuple[float, float]]) -> np.ndarray:
    mask = np.zeros(len(ts), bool)
    for a, b in blocks:
        mask |= (ts >= a) & (ts < b)
    return mask


def _traces(fires: list[Fire], nuisance: list[Row], config: FireConfig) -> dict[str, Trace]:
    out = {"nuisance": trace(nuisance, config)}
    for f in fires:
        out[f"{f.name}/native"] = trace(f.rows, config)
        out[f"{f.name}/1 min"] = trace(windows(f.rows), config)
    return out


def compare(fires: list[Fire], nuisance: list[Row], blocks: list[tuple[float, float]],
            chosen: dict[int, float]) -> list[str]:
    """Rules alone against rules OR model on each held-out fold; the report's section."""
    cfg0 = FireConfig()
    cache: dict[float, dict[str, Trace]] = {}
    lines = ["## Does a model earn its place?", "",
             "Leave one fire out (with its nuisance block); per fold a logistic model on "
             f"{', '.join(FEATURES)} (baseline-relative, no absolute level, no time since "
             "start) is trained on the other fires and blocks, its threshold set there just "
             "above the highest held score on fire-free training time; the held-out fire "
             "and block are judged with the fold's rules alone and with rules OR model.", "",
             "| fold | held-out fire | logit threshold | native lead: rules / with model | "
             "1 min lead: rules / with model | held-out block alarms: rules / with model |",
             "|---|---|---|---|---|---|"]
    better_fires = worse_fires = better_nui = worse_nui = 0
    for i, f in enumerate(fires):
        scale = chosen[i]
        if scale not in cache:
            cache[scale] = _traces(fires, nuisance, FireConfig(scale=scale))
        traces = cache[scale]
        train_names = {x.name for x in fires if x.name != f.name}
        train_blocks = [b for j, b in enumerate(blocks) if j != i]
        x, y = _fold_data(traces, fires, train_names, traces["nuisance"], train_blocks)
        w, b = fit(x, y)
        negatives = [held(traces["nuisance"], score(traces["nuisance"], w, b), cfg0.hold_s,
                          cfg0.stale_s)[_in_blocks(traces["nuisance"].ts, train_blocks)]]
        for g in fires:
            if g.name in train_names:
                for cadence in ("native", "1 min"):
                    tr = traces[f"{g.name}/{cadence}"]
                    negatives.append(held(tr, score(tr, w, b), cfg0.hold_s,
                                          cfg0.stale_s)[tr.ts < g.ignition_t])
        threshold = max(float(n.max()) for n in negatives if len(n)) + 1e-6
        cells = []
        for cadence in ("native", "1 min"):
            tr = traces[f"{f.name}/{cadence}"]
            model_on = held(tr, score(tr, w, b), cfg0.hold_s, cfg0.stale_s) >= threshold
            rules_t = _first(tr.rules, tr.ts, f.ignition_t)
            both_t = _first(tr.rules | model_on, tr.ts, f.ignition_t)
            early = bool((model_on & (tr.ts < f.ignition_t)).any())
            r_lead = None if rules_t is None else f.smoke_alarm_t - rules_t
            b_lead = None if both_t is None else f.smoke_alarm_t - both_t
            cells.append(f"{_lead(r_lead)} / {_lead(b_lead)}"
                         + (" (model alarmed before ignition)" if early else ""))
            gain = (b_lead or -math.inf) - (r_lead or -math.inf)
            better_fires += gain > 0 and not early
            worse_fires += early
        nu = traces["nuisance"]
        inside = _in_blocks(nu.ts, [blocks[i]])
        model_on = held(nu, score(nu, w, b), cfg0.hold_s, cfg0.stale_s) >= threshold
        r_fa = len(episodes(nu.rules & inside, nu.ts, cfg0.clear_s))
        b_fa = len(episodes((nu.rules | model_on) & inside, nu.ts, cfg0.clear_s))
        better_nui += b_fa < r_fa
        worse_nui += b_fa > r_fa
        lines.append(f"| {i} | {f.name} | {threshold:.2f} | {cells[0]} | {cells[1]} | "
                     f"{r_fa} / {b_fa} |")
    keep = better_fires > 0 and worse_fires == 0 and better_nui > 0 and worse_nui == 0
    lines += ["", f"With the model: {better_fires} held-out fire runs earlier, {worse_fires} "
              f"alarmed before ignition; {better_nui} held-out blocks with fewer false alarms, "
              f"{worse_nui} with more. Verdict: "
              + ("the model is better on both and would ship." if keep else
                 "the model is not better on both, so the node runs the rules alone "
                 "(docs/fire.md).")]
    return lines


def _first(active: np.ndarray, ts: np.ndarray, after: float) -> float | None:
    idx = np.nonzero(active & (ts >= after))[0]
    return float(ts[idx[0]]) if len(idx) else None


def _lead(lead: float | None) -> str:
    return "missed" if lead is None else f"{lead:.0f} s" if lead >= 0 else f"late {-lead:.0f} s"
