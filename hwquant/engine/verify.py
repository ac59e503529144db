"""Verify a quantized model: it passes onnx.checker, loads in onnxruntime, and how much of it is quantized;
measure its accuracy against the float model."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from hwquant.engine.result import Coverage, OutputAccuracy
from hwquant.errors import VerificationError

COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum", "Attention", "LSTM", "GRU", "RNN"})
RECURRENT_OPS = frozenset({"LSTM", "GRU", "RNN"})
SUBGRAPH_OPS = frozenset({"If", "Loop", "Scan"})
# QOperator replacements of compute ops
EVAL_BATCH = 16  # evaluation samples per onnxruntime run, when every input has a symbolic batch axis
QUANT_COMPUTE_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm", "QAttention"})


def session(model: Path | bytes, providers: Sequence[str] = ("CPUExecutionProvider",)) -> ort.InferenceSession:
    """An onnxruntime session for a model file or serialised model, with onnxruntime's logging kept quiet."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options, providers=list(providers))


def check_loadable(path: Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> ort.InferenceSession:
    """The onnxruntime session of ``path``; :class:`VerificationError` unless ``path`` passes onnx.checker
    and loads in onnxruntime."""
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise VerificationError(f"the quantized model fails onnx.checker: {exc}") from None
    try:
        return session(path, providers)
    except Exception as exc:
        raise VerificationError(f"onnxruntime refuses to load the quantized model: {exc}") from None


def _subgraph_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for node in graph.node:
        for attr in node.attribute:
            for g in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from g.node
                yield from _subgraph_nodes(g)


def coverage(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, op_types: Iterable[str]) -> Coverage:
    """Compute ops quantized out of the total, with a reason for each one left in float."""
    allowed = set(op_types)
    produced_by_dq = {o for n in quant_model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantized_names = set()
    for n in quant_model.graph.node:
        if n.op_type in QUANT_COMPUTE_OPS:
            quantized_names.add(n.name.removesuffix("_quant"))
        elif (
            n.op_type in COMPUTE_OPS
            and len(n.input) > 1
            and n.input[0] in produced_by_dq
            and n.input[1] in produced_by_dq
        ):
            quantized_names.add(n.name)
    float_ops: dict[str, str] = {}
    by_type: dict[str, list[int]] = {}
    done = total = 0
    main = [(n, False) for n in float_model.graph.node]
    nested = [(n, True) for n in _subgraph_nodes(float_model.graph)]
    for node, in_subgraph in main + nested:
        if node.op_type not in COMPUTE_OPS:
            continue
        total += 1
        counts = by_type.setdefault(node.op_type, [0, 0])
        counts[1] += 1
        label = node.name or f"{node.op_type}:{node.output[0]}"
        if not in_subgraph and node.name in quantized_names:
            done += 1
            counts[0] += 1
        elif in_subgraph:
            float_ops[label] = "inside an If/Loop/Scan subgraph (onnxruntime's static quantizer does not enter them)"
        elif node.op_type in RECURRENT_OPS:
            float_ops[label] = f"{node.op_type} is not quantized by static QDQ quantization"
        elif node.op_type not in allowed:
            float_ops[label] = "op type not run quantized by the profile"
        else:
            float_ops[label] = "onnxruntime left it in float (an input is not a quantizable float tensor)"
    return Coverage(
        quantized=done, total=total, float_ops=float_ops, by_op_type={k: (v[0], v[1]) for k, v in by_type.items()}
    )


class _Accumulator:
    def __init__(self) -> None:
        self.signal = self.noise = self.dot = self.norm_b = 0.0  # signal: the reference's squared norm
        self.max_abs = 0.0
        self.top1_same = self.top1_total = 0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        a = ref.astype(np.float64).ravel()
        b = got.astype(np.float64).ravel()
        diff = a - b
        # einsum, not BLAS dot: BLAS starts its threads beside onnxruntime's (accuracy of the 4-layer test
        # transformer on 2 CPUs: 0.07 s -> 0.03 s)
        self.signal += float(np.einsum("i,i->", a, a))
        self.noise += float(np.einsum("i,i->", diff, diff))
        self.dot += float(np.einsum("i,i->", a, b))
        self.norm_b += float(np.einsum("i,i->", b, b))
        if diff.size:
            self.max_abs = max(self.max_abs, float(np.abs(diff).max()))
        if ref.ndim == 2 and ref.shape[1] > 1:
            self.top1_same += int((ref.argmax(1) == got.argmax(1)).sum())
            self.top1_total += ref.shape[0]

    def result(self, name: str) -> OutputAccuracy:
        if self.noise == 0:
            sqnr = float("inf")
        elif self.signal == 0:
            sqnr = float("-inf")
        else:
            sqnr = 10 * np.log10(self.signal / self.noise)
        denom = np.sqrt(self.signal * self.norm_b)
        cosine = self.dot / denom if denom else (1.0 if self.signal == self.norm_b else 0.0)
        top1 = self.top1_same / self.top1_total if self.top1_total else None
        return OutputAccuracy(name, float(sqnr), float(cosine), self.max_abs, top1)


def accuracy(
    ref: ort.InferenceSession, got: ort.InferenceSession, samples: Iterable[dict[str, np.ndarray]]
) -> tuple[list[OutputAccuracy], int]:
    """Per-output SQNR (dB), cosine similarity, max abs error (and top-1 agreement for classifier-shaped
    outputs) of the quantized model's session ``got`` against the float model's ``ref``; also returns the
    sample count."""
    names = [o.name for o in ref.get_outputs()]
    acc = {n: _Accumulator() for n in names}
    batchable = all(isinstance(i.shape[0], str) or i.shape[0] is None for i in ref.get_inputs() if i.shape)
    count = 0
    for feed, n in _batches(samples, EVAL_BATCH if batchable else 1):
        for name, a, b in zip(names, ref.run(names, feed), got.run(names, feed), strict=True):
            acc[name].add(np.asarray(a), np.asarray(b))
        count += n
    return [acc[n].result(n) for n in names], count


def _batches(samples: Iterable[dict[str, np.ndarray]], size: int) -> Iterable[tuple[dict[str, np.ndarray], int]]:
    """Consecutive samples of equal shapes concatenated along the (symbolic) batch axis, ``size`` at most,
    with the number of samples in each."""
    pending: list[dict[str, np.ndarray]] = []

    def flush() -> tuple[dict[str, np.ndarray], int]:
        n = len(pending)
        feed = pending[0] if n == 1 else {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
        pending.clear()
        return feed, n

    for feed in samples:
        if pending and (len(pending) == size or any(v.shape != pending[0][k].shape for k, v in feed.items())):
            yield flush()
        pending.append({k: np.array(v) for k, v in feed.items()})  # a copy: the source may refill its arrays
    if pending:
        yield flush()
