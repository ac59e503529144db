"""The ``asymmetric`` and ``symmetric`` policies: onnxruntime's ``compute_scale_zp``, step for step.

Both reproduce onnxruntime bit for bit (float32 range arithmetic, float64 scale, float32 storage,
round-half-to-even zero point, scale 1 / zero point 0 below float32 ``tiny``), so a profile that names
them quantizes exactly as onnxruntime's default recipe does.
"""

from __future__ import annotations

import numpy as np

from hwquant.policies.base import Constraints, QParams, TensorStats

_TINY = np.finfo(np.float32).tiny


def _compute(stats: TensorStats, c: Constraints, symmetric: bool) -> QParams:
    rmin = np.minimum(np.float32(stats.rmin), np.float32(0))
    rmax = np.maximum(np.float32(stats.rmax), np.float32(0))
    if c.min_real_range is not None:
        rmax = max(rmax, rmin + np.float32(c.min_real_range))
    if symmetric:
        absmax = np.maximum(np.abs(rmin), np.abs(rmax))
        rmin, rmax = -absmax, absmax
    scale = (np.float64(rmax) - np.float64(rmin)) / (np.float64(c.qmax) - np.float64(c.qmin))
    if scale < _TINY:
        return QParams(np.float32(1.0), 0)
    if symmetric:
        zp = np.round((c.qmin + c.qmax) / np.float64(2.0))
    else:
        zp = np.round(c.qmin - np.float64(rmin) / scale)
    # onnxruntime casts to the quantized dtype, which (for in-range values) keeps the rounded integer
    return QParams(np.float32(scale), int(np.clip(zp, c.qmin, c.qmax)))


def asymmetric(stats: TensorStats, constraints: Constraints) -> QParams:
    """Min/max affine quantization: the range (including 0) maps onto [qmin, qmax]."""
    return _compute(stats, constraints, symmetric=False)


def symmetric(stats: TensorStats, constraints: Constraints) -> QParams:
    """Symmetric quantization over [-absmax, absmax]; zero point is the middle of [qmin, qmax]."""
    return _compute(stats, constraints, symmetric=True)
