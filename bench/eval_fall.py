"""Fall detection on subjects held out of training: ``python -m bench.eval_fall``.

Every SisFall trial (200 Hz ADXL345, ../shared/data/sisfall) goes through the real
:class:`~agent.detectors.fall.FallDetector` -- resampling to 50 Hz, the trigger, the
confirmation, the model -- with the model of the subject-wise fold that never saw that
subject (training/fall/folds/foldK.tflite, written by ``training.fall.train``; the shipped
model saw every subject here, so it cannot be judged on them). One detector per trial,
as the trials are separate recordings; a fall trial counts as detected when at least one
``fall`` event comes out of it, an ADL trial is a false alarm for every ``fall`` event.

Targets: fall sensitivity >= 95 % and at most one false alarm per 24 h of daily
activity. Also printed, without a target: the rules alone (what the node does when the
model is unavailable). The report goes to stdout and build/eval/fall.md; exit 1 when a
target is missed, 0 with "skipped" when the data are absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

from agent.detectors.fall import FallDetector
from agent.models.runtime import Model, ModelError

ROOT = Path(__file__).resolve().parents[1]
FOLDS_DIR = ROOT / "training" / "fall" / "folds"
OUT = ROOT / "build" / "eval" / "fall.md"
TARGET_SENS = 0.95
TARGET_FA_PER_DAY = 1.0
FALLS = [f"F{i:02d}" for i in range(1, 16)]
ADLS = [f"D{i:02d}" for i in range(1, 20)]


def _pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:5.1f} % ({n}/{d})" if d else "   -"


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


def evaluate(use_model: bool) -> tuple[dict[str, Tally], list[str]]:
    """Tallies for "SA", "SE" and "all"; notes (which fold model served whom)."""
    from training.fall.data import N_FOLDS, fold_of, load_trials, subjects

    subs = subjects()
    models: dict[int, Model | None] = {}
    notes = []
    if use_model:
        for k in range(N_FOLDS):
            try:
                models[k] = Model.load(FOLDS_DIR / f"fold{k}.tflite", expect_task="fall")
            except ModelError as e:
                raise SystemExit(f"error: {e} (train the fold models: "
                                 ".venv-train/bin/python -m training.fall.train)") from None
            held = models[k].meta.trained.get("held_out", [])
            mine = [s for s in subs if fold_of(s, subs) == k]
            if sorted(held) != sorted(mine):
                raise SystemExit(f"error: fold {k} model was trained for held-out {held}, "
                                 f"the data here make it {mine}: retrain the folds")
            notes.append(f"fold {k}: {', '.join(mine)} (model {models[k].meta.version})")
    tallies = {"SA": Tally(), "SE": Tally(), "all": Tally()}
    for tr in load_trials():
        model = models.get(fold_of(tr.subject, subs)) if use_model else None
        det = FallDetector(model)
        if use_model and not det.health.ok:
            raise SystemExit(f"error: {det.health.message}")
        n = len(det.update_many(tr.t, tr.acc) + det.flush())
        for g in (tr.subject[:2], "all"):
            tallies[g].add(tr.activity, n, tr.duration_s)
    return tallies, notes


def _fa_per_day(fa: int, hours: float) -> float:
    return 24.0 * fa / hours if hours else 0.0


def report(tallies: dict[str, Tally], title: str, detail: bool) -> list[str]:
    lines = [f"## {title}", ""]
    lines.append("| group | fall sensitivity | ADL specificity (trials) | false alarms | "
                 "ADL hours | false alarms / 24 h |")
    lines.append("|---|---|---|---|---|---|")
    for g, name in (("SA", "young (SA)"), ("SE", "elderly (SE; falls: SE06 only)"),
                    ("all", "overall")):
        tl = tallies[g]
        f, nf = tl.falls()
        ok, n, fa, h = tl.adl()
        lines.append(f"| {name} | {_pct(f, nf)} | {_pct(ok, n)} | {fa} | {h:.2f} | "
                     f"{_fa_per_day(fa, h):.2f} |")
    if detail:
        lines += ["", "| fall type | SA | SE | all |", "|---|---|---|---|"]
        for a in FALLS:
            cells = [_pct(tallies[g].flagged[a], tallies[g].trials[a]) for g in ("SA", "SE",
                                                                             "all")]
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines += ["", "| daily activity | SA specificity | SE specificity | all | "
                  "false alarms |", "|---|---|---|---|---|"]
        for a in ADLS:
            cells = [_pct(tallies[g].trials[a] - tallies[g].flagged[a], tallies[g].trials[a])
                     for g in ("SA", "SE", "all")]
            lines.append(f"| {a} | " + " | ".join(cells) + f" | {tallies['all'].events[a]} |")
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-rules", action="store_true", help="skip the rules-only run")
    args = ap.parse_args(argv)
    from training.fall.data import SISFALL_DIR, subjects

    if not SISFALL_DIR.is_dir() or not subjects():
        print(f"fall evaluation skipped: no SisFall data at {SISFALL_DIR}")
        return 0
    t0 = time.time()
    tallies, notes = evaluate(True)
    out = ["# Fall detection on held-out subjects (SisFall)", "",
           "`python -m bench.eval_fall`: the real FallDetector (200 Hz -> 50 Hz resampling, "
           "trigger, confirmation, int8 model through ai-edge-litert) on every trial; each "
           "subject is judged by the model of the subject-wise fold that did not train on "
           "it:", ""]
    out += [f"- {n}" for n in notes] + [""]
    out += report(tallies, "With the model (held-out folds)", detail=True)
    f, nf = tallies["all"].falls()
    _ok, _n, fa, h = tallies["all"].adl()
    sens, fa_day = (f / nf if nf else 0.0), _fa_per_day(fa, h)
    met_s, met_f = sens >= TARGET_SENS, fa_day <= TARGET_FA_PER_DAY
    out += [f"Targets: sensitivity >= {TARGET_SENS:.0%}: {100 * sens:.1f} % "
            f"{'met' if met_s else 'MISSED'}; <= {TARGET_FA_PER_DAY:g} false alarm per 24 h "
            f"of daily activity: {fa} in {h:.2f} h = {fa_day:.2f} / 24 h "
            f"{'met' if met_f else 'MISSED'}. With {h:.1f} h of ADL, one false alarm "
            f"would already be {_fa_per_day(1, h):.1f} / 24 h: the target means none.", ""]
    if not args.no_rules:
        rules, _ = evaluate(False)
        out += report(rules, "Rules alone (model unavailable; no target)", detail=False)
    out.append(f"Run time {time.time() - t0:.0f} s.")
    text = "\n".join(out) + "\n"
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"written to {OUT.relative_to(ROOT)}")
    return 0 if (met_s and met_f) else 1


if __name__ == "__main__":
    sys.exit(main())
