"""``python -m bench.eval_fire``: the fire detector on held-out recordings and a fire-free log.

Everything goes through :class:`agent.detectors.fire.FireDetector` exactly as the daemon
runs it (update per row, its own persistence and hysteresis); no TensorFlow.

* **Held-out smoke recordings** (training/fire/data.py): the 4-column file is two
  contiguous recordings, N1+A2 (rows 0-24,993) and N3+A4 (rows 24,994-49,987). Each is
  replayed at 1 Hz (temperature, humidity, eCO2 only) with the fold model that was trained
  on the *other* recording (``training/fire/folds/f1|f2``). The 16-column file (rows
  0-10,080 of N1+A2, with TVOC, pressure and particles) is replayed with f1's model.
* **Labels are per sample** (1 Hz): the detector's state after each second against the
  row's ``Fire Alarm``, with no grace period, so the detector's own latency and its
  hysteresis tail count against it. Per-sample is what the platform sees (a state, every
  second); per-window labels would hide latency. Precision/recall/F1 are of the ``fire``
  class over each held-out recording (one normal and one alarm block).
  For scale, "always fire" scores F1 = 0.932 on each: the alarm blocks are 87 % of the
  rows, so F1 of the fire class is a weak measure here; the normal blocks' false-alarm
  seconds and the delays say more.
* **Delay**: from the first alarm row of each alarm block to the first ``fire`` state.
* **PMS5003**: the real 17-day log (no fire) through the detector with only PM present
  (once with the atmospheric values, once with CF=1): must raise no fire.

Targets: F1 >= 0.95 on each held-out recording; zero fire alarms on the PMS5003 log.
Prints the report and writes it to build/eval/fire.md. Exit 1 if a target fails,
0 with "skipped" when ../shared/data is absent.
"""

from __future__ import annotations

import csv
import sys
import time
from datetime import datetime

from agent.detectors.fire import FIRE, FireDetector
from training.fire.data import (
    BLOCKS,
    DATA,
    FOLDS,
    PMS5003,
    ROOT,
    available,
    read_smoke4,
    read_smoke16,
)

FOLDS_DIR = ROOT / "training" / "fire" / "folds"
OUT = ROOT / "build" / "eval" / "fire.md"
F1_TARGET = 0.95


def replay(det: FireDetector, ts: list[float], values: list[dict[str, float]]) -> list[bool]:
    """The detector's state (fire?) after each row."""
    out = []
    for t, v in zip(ts, values, strict=True):
        det.update(t, v)
        out.append(det.state == FIRE)
    return out


def prf(pred: list[bool], labels: list[int]) -> tuple[float, float, float]:
    tp = sum(1 for p, y in zip(pred, labels, strict=True) if p and y)
    fp = sum(1 for p, y in zip(pred, labels, strict=True) if p and not y)
    fn = sum(1 for p, y in zip(pred, labels, strict=True) if not p and y)
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    return prec, rec, (2 * prec * rec / (prec + rec) if prec + rec else 0.0)


def episodes(pred: list[bool]) -> int:
    return sum(1 for i, p in enumerate(pred) if p and (i == 0 or not pred[i - 1]))


def block_lines(name: str, pred: list[bool], labels: list[int], first: int) -> list[str]:
    """Per-block rows of the report (rows relative to the recording start ``first``)."""
    lines = []
    for b in BLOCKS:
        lo, hi = b.first - first, b.last - first
        if hi < 0 or lo >= len(pred):
            continue
        part = pred[max(0, lo):min(len(pred), hi + 1)]
        share = sum(part) / len(part)
        if b.label:
            delay = next((i for i, p in enumerate(part) if p), None)
            d = "never" if delay is None else f"{delay} s"
            lines.append(f"| {name} | {b.name} alarm | {len(part)} | {share:.1%} in fire "
                         f"(recall) | delay {d} |")
        else:
            lines.append(f"| {name} | {b.name} normal | {len(part)} | {share:.1%} in fire "
                         f"(false-alarm seconds) | {episodes(part)} alarm episode(s) |")
    return lines


def all_f1_ok(report: list[str]) -> bool:
    """Whether every held-out F1 in the report table met the target."""
    return all(float(line.split("**")[1]) >= F1_TARGET for line in report if "**" in line)


def main() -> int:
    if not available():
        print(f"eval_fire: skipped: smoke/PMS5003 data not found under {DATA}")
        return 0
    t0 = time.monotonic()
    values, labels = read_smoke4()
    report = ["# Fire detector evaluation", "",
              "Command: `.venv/bin/python -m bench.eval_fire` (no TensorFlow). Per-sample (1 Hz) "
              "labels, the detector's state after each second, no grace period. Each recording "
              "is replayed with the fold model trained on the other one "
              "(training/fire/folds/), the rules as shipped.", "",
              "| recording | model | rows | precision | recall | F1 | F1 rules only | "
              "F1 always-fire |", "|---|---|---|---|---|---|---|---|"]
    blocks_md = ["", "| recording | block | rows | share | |", "|---|---|---|---|---|"]
    ok = True
    health = []
    for fold, (test, _train) in FOLDS.items():
        first, last = test
        ts = [float(i) for i in range(last - first + 1)]
        vals, labs = values[first:last + 1], labels[first:last + 1]
        det = FireDetector(FOLDS_DIR / f"{fold}.tflite")
        health.append(f"{fold}: {det.health['model']} {det.health.get('error') or ''}")
        pred = replay(det, ts, vals)
        p, r, f = prf(pred, labs)
        _, _, f_rules = prf(replay(FireDetector(None), ts, vals), labs)
        _, _, f_all = prf([True] * len(labs), labs)
        ok &= f >= F1_TARGET
        name = f"4-col rows {first}-{last} (T, RH, eCO2)"
        report.append(f"| {name} | {fold} | {len(labs)} | {p:.3f} | {r:.3f} | **{f:.3f}** | "
                      f"{f_rules:.3f} | {f_all:.3f} |")
        blocks_md += block_lines(name, pred, labs, first)
    ts16, vals16, labs16 = read_smoke16()
    det = FireDetector(FOLDS_DIR / "f1.tflite")
    pred = replay(det, ts16, vals16)
    p, r, f = prf(pred, labs16)
    _, _, f_rules = prf(replay(FireDetector(None), ts16, vals16), labs16)
    _, _, f_all = prf([True] * len(labs16), labs16)
    ok &= f >= F1_TARGET
    name = "16-col rows 0-10080 (all quantities)"
    report.append(f"| {name} | f1 | {len(labs16)} | {p:.3f} | {r:.3f} | **{f:.3f}** | "
                  f"{f_rules:.3f} | {f_all:.3f} |")
    blocks_md += block_lines(name, pred, labs16, 0)

    # PMS5003: 17 days, no fire, PM only
    pms_lines = ["", "| PMS5003 log (no fire) | readings | days | fire alarms |",
                 "|---|---|---|---|"]
    pms_ok = True
    with open(PMS5003, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    tsp = [datetime.fromisoformat(r["datetime_local"]).timestamp() for r in rows]
    days = (tsp[-1] - tsp[0]) / 86400
    for kind in ("atm", "cf1"):
        vals = [{"pm1_0": float(r[f"pm1_{kind}"]), "pm2_5": float(r[f"pm25_{kind}"]),
                 "pm10": float(r[f"pm10_{kind}"])} for r in rows]
        det = FireDetector()
        alarms = []
        for t, v in zip(tsp, vals, strict=True):
            alarms += [e for e in det.update(t, v) if e.state == FIRE]
        pms_ok &= not alarms
        pms_lines.append(f"| PM {kind} through the shipped detector | {len(rows)} | {days:.1f} | "
                         f"**{len(alarms)}** |")
    ok &= pms_ok
    f1_ok = all_f1_ok(report)
    verdict = ["", f"Targets: F1 >= {F1_TARGET} on each held-out recording: "
               f"{'PASS' if f1_ok else 'FAIL'}; zero fire alarms on the PMS5003 log: "
               f"{'PASS' if pms_ok else 'FAIL'}.",
               f"Models: {'; '.join(health)}. Runtime {time.monotonic() - t0:.0f} s.", "",
               "Caveats: (1) in the 4-column file humidity and eCO2 of N3/A4 are exact copies of "
               "N1/A2 (only temperature differs), so the two folds are not independent in those "
               "two quantities. (2) Most alarm-block seconds carry no fire signature in T, RH "
               "or eCO2 (eCO2 at its 400 ppm floor, temperature falling to -22 degC for hours); "
               "the detector alarms where eCO2 surges, and a model fed absolute levels would "
               "learn the session (cold = fire) instead. See docs/fire.md."]
    text = "\n".join(report + blocks_md + pms_lines + verdict) + "\n"
    print(text)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(f"written to {OUT.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
