"""The only module that drives onnxruntime's quantizer.

Two steps, both on copies of the prepared model:

* :func:`plan` asks onnxruntime's QDQ quantizer which tensors it would quantize, with which role
  (weight or activation), which outputs it ties to their inputs, and which biases it makes int32. It
  also returns the activation ranges after onnxruntime's own adjustment (a Relu/Clip folded into its
  producer gives the producer its output's range), so hwquant computes qparams from the same ranges.
* :func:`emit` runs the quantizer (QDQ or QOperator) with every scale and zero point passed exactly
  through ``TensorQuantOverrides``. No calibration runs inside onnxruntime.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import onnx
from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer
from onnxruntime.quantization.qdq_quantizer import QDQQuantizer, QDQQuantTensorType
from onnxruntime.quantization.quant_utils import QuantizationMode, QuantType
from onnxruntime.quantization.registry import CreateQDQQuantizer, QDQRegistry, QLinearOpsRegistry

from hwquant.checker.graph import add_stub, without_initializers
from hwquant.profile.dtypes import NUMPY_TYPES

QUANT_TYPES: dict[str, QuantType] = {
    "uint8": QuantType.QUInt8,
    "int8": QuantType.QInt8,
    "uint16": QuantType.QUInt16,
    "int16": QuantType.QInt16,
    "uint4": QuantType.QUInt4,
    "int4": QuantType.QInt4,
}
Role = Literal["activation", "weight"]


def quantizable_op_types() -> list[str]:
    """Every op type onnxruntime's static quantizer knows (QDQ and QOperator registries)."""
    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor onnxruntime will quantize."""

    name: str
    role: Role
    constant: bool
    consumer: str | None  # node that made onnxruntime mark it (weights: the node using the weight)
    consumer_op: str | None
    shares: str | None  # onnxruntime reuses the qparams of this (input) tensor


@dataclass(frozen=True)
class PlannedBias:
    """A bias onnxruntime quantizes to int32 with scale = input scale x weight scale."""

    name: str
    node: str
    input: str
    weight: str


@dataclass
class Plan:
    tensors: dict[str, PlannedTensor]
    biases: dict[str, PlannedBias]
    ranges: dict[str, tuple[float, float]]
    """Activation ranges after onnxruntime's adjustment (Relu/Clip folding)."""


def _tensors_data(ranges: Mapping[str, tuple[float, float]]) -> TensorsData:
    return TensorsData(
        CalibrationMethod.MinMax,
        {n: TensorData(lowest=np.float32(lo), highest=np.float32(hi)) for n, (lo, hi) in ranges.items()},
    )


@dataclass(frozen=True)
class Recipe:
    """What onnxruntime's quantizer is told besides the qparams: the same for :func:`plan` and :func:`emit`.

    ``keep_relu`` keeps Relu/Clip in the graph; otherwise onnxruntime folds them into their producer,
    which is only right when non-negative tensors get zero point qmin. ``quantize_bias`` False leaves
    biases in float (QDQ only: QOperator ops take int32 biases). ``float_outputs``: op types quantized on
    their inputs only.
    """

    op_types: Sequence[str]
    activation_dtype: str
    weight_dtype: str
    nodes_to_exclude: Sequence[str] = ()
    keep_relu: bool = False
    quantize_bias: bool = True
    float_outputs: Sequence[str] = ()

    def options(self, **extra: object) -> dict[str, object]:
        # hwquant computes every scale itself; onnxruntime must not move a weight scale behind its back.
        return {
            "QDQDisableWeightAdjustForInt32Bias": True,
            "QDQKeepRemovableActivations": self.keep_relu,
            "QuantizeBias": self.quantize_bias,
            "OpTypesToExcludeOutputQuantization": list(self.float_outputs),
            **extra,
        }


_PLAN_VALUE_ELEMENTS = 1 << 14  # larger weights reach the planner without their values


def _planning_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` to plan on (onnxruntime rewrites the graph it plans on). Planning reads a
    weight's name and type, never its values, so weights of 16384 elements or more stored as raw bytes are
    copied without them: paraphrase-MiniLM's deepcopy took 0.035 s of each of the two plans."""
    shell = without_initializers(model)
    for init in model.graph.initializer:
        if not init.HasField("raw_data") or math.prod(init.dims) < _PLAN_VALUE_ELEMENTS:
            shell.graph.initializer.append(init)
        else:
            add_stub(shell.graph, init)
    return shell


def plan(model: onnx.ModelProto, ranges: Mapping[str, tuple[float, float]], recipe: Recipe) -> Plan:
    """Ask onnxruntime's QDQ quantizer what it would quantize (nothing is emitted)."""
    quantizer = QDQQuantizer(
        _planning_copy(model),
        False,
        False,
        QUANT_TYPES[recipe.weight_dtype],
        QUANT_TYPES[recipe.activation_dtype],
        _tensors_data(ranges),
        [],
        list(recipe.nodes_to_exclude),
        list(recipe.op_types),
        recipe.options(),
    )
    consumers: dict[str, onnx.NodeProto] = {}
    for node in quantizer.model.nodes():
        if quantizer.should_quantize_node(node):
            before = set(quantizer.tensors_to_quantize)
            CreateQDQQuantizer(quantizer, node).quantize()
            for name in set(quantizer.tensors_to_quantize) - before:
                consumers[name] = node
    initializers = {i.name for i in quantizer.model.initializer()}
    tensors = {}
    for name, info in quantizer.tensors_to_quantize.items():
        node = consumers.get(name)
        provider = info.quant_para_provider
        tensors[name] = PlannedTensor(
            name=name,
            role="weight" if info.tensor_type == QDQQuantTensorType.WEIGHT else "activation",
            constant=name in initializers,
            consumer=node.name if node is not None else None,
            consumer_op=node.op_type if node is not None else None,
            shares=provider.input_name if provider is not None else None,
        )
    biases = {
        name: PlannedBias(name, b.node_name, b.input_name, b.weight_name)
        for name, b in quantizer.bias_to_quantize.items()
    }
    adjusted = {
        name: (float(td.range_value[0]), float(td.range_value[1])) for name, td in quantizer.tensors_range.items()
    }
    return Plan(tensors=tensors, biases=biases, ranges=adjusted)


def override(
    dtype: str, scale: float | Sequence[float], zero_point: int | Sequence[int], axis: int | None = None
) -> list[dict[str, object]]:
    """One ``TensorQuantOverrides`` entry: per tensor, or per channel along ``axis``."""
    qtype = QUANT_TYPES[dtype]
    zp_type = NUMPY_TYPES[dtype]
    if axis is None:
        return [
            {
                "quant_type": qtype,
                "scale": np.array(scale, dtype=np.float32),
                "zero_point": np.array(zero_point, dtype=zp_type),
            }
        ]
    entries: list[dict[str, object]] = []
    for i, (s, z) in enumerate(zip(scale, zero_point, strict=True)):  # type: ignore[arg-type]
        entry: dict[str, object] = {
            "scale": np.array(s, dtype=np.float32),
            "zero_point": np.array(z, dtype=zp_type),
            "quant_type": qtype,
        }
        if i == 0:
            entry["axis"] = axis
        entries.append(entry)
    return entries


def emit(
    model: onnx.ModelProto,
    ranges: Mapping[str, tuple[float, float]],
    overrides: Mapping[str, list[dict[str, object]]],
    recipe: Recipe,
    fmt: Literal["qdq", "qoperator"] = "qdq",
) -> onnx.ModelProto:
    """Quantize ``model`` with onnxruntime, every qparam given through ``overrides``."""
    if fmt == "qoperator" and not recipe.quantize_bias:
        raise ValueError("QOperator output needs int32 biases")
    options = recipe.options(TensorQuantOverrides=dict(overrides))
    args = (
        copy.deepcopy(model),
        False,  # per_channel: per-channel weights come from the overrides (with their axis)
        False,  # reduce_range: ranges are in the profile, not a flag
    )
    data = _tensors_data(ranges)
    wtype, atype = QUANT_TYPES[recipe.weight_dtype], QUANT_TYPES[recipe.activation_dtype]
    op_types, nodes_to_exclude = list(recipe.op_types), list(recipe.nodes_to_exclude)
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime logs advice through the root logger
    try:
        if fmt == "qoperator":
            quantizer = ONNXQuantizer(
                *args,
                QuantizationMode.QLinearOps,
                True,
                wtype,
                atype,
                data,
                [],
                nodes_to_exclude,
                op_types,
                options,
            )
        else:
            quantizer = QDQQuantizer(*args, wtype, atype, data, [], nodes_to_exclude, op_types, options)
        quantizer.quantize_model()
        quantizer.model.topological_sort()  # as onnxruntime's save_model_to_file does
    finally:
        logging.getLogger().setLevel(level)
    return quantizer.model.model
