"""Train the fire model: ``.venv-train/bin/python -m training.fire.train [--quick]``.

Features come from :class:`agent.detectors.fire.FeatureExtractor` (the detector's own
code), one vector per second of the smoke data set. A small monotone MLP (6-12-8-1, 197
parameters, non-negative weights) with class-balanced weights, full int8 post-training
quantization (int8 input and output), fixed seeds. Writes

* ``training/fire/folds/f1.tflite|json`` and ``f2``: trained without the recording they
  are evaluated on (``bench/eval_fire.py`` uses them; see training/fire/data.py);
* ``agent/models/fire.tflite|json``: the shipped model, trained on both recordings.

The decision threshold is chosen on the training rows only: the lowest probability at
which at most ``MAX_FPR`` of the training *normal* seconds score above it (few false
alarms first), never below 0.5, and at least 0.1 above the probability of the all-zero
input ("nothing rises"), which must never alarm.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("PYTHONHASHSEED", "0")

import numpy as np

from agent.detectors.fire import MODEL_FEATURES, FireConfig

from .data import FOLDS, ROOT, SEGMENTS, SMOKE4, available, features, read_smoke4

SEED = 20261123
MAX_FPR = 0.005
EPOCHS = 40
VERSION = "2026.11.1"
MODELS = ROOT / "agent" / "models"
FOLDS_DIR = ROOT / "training" / "fire" / "folds"


def segment_xy(values, labels, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of one contiguous recording (the extractor starts fresh), NaN rows dropped."""
    x = np.asarray(list(features(values[first:last + 1])), dtype=np.float32)
    y = np.asarray(labels[first:last + 1], dtype=np.float32)
    ok = np.all(np.isfinite(x), axis=1)
    return x[ok], y[ok]


def build(n_features: int):
    import keras

    return keras.Sequential([
        keras.layers.Input((1, n_features)),
        keras.layers.Flatten(),
        # non-negative weights + monotone activations: the output can only grow with
        # each (one-sided, fire-directed) feature -- a physical prior, not a fit
        keras.layers.Dense(12, activation="relu", kernel_constraint=keras.constraints.NonNeg()),
        keras.layers.Dense(8, activation="relu", kernel_constraint=keras.constraints.NonNeg()),
        keras.layers.Dense(1, activation="sigmoid",
                           kernel_constraint=keras.constraints.NonNeg()),
    ])


def train_one(x: np.ndarray, y: np.ndarray, epochs: int) -> tuple[bytes, dict]:
    """Fit, quantize to int8 and pick the threshold; returns (tflite bytes, metadata)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), 1e-3)
    xs = ((x - mean) / std)[:, None, :]
    pos = float(y.mean())
    weights = {0: 0.5 / (1 - pos), 1: 0.5 / pos}
    model = build(x.shape[1])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(xs, y, epochs=epochs, batch_size=256, class_weight=weights, verbose=0,
              shuffle=True)

    rng = np.random.default_rng(SEED)
    rep = xs[rng.choice(len(xs), size=min(2000, len(xs)), replace=False)]

    def representative():
        for row in rep:
            yield [row[None, ...].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    blob = conv.convert()

    # threshold from the quantized model's own outputs on the training rows
    it = tf.lite.Interpreter(model_content=blob)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    si, zi = inp["quantization"]
    so, zo = out["quantization"]
    q = np.clip(np.round(xs / si + zi), -128, 127).astype(np.int8)
    probs = np.empty(len(q), dtype=np.float32)
    for i in range(len(q)):
        it.set_tensor(inp["index"], q[i:i + 1])
        it.invoke()
        probs[i] = (float(it.get_tensor(out["index"]).reshape(-1)[0]) - zo) * so
    neg = np.sort(probs[y == 0])
    thr = float(neg[min(len(neg) - 1, int(np.ceil((1 - MAX_FPR) * len(neg))))]) + 1e-3
    # "nothing rising" (all features 0) must never alarm: the threshold sits above it
    zero = np.clip(np.round(((0 - mean) / std)[None, None, :] / si + zi), -128, 127)
    it.set_tensor(inp["index"], zero.astype(np.int8))
    it.invoke()
    p_zero = (float(it.get_tensor(out["index"]).reshape(-1)[0]) - zo) * so
    thr = float(min(0.95, max(0.5, thr, p_zero + 0.1)))
    tp = float(((probs >= thr) & (y == 1)).sum())
    fp = float(((probs >= thr) & (y == 0)).sum())
    fn = float(((probs < thr) & (y == 1)).sum())
    meta = {
        "name": "fire", "version": VERSION, "task": "fire", "sample_rate_hz": 1,
        "window": 1, "features": list(MODEL_FEATURES), "input_shape": [1, len(MODEL_FEATURES)],
        "scale": {"mean": [round(float(v), 6) for v in mean],
                  "std": [round(float(v), 6) for v in std]},
        "threshold": round(thr, 4),
        "thresholds": FireConfig().to_dict(),
        "output": "probability",
        "trained": {"params": int(model.count_params()), "seed": SEED, "epochs": epochs,
                    "rows": len(x), "positive_fraction": round(pos, 4),
                    "max_train_fpr": MAX_FPR, "p_at_zero_features": round(p_zero, 4),
                    "model_clear_threshold": round((thr + p_zero) / 2, 4),
                    "train_f1_at_threshold": round(2 * tp / max(1.0, 2 * tp + fp + fn), 4)},
    }
    return blob, meta


def write(blob: bytes, meta: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(blob)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 epochs (smoke test of the pipeline)")
    args = ap.parse_args(argv)
    if not available():
        print(f"skipped: {SMOKE4} not found")
        return 0
    t0 = time.monotonic()
    epochs = 5 if args.quick else EPOCHS
    values, labels = read_smoke4()
    seg = {s: segment_xy(values, labels, *s) for s in SEGMENTS}
    common = {"data": f"{SMOKE4.name} (sha-free: see /work/shared/data/smoke/PROVENANCE.txt)",
              "date": datetime.now(UTC).strftime("%Y-%m-%d"),
              "command": ".venv-train/bin/python -m training.fire.train"}
    for fold, (test, train) in FOLDS.items():
        x, y = seg[train]
        blob, meta = train_one(x, y, epochs)
        meta["trained"].update(common, fold=fold, train_rows=list(train), held_out_rows=list(test))
        write(blob, meta, FOLDS_DIR / f"{fold}.tflite")
        print(f"{fold}: trained on rows {train[0]}-{train[1]}, threshold {meta['threshold']}, "
              f"{len(blob)} bytes")
    x = np.concatenate([seg[s][0] for s in SEGMENTS])
    y = np.concatenate([seg[s][1] for s in SEGMENTS])
    blob, meta = train_one(x, y, epochs)
    meta["trained"].update(common, fold="all", train_rows=[0, 49987],
                           seconds=round(time.monotonic() - t0, 1))
    write(blob, meta, MODELS / "fire.tflite")
    print(f"shipped: {MODELS / 'fire.tflite'} {len(blob)} bytes, threshold {meta['threshold']}, "
          f"{meta['trained']['params']} parameters, {time.monotonic() - t0:.0f} s in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
