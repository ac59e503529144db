"""The code paths for models over protobuf's 2 GB limit, run on small models by lowering
``hwquant.engine.prepare.MAX_PROTOBUF``: saving with external data without touching the in-memory model,
checking and shape-inferring by path, sizes without serialising, and quantize end to end.

A real model over 2 GB is exercised by ``benchmarks/bench_large_model.py`` (minutes, 10 GB of memory).
"""

from __future__ import annotations

import modelzoo as mz
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

import hwquant
from hwquant.engine import calibrate as calibrate_module
from hwquant.engine import prepare as prep
from hwquant.errors import ModelError

LIMIT = 30_000  # bytes: the model below holds ~50 KB of weights


@pytest.fixture
def low_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(prep, "MAX_PROTOBUF", LIMIT)
    return LIMIT


def _model() -> onnx.ModelProto:
    return mz.transformer(layers=1, dim=32, hidden=128)


def _arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _saved_with_external_data(model: onnx.ModelProto, folder) -> str:
    path = folder / "float.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="float.onnx.data", size_threshold=0)
    return str(path)


def _run(path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)


def test_model_size_without_serialising_past_the_limit(low_limit):
    model = _model()
    exact = model.ByteSize()
    assert exact > low_limit and prep.exceeds_protobuf_limit(model)
    assert abs(prep.model_size(model) - exact) < 0.02 * exact  # weights from dims, the rest serialised
    small = mz.cnn(channels=2, size=8, classes=2)
    assert not prep.exceeds_protobuf_limit(small) and prep.model_size(small) == small.ByteSize()


def test_save_model_external_leaves_the_model_intact(low_limit, tmp_path):
    model = _model()
    before, serialized = _arrays(model), model.SerializeToString()
    path = tmp_path / "m.onnx"
    assert prep._write_external(model, path)  # hwquant's writer, not the fallback through a copy
    assert model.SerializeToString() == serialized  # onnx.save with external data would strip the weights
    data = path.with_name("m.onnx.data")
    assert data.is_file() and path.stat().st_size < 20_000
    reloaded = onnx.load(str(path))
    assert all(np.array_equal(before[k], v) for k, v in _arrays(reloaded).items())
    feed = mz.sample_inputs(model, 1)[0]
    ref = ort.InferenceSession(serialized, providers=["CPUExecutionProvider"]).run(None, feed)
    for a, b in zip(ref, _run(path, feed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_save_model_external_typed_fields(tmp_path):
    """Weights in float_data (not raw_data) are written as raw little-endian bytes."""
    arr = np.arange(600, dtype=np.float32).reshape(20, 30)
    tensor = onnx.helper.make_tensor("w", onnx.TensorProto.FLOAT, arr.shape, arr.ravel().tolist())
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 20])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 30])],
        [tensor],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 10
    prep.save_model(model, tmp_path / "t.onnx", external=True)
    shell = onnx.load(str(tmp_path / "t.onnx"), load_external_data=False)
    assert onnx.external_data_helper.uses_external_data(shell.graph.initializer[0])
    assert not shell.graph.initializer[0].float_data
    np.testing.assert_array_equal(numpy_helper.to_array(onnx.load(str(tmp_path / "t.onnx")).graph.initializer[0]), arr)


def test_prepare_over_the_limit_works_by_path(low_limit, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    model = _model()
    before = _arrays(model)
    path = _saved_with_external_data(model, src)  # strips the weights out of ``model``
    work = tmp_path / "work"
    work.mkdir()
    prepared = prep.prepare(path, work, per_channel=False)
    assert prepared.large
    assert "shapes inferred (onnx (path))" in prepared.notes
    assert sorted(p.name for p in work.iterdir()) == ["prepared.onnx", "prepared.onnx.data"]
    assert prepared.model.graph.value_info  # types inferred by path, copied into the in-memory model
    assert {p.key: p.value for p in prepared.model.metadata_props} == prep.ORT_INFERRED
    shell = onnx.load(str(prepared.path), load_external_data=False)
    assert {v.name for v in shell.graph.value_info} == {v.name for v in prepared.model.graph.value_info}
    assert all(np.array_equal(before[k], v) for k, v in _arrays(prepared.model).items())
    assert sorted(p.name for p in src.iterdir()) == ["float.onnx", "float.onnx.data"]  # input untouched


def test_prepare_over_the_limit_checks_by_path(low_limit, tmp_path):
    model = _model()
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(reversed(nodes))  # not in topological order: onnx.checker rejects it
    path = _saved_with_external_data(model, tmp_path)
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        prep.prepare(path, tmp_path, per_channel=False)


def test_raise_opset_over_the_limit_is_a_clear_error(low_limit):
    model = mz.transformer(layers=1, dim=32, hidden=128)
    model.opset_import[0].version = 11
    with pytest.raises(ModelError, match="over 2 GB"):
        prep.raise_opset(model, 13)


def test_quantize_over_the_limit(low_limit, tmp_path, monkeypatch):
    monkeypatch.setattr(calibrate_module, "_PROTO_LIMIT", low_limit)  # calibration must get the path
    model = _model()
    path = _saved_with_external_data(model, tmp_path)
    out = tmp_path / "out" / "q.onnx"
    out.parent.mkdir()
    samples = mz.sample_inputs(model, 6)
    result = hwquant.quantize(path, out, "ort-default", samples)
    assert result.ok and result.coverage.quantized == result.coverage.total > 0
    assert result.sizes["input"] > low_limit
    assert "shapes inferred (onnx (path))" in result.notes
    feed = samples[0]
    for a, b in zip(_run(path, feed), _run(out, feed), strict=True):
        assert a.shape == b.shape and np.isfinite(b).all()
    assert result.accuracy and result.accuracy[0].sqnr_db > 10


def test_contrib_op_typed_by_onnxruntime_past_the_limit(monkeypatch, tmp_path):
    """By path too, onnxruntime types what onnx's inference cannot (reading the weights beside the file)."""
    model = mz.contrib_gelu(dim=64)
    monkeypatch.setattr(prep, "MAX_PROTOBUF", model.ByteSize() // 2)
    path = _saved_with_external_data(model, tmp_path)
    out = tmp_path / "q.onnx"
    result = hwquant.quantize(path, out, "ort-default", mz.sample_inputs(model, 10))
    assert result.coverage.quantized == result.coverage.total == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["float.onnx", "float.onnx.data", "q.onnx"]
