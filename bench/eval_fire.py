"""``python -m bench.eval_fire``: the fire detector judged as a household lives with it.

Event level, never per sample. Every recording goes through the real
:class:`~agent.detectors.fire.FireDetector` (update per reading, its own hold and
hysteresis), at two cadences: the recording's own (1 s; 2 s for the electrical fires)
and one-minute report windows (the mean of each minute, what a node reporting once a
minute sends).

* **Fires** (``fire-tests/fires``): a fire is detected when the first alarm comes after
  ignition and no later than the commercial smoke alarm beside the sensors; the lead is
  how much earlier. An alarm before ignition is a false alarm.
* **Nuisances** (``fire-tests/nuisance``, 20 days at 1/min, no fire): alarm episodes per
  day, each attributed to the nuisance experiment it falls in (or within 30 min after)
  or to the background, per experiment type. Also with the gas columns removed (a node
  with a particle sensor only), on the 17-day PMS5003 log, and in the first hour after
  a fresh start every 6 h across the nuisance days (warm-up and start-up never alarm).
* **Operating point chosen in training folds only.** One knob, ``FireConfig.scale``,
  multiplies every threshold. Outer folds: leave one fire out, with the nuisance days
  split into as many time blocks (one held out with it). Inside a fold the knob is
  chosen on its training fires and blocks alone: the feasible scales are those where
  every training fire, at both cadences, alarms after ignition and at least
  :data:`MIN_LEAD_S` before the commercial alarm, and the training blocks stay within the
  budget (:data:`BUDGET_PER_DAY`); the pick is the feasible grid point nearest the
  geometric middle of the feasible range (the most margin on both sides). The held-out
  fire and block are then judged at that point. The shipped point is the same procedure
  on all development recordings; the report checks that ``SHIPPED_SCALE`` is it.
* **Curve**: sensitivity (fires detected before the commercial alarm) and median lead
  against false alarms per day, over the grid (in-sample, for the shape; the outer-fold
  figures are the result).
* **Model or not** (``training/fire/model.py``): rules alone against rules OR a
  logistic model on baseline-relative features, leave-one-fire-out and on the held-out
  nuisance blocks. A model would ship only if better on both.

Targets (on the outer folds): every fire detected before the commercial alarm, median
lead >= 2 min, no alarm before ignition, at most one alarm in the 20 nuisance days; no
alarm on the PMS5003 log. Prints the report and writes build/eval/fire.md; exit 1 when a
target is missed, 0 with "skipped" when ``../shared/data/fire-tests`` is absent.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from agent.detectors.fire import FIRE, SHIPPED_SCALE, FireConfig, FireDetector
from training.fire import data

OUT = data.ROOT / "build" / "eval" / "fire.md"
GRID = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 2.5, 3.0)
CADENCES = ("native", "1 min")
MIN_LEAD_S = 30.0          # selection margin before the commercial alarm
BUDGET_PER_DAY = 1 / 20    # at most one false alarm in 20 days
TARGET_LEAD_S = 120.0
RESTART_EVERY_S = 6 * 3600.0


@dataclass
class FireResult:
    """One fire at one cadence."""

    fire: str
    cadence: str
    first_s: float | None      # first alarm after ignition, seconds from ignition
    lead_s: float | None       # commercial alarm minus first alarm (None: no alarm)
    before_ignition: int
    reasons: list[str] = field(default_factory=list)

    @property
    def detected(self) -> bool:
        return self.lead_s is not None and self.lead_s >= 0 and not self.before_ignition


@dataclass
class Run:
    """Everything one scale gives."""

    scale: float
    fires: list[FireResult]
    nuisance: list[tuple[float, str]]      # (t, attribution) per alarm episode
    pm_only: list[tuple[float, str]]
    pms: dict[str, int]
    restarts: int = 0          # alarms in the first hour after a (re)start


def alarms(rows: list[data.Row], config: FireConfig) -> list[tuple[float, dict]]:
    det = FireDetector(config)
    out = []
    for t, values in rows:
        out += [(t, e.data) for e in det.update(t, values) if e.state == FIRE]
    return out


def judge_fire(fire: data.Fire, cadence: str, config: FireConfig) -> FireResult:
    rows = fire.rows if cadence == "native" else data.windows(fire.rows)
    found = alarms(rows, config)
    before = [a for a in found if a[0] < fire.ignition_t]
    after = [a for a in found if a[0] >= fire.ignition_t]
    if not after:
        return FireResult(fire.name, cadence, None, None, len(before))
    t, ev = after[0]
    return FireResult(fire.name, cadence, t - fire.ignition_t, fire.smoke_alarm_t - t,
                      len(before), list(ev.get("reasons", [])))


def run_scale(scale: float, fires: list[data.Fire], nuisance: list[data.Row],
              experiments: list[data.Experiment], pms: list) -> Run:
    cfg = FireConfig(scale=scale)
    results = [judge_fire(f, c, cfg) for f in fires for c in CADENCES]
    nui = [(t, data.attribute(t, experiments)) for t, _ in alarms(nuisance, cfg)]
    no_gas = [(t, {q: v for q, v in vals.items() if q not in ("tvoc_ppb", "eco2_ppm")})
              for t, vals in nuisance]
    pm_only = [(t, data.attribute(t, experiments)) for t, _ in alarms(no_gas, cfg)]
    pms_alarms = {kind: len(alarms(rows, cfg)) for kind, rows in pms}
    restarts = sum(len(alarms(part, cfg)) for part in restart_slices(nuisance))
    return Run(scale, results, nui, pm_only, pms_alarms, restarts)


def restart_slices(rows: list[data.Row]) -> list[list[data.Row]]:
    """The first hour after a start every :data:`RESTART_EVERY_S` of the nuisance log: a
    node (re)started in a lived-in room, whatever the air is doing then."""
    t0, out = rows[0][0], []
    for start in range(0, int(rows[-1][0] - t0), int(RESTART_EVERY_S)):
        out.append([r for r in rows if t0 + start <= r[0] < t0 + start + 3600.0])
    return out


def feasible(run: Run, fires: set[str], blocks: list[tuple[float, float]]) -> bool:
    days = sum(b - a for a, b in blocks) / 86400
    ok_fires = all(r.detected and r.lead_s is not None and r.lead_s >= MIN_LEAD_S
                   for r in run.fires if r.fire in fires)
    n = sum(1 for t, _ in run.nuisance if any(a <= t < b for a, b in blocks))
    return ok_fires and n <= math.floor(BUDGET_PER_DAY * days + 1e-9)


def select(runs: list[Run], fires: set[str], blocks: list[tuple[float, float]]
           ) -> tuple[float, str]:
    """The scale chosen on these training data alone, and why."""
    ok = [r.scale for r in runs if feasible(r, fires, blocks)]
    if not ok:
        # nothing meets both: the most training fires, then the fewest alarms, then higher
        def key(r: Run) -> tuple:
            det = sum(x.detected for x in r.fires if x.fire in fires)
            fa = sum(1 for t, _ in r.nuisance if any(a <= t < b for a, b in blocks))
            return (-det, fa, -r.scale)
        best = min(runs, key=key)
        return best.scale, "no feasible scale: most fires, then fewest alarms"
    lo, hi = min(ok), max(ok)
    mid = math.sqrt(lo * hi)
    pick = min(ok, key=lambda s: (abs(math.log(s / mid)), -s))
    return pick, f"feasible {lo:g}-{hi:g}, middle {mid:.2f}"


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else math.nan


def _fmt_lead(r: FireResult) -> str:
    if r.lead_s is None:
        return "missed" + (f", {r.before_ignition} before ignition" if r.before_ignition else "")
    s = f"{r.lead_s:.0f} s" if r.lead_s >= 0 else f"late by {-r.lead_s:.0f} s"
    return s + (f", {r.before_ignition} before ignition" if r.before_ignition else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-model", action="store_true", help="skip the model comparison")
    args = ap.parse_args(argv)
    if not data.available():
        print(f"eval_fire: skipped: fire-tests data not found under {data.FIRE_TESTS}")
        return 0
    t0 = time.monotonic()
    fires = data.fires()
    nuisance, experiments = data.nuisance()
    pms = data.pms5003()
    days = (nuisance[-1][0] - nuisance[0][0] + 60.0) / 86400
    blocks = data.day_blocks(nuisance, len(fires))
    runs = [run_scale(s, fires, nuisance, experiments, pms) for s in GRID]
    by_scale = {r.scale: r for r in runs}
    out = ["# Fire detection: real fires, real nuisances", "",
           "`.venv/bin/python -m bench.eval_fire`: the real FireDetector on "
           f"{len(fires)} real fires (native cadence and one-minute windows) and "
           f"{days:.1f} fire-free days of an indoor monitor with {len(experiments)} nuisance "
           "experiments; event level. Method: bench/eval_fire.py's docstring and "
           "docs/fire.md.", ""]

    # -- outer folds ------------------------------------------------------------------
    out += ["## Held-out folds (the result)", "",
            "Fold i holds out fire i and nuisance block i (a quarter of the days); the scale "
            "is chosen on the other three fires and blocks only.", "",
            "| fold | held-out fire | chosen scale | why | native: lead | 1 min: lead | "
            "held-out block | its false alarms |", "|---|---|---|---|---|---|---|---|"]
    outer: list[FireResult] = []
    outer_nui: list[tuple[float, str]] = []
    chosen: dict[int, float] = {}
    for i, f in enumerate(fires):
        train_fires = {x.name for x in fires if x.name != f.name}
        train_blocks = [b for j, b in enumerate(blocks) if j != i]
        scale, why = select(runs, train_fires, train_blocks)
        chosen[i] = scale
        r = by_scale[scale]
        mine = [x for x in r.fires if x.fire == f.name]
        outer += mine
        a, b = blocks[i]
        fa = [(t, w) for t, w in r.nuisance if a <= t < b]
        outer_nui += fa
        cells = {x.cadence: _fmt_lead(x) for x in mine}
        fa_txt = ", ".join(w for _, w in fa) or "none"
        out.append(f"| {i} | {f.name} | {scale:g} | {why} | {cells['native']} | "
                   f"{cells['1 min']} | {(b - a) / 86400:.1f} days | {len(fa)} ({fa_txt}) |")
    detected = {c: [x for x in outer if x.cadence == c and x.detected] for c in CADENCES}
    leads = {c: [x.lead_s for x in detected[c] if x.lead_s is not None] for c in CADENCES}
    before = sum(x.before_ignition for x in outer)
    n_fires = len(fires)
    all_detected = all(len(detected[c]) == n_fires for c in CADENCES)
    lead_ok = all(_median(leads[c]) >= TARGET_LEAD_S for c in CADENCES)
    nui_ok = len(outer_nui) <= math.floor(BUDGET_PER_DAY * days + 1e-9)
    out += ["", "| held-out figure | native cadence | one-minute windows |", "|---|---|---|",
            f"| fires detected before the commercial alarm | {len(detected['native'])}/{n_fires} "
            f"| {len(detected['1 min'])}/{n_fires} |",
            f"| median lead over the commercial alarm | {_median(leads['native']):.0f} s | "
            f"{_median(leads['1 min']):.0f} s |",
            f"| shortest lead | {min(leads['native'], default=math.nan):.0f} s | "
            f"{min(leads['1 min'], default=math.nan):.0f} s |",
            f"| alarms before ignition | {before} | |",
            f"| false alarms in {days:.1f} nuisance days | {len(outer_nui)} "
            f"({len(outer_nui) / days:.3f} a day) | |", ""]

    # -- shipped point ------------------------------------------------------------------
    ship, why = select(runs, {f.name for f in fires}, blocks)
    shipped = by_scale.get(SHIPPED_SCALE) or run_scale(SHIPPED_SCALE, fires, nuisance,
                                                       experiments, pms)
    ship_ok = math.isclose(ship, SHIPPED_SCALE)
    out += ["## The shipped operating point", "",
            f"The same selection on all development recordings picks scale **{ship:g}** "
            f"({why}); the detector ships `SHIPPED_SCALE = {SHIPPED_SCALE:g}`: "
            f"{'the same' if ship_ok else 'DIFFERENT: update agent/detectors/fire.py'}. "
            "Its figures on these recordings (in-sample, not a result):", "",
            "| fire | ignition to commercial alarm | native: first alarm after ignition, lead "
            "| 1 min: first alarm, lead | reasons |", "|---|---|---|---|---|"]
    for f in fires:
        rs = {x.cadence: x for x in shipped.fires if x.fire == f.name}
        n, m = rs["native"], rs["1 min"]
        out.append(f"| {f.name} | {f.smoke_alarm_t - f.ignition_t:.0f} s | "
                   f"{'-' if n.first_s is None else f'{n.first_s:.0f} s'}, {_fmt_lead(n)} | "
                   f"{'-' if m.first_s is None else f'{m.first_s:.0f} s'}, {_fmt_lead(m)} | "
                   f"{', '.join(n.reasons)} |")
    starts = len(restart_slices(nuisance))
    out += ["", f"Nuisance days at the shipped point: {len(shipped.nuisance)} alarm(s); "
            f"{starts} starts of a fresh detector across them (every "
            f"{RESTART_EVERY_S / 3600:.0f} h, one hour each): {shipped.restarts} alarm(s); a "
            f"particle-only node (gas columns removed): {len(shipped.pm_only)}; PMS5003 log: "
            + ", ".join(f"{k} {v}" for k, v in shipped.pms.items()) + ".", ""]
    pms_ok = not any(shipped.pms.values()) and not any(
        v for i in chosen for v in by_scale[chosen[i]].pms.values())
    start_ok = shipped.restarts == 0 and not any(by_scale[c].restarts for c in chosen.values())

    # -- attribution ----------------------------------------------------------------------
    kinds = Counter(e.kind for e in experiments)
    out += ["## False alarms by nuisance type", "",
            "Alarm episodes on the 20 nuisance days, attributed to the experiment they fall in "
            "(or within 30 min after) or to the background; held-out folds, then a more "
            "sensitive scale for comparison.", "",
            f"| nuisance | experiments | held-out folds | scale {GRID[2]:g} | scale {GRID[0]:g} |",
            "|---|---|---|---|---|"]
    sens = Counter(w for _, w in by_scale[GRID[2]].nuisance)
    most = Counter(w for _, w in by_scale[GRID[0]].nuisance)
    held = Counter(w for _, w in outer_nui)
    for kind in [*sorted(kinds), "background"]:
        out.append(f"| {kind} | {kinds.get(kind, '-')} | {held.get(kind, 0)} | "
                   f"{sens.get(kind, 0)} | {most.get(kind, 0)} |")

    # -- curve ----------------------------------------------------------------------------
    out += ["", "## Sensitivity against false alarms (all recordings, in-sample)", "",
            "| scale | fires detected (native / 1 min) | median lead native | median lead 1 min "
            "| false alarms / day | particle-only node / day | PMS5003 | after starts |",
            "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        det = {c: [x for x in r.fires if x.cadence == c and x.detected] for c in CADENCES}
        ml = {c: _median([x.lead_s for x in det[c] if x.lead_s is not None]) for c in CADENCES}
        mark = " (shipped)" if math.isclose(r.scale, SHIPPED_SCALE) else ""
        out.append(f"| {r.scale:g}{mark} | {len(det['native'])}/{n_fires} / "
                   f"{len(det['1 min'])}/{n_fires} | {ml['native']:.0f} s | {ml['1 min']:.0f} s "
                   f"| {len(r.nuisance) / days:.2f} | {len(r.pm_only) / days:.2f} | "
                   f"{sum(r.pms.values())} | {r.restarts} |")

    # -- model -----------------------------------------------------------------------------
    model_lines: list[str] = []
    if not args.no_model:
        from training.fire.model import compare

        model_lines = compare(fires, nuisance, blocks, chosen)
    out += ["", *model_lines]

    ok = all_detected and lead_ok and before == 0 and nui_ok and pms_ok and ship_ok and start_ok
    out += ["", f"Targets (held-out folds): every fire detected before the commercial alarm at "
            f"both cadences: {'PASS' if all_detected else 'FAIL'}; median lead >= "
            f"{TARGET_LEAD_S:.0f} s at both: {'PASS' if lead_ok else 'FAIL'}; no alarm before "
            f"ignition: {'PASS' if before == 0 else 'FAIL'}; at most one false alarm in "
            f"{days:.0f} nuisance days: {'PASS' if nui_ok else 'FAIL'}; none on the PMS5003 "
            f"log: {'PASS' if pms_ok else 'FAIL'}; none in the first hour after "
            f"{starts} starts: {'PASS' if start_ok else 'FAIL'}; shipped point = selection: "
            f"{'PASS' if ship_ok else 'FAIL'}.",
            f"Run time {time.monotonic() - t0:.0f} s."]
    text = "\n".join(out) + "\n"
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"written to {OUT.relative_to(data.ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
