"""The ``asymmetric`` and ``symmetric`` policies: onnxruntime's ``compute_scale_zp``, step for step.

Both reproduce onnxruntime bit for bit (float32 range arithmetic, float64 scale, float32 storage,
round-half-to-even zero point, scale 1 / zero point 0 below float32 ``tiny``), so a profile that names
them quantizes exactly as onnxruntime's default recipe does. One deviation: below ``tiny`` (all-zero
ranges) ``symmetric`` keeps the midpoint zero point (uint8: 128) where onnxruntime gives 0.
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
    midpoint = int(np.round((c.qmin + c.qmax) / np.float64(2.0)))
    if scale < _TINY:
        # onnxruntime returns zero point 0 here even when symmetric; for unsigned types that is not the
        # midpoint (uint8: 128), which breaks profiles allowing only the midpoint and per-channel
        # equality. Deviation: symmetric keeps the midpoint (0 for signed types, as onnxruntime).
        # Asymmetric keeps 0, clipped into [qmin, qmax] for ranges that exclude it.
        return QParams(np.float32(1.0), midpoint if symmetric else int(np.clip(0, c.qmin, c.qmax)))
    if symmetric:
        zp = midpoint
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
