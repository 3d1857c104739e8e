"""Train the fall model: ``.venv-train/bin/python -m training.fall.train`` (about 5 min, 2 cores).

1. Candidates: every SisFall trial goes through the real FallDetector (rules mode, resampled
   200 -> 50 Hz, the trigger, the confirmation statistics); each candidate's feature window
   comes from ``agent.detectors.fall.window_features``, so training and the node cannot
   drift. Labels: training/fall/data.py (positive: the biggest impact of an F trial;
   negative: every ADL candidate, including the hard ones that pass the confirmation --
   lying down quickly, collapsing into a chair -- weighted up, and fall-trial candidates
   long before the fall).
2. Subject-wise cross-validation: N_FOLDS folds of whole subjects; a model per fold is
   trained on the other folds and written to training/fall/folds/foldK.tflite (+ .json with
   the subjects it never saw), for bench/eval_fall.py; per-fold figures are printed.
3. The final model on all subjects: agent/models/fall.tflite and fall.json.

The detector's parameters in the metadata are the code's DEFAULTS here; the nested
cross-validation (``python -m training.fall.nested``) trains the same models plus the inner
ones and writes the parameters it chooses, which is what the evaluation needs.

Full int8 post-training quantisation (int8 input and output); the runtime scales the
features with the metadata's mean/std before quantising. Seeds are fixed and TensorFlow's
op determinism is on, so a rerun gives the same weights on the same machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")

import numpy as np

from agent.detectors.fall import DEFAULTS, FEATURES, RATE_HZ, UPRIGHT

from .data import (
    N_FOLDS,
    ROOT,
    SISFALL_DIR,
    candidates,
    fold_of,
    labelled,
    load_trials,
    subjects,
)

SEED = 20261123
VERSION = "2026.12.1"
MODELS_DIR = ROOT / "agent" / "models"
FOLDS_DIR = Path(__file__).resolve().parent / "folds"
HARD_NEG_WEIGHT = 8.0    # ADL candidates that pass the confirmation: the ones that matter
THRESHOLD = 0.9
# Candidates for training come from a lower trigger than the node's (2.0 g): the model also
# learns the borderline impacts, and the node's candidates are a subset of these.
TRAIN_TRIGGER_G = 1.5


def collect() -> dict[str, np.ndarray]:
    """All labelled candidate windows of all subjects, with what evaluation needs."""
    xs, ys, subj, conf, act, trial, peak = [], [], [], [], [], [], []
    for tr in load_trials():
        for c, y in labelled(tr, candidates(tr, trigger_g=TRAIN_TRIGGER_G)):
            xs.append(np.asarray(c.features, dtype=np.float32))  # rows of float32 values
            ys.append(y)
            subj.append(tr.subject)
            conf.append(c.confirmed)
            act.append(tr.activity)
            trial.append(f"{tr.subject}/{tr.key}")
            peak.append(c.stats.peak_g)
    return {"x": np.stack(xs), "y": np.array(ys, np.float32), "subject": np.array(subj),
            "confirmed": np.array(conf), "activity": np.array(act), "trial": np.array(trial),
            "peak": np.array(peak)}


def build_model(window: int, n_feat: int):
    import tensorflow as tf

    k = tf.keras.layers
    inp = k.Input((window, n_feat))
    x = k.Conv1D(8, 5, strides=2, padding="same", activation="relu")(inp)
    x = k.MaxPool1D(2)(x)
    x = k.Conv1D(16, 5, padding="same", activation="relu")(x)
    x = k.MaxPool1D(2)(x)
    x = k.Conv1D(16, 3, padding="same", activation="relu")(x)
    x = k.MaxPool1D(5)(x)
    x = k.Flatten()(x)
    x = k.Dropout(0.2)(x)
    out = k.Dense(1, activation="sigmoid")(x)
    return tf.keras.Model(inp, out)


def train_one(d: dict[str, np.ndarray], idx: np.ndarray, epochs: int, seed: int):
    """A Keras model trained on rows ``idx``; returns (model, mean, std)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    x, y = d["x"][idx], d["y"][idx]
    mean = x.reshape(-1, x.shape[-1]).mean(axis=0)
    std = x.reshape(-1, x.shape[-1]).std(axis=0) + 1e-6
    xs = (x - mean) / std
    w = np.where(y > 0.5, 0.5 * len(y) / max(1, y.sum()), 0.5 * len(y) / max(1, (1 - y).sum()))
    w = w * np.where((y < 0.5) & d["confirmed"][idx], HARD_NEG_WEIGHT, 1.0)
    # Amplitude augmentation (+-15 %): wearers, mountings and floors differ in how hard.
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.85, 1.15, size=(len(x), 1, 1)).astype(np.float32)
    x_aug = ((x * scale) - mean) / std
    xs = np.concatenate([xs, x_aug]).astype(np.float32)
    y2, w2 = np.concatenate([y, y]), np.concatenate([w, w]).astype(np.float32)
    m = build_model(x.shape[1], x.shape[2])
    m.compile(optimizer=tf.keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    m.fit(xs, y2, sample_weight=w2, epochs=epochs, batch_size=256, shuffle=True, verbose=0)
    return m, mean.astype(float), std.astype(float)


def to_tflite(m, rep: np.ndarray, seed: int) -> bytes:
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    pick = rep[rng.choice(len(rep), size=min(500, len(rep)), replace=False)]

    def representative():
        for r in pick:
            yield [r[None, ...].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(m)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def metadata(window: int, mean, std, trained: dict) -> dict:
    thresholds = {k: DEFAULTS[k] for k in ("trigger_g", "merge_s", "settle_s", "still_s",
                                           "still_std_g", "orientation_deg", "rule_peak_g",
                                           "refractory_s")}
    thresholds["upright_axis"] = list(UPRIGHT)
    return {"name": "fall", "version": VERSION, "task": "fall", "sample_rate_hz": RATE_HZ,
            "window": window, "features": list(FEATURES), "input_shape": [window, len(FEATURES)],
            "scale": {"mean": [round(float(v), 6) for v in mean],
                      "std": [round(float(v), 6) for v in std]},
            "threshold": THRESHOLD, "thresholds": thresholds, "output": "probability",
            "trained": trained}


def write_model(path: Path, blob: bytes, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def tflite_scores(path: Path, x: np.ndarray) -> np.ndarray:
    """Scores of the quantised model through the node's runtime (what is shipped is judged)."""
    from agent.models.runtime import Model, ModelMeta, _PyBackend, available_runtimes

    if available_runtimes():
        m = Model.load(path, expect_task="fall")
    else:  # TensorFlow's own interpreter, through the runtime's scaling and quantization
        import tensorflow as tf

        it = tf.lite.Interpreter(model_path=str(path))
        it.allocate_tensors()
        meta = ModelMeta.from_dict(json.loads(path.with_suffix(".json").read_text()))
        m = Model(meta, _PyBackend(it), "tf.lite", path)
    return np.array([m.predict(r) for r in x])


def report_fold(k: int, d: dict, idx: np.ndarray, scores: np.ndarray) -> str:
    """Candidate-level held-out figures at the node's trigger: falls found, ADL alarms
    (confirmed and score >= thr); bench/eval_fall.py has the whole-pipeline figures."""
    y, trial = d["y"][idx], d["trial"][idx]
    conf = d["confirmed"][idx] & (d["peak"][idx] >= DEFAULTS["trigger_g"])
    hit = conf & (scores >= THRESHOLD)
    fall_trials = {t for t, yy in zip(trial, y, strict=True) if yy > 0.5}
    found = {t for t, yy, h in zip(trial, y, hit, strict=True) if yy > 0.5 and h}
    fa = int((hit & (y < 0.5) & np.array([t.split("/")[1].startswith("D") for t in trial])).sum())
    hard = int(((y < 0.5) & conf).sum())
    subj = sorted(set(d["subject"][idx]))
    return (f"fold {k}: held out {','.join(subj)}: falls {len(found)}/{len(fall_trials)}, "
            f"ADL false alarms {fa} (of {hard} confirmed ADL/pre-fall candidates)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--no-folds", action="store_true", help="only the final model")
    ap.add_argument("--no-final", action="store_true", help="only the fold models")
    args = ap.parse_args(argv)
    if not SISFALL_DIR.is_dir():
        print(f"no SisFall data at {SISFALL_DIR} (set CITYNODE_SISFALL)", file=sys.stderr)
        return 66
    import tensorflow as tf

    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    t0 = time.time()
    d = collect()
    subs = subjects()
    folds = np.array([fold_of(s, subs) for s in d["subject"]])
    n = len(d["y"])
    print(f"{n} candidate windows ({int(d['y'].sum())} falls) from {len(subs)} subjects "
          f"in {time.time() - t0:.0f} s; window {d['x'].shape[1:]}, features {FEATURES}")
    window = d["x"].shape[1]
    today = dt.date.today().isoformat()
    if not args.no_folds:
        for k in range(N_FOLDS):
            tr, te = np.flatnonzero(folds != k), np.flatnonzero(folds == k)
            m, mean, std = train_one(d, tr, args.epochs, SEED + k)
            xs_tr = ((d["x"][tr] - mean) / std).astype(np.float32)
            blob = to_tflite(m, xs_tr, SEED + k)
            held = sorted({s for s in subs if fold_of(s, subs) == k})
            meta = metadata(window, mean, std, {
                "data": "SisFall (ADXL345, waist)", "fold": k, "folds": N_FOLDS,
                "held_out": held, "subjects": [s for s in subs if s not in held],
                "date": today, "seed": SEED + k, "epochs": args.epochs})
            path = FOLDS_DIR / f"fold{k}.tflite"
            write_model(path, blob, meta)
            sc = tflite_scores(path, d["x"][te])
            print(report_fold(k, d, te, sc) + f"; {len(blob)} bytes; "
                  f"{time.time() - t0:.0f} s", flush=True)
    if not args.no_final:
        idx = np.arange(n)
        m, mean, std = train_one(d, idx, args.epochs, SEED)
        blob = to_tflite(m, ((d["x"] - mean) / std).astype(np.float32), SEED)
        meta = metadata(window, mean, std, {
            "data": "SisFall (ADXL345, waist), all subjects here", "subjects": subs,
            "folds": N_FOLDS, "cv": "subject-wise, training/fall/folds/", "date": today,
            "seed": SEED, "epochs": args.epochs, "params": int(m.count_params()),
            "candidates": n, "positives": int(d["y"].sum())})
        write_model(MODELS_DIR / "fall.tflite", blob, meta)
        print(f"final model: {MODELS_DIR / 'fall.tflite'} {len(blob)} bytes, "
              f"{m.count_params()} parameters; total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
