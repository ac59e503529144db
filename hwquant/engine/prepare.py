"""Load a float model and prepare its graph the way quantization needs it.

Everything happens on a copy, in a temporary directory the caller owns: the input model and its folder
are never written to.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from google.protobuf.message import EncodeError
from onnx import numpy_helper
from onnx.external_data_helper import uses_external_data

from hwquant.checker.graph import copy_fields, without_initializers, without_weights
from hwquant.engine.calibrate import model_fingerprint, tensor_bytes
from hwquant.engine.fold import fold_constants_into_initializers
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
"""Protobuf cannot serialise a message this large: models over it are checked, shape-inferred, calibrated and
saved by path, with their weights as external data. Tests lower it to run those code paths on small models."""
EXACT_SIZE_LIMIT = 64 << 20
"""Models with less weight than this get their exact serialised size; larger ones an estimate, since
``ByteSize()`` serialises the whole message (1.5 s for a 587 MB model)."""
EXTERNAL_THRESHOLD = 1024
"""When a model is saved with external data, initializers of at least this many bytes go to the data file."""
ORT_INFERRED = {"onnx.infer": "onnxruntime.quant"}  # onnxruntime's quantizer: "shapes already inferred"
EXTERNAL_ALIGN = 4096  # offsets of external tensors: page-aligned, so onnxruntime can map them
# several values per byte: their byte count does not follow from numpy's itemsize
_PACKED_TYPES = {
    getattr(onnx.TensorProto, t)
    for t in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
    if hasattr(onnx.TensorProto, t)
}


@dataclass
class Prepared:
    """The prepared float model, where it was written, and what preparation changed."""

    model: onnx.ModelProto
    path: Path
    source: str
    fingerprint: str = ""
    """sha256 of the input graph, so a saved calibration is never applied to another model; ``""`` when
    ``prepare`` was told no calibration is saved or loaded (hashing MiniLM's 69 MB takes 0.06 s)."""
    constants_folded: int = 0
    opset_from: int | None = None
    opset_to: int | None = None
    notes: list[str] = field(default_factory=list)
    large: bool = False
    """Over :data:`MAX_PROTOBUF`: ``model`` cannot be serialised, pass ``path`` to whatever needs bytes (an
    onnxruntime session, calibration); prepare wrote it there, the weights in ``<name>.data`` beside it.
    Otherwise nothing is written at ``path``."""


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


def _inline_weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the main graph's initializers held in the proto."""
    return sum(tensor_bytes(t) for t in model.graph.initializer)


def model_size(model: onnx.ModelProto) -> int:
    """The serialised size of ``model`` in bytes; with over :data:`EXACT_SIZE_LIMIT` of weights, their bytes
    plus the serialised size of the rest (within a few bytes per part).

    With protobuf's upb backend ``ByteSize()`` serialises the whole message (seconds and gigabytes of memory
    for a model of some GB) and raises ``EncodeError`` past the limit, so it is not called on such a model.
    """
    weights = _inline_weight_bytes(model)
    if weights < EXACT_SIZE_LIMIT:
        try:
            return model.ByteSize()
        except (EncodeError, ValueError, OverflowError):
            pass  # Constant nodes or subgraphs hold the weights
    return _estimated_size(model)


def exceeds_protobuf_limit(model: onnx.ModelProto) -> bool:
    """Whether ``model`` is too large to serialise in one piece (see :data:`MAX_PROTOBUF`): its weights'
    bytes from their dims plus the serialised size of the rest, so the weights are never serialised."""
    return _estimated_size(model) >= MAX_PROTOBUF


def _estimated_size(model: onnx.ModelProto) -> int:
    g = model.graph
    rest = (*g.sparse_initializer, *g.node, *g.input, *g.output, *g.value_info, *model.functions)
    return _inline_weight_bytes(model) + sum(part.ByteSize() for part in rest)


def check_valid(model: onnx.ModelProto, source: str) -> None:
    """Raise :class:`ModelError` naming the model when onnx.checker rejects it (e.g. nodes out of order) or
    a weight's bytes do not fit its shape.

    onnx.checker runs on :func:`without_weights`'s copy, so the large raw weights are not serialised
    (paraphrase-MiniLM, 69 MB: 0.11 s -> 2 ms) and models over 2 GB are checked too; the check onnx.checker
    makes on those weights, their byte length, is made here. A copy still over 2 GB (weights in Constant
    nodes or subgraphs) is left to onnxruntime, which reports problems when calibrating.
    """
    for init in model.graph.initializer:
        if init.data_type in _PACKED_TYPES or uses_external_data(init) or not init.HasField("raw_data"):
            continue
        want, got = tensor_bytes(init), len(init.raw_data)
        if got != want:
            raise ModelError(
                f"{source}: initializer '{init.name}' holds {got} bytes, its shape {list(init.dims)} needs {want}"
            )
    shell = without_weights(model)
    try:
        too_big = exceeds_protobuf_limit(shell)
    except (EncodeError, ValueError, OverflowError):  # one node over 2 GB
        too_big = True
    if too_big:
        return
    try:
        onnx.checker.check_model(shell)
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


def raise_opset(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
    """Convert the model to at least opset ``target`` (per-channel DequantizeLinear needs 13)."""
    current = opset_version(model)
    if current >= target:
        return model
    if exceeds_protobuf_limit(model):
        raise ModelError(
            f"the model is at opset {current} and per-channel quantization needs opset {target}, but onnx's "
            "version converter cannot take a model over 2 GB: convert it to opset 13 or later first"
        )
    try:
        converted = onnx.version_converter.convert_version(model, target)
    except Exception as exc:
        raise ModelError(
            f"the model is at opset {current} and per-channel quantization needs opset {target}, "
            f"but onnx's version converter failed: {exc}"
        ) from None
    return converted


def infer_shapes(model: onnx.ModelProto, workdir: Path) -> tuple[onnx.ModelProto, str]:
    """onnx's shape inference (what onnxruntime's quantizer itself runs), then onnxruntime types the float
    tensors onnx could not: outputs of ops outside onnx's schemas (``com.microsoft`` Gelu, Attention, ...),
    which onnxruntime's quantizer would otherwise skip ("failed to infer the type of tensor").

    onnxruntime's symbolic inference is not used: it needs sympy, which onnxruntime does not install (so
    it never ran in practice), fails on many real exports, and types nothing onnxruntime cannot.
    A model over the protobuf limit is inferred by path (saved to ``workdir`` with external data, inferred,
    and the inferred types copied back into ``model``).
    """
    if exceeds_protobuf_limit(model):
        return _infer_shapes_by_path(model, workdir), "onnx (path)"
    # inferred on a copy without the weights (serialising MiniLM's 69 MB for onnx took most of the time)
    inferred = onnx.shape_inference.infer_shapes(without_weights(model), check_type=False, strict_mode=False)
    g, ig = model.graph, inferred.graph
    _adopt_types(g, ig)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        del g.node[:]  # the subgraphs' inferred types live in the nodes
        g.node.extend(ig.node)
    typed = _type_with_onnxruntime(model, lambda m: m.SerializeToString())
    return model, f"onnx; {typed} more typed by onnxruntime" if typed else "onnx"


def _untyped(model: onnx.ModelProto) -> list[str]:
    """Main-graph node outputs without an element type after shape inference."""
    g = model.graph
    typed = {
        vi.name
        for vi in (*g.value_info, *g.output, *g.input)
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type
    }
    typed |= {i.name for i in g.initializer}
    return [o for n in g.node for o in n.output if o and o not in typed]


def _type_with_onnxruntime(model: onnx.ModelProto, load) -> int:
    """Add value_info for the node outputs shape inference left untyped, as onnxruntime types them.

    ``load`` turns the model (with those tensors made graph outputs) into what an InferenceSession takes:
    its bytes, or the path of a file written beside the model's external data. Returns how many were typed.
    """
    untyped = _untyped(model)
    if not untyped:
        return 0
    import onnxruntime as ort

    g = model.graph
    n_outputs = len(g.output)
    g.output.extend(onnx.ValueInfoProto(name=t) for t in untyped)  # untyped: onnxruntime infers the type
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        outputs = ort.InferenceSession(load(model), options, providers=["CPUExecutionProvider"]).get_outputs()
    except Exception as exc:  # calibration reports a model onnxruntime cannot load
        log.info("onnxruntime could not type %d tensors: %s", len(untyped), exc)
        return 0
    finally:
        del g.output[n_outputs:]
    types = {o.name: o for o in outputs}
    count = 0
    for name in untyped:
        arg = types.get(name)
        elem = _ORT_ELEM_TYPES.get(arg.type) if arg is not None else None
        if elem is None:
            continue
        shape = None if arg.shape is None else [d if isinstance(d, (int, str)) else None for d in arg.shape]
        g.value_info.append(onnx.helper.make_tensor_value_info(name, elem, shape))
        count += 1
    return count


_ORT_ELEM_TYPES = {
    f"tensor({name})": elem
    for name, elem in (
        ("float", onnx.TensorProto.FLOAT),
        ("float16", onnx.TensorProto.FLOAT16),
        ("double", onnx.TensorProto.DOUBLE),
        ("bfloat16", onnx.TensorProto.BFLOAT16),
        ("int8", onnx.TensorProto.INT8),
        ("uint8", onnx.TensorProto.UINT8),
        ("int16", onnx.TensorProto.INT16),
        ("uint16", onnx.TensorProto.UINT16),
        ("int32", onnx.TensorProto.INT32),
        ("uint32", onnx.TensorProto.UINT32),
        ("int64", onnx.TensorProto.INT64),
        ("uint64", onnx.TensorProto.UINT64),
        ("bool", onnx.TensorProto.BOOL),
        ("string", onnx.TensorProto.STRING),
    )
}


def _infer_shapes_by_path(model: onnx.ModelProto, workdir: Path) -> onnx.ModelProto:
    """onnx shape inference of a model too large to serialise: saved to ``workdir`` with external data and
    inferred by path; the inferred types are copied back into ``model``, which is returned."""
    src = workdir / "infer_in.onnx"
    try:
        save_model(model, src, external=True)
        _infer_saved(model, src)
    finally:
        for p in (src, src.with_name(src.name + ".data")):
            p.unlink(missing_ok=True)
    return model


def _infer_saved(model: onnx.ModelProto, path: Path) -> None:
    """Infer the shapes of ``model``, already saved with external data at ``path``: the file is updated in place
    (only the model file: onnx never reads the weights) and its inferred types are copied into ``model``;
    onnxruntime types what onnx could not, reading the weights from beside ``path``."""
    onnx.shape_inference.infer_shapes_path(str(path), str(path))
    inferred = onnx.load(str(path), load_external_data=False)

    def beside(shell: onnx.ModelProto) -> str:
        typing = path.with_name("typing.onnx")
        onnx.save(shell, str(typing))
        return str(typing)

    try:
        if _type_with_onnxruntime(inferred, beside):
            onnx.save(inferred, str(path))
    finally:
        path.with_name("typing.onnx").unlink(missing_ok=True)
    _adopt_types(model.graph, inferred.graph)


def _adopt_types(graph: onnx.GraphProto, inferred: onnx.GraphProto) -> None:
    """Replace ``graph``'s value_info and outputs with those shape inference produced in ``inferred``."""
    for name in ("value_info", "output"):
        del getattr(graph, name)[:]
        getattr(graph, name).extend(getattr(inferred, name))


_TENSOR_DATA = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data")


def _write_external(model: onnx.ModelProto, path: Path) -> bool:
    """Write ``model`` to ``path`` with its large initializers in ``<name>.data``, leaving ``model`` as it is
    (``onnx.save`` with external data strips the weights out of the proto it is given). Memory: the small
    parts of the model and one initializer's bytes. False when the rest is still too large (weights in
    Constant nodes or subgraphs): nothing is written then."""
    data_name = path.name + ".data"
    shell = without_initializers(model)
    externals: list[tuple[onnx.TensorProto, onnx.TensorProto]] = []
    for src in model.graph.initializer:
        dst = shell.graph.initializer.add()
        inline = src.data_type == onnx.TensorProto.STRING or uses_external_data(src)
        if inline or tensor_bytes(src) < EXTERNAL_THRESHOLD:
            dst.CopyFrom(src)
            continue
        copy_fields(src, dst, skip=_TENSOR_DATA)
        dst.data_location = onnx.TensorProto.EXTERNAL  # its location and offset are added when it is written
        externals.append((src, dst))
    if exceeds_protobuf_limit(shell):
        return False
    with open(path.with_name(data_name), "wb") as f:
        for src, dst in externals:
            f.write(b"\0" * (-f.tell() % EXTERNAL_ALIGN))
            offset = f.tell()
            # typed fields (float_data, ...) converted to raw little-endian bytes, as external data is stored
            f.write(
                src.raw_data
                if src.HasField("raw_data")
                else numpy_helper.from_array(numpy_helper.to_array(src)).raw_data
            )
            for key, value in (("location", data_name), ("offset", offset), ("length", f.tell() - offset)):
                dst.external_data.add(key=key, value=str(value))
    onnx.save(shell, str(path))
    return True


def save_model(model: onnx.ModelProto, path: Path, *, external: bool | None = None) -> None:
    """Save ``model`` to ``path``, with its weights in ``<name>.data`` beside it when it is over the protobuf
    limit (or ``external`` says so). ``model`` itself is never modified."""
    if external is None:
        external = exceeds_protobuf_limit(model)
    if not external:
        onnx.save(model, str(path))
    elif not _write_external(model, path):
        onnx.save(copy.deepcopy(model), str(path), save_as_external_data=True, location=path.name + ".data")


def prepare(
    model: str | Path | onnx.ModelProto, workdir: Path, *, per_channel: bool, fingerprint: bool = True
) -> Prepared:
    """Load ``model`` and prepare it for quantization inside ``workdir`` (``fingerprint``: hash the input
    graph, for a calibration that is saved or loaded)."""
    proto, source = load_model(model)
    check_valid(proto, source)
    refuse_quantized(proto, source)
    prepared = Prepared(
        model=proto,
        path=workdir / "prepared.onnx",
        source=source,
        fingerprint=model_fingerprint(proto) if fingerprint else "",
    )
    prepared.constants_folded = fold_constants_into_initializers(proto)
    if prepared.constants_folded:
        prepared.notes.append(f"{prepared.constants_folded} Constant nodes turned into initializers")
    if per_channel and opset_version(proto) < 13:
        prepared.opset_from = opset_version(proto)
        proto = raise_opset(proto, 13)
        prepared.opset_to = 13
        prepared.notes.append(f"opset raised from {prepared.opset_from} to 13 for per-channel weights")
    prepared.large = exceeds_protobuf_limit(proto)
    if prepared.large:  # saved once, weights and all, then inferred from that file
        save_model(proto, prepared.path, external=True)
        _infer_saved(proto, prepared.path)
        how = "onnx (path)"
    else:
        proto, how = infer_shapes(proto, workdir)
    # onnxruntime's quantizer runs the same onnx inference on a model without this mark, after copying it,
    # writing it to disk and reading it back, twice per quantize (plan and emit): seconds and GB on large models
    onnx.helper.set_model_props(proto, {**ORT_INFERRED, **{p.key: p.value for p in proto.metadata_props}})
    prepared.notes.append(f"shapes inferred ({how})")
    prepared.model = proto
    return prepared
