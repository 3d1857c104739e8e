"""ai-edge-litert through its C library, without numpy or the Python bindings.

Why: the package's Python ``Interpreter`` needs numpy and a pybind module; together they
cost 25 MiB with both models loaded, against 7.5 MiB through the C library (``make bench``).
Our models are tiny (one input, one output, int8), so the daemon talks to
``libLiteRt.so`` from the same wheel with :mod:`ctypes` and moves bytes in and out.

The LiteRT C API is young and has changed between releases (for example the
environment became the first argument of ``LiteRtCreateModelFromFile``), so this
backend is used only for the releases it was checked against (:data:`TESTED`);
anything else, or any failure to bind, falls back to the Python ``Interpreter``
(:mod:`agent.models.runtime` decides). The library's own log lines are captured
while a model is loaded: an ``ERROR`` line becomes part of the :class:`ModelError`.
"""

from __future__ import annotations

import ctypes as C
import math
import os
import struct
import threading
from importlib.util import find_spec
from pathlib import Path

from agent.models.errors import ModelError

__all__ = ["TESTED", "CModel", "load_library", "version"]

# ai-edge-litert releases whose C API this module was checked against (major, minor).
TESTED = ((2, 3),)
_HW_CPU = 1                 # kLiteRtHwAcceleratorCpu (XNNPACK)
_TAG_AUTO_REGISTER = 24     # kLiteRtEnvOptionTagAutoRegisterAccelerators
_TAG_MIN_LOG_SEVERITY = 25  # kLiteRtEnvOptionTagMinLoggerSeverity
_LOG_ERROR = 3
_ALIGN = 64                 # LITERT_HOST_MEMORY_BUFFER_ALIGNMENT
_RANKED_TYPE_BYTES = 128    # LiteRtRankedTensorType is 48-56 bytes; kept opaque
# LiteRtElementType values (the TfLiteType numbering): name, struct code, bytes
_ELEMENT = {1: ("float32", "f", 4), 3: ("uint8", "B", 1), 9: ("int8", "b", 1)}
_P = C.c_void_p

_lock = threading.Lock()
_lib: C.CDLL | None = None
_env: C.c_void_p | None = None


def _package_dir() -> Path | None:
    """ai_edge_litert's folder, found without importing it (that would load numpy)."""
    spec = find_spec("ai_edge_litert")
    return Path(spec.origin).resolve().parent if spec is not None and spec.origin else None


def version() -> tuple[int, ...] | None:
    """The installed ai-edge-litert release, from its dist-info folder's name.

    (Not importlib.metadata: it imports the email package, which the daemon avoids.)"""
    pkg = _package_dir()
    if pkg is None:
        return None
    for d in pkg.parent.glob("ai_edge_litert-*.dist-info"):
        try:
            return tuple(int(x) for x in d.name.split("-")[1].split(".")[:3])
        except ValueError:
            return None
    return None


def load_library() -> C.CDLL:
    """``libLiteRt.so`` of the installed ai-edge-litert; ModelError when unusable."""
    global _lib
    with _lock:
        if _lib is not None:
            return _lib
        v = version()
        if v is None:
            raise ModelError("ai-edge-litert is not installed")
        if tuple(v[:2]) not in TESTED:
            raise ModelError(f"ai-edge-litert {'.'.join(map(str, v))}: its C API is not one "
                             f"this node was checked against ({TESTED})")
        path = _package_dir() / "libLiteRt.so"  # type: ignore[operator]
        try:
            lib = C.CDLL(str(path))
        except OSError as exc:
            raise ModelError(f"{path}: {exc}") from None
        for name, args in _SIGNATURES.items():
            fn = getattr(lib, name, None)
            if fn is None:
                raise ModelError(f"{path}: has no {name}")
            fn.argtypes = args
            fn.restype = C.c_int
        lib.LiteRtDestroyCompiledModel.restype = None
        lib.LiteRtDestroyModel.restype = None
        lib.LiteRtDestroyOptions.restype = None
        lib.LiteRtDestroyTensorBuffer.restype = None
        _lib = lib
        return lib


_PP = C.POINTER(_P)
_SZ = C.c_size_t
_SIGNATURES: dict[str, list] = {
    "LiteRtCreateEnvironment": [C.c_int, _P, _PP],
    "LiteRtCreateModelFromFile": [_P, C.c_char_p, _PP],
    "LiteRtDestroyModel": [_P],
    "LiteRtGetNumModelSignatures": [_P, C.POINTER(_SZ)],
    "LiteRtGetModelSignature": [_P, _SZ, _PP],
    "LiteRtGetNumSignatureInputs": [_P, C.POINTER(_SZ)],
    "LiteRtGetNumSignatureOutputs": [_P, C.POINTER(_SZ)],
    "LiteRtGetSignatureInputTensorByIndex": [_P, _SZ, _PP],
    "LiteRtGetSignatureOutputTensorByIndex": [_P, _SZ, _PP],
    "LiteRtGetRankedTensorType": [_P, _P],
    "LiteRtGetQuantizationTypeId": [_P, C.POINTER(C.c_int)],
    "LiteRtGetPerTensorQuantization": [_P, _P],
    "LiteRtCreateOptions": [_PP],
    "LiteRtDestroyOptions": [_P],
    "LiteRtSetOptionsHardwareAccelerators": [_P, C.c_int],
    "LiteRtCreateCompiledModel": [_P, _P, _P, _PP],
    "LiteRtDestroyCompiledModel": [_P],
    "LiteRtCreateTensorBufferFromHostMemory": [_P, _P, _SZ, _P, _PP],
    "LiteRtDestroyTensorBuffer": [_P],
    "LiteRtRunCompiledModel": [_P, _SZ, _SZ, _PP, _SZ, _PP],
}


# line prefixes of what LiteRT, XNNPACK and cpuinfo write to stderr
_OURS = ("INFO: ", "WARNING: ", "ERROR: ", "Error in cpuinfo", "Warning in cpuinfo")


class _Captured:
    """Collects what the library writes to stderr while a model loads."""

    def __enter__(self) -> _Captured:
        self.text = ""
        try:  # memory-backed: works under ProtectSystem=strict without a writable /tmp
            self._fd = os.memfd_create("litert-log", os.MFD_CLOEXEC)
        except (AttributeError, OSError):
            import tempfile

            with tempfile.TemporaryFile() as fh:
                self._fd = os.dup(fh.fileno())
        self._saved = os.dup(2)
        os.dup2(self._fd, 2)
        return self

    def __exit__(self, *exc: object) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        os.lseek(self._fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self._fd, 65536):
            chunks.append(chunk)
        os.close(self._fd)
        self.text = b"".join(chunks).decode(errors="replace")
        foreign = [ln for ln in self.text.splitlines() if ln and not ln.startswith(_OURS)]
        if foreign:  # another thread's output: give it back
            os.write(2, ("\n".join(foreign) + "\n").encode())

    def errors(self) -> str:
        """The library's error lines (LiteRT's own, and cpuinfo's when it cannot read
        /proc/cpuinfo or /sys: then XNNPACK refuses to compile)."""
        return "; ".join(ln.removeprefix("ERROR: ").strip() for ln in self.text.splitlines()
                         if ln.startswith(("ERROR: ", "Error in cpuinfo")))


class _Tensor:
    """Element type, shape and per-tensor quantization of one model tensor."""

    def __init__(self, lib: C.CDLL, handle: C.c_void_p, what: str) -> None:
        self.ranked = C.create_string_buffer(_RANKED_TYPE_BYTES)
        _check(lib.LiteRtGetRankedTensorType(handle, self.ranked), f"{what} tensor type")
        etype, rank = struct.unpack_from("<iI", self.ranked.raw, 0)
        rank &= 0x7F  # older releases pack has_strides into the same word
        if not 0 < rank <= 8:
            raise ModelError(f"{what} tensor has rank {rank}")
        dims = list(struct.unpack_from(f"<{rank}i", self.ranked.raw, 8))
        if dims[0] < 0:  # a dynamic batch: we always run one
            dims[0] = 1
            struct.pack_into("<i", self.ranked, 8, 1)
        if any(d <= 0 for d in dims):
            raise ModelError(f"{what} tensor has a dynamic shape {dims}")
        if etype not in _ELEMENT:
            raise ModelError(f"{what} tensor has element type {etype}; int8, uint8 or "
                             "float32 expected")
        self.dtype, self.code, size = _ELEMENT[etype]
        self.shape = tuple(dims)
        self.nbytes = math.prod(dims) * size
        qtype = C.c_int()
        _check(lib.LiteRtGetQuantizationTypeId(handle, C.byref(qtype)), f"{what} quantization")
        self.scale, self.zero = 0.0, 0
        if qtype.value == 1:  # kLiteRtQuantizationPerTensor {float scale; int64 zero_point}
            q = C.create_string_buffer(16)
            _check(lib.LiteRtGetPerTensorQuantization(handle, q), f"{what} quantization")
            self.scale, self.zero = struct.unpack_from("<f4xq", q.raw, 0)
        elif qtype.value != 0:
            raise ModelError(f"{what} tensor is quantized per channel (type {qtype.value})")
        raw = C.create_string_buffer(self.nbytes + _ALIGN)
        self._raw = raw  # keeps the memory alive
        self.addr = C.addressof(raw) + (-C.addressof(raw)) % _ALIGN


def _env_options() -> C.Array[C.c_char]:
    """LiteRtEnvOption[] (24 bytes each: tag, then LiteRtAny {type, 8-byte value}).

    Only the CPU accelerator is registered: by default the environment also tries to load
    GPU and NPU accelerators, which a Pi does not have: about 4 MiB in a fresh
    process, measured once. Only errors are logged."""
    any_int = 2  # kLiteRtAnyTypeInt
    return C.create_string_buffer(
        struct.pack("<iiiiq", _TAG_AUTO_REGISTER, 0, any_int, 0, _HW_CPU)
        + struct.pack("<iiiiq", _TAG_MIN_LOG_SEVERITY, 0, any_int, 0, _LOG_ERROR))


def _check(status: int, what: str) -> None:
    if status != 0:
        raise ModelError(f"LiteRT {what} failed (status {status})")


class CModel:
    """One ``.tflite`` compiled for the CPU; :meth:`run` takes and returns raw bytes."""

    def __init__(self, path: str) -> None:
        global _env
        lib = self._lib = load_library()
        self._model = _P()
        self._cm = _P()
        self._buffers: list[C.c_void_p] = []
        cap = _Captured()
        try:
            with cap:
                with _lock:
                    if _env is None:
                        env = _P()
                        opts = _env_options()
                        _check(lib.LiteRtCreateEnvironment(len(opts) // 24, opts,
                                                           C.byref(env)), "environment")
                        _env = env
                _check(lib.LiteRtCreateModelFromFile(_env, os.fsencode(path),
                                                     C.byref(self._model)), "model load")
                self._bind(lib)
        except ModelError as exc:
            self.close()
            detail = cap.errors()
            raise ModelError(f"{exc}{': ' + detail if detail else ''}") from None

    def _bind(self, lib: C.CDLL) -> None:
        n, sig = _SZ(), _P()
        _check(lib.LiteRtGetNumModelSignatures(self._model, C.byref(n)), "signatures")
        if n.value < 1:
            raise ModelError("the model has no signature")
        _check(lib.LiteRtGetModelSignature(self._model, 0, C.byref(sig)), "signature")
        ni, no = _SZ(), _SZ()
        _check(lib.LiteRtGetNumSignatureInputs(sig, C.byref(ni)), "inputs")
        _check(lib.LiteRtGetNumSignatureOutputs(sig, C.byref(no)), "outputs")
        if ni.value != 1 or no.value != 1:
            raise ModelError("expected one input and one output tensor")
        tin, tout = _P(), _P()
        _check(lib.LiteRtGetSignatureInputTensorByIndex(sig, 0, C.byref(tin)), "input")
        _check(lib.LiteRtGetSignatureOutputTensorByIndex(sig, 0, C.byref(tout)), "output")
        self.input = _Tensor(lib, tin, "input")
        self.output = _Tensor(lib, tout, "output")
        opts = _P()
        _check(lib.LiteRtCreateOptions(C.byref(opts)), "options")
        try:
            _check(lib.LiteRtSetOptionsHardwareAccelerators(opts, _HW_CPU), "options")
            _check(lib.LiteRtCreateCompiledModel(_env, self._model, opts, C.byref(self._cm)),
                   "compilation")
        finally:
            lib.LiteRtDestroyOptions(opts)
        for t in (self.input, self.output):
            b = _P()
            _check(lib.LiteRtCreateTensorBufferFromHostMemory(
                C.addressof(t.ranked), t.addr, t.nbytes, None, C.byref(b)), "tensor buffer")
            self._buffers.append(b)
        self._ins = (_P * 1)(self._buffers[0])
        self._outs = (_P * 1)(self._buffers[1])

    def run(self, data: bytes) -> bytes:
        """One inference: ``data`` is the packed input, the packed output comes back."""
        if len(data) != self.input.nbytes:
            raise ModelError(f"input is {len(data)} bytes, the model takes {self.input.nbytes}")
        C.memmove(self.input.addr, data, len(data))
        _check(self._lib.LiteRtRunCompiledModel(self._cm, 0, 1, self._ins, 1, self._outs),
               "inference")
        return C.string_at(self.output.addr, self.output.nbytes)

    def close(self) -> None:
        """Free the native objects (the shared environment stays)."""
        lib = self._lib
        for b in self._buffers:
            lib.LiteRtDestroyTensorBuffer(b)
        self._buffers = []
        if self._cm:
            lib.LiteRtDestroyCompiledModel(self._cm)
            self._cm = _P()
        if self._model:
            lib.LiteRtDestroyModel(self._model)
            self._model = _P()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone already
            return
