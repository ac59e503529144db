"""Metrics comparing a quantized model's outputs with the float model's, and task metrics with ground truth."""

from __future__ import annotations

import math

import numpy as np


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio, 10 log10(sum ref^2 / sum (ref - got)^2), in dB (inf when exact)."""
    ref = np.asarray(ref, np.float64).ravel()
    got = np.asarray(got, np.float64).ravel()
    noise = float(np.sum((ref - got) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def output_sqnr(ref: dict[str, list[np.ndarray]], got: dict[str, list[np.ndarray]]) -> dict[str, float]:
    """SQNR of every float output over all evaluation calls (arrays flattened and concatenated)."""
    out = {}
    for name, arrays in ref.items():
        if not arrays or not np.issubdtype(np.asarray(arrays[0]).dtype, np.floating):
            continue  # e.g. MiniLM's int64 pass-through outputs
        r = np.concatenate([np.asarray(a).ravel() for a in arrays])
        g = np.concatenate([np.asarray(a).ravel() for a in got[name]])
        out[name] = sqnr_db(r, g)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean maps (1 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def rowwise_cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.sum(a * b, axis=1) / np.maximum(den, 1e-30)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, np.float64).ravel()
    y = np.asarray(y, np.float64).ravel()
    return float(np.corrcoef(x, y)[0, 1])


def similarity_pearson(embeddings: np.ndarray, human: np.ndarray) -> float:
    """Pearson correlation of the pairwise cosine similarities of ``embeddings`` with a human similarity matrix
    (upper triangle, diagonal excluded: 1225 pairs for the Lee corpus' 50 documents)."""
    e = np.asarray(embeddings, np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    sims = e @ e.T
    iu = np.triu_indices(len(e), 1)
    return pearson(sims[iu], human[iu])


def finite(value: float | None) -> float | None:
    """JSON-safe number: None for NaN, +-1e9 for infinities."""
    if value is None or isinstance(value, bool):
        return value
    if math.isnan(value):
        return None
    if math.isinf(value):
        return math.copysign(1e9, value)
    return value
