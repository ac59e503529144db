"""The ``mse`` policy: the zero point and scale minimising expected squared error on the histogram.

Candidates are clipped ranges [a * min(rmin, 0), b * max(rmax, 0)] on a grid of fractions a, b in
[0, 1] (0 drops a side). Each is turned into qparams that obey the profile (the ``restricted`` rule, or ``power-of-two``
when the profile asks for it), and scored on the tensor's histogram: rounding error inside the grid plus
clipping error outside it, measured at bin centres and weighted by counts. The unclipped range is always
a candidate, so ``mse`` never scores worse than covering the range; among candidates with the same error
the first (the unclipped range, then ``a`` outer and ``b`` inner in ascending order) wins. Without a
histogram it covers the range.

The search is vectorised: the covering qparams of all candidate ranges are computed at once, with the same
float64 arithmetic as ``restricted`` and ``power_of_two`` (bit-identical results; ranges those policies
treat as special cases, all zeros or no zero point reaching a side, are passed to them one by one). When
any zero point is allowed, ``restricted``'s smallest covering scale is found among the few zero points
around the exact crossing point (the covering scale falls, then rises, with the zero point), so 16-bit
grids cost no more than 8-bit ones.
"""

from __future__ import annotations

import numpy as np

from hwquant.policies.base import Constraints, QParams, TensorStats
from hwquant.policies.power_of_two import _F32_EXPONENTS, power_of_two
from hwquant.policies.restricted import restricted

# 0 drops a whole side: a small negative tail (GELU) can then take zero point qmin under {0, 128} sets
FRACTIONS = np.concatenate([[0.0], np.linspace(0.05, 0.5, 10, endpoint=False), np.linspace(0.5, 1.0, 26)])

# Elements per intermediate (candidate x zero point, or candidate x bin) array: bounds the memory of a search.
_CHUNK = 1 << 20
# Above this many allowed zero points ("any" on wide grids) ``restricted`` is searched around the crossing.
_FEW_ZERO_POINTS = 64
# Elements per candidate x bin block when scoring (small enough to stay in cache).
_ERROR_CHUNK = 1 << 15


def expected_error(centres: np.ndarray, counts: np.ndarray, qp: QParams, c: Constraints) -> float:
    """Count-weighted squared error of quantizing the bin centres with ``qp``."""
    s = float(qp.scale)
    q = np.clip(np.round(centres / s) + qp.zero_point, c.qmin, c.qmax)
    return float(np.dot(counts, (centres - (q - qp.zero_point) * s) ** 2))


def _errors(centres: np.ndarray, counts: np.ndarray, scales: np.ndarray, zps: np.ndarray, c: Constraints) -> np.ndarray:
    """Count-weighted squared errors of many qparams at once (matrix-vector products: the last bits can
    differ from :func:`expected_error`'s, which :func:`mse` uses to settle near-ties)."""
    out = np.empty(scales.size, dtype=np.float64)
    step = max(1, _ERROR_CHUNK // max(1, centres.size))
    for i in range(0, scales.size, step):
        s = scales[i : i + step, None]
        z = zps[i : i + step, None]
        q = np.clip(np.round(centres / s) + z, c.qmin, c.qmax)
        out[i : i + step] = ((centres - (q - z) * s) ** 2) @ counts
    return out


def _zero_point_grid(rmin: np.ndarray, rmax: np.ndarray, c: Constraints) -> np.ndarray:
    """Zero points to search per range, ascending: all allowed ones, or for "any" zero point on a wide grid
    the ends and the integers around the crossing of the two sides' covering scales."""
    zps = c.candidate_zero_points()
    if c.zero_points is not None or zps.size <= _FEW_ZERO_POINTS or c.scale_form == "power-of-two":
        return np.broadcast_to(zps, (rmin.size, zps.size))
    span = np.where(rmax > rmin, rmax - rmin, 1.0)
    cross = np.floor(c.qmin + (c.qmax - c.qmin) * (-rmin / span)).astype(np.int64)
    near = cross[:, None] + np.arange(-1, 3)
    grid = np.concatenate([np.full((rmin.size, 1), c.qmin), near, np.full((rmin.size, 1), c.qmax)], axis=1)
    return np.sort(np.clip(grid, c.qmin, c.qmax), axis=1)


def _covering(rmin: np.ndarray, rmax: np.ndarray, zps: np.ndarray, c: Constraints) -> np.ndarray:
    """``base.covering_scales`` for many ranges (rows) and zero points (columns)."""
    z = zps.astype(np.float64)
    lo, hi = rmin[:, None], rmax[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        neg = np.where(lo < 0, np.where(z > c.qmin, -lo / (z - c.qmin), np.inf), 0.0)
        pos = np.where(hi > 0, np.where(z < c.qmax, hi / (c.qmax - z), np.inf), 0.0)
    return np.maximum(neg, pos)


def _restricted_rows(rmin: np.ndarray, rmax: np.ndarray, c: Constraints) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``restricted`` on widened ranges: (float32 scales, zero points, rows done). Rows not done (all
    zeros, or no allowed zero point covering both sides) are left to ``restricted`` itself."""
    zps = _zero_point_grid(rmin, rmax, c)
    cover = _covering(rmin, rmax, zps, c)
    done = np.isfinite(cover).any(axis=1) & (rmax > rmin)
    zp = np.take_along_axis(zps, np.argmin(cover, axis=1)[:, None], axis=1)[:, 0]
    zf = zp.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = np.where(zp < c.qmax, rmax / (c.qmax - zf), 0.0)
        scale = np.where(rmin >= 0.0, pos, np.maximum(-rmin / (zf - c.qmin), pos))
    s = scale.astype(np.float32)
    if c.min_real_range is not None:
        floor = c.min_real_range / (c.qmax - c.qmin)
        s = np.where(s.astype(np.float64) < floor, np.float32(floor), s)
    s = np.where(s == 0, np.float32(1.0 / (c.qmax - c.qmin)), s)
    return s, zp, done


def _power_of_two_rows(rmin: np.ndarray, rmax: np.ndarray, c: Constraints) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``power_of_two`` on widened ranges, as :func:`_restricted_rows`."""
    zps = _zero_point_grid(rmin, rmax, c)
    need = _covering(rmin, rmax, zps, c)
    feasible = np.isfinite(need)
    done = feasible.any(axis=1) & (rmax > rmin)
    mantissa, exp = np.frexp(np.where(feasible, need, 1.0))
    exps = np.where(feasible, np.where(mantissa == 0.5, exp - 1, exp), 10**6)
    best = exps.min(axis=1)
    e = best
    if c.min_exponent is not None:
        e = np.maximum(e, c.min_exponent)
    if c.max_exponent is not None:
        e = np.minimum(e, c.max_exponent)
    e = np.clip(e, *_F32_EXPONENTS)
    scale = np.ldexp(1.0, e)
    ok = need <= scale[:, None]
    ok = np.where(ok.any(axis=1)[:, None], ok, exps == best[:, None])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        centre = (c.qmin + c.qmax) / 2 - (rmin + rmax) / (2 * scale)
        dist = np.where(ok, np.abs(zps - centre[:, None]), np.inf)
    zp = np.take_along_axis(zps, np.argmin(dist, axis=1)[:, None], axis=1)[:, 0]
    return scale.astype(np.float32), zp, done


def cover_many(lo: np.ndarray, hi: np.ndarray, constraints: Constraints) -> list[QParams]:
    """The covering policy of ``mse`` (``restricted``, or ``power_of_two`` for power-of-two scales) on the
    ranges [lo[i], hi[i]] at once; equal to calling it on each range."""
    c = constraints
    pow2 = c.scale_form == "power-of-two"
    fn = power_of_two if pow2 else restricted
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    if c.candidate_zero_points().size == 0:
        return [fn(TensorStats(float(a), float(b)), c) for a, b in zip(lo, hi, strict=True)]  # raises
    rmin, rmax = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    if c.min_real_range is not None and c.min_real_range > 0:
        rmax = np.maximum(rmax, rmin + float(c.min_real_range))
    out: list[QParams] = []
    width = c.candidate_zero_points().size if c.zero_points is not None or pow2 else 6
    step = max(1, _CHUNK // max(1, width))
    rows = _power_of_two_rows if pow2 else _restricted_rows
    for i in range(0, lo.size, step):
        scales, zps, done = rows(rmin[i : i + step], rmax[i : i + step], c)
        for j, ok in enumerate(done):
            if ok:
                out.append(QParams(np.float32(scales[j]), int(zps[j])))
            else:
                out.append(fn(TensorStats(float(lo[i + j]), float(hi[i + j])), c))
    return out


def mse(stats: TensorStats, constraints: Constraints) -> QParams:
    """Error-minimising qparams over clipped candidate ranges."""
    cover = power_of_two if constraints.scale_form == "power-of-two" else restricted
    best = cover(stats, constraints)
    if stats.histogram is None:
        return best
    counts, edges = stats.histogram
    counts = np.asarray(counts, dtype=np.float64)
    edges = np.asarray(edges, dtype=np.float64)
    keep = counts > 0
    if not keep.any():
        return best
    centres = ((edges[:-1] + edges[1:]) / 2)[keep]
    counts = counts[keep]
    # Clip the range with 0 included: [a * rmin, b * rmax] itself is not a range when both ends have the
    # same sign (an all-positive [1, 2] with b = 0.4 gave rmin > rmax and raised).
    rmin, rmax = min(stats.rmin, 0.0), max(stats.rmax, 0.0)
    lo_fracs = FRACTIONS if rmin < 0 else np.array([1.0])
    hi_fracs = FRACTIONS if rmax > 0 else np.array([1.0])
    lo = np.repeat(rmin * lo_fracs, hi_fracs.size)  # a outer, b inner
    hi = np.tile(rmax * hi_fracs, lo_fracs.size)
    # Distinct qparams in candidate order, the unclipped range's first.
    seen = {(float(best.scale), best.zero_point): best}
    for qp in cover_many(lo, hi, constraints):
        seen.setdefault((float(qp.scale), qp.zero_point), qp)
    candidates = list(seen.values())
    scales = np.array([float(q.scale) for q in candidates])
    zps = np.array([q.zero_point for q in candidates], dtype=np.float64)
    errors = _errors(centres, counts, scales, zps, constraints)
    # Settle the minimum with expected_error itself, in candidate order (the unclipped range first), among
    # the candidates whose fast error is within rounding of the smallest.
    near = np.flatnonzero(errors <= errors.min() * (1 + 1e-9) + 1e-300)
    exact = [expected_error(centres, counts, candidates[i], constraints) for i in near]
    return candidates[int(near[int(np.argmin(exact))])]


mse.needs_histogram = True  # type: ignore[attr-defined]  # the engine collects histograms for it
