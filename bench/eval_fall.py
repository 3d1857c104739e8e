"""Fall detection on the outer folds of a nested cross-validation: ``python -m bench.eval_fall``.

Every SisFall trial (200 Hz ADXL345, ../shared/data/sisfall) goes through the real
:class:`~agent.detectors.fall.FallDetector` -- resampling to 50 Hz, the trigger, the
confirmation, the int8 model through the node's runtime -- with, for each subject, the
model of the outer fold that never saw it (training/fall/folds/foldK.tflite) and the
parameters chosen for that fold on its training subjects only (the trigger, confirmation
window and threshold in foldK.json, written by ``training.fall.nested``: inner models
scored the training subjects, the outer fold's subjects were never looked at). The shipped
model saw every subject here, so it is not judged on them.

One detector per trial (the trials are separate recordings); a fall trial counts as
detected when at least one ``fall`` event comes out of it; every ``fall`` event in a
daily-activity (ADL) trial is a false alarm. Reported for young (SA) and elderly (SE)
subjects apart and overall, per fall type F01-F15 and per activity D01-D19: sensitivity,
trial specificity (ADL trials without an event), false alarms per hour of ADL; and the
parameters each outer fold chose. Also the rules alone (model unavailable), without target.

Targets: sensitivity >= 95 % and at most 0.2 false alarms per hour of ADL, overall. The
report goes to stdout, build/eval/fall.md and build/eval/fall.json. Exit 0 when both targets
are met (or, with "skipped", when the data are absent), 1 when one is missed (the report
says which), 66 when a fold model or its metadata is missing, 65 when a fold's model or
parameters do not match the folds of the data here (retrain).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from agent.detectors.fall import FallDetector
from agent.models.runtime import Model, ModelError

ROOT = Path(__file__).resolve().parents[1]
FOLDS_DIR = ROOT / "training" / "fall" / "folds"
OUT = ROOT / "build" / "eval" / "fall.md"
TARGET_SENS = 0.95
TARGET_FA_PER_H = 0.2
# CI's regression guard (--guard): today's outer-fold figures are 96.6 % and 0.28 / h, so
# the false-alarm target is missed and reported; CI fails if either gets worse than this.
GUARD_SENS = 0.95
GUARD_FA_PER_H = 0.35
FALLS = [f"F{i:02d}" for i in range(1, 16)]
ADLS = [f"D{i:02d}" for i in range(1, 20)]
GROUPS = (("SA", "young (SA)"), ("SE", "elderly (SE; falls: SE06 only)"), ("all", "overall"))
TUNED = ("trigger_g", "settle_s", "still_s", "still_std_g", "orientation_deg", "lying_deg",
         "max_tilt_before_deg", "impact_g", "freefall_g")
ACTIVITY = {
    "D01": "walking slowly", "D02": "walking quickly", "D03": "jogging slowly",
    "D04": "jogging quickly", "D05": "stairs slowly", "D06": "stairs quickly",
    "D07": "sit slowly, half-height chair", "D08": "sit quickly, half-height chair",
    "D09": "sit slowly, low chair", "D10": "sit quickly, low chair",
    "D11": "collapse into a chair", "D12": "lie down slowly", "D13": "lie down quickly",
    "D14": "roll over lying", "D15": "bend at the knees", "D16": "bend at the waist",
    "D17": "get into a car", "D18": "stumble", "D19": "jump gently",
    "F01": "forward, slip", "F02": "backward, slip", "F03": "lateral, slip",
    "F04": "forward, trip", "F05": "forward, trip jogging", "F06": "vertical, fainting",
    "F07": "fainting, hands on a table", "F08": "forward, getting up",
    "F09": "lateral, getting up", "F10": "forward, sitting down",
    "F11": "backward, sitting down", "F12": "lateral, sitting down",
    "F13": "forward from sitting, fainting", "F14": "backward from sitting, fainting",
    "F15": "lateral from sitting, fainting"}


class EvalError(Exception):
    """A fold model that cannot be used here; ``code`` is the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:5.1f} % ({n}/{d})" if d else "-"


def _per_h(fa: int, hours: float) -> str:
    return f"{fa / hours:.2f}" if hours else "-"


class Tally:
    """Per activity: trials, trials with a fall event, events, seconds."""

    def __init__(self) -> None:
        self.trials: dict[str, int] = defaultdict(int)
        self.flagged: dict[str, int] = defaultdict(int)
        self.events: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)

    def add(self, activity: str, n_events: int, seconds: float) -> None:
        self.trials[activity] += 1
        self.flagged[activity] += n_events > 0
        self.events[activity] += n_events
        self.seconds[activity] += seconds

    def falls(self) -> tuple[int, int]:
        return (sum(self.flagged[a] for a in FALLS), sum(self.trials[a] for a in FALLS))

    def adl(self) -> tuple[int, int, int, float]:
        """(trials without an event, trials, false alarms, hours)."""
        n = sum(self.trials[a] for a in ADLS)
        ok = n - sum(self.flagged[a] for a in ADLS)
        return ok, n, sum(self.events[a] for a in ADLS), sum(self.seconds[a] for a in ADLS) / 3600

    def summary(self) -> dict[str, Any]:
        f, nf = self.falls()
        ok, n, fa, h = self.adl()
        return {"sensitivity": f / nf if nf else None, "falls_detected": f, "fall_trials": nf,
                "specificity": ok / n if n else None, "adl_trials": n, "false_alarms": fa,
                "adl_hours": round(h, 3), "fa_per_h": fa / h if h else None}


def _names(v: Any) -> list[str]:
    """A metadata list of subject names, sorted; anything else is no list."""
    return sorted(v) if isinstance(v, list) and all(isinstance(x, str) for x in v) else []


def load_folds(subs: list[str]) -> tuple[dict[int, Model], list[dict[str, Any]]]:
    """The outer fold models, checked: held-out subjects as the data here make them, and
    parameters chosen on none of them. Raises :class:`EvalError`."""
    from training.fall.data import N_FOLDS, fold_of

    models: dict[int, Model] = {}
    folds = []
    for k in range(N_FOLDS):
        path = FOLDS_DIR / f"fold{k}.tflite"
        if not (path.is_file() and path.with_suffix(".json").is_file()):
            raise EvalError(f"error: {path} or its .json is missing (train the folds: "
                            ".venv-train/bin/python -m training.fall.nested)", 66)
        try:
            m = Model.load(path, expect_task="fall")
        except ModelError as e:
            raise EvalError(f"error: {e}", 65) from None
        tr = m.meta.trained
        mine = [s for s in subs if fold_of(s, subs) == k]
        held = _names(tr.get("held_out"))
        if held != sorted(mine):
            raise EvalError(f"error: fold {k} model was trained for held-out {held}, the "
                            f"data here make it {mine}: retrain the folds", 65)
        sel = tr.get("selection")
        chosen_on = set(_names(sel.get("chosen_on") if isinstance(sel, dict) else None))
        if not chosen_on or chosen_on & set(mine):
            raise EvalError(f"error: fold {k}'s parameters were not chosen on its training "
                            "subjects alone (run python -m training.fall.nested)", 65)
        models[k] = m
        folds.append({"fold": k, "held_out": mine, "model": m.meta.version,
                      "threshold": m.meta.threshold,
                      "params": {p: m.meta.thresholds.get(p) for p in TUNED},
                      "target_met_inside": sel.get("target_met")})
    return models, folds


def evaluate(models: dict[int, Model] | None) -> dict[str, Tally]:
    """Tallies for "SA", "SE", "all" and each outer fold ("fold0"...); ``models`` None:
    the rules alone."""
    from training.fall.data import fold_of, load_trials, subjects

    subs = subjects()
    tallies: dict[str, Tally] = defaultdict(Tally)
    for tr in load_trials():
        k = fold_of(tr.subject, subs)
        det = FallDetector(models[k] if models else None)
        if models and not det.health.ok:
            raise EvalError(f"error: {det.health.message}", 65)
        n = len(det.update_many(tr.t, tr.acc) + det.flush())
        for g in (tr.subject[:2], "all", f"fold{k}"):
            tallies[g].add(tr.activity, n, tr.duration_s)
    return tallies


def report(tallies: dict[str, Tally], title: str, detail: bool) -> list[str]:
    lines = [f"## {title}", "",
             "| group | fall sensitivity | ADL trial specificity | false alarms | ADL hours | "
             "false alarms / h of ADL |", "|---|---|---|---|---|---|"]
    for g, name in GROUPS:
        tl = tallies[g]
        f, nf = tl.falls()
        ok, n, fa, h = tl.adl()
        lines.append(f"| {name} | {_pct(f, nf)} | {_pct(ok, n)} | {fa} | {h:.2f} | "
                     f"{_per_h(fa, h)} |")
    if not detail:
        return [*lines, ""]
    lines += ["", "Per fall type (sensitivity):", "",
              "| fall | | young (SA) | elderly (SE) | all |", "|---|---|---|---|---|"]
    for a in FALLS:
        cells = [_pct(tallies[g].flagged[a], tallies[g].trials[a]) for g, _ in GROUPS]
        lines.append(f"| {a} | {ACTIVITY[a]} | " + " | ".join(cells) + " |")
    lines += ["", "Per daily activity (trial specificity, false alarms / h of ADL):", "",
              "| ADL | | SA specificity | SA FA/h | SE specificity | SE FA/h | "
              "all specificity | false alarms | hours | FA/h |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for a in ADLS:
        row = [a, ACTIVITY[a]]
        for g in ("SA", "SE"):
            t = tallies[g]
            row += [_pct(t.trials[a] - t.flagged[a], t.trials[a]),
                    _per_h(t.events[a], t.seconds[a] / 3600)]
        t = tallies["all"]
        h = t.seconds[a] / 3600
        row += [_pct(t.trials[a] - t.flagged[a], t.trials[a]), str(t.events[a]), f"{h:.2f}",
                _per_h(t.events[a], h)]
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def _params_table(folds: list[dict[str, Any]], tallies: dict[str, Tally]) -> list[str]:
    head = ["fold", "held out", *TUNED, "threshold", "target met inside",
            "outer: falls", "outer: false alarms / h"]
    lines = ["## Parameters each outer fold chose (on its training subjects only)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in folds:
        cells = [str(f["fold"]), " ".join(f["held_out"])]
        cells += [f"{f['params'][p]:g}" if f["params"][p] is not None else "-" for p in TUNED]
        cells += [f"{f['threshold']:g}", {True: "yes", False: "NO"}.get(
            f["target_met_inside"], "-")]
        t = tallies[f"fold{f['fold']}"]
        _ok, _n, fa, h = t.adl()
        cells += [_pct(*t.falls()), f"{_per_h(fa, h)} ({fa} in {h:.2f} h)"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "`lying_deg` 0, `max_tilt_before_deg` 180 and `impact_g` 0 mean that check "
              "is off (agent/detectors/fall.py).", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-rules", action="store_true", help="skip the rules-only run")
    ap.add_argument("--guard", action="store_true",
                    help="exit 1 only on a regression below the guard levels (CI): a target "
                         "missed today is reported, not hidden, and does not stop CI")
    args = ap.parse_args(argv)
    from training.fall.data import SISFALL_DIR, subjects

    subs = subjects() if SISFALL_DIR.is_dir() else []
    if not subs:
        print(f"fall evaluation skipped: no SisFall data at {SISFALL_DIR}")
        return 0
    t0 = time.time()
    try:
        models, folds = load_folds(subs)
        tallies = evaluate(models)
    except EvalError as e:
        print(str(e), file=sys.stderr)
        return e.code
    out = ["# Fall detection on the outer folds of a nested cross-validation (SisFall)", "",
           "`python -m bench.eval_fall`: the real FallDetector (200 Hz -> 50 Hz resampling, "
           "trigger, confirmation, int8 model through the node's runtime) on every trial; "
           "each subject is judged by the model of the outer fold that never saw it, with "
           "the trigger, confirmation window and threshold chosen for that fold on its "
           "training subjects only (inner cross-validation, training/fall/nested.py).", ""]
    out += _params_table(folds, tallies)
    out += report(tallies, "With the model (outer folds)", detail=True)
    summ = {g: tallies[g].summary() for g, _ in GROUPS}
    s = summ["all"]
    sens, fa_h = s["sensitivity"] or 0.0, s["fa_per_h"] or 0.0
    met_s, met_f = sens >= TARGET_SENS, fa_h <= TARGET_FA_PER_H
    verdict = ("Both targets met." if met_s and met_f else
               "TARGET MISSED: " + " and ".join(
                   m for m, ok in (("sensitivity", met_s), ("false alarms", met_f)) if not ok)
               + ". The parameters are not tuned on these subjects to meet it.")
    out += [f"Targets (overall): sensitivity >= {TARGET_SENS:.0%}: {100 * sens:.1f} % "
            f"{'met' if met_s else 'MISSED'}; <= {TARGET_FA_PER_H:g} false alarms per hour of "
            f"daily activity: {s['false_alarms']} in {s['adl_hours']:.2f} h = {fa_h:.2f} / h "
            f"{'met' if met_f else 'MISSED'}. {verdict}", ""]
    rules = None
    if not args.no_rules:
        rules = evaluate(None)
        out += report(rules, "Rules alone (model unavailable; no target)", detail=False)
    out.append(f"Run time {time.time() - t0:.0f} s.")
    text = "\n".join(out) + "\n"
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    js = {"targets": {"sensitivity": TARGET_SENS, "fa_per_h": TARGET_FA_PER_H},
          "met": {"sensitivity": met_s, "fa_per_h": met_f}, "folds": folds, "summary": summ,
          "per_activity": {g: {a: {"trials": tallies[g].trials[a],
                                   "flagged": tallies[g].flagged[a],
                                   "events": tallies[g].events[a],
                                   "hours": round(tallies[g].seconds[a] / 3600, 4)}
                               for a in FALLS + ADLS if tallies[g].trials[a]}
                           for g, _ in GROUPS},
          "rules": {g: rules[g].summary() for g, _ in GROUPS} if rules else None}
    OUT.with_suffix(".json").write_text(json.dumps(js, indent=1) + "\n", encoding="utf-8")
    print(f"written to {OUT.relative_to(ROOT)} and {OUT.with_suffix('.json').name}")
    if args.guard:
        held = sens >= GUARD_SENS and fa_h <= GUARD_FA_PER_H
        print(f"guard (CI): sensitivity >= {GUARD_SENS:.0%} and <= {GUARD_FA_PER_H:g} false "
              f"alarms / h: {'held' if held else 'BROKEN'}")
        return 0 if held else 1
    return 0 if (met_s and met_f) else 1


if __name__ == "__main__":
    sys.exit(main())
