"""One TFLite runtime for every model: ``ai-edge-litert`` first, ``tflite-runtime`` after.

``ai-edge-litert`` is reached through its C library (:mod:`agent.models.litert_c`, no
numpy: the daemon's memory budget), or through its Python interpreter where that C API
is not one we checked; ``CITYNODE_TFLITE_RUNTIME`` (``ai-edge-litert``,
``ai-edge-litert-python``, ``tflite-runtime``) forces one. Scaling and int8
quantization are done here in single precision, identically for every runtime.

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
import logging
import math
import os
import struct
import sys
import threading
import time
from array import array
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import add, sub, truediv
from pathlib import Path
from typing import Any, Protocol

from agent.models.errors import ModelError

__all__ = ["RUNTIMES", "Model", "ModelError", "ModelMeta", "available_runtimes",
           "model_path"]

# (name, module, attribute): tried in this order unless CITYNODE_TFLITE_RUNTIME names one.
# "ai-edge-litert" is the package's C library through ctypes (no numpy: the daemon's
# memory budget); "ai-edge-litert-python" is the same package's Python Interpreter, used
# when its C API is not one agent/models/litert_c.py was checked against.
RUNTIMES = (("ai-edge-litert", "agent.models.litert_c", "CModel"),
            ("ai-edge-litert-python", "ai_edge_litert.interpreter", "Interpreter"),
            ("tflite-runtime", "tflite_runtime.interpreter", "Interpreter"))
MODELS_DIR = Path(__file__).resolve().parent
log = logging.getLogger("citynode.models")


def model_path(name: str, prefix: str | None = None) -> Path:
    """The ``.tflite`` of a model by name (``fall``: the only one since 2026.12): the one
    a models-only update brought (docs/updates.md: ``models/`` in the release folder the
    daemon runs from, ``/opt/citynode/current``), else the one shipped in the package."""
    release = Path(prefix if prefix is not None else sys.prefix).parent  # not resolved:
    updated = release / "models" / f"{name}.tflite"  # current/venv -> current/models
    if (release / "MANIFEST.json").is_file() and updated.is_file():
        return updated
    return MODELS_DIR / f"{name}.tflite"


def _usable(module: str) -> Any:
    """Import ``module``; for the C backend, also bind its library (raises if unusable)."""
    mod = importlib.import_module(module)
    if hasattr(mod, "load_library"):
        mod.load_library()
    return mod


def available_runtimes() -> list[str]:
    """The TFLite runtimes usable here, in preference order."""
    out = []
    for name, module, _attr in RUNTIMES:
        try:
            _usable(module)
        except Exception:  # a broken install is as good as none
            continue
        out.append(name)
    return out


def _open(path: Path, prefer: str | None) -> tuple[str, _Backend]:
    """The first runtime that loads ``path``: its name and a backend around it.

    When a runtime is importable but cannot load the model (the C path inside a sandbox
    that hides /proc/cpuinfo, say), the next one is tried: a working model at a higher
    memory cost beats none. The reason is logged; if no runtime loads the model, every
    runtime's reason is in the :class:`ModelError`."""
    prefer = prefer or os.environ.get("CITYNODE_TFLITE_RUNTIME") or None
    order = [r for r in RUNTIMES if prefer is None or r[0] == prefer]
    if not order:
        raise ModelError(f"unknown TFLite runtime {prefer!r} (have: "
                         f"{', '.join(r[0] for r in RUNTIMES)})")
    missing: list[str] = []
    failed: list[str] = []
    for name, module, attr in order:
        try:
            cls = getattr(_usable(module), attr)
        except Exception as exc:  # ImportError, numpy ABI errors, an untested C API
            missing.append(f"{name}: {exc}")
            continue
        try:
            if attr == "CModel":
                backend: _Backend = _CBackend(cls(str(path)))
            else:
                it = cls(model_path=str(path), num_threads=1)
                it.allocate_tensors()
                backend = _PyBackend(it)
        except Exception as exc:  # ModelError, or ValueError/RuntimeError from the bindings
            failed.append(f"{name} cannot load it: {exc}")
            continue
        if failed:
            log.warning("%s: loaded with %s after: %s", path, name, "; ".join(failed))
        return name, backend
    if failed:
        raise ModelError(f"{path}: " + "; ".join(failed))
    raise ModelError("no TFLite runtime: install ai-edge-litert (pip install "
                     "'citynode[tflite]') or tflite-runtime; " + "; ".join(missing))


class _Backend(Protocol):
    """What :class:`Model` needs from a runtime: shapes, quantization, one inference."""

    shape: tuple[int, ...]          # input without the batch axis
    dtype: str                      # "int8", "uint8" or "float32"
    out_dtype: str
    in_q: tuple[float, int]         # (scale, zero point); scale 0 = not quantized
    out_q: tuple[float, int]

    def invoke(self, values: array) -> float:
        """Run on the packed input values (``array`` of the input type); first output."""
        ...


class _CBackend:
    def __init__(self, m: Any) -> None:
        self.m = m
        self.shape = tuple(m.input.shape[1:])
        self.dtype, self.out_dtype = m.input.dtype, m.output.dtype
        self.in_q = (m.input.scale, m.input.zero)
        self.out_q = (m.output.scale, m.output.zero)
        self._out_code = m.output.code

    def invoke(self, values: array) -> float:
        return float(struct.unpack_from(self._out_code, self.m.run(values.tobytes()))[0])


class _PyBackend:
    def __init__(self, it: Any) -> None:
        import numpy as np  # only this fallback path needs numpy

        self._np = np
        self.it = it
        inp, out = it.get_input_details(), it.get_output_details()
        if len(inp) != 1 or len(out) != 1:
            raise ModelError("expected one input and one output tensor")
        self._in, self._out = inp[0], out[0]
        self.shape = tuple(int(n) for n in self._in["shape"][1:])
        self.dtype = np.dtype(self._in["dtype"]).name
        self.out_dtype = np.dtype(self._out["dtype"]).name
        self.in_q = tuple(self._in.get("quantization", (0.0, 0)))  # type: ignore[assignment]
        self.out_q = tuple(self._out.get("quantization", (0.0, 0)))  # type: ignore[assignment]

    def invoke(self, values: array) -> float:
        np = self._np
        a = np.frombuffer(values.tobytes(), dtype=self.dtype).reshape((1, *self.shape))
        self.it.set_tensor(self._in["index"], a)
        self.it.invoke()
        return float(self.it.get_tensor(self._out["index"]).reshape(-1)[0])


_TYPECODE = {"int8": "b", "uint8": "B", "float32": "f"}
_LIMITS = {"int8": (-128, 127), "uint8": (0, 255)}


def _flatten(x: Any, shape: tuple[int, ...], name: str) -> array:
    """Nested sequences (or anything with ``tolist``) to flat float32, shape checked."""
    if hasattr(x, "tolist"):
        x = x.tolist()
    rows = [x]
    for depth, n in enumerate(shape):
        for r in rows:
            if not isinstance(r, (list, tuple)) or len(r) != n:
                got = len(r) if isinstance(r, (list, tuple)) else "a number"
                raise ModelError(f"{name}: input shape is not {list(shape)} ({got} where "
                                 f"{n} values are expected at depth {depth})")
        rows = list(chain.from_iterable(rows))
    try:
        return array("f", rows)
    except TypeError:
        raise ModelError(f"{name}: input values must be numbers (shape "
                         f"{list(shape)})") from None


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

    def __init__(self, meta: ModelMeta, backend: _Backend, runtime: str, path: Path) -> None:
        self.meta = meta
        self.runtime = runtime
        self.path = path
        self._b = backend
        self.input_dtype, self.output_dtype = backend.dtype, backend.out_dtype
        if backend.shape != meta.input_shape:
            raise ModelError(f"{path}: the model's input is {list(backend.shape)}, its "
                             f"metadata says {list(meta.input_shape)}")
        if backend.dtype not in _TYPECODE:
            raise ModelError(f"{path}: input type {backend.dtype}; int8, uint8 or float32 "
                             "expected")
        # float32 like the runtimes: (x - mean) / std and the quantization are done in
        # single precision, so every runtime sees the same integers.
        reps = math.prod(meta.input_shape) // len(meta.features)
        self._mean = array("f", meta.mean) * reps   # one per input value
        self._std = array("f", meta.std) * reps
        self.inferences = 0
        self.last_latency_s = 0.0
        self._lock = threading.Lock()

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
        name, backend = _open(p, runtime)
        return cls(meta, backend, name, p)

    def quantize(self, x: Any) -> array:
        """The model's input for ``x`` (physical units): scaled, quantized, packed.

        Single precision throughout, step by step as numpy would do it in float32, so
        the integers are the ones training and every runtime produce."""
        name = self.meta.name
        a = _flatten(x, self.meta.input_shape, name)
        if not all(map(math.isfinite, a)):
            raise ModelError(f"{name}: input has NaN or infinite values")
        a = array("f", map(sub, a, self._mean))
        a = array("f", map(truediv, a, self._std))
        dtype = self._b.dtype
        scale, zero = self._b.in_q
        if dtype in _LIMITS and scale:
            lo, hi = _LIMITS[dtype]
            a = array("f", map(truediv, a, repeat(scale)))
            a = array("f", map(add, a, repeat(zero)))
            return array(_TYPECODE[dtype], map(min, repeat(hi), map(max, repeat(lo),
                                                                   map(round, a))))
        return array(_TYPECODE[dtype], a)

    def predict(self, x: Any) -> float:
        """One inference on features shaped ``meta.input_shape`` (physical units)."""
        packed = self.quantize(x)
        with self._lock:  # one model is shared by several sensors' threads
            t0 = time.perf_counter()
            try:
                y = self._b.invoke(packed)
            except Exception as exc:
                raise ModelError(f"{self.meta.name}: inference failed: {exc}") from None
            self.last_latency_s = time.perf_counter() - t0
            self.inferences += 1
        oscale, ozero = self._b.out_q
        v = (y - ozero) * oscale if oscale else y
        if not math.isfinite(v):
            raise ModelError(f"{self.meta.name}: output is not a number")
        return min(1.0, max(0.0, v))

    def describe(self) -> dict[str, Any]:
        """For status and health reports."""
        return {"name": self.meta.name, "version": self.meta.version, "runtime": self.runtime,
                "bytes": self.path.stat().st_size if self.path.exists() else None}
