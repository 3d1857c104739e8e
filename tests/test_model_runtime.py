"""The model runtime: metadata checked against the tensors, int8 in and out, clear errors."""

from __future__ import annotations

import json
import shutil
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
    module = dict((n, m) for n, m, _ in runtime.RUNTIMES)[have]
    monkeypatch.setattr(runtime, "RUNTIMES", (("broken", "no_such_module_x", "I"),
                                              (have, module, "Interpreter")))
    assert Model.load(TINY).runtime == have


def test_meta_from_dict_round_trip() -> None:
    meta = ModelMeta.from_dict(json.loads((DATA / "tiny.json").read_text()))
    assert meta.features == ("a", "b", "c", "d") and meta.threshold == 0.5
