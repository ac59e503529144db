"""The conformance rules: one small function per rule, each yielding :class:`Finding` objects.

Tensor rules take one quantized tensor and the profile; node rules take the whole :class:`QuantGraph`.
What each rule means is in ``docs/check.md`` and :data:`hwquant.checker.RULES`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from hwquant.checker.graph import BIAS_INPUT, COMPUTE_OPS, FLOAT_TYPES, QTensor, QuantGraph
from hwquant.checker.report import Finding
from hwquant.profile.dtypes import DTYPE_RANGES
from hwquant.profile.schema import Profile, RoleRules

ROLE_SECTION = {"activation": "activations", "weight": "weights"}
SYMMETRIC_POLICIES = {"symmetric"}
# Inputs that must be quantized for an op type to count as running quantized (others: all float inputs).
COVERAGE_INPUTS: dict[str, tuple[int, ...]] = {op: (0, 1) for op in COMPUTE_OPS}


# ---------------------------------------------------------------------------------------------- helpers


def _num(x: float) -> str:
    """Shortest text for a scale: float32 values as float32 prints them (0.03, not 0.029999999)."""
    x = float(x)
    with np.errstate(over="ignore"):
        f32 = np.float32(x)
    if np.isfinite(f32) and float(f32) == x:
        return str(f32)
    return f"{x:.8g}"


def _arr(a: np.ndarray) -> str:
    """One value, or the distinct values of a per-channel array."""
    if a.size != 1:
        return f"per-channel {_values(a)}"
    return str(int(a.ravel()[0])) if a.dtype.kind in "iu" else _num(a.ravel()[0])


def _values(arr: np.ndarray, limit: int = 6) -> str:
    vals = [int(v) if float(v).is_integer() else _num(v) for v in np.unique(np.asarray(arr).ravel())]
    shown = ", ".join(str(v) for v in vals[:limit])
    return f"[{shown}{', ...' if len(vals) > limit else ''}]"


def _qp(t: QTensor) -> str:
    """``scale 0.0123, zero point 5`` (per-channel: the values)."""
    s, z = t.scale, t.zero_point
    if s is None or z is None:
        return "qparams not constant"
    return f"scale {_arr(s)}, zero point {_arr(z)}"


def _what(t: QTensor) -> str:
    """``uint8 activation 'x'`` or ``int8 weight 'w' of Conv 'conv1'``."""
    where = ""
    if t.weight_of is not None:
        view, slot = t.weight_of
        where = f" of {view.op} '{view.label}' (input {slot})"
    elif t.bias_of is not None:
        where = f" of {t.bias_of.op} '{t.bias_of.label}'"
    return f"{t.dtype} {t.role} '{t.label}'{where}"


def _finding(rule: str, t: QTensor, expected: str, found: str, message: str, severity: str = "error") -> Finding:
    return Finding(rule, severity, t.node, t.label, expected, found, message, t.role)  # type: ignore[arg-type]


def _rel_close(a: np.ndarray, b: np.ndarray, rtol: float) -> bool:
    try:
        a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    except ValueError:
        return False
    with np.errstate(invalid="ignore", over="ignore"):
        return bool(np.all(np.abs(a - b) <= rtol * np.abs(b)))


def _same_qparams(a: QTensor, b: QTensor, rtol: float) -> bool:
    if a.scale is None or b.scale is None or a.zero_point is None or b.zero_point is None:
        return True  # unknown qparams are reported by qparams-unknown
    return (
        a.scale.size == b.scale.size
        and _rel_close(a.scale, b.scale, rtol)
        and np.array_equal(np.ravel(a.zero_point), np.ravel(b.zero_point))
    )


# ---------------------------------------------------------------------------------------------- tensor rules


def rule_consistent_qparams(t: QTensor, profile: Profile) -> Iterator[Finding]:
    """Every declaration of a quantized tensor (its QuantizeLinear, each DequantizeLinear or QLinear* node
    reading it) gives the same scale and zero point."""
    first = t.decls[0]
    for d in t.decls[1:]:
        if d.implicit or first.implicit or d.scale is None or first.scale is None:
            continue
        if d.zero_point is None or first.zero_point is None:
            continue
        same = (
            d.scale.size == first.scale.size
            and _rel_close(d.scale, first.scale, 0.0)
            and np.array_equal(np.ravel(d.zero_point), np.ravel(first.zero_point))
        )
        if not same:
            exp = f"scale {_arr(first.scale)}, zero point {_arr(first.zero_point)} (as in '{first.node}')"
            got = f"scale {_arr(d.scale)}, zero point {_arr(d.zero_point)}"
            yield Finding(
                "consistent-qparams",
                "error",
                d.node,
                t.label,
                exp,
                got,
                f"'{d.node}' reads {t.dtype} tensor '{t.name}' with other qparams than '{first.node}' gives it",
                t.role,
            )


def rule_qparams_unknown(t: QTensor, profile: Profile) -> Iterator[Finding]:
    """Scale and zero point must be constants (initializers or Constant nodes) to be checked."""
    if not t.known:
        which = "scale" if t.scale is None else "zero point"
        yield _finding(
            "qparams-unknown",
            t,
            "constant scale and zero point",
            f"{which} computed at run time",
            f"the {which} of {_what(t)} is not a constant: its qparams are not checked",
            "warning",
        )


def rule_dtype(t: QTensor, rules: RoleRules) -> Iterator[Finding]:
    """The data type is one the profile allows for the tensor's role."""
    if t.dtype == "unknown":
        yield _finding(
            "dtype",
            t,
            " or ".join(rules.dtypes),
            "unknown",
            f"the data type of {t.role} '{t.label}' cannot be determined",
            "warning",
        )
    elif t.dtype not in rules.dtypes:
        yield _finding(
            "dtype",
            t,
            " or ".join(rules.dtypes),
            t.dtype,
            f"{_what(t)} has data type {t.dtype}; the profile allows {', '.join(rules.dtypes)} for {t.role}s",
        )


def rule_zero_point(t: QTensor, rules: RoleRules) -> Iterator[Finding]:
    """Zero points lie in [qmin, qmax] and in the profile's allowed set for the data type."""
    if t.zero_point is None or t.dtype not in DTYPE_RANGES:
        return
    r = rules.qrange(t.dtype)
    allowed = rules.allowed_zero_points(t.dtype)
    zps = np.unique(t.zero_point.ravel())
    bad = [int(z) for z in zps if not r.qmin <= z <= r.qmax or (allowed is not None and int(z) not in allowed)]
    if not bad:
        return
    expected = f"one of {allowed}" if allowed is not None else f"within [{r.qmin}, {r.qmax}]"
    if allowed is not None:
        expected += f" within [{r.qmin}, {r.qmax}]"
    found = str(bad[0]) if t.zero_point.size == 1 else f"{len(bad)} distinct: {_values(np.array(bad))}"
    yield _finding(
        "zero-point",
        t,
        expected,
        found,
        f"{_what(t)} has zero point {found}, expected {expected}",
    )


def rule_symmetric(t: QTensor, rules: RoleRules) -> Iterator[Finding]:
    """Where the role's policy is symmetric, the zero point is the middle of [qmin, qmax] (0 for int8,
    128 for uint8). Only reported when the zero-point rule accepted the value."""
    if rules.policy not in SYMMETRIC_POLICIES or t.zero_point is None or t.dtype not in DTYPE_RANGES:
        return
    if any(True for _ in rule_zero_point(t, rules)):
        return
    r = rules.qrange(t.dtype)
    centre = int(np.round((r.qmin + r.qmax) / 2.0))
    bad = sorted({int(z) for z in t.zero_point.ravel() if int(z) != centre})
    if bad:
        yield _finding(
            "symmetric",
            t,
            f"zero point {centre} (symmetric over [{r.qmin}, {r.qmax}])",
            _values(np.array(bad)) if len(bad) > 1 else str(bad[0]),
            f"{_what(t)} must be symmetric (policy '{rules.policy}') but its zero point is {bad[0]}",
        )


def rule_value_range(t: QTensor, rules: RoleRules) -> Iterator[Finding]:
    """Stored values of constant quantized tensors lie within the profile's [qmin, qmax]."""
    if t.values is None or t.values.size == 0 or t.dtype not in DTYPE_RANGES:
        return
    r = rules.qrange(t.dtype)
    lo, hi = int(t.values.min()), int(t.values.max())
    if lo >= r.qmin and hi <= r.qmax:
        return
    below = int((t.values < r.qmin).sum())
    above = int((t.values > r.qmax).sum())
    parts = [f"{below} below {r.qmin}" if below else "", f"{above} above {r.qmax}" if above else ""]
    found = f"values in [{lo}, {hi}] ({', '.join(p for p in parts if p)})"
    yield _finding(
        "value-range",
        t,
        f"values in [{r.qmin}, {r.qmax}]",
        found,
        f"{_what(t)} holds {found}; the profile's {t.dtype} range is [{r.qmin}, {r.qmax}]",
    )


def _expected_axis(t: QTensor, axis: int) -> int:
    """The profile's per-channel axis for the weight's consumer, adjusted for Gemm's transB, a constant
    MatMul A input and the weight's rank."""
    assert t.weight_of is not None
    view, slot = t.weight_of
    rank = t.rank
    if view.op == "Gemm":
        if slot == 1:
            return axis if view.attr("transB", 0) else 1 - axis
        return 1 if view.attr("transA", 0) else 0
    if view.op == "MatMul":
        r = rank if rank is not None else 2
        if slot == 0:
            return max(r - 2, 0)
        return axis + (r - 2) if axis >= 0 else axis % r
    if rank:
        return axis % rank
    return axis


def rule_per_channel(t: QTensor, profile: Profile) -> Iterator[Finding]:
    """Activations are per-tensor; weights are per-channel only for op types in
    ``weights.per_channel``, on the declared axis. Blocked quantization is never allowed."""
    if t.decl.block_size:
        yield _finding(
            "per-channel",
            t,
            "per-tensor or per-channel scales",
            f"blocked quantization (block_size {t.decl.block_size})",
            f"{_what(t)} uses blocked quantization, which no profile section describes",
        )
        return
    if not t.per_channel:
        return
    assert t.scale is not None
    found = f"per-channel on axis {t.axis} ({t.scale.size} scales)"
    if t.role == "activation":
        yield _finding(
            "per-channel",
            t,
            "per-tensor (one scale)",
            found,
            f"{_what(t)} is quantized per channel; activations are per-tensor",
        )
        return
    if t.weight_of is None:
        return
    view, _ = t.weight_of
    allowed = profile.weights.per_channel
    listing = ", ".join(f"{op} axis {a}" for op, a in allowed.items()) or "none"
    if view.op not in allowed:
        yield _finding(
            "per-channel",
            t,
            f"per-tensor (per-channel allowed for: {listing})",
            found,
            f"{_what(t)} is quantized per channel; the profile allows per-channel weights for: {listing}",
        )
        return
    expected = _expected_axis(t, allowed[view.op])
    if t.axis != expected:
        yield _finding(
            "per-channel",
            t,
            f"per-channel on axis {expected}",
            found,
            f"{_what(t)} is quantized per channel on axis {t.axis}; the profile's axis is {expected}",
        )


def rule_scale(t: QTensor, rules: RoleRules) -> Iterator[Finding]:
    """Scales are positive and finite, and of the role's form (power of two, with exponent bounds)."""
    if t.scale is None:
        return
    scales = t.scale.ravel()
    bad_value = [s for s in scales if not (np.isfinite(s) and s > 0)]
    if bad_value:
        yield _finding(
            "scale",
            t,
            "positive, finite scale",
            _values(np.array(bad_value)),
            f"{_what(t)} has scale {_num(bad_value[0])}: scales must be positive and finite",
        )
        return
    if rules.scale.form == "float":
        return
    bad = [s for s in scales if not rules.scale.allows(float(s))]
    if bad:
        lo, hi = rules.scale.min_exponent, rules.scale.max_exponent
        bounds = " <= ".join([*([str(lo)] if lo is not None else []), "e", *([str(hi)] if hi is not None else [])])
        expected = "power of two 2**e" + (f", {bounds}" if bounds != "e" else "")
        found = _num(bad[0]) if len(scales) == 1 else f"{len(bad)} of {len(scales)} scales, e.g. {_num(bad[0])}"
        yield _finding("scale", t, expected, found, f"{_what(t)} has scale {found}, expected a {expected}")


def rule_bias(t: QTensor, profile: Profile, g: QuantGraph) -> Iterator[Finding]:
    """Where the profile quantizes biases: int32, zero point 0, scale = input scale x weight scale
    (relative tolerance ``bias.scale_rtol``)."""
    view = t.bias_of
    assert view is not None
    if not profile.bias.quantize:
        yield _finding(
            "bias",
            t,
            "float bias (bias.quantize = false)",
            f"{t.dtype} bias",
            f"{_what(t)} is quantized; the profile keeps biases in float",
            "warning",
        )
        return
    if t.dtype != "int32":
        yield _finding("bias", t, "int32", t.dtype, f"{_what(t)} has data type {t.dtype}; biases are int32")
    if t.decl.implicit:
        return  # QOperator: the op itself implies scale = x_scale * w_scale and zero point 0
    if t.zero_point is not None and np.any(t.zero_point != 0):
        yield _finding(
            "bias", t, "zero point 0", f"zero point {_arr(t.zero_point)}", f"{_what(t)} has a non-zero zero point"
        )
    x = view.inputs[0] if view.inputs else ""
    w = view.inputs[1] if len(view.inputs) > 1 else ""
    if t.scale is None:
        return
    xs, ws = g.source(x), g.source(w)
    tx, tw = g.tensors.get(xs) if xs else None, g.tensors.get(ws) if ws else None
    if tx is None or tw is None or tx.scale is None or tw.scale is None:
        return
    expected = tx.scale.ravel() * tw.scale.ravel()
    rtol = profile.bias.scale_rtol
    if not _rel_close(t.scale.ravel(), expected, rtol):
        exp, found = _arr(expected), _arr(t.scale)
        yield _finding(
            "bias",
            t,
            f"scale {exp} = input scale x weight scale (relative tolerance {rtol:g})",
            f"scale {found}",
            f"{_what(t)} has scale {found}, but '{tx.label}' x '{tw.label}' scales give {exp}",
        )


TENSOR_RULES = (rule_dtype, rule_zero_point, rule_symmetric, rule_value_range, rule_scale)


def check_tensor(t: QTensor, profile: Profile, g: QuantGraph) -> Iterator[Finding]:
    """Every tensor rule that applies to ``t`` in its role."""
    yield from rule_consistent_qparams(t, profile)
    yield from rule_qparams_unknown(t, profile)
    if t.role == "bias":
        yield from rule_bias(t, profile, g)
        return
    rules = profile.role(ROLE_SECTION[t.role])
    for rule in TENSOR_RULES:
        yield from rule(t, rules)
    yield from rule_per_channel(t, profile)


# ---------------------------------------------------------------------------------------------- node rules


def rule_fixed_output(g: QuantGraph, profile: Profile) -> Iterator[Finding]:
    """Outputs of op types in ``ops.fixed_output`` use the fixed scale (relative tolerance
    ``ops.fixed_tolerance``) and exactly the fixed zero point, for their data type."""
    tol = profile.ops.fixed_tolerance
    for view in g.views:
        per_dtype = profile.ops.fixed_output.get(view.op)
        if not per_dtype:
            continue
        for names in view.qoutputs:
            for name in names:
                t = g.tensors[name]
                fixed = per_dtype.get(t.dtype)  # type: ignore[call-overload]
                if fixed is None or t.scale is None or t.zero_point is None:
                    continue
                ok_scale = t.scale.size == 1 and _rel_close(t.scale, np.float64(fixed.scale), tol)
                ok_zp = t.zero_point.size == 1 and int(t.zero_point.ravel()[0]) == fixed.zero_point
                if ok_scale and ok_zp:
                    continue
                expected = f"scale {_num(fixed.scale)} (relative tolerance {tol:g}), zero point {fixed.zero_point}"
                yield Finding(
                    "fixed-output",
                    "error",
                    view.label,
                    t.label,
                    expected,
                    _qp(t),
                    f"{view.op} '{view.label}' output '{t.label}' ({t.dtype}) must use fixed qparams {expected}",
                    t.role,
                )


def rule_shared_qparams(g: QuantGraph, profile: Profile) -> Iterator[Finding]:
    """For op types in ``ops.shared_qparams``, every quantized input and output of the node has the same
    scale (relative tolerance ``ops.fixed_tolerance``) and zero point as the node's quantized output
    (or, without one, its first quantized input)."""
    shared = set(profile.ops.shared_qparams)
    tol = profile.ops.fixed_tolerance
    for view in g.views:
        if view.op not in shared:
            continue
        outs = [g.tensors[n] for names in view.qoutputs for n in names]
        ins = [g.tensors[n] for n in view.qinputs if n]
        members = outs + ins
        if len(members) < 2:
            continue
        ref = members[0]
        for t in members[1:]:
            if t is ref or _same_qparams(t, ref, tol):
                continue
            yield Finding(
                "shared-qparams",
                "error",
                view.label,
                t.label,
                f"{_qp(ref)} (as '{ref.label}', relative tolerance {tol:g})",
                _qp(t),
                f"{view.op} '{view.label}' must share qparams between inputs and outputs: "
                f"'{t.label}' differs from '{ref.label}'",
                t.role,
            )


def rule_float_bias(g: QuantGraph, profile: Profile) -> Iterator[Finding]:
    """Where the profile quantizes biases, a Conv/ConvTranspose/Gemm with quantized input and weight but a
    float bias is reported (warning: many runtimes accept a float bias)."""
    if not profile.bias.quantize:
        return
    for view in g.views:
        if view.op not in COMPUTE_OPS or view.qoperator or view.dynamic:
            continue
        slot = BIAS_INPUT.get(view.op)
        if slot is None or slot >= len(view.inputs) or not view.inputs[slot]:
            continue
        if g.source(view.inputs[0]) and g.source(view.inputs[1]) and not g.source(view.inputs[slot]):
            yield Finding(
                "bias",
                "warning",
                view.label,
                view.inputs[slot],
                "int32 bias (DequantizeLinear of int32)",
                "float",
                f"{view.op} '{view.label}' runs quantized but its bias '{view.inputs[slot]}' is float",
                "bias",
            )


def coverage_ops(profile: Profile) -> set[str]:
    """Op types the profile runs quantized: ``ops.quantize``, or the compute ops when it is empty,
    less ``ops.exclude``."""
    ops = set(profile.ops.quantize) or set(COMPUTE_OPS)
    return ops - set(profile.ops.exclude)


def rule_coverage(g: QuantGraph, profile: Profile) -> Iterator[Finding]:
    """Nodes of an op type the profile runs quantized, whose float inputs are not fed by a
    DequantizeLinear (nor already integer), are left in float. Nodes inside If/Loop/Scan bodies count."""
    ops = coverage_ops(profile)
    for view in g.views:
        if view.op not in ops or view.qoperator or view.dynamic:
            continue
        slots = COVERAGE_INPUTS.get(view.op)
        if slots is None:  # every float input (the first one when types are unknown)
            slots = tuple(
                i
                for i, n in enumerate(view.inputs)
                if n and (g.types.get(n) in FLOAT_TYPES or (i == 0 and n not in g.types))
            )
        named = [view.inputs[i] for i in slots if i < len(view.inputs) and view.inputs[i]]
        floats = [n for n in named if not g.source(n)]
        if floats:
            yield Finding(
                "coverage",
                "warning",
                view.label,
                floats[0],
                "quantized input (fed by DequantizeLinear)",
                f"float ({', '.join(floats)})",
                f"{view.op} '{view.label}' is left in float: input {', '.join(repr(f) for f in floats)} "
                "is not quantized",
                None,
            )


def rule_nothing_quantized(g: QuantGraph, profile: Profile) -> Iterator[Finding]:
    """A model without any quantized tensor is an error: a float model never passes."""
    if g.tensors:
        return
    if g.n_dynamic:
        found = f"only dynamic or weight-only quantized ops ({g.n_dynamic} nodes): no static qparams"
    else:
        found = f"none ({g.n_nodes} nodes, all float)"
    yield Finding(
        "nothing-quantized",
        "error",
        "-",
        "-",
        "quantized tensors (QuantizeLinear/DequantizeLinear or QLinear* nodes)",
        found,
        f"the model holds no statically quantized tensor: {found}",
        None,
    )


NODE_RULES = (rule_nothing_quantized, rule_fixed_output, rule_shared_qparams, rule_float_bias, rule_coverage)


def run(g: QuantGraph, profile: Profile) -> list[Finding]:
    """Every finding for ``g`` against ``profile``: tensor rules in model order, then node rules."""
    findings: list[Finding] = []
    for t in g.tensors.values():
        findings.extend(check_tensor(t, profile, g))
    for rule in NODE_RULES:
        findings.extend(rule(g, profile))
    return findings
