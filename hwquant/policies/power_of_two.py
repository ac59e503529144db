"""The ``power-of-two`` policy: the smallest scale 2**e that covers the range, for shift-only hardware.

Each allowed zero point needs some covering scale; it is rounded up to a power of two and clamped to
the profile's exponent bounds (an upper bound below the need clips the range). The zero point giving
the smallest power of two wins; on ties, the one that centres the range best.
"""

from __future__ import annotations

import math

import numpy as np

from hwquant.policies.base import Constraints, QParams, TensorStats, clipped_cover, covering_scales, widen


def pow2_ceil(x: float) -> int:
    """Smallest e with 2**e >= x (x > 0), exact despite log2 rounding."""
    mantissa, exp = math.frexp(x)  # x = mantissa * 2**exp, 0.5 <= mantissa < 1
    return exp - 1 if mantissa == 0.5 else exp


# Powers of two a float32 can store (2**-149 is the smallest subnormal). Beyond them np.float32(2.0**e)
# is 0 or inf: tiny or huge ranges used to get scale 0 (e.g. [0, 1e-45] uint8 needs 2**-157).
_F32_EXPONENTS = (-149, 127)


def _clamp_exponent(e: int, c: Constraints) -> int:
    if c.min_exponent is not None:
        e = max(e, c.min_exponent)
    if c.max_exponent is not None:
        e = min(e, c.max_exponent)
    return min(max(e, _F32_EXPONENTS[0]), _F32_EXPONENTS[1])


def power_of_two(stats: TensorStats, constraints: Constraints) -> QParams:
    """Smallest covering power-of-two scale with a zero point from the allowed set."""
    c = constraints
    zps = c.candidate_zero_points()
    if zps.size == 0:
        raise ValueError(f"no allowed zero point lies in [{c.qmin}, {c.qmax}]")
    rmin, rmax = widen(stats.rmin, stats.rmax, c.min_real_range)
    if rmax <= rmin:
        e = _clamp_exponent(pow2_ceil(1.0 / (c.qmax - c.qmin)), c)
        return QParams(np.float32(2.0**e), int(zps[0]))

    need = covering_scales(rmin, rmax, c.qmin, c.qmax, zps)
    feasible = np.isfinite(need)
    if not feasible.any():
        # No allowed zero point covers both sides: cover the larger side that can be covered, as
        # ``restricted`` does (all-zeros scale when only 0 is representable).
        zp, side = clipped_cover(rmin, rmax, c.qmin, c.qmax, zps)
        side = side if side > 0 else 1.0 / (c.qmax - c.qmin)
        return QParams(np.float32(2.0 ** _clamp_exponent(pow2_ceil(side), c)), zp)

    exps = np.array([pow2_ceil(s) if f else 10**6 for s, f in zip(need, feasible, strict=True)])
    best = int(exps.min())
    scale = 2.0 ** _clamp_exponent(best, c)
    # among zero points covering at this scale, take the one nearest the range's centre
    ok = zps[need <= scale] if (need <= scale).any() else zps[exps == best]
    centre = (c.qmin + c.qmax) / 2 - (rmin + rmax) / (2 * scale)
    zp = int(ok[np.argmin(np.abs(ok - centre))])
    return QParams(np.float32(scale), zp)
