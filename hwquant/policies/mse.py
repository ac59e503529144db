"""The ``mse`` policy: the zero point and scale minimising expected squared error on the histogram.

Candidates are clipped ranges [a * min(rmin, 0), b * max(rmax, 0)] on a grid of fractions a, b in
[0, 1] (0 drops a side). Each is turned into qparams that obey the profile (the ``restricted`` rule, or ``power-of-two``
when the profile asks for it), and scored on the tensor's histogram: rounding error inside the grid plus
clipping error outside it, measured at bin centres and weighted by counts. The unclipped range is always
a candidate, so ``mse`` never scores worse than covering the range. Without a histogram it covers the
range.
"""

from __future__ import annotations

import numpy as np

from hwquant.policies.base import Constraints, QParams, TensorStats
from hwquant.policies.power_of_two import power_of_two
from hwquant.policies.restricted import restricted

# 0 drops a whole side: a small negative tail (GELU) can then take zero point qmin under {0, 128} sets
FRACTIONS = np.concatenate([[0.0], np.linspace(0.05, 0.5, 10, endpoint=False), np.linspace(0.5, 1.0, 26)])


def expected_error(centres: np.ndarray, counts: np.ndarray, qp: QParams, c: Constraints) -> float:
    """Count-weighted squared error of quantizing the bin centres with ``qp``."""
    s = float(qp.scale)
    q = np.clip(np.round(centres / s) + qp.zero_point, c.qmin, c.qmax)
    return float(np.dot(counts, (centres - (q - qp.zero_point) * s) ** 2))


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
    best_err = expected_error(centres, counts, best, constraints)
    # Clip the range with 0 included: [a * rmin, b * rmax] itself is not a range when both ends have the
    # same sign (an all-positive [1, 2] with b = 0.4 gave rmin > rmax and raised).
    rmin, rmax = min(stats.rmin, 0.0), max(stats.rmax, 0.0)
    lo_fracs = FRACTIONS if rmin < 0 else np.array([1.0])
    hi_fracs = FRACTIONS if rmax > 0 else np.array([1.0])
    seen = {(float(best.scale), best.zero_point)}
    for a in lo_fracs:
        for b in hi_fracs:
            qp = cover(TensorStats(rmin * a, rmax * b), constraints)
            key = (float(qp.scale), qp.zero_point)
            if key in seen:
                continue
            seen.add(key)
            err = expected_error(centres, counts, qp, constraints)
            if err < best_err:
                best, best_err = qp, err
    return best


mse.needs_histogram = True  # type: ignore[attr-defined]  # the engine collects histograms for it
