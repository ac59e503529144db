"""Graph rewrites that prepare a float model for quantization: constants into initializers, batch norms
into the convolutions before them. Both change how the model is quantized, not what it computes."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Collection, Iterator, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

_CONSTANT_ATTRS = ("value", "value_float", "value_floats", "value_int", "value_ints")
_DEFAULT_DOMAINS = ("", "ai.onnx")
_FLOAT_DTYPES = (np.float16, np.float32, np.float64)


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


def _subgraph_inputs(graph: onnx.GraphProto) -> Iterator[str]:
    """Every name the nodes of ``graph``'s subgraphs (If/Loop/Scan bodies, at any depth) read."""
    for node in graph.node:
        for attr in node.attribute:
            for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
                for inner in sub.node:
                    yield from inner.input
                yield from _subgraph_inputs(sub)


def fold_batch_norms(model: onnx.ModelProto, keep: Collection[str] = ()) -> int:
    """Fold each inference ``BatchNormalization`` into the ``Conv`` that alone feeds it; returns how many.

    ``y = (conv(x, W) + b - mean) * s + beta`` with ``s = scale / sqrt(var + epsilon)`` becomes
    ``conv(x, W * s) + (b - mean) * s + beta`` per output channel, computed in float64 and stored in the
    weight's dtype (what onnxruntime's ConvBNFusion, TensorRT and TFLite's converter do). Every target
    runs the folded convolution, and calibration then observes one tensor where it observed two. Folded
    only when the Conv output feeds nothing else (no other node, subgraph or graph output) and W, b and
    the four BatchNormalization parameters are initializers that are not graph inputs (which a caller
    could override), and the BatchNormalization is not named in ``keep``. The Conv keeps its name and takes
    the BatchNormalization's output, so every tensor name of the folded model is a name of the input model.
    """
    graph = model.graph
    overridable = {i.name for i in graph.input}
    inits = {i.name: i for i in graph.initializer if i.name not in overridable}
    reads = Counter(name for node in graph.node for name in node.input)
    reads.update(_subgraph_inputs(graph))
    reads.update(o.name for o in graph.output)
    producer = {o: node for node in graph.node for o in node.output if o}
    taken = {i.name for i in graph.initializer} | set(producer) | overridable
    folded: list[onnx.NodeProto] = []
    detached: set[str] = set()
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or bn.name in keep:
            continue
        conv, affine = producer.get(bn.input[0]) if bn.input else None, batchnorm_affine(bn, inits)
        if not _foldable(conv, affine, inits, reads):
            continue
        weight, bias = _folded_params(conv, affine, inits)
        names = []
        for stem, value in ((conv.input[1], weight), (f"{bn.output[0]}_bias", bias)):
            name = _unique(f"{stem}_bn_folded", taken)
            taken.add(name)
            inits[name] = numpy_helper.from_array(value, name)
            graph.initializer.append(inits[name])
            names.append(name)
        for old in (*conv.input[1:3], *bn.input[1:5]):
            reads[old] -= 1
            detached.add(old)
        del conv.input[1:]
        conv.input.extend(names)
        conv.output[0] = bn.output[0]
        folded.append(bn)
    if folded:
        gone = {id(bn) for bn in folded}
        kept = [n for n in graph.node if id(n) not in gone]
        del graph.node[:]
        graph.node.extend(kept)
        unused = [i for i in graph.initializer if i.name in detached and reads[i.name] <= 0]
        for init in unused:
            graph.initializer.remove(init)
        stale = {bn.input[0] for bn in folded}
        kept_info = [vi for vi in graph.value_info if vi.name not in stale]
        del graph.value_info[:]
        graph.value_info.extend(kept_info)
    return len(folded)


def batchnorm_affine(bn: onnx.NodeProto, inits: Mapping[str, onnx.TensorProto]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(a, b)`` per channel (float64) with ``y = a * x + b``, for an inference ``BatchNormalization`` whose
    four parameters are 1-D initializers in ``inits``; None for any other node."""
    if bn.op_type != "BatchNormalization" or bn.domain not in _DEFAULT_DOMAINS or len(bn.input) != 5:
        return None
    attrs = {a.name: a for a in bn.attribute}
    if not bn.output or not bn.output[0] or any(bn.output[1:]):  # training outputs asked for
        return None
    if ("training_mode" in attrs and attrs["training_mode"].i) or ("spatial" in attrs and not attrs["spatial"].i):
        return None  # spatial = 0 (opset < 9): parameters per element, not per channel
    if not all(p in inits and len(inits[p].dims) == 1 for p in bn.input[1:5]):
        return None
    scale, beta, mean, var = (numpy_helper.to_array(inits[p]).astype(np.float64) for p in bn.input[1:5])
    a = scale / np.sqrt(var + (attrs["epsilon"].f if "epsilon" in attrs else 1e-5))
    return a, beta - mean * a


def _foldable(conv: onnx.NodeProto | None, affine, inits: Mapping, reads: Counter) -> bool:
    if affine is None or conv is None or conv.op_type != "Conv" or conv.domain not in _DEFAULT_DOMAINS:
        return False
    if len(conv.input) < 2 or not conv.input[1] or reads[conv.output[0]] != 1:
        return False
    params = [conv.input[1], *(p for p in conv.input[2:3] if p)]
    if not all(p in inits for p in params):
        return False
    weight = inits[conv.input[1]]
    if onnx.helper.tensor_dtype_to_np_dtype(weight.data_type) not in _FLOAT_DTYPES or not weight.dims:
        return False
    channels = weight.dims[0]
    return affine[0].shape == (channels,) and all(list(inits[p].dims) == [channels] for p in params[1:])


def _folded_params(conv: onnx.NodeProto, affine, inits: Mapping) -> tuple[np.ndarray, np.ndarray]:
    a, b = affine
    w = numpy_helper.to_array(inits[conv.input[1]])
    has_bias = len(conv.input) > 2 and conv.input[2]
    bias = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if has_bias else np.zeros_like(a)
    weight = (w.astype(np.float64) * a.reshape(-1, *[1] * (w.ndim - 1))).astype(w.dtype)
    return weight, (bias * a + b).astype(w.dtype)


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        k += 1
        out = f"{name}_{k}"
    return out
