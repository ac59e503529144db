"""BatchNormalization folding (hwquant.engine.fold) and when the engine applies it."""

from __future__ import annotations

import copy

import modelzoo as mz
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import hwquant
import hwquant.engine.calibrate as calibrate_mod
from hwquant.engine import derive
from hwquant.engine.fold import fold_batch_norms


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # no fusion of its own
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feed)


def _ops(model: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in model.graph.node]


def test_fold_keeps_the_outputs_and_the_names():
    model = mz.batchnorm_cnn()
    folded = copy.deepcopy(model)
    assert fold_batch_norms(folded) == 2  # bn3's Conv output c3 is also a model output
    onnx.checker.check_model(folded)
    assert _ops(folded) == ["Conv", "Relu", "Conv", "HardSwish", "Conv", "BatchNormalization"]
    names = lambda m: {o for n in m.graph.node for o in n.output}  # noqa: E731
    assert names(folded) <= names(model)  # every tensor keeps a name of the input model
    assert [n.output[0] for n in folded.graph.node[:3]] == ["b1", "r1", "b2"]
    inits = {i.name for i in folded.graph.initializer}
    assert not inits & {"conv1.w", "conv1.b", "conv2.w", "bn1.scale", "bn1.var", "bn2.mean"}  # replaced
    assert {"conv3.w", "bn3.scale"} <= inits
    for feed in mz.sample_inputs(model, 3, batch=2):
        for want, got in zip(_run(model, feed), _run(folded, feed), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def _conv_bn(extra_nodes=(), extra_outputs=(), bn_inputs=("s", "b", "m", "v"), graph_inputs=(), **bn_attrs):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 1, 1)).astype(np.float32), "w")]
    inits += [numpy_helper.from_array(rng.uniform(0.5, 2, 4).astype(np.float32), n) for n in "sbmv"]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("BatchNormalization", ["c", *bn_inputs], ["y"], name="bn", **bn_attrs),
        *extra_nodes,
    ]
    value = lambda n: helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)  # noqa: E731
    graph = helper.make_graph(
        nodes, "g", [value("x"), *map(value, graph_inputs)], [value("y"), *map(value, extra_outputs)], inits
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "model, why",
    [
        (_conv_bn([helper.make_node("Relu", ["c"], ["r"])], ["r"]), "the Conv output feeds another node"),
        (_conv_bn(graph_inputs=["s"]), "a parameter a caller may override"),
        (_conv_bn(training_mode=1), "training mode"),
        (_conv_bn(bn_inputs=("s", "b", "m", "x")), "a parameter computed at run time"),
    ],
)
def test_not_folded(model, why):
    before = model.SerializeToString()
    assert fold_batch_norms(model) == 0, why
    assert model.SerializeToString() == before


def test_not_folded_when_a_subgraph_reads_the_conv_output():
    branch = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["t"])], "b", [], [helper.make_tensor_value_info("t", 1, None)]
    )
    cond = helper.make_node("Constant", [], ["cond"], value=numpy_helper.from_array(np.array(True)))
    use = helper.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=branch)
    assert fold_batch_norms(_conv_bn([cond, use], ["z"])) == 0
    assert fold_batch_norms(_conv_bn()) == 1
    assert fold_batch_norms(_conv_bn(), keep={"bn"}) == 0


@pytest.fixture(scope="module")
def bn_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bn")
    model = mz.batchnorm_cnn()
    onnx.save(model, d / "bn.onnx")
    return d / "bn.onnx", mz.sample_inputs(model, 16, batch=1)


def test_engine_folds_for_per_channel_weights_only(bn_files, tmp_path):
    path, data = bn_files
    before = path.read_bytes()
    calib = hwquant.calibrate(path, data[:12])  # one saved calibration serves both: it observes the unfolded model
    per_channel = hwquant.quantize(path, tmp_path / "pc.onnx", "tflite-int8", calib, eval_data=data[12:])
    per_tensor = hwquant.quantize(path, tmp_path / "pt.onnx", "ort-default", calib, eval_data=data[12:])
    assert path.read_bytes() == before
    assert any("2 BatchNormalization nodes folded" in n for n in per_channel.notes)
    assert not any("BatchNormalization" in n for n in per_tensor.notes)
    assert _ops(onnx.load(tmp_path / "pc.onnx")).count("BatchNormalization") == 1  # bn3 only
    assert _ops(onnx.load(tmp_path / "pt.onnx")).count("BatchNormalization") == 3
    assert per_channel.check.ok and per_tensor.check.ok
    # accuracy is measured against the float model as given, BatchNormalization and all
    assert min(a.sqnr_db for a in per_channel.accuracy) > 20


def test_fresh_calibration_of_a_folded_model_matches_a_saved_one(bn_files, tmp_path, monkeypatch):
    """A fresh calibration observes only the BatchNormalization outputs of the folded pairs; a saved one
    observes every tensor and derives those outputs from their Conv outputs' per-channel ranges. The
    qparams agree to float rounding (at ORT_DISABLE_ALL: otherwise onnxruntime also fuses the unobserved
    Conv into its BatchNormalization)."""
    monkeypatch.setattr(calibrate_mod, "OPT_LEVEL", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    path, data = bn_files
    fresh = hwquant.quantize(path, tmp_path / "a.onnx", "tensorrt-int8", data[:12], eval_data=False)
    calib = hwquant.calibrate(path, data[:12])
    saved = hwquant.quantize(path, tmp_path / "b.onnx", "tensorrt-int8", calib, eval_data=False)
    assert [d.tensor for d in fresh.decisions] == [d.tensor for d in saved.decisions]
    for a, b in zip(fresh.decisions, saved.decisions, strict=True):
        np.testing.assert_allclose(a.scale, b.scale, rtol=1e-6, err_msg=a.tensor)
        assert a.zero_point == b.zero_point, a.tensor


def test_batchnorm_outputs_derived_from_per_channel_ranges(bn_files):
    """Calibrating every tensor measures a Conv output per channel and derives the BatchNormalization
    output's range from it (a * x + b per channel): the same range as measuring it, to float rounding."""
    path, data = bn_files
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    names = ["c1", "b1", "c2", "b2", "h2", "c3", "y"]
    derived = calibrate_mod.calibrate(model, data, names)
    measured = {t: calibrate_mod.calibrate(model, data, [t]).ranges[t] for t in ("b1", "b2", "y")}
    plan = derive.derivations(model, names, False)
    assert {t: d.kind for t, d in plan.items() if t in names} == {**dict.fromkeys(measured, "affine"), "h2": "map"}
    for t, (lo, hi) in measured.items():
        np.testing.assert_allclose(derived.ranges[t], (lo, hi), rtol=1e-6, atol=1e-6 * (hi - lo), err_msg=t)
    # with histograms (entropy, percentile, mse) none of these is derived: every output is measured
    assert not derive.derivations(model, names, True)
