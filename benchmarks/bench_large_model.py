"""A real model over 2 GB through hwquant.quantize and onnxruntime's quantize_static (issue #4: "models over
2 GB").

    python benchmarks/bench_large_model.py [--layers N] [--dim D] [--samples N] [--cache DIR] [--json PATH]

Purpose: exercise, on a model whose weights exceed protobuf's 2 GB limit, the code paths that small test
models never reach: loading with external data, shape inference by path, calibration, onnxruntime's
quantizer, verification and moving the output (with its external data) into place.

The model is an MLP-like stack built with onnx.helper and numpy (seed fixed): input ``x`` [N, TOKENS, D],
``LAYERS`` x (MatMul [D, D] -> Add bias -> Relu), the last layer without Relu, output ``y``. The default
35 layers at D = 4096 hold 2.35e9 bytes of float32 weights (2.19 GiB), written as external data to
``~/.cache/hwquant-bench/large/`` (or ``--cache``) and reused by later runs with the same settings. A few
calibration samples and two evaluation samples are written beside it.

Each tool runs in a fresh subprocess (imports, loading, calibration, quantization, and for hwquant its own
verification): ``hwquant.quantize(model, out, "ort-default", samples.npz)`` and onnxruntime's
``quantize_static(..., quant_format=QDQ, use_external_data_format=True)`` with the same samples. The worker
reports its wall time and peak RSS (VmHWM). A separate evaluation subprocess then measures each output:
its size on disk (model file and external data), whether it loads in an onnxruntime InferenceSession and
runs, how many MatMul weights became int8 initializers, and the SQNR (dB) of its output against the float
model on the evaluation samples. Temporary outputs are deleted at the end; only the cached model stays.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_engine import ORT_READER  # noqa: E402

DEFAULT_CACHE = Path.home() / ".cache" / "hwquant-bench" / "large"
LAYERS = 35
DIM = 4096
TOKENS = 16
SEED = 0
FORMAT_VERSION = 1  # bump when the model recipe changes, so a stale cache is rebuilt
MODEL_NAME = "large.onnx"

PEAK_RSS = """
def _peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

HWQUANT_SCRIPT = (
    PEAK_RSS
    + """
import json, sys, time
t = time.perf_counter()
import hwquant
r = hwquant.quantize(sys.argv[1], sys.argv[3], "ort-default", sys.argv[2])
print(json.dumps({
    "wall_s": time.perf_counter() - t,
    "peak_rss_mb": _peak_rss_mb(),
    "ok": r.ok,
    "coverage": [r.coverage.quantized, r.coverage.total],
    "timings": r.timings,
    "notes": r.notes,
    "own_sqnr_db": {a.output: a.sqnr_db for a in r.accuracy},
}))
"""
)

ORT_SCRIPT = (
    PEAK_RSS
    + """
import json, sys, time
t = time.perf_counter()
"""
    + ORT_READER
    + """
quantize_static(sys.argv[1], sys.argv[3], Reader(), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, use_external_data_format=True)
print(json.dumps({"wall_s": time.perf_counter() - t, "peak_rss_mb": _peak_rss_mb()}))
"""
)

EVAL_SCRIPT = (
    PEAK_RSS
    + """
import json, sys
import numpy as np, onnx, onnxruntime as ort
from onnx import TensorProto
float_path, eval_path, quant_path = sys.argv[1:4]
out = {}
m = onnx.load(quant_path, load_external_data=False)  # structure only: the data files are not read
inits = {i.name: i for i in m.graph.initializer}
weights = [n.input[1] for n in m.graph.node if n.op_type == "MatMul" and len(n.input) > 1]
int8_weights = 0
for n in m.graph.node:  # a weight is int8 when the MatMul reads it through DequantizeLinear of an int8 initializer
    if n.op_type == "DequantizeLinear" and n.output[0] in weights and n.input[0] in inits:
        int8_weights += inits[n.input[0]].data_type == TensorProto.INT8
out["matmuls"] = len(weights)
out["int8_weights"] = int8_weights
out["float_weights_left"] = sum(1 for w in weights if w in inits and inits[w].data_type == TensorProto.FLOAT)
out["ops"] = sorted({n.op_type for n in m.graph.node})
del m, inits
so = ort.SessionOptions(); so.log_severity_level = 3
try:
    q = ort.InferenceSession(quant_path, so, providers=["CPUExecutionProvider"])
    out["loads"] = True
except Exception as exc:
    out["loads"] = False; out["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
    print(json.dumps(out)); sys.exit(0)
samples = np.load(eval_path)
xs = samples[samples.files[0]]
name = q.get_inputs()[0].name
try:
    got = [q.run(None, {name: xs[i:i + 1]})[0] for i in range(len(xs))]
    out["runs"] = True
except Exception as exc:
    out["runs"] = False; out["error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
    print(json.dumps(out)); sys.exit(0)
del q
f = ort.InferenceSession(float_path, so, providers=["CPUExecutionProvider"])
ref = [f.run(None, {name: xs[i:i + 1]})[0] for i in range(len(xs))]
sig = sum(float((r.astype(np.float64) ** 2).sum()) for r in ref)
noise = sum(float(((r.astype(np.float64) - g) ** 2).sum()) for r, g in zip(ref, got))
out["sqnr_db"] = 10 * np.log10(sig / noise) if noise else float("inf")
out["eval_samples"] = len(xs)
out["eval_peak_rss_mb"] = _peak_rss_mb()
print(json.dumps(out))
"""
)


# ---------------------------------------------------------------------------------------------- the model


def _meta(layers: int, dim: int) -> dict[str, int]:
    return {"format": FORMAT_VERSION, "layers": layers, "dim": dim, "tokens": TOKENS, "seed": SEED}


def build_model(folder: Path, layers: int = LAYERS, dim: int = DIM) -> Path:
    """Write the model and its external data into ``folder`` (reused when already there); return its path.

    Weights go straight to the data file one layer at a time, so building never holds more than one
    [dim, dim] matrix in memory.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path, meta_path = folder / MODEL_NAME, folder / "meta.json"
    meta = _meta(layers, dim)
    if meta_path.is_file() and json.loads(meta_path.read_text()) == meta and path.is_file():
        return path
    meta_path.unlink(missing_ok=True)  # written last: a half-built cache is never reused
    data_name = MODEL_NAME + ".data"
    rng = np.random.default_rng(SEED)
    inits: list[TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    x = "x"
    with open(folder / data_name, "wb") as f:

        def external(name: str, arr: np.ndarray) -> None:
            pad = (-f.tell()) % 4096  # page-aligned, as onnx does for large tensors
            f.write(b"\0" * pad)
            offset = f.tell()
            f.write(arr.tobytes())
            tensor = TensorProto(name=name, data_type=TensorProto.FLOAT)
            tensor.dims.extend(arr.shape)
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", offset), ("length", arr.nbytes)):
                tensor.external_data.add(key=key, value=str(value))
            inits.append(tensor)

        for i in range(layers):
            w = rng.standard_normal((dim, dim), dtype=np.float32)
            w *= np.float32(np.sqrt(2.0 / dim))  # He initialisation: activations keep their scale through Relu
            external(f"l{i}.w", w)
            del w
            external(f"l{i}.b", (0.05 * rng.standard_normal(dim, dtype=np.float32)).astype(np.float32))
            last = i == layers - 1
            nodes.append(helper.make_node("MatMul", [x, f"l{i}.w"], [f"l{i}.mm"], name=f"l{i}.matmul"))
            nodes.append(
                helper.make_node("Add", [f"l{i}.mm", f"l{i}.b"], ["y" if last else f"l{i}.add"], name=f"l{i}.add")
            )
            if not last:
                nodes.append(helper.make_node("Relu", [f"l{i}.add"], [f"l{i}.relu"], name=f"l{i}.relu"))
                x = f"l{i}.relu"
    graph = helper.make_graph(
        nodes,
        "large_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", TOKENS, dim])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", TOKENS, dim])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="hwquant-bench")
    model.ir_version = 10
    with open(path, "wb") as f:  # the proto holds no weights: it is small
        f.write(model.SerializeToString())
    onnx.checker.check_model(str(path))  # by path: the checker reads external data from beside the file
    meta_path.write_text(json.dumps(meta))
    return path


def write_samples(folder: Path, n_calib: int, n_eval: int, dim: int) -> tuple[Path, Path]:
    """Stacked .npz files of ``n_calib`` calibration and ``n_eval`` evaluation samples (different seeds)."""
    paths = []
    for name, n, seed in (("calib", n_calib, 1), ("eval", n_eval, 2)):
        p = folder / f"{name}-{n}x{TOKENS}x{dim}.npz"
        if not p.is_file():
            rng = np.random.default_rng(seed)
            np.savez(p, x=rng.standard_normal((n, TOKENS, dim), dtype=np.float32))
        paths.append(p)
    return paths[0], paths[1]


# ---------------------------------------------------------------------------------------------- running


def disk_size(model: Path) -> int:
    """Bytes of ``model`` and every external data file it references."""
    total = model.stat().st_size
    proto = onnx.load(str(model), load_external_data=False)
    files = {
        e.value
        for t in proto.graph.initializer
        if t.data_location == TensorProto.EXTERNAL
        for e in t.external_data
        if e.key == "location"
    }
    return total + sum((model.parent / f).stat().st_size for f in files)


def run_worker(script: str, *args: str, env: dict[str, str] | None = None) -> dict:
    """Run ``script`` in a fresh interpreter; its last stdout line is JSON. Failures are reported, not raised."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True, env=env, cwd=ROOT
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-25:]
        return {"failed": True, "wall_s": elapsed, "error": "\n".join(tail)}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = elapsed
    return result


def bench(model: Path, calib: Path, evals: Path, tools: list[str], workdir: Path) -> dict[str, dict]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    scripts = {"hwquant": HWQUANT_SCRIPT, "ort": ORT_SCRIPT}
    figures: dict[str, dict] = {}
    for tool in tools:
        out_dir = workdir / tool
        out_dir.mkdir()
        out = out_dir / "quantized.onnx"
        print(f"[{tool}] quantizing ...", file=sys.stderr, flush=True)
        fig = run_worker(scripts[tool], str(model), str(calib), str(out), env=env)
        if not fig.get("failed") and out.is_file():
            fig["output_bytes"] = disk_size(out)
            print(f"[{tool}] evaluating ...", file=sys.stderr, flush=True)
            fig["eval"] = run_worker(EVAL_SCRIPT, str(model), str(evals), str(out), env=env)
        figures[tool] = fig
        shutil.rmtree(out_dir, ignore_errors=True)
    return figures


def print_table(figures: dict[str, dict], input_bytes: int) -> None:
    print(f"float model: {input_bytes / 1e9:.2f} GB on disk ({input_bytes / 2**30:.2f} GiB)")
    head = ("tool", "wall (s)", "peak RSS (GB)", "output (GB)", "loads", "runs", "int8 W", "SQNR (dB)")
    print("{:<8} {:>9} {:>14} {:>12} {:>6} {:>5} {:>9} {:>10}".format(*head))
    for tool, f in figures.items():
        if f.get("failed"):
            print(f"{tool:<8} {f['wall_s']:>9.1f}  FAILED: {f['error'].splitlines()[-1][:200]}")
            continue
        e = f.get("eval", {})
        int8 = f"{e.get('int8_weights', '?')}/{e.get('matmuls', '?')}"
        sqnr = e.get("sqnr_db")
        row = (tool, f["wall_s"], f["peak_rss_mb"] / 1024, f.get("output_bytes", 0) / 1e9)
        row += (str(e.get("loads", "?")), str(e.get("runs", "?")), int8, "-" if sqnr is None else f"{sqnr:.2f}")
        print("{:<8} {:>9.1f} {:>14.2f} {:>12.3f} {:>6} {:>5} {:>9} {:>10}".format(*row))
        if "error" in e:
            print(f"  {tool} evaluation error: {e['error']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where the model is built and kept")
    ap.add_argument("--layers", type=int, default=LAYERS)
    ap.add_argument("--dim", type=int, default=DIM)
    ap.add_argument("--samples", type=int, default=8, help="calibration samples (hwquant holds out 10%% to evaluate)")
    ap.add_argument("--eval-samples", type=int, default=2)
    ap.add_argument("--tools", default="hwquant,ort", help="comma-separated: hwquant, ort")
    ap.add_argument("--workdir", type=Path, help="parent folder of the temporary outputs (default: the system's)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    unknown = set(tools) - {"hwquant", "ort"}
    if unknown:
        ap.error(f"unknown tools: {', '.join(sorted(unknown))}")

    cache = args.cache / (f"{args.layers}x{args.dim}" if (args.layers, args.dim) != (LAYERS, DIM) else "")
    t = time.perf_counter()
    model = build_model(cache, args.layers, args.dim)
    build_s = time.perf_counter() - t
    calib, evals = write_samples(cache, args.samples, args.eval_samples, args.dim)
    input_bytes = disk_size(model)
    print(f"model: {model} (built or reused in {build_s:.1f} s)", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hwquant-bench-large-", dir=args.workdir) as tmp:
        figures = bench(model, calib, evals, tools, Path(tmp))
    print_table(figures, input_bytes)
    if args.json:
        report = {
            "model": {"path": str(model), "bytes": input_bytes, **_meta(args.layers, args.dim)},
            "samples": {"calibration": args.samples, "evaluation": args.eval_samples},
            "tools": figures,
        }
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
