"""Nested cross-validation of the fall detector: ``.venv-train/bin/python -m training.fall.nested``.

The model weights were always judged on subjects they never saw; the detector's trigger
level, confirmation window and model threshold were not (they were picked looking at the
same held-out figures). Here every choice is made inside training subjects only:

- outer folds: the subject-wise folds of :mod:`training.fall.data` (5 folds of 5-6
  subjects). ``folds/fold{k}.tflite`` is trained on the other four folds and judged on fold
  k by ``bench/eval_fall.py``;
- inner folds, inside each outer fold k: the four other folds in turn.
  ``folds/inner{k}{j}.tflite`` is trained on the three folds that are neither k nor j and
  scores the candidates of fold j. So every score used to choose fold k's parameters comes
  from a model that saw neither the subject scored nor any subject of fold k;
- selection (:mod:`training.fall.select`, numpy only): the grid of detector parameters is
  replayed over fold k's training subjects with those inner scores; the choice is written
  to ``folds/fold{k}.json`` (``threshold``, ``thresholds``) and ``folds/nested.json``;
- the shipped parameters: the same selection over all subjects, scored by the outer fold
  models (an inner CV over all subjects); the shipped model ``agent/models/fall.tflite``
  is trained on all subjects.

Models are cached: one whose metadata already says the same subjects, seed, epochs and
version is not trained again (``--retrain`` forces it). ``--select-only`` needs no
TensorFlow (the node's runtime, ai-edge-litert, scores the saved models). Seeds are fixed;
about 6.5 min on 2 cores for the 26 models, 2 min for the selection.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import numpy as np

from .data import N_FOLDS, SISFALL_DIR, fold_of, subjects

FOLDS_DIR = Path(__file__).resolve().parent / "folds"
NESTED_JSON = FOLDS_DIR / "nested.json"


def inner_seed(seed: int, k: int, j: int) -> int:
    return seed + 10 * (k + 1) + j


def model_plan(subs: list[str], seed: int) -> list[dict[str, Any]]:
    """Every model of the nested procedure: path, training subjects, held-out subjects."""
    fold = {s: fold_of(s, subs) for s in subs}
    plan: list[dict[str, Any]] = []
    for k in range(N_FOLDS):
        plan.append({"path": FOLDS_DIR / f"fold{k}.tflite", "seed": seed + k,
                     "held_out": sorted(s for s in subs if fold[s] == k),
                     "trained": {"fold": k}})
        for j in range(N_FOLDS):
            if j == k:
                continue
            plan.append({"path": FOLDS_DIR / f"inner{k}{j}.tflite",
                         "seed": inner_seed(seed, k, j),
                         "held_out": sorted(s for s in subs if fold[s] in (k, j)),
                         "trained": {"fold": k, "inner": j,
                                     "scores": sorted(s for s in subs if fold[s] == j)}})
    for p in plan:
        p["subjects"] = [s for s in subs if s not in p["held_out"]]
    return plan


def _cached(path: Path, want: dict[str, Any]) -> bool:
    js = path.with_suffix(".json")
    if not (path.is_file() and js.is_file()):
        return False
    try:
        meta = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    tr = meta.get("trained", {})
    return (meta.get("version") == want["version"]
            and all(tr.get(k) == v for k, v in want["trained"].items()))


def train_models(args: argparse.Namespace) -> None:
    """The outer, inner and final models (TensorFlow), skipping the cached ones."""
    import tensorflow as tf

    from . import train as T

    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    t0 = time.time()
    subs = subjects()
    d: dict[str, np.ndarray] | None = None
    today = dt.date.today().isoformat()
    plan = model_plan(subs, T.SEED)
    plan.append({"path": T.MODELS_DIR / "fall.tflite", "seed": T.SEED, "held_out": [],
                 "subjects": subs, "trained": {"data": "SisFall (ADXL345, waist), all "
                                               "subjects here", "cv": "nested, "
                                               "training/fall/folds/nested.json"}})
    for p in plan:
        trained = {"data": "SisFall (ADXL345, waist)", **p["trained"],
                   "folds": N_FOLDS, "held_out": p["held_out"], "subjects": p["subjects"],
                   "seed": p["seed"], "epochs": args.epochs}
        if not args.retrain and _cached(p["path"], {"version": T.VERSION, "trained": {
                k: trained[k] for k in ("held_out", "seed", "epochs")}}):
            print(f"{p['path'].name}: cached", flush=True)
            continue
        if d is None:
            d = T.collect()
            print(f"{len(d['y'])} candidate windows ({int(d['y'].sum())} falls) in "
                  f"{time.time() - t0:.0f} s", flush=True)
        idx = np.flatnonzero(np.isin(d["subject"], p["subjects"]))
        m, mean, std = T.train_one(d, idx, args.epochs, p["seed"])
        blob = T.to_tflite(m, ((d["x"][idx] - mean) / std).astype(np.float32), p["seed"])
        trained["date"] = today
        if not p["held_out"]:
            trained.update({"params": int(m.count_params()), "candidates": len(idx),
                            "positives": int(d["y"][idx].sum())})
        T.write_model(p["path"], blob, T.metadata(d["x"].shape[1], mean, std, trained))
        print(f"{p['path'].name}: {len(blob)} bytes, trained on {len(p['subjects'])} "
              f"subjects; {time.time() - t0:.0f} s", flush=True)
    print(f"models done in {time.time() - t0:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--retrain", action="store_true", help="train every model again")
    ap.add_argument("--models-only", action="store_true", help="no selection")
    ap.add_argument("--select-only", action="store_true",
                    help="only the selection (no TensorFlow; the models must exist)")
    args = ap.parse_args(argv)
    if not SISFALL_DIR.is_dir() or not subjects():
        print(f"no SisFall data at {SISFALL_DIR} (set CITYNODE_SISFALL)", file=sys.stderr)
        return 66
    if not args.select_only:
        train_models(args)
    if args.models_only:
        return 0
    from .select import run_selection

    return run_selection()


if __name__ == "__main__":
    sys.exit(main())
