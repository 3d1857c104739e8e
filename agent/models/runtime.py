"""One TFLite runtime for every model: ``ai-edge-litert`` first, ``tflite-runtime`` after.

A model is a ``.tflite`` file and a JSON metadata file beside it with the same stem.
The metadata says what the model expects (name, version, sample rate, window, feature
names, input scaling, thresholds); :meth:`Model.load` checks it against the model's own
tensors, so a model trained for another window or feature set is refused at load time
with a clear :class:`ModelError`, never silently fed the wrong numbers. Inference errors
are :class:`ModelError` too: the detectors turn them into a sensor-health fault and
keep running without the model (their physical rules still work).

Metadata (``<name>.json``)::

    {"name": "fall", "version": "2026.11.1", "task": "fall",
     "sample_rate_hz": 50, "window": 100,
     "features": ["ax", "ay", "az", "amag"],       # the input's last axis, in order
     "input_shape": [100, 4],                      # without the batch axis
     "scale": {"mean": [...], "std": [...]},       # per feature: x' = (x - mean) / std
     "threshold": 0.5,                              # default decision threshold on the output
     "thresholds": {...},                           # detector-specific extras (optional)
     "output": "probability",                       # sigmoid output in 0..1
     "trained": {...}}                              # provenance (free form)
"""

from __future__ import annotations

import importlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RUNTIMES", "Model", "ModelError", "ModelMeta", "available_runtimes",
           "model_path"]

# (name, module, attribute): tried in this order unless CITYNODE_TFLITE_RUNTIME names one.
RUNTIMES = (("ai-edge-litert", "ai_edge_litert.interpreter", "Interpreter"),
            ("tflite-runtime", "tflite_runtime.interpreter", "Interpreter"))
MODELS_DIR = Path(__file__).resolve().parent


class ModelError(Exception):
    """A model cannot be loaded or run; the message says which and why."""


def model_path(name: str) -> Path:
    """The shipped ``.tflite`` of a model by name (``fall``, ``fire``)."""
    return MODELS_DIR / f"{name}.tflite"


def available_runtimes() -> list[str]:
    """The TFLite runtimes importable here, in preference order."""
    out = []
    for name, module, _attr in RUNTIMES:
        try:
            importlib.import_module(module)
        except Exception:  # a broken install is as good as none
            continue
        out.append(name)
    return out


def _interpreter_class(prefer: str | None) -> tuple[str, Any]:
    prefer = prefer or os.environ.get("CITYNODE_TFLITE_RUNTIME") or None
    order = [r for r in RUNTIMES if prefer is None or r[0] == prefer]
    if not order:
        raise ModelError(f"unknown TFLite runtime {prefer!r} (have: "
                         f"{', '.join(r[0] for r in RUNTIMES)})")
    errors = []
    for name, module, attr in order:
        try:
            return name, getattr(importlib.import_module(module), attr)
        except Exception as exc:  # ImportError, or numpy ABI errors
            errors.append(f"{name}: {exc}")
    raise ModelError("no TFLite runtime: install ai-edge-litert (pip install "
                     "'citynode[tflite]') or tflite-runtime; " + "; ".join(errors))


@dataclass(frozen=True)
class ModelMeta:
    """What a model expects, from its JSON file."""

    name: str
    version: str
    task: str
    sample_rate_hz: float
    window: int
    features: tuple[str, ...]
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float
    thresholds: dict[str, Any] = field(default_factory=dict)
    trained: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, source: str = "<metadata>") -> ModelMeta:
        def need(key: str, kind: type | tuple[type, ...]) -> Any:
            if not isinstance(d, dict) or key not in d:
                raise ModelError(f"{source}: metadata has no {key!r}")
            v = d[key]
            if not isinstance(v, kind) or isinstance(v, bool):
                raise ModelError(f"{source}: metadata {key!r} has the wrong type")
            return v

        name, version, task = need("name", str), need("version", str), need("task", str)
        rate = float(need("sample_rate_hz", (int, float)))
        window = need("window", int)
        features = tuple(need("features", list))
        shape = tuple(need("input_shape", list))
        scale = need("scale", dict)
        mean, std = tuple(scale.get("mean", ())), tuple(scale.get("std", ()))
        threshold = float(need("threshold", (int, float)))
        if not all(isinstance(f, str) and f for f in features) or not features:
            raise ModelError(f"{source}: features must be a non-empty list of names")
        if not all(isinstance(n, int) and n > 0 for n in shape) or not shape:
            raise ModelError(f"{source}: input_shape must be positive integers")
        if shape[-1] != len(features):
            raise ModelError(f"{source}: input_shape {list(shape)} does not end with the "
                             f"{len(features)} features")
        if len(mean) != len(features) or len(std) != len(features):
            raise ModelError(f"{source}: scale.mean and scale.std need one value per feature")
        if not all(isinstance(s, (int, float)) and s > 0 and math.isfinite(s) for s in std):
            raise ModelError(f"{source}: scale.std must be positive numbers")
        if not rate > 0 or window <= 0 or not 0.0 < threshold < 1.0:
            raise ModelError(f"{source}: sample_rate_hz, window and threshold (0..1) are "
                             "out of range")
        return cls(name, version, task, rate, window, features, shape,
                   tuple(float(x) for x in mean), tuple(float(x) for x in std), threshold,
                   dict(d.get("thresholds", {})), dict(d.get("trained", {})))


class Model:
    """A loaded model: :meth:`predict` takes features in physical units, returns 0..1."""

    def __init__(self, meta: ModelMeta, interpreter: Any, runtime: str, path: Path) -> None:
        import numpy as np

        self._np = np
        self.meta = meta
        self.runtime = runtime
        self.path = path
        self._it = interpreter
        inp = interpreter.get_input_details()
        out = interpreter.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelError(f"{path}: expected one input and one output tensor")
        self._in, self._out = inp[0], out[0]
        shape = tuple(int(n) for n in self._in["shape"][1:])
        if shape != meta.input_shape:
            raise ModelError(f"{path}: the model's input is {list(shape)}, its metadata says "
                             f"{list(meta.input_shape)}")
        self._in_q = self._in.get("quantization", (0.0, 0))
        self._out_q = self._out.get("quantization", (0.0, 0))
        self._mean = np.asarray(meta.mean, dtype=np.float32)
        self._std = np.asarray(meta.std, dtype=np.float32)
        self.inferences = 0
        self.last_latency_s = 0.0

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, runtime: str | None = None,
             expect_task: str | None = None) -> Model:
        """Load ``path`` and its ``.json`` metadata; :class:`ModelError` says what is wrong."""
        p = Path(path)
        meta_path = p.with_suffix(".json")
        try:
            raw = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{meta_path}: metadata file missing (every model ships with "
                             "one)") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"{meta_path}: unreadable metadata: {exc}") from None
        meta = ModelMeta.from_dict(raw, str(meta_path))
        if expect_task is not None and meta.task != expect_task:
            raise ModelError(f"{p}: a {meta.task!r} model where a {expect_task!r} model is "
                             "expected")
        if not p.is_file():
            raise ModelError(f"{p}: model file missing")
        name, interp_cls = _interpreter_class(runtime)
        try:
            it = interp_cls(model_path=str(p), num_threads=1)
            it.allocate_tensors()
        except Exception as exc:  # the runtimes raise ValueError or RuntimeError
            raise ModelError(f"{p}: {name} cannot load it: {exc}") from None
        return cls(meta, it, name, p)

    def predict(self, x: Any) -> float:
        """One inference on features shaped ``meta.input_shape`` (physical units)."""
        np = self._np
        a = np.asarray(x, dtype=np.float32)
        if a.shape != self.meta.input_shape:
            raise ModelError(f"{self.meta.name}: input shape {list(a.shape)}, expected "
                             f"{list(self.meta.input_shape)}")
        if not np.all(np.isfinite(a)):
            raise ModelError(f"{self.meta.name}: input has NaN or infinite values")
        a = (a - self._mean) / self._std
        dtype = self._in["dtype"]
        scale, zero = self._in_q
        if dtype in (np.int8, np.uint8) and scale:
            info = np.iinfo(dtype)
            a = np.clip(np.round(a / scale + zero), info.min, info.max).astype(dtype)
        else:
            a = a.astype(dtype)
        t0 = time.perf_counter()
        try:
            self._it.set_tensor(self._in["index"], a[None, ...])
            self._it.invoke()
            y = self._it.get_tensor(self._out["index"]).reshape(-1)[0]
        except Exception as exc:
            raise ModelError(f"{self.meta.name}: inference failed: {exc}") from None
        self.last_latency_s = time.perf_counter() - t0
        self.inferences += 1
        oscale, ozero = self._out_q
        v = (float(y) - ozero) * oscale if oscale else float(y)
        if not math.isfinite(v):
            raise ModelError(f"{self.meta.name}: output is not a number")
        return min(1.0, max(0.0, v))

    def describe(self) -> dict[str, Any]:
        """For status and health reports."""
        return {"name": self.meta.name, "version": self.meta.version, "runtime": self.runtime,
                "bytes": self.path.stat().st_size if self.path.exists() else None}
