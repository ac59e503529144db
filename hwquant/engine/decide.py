"""Resolve the profile's rules for every planned tensor and compute its qparams with the role's policy.

Precedence, per tensor: a fixed output qparam for its producing op type wins; otherwise tensors that must
agree (onnxruntime ties pass-through outputs to their input; the profile's ``shared_qparams`` op types tie
inputs and outputs) form a group whose ranges are unified, and the role's policy runs once on the union;
otherwise the policy runs on the tensor's own range. Weights use the weight rules, per channel when the
consuming op type is in ``weights.per_channel``. Pure numpy: onnxruntime is driven elsewhere.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from hwquant.engine.result import TensorDecision
from hwquant.errors import PolicyError
from hwquant.policies.base import Constraints, QParams, TensorStats, constraints_for
from hwquant.policies.power_of_two import pow2_ceil
from hwquant.profile.schema import Profile

INT32_MAX = 2**31 - 1
CONSTANT_BINS = 256


@dataclass(frozen=True)
class Tensor:
    """What the decision step needs to know about one tensor onnxruntime will quantize."""

    name: str
    role: str  # "activation" | "weight"
    constant: bool
    consumer: str | None
    consumer_op: str | None
    shares: str | None


PolicyLookup = Callable[[str], tuple[Callable[[TensorStats, Constraints], QParams], str]]
StatsLookup = Callable[[str], TensorStats | None]


class _Groups:
    """Union-find over tensor names."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def members(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for x in self.parent:
            out.setdefault(self.find(x), []).append(x)
        return out


def needs_histogram(policy: Callable) -> bool:
    """True when a policy asks for histograms (it sets ``needs_histogram = True``, as ``mse`` does)."""
    return bool(getattr(policy, "needs_histogram", False))


def _constant_stats(arr: np.ndarray, histogram: bool) -> TensorStats:
    flat = arr.astype(np.float32, copy=False).ravel()
    lo, hi = float(flat.min()), float(flat.max())
    if not histogram:
        return TensorStats(lo, hi)
    if lo == hi:  # one value: numpy widens the range by 0.5, which is no change at 3.4e38 and raises
        return TensorStats(lo, hi, (np.array([flat.size]), np.array([lo, hi])))
    counts, edges = np.histogram(flat, bins=CONSTANT_BINS)
    return TensorStats(lo, hi, (counts, edges))


def _weight_axis(profile: Profile, node: onnx.NodeProto | None) -> int | None:
    if node is None or node.op_type not in profile.weights.per_channel:
        return None
    axis = profile.weights.per_channel[node.op_type]
    if node.op_type == "Gemm":  # the profile's axis is for transB = 1
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        if not trans_b:
            axis = 1 - axis
    return axis


def _span(qp: QParams, c: Constraints) -> tuple[float, float]:
    return qp.covered(c.qmin, c.qmax)


def _describe(
    name: str,
    role: str,
    c: Constraints,
    rule: str,
    policy: str | None,
    plugin: str | None,
    raw: tuple[float, float],
    used: tuple[float, float],
    qps: list[QParams],
    axis: int | None,
    group: list[str],
    raws: list[tuple[float, float]] | None = None,
) -> TensorDecision:
    spans = [_span(q, c) for q in qps]
    raws = raws or [raw]
    clipped = any(
        lo > r[0] + 0.5 * float(q.scale) or hi < r[1] - 0.5 * float(q.scale)  # beyond half a step
        for (lo, hi), r, q in zip(spans, raws, qps, strict=True)
    )
    widened = 0.0
    for (lo, hi), r in zip(spans, raws, strict=True):
        need = max(r[1], 0.0) - min(r[0], 0.0)
        if need > 0:
            widened = max(widened, (hi - lo) / need - 1.0)
    lo, hi = min(s[0] for s in spans), max(s[1] for s in spans)
    per_channel = axis is not None
    return TensorDecision(
        tensor=name,
        role=role,
        dtype=c.dtype,
        rule=rule,
        policy=policy,
        plugin=plugin,
        raw_range=raw,
        range=used,
        scale=[float(q.scale) for q in qps] if per_channel else float(qps[0].scale),
        zero_point=[q.zero_point for q in qps] if per_channel else qps[0].zero_point,
        axis=axis,
        covered=(lo, hi),
        widened=round(widened, 6),
        clipped=clipped,
        group=sorted(group) if len(group) > 1 else [],
    )


def _run_policy(
    policies: PolicyLookup, name: str, tensor: str, stats: TensorStats, c: Constraints
) -> tuple[QParams, str]:
    fn, plugin = policies(name)
    try:
        qp = fn(stats, c)
    except Exception as exc:
        raise PolicyError(
            f"policy '{name}' (plugin '{plugin}') failed on tensor '{tensor}' range [{stats.rmin}, {stats.rmax}]: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(qp, QParams):
        raise PolicyError(
            f"policy '{name}' (plugin '{plugin}') returned {type(qp).__name__} for tensor '{tensor}', not QParams"
        )
    broken = c.allows(qp)
    if broken:
        raise PolicyError(
            f"policy '{name}' (plugin '{plugin}') broke the profile on tensor '{tensor}' ({c.dtype}): {broken}"
        )
    return qp, plugin


def relu_folds(profile: Profile, policies: PolicyLookup) -> bool:
    """True when a non-negative activation gets zero point qmin, so quantization itself clamps at 0.

    onnxruntime then drops Relu/Clip and gives their producer the output's qparams; with any other
    zero point (e.g. symmetric int8 with zero point 0) the Relu must stay in the graph.
    """
    c = constraints_for(profile, "activations")
    fn, _ = policies(profile.activations.policy)
    return fn(TensorStats(0.0, 1.0), c).zero_point == c.qmin


def decide(
    model: onnx.ModelProto,
    tensors: Mapping[str, Tensor],
    ranges: Mapping[str, tuple[float, float]],
    stats: StatsLookup,
    profile: Profile,
    policies: PolicyLookup,
) -> dict[str, TensorDecision]:
    """Qparams for every planned tensor. ``ranges`` are activation ranges after onnxruntime's adjustments;
    ``stats(name)`` gives the calibration statistics (with histogram, when collected) of an activation.
    """
    inits = {i.name: i for i in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    act_c = constraints_for(profile, "activations")
    w_c = constraints_for(profile, "weights")
    decisions: dict[str, TensorDecision] = {}
    w_hist = needs_histogram(policies(profile.weights.policy)[0])
    a_hist = needs_histogram(policies(profile.activations.policy)[0])

    # ---- weights: per channel where the profile allows it for the consuming op type
    for t in tensors.values():
        if t.role != "weight":
            continue
        arr = numpy_helper.to_array(inits[t.name]).astype(np.float32, copy=False)
        axis = _weight_axis(profile, nodes.get(t.consumer or ""))
        if axis is not None and arr.ndim > axis:
            moved = np.moveaxis(arr, axis, 0).reshape(arr.shape[axis], -1)
            if w_hist:
                channel_stats = [_constant_stats(ch, w_hist) for ch in moved]
            else:  # one pass over the weight, not one per channel
                lows, highs = moved.min(axis=1).tolist(), moved.max(axis=1).tolist()
                channel_stats = [TensorStats(lo, hi) for lo, hi in zip(lows, highs, strict=True)]
        else:
            axis, channel_stats = None, [_constant_stats(arr, w_hist)]
        qps, plugin = [], None
        for s in channel_stats:
            qp, plugin = _run_policy(policies, profile.weights.policy, t.name, s, w_c)
            qps.append(qp)
        raw = (float(arr.min()), float(arr.max()))
        raws = [(s.rmin, s.rmax) for s in channel_stats]
        decisions[t.name] = _describe(
            t.name, "weight", w_c, "policy", profile.weights.policy, plugin, raw, raw, qps, axis, [t.name], raws
        )

    # ---- activations (including constants quantized as activations): groups, fixed outputs, policy
    acts = {n: t for n, t in tensors.items() if t.role == "activation"}
    own: dict[str, TensorStats] = {}
    for name, t in acts.items():
        if t.constant:
            own[name] = _constant_stats(numpy_helper.to_array(inits[name]), a_hist)
        elif name in ranges:
            lo, hi = ranges[name]
            calib = stats(name)
            hist = calib.histogram if calib is not None and (calib.rmin, calib.rmax) == (lo, hi) else None
            own[name] = TensorStats(lo, hi, hist)
    groups = _Groups()
    for name, t in acts.items():
        if name not in own:
            continue
        groups.find(name)
        if t.shares and t.shares in own:
            groups.union(name, t.shares)
    shared_ops = set(profile.ops.shared_qparams)
    fixed: dict[str, tuple[str, QParams]] = {}
    for node in model.graph.node:
        if node.op_type in shared_ops:
            members = [x for x in (*node.input, *node.output) if x in own]
            for a, b in itertools.pairwise(members):
                groups.union(a, b)
        by_dtype = profile.ops.fixed_output.get(node.op_type)
        if by_dtype and act_c.dtype in by_dtype and node.output and node.output[0] in own:
            f = by_dtype[act_c.dtype]
            fixed[node.output[0]] = (node.op_type, QParams(np.float32(f.scale), f.zero_point))

    for members in groups.members().values():
        lo = min(own[m].rmin for m in members)
        hi = max(own[m].rmax for m in members)
        fixed_here = {fixed[m] for m in members if m in fixed}
        if len({(float(q.scale), q.zero_point) for _, q in fixed_here}) > 1:
            raise PolicyError(
                f"tensors {sorted(members)} must share qparams but have different fixed outputs: "
                + ", ".join(f"{op} {float(q.scale)}/{q.zero_point}" for op, q in sorted(fixed_here, key=str))
            )
        if fixed_here:
            op, qp = next(iter(fixed_here))
            rule, policy, plugin = f"fixed:{op}", None, None
        else:
            hist = own[members[0]].histogram if len(members) == 1 else None
            qp, plugin = _run_policy(
                policies, profile.activations.policy, ", ".join(sorted(members)), TensorStats(lo, hi, hist), act_c
            )
            rule, policy = ("shared" if len(members) > 1 else "policy"), profile.activations.policy
        for m in members:
            raw = stats(m)
            raw_range = (raw.rmin, raw.rmax) if raw is not None else (own[m].rmin, own[m].rmax)
            decisions[m] = _describe(
                m, "activation", act_c, rule, policy, plugin, raw_range, (lo, hi), [qp], None, members
            )
    return decisions


def guard_int32_bias(
    model: onnx.ModelProto,
    biases: Mapping[str, tuple[str, str]],
    decisions: dict[str, TensorDecision],
    profile: Profile,
) -> None:
    """Raise weight scales where bias / (input scale x weight scale) would overflow int32.

    ``biases`` maps bias name -> (input tensor, weight tensor). The raised scale keeps the profile's
    scale form (power-of-two scales are rounded up to the next power of two).
    """
    inits = {i.name: i for i in model.graph.initializer}
    for bias, (inp, weight) in biases.items():
        if inp not in decisions or weight not in decisions or bias not in inits:
            continue
        b = np.abs(numpy_helper.to_array(inits[bias]).astype(np.float64)).ravel()
        d = decisions[weight]
        s_in = float(np.max(decisions[inp].scale))
        scales = np.atleast_1d(np.asarray(d.scale, dtype=np.float64))
        need = (b if scales.size == b.size else np.full_like(scales, b.max())) / (s_in * INT32_MAX)
        if np.all(scales >= need):
            continue
        raised = np.maximum(scales, need)
        if profile.weights.scale.form == "power-of-two":
            raised = np.array([2.0 ** pow2_ceil(s) for s in raised])
        raised = raised.astype(np.float32).astype(float)
        d.scale = raised.tolist() if isinstance(d.scale, list) else float(raised[0])
        d.note = f"scale raised so bias '{bias}' fits int32"
