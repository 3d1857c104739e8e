"""SisFall trials and the detector's candidate windows (numpy only: bench/ uses it too).

Candidates come from the real :class:`~agent.detectors.fall.FallDetector` (rules mode,
no fall ever emitted so every candidate is seen), so the model is trained on exactly the
windows, the resampling and the features it will get on the node.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.detectors.fall import Candidate, FallDetector

ROOT = Path(__file__).resolve().parents[2]
SISFALL_DIR = Path(os.environ.get("CITYNODE_SISFALL", ROOT.parent / "shared" / "data" / "sisfall"))
RAW_RATE_HZ = 200.0
G_PER_COUNT = 32.0 / 8192.0   # ADXL345, +-16 g, 13 bit
N_FOLDS = 5
# Falls within this much after the biggest candidate of a fall trial are the fall itself.
PRE_IMPACT_NEG_S = 2.0


@dataclass(frozen=True)
class Trial:
    subject: str     # SA01 .. SE10
    key: str         # F03_R02
    acc: np.ndarray  # (n, 3) g at RAW_RATE_HZ

    @property
    def activity(self) -> str:
        return self.key[:3]

    @property
    def is_fall(self) -> bool:
        return self.key.startswith("F")

    @property
    def duration_s(self) -> float:
        return len(self.acc) / RAW_RATE_HZ

    @property
    def t(self) -> np.ndarray:
        return np.arange(len(self.acc)) / RAW_RATE_HZ


def subjects(root: Path = SISFALL_DIR) -> list[str]:
    return sorted(p.stem for p in root.glob("S[AE][0-9][0-9].npz"))


def load_trials(root: Path = SISFALL_DIR, only: set[str] | None = None) -> Iterator[Trial]:
    """Every trial of every subject (or of ``only``), in a fixed order."""
    for s in subjects(root):
        if only is not None and s not in only:
            continue
        with np.load(root / f"{s}.npz") as z:
            for key in sorted(z.files):
                yield Trial(s, key, z[key].astype(np.float64) * G_PER_COUNT)


def fold_of(subject: str, all_subjects: list[str], n_folds: int = N_FOLDS) -> int:
    """Subject-wise folds, round robin over the sorted subjects (SA and SE spread)."""
    return all_subjects.index(subject) % n_folds


def candidates(trial: Trial, **params: float) -> list[Candidate]:
    """Every candidate impact the detector sees in ``trial`` (confirmed or not)."""
    out: list[Candidate] = []
    det = FallDetector(None, on_candidate=out.append, rule_peak_g=float("inf"), **params)
    det.update_many(trial.t, trial.acc)
    return out


def labelled(trial: Trial, cands: list[Candidate]) -> list[tuple[Candidate, int]]:
    """(candidate, label): the biggest impact of a fall trial is 1, ADL candidates and
    fall-trial candidates more than PRE_IMPACT_NEG_S before that impact are 0, the rest
    (the seconds around and after the fall) are left out as ambiguous."""
    if not trial.is_fall:
        return [(c, 0) for c in cands]
    if not cands:
        return []
    best = max(cands, key=lambda c: c.stats.peak_g)
    out = []
    for c in cands:
        if c is best:
            out.append((c, 1))
        elif c.t < best.t - PRE_IMPACT_NEG_S:
            out.append((c, 0))
    return out
