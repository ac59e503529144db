"""The ``acme-centered`` policy: the allowed zero point nearest the centred one, then the smallest covering scale.

The rule, for one tensor (or one channel) with observed range [rmin, rmax]:

1. Widen the range to include 0 and to at least ``min_real_range`` (as every hwquant policy does).
2. The *centred* zero point is where real 0 lands when [rmin, rmax] is spread evenly over [qmin, qmax]:
   ``qmin + (qmax - qmin) * -rmin / (rmax - rmin)``.
3. Among the allowed zero points that can represent both signs the range needs, take the one nearest
   the centred zero point (the smaller on a tie). With uint8 {0, 128}: 0 for non-negative tensors,
   128 as soon as anything is negative.
4. The scale is the smallest one whose grid covers the range with that zero point, stored as float32
   and never rounded below what is needed. A power-of-two profile rounds it up to 2**e within its
   exponent bounds (an upper bound can force clipping).

If no allowed zero point can represent both signs (e.g. only {0} for a tensor with negative values),
the nearest one is taken anyway and the side it can represent is covered; the other side clips.
The result always obeys the :class:`hwquant.Constraints` it was given. Pure numpy, no onnxruntime.
"""

from __future__ import annotations

import math

import numpy as np

import hwquant

_TINY = float(np.finfo(np.float32).tiny)


def acme_centered(stats: hwquant.TensorStats, constraints: hwquant.Constraints) -> hwquant.QParams:
    """Quantization parameters for one tensor under ``constraints`` (see the module docstring)."""
    c = constraints
    zps = c.candidate_zero_points()
    if zps.size == 0:
        raise ValueError(f"no allowed zero point lies in [{c.qmin}, {c.qmax}]")
    rmin, rmax = min(float(stats.rmin), 0.0), max(float(stats.rmax), 0.0)
    if c.min_real_range:
        rmax = max(rmax, rmin + float(c.min_real_range))
    span = c.qmax - c.qmin

    if rmax <= rmin:  # all zeros: any scale represents the tensor exactly
        mid = (c.qmin + c.qmax) / 2
        return hwquant.QParams(_fit_scale(1.0 / span, c), int(zps[np.argmin(np.abs(zps - mid))]))

    centred = c.qmin + span * (-rmin) / (rmax - rmin)
    both = ((zps > c.qmin) | (rmin == 0.0)) & ((zps < c.qmax) | (rmax == 0.0))
    pool = zps[both] if both.any() else zps
    zp = int(pool[np.argmin(np.abs(pool - centred))])

    neg = -rmin / (zp - c.qmin) if zp > c.qmin else 0.0  # scale needed for the negative side
    pos = rmax / (c.qmax - zp) if zp < c.qmax else 0.0  # scale needed for the positive side
    need = max(neg, pos)
    if need <= 0.0:  # only the side this zero point cannot represent is non-empty: it clips
        need = 1.0 / span
    return hwquant.QParams(_fit_scale(need, c), zp)


def _fit_scale(need: float, c: hwquant.Constraints) -> np.float32:
    """The smallest float32 (or allowed power of two) scale at or above ``need``."""
    need = max(need, _TINY)
    if c.scale_form == "power-of-two":
        mantissa, exp = math.frexp(need)
        e = exp - 1 if mantissa == 0.5 else exp  # smallest e with 2**e >= need
        if c.min_exponent is not None:
            e = max(e, c.min_exponent)
        if c.max_exponent is not None:
            e = min(e, c.max_exponent)
        return np.float32(2.0**e)
    scale = np.float32(need)
    if float(scale) < need:
        scale = np.nextafter(scale, np.float32(np.inf))
    return scale
