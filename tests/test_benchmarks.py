"""The benchmark harness (benchmarks/run.py) in its CI mode, and its metrics.

The quick run fetches two pinned wheels from PyPI (silero-vad, pyannote-audio) into the benchmark cache; when
that is impossible (offline), the test is skipped with the reason.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import fetch, metrics  # noqa: E402

ROW_KEYS = {
    "key",
    "label",
    "tool",
    "method",
    "status",
    "wall_s_median",
    "peak_rss_mb_median",
    "input_size",
    "output_size",
    "coverage",
    "check",
    "sqnr_db",
    "task",
}


def test_sqnr_and_friends():
    ref = np.array([1.0, -2.0, 3.0])
    assert metrics.sqnr_db(ref, ref) == math.inf
    assert metrics.sqnr_db(ref, ref + 0.1) == pytest.approx(10 * math.log10(14 / 0.03))
    assert metrics.iou(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)) == pytest.approx(1 / 3)
    assert metrics.iou(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    assert metrics.rowwise_cosine(np.eye(2), np.eye(2)) == pytest.approx([1.0, 1.0])
    e = np.random.default_rng(0).standard_normal((5, 8))
    sims = (e / np.linalg.norm(e, axis=1, keepdims=True)) @ (e / np.linalg.norm(e, axis=1, keepdims=True)).T
    assert metrics.similarity_pearson(e, sims) == pytest.approx(1.0)
    assert metrics.finite(math.inf) == 1e9 and metrics.finite(math.nan) is None


def test_every_pinned_file_has_a_sha256():
    for wheel in fetch.WHEELS.values():
        assert wheel.files, wheel.package
        for member, digest in wheel.files.items():
            assert len(digest) == 64 and int(digest, 16) >= 0, member


@pytest.mark.slow
def test_quick_benchmark_writes_results(tmp_path):
    try:
        fetch.fetch_all(["silero-vad", "pyannote-audio"])
    except fetch.FetchError as exc:
        pytest.skip(f"benchmark models not available (PyPI unreachable?): {exc}")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"schema", "date", "machine", "settings", "models", "targets", "if_subgraphs"} <= set(results)
    assert results["settings"]["quick"] is True
    assert list(results["models"]) == ["silero_vad"]
    rows = results["models"]["silero_vad"]["rows"]
    keys = [r["key"] for r in rows]
    assert keys[:3] == ["ort:per-tensor", "ort:per-channel", "float:inference"]
    assert {f"hwquant:{p}" for p in ("ort-default", "restricted-u8", "tensorrt-int8", "tflite-int8")} <= set(keys)
    for r in rows:
        assert set(r) >= ROW_KEYS, r["key"]
        assert r["status"] == "ok", (r["key"], r.get("error"))
        assert r["wall_s_median"] > 0 and r["peak_rss_mb_median"] > 0
        if r["tool"] == "float":  # the floor: inference only, timed like the tools, nothing written
            assert r["ratio_vs_ort"] > 0 and r["output_size"] is None and r["task"] is None
            continue
        assert r["task"]["n"] > 0 and 0.0 <= r["task"]["decision_agreement"] <= 1.0
        assert set(r["sqnr_db"]) == {"speech_probs", "hn", "cn"}
    # The If-subgraph demonstration: onnxruntime "succeeds" on a float model, hwquant refuses.
    for demo in results["if_subgraphs"]:
        assert demo["onnxruntime"]["status"] == "ok"
        assert demo["onnxruntime"]["coverage"]["quantized"] == 0
        assert demo["hwquant"]["status"] == "verification_error"
    assert (tmp_path / "results.md").read_text().startswith("# hwquant vs onnxruntime")
