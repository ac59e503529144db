"""End-to-end tests of hwquant.quantize with real onnxruntime on small models built with onnx.helper."""

from __future__ import annotations

import copy
import hashlib
import json

import modelzoo as mz
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

import hwquant
import hwquant.engine.calibrate as calibrate_mod
import hwquant.engine.prepare as prepare_mod
import hwquant.engine.quantize as qe
from hwquant.errors import CalibrationError, ModelError, PolicyError, VerificationError
from hwquant.plugins import registry as registry_mod

BUILTINS = ["ort-default", "restricted-u8", "tensorrt-int8", "tflite-int8", "qnn-htp-a16w8", "pow2-int8"]


@pytest.fixture(scope="module")
def cnn_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    model = mz.cnn()
    onnx.save(model, d / "cnn.onnx")
    data = mz.sample_inputs(model, 24, batch=1)
    return d / "cnn.onnx", data


@pytest.fixture(scope="module")
def transformer_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tr")
    model = mz.transformer()
    onnx.save(model, d / "tr.onnx")
    return d / "tr.onnx", mz.sample_inputs(model, 24, batch=1)


class _Reader(CalibrationDataReader):
    def __init__(self, data):
        self._it = iter(data)

    def get_next(self):
        return next(self._it, None)


def qdq_params(model: onnx.ModelProto) -> dict[str, tuple[list[float], list[int], str]]:
    """Scale, zero point and dtype of every DequantizeLinear, keyed by its quantized input tensor."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) > 2:
            zp = inits[node.input[2]]
            out[node.input[0]] = (
                np.atleast_1d(inits[node.input[1]]).tolist(),
                np.atleast_1d(zp).astype(int).tolist(),
                str(zp.dtype),
            )
    return out


def ort_restricted(path, data, out):
    quantize_static(
        str(path),
        str(out),
        _Reader(data),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        extra_options={"ActivationRestrictedAsymmetric": True},
    )
    return onnx.load(str(out))


def test_restricted_u8_cnn_matches_onnxruntime_exactly(cnn_files, tmp_path, monkeypatch):
    path, data = cnn_files
    calib = data[:16]
    theirs = qdq_params(ort_restricted(path, calib, tmp_path / "ort.onnx"))
    # Calibrating at onnxruntime's calibration level (no graph optimizations): every scale and zero point
    # is identical.
    monkeypatch.setattr(calibrate_mod, "OPT_LEVEL", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    result = hwquant.quantize(path, tmp_path / "hw.onnx", "restricted-u8", calib, eval_data=data[16:])
    assert result.ok, result.check.summary()
    ours = qdq_params(onnx.load(tmp_path / "hw.onnx"))
    assert ours.keys() == theirs.keys()
    assert ours == theirs
    # At the default level (ORT_ENABLE_ALL: NCHWc Conv kernels, other summation orders) the ranges may
    # move by float rounding: same zero points, scales equal to 1e-6.
    monkeypatch.undo()
    hwquant.quantize(path, tmp_path / "hw2.onnx", "restricted-u8", calib, eval_data=False)
    fast = qdq_params(onnx.load(tmp_path / "hw2.onnx"))
    assert fast.keys() == theirs.keys()
    for k, (scale, zp, dtype) in theirs.items():
        assert fast[k][1:] == (zp, dtype), k
        np.testing.assert_allclose(fast[k][0], scale, rtol=1e-6, err_msg=k)


def test_restricted_u8_transformer_complies_where_onnxruntime_does_not(transformer_files, tmp_path):
    path, data = transformer_files
    calib = data[:16]
    result = hwquant.quantize(path, tmp_path / "hw.onnx", "restricted-u8", calib, eval_data=data[16:])
    assert result.ok
    ours = qdq_params(onnx.load(tmp_path / "hw.onnx"))
    theirs = qdq_params(ort_restricted(path, calib, tmp_path / "ort.onnx"))
    assert ours.keys() == theirs.keys()
    uint8 = {k: v for k, v in ours.items() if v[2] == "uint8"}
    assert uint8 and all(zp in ([0], [128]) for _, zp, _ in uint8.values())
    ort_bad = {k for k, v in theirs.items() if v[2] == "uint8" and v[1] not in ([0], [128])}
    # onnxruntime's option misses the MatMul -> Add bias constants; hwquant does not
    assert ort_bad and all(".b_quantized" in k for k in ort_bad)
    for k in ours.keys() - ort_bad:
        assert ours[k] == theirs[k], k
    assert hwquant.check(tmp_path / "ort.onnx", "restricted-u8").ok is False


@pytest.mark.parametrize("profile", BUILTINS)
@pytest.mark.parametrize("which", ["cnn", "transformer"])
def test_every_builtin_profile_end_to_end(profile, which, cnn_files, transformer_files, tmp_path):
    path, data = cnn_files if which == "cnn" else transformer_files
    result = hwquant.quantize(path, tmp_path / "q.onnx", profile, data[:12], eval_data=data[12:16])
    assert result.ok, result.check.summary()
    assert hwquant.check(tmp_path / "q.onnx", profile).ok
    assert result.coverage.quantized == result.coverage.total > 0
    assert result.accuracy and all(np.isfinite(a.sqnr_db) and a.cosine > 0.9 for a in result.accuracy)
    json.loads(result.to_json())


def test_constant_node_weights_become_int8_initializers(tmp_path):
    model = mz.constant_weights()
    onnx.save(model, tmp_path / "paddle.onnx")
    result = hwquant.quantize(tmp_path / "paddle.onnx", tmp_path / "q.onnx", "ort-default", mz.sample_inputs(model, 8))
    q = onnx.load(tmp_path / "q.onnx")
    weights = {n.input[1] for n in q.graph.node if n.op_type in ("Conv", "Gemm")}
    producers = {o: n for n in q.graph.node for o in n.output}
    inits = {i.name: i for i in q.graph.initializer}
    for w in weights:
        dq = producers[w]
        assert dq.op_type == "DequantizeLinear"
        assert inits[dq.input[0]].data_type == onnx.TensorProto.INT8
    assert any("Constant nodes" in n for n in result.notes)


def test_compute_inside_if_subgraphs_is_reported_not_a_success(tmp_path):
    model = mz.if_subgraphs()
    onnx.save(model, tmp_path / "if.onnx")
    data = mz.sample_inputs(model, 8)
    with pytest.raises(VerificationError, match="0 of 2 compute ops") as info:
        hwquant.quantize(tmp_path / "if.onnx", tmp_path / "q.onnx", "ort-default", data)
    assert not (tmp_path / "q.onnx").exists()
    assert info.value.result.coverage.quantized == 0
    result = hwquant.quantize(tmp_path / "if.onnx", tmp_path / "q.onnx", "ort-default", data, verify=False)
    assert result.coverage.ratio == 0.0
    assert all("subgraph" in r for r in result.coverage.float_ops.values())


def test_contrib_op_outputs_are_typed_by_onnxruntime_and_quantized(tmp_path):
    """onnx's shape inference cannot type a com.microsoft Gelu's output; onnxruntime's quantizer would then
    leave the MatMul after it in float ("failed to infer the type of tensor")."""
    model = mz.contrib_gelu()
    onnx.save(model, tmp_path / "contrib.onnx")
    data = mz.sample_inputs(model, 12)
    result = hwquant.quantize(tmp_path / "contrib.onnx", tmp_path / "q.onnx", "ort-default", data)
    assert result.coverage.quantized == result.coverage.total == 2
    assert any("1 more typed by onnxruntime" in n for n in result.notes)
    assert result.accuracy[0].cosine > 0.99


def test_old_opset_is_raised_for_per_channel_weights(tmp_path):
    model = mz.cnn(opset=11)
    onnx.save(model, tmp_path / "old.onnx")
    result = hwquant.quantize(tmp_path / "old.onnx", tmp_path / "q.onnx", "tensorrt-int8", mz.sample_inputs(model, 8))
    assert result.ok
    q = onnx.load(tmp_path / "q.onnx")
    assert q.opset_import[0].version >= 13
    assert any(d.axis is not None for d in result.decisions if d.role == "weight")


def test_already_quantized_input_is_refused(cnn_files, tmp_path):
    path, data = cnn_files
    hwquant.quantize(path, tmp_path / "q.onnx", "ort-default", data[:8])
    with pytest.raises(ModelError, match="already quantized"):
        hwquant.quantize(tmp_path / "q.onnx", tmp_path / "qq.onnx", "ort-default", data[:8])


def test_invalid_input_models_are_refused_naming_the_fault(cnn_files, tmp_path):
    path, data = cnn_files
    model = onnx.load(str(path))
    unordered = onnx.ModelProto()
    unordered.CopyFrom(model)
    unordered.graph.node.reverse()  # nodes out of topological order: onnx.checker's verdict
    onnx.save(unordered, tmp_path / "unordered.onnx")
    with pytest.raises(ModelError, match=r"unordered\.onnx: not a valid ONNX model"):
        hwquant.quantize(tmp_path / "unordered.onnx", tmp_path / "out.onnx", "ort-default", data[:4])
    weight = max(model.graph.initializer, key=lambda i: len(i.raw_data))
    values = numpy_helper.to_array(weight).ravel().tolist()
    weight.raw_data = weight.raw_data[:-4]  # checked on the weights themselves, not by onnx.checker's copy
    onnx.save(model, tmp_path / "short.onnx")
    with pytest.raises(ModelError, match=rf"short\.onnx: initializer '{weight.name}' holds \d+ bytes"):
        hwquant.quantize(tmp_path / "short.onnx", tmp_path / "out.onnx", "ort-default", data[:4])
    typed = onnx.helper.make_tensor(weight.name, weight.data_type, list(weight.dims), values)
    del typed.float_data[-1:]  # the same weight in a typed field, one value short
    weight.CopyFrom(typed)
    onnx.save(model, tmp_path / "typed.onnx")
    with pytest.raises(ModelError, match=r"typed\.onnx: not a valid ONNX model: .*float_data size"):
        hwquant.quantize(tmp_path / "typed.onnx", tmp_path / "out.onnx", "ort-default", data[:4])
    assert not (tmp_path / "out.onnx").exists()


def test_input_untouched_nothing_beside_it_and_output_deterministic(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    model = mz.cnn(seed=3)
    onnx.save(model, src / "m.onnx")
    before = hashlib.sha256((src / "m.onnx").read_bytes()).hexdigest()
    data = mz.sample_inputs(model, 10)
    out = tmp_path / "out"
    out.mkdir()
    hwquant.quantize(src / "m.onnx", out / "a.onnx", "restricted-u8", data)
    hwquant.quantize(src / "m.onnx", out / "b.onnx", "restricted-u8", data)
    assert sorted(p.name for p in src.iterdir()) == ["m.onnx"]
    assert hashlib.sha256((src / "m.onnx").read_bytes()).hexdigest() == before
    assert (out / "a.onnx").read_bytes() == (out / "b.onnx").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["a.onnx", "b.onnx"]
    with pytest.raises(hwquant.HwquantError, match="over its input"):
        hwquant.quantize(src / "m.onnx", src / "m.onnx", "restricted-u8", data)


def test_one_calibration_many_profiles(cnn_files, tmp_path):
    path, data = cnn_files
    cal = hwquant.calibrate(path, data[:16], output=tmp_path / "cnn.hwqcal.npz")
    for profile in ("ort-default", "restricted-u8", "tensorrt-int8", "pow2-int8"):
        result = hwquant.quantize(path, tmp_path / f"{profile}.onnx", profile, tmp_path / "cnn.hwqcal.npz")
        assert result.ok and result.samples["calibration"] == cal.samples == 16
    other = mz.cnn(seed=9)
    onnx.save(other, tmp_path / "other.onnx")
    with pytest.raises(CalibrationError, match="different model"):
        hwquant.quantize(tmp_path / "other.onnx", tmp_path / "x.onnx", "ort-default", tmp_path / "cnn.hwqcal.npz")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("which", ["cnn", "transformer"])
def test_calibration_observes_only_what_onnxruntime_quantizes(which, cnn_files, transformer_files, tmp_path):
    """A calibration made inside quantize observes only the activations the profile's recipe quantizes (not
    the Conv outputs a folded Relu replaces), and the output is byte-identical to one from a calibration of
    every float activation, for every built-in profile."""
    path, data = cnn_files if which == "cnn" else transformer_files
    full = hwquant.calibrate(path, data[:8])
    model = onnx.load(str(path))
    conv_outputs = {n.output[0] for n in model.graph.node if n.op_type == "Conv"}
    relu_inputs = conv_outputs & {n.input[0] for n in model.graph.node if n.op_type == "Relu"}
    for profile in BUILTINS:
        fresh = hwquant.quantize(path, tmp_path / "fresh.onnx", profile, data[:8], eval_data=False)
        reused = hwquant.quantize(path, tmp_path / "reused.onnx", profile, full, eval_data=False)
        assert (tmp_path / "fresh.onnx").read_bytes() == (tmp_path / "reused.onnx").read_bytes(), profile
        assert [d.tensor for d in fresh.decisions] == [d.tensor for d in reused.decisions]
    prepared = qe.prepare(path, tmp_path, per_channel=False)
    observed = qe.observed_for(prepared.model, qe.recipe_for(hwquant.resolve("ort-default")))
    assert observed and len(observed) < len(qe.float_activations(prepared.model))
    if which == "cnn":  # Relu folded into its Conv: only the Relu output is observed
        assert relu_inputs and not relu_inputs & set(observed)


def test_relu_output_left_float_is_observed_for_its_input(tmp_path):
    """Conv -> Relu -> Exp with the Relu kept (symmetric int8) and its output left float: onnxruntime still
    gives the Conv output the Relu output's range, so calibration observes the Relu output too, and the Conv
    output's scale comes from the data (as from a full calibration), not from a placeholder."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Exp", ["r"], ["y"]),
        ],
        "conv_relu_exp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
        [w],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10), tmp_path / "m.onnx")
    data = [{"x": (3 * rng.standard_normal((1, 3, 8, 8))).astype(np.float32)} for _ in range(8)]
    (tmp_path / "p.toml").write_text(
        'name = "relu-float"\nextends = "tensorrt-int8"\ndescription = "d"\nsource = "s"\n'
        '[ops]\nfloat_outputs = ["Relu"]\n'
    )
    fresh = hwquant.quantize(tmp_path / "m.onnx", tmp_path / "a.onnx", tmp_path / "p.toml", data, eval_data=False)
    full = hwquant.calibrate(tmp_path / "m.onnx", data)
    hwquant.quantize(tmp_path / "m.onnx", tmp_path / "b.onnx", tmp_path / "p.toml", full, eval_data=False)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    conv = next(d for d in fresh.decisions if d.tensor == "c")
    assert tuple(conv.range) == full.ranges["r"] != full.ranges["c"]  # onnxruntime's adjustment, real values


def test_sources_that_refill_one_buffer(cnn_files, tmp_path):
    """Calibration and evaluation data from a source that refills one array per sample (a reader with a
    preallocated buffer) give the same model and the same accuracy as distinct arrays."""
    path, data = cnn_files

    want = hwquant.quantize(path, tmp_path / "a.onnx", "ort-default", data[:12], eval_data=data[12:20])
    got = hwquant.quantize(
        path, tmp_path / "b.onnx", "ort-default", mz.refilled(data[:12]), eval_data=mz.refilled(data[12:20])
    )
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    assert got.accuracy == want.accuracy and got.samples == want.samples


def test_calibration_cache_reused(cnn_files, tmp_path):
    path, data = cnn_files
    cache = tmp_path / "cache.hwqcal.npz"
    first = hwquant.quantize(path, tmp_path / "a.onnx", "ort-default", data[:8], calibration_cache=cache)
    assert cache.is_file()
    second = hwquant.quantize(path, tmp_path / "b.onnx", "ort-default", None, calibration_cache=cache)
    assert first.samples["calibration"] == second.samples["calibration"]
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
    other = tmp_path / "other.onnx"
    onnx.save(mz.cnn(seed=3), other)
    with pytest.raises(CalibrationError, match="made on a different model"):
        hwquant.quantize(other, tmp_path / "c.onnx", "ort-default", None, calibration_cache=cache)


def test_the_model_is_hashed_only_for_a_calibration_saved_or_loaded(cnn_files, tmp_path, monkeypatch):
    path, data = cnn_files
    hashed = []
    real = prepare_mod.model_fingerprint
    monkeypatch.setattr(prepare_mod, "model_fingerprint", lambda m: hashed.append(1) or real(m))
    hwquant.quantize(path, tmp_path / "a.onnx", "ort-default", data[:8])
    assert not hashed
    hwquant.quantize(path, tmp_path / "b.onnx", "ort-default", data[:8], calibration_cache=tmp_path / "c.hwqcal.npz")
    assert hashed


def test_qoperator_format(cnn_files, tmp_path):
    path, data = cnn_files
    result = hwquant.quantize(path, tmp_path / "q.onnx", "ort-default", data[:8], format="qoperator")
    assert result.ok
    ops = {n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node}
    assert "QLinearConv" in ops


def test_profile_with_float_biases(cnn_files, tmp_path):
    """bias.quantize = false: weights and activations quantized, every Conv/Gemm bias stays a float
    initializer, and the model passes the profile's check and runs."""
    path, data = cnn_files
    (tmp_path / "fb.toml").write_text(
        'name = "float-bias"\nextends = "tensorrt-int8"\ndescription = "d"\nsource = "s"\n[bias]\nquantize = false\n'
    )
    result = hwquant.quantize(path, tmp_path / "q.onnx", tmp_path / "fb.toml", data[:12], eval_data=data[12:16])
    assert result.ok and result.coverage.quantized == result.coverage.total
    assert result.check.checked["biases"] == 0
    q = onnx.load(tmp_path / "q.onnx")
    inits = {i.name: i for i in q.graph.initializer}
    biased = [n for n in q.graph.node if n.op_type in ("Conv", "Gemm") and len(n.input) > 2]
    assert biased and all(inits[n.input[2]].data_type == onnx.TensorProto.FLOAT for n in biased)
    assert all(a.cosine > 0.99 for a in result.accuracy)
    with pytest.raises(hwquant.HwquantError, match="QOperator ops take int32 biases"):
        hwquant.quantize(path, tmp_path / "q2.onnx", tmp_path / "fb.toml", data[:12], format="qoperator")
    assert not (tmp_path / "q2.onnx").exists()


def test_compute_op_outputs_left_float(transformer_files, tmp_path):
    """ops.quantize + ops.float_outputs on the compute ops: Q/DQ on their inputs only (TensorRT's recommended
    placement); an output gets Q/DQ only where another quantized op consumes it."""
    path, data = transformer_files
    (tmp_path / "fo.toml").write_text(
        'name = "fo"\nextends = "tensorrt-int8"\ndescription = "d"\nsource = "s"\n'
        '[ops]\nquantize = ["MatMul", "Gemm"]\nfloat_outputs = ["MatMul", "Gemm"]\n'
    )
    result = hwquant.quantize(path, tmp_path / "q.onnx", tmp_path / "fo.toml", data[:12], eval_data=data[12:16])
    assert result.ok and result.coverage.quantized == result.coverage.total > 0
    q = onnx.load(tmp_path / "q.onnx")
    consumers: dict[str, list[str]] = {}
    for n in q.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    float_consumers: dict[str, set[str]] = {}
    for n in onnx.load(path).graph.node:
        for i in n.input:
            float_consumers.setdefault(i, set()).add(n.op_type)
    compute = [n.output[0] for n in q.graph.node if n.op_type in ("MatMul", "Gemm")]
    feeding_float_ops = [t for t in compute if not float_consumers[t] & {"MatMul", "Gemm"}]
    assert feeding_float_ops and all("QuantizeLinear" not in consumers[t] for t in feeding_float_ops)
    assert any("QuantizeLinear" in consumers[t] for t in compute)  # l*.ctx feeds the output projection
    # without float_outputs every MatMul output is quantized
    (tmp_path / "io.toml").write_text(
        'name = "io"\nextends = "tensorrt-int8"\ndescription = "d"\nsource = "s"\n'
        '[ops]\nquantize = ["MatMul", "Gemm"]\n'
    )
    hwquant.quantize(path, tmp_path / "io.onnx", tmp_path / "io.toml", data[:12], eval_data=False)
    io = onnx.load(tmp_path / "io.onnx")
    assert sum(n.op_type == "QuantizeLinear" for n in io.graph.node) > sum(
        n.op_type == "QuantizeLinear" for n in q.graph.node
    )
    with pytest.raises(hwquant.HwquantError, match="QOperator ops have quantized outputs"):
        hwquant.quantize(path, tmp_path / "q2.onnx", tmp_path / "fo.toml", data[:12], format="qoperator")


def test_model_with_external_data(tmp_path):
    model = mz.cnn(channels=16)
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, location="ext.data", size_threshold=0)
    result = hwquant.quantize(tmp_path / "ext.onnx", tmp_path / "q.onnx", "ort-default", mz.sample_inputs(model, 6))
    assert result.ok


def test_mismatched_calibration_names_the_input(cnn_files, tmp_path):
    path, _ = cnn_files
    bad = [{"images": np.zeros((1, 3, 16, 16), np.float32)}]
    with pytest.raises(CalibrationError, match="images"):
        hwquant.quantize(path, tmp_path / "q.onnx", "ort-default", bad)
    assert not (tmp_path / "q.onnx").exists()


class _BadPolicyPlugin:
    @hwquant.hookimpl
    def hwquant_policies(self):
        def off_grid(stats, constraints):
            return hwquant.QParams(np.float32(0.1), 77)

        return {"off-grid": off_grid}

    @hwquant.hookimpl
    def hwquant_profiles(self):
        return [{"name": "needs-off-grid", "extends": "restricted-u8", "activations": {"policy": "off-grid"}}]


def test_policy_breaking_the_profile_names_plugin_and_tensor(cnn_files, tmp_path, monkeypatch):
    path, data = cnn_files
    reg = registry_mod.Registry.load(extra_plugins={"bad-plugin": _BadPolicyPlugin()})
    monkeypatch.setattr(registry_mod, "_default", reg)
    with pytest.raises(PolicyError, match=r"off-grid.*bad-plugin.*tensor 'input'.*not in allowed set"):
        hwquant.quantize(path, tmp_path / "q.onnx", "needs-off-grid", data[:4])
    assert not (tmp_path / "q.onnx").exists()


def test_tflite_shared_concat_and_fixed_softmax(cnn_files, tmp_path):
    path, data = cnn_files
    result = hwquant.quantize(path, tmp_path / "q.onnx", "tflite-int8", data[:8])
    concat = next(d for d in result.decisions if d.tensor == "cat")
    assert concat.rule == "shared" and "r2a" in concat.group
    softmax = result.decision("probs")
    assert softmax.rule == "fixed:Softmax" and softmax.scale == pytest.approx(1 / 256) and softmax.zero_point == -128


@pytest.mark.parametrize("keep_relu", [False, True])
def test_planning_without_weight_values_plans_the_same(tmp_path, monkeypatch, keep_relu):
    """Weights of 16384 elements or more reach onnxruntime's planner without their values; the plan (tensors,
    roles, ties, biases, adjusted ranges) is the one planned on a full copy, and the input is untouched."""
    from hwquant.engine import ort_quantizer

    model = prepare_mod.prepare(mz.transformer(layers=1, dim=128, hidden=256), tmp_path, per_channel=False).model
    assert any(np.prod(i.dims) >= ort_quantizer._PLAN_VALUE_ELEMENTS for i in model.graph.initializer)
    before = model.SerializeToString()
    names = qe.float_activations(model)
    rng = np.random.default_rng(0)
    ranges = {n: tuple(sorted(rng.uniform(-3, 3, 2))) for n in names}
    recipe = ort_quantizer.Recipe(
        op_types=sorted(ort_quantizer.QDQRegistry), activation_dtype="uint8", weight_dtype="int8", keep_relu=keep_relu
    )
    lean = ort_quantizer.plan(model, ranges, recipe)
    monkeypatch.setattr(ort_quantizer, "_planning_copy", lambda m: copy.deepcopy(m))
    full = ort_quantizer.plan(model, ranges, recipe)
    assert lean == full and lean.tensors
    assert model.SerializeToString() == before
