"""Small float models built with onnx.helper, shared by the tests and the benchmarks.

Weights are random but fixed by a seed and scaled like trained ones (He initialisation), so activations
have realistic ranges. Every builder returns an ``onnx.ModelProto`` that passes ``onnx.checker``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _init(name: str, arr: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _he(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def _model(nodes, inputs, outputs, inits, opset: int = OPSET, name: str = "model") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="hwquant-tests")
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model


def cnn(channels: int = 8, size: int = 16, classes: int = 10, seed: int = 0, opset: int = OPSET) -> onnx.ModelProto:
    """Conv-Relu x2 in two branches joined by Concat, MaxPool, GlobalAveragePool, Flatten, Gemm, Softmax.

    Input ``input`` [N, 3, size, size]; output ``probs`` [N, classes].
    """
    rng = np.random.default_rng(seed)
    c = channels
    inits = [
        _init("conv1.w", _he(rng, (c, 3, 3, 3), 27)),
        _init("conv1.b", rng.standard_normal(c) * 0.1),
        _init("conv2a.w", _he(rng, (c, c, 3, 3), 9 * c)),
        _init("conv2a.b", rng.standard_normal(c) * 0.1),
        _init("conv2b.w", _he(rng, (c, c, 1, 1), c)),
        _init("conv2b.b", rng.standard_normal(c) * 0.1),
        _init("fc.w", _he(rng, (classes, 2 * c), 2 * c)),
        _init("fc.b", rng.standard_normal(classes) * 0.1),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2a.w", "conv2a.b"], ["c2a"], pads=[1, 1, 1, 1], name="conv2a"),
        helper.make_node("Relu", ["c2a"], ["r2a"], name="relu2a"),
        helper.make_node("Conv", ["r1", "conv2b.w", "conv2b.b"], ["c2b"], name="conv2b"),
        helper.make_node("Concat", ["r2a", "c2b"], ["cat"], axis=1, name="concat"),
        helper.make_node("MaxPool", ["cat"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="maxpool"),
        helper.make_node("GlobalAveragePool", ["pool"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1, name="fc"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="softmax"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])],
        inits,
        opset=opset,
        name="cnn",
    )


def transformer(layers: int = 2, dim: int = 32, hidden: int = 64, seed: int = 0) -> onnx.ModelProto:
    """Single-head pre-norm transformer encoder: LayerNorm, Q/K/V MatMul -> Add bias, Softmax attention,
    output projection, residual Add, MLP with Relu. Input ``tokens`` [N, T, dim]; output ``hidden`` [N, T, dim].

    Every projection is a MatMul followed by a separate Add of a bias constant: onnxruntime quantizes those
    bias constants as activations.
    """
    rng = np.random.default_rng(seed)
    inits: list[TensorProto] = [_init("attn.scale", np.array(1.0 / np.sqrt(dim)))]
    nodes = []
    x = "tokens"
    for i in range(layers):
        p = f"l{i}"

        def linear(inp: str, name: str, fan_in: int, fan_out: int, p: str = p) -> str:
            inits.append(_init(f"{p}.{name}.w", _he(rng, (fan_in, fan_out), fan_in)))
            inits.append(_init(f"{p}.{name}.b", rng.standard_normal(fan_out) * 0.1))
            nodes.append(
                helper.make_node("MatMul", [inp, f"{p}.{name}.w"], [f"{p}.{name}.mm"], name=f"{p}.{name}.matmul")
            )
            nodes.append(
                helper.make_node(
                    "Add", [f"{p}.{name}.mm", f"{p}.{name}.b"], [f"{p}.{name}.out"], name=f"{p}.{name}.add"
                )
            )
            return f"{p}.{name}.out"

        inits.append(_init(f"{p}.ln1.g", 1 + 0.1 * rng.standard_normal(dim)))
        inits.append(_init(f"{p}.ln1.b", 0.1 * rng.standard_normal(dim)))
        nodes.append(
            helper.make_node(
                "LayerNormalization", [x, f"{p}.ln1.g", f"{p}.ln1.b"], [f"{p}.ln1"], axis=-1, name=f"{p}.ln1"
            )
        )
        q = linear(f"{p}.ln1", "q", dim, dim)
        k = linear(f"{p}.ln1", "k", dim, dim)
        v = linear(f"{p}.ln1", "v", dim, dim)
        nodes.extend(
            [
                helper.make_node("Transpose", [k], [f"{p}.kt"], perm=[0, 2, 1], name=f"{p}.kt"),
                helper.make_node("MatMul", [q, f"{p}.kt"], [f"{p}.qk"], name=f"{p}.qk"),
                helper.make_node("Mul", [f"{p}.qk", "attn.scale"], [f"{p}.qks"], name=f"{p}.qks"),
                helper.make_node("Softmax", [f"{p}.qks"], [f"{p}.attn"], axis=-1, name=f"{p}.softmax"),
                helper.make_node("MatMul", [f"{p}.attn", v], [f"{p}.ctx"], name=f"{p}.ctx"),
            ]
        )
        o = linear(f"{p}.ctx", "o", dim, dim)
        nodes.append(helper.make_node("Add", [x, o], [f"{p}.res1"], name=f"{p}.res1"))
        h = linear(f"{p}.res1", "fc1", dim, hidden)
        nodes.append(helper.make_node("Relu", [h], [f"{p}.act"], name=f"{p}.act"))
        f = linear(f"{p}.act", "fc2", hidden, dim)
        nodes.append(helper.make_node("Add", [f"{p}.res1", f], [f"{p}.res2"], name=f"{p}.res2"))
        x = f"{p}.res2"
    nodes.append(helper.make_node("Identity", [x], ["hidden"], name="out"))
    return _model(
        nodes,
        [helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["N", "T", dim])],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["N", "T", dim])],
        inits,
        name="transformer",
    )


def constant_weights(seed: int = 0) -> onnx.ModelProto:
    """A CNN whose weights are ``Constant`` nodes instead of initializers, as Paddle exports them."""
    model = cnn(seed=seed)
    consts = []
    for init in model.graph.initializer:
        consts.append(helper.make_node("Constant", [], [init.name], value=init, name=f"const.{init.name}"))
    del model.graph.initializer[:]
    nodes = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(consts + nodes)
    onnx.checker.check_model(model)
    return model


def contrib_gelu(seed: int = 0, dim: int = 16) -> onnx.ModelProto:
    """MatMul -> com.microsoft Gelu -> MatMul: onnx's shape inference cannot type the Gelu output (no
    schema for the domain), onnxruntime can. Input ``x`` [N, dim]."""
    rng = np.random.default_rng(seed)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
        helper.make_node("Gelu", ["h"], ["g"], domain="com.microsoft", name="gelu"),
        helper.make_node("MatMul", ["g", "w2"], ["y"], name="mm2"),
    ]
    graph = helper.make_graph(
        nodes,
        "contrib_gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])],
        [_init("w1", _he(rng, (dim, 2 * dim), dim)), _init("w2", _he(rng, (2 * dim, 8), 2 * dim))],
    )
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="hwquant-tests")
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model)
    return model


def if_subgraphs(seed: int = 0) -> onnx.ModelProto:
    """All compute (two MatMuls) sits inside the branches of an If node. Input ``x`` [N, 16]."""
    rng = np.random.default_rng(seed)

    def branch(tag: str) -> onnx.GraphProto:
        w = _init(f"{tag}.w", _he(rng, (16, 16), 16))
        return helper.make_graph(
            [helper.make_node("MatMul", ["x", f"{tag}.w"], [f"{tag}.y"], name=f"{tag}.matmul")],
            tag,
            [],
            [helper.make_tensor_value_info(f"{tag}.y", TensorProto.FLOAT, ["N", 16])],
            [w],
        )

    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
        helper.make_node("ReduceSum", ["s"], ["total"], keepdims=0, name="total"),
        helper.make_node("Greater", ["total", "zero"], ["cond"], name="cond"),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else"), name="if"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        [_init("zero", np.array(0.0))],
        name="if_subgraphs",
    )


def activations_model(seed: int = 0) -> onnx.ModelProto:
    """Gemm followed by Sigmoid and Tanh branches added together. Input ``x`` [N, 16]; output ``y``."""
    rng = np.random.default_rng(seed)
    inits = [_init("w", _he(rng, (16, 16), 16)), _init("b", 0.1 * rng.standard_normal(16))]
    nodes = [
        helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="gemm"),
        helper.make_node("Sigmoid", ["h"], ["sig"], name="sigmoid"),
        helper.make_node("Tanh", ["h"], ["tanh"], name="tanh"),
        helper.make_node("Add", ["sig", "tanh"], ["y"], name="add"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 16])],
        inits,
        name="activations",
    )


def batchnorm_cnn(channels: int = 8, size: int = 16, seed: int = 0) -> onnx.ModelProto:
    """Conv -> BatchNormalization -> Relu, then a bias-free Conv -> BatchNormalization -> HardSwish, whose
    BatchNormalization scales differ across channels by two orders of magnitude (as trained ones do), and
    a Conv whose output also leaves the model (its BatchNormalization cannot be folded). Input ``input``
    [N, 3, size, size]; outputs ``y`` and ``c3``.
    """
    rng = np.random.default_rng(seed)
    c = channels

    def bn(tag: str) -> list[TensorProto]:
        return [
            _init(f"{tag}.scale", np.exp(rng.uniform(-2.5, 2.5, c))),
            _init(f"{tag}.bias", rng.standard_normal(c) * 0.5),
            _init(f"{tag}.mean", rng.standard_normal(c) * 0.3),
            _init(f"{tag}.var", rng.uniform(0.2, 3.0, c)),
        ]

    def norm(tag: str, x: str, y: str, **attrs) -> onnx.NodeProto:
        params = [f"{tag}.{p}" for p in ("scale", "bias", "mean", "var")]
        return helper.make_node("BatchNormalization", [x, *params], [y], name=tag, **attrs)

    inits = [
        _init("conv1.w", _he(rng, (c, 3, 3, 3), 27)),
        _init("conv1.b", rng.standard_normal(c) * 0.1),
        *bn("bn1"),
        _init("conv2.w", _he(rng, (c, c, 3, 3), 9 * c)),
        *bn("bn2"),
        _init("conv3.w", _he(rng, (c, c, 1, 1), c)),
        *bn("bn3"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "conv1.w", "conv1.b"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        norm("bn1", "c1", "b1", epsilon=1e-3),
        helper.make_node("Relu", ["b1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "conv2.w"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        norm("bn2", "c2", "b2"),
        helper.make_node("HardSwish", ["b2"], ["h2"], name="hardswish2"),
        helper.make_node("Conv", ["h2", "conv3.w"], ["c3"], name="conv3"),
        norm("bn3", "c3", "y"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c, size, size]),
            helper.make_tensor_value_info("c3", TensorProto.FLOAT, ["N", c, size, size]),
        ],
        inits,
        name="batchnorm_cnn",
    )


def sample_inputs(model: onnx.ModelProto, count: int, seed: int = 1, batch: int = 1) -> list[dict[str, np.ndarray]]:
    """``count`` random float32 input dicts for ``model`` (symbolic dims: ``batch`` for N, 8 otherwise)."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        feed = {}
        for vi in model.graph.input:
            dims = [
                d.dim_value if d.HasField("dim_value") else (batch if d.dim_param == "N" else 8)
                for d in vi.type.tensor_type.shape.dim
            ]
            feed[vi.name] = rng.standard_normal(dims).astype(np.float32)
        samples.append(feed)
    return samples


def refilled(samples: list[dict[str, np.ndarray]]):
    """Yield ``samples`` through one reused set of arrays, refilled for every sample, as a reader with a
    preallocated buffer does."""
    buffers = {k: np.empty_like(v) for k, v in samples[0].items()}
    for s in samples:
        for k, v in s.items():
            buffers[k][...] = v
        yield buffers
