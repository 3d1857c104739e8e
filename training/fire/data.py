"""The smoke data set, its label blocks and the cross-validation folds (no TensorFlow).

Shared by ``training/fire/train.py`` and ``bench/eval_fire.py`` so both hold out the same
rows. Rows are 1 Hz; the label comes in four long blocks (see /work/shared/data/README.md),
so a random row split would leak: the folds are whole contiguous recordings.

    block  rows            label   fold that holds it out
    N1     0-3,177         normal  f1
    A2     3,178-24,993    alarm   f1
    N3     24,994-28,171   normal  f2
    A4     28,172-49,987   alarm   f2

f1 trains on N3+A4 and tests on N1+A2 (one contiguous recording, normal then alarm);
f2 the other way round. The 16-column file is rows 0-10,080 of the same recording
(N1 and the start of A2, with TVOC, pressure and particles too): it is tested with f1's
model. Caveat (checked, see training/fire/README.md): in the 4-column file humidity and
eCO2 of N3/A4 are exact copies of N1/A2; only the temperature differs.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from agent.detectors.fire import MODEL_FEATURES, FeatureExtractor

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(os.environ.get("CITYNODE_SHARED_DATA", ROOT.parent / "shared" / "data"))
SMOKE4 = DATA / "smoke" / "smoke_detection_4col_rows0-49987.csv"
SMOKE16 = DATA / "smoke" / "smoke_detection_16col_rows0-10080.csv"
PMS5003 = DATA / "pms5003" / "pms5003_tidy.csv"


@dataclass(frozen=True)
class Block:
    name: str
    first: int
    last: int  # inclusive
    label: int


BLOCKS = (Block("N1", 0, 3177, 0), Block("A2", 3178, 24993, 1),
          Block("N3", 24994, 28171, 0), Block("A4", 28172, 49987, 1))
#: fold -> (held-out recording rows [first, last], training recording rows)
FOLDS = {"f1": ((0, 24993), (24994, 49987)), "f2": ((24994, 49987), (0, 24993))}
SEGMENTS = ((0, 24993), (24994, 49987))  # the two contiguous recordings (N1+A2, N3+A4)

# CSV header -> detector quantity
COLUMNS_16 = {"Temperature[C]": "temperature_c", "Humidity[%]": "humidity_pct",
              "TVOC[ppb]": "tvoc_ppb", "eCO2[ppm]": "eco2_ppm", "Pressure[hPa]": "pressure_hpa",
              "PM1.0": "pm1_0", "PM2.5": "pm2_5", "NC0.5": "nc0_5", "NC1.0": "nc1_0",
              "NC2.5": "nc2_5"}


def available() -> bool:
    return SMOKE4.is_file() and SMOKE16.is_file() and PMS5003.is_file()


def read_smoke4() -> tuple[list[dict[str, float]], list[int]]:
    """Rows of the 4-column file as detector values, and the labels."""
    values, labels = [], []
    with open(SMOKE4, encoding="utf-8", newline="") as f:
        r = csv.reader(f)
        next(r)
        for row in r:
            values.append({"temperature_c": float(row[1]), "humidity_pct": float(row[2]),
                           "eco2_ppm": float(row[3])})
            labels.append(int(float(row[4])))
    return values, labels


def read_smoke16() -> tuple[list[float], list[dict[str, float]], list[int]]:
    """UTC seconds, all quantities the detector knows, labels of the 16-column file."""
    ts, values, labels = [], [], []
    with open(SMOKE16, encoding="utf-8", newline="") as f:
        r = csv.DictReader(f)
        for row in r:
            ts.append(float(row["UTC"]))
            values.append({q: float(row[c]) for c, q in COLUMNS_16.items()})
            labels.append(int(float(row["Fire Alarm"])))
    return ts, values, labels


def features(values: list[dict[str, float]]) -> Iterator[list[float]]:
    """:data:`MODEL_FEATURES` for each 1 Hz row, through the detector's own extractor."""
    fx = FeatureExtractor()
    for i, v in enumerate(values):
        fx.add(float(i), v)
        yield fx.model_features(float(i))


__all__ = ["BLOCKS", "FOLDS", "MODEL_FEATURES", "SEGMENTS", "Block", "available", "features",
           "read_smoke4", "read_smoke16"]
