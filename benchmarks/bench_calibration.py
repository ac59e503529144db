"""Calibration speed and memory: hwquant.engine.calibrate side by side with onnxruntime.

    python benchmarks/bench_calibration.py [--quick]

Model: tests/modelzoo.cnn(channels=32, size=112) (about 14 MB of activations per sample). Samples are
random normal inputs generated lazily from a per-sample seed, so every contender sees the same data and
nothing holds all of it. Figures:

(a) plain float inference over N samples (a default onnxruntime session, one sample per run, session
    creation included) vs hwquant minmax calibration over the same samples, on this model and on
    bench_engine's 224x224 CNN (1.4M parameters; the issue's example model is of that kind). Calibration
    fetches every observed activation (each one materialised, out of the fused and NCHWc kernels) and
    reduces it in numpy: on a model with light compute and large activations that costs as much as the
    inference itself;
(b) onnxruntime MinMaxCalibrater (augment, save, load, run, compute) vs hwquant minmax, on both models;
(c) peak RSS (ru_maxrss of a fresh subprocess per run) for hwquant entropy/percentile with few vs many
    samples, onnxruntime Entropy/Percentile for contrast, and wall time hwquant/onnxruntime;
(d) mean SQNR (uint8, held-out samples) of the entropy/percentile ranges of both.

(a) and (b) interleave their repetitions in this process and report medians; (c) runs each
configuration in its own subprocess (interleaved repetitions for the timed ones).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwquant.engine.calibrate import calibrate  # noqa: E402
from tests import modelzoo  # noqa: E402

CHANNELS, SIZE = 32, 112


def build_model() -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(modelzoo.cnn(channels=CHANNELS, size=SIZE))


def activations(model: onnx.ModelProto) -> list[str]:
    return [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output]


def samples(n: int, offset: int = 0, size: int = SIZE):
    """Lazily generated inputs; sample i is the same in every process."""
    for i in range(offset, offset + n):
        yield {"input": np.random.default_rng(1000 + i).standard_normal((1, 3, size, size)).astype(np.float32)}


def image_size(model: onnx.ModelProto) -> int:
    return model.graph.input[0].type.tensor_type.shape.dim[2].dim_value


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# ------------------------------------------------------------------------------------------ contenders


def ort_calibrate(model: onnx.ModelProto, n: int, method: str, **extra) -> dict[str, tuple[float, float]]:
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        onnx.save(model, path)
        cal = create_calibrator(
            path,
            augmented_model_path=os.path.join(tmp, "augmented.onnx"),
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[method],
            extra_options=extra,
        )  # fmt: skip
        it = samples(n, size=image_size(model))

        class Reader:
            def get_next(self):
                return next(it, None)

        with contextlib.redirect_stdout(io.StringIO()):
            cal.collect_data(Reader())
            data = cal.compute_data()
    return {
        k: (float(np.asarray(v.range_value[0]).reshape(-1)[0]), float(np.asarray(v.range_value[1]).reshape(-1)[0]))
        for k, v in data.data.items()
    }


def hw_calibrate(model: onnx.ModelProto, n: int, method: str) -> dict[str, tuple[float, float]]:
    cal = calibrate(model, samples(n, size=image_size(model)), activations(model), method=method, total=n)
    return {t: (cal.stats(t).rmin, cal.stats(t).rmax) for t in cal.ranges}


def plain_inference(model: onnx.ModelProto, n: int) -> None:
    """A default session (ORT_ENABLE_ALL), one sample per run, as a user runs the float model."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for s in samples(n, size=image_size(model)):
        sess.run(None, s)


# ------------------------------------------------------------------------------------------ child process


def child(spec: dict) -> None:
    model = build_model()
    before = rss_mb()
    t = time.perf_counter()
    fn = hw_calibrate if spec["who"] == "hwquant" else ort_calibrate
    ranges = fn(model, spec["n"], spec["method"], **spec.get("extra", {}))
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": wall, "peak_mb": peak, "base_mb": before, "ranges": ranges}))


def run_child(who: str, method: str, n: int, **extra) -> dict:
    spec = json.dumps({"who": who, "method": method, "n": n, "extra": extra})
    out = subprocess.run(
        [sys.executable, __file__, "--child", spec], capture_output=True, text=True, check=True, cwd=str(ROOT)
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------ main


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sqnr(x: np.ndarray, lo: float, hi: float) -> float:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255
    zp = np.round(-lo / scale)
    xq = (np.clip(np.round(x / scale) + zp, 0, 255) - zp) * scale
    x = x.astype(np.float64)
    return float(10 * np.log10(np.sum(x**2) / max(np.sum((x - xq) ** 2), 1e-30)))


def held_out(model: onnx.ModelProto, tensors: list[str], n: int) -> dict[str, np.ndarray]:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    outs = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in tensors if t not in outs)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    got: dict[str, list] = {t: [] for t in tensors}
    for s in samples(n, offset=100_000):
        for t, v in zip(tensors, sess.run(tensors, s), strict=True):
            got[t].append(v.ravel())
    return {t: np.concatenate(v) for t, v in got.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer samples and repetitions")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return

    quick = args.quick
    n_speed = 16 if quick else 64
    reps = 3 if quick else 7
    few, many = (16, 128) if quick else (32, 512)
    ort_many = 64 if quick else 128
    time_reps = 1 if quick else 3
    model = build_model()
    print(f"model: modelzoo.cnn(channels={CHANNELS}, size={SIZE}), {len(activations(model))} observed tensors")
    print(f"onnxruntime {ort.__version__}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    rows: list[tuple[str, str, str]] = []

    # (a) + (b): interleaved repetitions in this process, on this model (light compute, 14 MB of activations
    # per sample) and on bench_engine's 224x224 CNN (the example: compute-heavier).
    from benchmarks.bench_engine import cnn_224

    for label, m in (("cnn(32, 112)", model), ("cnn224", onnx.shape_inference.infer_shapes(cnn_224()))):
        plain_inference(m, 2)
        hw_calibrate(m, 2, "minmax")
        contenders = {
            "plain": lambda m=m: plain_inference(m, n_speed),
            "hw": lambda m=m: hw_calibrate(m, n_speed, "minmax"),
            "ort": lambda m=m: ort_calibrate(m, n_speed, "minmax"),
        }
        times: dict[str, list[float]] = {k: [] for k in contenders}
        for _ in range(reps):
            for k, fn in contenders.items():
                times[k].append(timed(fn))
                gc.collect()  # no session (and its spinning thread pool) outlives its contender
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append((f"(a) {label}: plain inference, {n_speed} samples (default session)", f"{med['plain']:.3f} s", ""))
        rows.append((f"(a) {label}: hwquant minmax, {n_speed} samples", f"{med['hw']:.3f} s",
                     f"/ plain inference {med['hw'] / med['plain']:.2f} (target <= 1.3)"))  # fmt: skip
        rows.append((f"(b) {label}: onnxruntime MinMaxCalibrater, {n_speed} samples", f"{med['ort']:.3f} s",
                     f"hwquant/onnxruntime = {med['hw'] / med['ort']:.2f}"))  # fmt: skip

    # (c) memory: one fresh subprocess per configuration.
    mem: dict[tuple[str, str, int], dict] = {}
    for method in ("entropy", "percentile"):
        for n in (few, many):
            mem["hwquant", method, n] = run_child("hwquant", method, n)
    for method in ("entropy", "percentile"):
        mem["onnxruntime", method, few] = r_few = run_child("onnxruntime", method, few)
        mem["onnxruntime", method, ort_many] = r_many = run_child("onnxruntime", method, ort_many)
        slope = (r_many["peak_mb"] - r_few["peak_mb"]) / (ort_many - few)
        predicted = r_many["peak_mb"] + slope * (many - ort_many)
        if not quick and many != ort_many and predicted < 0.6 * available_mb():
            mem["onnxruntime", method, many] = run_child("onnxruntime", method, many)
        else:
            rows.append((f"(c) onnxruntime {method}, {many} samples", "skipped",
                         f"predicted peak {predicted / 1024:.1f} GB (linear from {few}/{ort_many})"))  # fmt: skip
    for (who, method, n), r in sorted(mem.items()):
        rows.append((f"(c) {who} {method}, {n} samples", f"peak {r['peak_mb']:.0f} MB",
                     f"(before calibrating {r['base_mb']:.0f} MB), wall {r['wall']:.2f} s"))  # fmt: skip
    for method in ("entropy", "percentile"):
        a, b = mem["hwquant", method, few], mem["hwquant", method, many]
        rows.append((f"(c) hwquant {method} peak RSS {many} vs {few}", f"{b['peak_mb'] / a['peak_mb']:.3f}",
                     "target <= 1.1"))  # fmt: skip
        o_few, o_many = mem["onnxruntime", method, few], mem["onnxruntime", method, ort_many]
        rows.append((f"(c) onnxruntime {method} peak RSS {ort_many} vs {few}",
                     f"{o_many['peak_mb'] / o_few['peak_mb']:.2f}", ""))  # fmt: skip

    # (c) wall time, interleaved subprocess repetitions (few samples, and onnxruntime's larger count).
    for n in (few, ort_many):
        walls: dict[tuple[str, str], list[float]] = {}
        for _ in range(time_reps):
            for method in ("entropy", "percentile"):
                for who in ("hwquant", "onnxruntime"):
                    walls.setdefault((who, method), []).append(run_child(who, method, n)["wall"])
        for method in ("entropy", "percentile"):
            hw_t = statistics.median(walls["hwquant", method])
            ort_t = statistics.median(walls["onnxruntime", method])
            rows.append((f"(c) wall {method}, {n} samples: hwquant / onnxruntime", f"{hw_t:.2f} s / {ort_t:.2f} s",
                         f"ratio {hw_t / ort_t:.2f} (target <= 0.3)"))  # fmt: skip

    # (d) quality of the ranges on held-out samples.
    tensors = sorted(mem["hwquant", "entropy", few]["ranges"])
    x = held_out(model, tensors, 8)
    quality = {
        "hwquant minmax": run_child("hwquant", "minmax", few),
        "hwquant entropy": mem["hwquant", "entropy", few],
        "onnxruntime entropy (default: 128 bins)": mem["onnxruntime", "entropy", few],
        "onnxruntime entropy (num_bins=2048)": run_child("onnxruntime", "entropy", few, num_bins=2048),
        "hwquant percentile": mem["hwquant", "percentile", few],
        "onnxruntime percentile": mem["onnxruntime", "percentile", few],
    }
    for name, r in quality.items():
        s = [sqnr(x[t], *r["ranges"][t]) for t in tensors]
        rows.append((f"(d) {name}, {few} samples", f"mean SQNR {np.mean(s):.2f} dB",
                     f"worst tensor {np.min(s):.2f} dB"))  # fmt: skip

    width = max(len(r[0]) for r in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>22}  {note}")


if __name__ == "__main__":
    main()
