"""Ranges derived from other tensors' ranges (hwquant.engine.derive) against ranges onnxruntime measures."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from hwquant.engine import derive
from hwquant.engine.calibrate import calibrate

SHAPE = [1, 3, 8, 8]


def _activation_model(op: str, attrs: dict | None = None, extra_inputs=(), inits=(), opset: int = 17, graph_inputs=()):
    """x -> Mul(x, 3) = "a" -> op -> "y": the activation reads an observed tensor, as after a Conv."""
    nodes = [
        helper.make_node("Mul", ["x", "three"], ["a"]),
        helper.make_node(op, ["a", *extra_inputs], ["y"], **(attrs or {})),
    ]
    initializers = [numpy_helper.from_array(np.array(3.0, np.float32), "three"), *inits]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE), *graph_inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)


def _samples(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal(SHAPE).astype(np.float32)} for _ in range(n)]


def _scalar(name, value):
    return numpy_helper.from_array(np.array(value, np.float32), name)


MONOTONE = {
    "relu": ("Relu", {}, (), (), 17),
    "leaky": ("LeakyRelu", {"alpha": 0.1}, (), (), 17),
    "clip-attrs": ("Clip", {"min": -1.0, "max": 2.5}, (), (), 10),
    "clip-inputs": ("Clip", {}, ("lo", "hi"), (_scalar("lo", -0.5), _scalar("hi", 1.0)), 17),
    "clip-min-only": ("Clip", {}, ("lo",), (_scalar("lo", 0.25),), 17),
    "clip-max-only": ("Clip", {}, ("", "hi"), (_scalar("hi", 0.75),), 17),
    "hardsigmoid": ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}, (), (), 17),
    "hardsigmoid-decreasing": ("HardSigmoid", {"alpha": -0.2}, (), (), 17),
    "sigmoid": ("Sigmoid", {}, (), (), 17),
    "tanh": ("Tanh", {}, (), (), 17),
    "erf": ("Erf", {}, (), (), 17),
}


@pytest.mark.parametrize("case", list(MONOTONE))
def test_monotone_activation_ranges_equal_measured_ones(case):
    op, attrs, extra, inits, opset = MONOTONE[case]
    model = _activation_model(op, attrs, extra, inits, opset)
    data = _samples()
    assert derive.derivations(model, ["a", "y"], False)["y"].kind == "map"
    derived = calibrate(model, data, ["a", "y"]).ranges["y"]
    measured = calibrate(model, data, ["y"]).ranges["y"]
    # the ends of the input's range are values of the data, so f at them is the data's range (float rounding)
    np.testing.assert_allclose(derived, measured, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("op, attrs, turn", [("HardSwish", {}, -1.5), ("LeakyRelu", {"alpha": -0.5}, 0.0)])
def test_turning_activation_ranges_cover_measured_ones(op, attrs, turn):
    model = _activation_model(op, attrs, opset=17)
    data = _samples()
    lo_in, hi_in = calibrate(model, data, ["a"]).ranges["a"]
    assert lo_in < turn < hi_in  # the data spans the turning point
    derived = calibrate(model, data, ["a", "y"]).ranges["y"]
    measured = calibrate(model, data, ["y"]).ranges["y"]
    assert derived[0] <= measured[0] and derived[1] == pytest.approx(measured[1], rel=1e-6)
    # the only slack is the function's extreme, which the data approach but need not reach
    fn = derive.derivations(model, ["a", "y"], False)["y"].fn
    assert derived[0] == pytest.approx(float(fn(np.float32(turn))), rel=1e-6)
    assert measured[0] - derived[0] < 0.05


def test_activation_with_a_computed_or_overridable_bound_is_measured():
    # the Clip bound is a graph input: a caller could feed another value
    overridable = _activation_model(
        "Clip",
        extra_inputs=("lo",),
        inits=(_scalar("lo", 0.0),),
        graph_inputs=(helper.make_tensor_value_info("lo", TensorProto.FLOAT, []),),
    )
    assert "y" not in derive.derivations(overridable, ["a", "y"], False)
    # the bound is computed at run time
    computed = _activation_model("Clip", extra_inputs=("a",))
    assert "y" not in derive.derivations(computed, ["a", "y"], False)


def test_activations_are_measured_with_histograms_or_without_their_input():
    model = _activation_model("Sigmoid")
    assert "y" not in derive.derivations(model, ["a", "y"], True)  # histograms are never mapped
    assert "y" not in derive.derivations(model, ["y"], False)  # the input is not observed


FUNCTIONS = [
    ("Relu", {}),
    ("LeakyRelu", {"alpha": -0.5}),
    ("HardSigmoid", {}),
    ("HardSwish", {}),
    ("Sigmoid", {}),
    ("Tanh", {}),
    ("Erf", {}),
    ("Clip", {"min": -2.0, "max": 3.0}),
]


@settings(max_examples=200, deadline=None)
@given(
    which=st.sampled_from(range(len(FUNCTIONS))),
    a=st.floats(-1e4, 1e4, width=32),
    b=st.floats(-1e4, 1e4, width=32),
)
def test_map_range_covers_the_function_between_the_ends(which, a, b):
    """For any finite input range, the derived range holds f at every input in it, and its ends are values
    f takes there (at an end of the input range or at a turn)."""
    op, attrs = FUNCTIONS[which]
    node = helper.make_node(op, ["a"], ["y"], **attrs)
    fn, turns = derive.elementwise(node, {})
    d = derive.Derivation("map", ["a"], fn, turns)
    lo, hi = min(a, b), max(a, b)
    got = derive.map_range(d, lo, hi)
    turns_inside = [t for t in turns if lo < t < hi]
    xs = np.concatenate([np.linspace(lo, hi, 1001, dtype=np.float32), np.array(turns_inside, np.float32)])
    with np.errstate(over="ignore"):
        ys = fn(xs)
    tol = 1e-6 * max(1.0, float(np.abs(ys).max()))
    assert ys.min() - tol <= got[0] <= ys.min() + tol  # covers f on [lo, hi], and f reaches it there
    assert ys.max() - tol <= got[1] <= ys.max() + tol
    assert all(math.isfinite(v) for v in got)


def _arithmetic_model(op: str, const: np.ndarray, const_first: bool = False, x_shape=(2, 5, 4)):
    """x -> Mul(x, 3) = "a" -> op(a, k) (or op(k, a)) -> "y"."""
    inputs = ["k", "a"] if const_first else ["a", "k"]
    nodes = [helper.make_node("Mul", ["x", "three"], ["a"]), helper.make_node(op, inputs, ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape[1:]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(3.0, np.float32), "three"), numpy_helper.from_array(const, "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


ARITHMETIC = {
    "add-scalar": ("Add", np.float32(0.5), False, "map"),
    "sub-scalar": ("Sub", np.float32(0.5), False, "map"),
    "scalar-sub": ("Sub", np.float32(0.5), True, "map"),
    "mul-negative-scalar": ("Mul", np.array([-2.0], np.float32), False, "map"),
    "div-scalar": ("Div", np.float32(-1.7), False, "map"),
    "bias-last-axis": ("Add", np.linspace(-3, 3, 4).astype(np.float32), True, "affine"),
    "scale-middle-axis": ("Mul", np.linspace(-2, 2, 5).reshape(5, 1).astype(np.float32), False, "affine"),
    "vector-sub": ("Sub", np.linspace(-1, 1, 5).reshape(5, 1).astype(np.float32), True, "affine"),
    "vector-div": ("Div", np.array([1.0, -2.0, 4.0, 0.5], np.float32), False, "affine"),
}


@pytest.mark.parametrize("case", list(ARITHMETIC))
def test_arithmetic_with_a_constant_equals_measured(case):
    op, const, const_first, kind = ARITHMETIC[case]
    model = _arithmetic_model(op, np.asarray(const), const_first)
    rng = np.random.default_rng(1)
    data = [{"x": rng.standard_normal((2, 5, 4)).astype(np.float32)} for _ in range(5)]
    assert derive.derivations(model, ["a", "y"], False)["y"].kind == kind
    derived = calibrate(model, data, ["a", "y"]).ranges["y"]
    measured = calibrate(model, data, ["y"]).ranges["y"]
    np.testing.assert_allclose(derived, measured, rtol=1e-6, atol=1e-6)


def test_arithmetic_that_is_not_a_function_of_one_tensor_is_measured():
    def plan(op, const, const_first=False, x_shape=(2, 5, 4)):
        return derive.derivations(_arithmetic_model(op, const, const_first, x_shape), ["a", "y"], False)

    assert "y" not in plan("Div", np.float32(2.0), const_first=True)  # 2 / a turns at 0
    assert "y" not in plan("Div", np.array([1.0, 0.0, 2.0, 3.0], np.float32))  # a division by zero
    assert "y" not in plan("Add", np.ones((5, 4), np.float32))  # varies along two axes
    assert "y" not in plan("Add", np.ones(4, np.float32), x_shape=(2, 5, 1))  # broadcasts a to 4 channels
    assert "y" not in plan("Add", np.ones((3, 1, 1, 1), np.float32))  # ... or to a fourth axis
    assert "y" not in plan("Add", np.array(1, np.int64).astype(np.float32) * np.nan)  # not finite


def test_a_tensor_is_derived_through_an_intermediate_nobody_observes():
    """HardSwish as Paddle exports it, ``x * Clip(x + 3, 0, 6) / 6``: the Clip output is derived from
    ``x`` through ``x + 3``, which is not observed."""
    nodes = [
        helper.make_node("Mul", ["x", "three"], ["a"]),
        helper.make_node("Add", ["a", "three"], ["p"]),
        helper.make_node("Clip", ["p", "zero", "six"], ["c"]),
        helper.make_node("Mul", ["a", "c"], ["m"]),
        helper.make_node("Div", ["m", "six"], ["y"]),
    ]
    consts = [_scalar("three", 3.0), _scalar("zero", 0.0), _scalar("six", 6.0)]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, SHAPE)],
        consts,
    )
    model = onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    plan = derive.derivations(model, ["a", "c", "m", "y"], False)
    assert {t: d.kind for t, d in plan.items()} == {"p": "map", "c": "map", "y": "map"}  # m is a product
    data = _samples()
    cal = calibrate(model, data, ["a", "c", "m", "y"])
    assert set(cal.ranges) == {"a", "c", "m", "y"}  # the intermediate is not reported
    for t in ("c", "y"):
        np.testing.assert_allclose(cal.ranges[t], calibrate(model, data, [t]).ranges[t], rtol=1e-6, err_msg=t)
