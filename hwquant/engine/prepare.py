"""Load a float model and prepare its graph the way quantization needs it.

Everything happens on a copy, in a temporary directory the caller owns: the input model and its folder
are never written to.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from hwquant.engine.calibrate import model_fingerprint
from hwquant.errors import ModelError

log = logging.getLogger(__name__)

QUANTIZED_OP_TYPES = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "QLinearAdd",
        "QLinearMul",
        "QLinearConcat",
        "QLinearSoftmax",
        "QLinearSigmoid",
        "QLinearLeakyRelu",
        "QLinearAveragePool",
        "QLinearGlobalAveragePool",
        "ConvInteger",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "QGemm",
        "QAttention",
        "DynamicQuantizeMatMul",
        "MatMulNBits",
    }
)
MAX_PROTOBUF = 2**31 - 1
_CONSTANT_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")


@dataclass
class Prepared:
    """The prepared float model, where it was written, and what preparation changed."""

    model: onnx.ModelProto
    path: Path
    source: str
    fingerprint: str = ""
    """sha256 of the input graph, so a saved calibration is never applied to another model."""
    constants_folded: int = 0
    opset_from: int | None = None
    opset_to: int | None = None
    notes: list[str] = field(default_factory=list)


def load_model(model: str | Path | onnx.ModelProto) -> tuple[onnx.ModelProto, str]:
    """A private copy of ``model`` (path or ModelProto, external data loaded) and a label naming it."""
    if isinstance(model, onnx.ModelProto):
        return copy.deepcopy(model), f"<ModelProto {model.graph.name or 'unnamed'}>"
    path = Path(model)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    try:
        loaded = onnx.load(str(path), load_external_data=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    if not loaded.graph.node:
        raise ModelError(f"{path}: the model has no nodes (is it an ONNX model?)")
    return loaded, str(path)


def check_valid(model: onnx.ModelProto, source: str) -> None:
    """Raise :class:`ModelError` naming the model when onnx.checker rejects it (e.g. nodes out of order)."""
    if model.ByteSize() >= MAX_PROTOBUF:
        return  # the in-memory checker cannot take it; onnxruntime reports problems when calibrating
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise ModelError(f"{source}: not a valid ONNX model: {exc}") from None


def opset_version(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ModelError("the model imports no default-domain opset")


def refuse_quantized(model: onnx.ModelProto, source: str) -> None:
    """Raise when the model already holds quantization operators."""
    found = sorted({n.op_type for n in model.graph.node if n.op_type in QUANTIZED_OP_TYPES})
    if found:
        raise ModelError(
            f"{source}: the model is already quantized (it contains {', '.join(found)}); "
            "quantize the float model instead, or use `hwquant check` to verify this one"
        )


def fold_constants_into_initializers(model: onnx.ModelProto) -> int:
    """Turn main-graph ``Constant`` nodes into initializers, so weights are quantized as weights.

    Paddle exports keep weights as Constant nodes; onnxruntime then treats them as activations and the
    model does not shrink. Returns the number of nodes folded.
    """
    graph = model.graph
    outputs = {o.name for o in graph.output}
    keep, folded = [], 0
    for node in graph.node:
        attr = node.attribute[0] if node.op_type == "Constant" and len(node.attribute) == 1 else None
        if attr is None or attr.name not in _CONSTANT_ATTRS or node.output[0] in outputs:
            keep.append(node)
            continue
        value = onnx.helper.get_attribute_value(attr)
        if attr.name == "value":
            tensor = copy.deepcopy(value)
        else:
            dtype = np.float32 if attr.name.startswith("value_float") else np.int64
            tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype))
        tensor.name = node.output[0]
        graph.initializer.append(tensor)
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(keep)
    return folded


def raise_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """Convert the model to at least opset ``target`` (per-channel DequantizeLinear needs 13)."""
    current = opset_version(model)
    if current >= target:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, target)
    except Exception as exc:
        raise ModelError(
            f"the model is at opset {current} and per-channel quantization needs opset {target}, "
            f"but onnx's version converter failed: {exc}"
        ) from None
    return converted


def infer_shapes(model: onnx.ModelProto, workdir: Path) -> tuple[onnx.ModelProto, str]:
    """Shape inference: onnxruntime's symbolic inference, falling back to onnx's when it fails."""
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)
        if inferred is not None:
            return inferred, "symbolic"
    except Exception as exc:  # symbolic inference fails on many real exports
        log.info("symbolic shape inference failed (%s); using onnx shape inference", exc)
    if model.ByteSize() < MAX_PROTOBUF:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False), "onnx"
    src, dst = workdir / "infer_in.onnx", workdir / "infer_out.onnx"
    onnx.save(model, str(src), save_as_external_data=True, location="infer_in.data")
    onnx.shape_inference.infer_shapes_path(str(src), str(dst))
    return onnx.load(str(dst)), "onnx (path)"


def save_model(model: onnx.ModelProto, path: Path) -> None:
    """Save, with external data beside it when the model is over the 2 GB protobuf limit."""
    if model.ByteSize() >= MAX_PROTOBUF:
        onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".data")
    else:
        onnx.save(model, str(path))


def prepare(model: str | Path | onnx.ModelProto, workdir: Path, *, per_channel: bool) -> Prepared:
    """Load ``model`` and prepare it for quantization inside ``workdir``."""
    proto, source = load_model(model)
    check_valid(proto, source)
    refuse_quantized(proto, source)
    prepared = Prepared(
        model=proto, path=workdir / "prepared.onnx", source=source, fingerprint=model_fingerprint(proto)
    )
    prepared.constants_folded = fold_constants_into_initializers(proto)
    if prepared.constants_folded:
        prepared.notes.append(f"{prepared.constants_folded} Constant nodes turned into initializers")
    if per_channel and opset_version(proto) < 13:
        prepared.opset_from = opset_version(proto)
        proto = raise_opset(proto, 13)
        prepared.opset_to = 13
        prepared.notes.append(f"opset raised from {prepared.opset_from} to 13 for per-channel weights")
    proto, how = infer_shapes(proto, workdir)
    prepared.notes.append(f"shapes inferred ({how})")
    prepared.model = proto
    save_model(proto, prepared.path)
    return prepared
