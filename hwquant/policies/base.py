"""What a policy receives and returns. Policies are pure numpy functions: no onnxruntime here.

A policy is any callable ``policy(stats, constraints) -> QParams``. It turns the observed range of one
tensor (or one channel of a weight) into a scale and zero point that obey ``constraints``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hwquant.profile.schema import Profile


@dataclass(frozen=True)
class TensorStats:
    """Observed values of one tensor: its range, and a histogram when calibration collected one.

    ``histogram`` is ``(counts, edges)`` with ``len(edges) == len(counts) + 1``.
    """

    rmin: float
    rmax: float
    histogram: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rmin) and math.isfinite(self.rmax)):
            raise ValueError(f"range must be finite, got [{self.rmin}, {self.rmax}]")
        if self.rmin > self.rmax:
            raise ValueError(f"rmin {self.rmin} is above rmax {self.rmax}")


@dataclass(frozen=True)
class Constraints:
    """The resolved rules for one tensor: data type, integer range, zero points, scale form."""

    dtype: str
    qmin: int
    qmax: int
    zero_points: tuple[int, ...] | None = None
    """Allowed zero points; None means any integer in [qmin, qmax]."""
    scale_form: str = "float"
    min_exponent: int | None = None
    max_exponent: int | None = None
    min_real_range: float | None = None

    def candidate_zero_points(self) -> np.ndarray:
        """Every zero point the policy may return, as int64."""
        if self.zero_points is None:
            return np.arange(self.qmin, self.qmax + 1, dtype=np.int64)
        return np.array(sorted(z for z in self.zero_points if self.qmin <= z <= self.qmax), dtype=np.int64)

    def allows(self, qp: QParams) -> str | None:
        """None when ``qp`` obeys these constraints, else a sentence saying what it breaks."""
        s = float(qp.scale)
        if not (math.isfinite(s) and s > 0):
            return f"scale {s} is not positive and finite"
        if not self.qmin <= qp.zero_point <= self.qmax:
            return f"zero point {qp.zero_point} outside [{self.qmin}, {self.qmax}]"
        if self.zero_points is not None and qp.zero_point not in self.zero_points:
            return f"zero point {qp.zero_point} not in allowed set {list(self.zero_points)}"
        if self.scale_form == "power-of-two":
            mantissa, exp = math.frexp(s)
            if mantissa != 0.5:
                return f"scale {s} is not a power of two"
            e = exp - 1
            if self.min_exponent is not None and e < self.min_exponent:
                return f"scale 2**{e} below 2**{self.min_exponent}"
            if self.max_exponent is not None and e > self.max_exponent:
                return f"scale 2**{e} above 2**{self.max_exponent}"
        return None


@dataclass(frozen=True)
class QParams:
    """A scale (float32) and an integer zero point."""

    scale: np.float32
    zero_point: int

    def covered(self, qmin: int, qmax: int) -> tuple[float, float]:
        """The real range [lo, hi] these qparams represent over [qmin, qmax]."""
        s = float(self.scale)
        return (qmin - self.zero_point) * s, (qmax - self.zero_point) * s


class Policy(Protocol):
    """A zero-point/scale policy."""

    def __call__(self, stats: TensorStats, constraints: Constraints, /) -> QParams: ...


def constraints_for(profile: Profile, role: str, dtype: str | None = None) -> Constraints:
    """The :class:`Constraints` a profile puts on ``role`` ('activations'/'weights') for ``dtype``."""
    rules = profile.role(role)
    dtype = dtype or rules.dtype
    r = rules.qrange(dtype)
    zps = rules.allowed_zero_points(dtype)
    return Constraints(
        dtype=dtype,
        qmin=r.qmin,
        qmax=r.qmax,
        zero_points=None if zps is None else tuple(zps),
        scale_form=rules.scale.form,
        min_exponent=rules.scale.min_exponent,
        max_exponent=rules.scale.max_exponent,
        min_real_range=rules.min_real_range,
    )


def widen(rmin: float, rmax: float, min_real_range: float | None) -> tuple[float, float]:
    """Include 0 in the range and stretch it to ``min_real_range`` (onnxruntime's order of steps)."""
    rmin, rmax = min(rmin, 0.0), max(rmax, 0.0)
    if min_real_range is not None and min_real_range > 0:
        rmax = max(rmax, rmin + float(min_real_range))
    return rmin, rmax


def covering_scales(rmin: float, rmax: float, qmin: int, qmax: int, zps: np.ndarray) -> np.ndarray:
    """For each zero point, the smallest scale whose grid covers [rmin, rmax] (rmin <= 0 <= rmax).

    A zero point that leaves no room for a needed side gets ``inf``.
    """
    zps = zps.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        neg = np.where(rmin < 0, np.where(zps > qmin, -rmin / (zps - qmin), np.inf), 0.0)
        pos = np.where(rmax > 0, np.where(zps < qmax, rmax / (qmax - zps), np.inf), 0.0)
    return np.maximum(neg, pos)


def clipped_cover(rmin: float, rmax: float, qmin: int, qmax: int, zps: np.ndarray) -> tuple[int, float]:
    """When no allowed zero point covers [rmin, rmax] (rmin <= 0 <= rmax): clip the smaller side.

    Returns the zero point with the most room for the larger side it can reach, and the scale that
    covers that side exactly. When no non-empty side can be reached at all (e.g. {qmin} for all-negative
    values) it returns ``(zps[0], 0.0)``: the caller falls back to its all-zeros scale.
    """
    options = []  # (extent of the side, zero point, scale covering it)
    if rmin < 0 and (zps > qmin).any():
        zp = int(zps.max())
        options.append((-rmin, zp, -rmin / (zp - qmin)))
    if rmax > 0 and (zps < qmax).any():
        zp = int(zps.min())
        options.append((rmax, zp, rmax / (qmax - zp)))
    if not options:
        return int(zps[0]), 0.0
    _, zp, scale = max(options, key=lambda o: o[0])
    return zp, scale
