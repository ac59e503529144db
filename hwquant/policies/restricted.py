"""The ``restricted`` policy: the zero point must come from a small allowed set (e.g. uint8 {0, 128}).

Among the allowed zero points that cover the widened range without clipping, it takes the one with
the smallest scale. For uint8 with {qmin, mid} this is exactly onnxruntime's
``ActivationRestrictedAsymmetric`` (``snap_zero_point_to_uint8``): rmin >= 0 gives zp = qmin and
scale = rmax / (qmax - qmin); otherwise zp = mid and scale = max(-rmin / (mid - qmin), rmax / (qmax - mid)).
The arithmetic follows onnxruntime's (Python floats, float32 at the end), so results are bit-identical.

Zero points in a profile are absolute stored values. A reduced range ([0, 127]) therefore lists its own
midpoint: ``zero_points.uint8 = [0, 64]`` with ``ranges.uint8 = {qmin = 0, qmax = 127}`` is onnxruntime's
``reduce_range`` behaviour; ``[0, 128]`` with that range is rejected when the profile loads.

A degenerate range (all zeros) takes the smallest allowed zero point at or above qmin and scale
1 / (qmax - qmin), as onnxruntime does. When no allowed zero point covers the range (e.g. only {0} for
a tensor with negative values) the smaller side is clipped: the zero point with the most room for the
larger side it can reach is chosen, with the scale covering that side. When only zeros are representable
(uint8 {0} for all-negative values) the all-zeros scale 1 / (qmax - qmin) is used.
"""

from __future__ import annotations

import numpy as np

from hwquant.policies.base import Constraints, QParams, TensorStats, clipped_cover, covering_scales, widen


def _floored(scale: float, c: Constraints) -> np.float32:
    """Cast to float32, then raise to min_real_range / (qmax - qmin) (onnxruntime's order)."""
    s = np.float32(scale)
    if c.min_real_range is not None and float(s) < c.min_real_range / (c.qmax - c.qmin):
        s = np.float32(c.min_real_range / (c.qmax - c.qmin))
    if s == 0:
        # A range so small (|values| < ~1e-43) that its scale underflows float32: treat it as all zeros.
        # onnxruntime's snap_zero_point_to_uint8 returns the unusable scale 0 here.
        s = np.float32(1.0 / (c.qmax - c.qmin))
    return s


def restricted(stats: TensorStats, constraints: Constraints) -> QParams:
    """Smallest covering scale over the allowed zero points."""
    c = constraints
    zps = c.candidate_zero_points()
    if zps.size == 0:
        raise ValueError(f"no allowed zero point lies in [{c.qmin}, {c.qmax}]")
    rmin, rmax = widen(float(np.squeeze(stats.rmin)), float(np.squeeze(stats.rmax)), c.min_real_range)

    if rmax <= rmin:  # all zeros
        scale = 1.0 / (c.qmax - c.qmin)
        return QParams(_floored(scale, c), int(zps[0]))

    scales = covering_scales(rmin, rmax, c.qmin, c.qmax, zps)
    if np.isfinite(scales).any():
        i = int(np.argmin(scales))  # first (smallest) zero point on ties
        zp = int(zps[i])
        # Same float expressions as onnxruntime so the float32 result is bit-identical.
        if rmin >= 0.0:
            scale = rmax / (c.qmax - zp)
        else:
            scale = max(-rmin / (zp - c.qmin), rmax / (c.qmax - zp) if zp < c.qmax else 0.0)
    else:
        # Clipping is unavoidable: cover the larger side that can be covered. (This used to always
        # prefer the negative side, and returned scale 0 or -0.0 when the coverable side was empty.)
        zp, scale = clipped_cover(rmin, rmax, c.qmin, c.qmax, zps)
        if scale == 0.0:  # nothing representable but 0: as for an all-zero range
            scale = 1.0 / (c.qmax - c.qmin)
    return QParams(_floored(scale, c), zp)
