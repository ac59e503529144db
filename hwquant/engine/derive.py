"""Ranges that follow from other tensors' ranges, so that calibration need not fetch those tensors.

Calibration fetches every observed tensor from onnxruntime and reduces it in numpy: on a CNN that is most
of its cost. A tensor computed from another observed tensor by a known function often has a range that
follows from its source's, exactly or to float rounding:

* ``same``: Identity, Reshape, Flatten, Squeeze, Unsqueeze, Transpose, DepthToSpace, SpaceToDepth output
  their input's values (their histograms too);
* ``union``: Concat's values are its inputs' (histograms merge);
* ``map``: an elementwise function ``f`` of one observed tensor (Relu, LeakyRelu, Clip, HardSigmoid,
  HardSwish, Sigmoid, Tanh, Erf, and Add/Sub/Mul/Div with a scalar constant) has the range of ``f`` over its
  input's ``[min, max]``. Those functions are monotone, except HardSwish (and LeakyRelu with a negative
  slope) which turn once: ``f`` at the two ends is the data's range exactly (both ends are values of the
  data); where the input's range spans the turning point, the bound there is the function's extreme, which
  the data need not reach (HardSwish: -0.375 when the input spans -1.5), so the range may be wider than
  measured by that much, never narrower;
* ``affine``: ``a * x + b`` per channel along one axis, from the per-channel ranges of ``x`` (measured in
  the same numpy pass as its range): an inference BatchNormalization (axis 1), and Add/Sub/Mul/Div with a
  constant that varies along one axis only (a MatMul's bias, a per-channel scale).

``map`` and ``affine`` give ranges only: with histograms those tensors are measured. A ``same`` or
``map`` step nobody observes is derived too when the tensor after it is observed: in Paddle's HardSwish,
``x * Clip(x + 3, 0, 6) / 6``, the Clip output follows from ``x`` through ``x + 3``.

Only parameters no caller can override count (initializers that are not graph inputs); a tensor whose
function reads anything computed at run time is measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import onnx
from onnx import external_data_helper, helper, numpy_helper

from hwquant.engine.fold import batchnorm_affine
from hwquant.errors import CalibrationError

SAME_VALUES = {"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "DepthToSpace", "SpaceToDepth"}
ARITHMETIC = {"Add", "Sub", "Mul", "Div"}

Elementwise = Callable[[np.ndarray], np.ndarray]


class Derivation(NamedTuple):
    """How one tensor's range follows from ``sources``' (see the module docstring for the kinds)."""

    kind: str  # "same" | "union" | "map" | "affine"
    sources: list[str]
    fn: Elementwise | None = None  # map: the function, on float32 arrays
    turns: tuple[float, ...] = ()  # map: inputs where the function may change direction
    scale: np.ndarray | None = None  # affine: y = scale * x + shift per channel (float32, 1-D)
    shift: np.ndarray | None = None
    axis: int = 1  # affine: the channel axis of x


class _Constants(Mapping[str, np.ndarray]):
    """The values of the initializers no caller can override (not graph inputs, data in the model),
    converted when first read."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        overridable = {vi.name for vi in g.input}
        self.protos = {
            i.name: i
            for i in g.initializer
            if i.name not in overridable and not external_data_helper.uses_external_data(i)
        }
        self._values: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._values:
            self._values[name] = numpy_helper.to_array(self.protos[name])
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self.protos

    def __iter__(self):
        return iter(self.protos)

    def __len__(self) -> int:
        return len(self.protos)

    def is_vector(self, name: str) -> bool:
        """A constant with at most one dimension longer than 1 (cheap to read)."""
        return name in self.protos and sum(d != 1 for d in self.protos[name].dims) <= 1


def _attr(node: onnx.NodeProto, name: str, default: float) -> float:
    for a in node.attribute:
        if a.name == name:
            return float(helper.get_attribute_value(a))
    return default


def _clip_bounds(node: onnx.NodeProto, consts: Mapping[str, np.ndarray]) -> tuple[float, float] | None:
    """Clip's bounds: attributes before opset 11, optional constant inputs after; None if computed."""
    if len(node.input) == 1:
        return _attr(node, "min", -math.inf), _attr(node, "max", math.inf)
    bounds = [-math.inf, math.inf]
    for k, name in enumerate(node.input[1:3]):
        if name and name not in consts:
            return None
        if name:
            bounds[k] = float(consts[name].reshape(-1)[0])
    return bounds[0], bounds[1]


def elementwise(node: onnx.NodeProto, consts: Mapping[str, np.ndarray]) -> tuple[Elementwise, tuple] | None:
    """``(f, turns)`` for an activation whose range follows from its input's; None for any other node.
    ``consts``: the values of the initializers no caller can override."""
    op = node.op_type
    f32 = np.float32
    if op == "Relu":
        return (lambda x: np.maximum(x, f32(0))), ()
    if op == "LeakyRelu":
        alpha = f32(_attr(node, "alpha", 0.01))
        return (lambda x: np.where(x >= 0, x, alpha * x)), (0.0,)
    if op == "Clip":
        bounds = _clip_bounds(node, consts)
        if bounds is None:
            return None
        lo, hi = f32(bounds[0]), f32(bounds[1])
        return (lambda x: np.minimum(np.maximum(x, lo), hi)), ()
    if op == "HardSigmoid":
        alpha, beta = f32(_attr(node, "alpha", 0.2)), f32(_attr(node, "beta", 0.5))
        return (lambda x: np.clip(alpha * x + beta, f32(0), f32(1))), ()
    if op == "HardSwish":
        sixth, half = f32(1 / 6), f32(0.5)
        return (lambda x: x * np.clip(x * sixth + half, f32(0), f32(1))), (-1.5,)
    if op == "Sigmoid":
        return (lambda x: f32(1) / (f32(1) + np.exp(-x))), ()
    if op == "Tanh":
        return np.tanh, ()
    if op == "Erf":
        return np.vectorize(math.erf, otypes=[np.float32]), ()
    return None


def _arithmetic(node: onnx.NodeProto, consts: _Constants, shapes: Mapping[str, list]) -> Derivation | None:
    """Add/Sub/Mul/Div of an observed tensor and a float constant: a ``map`` for a scalar, an ``affine``
    for a constant that varies along one axis of the tensor (and does not broadcast it to more axes)."""
    if node.op_type not in ARITHMETIC or len(node.input) != 2:
        return None
    first, second = node.input
    if consts.is_vector(second) and first not in consts:
        x, c, x_first = first, consts[second], True
    elif consts.is_vector(first) and second not in consts and node.op_type != "Div":  # c / x is not monotone
        x, c, x_first = second, consts[first], False
    else:
        return None
    if c.dtype.kind != "f" or c.size == 0 or not np.isfinite(c).all() or (node.op_type == "Div" and (c == 0).any()):
        return None
    c = c.astype(np.float32)
    op = node.op_type
    if c.size == 1:
        v = c.reshape(-1)[0]
        fns = {"Add": lambda t: t + v, "Mul": lambda t: t * v, "Div": lambda t: t / v}
        return Derivation("map", [x], fns.get(op) or ((lambda t: t - v) if x_first else (lambda t: v - t)))
    ones = np.ones_like(c)
    if op == "Add":
        scale, shift = ones, c
    elif op == "Sub":
        scale, shift = (ones, -c) if x_first else (-ones, c)
    elif op == "Mul":
        scale, shift = c, np.zeros_like(c)
    else:
        scale, shift = ones / c, np.zeros_like(c)
    varying = [j for j, n in enumerate(c.shape) if n != 1]
    shape, out = shapes.get(x), shapes.get(node.output[0])
    if len(varying) != 1 or shape is None or len(shape) < c.ndim or out is None or len(out) != len(shape):
        return None
    axis = varying[0] - c.ndim
    if shape[axis] != c.size:  # x must have the channels itself, not be broadcast to them
        return None
    return Derivation("affine", [x], scale=scale.reshape(-1), shift=shift.reshape(-1), axis=axis)


def _batchnorm(node: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]) -> Derivation | None:
    affine = batchnorm_affine(node, inits)
    if affine is None:
        return None
    return Derivation("affine", [node.input[0]], scale=affine[0].astype(np.float32), shift=affine[1].astype(np.float32))


def _shapes(model: onnx.ModelProto) -> dict[str, list[int | None]]:
    """Inferred shapes (None for a symbolic or unknown dimension) of the tensors that have one."""
    g = model.graph
    out = {}
    for vi in (*g.value_info, *g.input, *g.output):
        tt = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and tt.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    return out


def derivations(model: onnx.ModelProto, requested: Sequence[str], histograms: bool) -> dict[str, Derivation]:
    """Tensors whose range (and histogram, with ``histograms``: ``same`` and ``union`` only) follows from
    requested tensors', in topological order: requested ones, and (without histograms) intermediates that
    are a ``same`` or ``map`` of a known tensor, so that a requested tensor after them is derived too (in
    ``HardSwish = x * Clip(x + 3, 0, 6) / 6`` the Clip output, from ``x``). Initializers are never
    sources: they are observed once, not once per sample. Only parameters no caller can override count
    (initializers that are not graph inputs)."""
    g = model.graph
    wanted = set(requested) - {i.name for i in g.initializer}
    consts = _Constants(model)
    shapes = _shapes(model)
    derived: dict[str, Derivation] = {}
    known = set(wanted)  # measured or derived
    for node in g.node:  # topological order
        if node.domain not in ("", "ai.onnx") or len(node.output) != 1 or not node.input or not node.input[0]:
            continue
        out = node.output[0]
        if out not in wanted and (histograms or node.input[0] not in known):
            continue
        d = None
        if node.op_type in SAME_VALUES:
            d = Derivation("same", [node.input[0]])
        elif node.op_type == "Concat":
            d = Derivation("union", [i for i in node.input if i])
        elif histograms:
            continue
        elif node.op_type == "BatchNormalization":
            d = _batchnorm(node, consts.protos)
        elif node.op_type in ARITHMETIC:
            d = _arithmetic(node, consts, shapes)
        elif (fn := elementwise(node, consts)) is not None:
            d = Derivation("map", [node.input[0]], *fn)
        if d is None or not all(s in known for s in d.sources):
            continue
        if out not in wanted and d.kind not in ("same", "map"):
            continue  # an intermediate: only what needs no per-channel or per-input bookkeeping
        if d.kind == "affine" and d.sources[0] in derived:
            continue  # per-channel ranges are measured
        derived[out] = d
        known.add(out)
    return derived


def map_range(d: Derivation, lo: float, hi: float) -> tuple[float, float]:
    """The range of ``d.fn`` over ``[lo, hi]``: its values at both ends and at the turns in between."""
    points = np.array([lo, hi, *(t for t in d.turns if lo < t < hi)], dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        values = d.fn(points)
    return float(values.min()), float(values.max())


def affine_range(d: Derivation, mins: np.ndarray, maxs: np.ndarray, t: str) -> tuple[float, float]:
    """The range of ``d.scale * x + d.shift`` per channel, from the channels' ranges of ``x``, in float32."""
    if mins.shape != d.scale.shape:
        raise CalibrationError(
            f"tensor '{t}': {d.scale.size} channels on axis {d.axis} of '{d.sources[0]}', which has {mins.size}"
        )
    with np.errstate(over="ignore"):
        ends = np.stack([mins * d.scale + d.shift, maxs * d.scale + d.shift])
    return float(ends.min()), float(ends.max())
