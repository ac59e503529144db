"""Every checker rule on small hand-made QDQ models: at least one failing and one passing model each.

The models are built with onnx.helper (no onnxruntime), so each violation is exactly the one named.
"""

from __future__ import annotations

import modelzoo
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwquant import check, get_profile
from hwquant.checker import RULES
from hwquant.profile.schema import Profile

OPSET = 21
U8, I8, I32 = np.uint8, np.int8, np.int32


class G:
    """A tiny graph under construction: float inputs, QDQ pairs, integer constants read through
    DequantizeLinear, and plain nodes."""

    def __init__(self, **inputs: list[int]):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[TensorProto] = []
        self.inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()]
        self.outputs: list[onnx.ValueInfoProto] = []

    def init(self, name: str, arr) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def qdq(self, x: str, scale, zp, dtype=U8, dq_scale=None) -> str:
        """``x`` -> QuantizeLinear -> DequantizeLinear; the dequantized name. ``dq_scale``: let the
        DequantizeLinear read another scale than the QuantizeLinear writes."""
        s = self.init(f"{x}.scale", np.asarray(scale, np.float32))
        z = self.init(f"{x}.zp", np.asarray(zp, dtype))
        s2 = s if dq_scale is None else self.init(f"{x}.dq_scale", np.asarray(dq_scale, np.float32))
        self.nodes.append(helper.make_node("QuantizeLinear", [x, s, z], [f"{x}.q"], name=f"{x}.Q"))
        self.nodes.append(helper.make_node("DequantizeLinear", [f"{x}.q", s2, z], [f"{x}.dq"], name=f"{x}.DQ"))
        return f"{x}.dq"

    def const(self, name: str, values, scale, zp, dtype=I8, axis: int | None = None) -> str:
        """An integer initializer ``name`` read through a DequantizeLinear; the dequantized name."""
        self.init(name, np.asarray(values, dtype))
        s = self.init(f"{name}.scale", np.asarray(scale, np.float32))
        z = self.init(f"{name}.zp", np.asarray(zp, dtype))
        kw = {} if axis is None else {"axis": axis}
        self.nodes.append(helper.make_node("DequantizeLinear", [name, s, z], [f"{name}.dq"], name=f"{name}.DQ", **kw))
        return f"{name}.dq"

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def model(self, *outputs: str) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
        graph = helper.make_graph(self.nodes, "handmade", self.inputs, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 10
        model = onnx.shape_inference.infer_shapes(model)  # fills in the outputs' shapes
        onnx.checker.check_model(model)
        return model


WEIGHTS = np.array([[-127, 5, 100, -3], [7, 127, -60, 0], [1, 2, 3, 4]], dtype=np.int8)  # [3 out, 4 in]


def conv(
    *,
    act=(0.02, 128, U8),
    out=(0.05, 128, U8),
    w=WEIGHTS,
    w_scale=0.01,
    w_zp=0,
    w_dtype=I8,
    w_axis=None,
    bias="int32",
    bias_scale=None,
    bias_zp=0,
) -> onnx.ModelProto:
    """x [1, 4, 2, 2] -> QDQ -> Conv 1x1 (3 output channels) with a quantized weight and bias -> QDQ.

    ``bias``: "int32" (quantized, scale = input x weight scale unless ``bias_scale``), "float", "int8" or None.
    """
    g = G(x=[1, 4, 2, 2])
    xd = g.qdq("x", *act)
    wd = g.const("w", np.asarray(w).reshape(3, 4, 1, 1), w_scale, w_zp, w_dtype, axis=w_axis)
    inputs = [xd, wd]
    if bias in ("int32", "int8"):
        scale = np.float32(act[0]) * np.asarray(w_scale, np.float32) if bias_scale is None else bias_scale
        dtype = I32 if bias == "int32" else I8
        per_axis = np.ndim(scale) > 0
        zp = np.full(np.size(scale), bias_zp) if per_axis else bias_zp
        inputs.append(g.const("b", [10, -20, 30], scale, zp, dtype, axis=0 if per_axis else None))
    elif bias == "float":
        inputs.append(g.init("b", np.array([0.1, -0.2, 0.3], np.float32)))
    y = g.node("Conv", inputs, "y")
    return g.model(g.qdq(y, *out))


def gemm(*, trans_b: int, axis: int, w_scale=(0.01, 0.02, 0.03)) -> onnx.ModelProto:
    """x [1, 4] -> QDQ -> Gemm with a per-channel int8 weight (3 outputs) on ``axis``."""
    g = G(x=[1, 4])
    w = WEIGHTS if trans_b else WEIGHTS.T
    wd = g.const("w", w, w_scale, np.zeros(3, I8), I8, axis=axis)
    y = g.node("Gemm", [g.qdq("x", 0.02, 128), wd], "y", transB=trans_b)
    return g.model(g.qdq(y, 0.05, 128))


def concat(scale_a: float, scale_b: float, scale_out: float, zp=0) -> onnx.ModelProto:
    """Two int8 QDQ inputs -> Concat -> QDQ."""
    g = G(a=[1, 4], b=[1, 4])
    y = g.node("Concat", [g.qdq("a", scale_a, zp, I8), g.qdq("b", scale_b, zp, I8)], "cat", axis=1)
    return g.model(g.qdq(y, scale_out, zp, I8))


def softmax(scale: float, zp: int, dtype=I8) -> onnx.ModelProto:
    """x -> QDQ (int8) -> Softmax -> QDQ with the given output qparams."""
    g = G(x=[1, 10])
    y = g.node("Softmax", [g.qdq("x", 0.05, 0, I8)], "probs", axis=-1)
    return g.model(g.qdq(y, scale, zp, dtype))


def custom(base: str = "ort-default", **sections) -> Profile:
    """A profile object: ``base`` with some sections replaced (dicts merged one level deep)."""
    data = get_profile(base).model_dump()
    for key, value in sections.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    data["name"] = "custom"
    return Profile.model_validate(data)


def rules_of(report) -> set[str]:
    return {f.rule for f in report.findings}


def test_every_rule_is_documented_and_tested_here():
    """The rule table, the docs page and this file agree on the rule names."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "check.md").read_text()
    here = Path(__file__).read_text()
    for rule in RULES:
        assert f"`{rule}`" in doc, f"docs/check.md does not describe rule '{rule}'"
        assert f'"{rule}"' in here, f"no test names rule '{rule}'"


# ---------------------------------------------------------------------------------------------- baseline


def test_the_baseline_models_pass():
    report = check(conv(), "ort-default")
    assert report.ok and not report.findings, report.render()
    assert report.checked == {"activations": 2, "weights": 1, "biases": 1, "nodes": 7}
    assert report.format == "QDQ"


# ---------------------------------------------------------------------------------------------- nothing-quantized


def test_nothing_quantized_float_model_fails():
    report = check(modelzoo.cnn(), "ort-default")
    assert not report.ok
    (f,) = report.by_rule("nothing-quantized")
    assert f.severity == "error" and "11 nodes" in f.found
    assert report.format == "float"
    # the compute ops left in float are listed too
    assert {c.node for c in report.by_rule("coverage")} == {"conv1", "conv2a", "conv2b", "fc"}


def test_nothing_quantized_passes_on_a_quantized_model():
    assert not check(conv(), "ort-default").by_rule("nothing-quantized")


def test_nothing_quantized_reports_if_subgraph_compute():
    report = check(modelzoo.if_subgraphs(), "ort-default")
    assert report.by_rule("nothing-quantized")
    nodes = {f.node for f in report.by_rule("coverage")}
    assert nodes == {"if[then_branch]/then.matmul", "if[else_branch]/else.matmul"}


# ---------------------------------------------------------------------------------------------- consistent-qparams


def test_consistent_qparams_fails_when_dq_reads_other_scale():
    g = G(x=[1, 4])
    y = g.node("Relu", [g.qdq("x", 0.02, 128, dq_scale=0.03)], "y")
    report = check(g.model(g.qdq(y, 0.02, 128)), "ort-default")
    (f,) = report.by_rule("consistent-qparams")
    assert f.node == "x.DQ" and f.tensor == "x" and "0.03" in f.found and "0.02" in f.expected


def test_consistent_qparams_passes():
    assert not check(conv(), "ort-default").by_rule("consistent-qparams")


# ---------------------------------------------------------------------------------------------- qparams-unknown


def test_qparams_unknown_warns_for_runtime_scales():
    g = G(x=[1, 4], s=[])
    z = g.init("z", np.array(128, U8))
    g.nodes.append(helper.make_node("QuantizeLinear", ["x", "s", z], ["xq"], name="Q"))
    g.nodes.append(helper.make_node("DequantizeLinear", ["xq", "s", z], ["xd"], name="DQ"))
    y = g.node("Relu", ["xd"], "y")
    report = check(g.model(y), "ort-default")
    (f,) = report.by_rule("qparams-unknown")
    assert f.severity == "warning" and f.tensor == "x"
    assert report.ok  # a warning, not an error


def test_qparams_unknown_passes_with_constants():
    assert not check(conv(), "ort-default").by_rule("qparams-unknown")


# ---------------------------------------------------------------------------------------------- dtype


def test_dtype_fails_for_uint8_activations_on_int8_profile():
    report = check(conv(), "tensorrt-int8")
    tensors = {f.tensor for f in report.by_rule("dtype")}
    assert tensors == {"x", "y"}
    f = report.by_rule("dtype")[0]
    assert (f.expected, f.found, f.role) == ("int8", "uint8", "activation")


def test_dtype_fails_for_uint8_weights():
    report = check(conv(w=WEIGHTS.astype(np.int16) + 128, w_dtype=U8, w_zp=128), "ort-default")
    (f,) = report.by_rule("dtype")
    assert f.tensor == "w" and f.role == "weight" and f.found == "uint8"


def test_dtype_passes_for_int8_activations():
    model = conv(act=(0.02, 0, I8), out=(0.05, 0, I8))
    assert not check(model, "tensorrt-int8").by_rule("dtype")


# ---------------------------------------------------------------------------------------------- zero-point


def test_zero_point_outside_allowed_set_fails():
    report = check(conv(act=(0.02, 131, U8)), "restricted-u8")
    (f,) = report.by_rule("zero-point")
    assert f.tensor == "x" and f.found == "131" and "[0, 128]" in f.expected


def test_zero_point_outside_qmin_qmax_fails():
    # narrow int8 weights [-127, 127] with any zero point allowed: -128 is still out of range
    prof = custom(weights={"zero_points": {"int8": "any"}, "policy": "asymmetric"})
    report = check(conv(w_zp=-128, w=WEIGHTS), prof)
    (f,) = report.by_rule("zero-point")
    assert f.tensor == "w" and f.found == "-128" and "[-127, 127]" in f.expected


def test_zero_point_weight_not_zero_fails():
    report = check(conv(w_zp=3, w=np.clip(WEIGHTS.astype(int) + 3, -127, 127)), "ort-default")
    (f,) = report.by_rule("zero-point")
    assert f.tensor == "w" and f.role == "weight"


def test_zero_point_passes():
    assert not check(conv(act=(0.02, 128, U8), out=(0.05, 0, U8)), "restricted-u8").by_rule("zero-point")


# ---------------------------------------------------------------------------------------------- symmetric


SYM_ANY = {"weights": {"zero_points": {"int8": "any"}, "policy": "symmetric"}}


def test_symmetric_fails_for_offset_weight_zero_point():
    report = check(conv(w_zp=5, w=np.clip(WEIGHTS.astype(int) + 5, -127, 127)), custom(**SYM_ANY))
    (f,) = report.by_rule("symmetric")
    assert f.tensor == "w" and f.found == "5" and f.expected.startswith("zero point 0")


def test_symmetric_passes_and_is_not_required_for_asymmetric_policies():
    assert not check(conv(), custom(**SYM_ANY)).by_rule("symmetric")
    prof = custom(weights={"zero_points": {"int8": "any"}, "policy": "asymmetric"})
    assert not check(conv(w_zp=5), prof).by_rule("symmetric")


# ---------------------------------------------------------------------------------------------- value-range


def test_value_range_fails_for_minus_128_in_narrow_int8_weights():
    w = WEIGHTS.copy()
    w[0, 0] = -128
    report = check(conv(w=w), "ort-default")
    (f,) = report.by_rule("value-range")
    assert f.tensor == "w" and f.role == "weight" and "1 below -127" in f.found
    assert f.expected == "values in [-127, 127]"


def test_value_range_fails_for_float_weight_quantized_to_minus_128():
    # a float initializer quantized by a QuantizeLinear: the checker computes the stored values
    g = G(x=[1, 4])
    g.init("w", np.where(WEIGHTS.T == -127, -1.28, WEIGHTS.T * 0.01).astype(np.float32))
    wd = g.qdq("w", 0.01, 0, I8)
    y = g.node("MatMul", [g.qdq("x", 0.02, 128), wd], "y")
    report = check(g.model(g.qdq(y, 0.05, 128)), "ort-default")
    (f,) = report.by_rule("value-range")
    assert f.tensor == "w" and f.role == "weight"


def test_value_range_passes():
    assert not check(conv(), "ort-default").by_rule("value-range")


# ---------------------------------------------------------------------------------------------- per-channel

PC = (0.01, 0.02, 0.03)


def test_per_channel_fails_on_per_tensor_only_profile():
    report = check(conv(w_scale=PC, w_zp=np.zeros(3, I8), w_axis=0), "ort-default")
    (f,) = report.by_rule("per-channel")
    assert f.tensor == "w" and "axis 0" in f.found and "per-tensor" in f.expected


def test_per_channel_fails_on_wrong_axis():
    model = conv(act=(0.02, 0, I8), out=(0.05, 0, I8), w_scale=(0.01,) * 4, w_zp=np.zeros(4, I8), w_axis=1, bias=None)
    (f,) = check(model, "tensorrt-int8").by_rule("per-channel")
    assert f.found.startswith("per-channel on axis 1") and f.expected == "per-channel on axis 0"


def test_per_channel_passes_on_declared_axis():
    model = conv(act=(0.02, 0, I8), out=(0.05, 0, I8), w_scale=PC, w_zp=np.zeros(3, I8), w_axis=0)
    report = check(model, "tensorrt-int8")
    assert report.ok, report.render()


def test_per_channel_gemm_axis_follows_trans_b():
    # tensorrt-int8 declares Gemm axis 0 for transB=1; with transB=0 the output channel is axis 1
    assert not check(gemm(trans_b=1, axis=0), "tensorrt-int8").by_rule("per-channel")
    assert not check(gemm(trans_b=0, axis=1), "tensorrt-int8").by_rule("per-channel")
    assert check(gemm(trans_b=0, axis=0, w_scale=(0.01,) * 4), "tensorrt-int8").by_rule("per-channel")


def test_per_channel_activation_fails():
    g = G(x=[1, 3])
    s, z = g.init("s", np.array([0.1, 0.2, 0.3], np.float32)), g.init("z", np.zeros(3, I8))
    g.nodes.append(helper.make_node("QuantizeLinear", ["x", s, z], ["xq"], name="Q", axis=1))
    g.nodes.append(helper.make_node("DequantizeLinear", ["xq", s, z], ["xd"], name="DQ", axis=1))
    (f,) = check(g.model(g.node("Relu", ["xd"], "y")), "tensorrt-int8").by_rule("per-channel")
    assert f.role == "activation" and f.expected == "per-tensor (one scale)"


# ---------------------------------------------------------------------------------------------- scale


def test_scale_fails_when_not_power_of_two():
    model = conv(act=(0.02, 0, I8), out=(0.0625, 0, I8), w_scale=0.0078125)
    report = check(model, "pow2-int8")
    tensors = {f.tensor for f in report.by_rule("scale")}
    assert tensors == {"x"}
    assert report.by_rule("scale")[0].expected.startswith("power of two")


def test_scale_passes_when_power_of_two():
    model = conv(act=(0.015625, 0, I8), out=(0.0625, 0, I8), w_scale=0.0078125)
    assert check(model, "pow2-int8").ok


@pytest.mark.parametrize("bad", [0.0, -0.01, float("inf"), float("nan")])
def test_scale_fails_when_not_positive_finite(bad):
    (f,) = check(conv(out=(bad, 128, U8)), "ort-default").by_rule("scale")
    assert f.tensor == "y" and f.expected == "positive, finite scale"


def test_scale_exponent_bounds():
    prof = custom("pow2-int8", activations={"scale": {"form": "power-of-two", "min_exponent": -5}})
    model = conv(act=(2.0**-6, 0, I8), out=(0.0625, 0, I8), w_scale=0.0078125)
    (f,) = check(model, prof).by_rule("scale")
    assert f.tensor == "x" and f.expected == "power of two 2**e, -5 <= e"


# ---------------------------------------------------------------------------------------------- fixed-output


def test_fixed_output_fails_for_non_fixed_softmax_on_tflite():
    (f,) = check(softmax(1 / 255, -128), "tflite-int8").by_rule("fixed-output")
    assert f.node == "probs" and f.tensor == "probs"
    assert "0.00390625" in f.expected and "relative tolerance 1e-06" in f.expected
    assert f.found == "scale 0.003921569, zero point -128"


def test_fixed_output_fails_for_wrong_zero_point():
    assert check(softmax(1 / 256, 0), "tflite-int8").by_rule("fixed-output")


def test_fixed_output_passes_within_tolerance():
    assert check(softmax(1 / 256, -128), "tflite-int8").ok
    assert check(softmax(1 / 256 * (1 + 5e-7), -128), "tflite-int8").ok
    assert not check(softmax(1 / 256 * (1 + 5e-6), -128), "tflite-int8").ok


def test_fixed_output_sigmoid_tanh_16_bit():
    g = G(x=[1, 4])
    xd = g.qdq("x", 0.001, 32768, np.uint16)
    sig = g.qdq(g.node("Sigmoid", [xd], "sig"), 1 / 65536, 0, np.uint16)
    tanh = g.qdq(g.node("Tanh", [xd], "tanh"), 1 / 32768, 32768, np.uint16)
    assert check(g.model(sig, tanh), "qnn-htp-a16w8").ok
    g = G(x=[1, 4])
    xd = g.qdq("x", 0.001, 32768, np.uint16)
    tanh = g.qdq(g.node("Tanh", [xd], "tanh"), 1 / 32768, 32000, np.uint16)
    (f,) = check(g.model(tanh), "qnn-htp-a16w8").by_rule("fixed-output")
    assert f.tensor == "tanh" and "zero point 32000" in f.found


# ---------------------------------------------------------------------------------------------- shared-qparams


def test_shared_qparams_fails_for_concat_inputs_with_different_scales():
    report = check(concat(0.02, 0.03, 0.03), "tflite-int8")
    (f,) = report.by_rule("shared-qparams")
    assert f.node == "cat" and f.tensor == "a" and "0.02" in f.found and "as 'cat'" in f.expected


def test_shared_qparams_passes_for_equal_scales_and_ignores_other_profiles():
    assert check(concat(0.03, 0.03, 0.03), "tflite-int8").ok
    assert not check(concat(0.02, 0.03, 0.03), "tensorrt-int8").by_rule("shared-qparams")


def test_shared_qparams_zero_point_mismatch_fails():
    g = G(x=[1, 4, 2, 2])
    y = g.node("MaxPool", [g.qdq("x", 0.02, 0, I8)], "pool", kernel_shape=[2, 2])
    (f,) = check(g.model(g.qdq(y, 0.02, 5, I8)), "tflite-int8").by_rule("shared-qparams")
    assert f.node == "pool" and f.tensor == "x"


# ---------------------------------------------------------------------------------------------- bias


def test_bias_passes_when_scale_is_input_times_weight():
    assert not check(conv(), "ort-default").by_rule("bias")
    pc = conv(act=(0.02, 0, I8), out=(0.05, 0, I8), w_scale=PC, w_zp=np.zeros(3, I8), w_axis=0)
    assert not check(pc, "tensorrt-int8").by_rule("bias")


def test_bias_fails_for_wrong_scale():
    (f,) = check(conv(bias_scale=0.001), "ort-default").by_rule("bias")
    assert f.tensor == "b" and f.role == "bias" and f.node == "b.DQ"
    assert "= input scale x weight scale (relative tolerance 1e-05)" in f.expected and f.found == "scale 0.001"


def test_bias_fails_for_non_zero_zero_point_and_wrong_dtype():
    (f,) = check(conv(bias_zp=3), "ort-default").by_rule("bias")
    assert f.expected == "zero point 0"
    findings = check(conv(bias="int8"), "ort-default").by_rule("bias")
    assert [(f.expected, f.found) for f in findings] == [("int32", "int8")]


def test_bias_left_in_float_warns():
    (f,) = check(conv(bias="float"), "ort-default").by_rule("bias")
    assert f.severity == "warning" and f.node == "y" and f.tensor == "b" and f.found == "float"


def test_bias_quantized_where_profile_keeps_float_warns():
    prof = custom(bias={"quantize": False})
    (f,) = check(conv(), prof).by_rule("bias")
    assert f.severity == "warning" and f.tensor == "b"
    assert not check(conv(bias="float"), prof).by_rule("bias")


def test_matmul_add_int32_bias_is_a_bias():
    g = G(x=[1, 4])
    mm = g.node("MatMul", [g.qdq("x", 0.02, 128), g.const("w", WEIGHTS.T, 0.01, 0)], "mm")
    y = g.node("Add", [mm, g.const("b", [1, 2, 3], 0.02 * 0.01, 0, I32)], "y")
    report = check(g.model(g.qdq(y, 0.05, 128)), "ort-default")
    assert report.checked["biases"] == 1 and report.ok, report.render()


# ---------------------------------------------------------------------------------------------- coverage


def test_coverage_warns_for_float_compute_op():
    g = G(x=[1, 4])
    h = g.node("Relu", [g.qdq("x", 0.02, 128)], "h")
    y = g.node("MatMul", [h, g.init("w", WEIGHTS.T.astype(np.float32))], "y")
    (f,) = check(g.model(y), "ort-default").by_rule("coverage")
    assert f.severity == "warning" and f.node == "y" and f.tensor == "h" and f.found == "float (h, w)"


def test_coverage_follows_profile_quantize_list_and_exclude():
    model = softmax(1 / 256, -128)
    prof = custom("tflite-int8", ops={"quantize": ["Relu"]})
    assert not check(model, prof).by_rule("coverage")
    g = G(x=[1, 4])
    y = g.node("Relu", [g.node("Abs", [g.qdq("x", 0.02, 0, I8)], "a")], "y")
    (f,) = check(g.model(y), prof).by_rule("coverage")
    assert f.node == "y" and f.tensor == "a"
    prof = custom("tflite-int8", ops={"quantize": ["Relu", "Abs"], "exclude": []})
    assert {f.node for f in check(g.model(y), prof).by_rule("coverage")} == {"y"}


def test_coverage_passes_when_compute_is_quantized():
    assert not check(conv(), "ort-default").by_rule("coverage")


def test_weights_through_a_transpose_are_weights():
    g = G(x=[1, 4])
    wt = g.node("Transpose", [g.const("w", WEIGHTS, 0.01, 0)], "wt", perm=[1, 0])
    y = g.node("MatMul", [g.qdq("x", 0.02, 128), wt], "y")
    report = check(g.model(g.qdq(y, 0.05, 128)), "ort-default")
    assert report.ok and report.checked["weights"] == 1 and not report.by_rule("coverage")
