"""The ``asymmetric`` and ``symmetric`` policies: onnxruntime's ``compute_scale_zp``, step for step.

Both reproduce onnxruntime bit for bit (float32 range arithmetic, float64 scale, float32 storage,
round-half-to-even zero point, scale 1 / zero point 0 below float32 ``tiny``), so a profile that names
them quantizes exactly as onnxruntime's default recipe does. One deviation: below ``tiny`` (all-zero
ranges) ``symmetric`` keeps the midpoint zero point (uint8: 128) where onnxruntime gives 0.
"""

from __future__ import annotations

import numpy as np

from hwquant.policies.base import Constraints, QParams, TensorStats

_TINY = float(np.finfo(np.float32).tiny)


def _compute(stats: TensorStats, c: Constraints, symmetric: bool) -> QParams:
    # Python floats are float64: the range is rounded to float32 first, as onnxruntime's is, and the scale is
    # computed in float64, as onnxruntime's is (NumPy scalars gave the same bits 4x slower per call, and
    # per-channel weights call this once per channel).
    rmin = min(float(np.float32(stats.rmin)), 0.0)
    rmax = max(float(np.float32(stats.rmax)), 0.0)
    if c.min_real_range is not None:
        rmax = max(rmax, float(np.float32(rmin) + np.float32(c.min_real_range)))  # a float32 sum, as onnxruntime's
    if symmetric:
        absmax = max(-rmin, rmax)
        rmin, rmax = -absmax, absmax
    scale = (rmax - rmin) / (c.qmax - c.qmin)
    midpoint = round((c.qmin + c.qmax) / 2.0)  # half to even, as np.round
    if scale < _TINY:
        # onnxruntime returns zero point 0 here even when symmetric; for unsigned types that is not the
        # midpoint (uint8: 128), which breaks profiles allowing only the midpoint and per-channel
        # equality. Deviation: symmetric keeps the midpoint (0 for signed types, as onnxruntime).
        # Asymmetric keeps 0, clipped into [qmin, qmax] for ranges that exclude it.
        return QParams(np.float32(1.0), midpoint if symmetric else min(max(0, c.qmin), c.qmax))
    zp = midpoint if symmetric else round(c.qmin - rmin / scale)
    # onnxruntime casts to the quantized dtype, which (for in-range values) keeps the rounded integer
    return QParams(np.float32(scale), min(max(zp, c.qmin), c.qmax))


def asymmetric(stats: TensorStats, constraints: Constraints) -> QParams:
    """Min/max affine quantization: the range (including 0) maps onto [qmin, qmax]."""
    return _compute(stats, constraints, symmetric=False)


def symmetric(stats: TensorStats, constraints: Constraints) -> QParams:
    """Symmetric quantization over [-absmax, absmax]; zero point is the middle of [qmin, qmax]."""
    return _compute(stats, constraints, symmetric=True)
