"""Reading a quantized ONNX model: which tensors are quantized, with which parameters, in which role.

Works on QDQ models (QuantizeLinear/DequantizeLinear in the standard or com.microsoft domain) and on
QOperator models (QLinearConv, QLinearMatMul, QGemm, QLinearAdd, QLinearConcat, ...), and on both
mixed. Uses ``onnx`` and numpy only.

A *quantized tensor* is an integer tensor together with the scale and zero point it is read or written
with. It is keyed by the integer tensor's name: the output of a QuantizeLinear, the input of a
DequantizeLinear, or a QLinear* input/output. Every place that names its qparams is a *declaration*;
they must agree.

Roles: a quantized tensor is a **weight** when its value is a constant feeding the weight input of
Conv/ConvTranspose (input 1), Gemm (B, or a constant A), MatMul (either side) or the scale of a
normalisation (input 1); a **bias** when it feeds input 2 of Conv/ConvTranspose/Gemm/normalisations
(or is an int32 constant added to a MatMul output); an **activation** otherwise, constants quantized
like activations included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import AttributeProto, NodeProto, TensorProto, numpy_helper

from hwquant.errors import ModelError
from hwquant.profile.dtypes import DTYPE_OF_ONNX, DTYPE_RANGES

QDQ_DOMAINS = {"", "ai.onnx", "com.microsoft"}
FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE}
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
NORM_OPS = ("LayerNormalization", "InstanceNormalization", "BatchNormalization")
# Ops that only move data: a weight may pass through them between its DequantizeLinear and its consumer.
PASS_THROUGH = {"Identity", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten"}
# Inputs that hold a weight when constant, and the bias input, per (base) op type.
WEIGHT_INPUTS: dict[str, tuple[int, ...]] = {
    "Conv": (1,),
    "ConvTranspose": (1,),
    "Gemm": (1, 0),
    "MatMul": (1, 0),
    **{op: (1,) for op in NORM_OPS},
}
BIAS_INPUT: dict[str, int] = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2, **{op: 2 for op in NORM_OPS}}
# Dynamically or weight-only quantized ops (activation qparams computed at run time, or packed weights):
# they count as quantized for coverage, but hold no static qparams to check.
DYNAMIC_OPS = {
    "MatMulInteger": "MatMul",
    "ConvInteger": "Conv",
    "DynamicQuantizeMatMul": "MatMul",
    "MatMulIntegerToFloat": "MatMul",
    "DynamicQuantizeLSTM": "LSTM",
    "DynamicQuantizeLinear": "DynamicQuantizeLinear",
    "MatMulNBits": "MatMul",
    "MatMulBnb4": "MatMul",
    "GatherBlockQuantized": "Gather",
}


@dataclass(frozen=True)
class _QOpSpec:
    """Layout of a QOperator node: (value, scale, zero point) input indices in base-op order, and
    (scale, zero point) indices for each output. A scale index of None marks a raw input (int32 bias,
    Where's condition). ``inputs=None`` is QLinearConcat's layout (output qparams first, then triples)."""

    base: str
    inputs: tuple[tuple[int, int | None, int | None], ...] | None
    outputs: tuple[tuple[int, int], ...]


_UNARY_IN = ((0, 1, 2),)
_UNARY_OUT = ((3, 4),)
QOPERATOR: dict[str, _QOpSpec] = {
    "QLinearConv": _QOpSpec("Conv", ((0, 1, 2), (3, 4, 5), (8, None, None)), ((6, 7),)),
    "QLinearConvTranspose": _QOpSpec("ConvTranspose", ((0, 1, 2), (3, 4, 5), (8, None, None)), ((6, 7),)),
    "QLinearMatMul": _QOpSpec("MatMul", ((0, 1, 2), (3, 4, 5)), ((6, 7),)),
    "QGemm": _QOpSpec("Gemm", ((0, 1, 2), (3, 4, 5), (6, None, None)), ((7, 8),)),
    "QLinearAdd": _QOpSpec("Add", ((0, 1, 2), (3, 4, 5)), ((6, 7),)),
    "QLinearMul": _QOpSpec("Mul", ((0, 1, 2), (3, 4, 5)), ((6, 7),)),
    "QLinearWhere": _QOpSpec("Where", ((0, None, None), (1, 2, 3), (4, 5, 6)), ((7, 8),)),
    "QLinearConcat": _QOpSpec("Concat", None, ((0, 1),)),
    **{
        f"QLinear{op}": _QOpSpec(op, _UNARY_IN, _UNARY_OUT)
        for op in ("Sigmoid", "LeakyRelu", "Softmax", "AveragePool", "GlobalAveragePool", "ReduceMean")
    },
}


def dtype_name(elem_type: int) -> str:
    """``uint8``, ``int32``, ``float8e4m3fn``, ... for an ONNX element type number."""
    if elem_type in DTYPE_OF_ONNX:
        return DTYPE_OF_ONNX[elem_type]
    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"type{elem_type}"


@dataclass
class Decl:
    """One place that states a quantized tensor's parameters."""

    node: str
    scale: np.ndarray | None  # float64; None when not a constant
    zero_point: np.ndarray | None  # int64; None when not a constant (absent = zeros)
    axis: int | None  # raw axis attribute (per-channel only when the scale has more than one value)
    block_size: int = 0
    implicit: bool = False  # QOperator bias: scale and zero point are implied by the op


@dataclass
class QTensor:
    """A quantized tensor with its parameters, role and (for constants) its stored values."""

    name: str
    label: str
    node: str
    dtype: str
    decl: Decl
    decls: list[Decl] = field(default_factory=list)
    constant: bool = False
    values: np.ndarray | None = None  # stored integer values, when constant and known
    rank: int | None = None
    role: str = "activation"
    weight_of: tuple[NodeView, int] | None = None  # consumer view and input index
    bias_of: NodeView | None = None  # the node whose input 0 x input 1 scale the bias scale must be

    @property
    def scale(self) -> np.ndarray | None:
        return self.decl.scale

    @property
    def zero_point(self) -> np.ndarray | None:
        return self.decl.zero_point

    @property
    def known(self) -> bool:
        """True when the scale and zero point are constants (or implied, for QOperator biases)."""
        return self.decl.implicit or (self.decl.scale is not None and self.decl.zero_point is not None)

    @property
    def per_channel(self) -> bool:
        return self.decl.scale is not None and self.decl.scale.size > 1

    @property
    def axis(self) -> int | None:
        """The channel axis, normalised to be non-negative when the rank is known."""
        a = self.decl.axis
        if a is None or self.rank is None or self.rank == 0:
            return a
        return a % self.rank


@dataclass
class NodeView:
    """A node seen through its base op type, with which of its inputs and outputs are quantized.

    For QOperator nodes ``inputs`` lists the data inputs in the base op's order (QLinearConv: x, w, bias).
    """

    label: str
    op: str
    node: NodeProto
    inputs: list[str]
    outputs: list[str]
    qoperator: bool = False
    dynamic: bool = False
    qinputs: list[str | None] = field(default_factory=list)
    qoutputs: list[list[str]] = field(default_factory=list)

    def attr(self, name: str, default=None):
        for a in self.node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default


@dataclass
class QuantGraph:
    """Everything the rules need about one model."""

    tensors: dict[str, QTensor]
    views: list[NodeView]
    deq: dict[str, str]  # float output of a DequantizeLinear -> integer tensor
    producer: dict[str, NodeView]
    types: dict[str, int]
    n_nodes: int
    n_dynamic: int
    qdq_edges: int  # DequantizeLinear outputs read by float ops

    @property
    def format(self) -> str:
        has_qop = any(v.qoperator for v in self.views)
        if not self.tensors:
            return "float"
        if has_qop and self.qdq_edges:
            return "mixed"
        return "QOperator" if has_qop else "QDQ"

    def source(self, name: str, depth: int = 4) -> str | None:
        """The quantized tensor ``name`` reads: directly, through a DequantizeLinear, or through a few
        data-movement ops (Reshape, Transpose, ...) after one."""
        if not name:
            return None
        if name in self.deq:
            return self.deq[name]
        if name in self.tensors:
            return name
        view = self.producer.get(name)
        if depth > 0 and view is not None and view.op in PASS_THROUGH and not view.qoperator and view.inputs:
            return self.source(view.inputs[0], depth - 1)
        return None


# ---------------------------------------------------------------------------------------------- loading


def load_model(model: object) -> tuple[onnx.ModelProto, str]:
    """The model and a label for it (its path, or its graph name). Raises :class:`ModelError` naming the
    file when it is missing or not an ONNX model."""
    if isinstance(model, onnx.ModelProto):
        if not model.HasField("graph") or not model.graph.node:
            raise ModelError("the ModelProto has no graph nodes: nothing to check")
        return model, model.graph.name or "<ModelProto>"
    if not isinstance(model, (str, Path)) and not hasattr(model, "__fspath__"):
        raise ModelError(f"expected a path or an onnx.ModelProto, got {type(model).__name__}")
    path = Path(model)  # type: ignore[arg-type]
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, not an ONNX model file")
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a readable ONNX model ({detail})") from None
    if proto.ir_version == 0 or not proto.HasField("graph") or not proto.graph.node:
        raise ModelError(f"{path}: not an ONNX model (no IR version or no graph nodes)")
    return proto, str(path)


# ---------------------------------------------------------------------------------------------- analysis


def _subgraphs(node: NodeProto):
    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            yield a.name, a.g
        elif a.type == AttributeProto.GRAPHS:
            for i, g in enumerate(a.graphs):
                yield f"{a.name}.{i}", g


def _label(node: NodeProto, index: int, prefix: str) -> str:
    return prefix + (node.name or f"{node.op_type}#{index}")


class _Builder:
    def __init__(self, model: onnx.ModelProto):
        self.model = model
        self.consts: dict[str, TensorProto] = {}
        self.types: dict[str, int] = {}
        self.tensors: dict[str, QTensor] = {}
        self.views: list[NodeView] = []
        self.deq: dict[str, str] = {}
        self.quant: dict[str, list[str]] = {}
        self.producer: dict[str, NodeView] = {}
        self.n_nodes = 0
        self.n_dynamic = 0
        self._arrays: dict[str, np.ndarray | None] = {}

    # ---- constants and types
    def collect(self, graph: onnx.GraphProto) -> None:
        for init in graph.initializer:
            self.consts[init.name] = init
            self.types.setdefault(init.name, init.data_type)
        for vi in [*graph.input, *graph.output, *graph.value_info]:
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                self.types.setdefault(vi.name, vi.type.tensor_type.elem_type)
        for node in graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                tensor = _constant_value(node)
                if tensor is not None:
                    self.consts[node.output[0]] = tensor
                    self.types.setdefault(node.output[0], tensor.data_type)
            for _, g in _subgraphs(node):
                self.collect(g)

    def infer_types(self) -> None:
        try:
            inferred = onnx.shape_inference.infer_shapes(without_weights(self.model))
        except Exception:  # types are a convenience; the checker works without them
            return
        for vi in inferred.graph.value_info:
            if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
                self.types.setdefault(vi.name, vi.type.tensor_type.elem_type)

    def array(self, name: str) -> np.ndarray | None:
        """The value of constant ``name`` (following Identity nodes), or None."""
        if not name or name not in self.consts:
            return None
        if name not in self._arrays:
            try:
                self._arrays[name] = numpy_helper.to_array(self.consts[name])
            except Exception:
                self._arrays[name] = None
        return self._arrays[name]

    # ---- walking
    def walk(self, graph: onnx.GraphProto, prefix: str = "") -> None:
        for index, node in enumerate(graph.node):
            self.n_nodes += 1
            label = _label(node, index, prefix)
            domain_ok = node.domain in QDQ_DOMAINS
            if node.op_type == "Identity" and node.input and node.input[0] in self.consts:
                self.consts.setdefault(node.output[0], self.consts[node.input[0]])
            if domain_ok and node.op_type == "QuantizeLinear":
                self._quantize_linear(node, label)
            elif domain_ok and node.op_type == "DequantizeLinear":
                self._dequantize_linear(node, label)
            elif domain_ok and node.op_type in QOPERATOR:
                self._qoperator(node, label, QOPERATOR[node.op_type])
            elif node.op_type != "Constant":
                dynamic = node.op_type in DYNAMIC_OPS
                self.n_dynamic += dynamic
                view = NodeView(
                    label, DYNAMIC_OPS.get(node.op_type, node.op_type), node, list(node.input), list(node.output)
                )
                view.dynamic = dynamic
                self._add_view(view)
            for attr_name, g in _subgraphs(node):
                self.walk(g, f"{label}[{attr_name}]/")

    def _add_view(self, view: NodeView) -> None:
        self.views.append(view)
        for out in view.outputs:
            if out:
                self.producer[out] = view

    def _qparams(self, node: NodeProto, scale_idx: int, zp_idx: int | None) -> tuple:
        """(scale, zero point, zero point elem type) of a node's qparam inputs; scale or zero point is None
        when not a constant. An absent zero point is zeros of the default type."""
        scale_name = node.input[scale_idx] if scale_idx < len(node.input) else ""
        zp_name = node.input[zp_idx] if zp_idx is not None and zp_idx < len(node.input) else ""
        scale = _numbers(self.array(scale_name), np.float64)
        if not zp_name:
            return scale, np.zeros(1, dtype=np.int64), None
        zp_type = self.consts[zp_name].data_type if zp_name in self.consts else self.types.get(zp_name)
        zp = _numbers(self.array(zp_name), np.int64)  # None for float8 zero points and the like
        return scale, zp, zp_type

    def _declare(
        self,
        name: str,
        decl: Decl,
        dtype: str,
        label: str,
        constant: bool = False,
        values: np.ndarray | None = None,
        rank: int | None = None,
    ) -> QTensor:
        t = self.tensors.get(name)
        if t is None:
            t = QTensor(name=name, label=label, node=decl.node, dtype=dtype, decl=decl)
            self.tensors[name] = t
        elif t.dtype == "unknown" and dtype != "unknown":
            t.dtype = dtype
        t.decls.append(decl)
        t.constant = t.constant or constant
        if t.values is None and values is not None:
            t.values = values
        if t.rank is None and rank is not None:
            t.rank = rank
        return t

    def _dtype_of(self, name: str, zp_type: int | None, fallback: str = "unknown") -> str:
        if zp_type:
            return dtype_name(zp_type)
        if name in self.tensors and self.tensors[name].dtype != "unknown":
            return self.tensors[name].dtype
        if name in self.types:
            return dtype_name(self.types[name])
        return fallback

    def _quantize_linear(self, node: NodeProto, label: str) -> None:
        if len(node.input) < 2 or not node.output:
            return
        scale, zp, zp_type = self._qparams(node, 1, 2)
        view = NodeView(label, "QuantizeLinear", node, list(node.input), list(node.output))
        out_dtype = view.attr("output_dtype", 0)
        dtype = self._dtype_of(node.output[0], zp_type or out_dtype or None, fallback="uint8")
        decl = Decl(label, scale, zp, view.attr("axis", 1), view.attr("block_size", 0) or 0)
        x = self.array(node.input[0])
        values = None
        if x is not None and scale is not None and zp is not None and dtype in DTYPE_RANGES:
            try:
                values = _quantize(np.asarray(x).astype(np.float64), scale, zp, decl, dtype)
            except (TypeError, ValueError):  # a constant numpy cannot read as numbers: leave it unchecked
                values = None
        self._declare(
            node.output[0],
            decl,
            dtype,
            label=node.input[0],
            constant=x is not None,
            values=values,
            rank=None if x is None else np.ndim(x),
        )
        self.quant.setdefault(node.input[0], []).append(node.output[0])

    def _dequantize_linear(self, node: NodeProto, label: str) -> None:
        if len(node.input) < 2 or not node.output:
            return
        scale, zp, zp_type = self._qparams(node, 1, 2)
        name = node.input[0]
        x = self.array(name)
        x_type = self.consts[name].data_type if name in self.consts else None
        dtype = self._dtype_of(name, zp_type or x_type)
        view = NodeView(label, "DequantizeLinear", node, list(node.input), list(node.output))
        decl = Decl(label, scale, zp, view.attr("axis", 1), view.attr("block_size", 0) or 0)
        values = _integers(x)
        self._declare(
            name, decl, dtype, label=name, constant=x is not None, values=values, rank=None if x is None else x.ndim
        )
        self.deq[node.output[0]] = name

    def _qoperator(self, node: NodeProto, label: str, spec: _QOpSpec) -> None:
        inputs = list(node.input)
        if spec.inputs is None:  # QLinearConcat: y_scale, y_zp, then (x, x_scale, x_zp) triples
            slots = [(i, i + 1, i + 2) for i in range(2, len(inputs) - 2, 3)]
        else:
            slots = [s for s in spec.inputs if s[0] < len(inputs)]
        view = NodeView(label, spec.base, node, [inputs[s[0]] for s in slots], list(node.output), qoperator=True)
        for slot, (vi, si, zi) in enumerate(slots):
            name = inputs[vi]
            if not name:
                continue
            x = self.array(name)
            x_type = self.consts[name].data_type if name in self.consts else None
            values = _integers(x)
            rank = None if x is None else x.ndim
            if si is None:
                if spec.base == "Where" and slot == 0:
                    continue  # the condition is boolean
                decl = Decl(label, None, None, None, implicit=True)  # int32 bias: scale x_scale * w_scale, zp 0
                self._declare(name, decl, self._dtype_of(name, x_type), name, x is not None, values, rank)
                continue
            scale, zp, zp_type = self._qparams(node, si, zi)
            axis = _qoperator_axis(view, slot, rank)
            decl = Decl(label, scale, zp, axis)
            self._declare(name, decl, self._dtype_of(name, zp_type or x_type), name, x is not None, values, rank)
        for j, (si, zi) in enumerate(spec.outputs):
            if j >= len(node.output) or si >= len(inputs) or not inputs[si]:
                continue  # e.g. QGemm without y_scale has a float output
            scale, zp, zp_type = self._qparams(node, si, zi)
            out = node.output[j]
            self._declare(out, Decl(label, scale, zp, None), self._dtype_of(out, zp_type), out)
        self._add_view(view)

    # ---- second pass
    def finish(self) -> QuantGraph:
        g = QuantGraph(
            tensors=self.tensors,
            views=self.views,
            deq=self.deq,
            producer=self.producer,
            types=self.types,
            n_nodes=self.n_nodes,
            n_dynamic=self.n_dynamic,
            qdq_edges=0,
        )
        for view in self.views:
            view.qinputs = [self.deq.get(n) or (n if n in self.tensors else None) for n in view.inputs]
            view.qoutputs = [[*self.quant.get(o, []), *([o] if o in self.tensors else [])] for o in view.outputs]
            g.qdq_edges += sum(1 for n in view.inputs if n in self.deq and not view.qoperator)
        _assign_roles(g)
        return g


def _constant_value(node: NodeProto) -> TensorProto | None:
    for a in node.attribute:
        if a.name == "value" and a.type == AttributeProto.TENSOR:
            return a.t
        if a.name in ("value_float", "value_floats", "value_int", "value_ints"):
            value = onnx.helper.get_attribute_value(a)
            dtype = np.float32 if "float" in a.name else np.int64
            return numpy_helper.from_array(np.asarray(value, dtype=dtype), node.output[0])
    return None


def _broadcast(param: np.ndarray, decl: Decl, ndim: int) -> np.ndarray | None:
    """``param`` (per-tensor or per-axis) shaped to broadcast against a tensor of rank ``ndim``."""
    if param.size == 1:
        return param.reshape(())
    if decl.block_size or decl.axis is None or ndim == 0:
        return None
    axis = decl.axis % ndim
    shape = [1] * ndim
    shape[axis] = param.size
    return param.reshape(shape)


def _quantize(x: np.ndarray, scale: np.ndarray, zp: np.ndarray, decl: Decl, dtype: str) -> np.ndarray | None:
    """QuantizeLinear of a constant: round half to even, add the zero point, saturate."""
    s = _broadcast(scale, decl, x.ndim)
    z = _broadcast(zp, decl, x.ndim)
    if s is None or z is None:
        return None
    lo, hi = DTYPE_RANGES[dtype]
    with np.errstate(divide="ignore", invalid="ignore"):
        try:
            q = np.rint(x / s) + z
        except ValueError:  # shapes do not broadcast: leave the values unchecked
            return None
    q = np.nan_to_num(q, nan=0.0, posinf=hi, neginf=lo)
    return np.clip(q, lo, hi).astype(np.int64)


def _qoperator_axis(view: NodeView, slot: int, rank: int | None) -> int | None:
    """The channel axis a QOperator node implies for a per-channel scale on input ``slot``."""
    if view.op == "Conv":
        return 0
    if view.op == "ConvTranspose":
        return 1
    if view.op == "Gemm":
        if slot == 1:
            return 0 if view.attr("transB", 0) else 1
        return 1 if view.attr("transA", 0) else 0
    if view.op == "MatMul":
        r = rank if rank is not None else 2
        return r - 1 if slot == 1 else max(r - 2, 0)
    return None


def _assign_roles(g: QuantGraph) -> None:
    for view in g.views:
        if view.dynamic:
            continue
        for slot in WEIGHT_INPUTS.get(view.op, ()):
            if slot >= len(view.inputs):
                continue
            name = g.source(view.inputs[slot])
            t = g.tensors.get(name) if name else None
            if t is not None and t.constant and t.role == "activation":
                t.role, t.weight_of = "weight", (view, slot)
        bias_slot = BIAS_INPUT.get(view.op)
        if bias_slot is not None and bias_slot < len(view.inputs):
            name = g.source(view.inputs[bias_slot])
            if name:
                t = g.tensors[name]
                t.role, t.bias_of, t.weight_of = "bias", view, None
        if view.op == "Add" and not view.qoperator and len(view.inputs) == 2:
            # an int32 constant added to a MatMul's output is that MatMul's bias (MatMul -> Add pairs)
            for slot in (0, 1):
                name = g.source(view.inputs[slot])
                t = g.tensors.get(name) if name else None
                mm = g.producer.get(view.inputs[1 - slot])
                if t is not None and t.constant and t.dtype == "int32" and mm is not None and mm.op == "MatMul":
                    t.role, t.bias_of, t.weight_of = "bias", mm, None


_SHAPE_DATA_ELEMENTS = 1024  # smaller initializers keep their values for shape inference (Reshape targets)


def without_initializers(model: onnx.ModelProto, skip: tuple[str, ...] = ()) -> onnx.ModelProto:
    """A copy of ``model`` without the main graph's initializers (nor the graph fields named in ``skip``):
    the caller adds them back as it needs, so large weights are never copied."""
    shell = onnx.ModelProto()
    copy_fields(model, shell, skip=("graph",))
    copy_fields(model.graph, shell.graph, skip=("initializer", *skip))
    return shell


def add_stub(graph: onnx.GraphProto, init: onnx.TensorProto) -> onnx.TensorProto:
    """Declare ``init`` in ``graph`` by name, type and shape only (its values are not copied)."""
    stub = graph.initializer.add()
    stub.name, stub.data_type = init.name, init.data_type
    stub.dims.extend(init.dims)
    return stub


def without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` for shape and type inference and onnx.checker: large initializers stored as raw
    bytes (or as external data) become typed graph inputs, so nothing big is copied or serialised (on a
    2.3 GB model, inferring the full proto took 6 s; past 2 GB it fails). Small initializers keep their
    values (Reshape targets), and so do those stored in typed fields, which exporters use for small ones."""
    shell = without_initializers(model)
    g, sg = model.graph, shell.graph
    inputs = {i.name for i in g.input}
    for init in g.initializer:
        as_bytes = init.HasField("raw_data") or init.data_location == onnx.TensorProto.EXTERNAL
        if math.prod(init.dims) < _SHAPE_DATA_ELEMENTS or not as_bytes:
            sg.initializer.append(init)
        elif init.name not in inputs:
            sg.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return shell


def copy_fields(src, dst, skip: tuple[str, ...] = ()) -> None:
    """Copy every set field of protobuf message ``src`` into ``dst`` except those named in ``skip``."""
    for fd, value in src.ListFields():
        if fd.name in skip:
            continue
        if fd.is_repeated if hasattr(fd, "is_repeated") else fd.label == fd.LABEL_REPEATED:
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def analyse(model: onnx.ModelProto) -> QuantGraph:
    """Find every quantized tensor of ``model`` (subgraphs included), its parameters and its role."""
    b = _Builder(model)
    b.collect(model.graph)
    b.infer_types()
    b.walk(model.graph)
    return b.finish()


def _integers(value) -> np.ndarray | None:
    """Stored values as integers: integer arrays as they are (an int64 copy of a model's int8 weights took
    4.7 GB on a 2.3 GB model), others cast to int64 (None when absent or not numbers)."""
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        return value
    return _numbers(value, np.int64)


def _numbers(value, dtype) -> np.ndarray | None:
    """``value`` as an array of ``dtype``, or None when it is absent or not numbers numpy can cast."""
    if value is None:
        return None
    try:
        return np.asarray(value).astype(dtype)
    except (TypeError, ValueError):
        return None
