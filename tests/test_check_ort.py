"""The checker on models quantized by onnxruntime's own ``quantize_static`` (QDQ and QOperator).

These are the cases the issue names: what onnxruntime produces with its default and restricted options,
checked against the built-in profiles. The checker itself never imports onnxruntime; the tests do.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import modelzoo
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from hwquant import check

U8 = {"activation_type": QuantType.QUInt8}
I8_SYM = {"activation_type": QuantType.QInt8, "extra_options": {"ActivationSymmetric": True}}
U8_RESTRICTED = {"activation_type": QuantType.QUInt8, "extra_options": {"ActivationRestrictedAsymmetric": True}}
QOP = {"quant_format": QuantFormat.QOperator}


class Samples(CalibrationDataReader):
    """A few random inputs (a reader serves one quantize_static call)."""

    def __init__(self, model: onnx.ModelProto):
        self._it = iter(modelzoo.sample_inputs(model, 4))

    def get_next(self):
        return next(self._it, None)


@pytest.fixture(scope="module")
def ort(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``ort(builder, **quantize_static options)``: the path of the quantized model (cached per module).

    quantize_static writes ``<model>-inferred.onnx`` beside its input, so everything lives in a tmp dir.
    """
    folder = tmp_path_factory.mktemp("ort")
    cache: dict[str, Path] = {}
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime's "consider pre-processing" advice

    def quantize(builder: Callable[[], onnx.ModelProto], **options) -> Path:
        key = f"{builder.__name__}-{sorted(options.items(), key=str)}"
        if key not in cache:
            model = builder()
            stem = f"m{len(cache)}"
            src, dst = folder / f"{stem}.float.onnx", folder / f"{stem}.onnx"
            onnx.save(model, src)
            quantize_static(src, dst, Samples(model), **options)
            cache[key] = dst
        return cache[key]

    return quantize


def zero_points(path: Path) -> dict[str, int]:
    """Every scalar zero point initializer of a QDQ model, by the DequantizeLinear input it belongs to."""
    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and len(node.input) > 2 and inits[node.input[2]].dtype == np.uint8:
            out[node.input[0]] = int(inits[node.input[2]])
    return out


# ---------------------------------------------------------------------------------------------- restricted-u8


def test_default_uint8_fails_restricted_u8_naming_each_bad_zero_point(ort):
    path = ort(modelzoo.cnn, **U8)
    report = check(path, "restricted-u8")
    assert not report.ok
    bad = {f.tensor for f in report.by_rule("zero-point")}
    # exactly the tensors whose stored zero point is neither 0 nor 128 (activations quantized by a Q node
    # are named by the float tensor they quantize)
    expected = {
        name.removesuffix("_QuantizeLinear_Output") for name, z in zero_points(path).items() if z not in (0, 128)
    }
    assert bad == expected and bad
    assert {f.rule for f in report.findings} == {"zero-point"}
    assert all(f.severity == "error" and f.role == "activation" for f in report.findings)


def test_restricted_asymmetric_cnn_passes_restricted_u8(ort):
    report = check(ort(modelzoo.cnn, **U8_RESTRICTED), "restricted-u8")
    assert report.ok and not report.findings, report.render()
    assert report.checked["weights"] == 4 and report.checked["biases"] == 4


def test_restricted_asymmetric_transformer_fails_on_matmul_add_bias_constants(ort):
    report = check(ort(modelzoo.transformer, **U8_RESTRICTED), "restricted-u8")
    assert not report.ok
    flagged = {f.tensor for f in report.errors}
    assert flagged, report.render()
    bias_constants = {f"l{i}.{p}.b_quantized" for i in range(2) for p in ("q", "k", "v", "o", "fc1", "fc2")}
    # everything flagged is one of those constants, quantized as a uint8 activation that the option missed
    assert flagged <= bias_constants
    assert all(f.rule == "zero-point" and f.role == "activation" for f in report.errors)


# ---------------------------------------------------------------------------------------------- tensorrt-int8


def test_uint8_asymmetric_fails_tensorrt(ort):
    report = check(ort(modelzoo.cnn, **U8), "tensorrt-int8")
    assert not report.ok
    assert {f.tensor for f in report.by_rule("dtype")} >= {"input", "logits"}


@pytest.mark.parametrize("builder", [modelzoo.cnn, modelzoo.transformer])
def test_int8_symmetric_passes_tensorrt(ort, builder):
    report = check(ort(builder, **I8_SYM), "tensorrt-int8")
    assert report.ok, report.render()


def test_int8_symmetric_per_channel_passes_tensorrt(ort):
    report = check(ort(modelzoo.cnn, per_channel=True, **I8_SYM), "tensorrt-int8")
    assert report.ok, report.render()


# ---------------------------------------------------------------------------------------------- other rules


def test_per_channel_weights_fail_a_per_tensor_only_profile(ort):
    report = check(ort(modelzoo.cnn, per_channel=True, **U8), "ort-default")
    assert {f.tensor for f in report.by_rule("per-channel")} == {
        "conv1.w_quantized",
        "conv2a.w_quantized",
        "conv2b.w_quantized",
        "fc.w_quantized",
    }
    assert not check(ort(modelzoo.cnn, **U8), "ort-default").findings


def test_softmax_with_non_fixed_qparams_fails_tflite(ort):
    report = check(ort(modelzoo.cnn, activation_type=QuantType.QInt8), "tflite-int8")
    (f,) = report.by_rule("fixed-output")
    assert f.node == "softmax" and "0.00390625" in f.expected and "-128" in f.expected


def test_softmax_with_fixed_qparams_override_passes_tflite(ort):
    override = {"probs": [{"scale": np.array(1 / 256, np.float32), "zero_point": np.array(-128, np.int8)}]}
    options = {"activation_type": QuantType.QInt8, "extra_options": {"TensorQuantOverrides": override}}
    report = check(ort(modelzoo.cnn, **options), "tflite-int8")
    assert not report.by_rule("fixed-output")
    # onnxruntime quantizes Concat inputs independently: TFLite's same-qparams rule catches it
    assert [f.node for f in report.by_rule("shared-qparams")] == ["concat"]


def test_sigmoid_tanh_16_bit_fail_qnn_fixed_outputs(ort):
    report = check(ort(modelzoo.activations_model, activation_type=QuantType.QUInt16), "qnn-htp-a16w8")
    assert {f.node for f in report.by_rule("fixed-output")} == {"sigmoid", "tanh"}


def test_excluded_node_is_a_coverage_warning(ort):
    report = check(ort(modelzoo.cnn, nodes_to_exclude=["fc"], **U8), "ort-default")
    (f,) = report.by_rule("coverage")
    assert (f.node, f.severity) == ("fc", "warning")
    assert report.ok  # a warning does not fail the model


def test_if_subgraph_model_is_not_a_pass(ort):
    report = check(ort(modelzoo.if_subgraphs, **U8), "ort-default")
    assert not report.ok and report.by_rule("nothing-quantized")
    assert len(report.by_rule("coverage")) == 2


def test_constant_node_weights_are_checked_as_weights(ort):
    # Paddle-style Constant weights: onnxruntime quantizes them like activations (uint8)
    report = check(ort(modelzoo.constant_weights, **U8), "ort-default")
    assert {f.tensor for f in report.by_rule("dtype")} == {"conv1.w", "conv2a.w", "conv2b.w", "fc.w"}
    assert all(f.role == "weight" for f in report.by_rule("dtype"))


# ---------------------------------------------------------------------------------------------- QOperator


def test_qoperator_model_is_checked_like_qdq(ort):
    qop = ort(modelzoo.cnn, **U8, **QOP)
    ok = check(qop, "ort-default")
    assert ok.ok and ok.format == "QOperator", ok.render()
    assert ok.checked == {**check(ort(modelzoo.cnn, **U8), "ort-default").checked, "nodes": ok.checked["nodes"]}
    bad = check(qop, "restricted-u8")
    assert not bad.ok and {f.rule for f in bad.findings} == {"zero-point"}
    assert len(bad.findings) == len(check(ort(modelzoo.cnn, **U8), "restricted-u8").findings)


def test_qoperator_restricted_passes_and_per_channel_fails(ort):
    assert check(ort(modelzoo.cnn, **U8_RESTRICTED, **QOP), "restricted-u8").ok
    report = check(ort(modelzoo.cnn, per_channel=True, **U8, **QOP), "ort-default")
    assert len(report.by_rule("per-channel")) == 4


def test_qoperator_concat_and_softmax_against_tflite(ort):
    report = check(ort(modelzoo.cnn, activation_type=QuantType.QInt8, **QOP), "tflite-int8")
    # QLinearSoftmax uses onnxruntime's fixed (1/256, -128); QLinearConcat inputs keep their own scales
    assert not report.by_rule("fixed-output")
    assert [f.node for f in report.by_rule("shared-qparams")] == ["concat_quant"]


def test_qoperator_transformer(ort):
    report = check(ort(modelzoo.transformer, **U8, **QOP), "ort-default")
    assert report.ok, report.render()
    assert report.checked["weights"] >= 12


# ---------------------------------------------------------------------------------------------- layering


def test_checker_does_not_import_onnxruntime(ort):
    path = ort(modelzoo.cnn, **U8)
    code = (
        "import sys, hwquant\n"
        f"r = hwquant.check({str(path)!r}, 'ort-default')\n"
        "assert r.ok\n"
        "assert 'onnxruntime' not in sys.modules, 'the checker imported onnxruntime'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
