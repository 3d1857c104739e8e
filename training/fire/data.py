"""The fire development recordings: four real fires, 20 nuisance days, a PMS5003 log.

Shared by ``bench/eval_fire.py`` and ``training/fire/model.py`` (numpy only, no
TensorFlow). ``../shared/data/fire-tests/README.md`` describes the recordings; other fires
and another monitor of the same studies are held out and are not here.

* ``fires/<name>.csv`` at 1 Hz (the electrical ones at 0.5 Hz), SGP30 eCO2/TVOC and
  temperature/humidity, with ``truth.json``: ``ignition_t`` and ``smoke_alarm_t`` (a
  commercial smoke alarm beside the sensors).
* ``nuisance/indoor.csv``: one reading a minute for 20 days (T, RH, PM1/PM2.5/PM10, TVOC,
  NDIR CO2 as ``eco2_ppm``), no fire; ``events.json`` lists 26 timed nuisance experiments.
* ``pms5003/pms5003_tidy.csv``: 17 days of a real PMS5003 (PM only), no fire.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("CITYNODE_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIRE_TESTS = DATA / "fire-tests"
PMS5003 = DATA / "pms5003" / "pms5003_tidy.csv"

Row = tuple[float, dict[str, float]]
#: What the daemon reports on a slow node: one window a minute (docs/fire.md).
WINDOW_S = 60.0
#: An alarm within this long after an experiment's end is still the experiment's
#: (the air takes time to clear).
AFTERMATH_S = 1800.0


@dataclass(frozen=True)
class Fire:
    name: str
    rows: list[Row]
    start_t: float
    ignition_t: float
    smoke_alarm_t: float


@dataclass(frozen=True)
class Experiment:
    name: str
    start_t: float
    end_t: float

    @property
    def kind(self) -> str:
        """The experiment type: "VOC Tubes - Car" and "Car (3m)" are both kinds of their own."""
        return self.name


def available() -> bool:
    return (FIRE_TESTS / "fires" / "truth.json").is_file() and (
        FIRE_TESTS / "nuisance" / "indoor.csv").is_file()


def read_csv(path: Path) -> list[Row]:
    """(t, values) per row; an empty cell is "not measured"."""
    out: list[Row] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            t = float(r.pop("t"))
            out.append((t, {k: float(v) for k, v in r.items() if v not in ("", None)}))
    return out


def fires() -> list[Fire]:
    truth = json.loads((FIRE_TESTS / "fires" / "truth.json").read_text(encoding="utf-8"))
    return [Fire(name, read_csv(FIRE_TESTS / "fires" / f"{name}.csv"), float(tr["start_t"]),
                 float(tr["ignition_t"]), float(tr["smoke_alarm_t"]))
            for name, tr in sorted(truth.items())]


def nuisance() -> tuple[list[Row], list[Experiment]]:
    rows = read_csv(FIRE_TESTS / "nuisance" / "indoor.csv")
    doc = json.loads((FIRE_TESTS / "nuisance" / "events.json").read_text(encoding="utf-8"))
    return rows, [Experiment(e["name"], float(e["start_t"]), float(e["end_t"]))
                  for e in doc["events"]]


def pms5003() -> list[tuple[str, list[Row]]]:
    """The PMS5003 log twice: atmospheric and CF=1 values ([] when absent)."""
    if not PMS5003.is_file():
        return []
    with open(PMS5003, encoding="utf-8", newline="") as fh:
        raw = list(csv.DictReader(fh))
    ts = [datetime.fromisoformat(r["datetime_local"]).timestamp() for r in raw]
    return [(kind, [(t, {"pm1_0": float(r[f"pm1_{kind}"]), "pm2_5": float(r[f"pm25_{kind}"]),
                         "pm10": float(r[f"pm10_{kind}"])}) for t, r in zip(ts, raw, strict=True)])
            for kind in ("atm", "cf1")]


def windows(rows: list[Row], width_s: float = WINDOW_S) -> list[Row]:
    """Mean of each quantity per ``width_s`` window, stamped at the window's end: what
    a node reporting once a minute sends (its report is a window, not a sample)."""
    out: list[Row] = []
    if not rows:
        return out
    t0 = rows[0][0]
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    current = 0
    for t, values in rows:
        k = int((t - t0) // width_s)
        if k != current and counts:
            out.append((t0 + (current + 1) * width_s,
                        {q: sums[q] / counts[q] for q in sums}))
            sums, counts = {}, {}
        current = k
        for q, v in values.items():
            sums[q] = sums.get(q, 0.0) + v
            counts[q] = counts.get(q, 0) + 1
    if counts:
        out.append((t0 + (current + 1) * width_s, {q: sums[q] / counts[q] for q in sums}))
    return out


def attribute(t: float, experiments: list[Experiment]) -> str:
    """The experiment an alarm at ``t`` belongs to (during it or within
    :data:`AFTERMATH_S` after), else "background"."""
    for e in experiments:
        if e.start_t <= t <= e.end_t + AFTERMATH_S:
            return e.kind
    return "background"


def day_blocks(rows: list[Row], n: int) -> list[tuple[float, float]]:
    """``n`` equal, contiguous time blocks [start, end) covering ``rows`` (nuisance folds)."""
    t0, t1 = rows[0][0], rows[-1][0] + 1.0
    step = (t1 - t0) / n
    return [(t0 + i * step, t0 + (i + 1) * step) for i in range(n)]
