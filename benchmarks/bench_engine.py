"""The engine issue's performance targets: hwquant.quantize against onnxruntime's quantize_static, whole
processes, side by side in one run.

    python benchmarks/bench_engine.py [--quick] [--reps N] [--samples N]

Models (built with onnx.helper, random He-initialised weights): a CNN-like network at 224x224 (8 Conv+Relu,
GlobalAveragePool, Gemm to 1000 classes, ~1.4M parameters) and a transformer-like encoder (4 layers,
dim 256, MatMul -> Add projections, Softmax attention, LayerNormalization). The calibration samples are
written once to a stacked .npz that both tools read.

Every figure is a fresh subprocess timed from outside (imports, model loading, calibration, quantization
and, for hwquant, its verification: onnx.checker, an onnxruntime session, the profile check and accuracy on
held-out samples), with repetitions interleaved, medians reported. Printed ratios:

1. MinMax: hwquant wall / quantize_static wall (target <= 0.7), per model: whole processes, and the quantize
   call alone inside them (the interpreter and the imports, onnx and onnxruntime's for both, are the same
   fixed cost for both tools);
2. the floor: a process that imports the same modules, loads the same samples and runs plain float
   inference over them once (onnxruntime's default session, 16 samples per run: on this machine batching
   measured as fast or faster than one sample per run), over quantize_static. Any tool that observes the
   activations must run the float model over the samples at least once, and observing them costs more;
3. quantizing for 4 profiles from one saved calibration (calibrate + 4 x quantize) / quantizing for 1
   (target <= 1.6).
The calibration-only targets (entropy/percentile memory and time, calibration vs plain inference) are in
benchmarks/bench_calibration.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import modelzoo  # noqa: E402

# quantize_static's caller: argv = model, stacked .npz (one input), output; one sample per get_next()
ORT_READER = """
import sys, numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
data = np.load(sys.argv[2])
name = data.files[0]
arr = data[name]
class Reader(CalibrationDataReader):
    def __init__(self): self.i = 0
    def get_next(self):
        if self.i == len(arr): return None
        self.i += 1
        return {name: arr[self.i - 1:self.i]}
"""

ORT_SCRIPT = (
    ORT_READER
    + """
import time
start = time.perf_counter()
quantize_static(sys.argv[1], sys.argv[3], Reader(), quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
print("CALL", time.perf_counter() - start)
"""
)

# the lower bound of any one-pass tool: plain float inference over the same samples (same imports as ORT_SCRIPT),
# 16 samples per run
FLOOR_SCRIPT = (
    ORT_READER
    + """
import time
import onnxruntime as ort
start = time.perf_counter()
sess = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
for i in range(0, len(arr), 16):
    sess.run(None, {name: arr[i:i + 16]})
print("CALL", time.perf_counter() - start)
"""
)

HWQUANT_SCRIPT = """
import sys, time, hwquant
from hwquant.engine import quantize  # imports, as quantize_static's caller has them
start = time.perf_counter()
r = hwquant.quantize(sys.argv[1], sys.argv[3], "ort-default", sys.argv[2])
print("CALL", time.perf_counter() - start)
assert r.ok and r.coverage.quantized == r.coverage.total, r.coverage
"""

MANY_SCRIPT = """
import sys, hwquant
from pathlib import Path
out = Path(sys.argv[3])
hwquant.calibrate(sys.argv[1], sys.argv[2], output=out.with_suffix(".hwqcal.npz"))
for p in ("ort-default", "restricted-u8", "tensorrt-int8", "pow2-int8"):
    r = hwquant.quantize(sys.argv[1], out.with_name(p + ".onnx"), p, out.with_suffix(".hwqcal.npz"))
    assert r.ok, p
"""


def cnn_224(seed: int = 0) -> onnx.ModelProto:
    """A CNN-like model at 224x224: strided Conv+Relu stages 32-64-128-256, GAP, Gemm(1000), Softmax."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    inits, nodes, x, cin = [], [], "input", 3
    for i, (cout, stride) in enumerate([(32, 2), (32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1)]):
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        inits += [onnx.numpy_helper.from_array(w, f"c{i}.w"), onnx.numpy_helper.from_array(
            (0.1 * rng.standard_normal(cout)).astype(np.float32), f"c{i}.b")]  # fmt: skip
        nodes.append(helper.make_node("Conv", [x, f"c{i}.w", f"c{i}.b"], [f"c{i}"], pads=[1] * 4, strides=[stride] * 2))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x, cin = f"r{i}", cout
    fc = (rng.standard_normal((1000, cin)) * np.sqrt(2 / cin)).astype(np.float32)
    inits += [
        onnx.numpy_helper.from_array(fc, "fc.w"),
        onnx.numpy_helper.from_array(np.zeros(1000, np.float32), "fc.b"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn224",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 1000])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def run(script: str, *args: str) -> tuple[float, float | None]:
    """Wall time of a fresh process running ``script``, and the time of the quantize call inside it (when
    the script prints ``CALL <seconds>``)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark process failed:\n{proc.stderr[-3000:]}")
    calls = [float(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("CALL ")]
    return elapsed, (calls[0] if calls else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small models, 16 samples, 1 repetition")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--samples", type=int, default=128)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    reps, n = (1, 16) if args.quick else (args.reps, args.samples)
    models = {
        "cnn": (modelzoo.cnn(channels=8, size=32) if args.quick else cnn_224(), "input"),
        "transformer": (
            modelzoo.transformer(
                layers=1 if args.quick else 4, dim=32 if args.quick else 256, hidden=64 if args.quick else 1024
            ),
            "tokens",
        ),
    }
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="hwquant-bench-") as tmp_name:
        tmp = Path(tmp_name)
        for name, (model, input_name) in models.items():
            path = tmp / f"{name}.onnx"
            onnx.save(model, path)
            shape = [1, 3, 32, 32] if name == "cnn" and args.quick else [1, 3, 224, 224]
            if name == "transformer":
                shape = [1, 32, 32 if args.quick else 256]
            rng = np.random.default_rng(0)
            data = rng.standard_normal((n, *shape[1:])).astype(np.float32)
            np.savez(tmp / f"{name}.npz", **{input_name: data})
            times: dict[str, list[float]] = {
                k: [] for k in ("ort", "hwquant", "many", "floor", "ort_call", "hw_call", "floor_call")
            }
            ratios: dict[str, list[float]] = {"process": [], "call": [], "floor": [], "floor_call": []}
            npz = str(tmp / f"{name}.npz")
            for _ in range(reps):  # interleaved; ratios taken within each repetition
                ort_s, ort_call = run(ORT_SCRIPT, str(path), npz, str(tmp / f"{name}.ort.onnx"))
                hw_s, hw_call = run(HWQUANT_SCRIPT, str(path), npz, str(tmp / f"{name}.hw.onnx"))
                many_s, _ = run(MANY_SCRIPT, str(path), npz, str(tmp / f"{name}.many.onnx"))
                floor_s, floor_call = run(FLOOR_SCRIPT, str(path), npz)
                for key, value in (("ort", ort_s), ("hwquant", hw_s), ("many", many_s), ("floor", floor_s)):
                    times[key].append(value)
                times["ort_call"].append(ort_call)
                times["hw_call"].append(hw_call)
                times["floor_call"].append(floor_call)
                ratios["process"].append(hw_s / ort_s)
                ratios["call"].append(hw_call / ort_call)
                ratios["floor"].append(floor_s / ort_s)
                ratios["floor_call"].append(floor_call / ort_call)
            med = {k: statistics.median(v) for k, v in times.items()}
            figures[name] = {
                "samples": n,
                "ort_s": med["ort"],
                "hwquant_s": med["hwquant"],
                "ort_call_s": med["ort_call"],
                "hwquant_call_s": med["hw_call"],
                "four_profiles_s": med["many"],
                "ratio_hwquant_over_ort": statistics.median(ratios["process"]),
                "ratio_call_hwquant_over_ort": statistics.median(ratios["call"]),
                "ratio_four_over_one": med["many"] / med["hwquant"],
                "floor_s": med["floor"],
                "floor_call_s": med["floor_call"],
                "ratio_floor_over_ort": statistics.median(ratios["floor"]),
                "ratio_call_floor_over_ort": statistics.median(ratios["floor_call"]),
            }
    head = ("model", "samples", "ort (s)", "hwquant (s)", "hw/ort", "ort call", "hw call", "hw/ort")
    head += ("floor/ort", "call", "4 profiles (s)", "4/1")
    print("{:<12} {:>7} {:>9} {:>12} {:>7} {:>9} {:>8} {:>7} {:>10} {:>6} {:>15} {:>6}".format(*head))
    for name, f in figures.items():
        row = (name, f["samples"], f["ort_s"], f["hwquant_s"], f["ratio_hwquant_over_ort"])
        row += (f["ort_call_s"], f["hwquant_call_s"], f["ratio_call_hwquant_over_ort"])
        row += (f["ratio_floor_over_ort"], f["ratio_call_floor_over_ort"])
        row += (f["four_profiles_s"], f["ratio_four_over_one"])
        fmt = "{:<12} {:>7} {:>9.2f} {:>12.2f} {:>7.2f} {:>9.2f} {:>8.2f} {:>7.2f} {:>10.2f} {:>6.2f}"
        print((fmt + " {:>15.2f} {:>6.2f}").format(*row))
    print("whole processes (interpreter, imports, the call; for hwquant its verification): hw/ort <= 0.7 (MinMax)")
    print("call: the quantize call alone, in the same processes (imports done); 4/1 <= 1.6 (whole processes)")
    print("floor: plain float inference over the same samples, batched, nothing else; observing activations costs more")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
