"""``hwquant.compare``: how far a quantized model's outputs are from the float model's, on given data."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import onnx

from hwquant.engine.data import ImagePreprocess, SampleSource, extra_arrays, input_specs, open_samples
from hwquant.engine.prepare import load_model
from hwquant.engine.result import OutputAccuracy
from hwquant.errors import HwquantError, ModelError


@dataclass
class Comparison:
    """Per-output accuracy of ``quant_model`` against ``float_model`` over ``samples`` samples."""

    float_model: str
    quant_model: str
    data: str
    samples: int
    outputs: list[OutputAccuracy] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def output(self, name: str) -> OutputAccuracy:
        """The accuracy of output ``name`` (KeyError naming the outputs when unknown)."""
        for o in self.outputs:
            if o.output == name:
                return o
        raise KeyError(f"no output '{name}'; outputs: {', '.join(o.output for o in self.outputs)}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "float_model": self.float_model,
            "quant_model": self.quant_model,
            "data": self.data,
            "samples": self.samples,
            "ignored": list(self.ignored),
            "outputs": [asdict(o) for o in self.outputs],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def _same_interface(a: onnx.ModelProto, a_name: str, b: onnx.ModelProto, b_name: str) -> None:
    ins_a, ins_b = [s.name for s in input_specs(a)], [s.name for s in input_specs(b)]
    if sorted(ins_a) != sorted(ins_b):
        raise ModelError(
            f"the models take different inputs: {a_name} takes {', '.join(ins_a)}; {b_name} takes {', '.join(ins_b)}"
        )
    outs_a, outs_b = [o.name for o in a.graph.output], [o.name for o in b.graph.output]
    if outs_a != outs_b:
        raise ModelError(
            f"the models have different outputs: {a_name} gives {', '.join(outs_a)}; {b_name} gives {', '.join(outs_b)}"
        )


def compare(
    float_model: str | os.PathLike | onnx.ModelProto,
    quant_model: str | os.PathLike | onnx.ModelProto,
    data: Any,
    *,
    samples: int | None = None,
    image: ImagePreprocess | None = None,
    ignore: Collection[str] | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
) -> Comparison:
    """Run both models on ``data`` and measure, per output, the quantized model against the float one:
    SQNR (dB), cosine similarity, max abs error, and top-1 agreement for classifier-shaped ([N, classes])
    outputs.

    ``data`` is any source :func:`hwquant.engine.data.open_samples` accepts (``image`` for an image
    folder); ``samples`` limits how many are used. ``ignore`` names arrays to skip; by default, arrays
    of an ``.npz`` that are not model inputs (labels) are skipped when every input is present. Both
    models must take the same inputs and give the same outputs.
    """
    from hwquant.engine.verify import accuracy, session  # onnxruntime: loaded only to run the models

    fmodel, fname = load_model(float_model)
    qmodel, qname = load_model(quant_model)
    _same_interface(fmodel, fname, qmodel, qname)
    skipped = list(ignore) if ignore is not None else extra_arrays(data, fmodel)
    source: SampleSource = open_samples(data, fmodel, image=image, ignore=skipped)
    if samples is not None:
        source = source.take(samples)
    with tempfile.TemporaryDirectory(prefix="hwquant-") as tmp:
        paths = []
        for model, given, name in ((fmodel, float_model, "float.onnx"), (qmodel, quant_model, "quant.onnx")):
            if isinstance(given, onnx.ModelProto):
                path = Path(tmp) / name
                onnx.save(model, str(path))
                paths.append(path)
            else:
                paths.append(Path(given))
        sessions = []
        for path, name in zip(paths, (fname, qname), strict=True):
            try:
                sessions.append(session(path, providers))
            except Exception as exc:
                raise ModelError(f"{name}: onnxruntime cannot load it ({_first_line(exc)})") from None
        try:
            outputs, count = accuracy(*sessions, source)
        except HwquantError:
            raise
        except Exception as exc:
            raise ModelError(
                f"running {fname} and {qname} on {source.description} failed: {_first_line(exc)}"
            ) from None
    return Comparison(fname, qname, source.description, count, outputs, skipped)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["Comparison", "compare"]
