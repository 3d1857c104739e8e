"""The model runtime: metadata checked against the tensors, int8 in and out, clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.models import runtime
from agent.models.runtime import Model, ModelError, ModelMeta

np = pytest.importorskip("numpy")
DATA = Path(__file__).resolve().parent / "data"
TINY = DATA / "tiny.tflite"

needs_runtime = pytest.mark.skipif(not runtime.available_runtimes(),
                                   reason="no TFLite runtime installed (pip install "
                                   "'citynode[tflite]')")


def copy_model(tmp_path: Path, **meta_changes) -> Path:
    p = tmp_path / "m.tflite"
    shutil.copy(TINY, p)
    meta = json.loads((DATA / "tiny.json").read_text())
    for k, v in meta_changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    p.with_suffix(".json").write_text(json.dumps(meta))
    return p


@needs_runtime
def test_tiny_model_predicts_through_int8() -> None:
    m = Model.load(TINY)
    assert m.runtime == runtime.available_runtimes()[0]
    assert m.meta.name == "tiny" and m.meta.input_shape == (4,)
    hi = m.predict([2.0, 2.0, 0.0, 0.0])
    lo = m.predict([-2.0, -2.0, 0.0, 0.0])
    assert 0.0 <= lo < 0.5 < hi <= 1.0  # learned a + b > 0, through int8 quantisation
    assert m.inferences == 2 and m.last_latency_s > 0
    assert m.describe()["version"] == "test-1"


@needs_runtime
def test_input_checks() -> None:
    m = Model.load(TINY)
    with pytest.raises(ModelError, match="input shape"):
        m.predict([1.0, 2.0])
    with pytest.raises(ModelError, match="NaN"):
        m.predict([float("nan"), 0, 0, 0])


@needs_runtime
def test_metadata_must_match_the_model(tmp_path: Path) -> None:
    p = copy_model(tmp_path, input_shape=[5], features=["a", "b", "c", "d", "e"],
                   scale={"mean": [0] * 5, "std": [1] * 5})
    with pytest.raises(ModelError, match=r"the model's input is \[4\], its metadata says \[5\]"):
        Model.load(p)
    with pytest.raises(ModelError, match="a 'test' model where a 'fall' model"):
        Model.load(TINY, expect_task="fall")


@pytest.mark.parametrize("changes, msg", [
    ({"threshold": None}, "no 'threshold'"),
    ({"threshold": 1.5}, "out of range"),
    ({"features": []}, "non-empty"),
    ({"scale": {"mean": [0], "std": [1]}}, "one value per feature"),
    ({"scale": {"mean": [0] * 4, "std": [1, 1, 0, 1]}}, "positive"),
    ({"window": "100"}, "wrong type"),
    ({"input_shape": [3]}, "does not end with the 4 features"),
])
def test_bad_metadata_is_refused_with_the_reason(tmp_path: Path, changes, msg) -> None:
    p = copy_model(tmp_path, **changes)
    with pytest.raises(ModelError, match=msg):
        Model.load(p)


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="metadata file missing"):
        Model.load(tmp_path / "none.tflite")
    p = copy_model(tmp_path)
    p.with_suffix(".json").write_text("{not json")
    with pytest.raises(ModelError, match="unreadable metadata"):
        Model.load(p)


@needs_runtime
def test_corrupt_model_file(tmp_path: Path) -> None:
    p = copy_model(tmp_path)
    p.write_bytes(b"this is not a flatbuffer" * 10)
    with pytest.raises(ModelError, match="cannot load it"):
        Model.load(p)


def test_no_runtime_is_a_clear_error(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(runtime, "RUNTIMES", (("nothing-here", "no_such_module_x", "I"),))
    with pytest.raises(ModelError, match="no TFLite runtime"):
        Model.load(copy_model(tmp_path))
    with pytest.raises(ModelError, match="unknown TFLite runtime"):
        Model.load(copy_model(tmp_path), runtime="ai-edge-litert")


@needs_runtime
def test_falls_back_to_the_second_runtime(monkeypatch) -> None:
    """ai-edge-litert missing: the next runtime in the list is used."""
    have = runtime.available_runtimes()[0]
    entry = next(r for r in runtime.RUNTIMES if r[0] == have)
    monkeypatch.setattr(runtime, "RUNTIMES", (("broken", "no_such_module_x", "I"), entry))
    assert Model.load(TINY).runtime == have


def test_meta_from_dict_round_trip() -> None:
    meta = ModelMeta.from_dict(json.loads((DATA / "tiny.json").read_text()))
    assert meta.features == ("a", "b", "c", "d") and meta.threshold == 0.5


# -- the C backend (ai-edge-litert's libLiteRt.so through ctypes) ---------------------------

needs_c = pytest.mark.skipif("ai-edge-litert" not in runtime.available_runtimes(),
                             reason="ai-edge-litert's C API is not usable here")
needs_py = pytest.mark.skipif("ai-edge-litert-python" not in runtime.available_runtimes(),
                              reason="ai-edge-litert's Python interpreter is not usable here")
SHIPPED = [runtime.model_path("fall"), TINY]  # fire detection has no model since 2026.12


@needs_c
@needs_py
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_c_api_and_python_interpreter_agree(path: Path) -> None:
    """Same int8 input bytes and same output on random inputs, through both bindings."""
    c = Model.load(path, runtime="ai-edge-litert")
    py = Model.load(path, runtime="ai-edge-litert-python")
    assert c.runtime == "ai-edge-litert" and py.runtime == "ai-edge-litert-python"
    rng = np.random.default_rng(7)
    mean, std = np.array(c.meta.mean), np.array(c.meta.std)
    outs = set()
    for _ in range(200):
        x = (mean + std * 2 * rng.standard_normal(c.meta.input_shape)).astype(np.float32)
        # the reference quantization, done by numpy as the Python runtimes expect it
        scale, zero = c._b.in_q
        ref = np.clip(np.round((x - mean.astype(np.float32)) / std.astype(np.float32)
                               / scale + zero), -128, 127).astype(np.int8)
        assert c.quantize(x).tobytes() == ref.tobytes()
        pc, pp = c.predict(x), py.predict(x.tolist())
        assert pc == pp
        outs.add(pc)
    assert len(outs) > 1 or path == runtime.model_path("fall")  # not a constant output


def test_loading_through_the_c_api_imports_no_numpy() -> None:
    code = ("import sys\nfrom agent.models.runtime import Model, model_path\n"
            "m = Model.load(model_path('fall'))\n"
            "print(m.runtime, 'numpy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=DATA.parent.parent, timeout=60)
    assert out.returncode == 0, out.stderr
    name, numpy_loaded = out.stdout.split()
    if name != "ai-edge-litert":
        pytest.skip(f"the C API is not usable here ({name} was used)")
    assert numpy_loaded == "False"
    assert "INFO:" not in out.stderr  # the library's chatter is captured at load


@needs_py
def test_an_untested_c_api_falls_back_to_the_python_interpreter(monkeypatch) -> None:
    from agent.models import litert_c

    monkeypatch.setattr(litert_c, "_lib", None)
    monkeypatch.setattr(litert_c, "TESTED", ((0, 1),))
    with pytest.raises(ModelError, match="not one this node was checked against"):
        litert_c.load_library()
    assert "ai-edge-litert" not in runtime.available_runtimes()
    assert Model.load(TINY).runtime == "ai-edge-litert-python"


@needs_c
def test_c_api_load_errors_carry_the_library_message(tmp_path: Path, capfd) -> None:
    p = copy_model(tmp_path)
    p.write_bytes(b"TFL3 not a flatbuffer at all" * 10)
    with pytest.raises(ModelError, match="ai-edge-litert cannot load it"):
        Model.load(p, runtime="ai-edge-litert")
    assert "INFO:" not in capfd.readouterr().err


@needs_c
def test_c_api_input_size_is_checked() -> None:
    from agent.models.litert_c import CModel

    m = CModel(str(TINY))
    assert m.input.shape == (1, 4) and m.input.dtype == "int8"
    with pytest.raises(ModelError, match="input is 3 bytes"):
        m.run(b"\0\0\0")
    assert len(m.run(b"\0" * 4)) == 1
    m.close()
    m.close()  # idempotent


@needs_runtime
def test_one_model_shared_by_several_threads() -> None:
    """The daemon shares one fall model between accelerometers (one thread each)."""
    import threading

    m = Model.load(TINY)
    xs = [[a / 10, b / 10, 0.0, 0.0] for a in range(-20, 21, 4) for b in range(-20, 21, 4)]
    want = [m.predict(x) for x in xs]
    got: list[list[float]] = [[] for _ in range(4)]

    def work(k: int) -> None:
        for _ in range(30):
            got[k] = [m.predict(x) for x in xs]
            if got[k] != want:
                return

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(g == want for g in got)
    assert m.inferences == len(xs) * (1 + 4 * 30)


@needs_c
@needs_py
def test_a_runtime_that_cannot_load_falls_through_to_the_next(monkeypatch, caplog) -> None:
    """Inside a sandbox that hides /proc/cpuinfo the C path cannot compile: the Python
    interpreter takes over (more memory, same answers), and the reason is logged."""
    from agent.models import litert_c

    def refuse(path: str) -> None:
        raise ModelError("LiteRT compilation failed (status 3)")

    monkeypatch.setattr(litert_c, "CModel", refuse)
    with caplog.at_level("WARNING", logger="citynode.models"):
        m = Model.load(TINY)
    assert m.runtime == "ai-edge-litert-python"
    assert "compilation failed" in caplog.text and "ai-edge-litert-python" in caplog.text
    with pytest.raises(ModelError, match="compilation failed"):
        Model.load(TINY, runtime="ai-edge-litert")


def test_the_unit_leaves_proc_cpuinfo_readable() -> None:
    """ProcSubset=pid hides /proc/cpuinfo, and XNNPACK then refuses every model."""
    unit = (DATA.parent.parent / "deploy" / "citynode.service").read_text()
    assert not [ln for ln in unit.splitlines() if ln.strip().startswith("ProcSubset=")]


@needs_runtime
def test_the_example_in_docs_models_md_runs() -> None:
    text = (DATA.parent.parent / "docs" / "models.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    out = subprocess.run([sys.executable, "-c", block], cwd=DATA.parent.parent,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    runtime_line, score_line = out.stdout.strip().splitlines()
    assert runtime_line.startswith(runtime.available_runtimes()[0] + " ")
    assert score_line.endswith(" True")  # an average window is no fall
