"""Property tests for every built-in policy: valid qparams, the range covered, clipping only by design.

Pairings (what each policy is meant for, and so what it is tested with):

* ``asymmetric``: zero points "any" (it computes its own zero point), float scales.
* ``symmetric``: constraint sets that allow the midpoint ``round((qmin + qmax) / 2)``, float scales.
* ``restricted``, ``power-of-two``, ``mse``: any allowed zero-point set; ``power-of-two`` and ``mse``
  also with power-of-two scale forms (with and without exponent bounds).

Covering is tested on sets with a zero point strictly inside [qmin, qmax] (some zero point reaches
both sides). Sets without one (``EDGE``, e.g. uint8 {0} for negative values) clip by design; that is
tested separately.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hwquant.policies import Constraints, QParams, TensorStats, asymmetric, mse, power_of_two, restricted, symmetric
from hwquant.policies.mse import FRACTIONS, cover_many, expected_error
from hwquant.profile.dtypes import DTYPE_RANGES

SETTINGS = settings(max_examples=400, deadline=None, database=None)
RTOL = 1e-6  # float32 rounding of the scale (2**-24 relative), with room for the float64 range arithmetic


def cons(dtype: str, zero_points: tuple[int, ...] | None = None, qrange: tuple[int, int] | None = None) -> Constraints:
    qmin, qmax = qrange if qrange is not None else DTYPE_RANGES[dtype]
    return Constraints(dtype=dtype, qmin=qmin, qmax=qmax, zero_points=zero_points)


# Every data type's full range, narrow int8/int16 (onnxruntime's symmetric tables), reduced uint8 [0, 127].
ANY = [cons(d) for d in DTYPE_RANGES] + [
    cons("int8", None, (-127, 127)),
    cons("int16", None, (-32767, 32767)),
    cons("uint8", None, (0, 127)),
]
# Allowed sets with a zero point strictly inside [qmin, qmax]: covering never needs to clip.
SETS = [
    cons("uint8", (0, 128)),
    cons("uint8", (0, 64), (0, 127)),
    cons("uint8", (128,)),
    cons("uint8", (64,), (0, 127)),
    cons("uint8", (3, 200)),
    cons("int8", (0,)),
    cons("int8", (0,), (-127, 127)),
    cons("int8", (-128, 0)),
    cons("uint16", (0, 32768)),
    cons("uint16", (32768,)),
    cons("int16", (0,)),
    cons("int16", (0,), (-32767, 32767)),
    cons("uint4", (0, 8)),
    cons("uint4", (8,)),
    cons("int4", (0,)),
]
# Allowed sets with no zero point strictly inside: one side of a range that straddles (or lies on the
# blocked side of) the zero point cannot be represented.
EDGE = [
    cons("uint8", (0,)),
    cons("uint8", (0,), (0, 127)),
    cons("uint8", (255,)),
    cons("uint8", (0, 255)),
    cons("int8", (-128,)),
    cons("int8", (127,)),
    cons("int8", (-127,), (-127, 127)),
    cons("uint4", (0,)),
]


def midpoint(c: Constraints) -> int:
    return round((c.qmin + c.qmax) / 2)  # half to even, like numpy.round in onnxruntime


def midpoint_allowed(c: Constraints) -> bool:
    return c.zero_points is None or midpoint(c) in c.zero_points


SYMMETRIC = ANY + [c for c in SETS if midpoint_allowed(c)]
MIN_REAL_RANGES = [None, None, 1e-4, 1.0, 1e-20]
EXPONENT_BOUNDS = [(None, None), (-8, 4), (-20, None), (None, 0), (-100, 100)]


@st.composite
def constraints(draw, bases: list[Constraints], forms: tuple[str, ...] = ("float",)) -> Constraints:
    c = draw(st.sampled_from(bases))
    form = draw(st.sampled_from(forms))
    lo, hi = draw(st.sampled_from(EXPONENT_BOUNDS)) if form == "power-of-two" else (None, None)
    return dataclasses.replace(
        c, min_real_range=draw(st.sampled_from(MIN_REAL_RANGES)), scale_form=form, min_exponent=lo, max_exponent=hi
    )


def f32(x: float) -> float:
    return float(np.float32(x))


# |x|: zero, or log-uniform over 1e-30..1e30, or a familiar value; always float32-representable.
magnitudes = st.one_of(
    st.just(0.0),
    st.builds(lambda m, e: f32(m * 10.0**e), st.floats(1.0, 9.99), st.integers(-30, 29)),
    st.sampled_from([1e-30, 1e30, 1.0, 0.5, 2.55, 3.1, 127.0, 1 / 3]).map(f32),
)


@st.composite
def ranges(draw, values=magnitudes) -> tuple[float, float]:
    """A finite rmin <= rmax: straddling zero, all-positive, all-negative, equal ends or all zeros."""
    shape = draw(st.sampled_from(["straddle", "positive", "negative", "equal", "zero", "free"]))
    a, b = draw(values), draw(values)
    if shape == "straddle":
        return -a, b
    if shape == "positive":
        return min(a, b), max(a, b)
    if shape == "negative":
        return -max(a, b), -min(a, b)
    if shape == "equal":
        return (a, a) if draw(st.booleans()) else (-a, -a)
    if shape == "zero":
        return draw(st.sampled_from([(0.0, 0.0), (-0.0, 0.0), (-0.0, -0.0)]))
    a, b = a * draw(st.sampled_from([1.0, -1.0])), b * draw(st.sampled_from([1.0, -1.0]))
    return min(a, b), max(a, b)


# ---------------------------------------------------------------------------------------------- helpers


def target(rmin: float, rmax: float, c: Constraints) -> tuple[float, float]:
    """The range to represent: zero included, then stretched to min_real_range (onnxruntime's order)."""
    lo, hi = min(rmin, 0.0), max(rmax, 0.0)
    if c.min_real_range is not None:
        hi = max(hi, lo + c.min_real_range)
    return lo, hi


def allowed(c: Constraints) -> np.ndarray:
    zps = np.arange(c.qmin, c.qmax + 1) if c.zero_points is None else np.array(sorted(c.zero_points))
    return zps[(zps >= c.qmin) & (zps <= c.qmax)].astype(np.float64)


def assert_valid(qp: QParams, c: Constraints) -> None:
    """A positive finite float32 scale of the right form and an allowed integer zero point."""
    assert isinstance(qp.scale, np.float32), type(qp.scale)
    assert isinstance(qp.zero_point, int) and not isinstance(qp.zero_point, bool), type(qp.zero_point)
    assert math.isfinite(qp.scale) and qp.scale > 0, qp
    assert c.qmin <= qp.zero_point <= c.qmax, qp
    assert c.zero_points is None or qp.zero_point in c.zero_points, qp
    assert c.allows(qp) is None, c.allows(qp)


def covers(qp: QParams, c: Constraints, lo: float, hi: float, slack: float = 0.0) -> bool:
    """[lo, hi] lies in the dequantized interval, up to float32 rounding of the scale (+ ``slack``)."""
    clo, chi = qp.covered(c.qmin, c.qmax)
    tol = RTOL * max(-lo, hi) + slack
    return clo <= lo + tol and chi >= hi - tol


def assert_covers(qp: QParams, c: Constraints, lo: float, hi: float, slack: float = 0.0) -> None:
    assert covers(qp, c, lo, hi, slack), f"{qp} covers {qp.covered(c.qmin, c.qmax)}, not [{lo}, {hi}]"


def least_covering_scale(lo: float, hi: float, c: Constraints) -> float:
    """The smallest scale with which some allowed zero point covers [lo, hi] (inf when none can)."""
    zps = allowed(c)
    with np.errstate(divide="ignore"):
        neg = -lo / (zps - c.qmin) if lo < 0 else np.zeros_like(zps)
        pos = hi / (c.qmax - zps) if hi > 0 else np.zeros_like(zps)
    return float(np.maximum(neg, pos).min())


def pow2_covers_exactly(t: float, lo: float, hi: float, c: Constraints) -> bool:
    """Some allowed zero point covers [lo, hi] with scale t (a power of two: exact products)."""
    zps = allowed(c)
    return bool(np.any(((c.qmin - zps) * t <= lo) & ((c.qmax - zps) * t >= hi)))


def exponent(qp: QParams) -> int:
    mantissa, exp = math.frexp(float(qp.scale))
    assert mantissa == 0.5, f"scale {qp.scale} is not a power of two"
    return exp - 1


def smallest_pow2_at_least(x: float) -> float:
    e = math.ceil(math.log2(x))
    while 2.0 ** (e - 1) >= x:
        e -= 1
    while 2.0**e < x:
        e += 1
    return 2.0**e


def clamp_exponent(e: int, c: Constraints) -> int:
    if c.min_exponent is not None:
        e = max(e, c.min_exponent)
    if c.max_exponent is not None:
        e = min(e, c.max_exponent)
    return e


# ------------------------------------------------------------------------------------------- asymmetric


@SETTINGS
@given(ranges(), constraints(ANY))
def test_asymmetric_valid_and_covering(r, c):
    qp = asymmetric(TensorStats(*r), c)
    assert_valid(qp, c)
    # The zero point is round(qmin - rmin / scale): the grid may miss either end by half a step.
    assert_covers(qp, c, *target(*r, c), slack=0.5 * float(qp.scale) * (1 + RTOL))


# -------------------------------------------------------------------------------------------- symmetric


@SETTINGS
@given(ranges(), constraints(SYMMETRIC))
def test_symmetric_valid_and_covering(r, c):
    qp = symmetric(TensorStats(*r), c)
    assert_valid(qp, c)
    assert qp.zero_point == midpoint(c)
    # An even number of levels (qmax - qmin odd, e.g. int8 [-128, 127] or uint8 with zero point 128)
    # has no middle level: [-absmax, absmax] maps onto qmax - qmin steps, so the side with fewer levels
    # ends half a step short. That is onnxruntime's formula, not a bug; odd level counts cover exactly.
    slack = 0.5 * float(qp.scale) * (1 + RTOL) if (c.qmax - c.qmin) % 2 else 0.0
    assert_covers(qp, c, *target(*r, c), slack=slack)


# ------------------------------------------------------------------------------------------- restricted


def degenerate_scale(c: Constraints) -> float:
    """Scale for an all-zero range: 1 / (qmax - qmin), raised to min_real_range / (qmax - qmin)."""
    return max(1.0 / (c.qmax - c.qmin), (c.min_real_range or 0.0) / (c.qmax - c.qmin))


@SETTINGS
@given(ranges(), constraints(ANY + SETS))
def test_restricted_valid_covering_and_smallest(r, c):
    qp = restricted(TensorStats(*r), c)
    assert_valid(qp, c)
    lo, hi = target(*r, c)
    assert_covers(qp, c, lo, hi)
    if hi <= lo:  # all zeros
        expected = degenerate_scale(c)
    else:  # the smallest covering scale, floored at min_real_range / (qmax - qmin)
        expected = max(least_covering_scale(lo, hi, c), (c.min_real_range or 0.0) / (c.qmax - c.qmin))
    assert math.isclose(qp.scale, expected, rel_tol=RTOL), (qp, expected)


# ----------------------------------------------------------------------------------------- power-of-two


@SETTINGS
@given(ranges(), constraints(ANY + SETS, forms=("power-of-two", "power-of-two", "float")))
def test_power_of_two_valid_covering_and_smallest(r, c):
    qp = power_of_two(TensorStats(*r), c)
    assert_valid(qp, c)
    e = exponent(qp)
    lo, hi = target(*r, c)
    if hi <= lo:  # all zeros: the smallest power of two >= 1 / (qmax - qmin), within the bounds
        assert e == clamp_exponent(math.ceil(math.log2(1.0 / (c.qmax - c.qmin))), c)
        return
    if covers(qp, c, lo, hi):
        # smallest: half the scale covers with no allowed zero point (unless at the lower bound)
        assert e == c.min_exponent or not pow2_covers_exactly(2.0 ** (e - 1), lo, hi, c), qp
    else:
        # clipping only because the upper exponent bound is below what covering needs
        assert c.max_exponent is not None and e == c.max_exponent, (qp, lo, hi)
        assert not pow2_covers_exactly(2.0**e, lo, hi, c)


# ---------------------------------------------------------------------------------------- clipping sets


def reach(c: Constraints) -> tuple[bool, bool]:
    """Whether some allowed zero point leaves room below it (negative side) / above it (positive)."""
    zps = allowed(c)
    return bool((zps > c.qmin).any()), bool((zps < c.qmax).any())


def check_clipping(qp: QParams, c: Constraints, lo: float, hi: float) -> str:
    """Shared property of a covering policy on an EDGE set; returns which side was covered."""
    assert_valid(qp, c)
    if hi <= lo:
        return "none"
    if c.max_exponent is not None and math.frexp(float(qp.scale)) == (0.5, c.max_exponent + 1):
        return "bound"  # power-of-two at its upper exponent bound: may clip both sides
    can_neg, can_pos = reach(c)
    if covers(qp, c, lo, hi):
        return "both"
    # Clipping by design: the side it can represent is covered, the larger one when either could be.
    clo, chi = qp.covered(c.qmin, c.qmax)
    neg_ok = clo <= lo * (1 - RTOL)  # lo < 0: a little above lo
    pos_ok = chi >= hi * (1 - RTOL)
    assert neg_ok or pos_ok, (qp, lo, hi)
    if can_neg and can_pos and lo < 0 < hi:
        assert (neg_ok and -lo >= hi) or (pos_ok and hi >= -lo), (qp, lo, hi)
    return "neg" if neg_ok else "pos"


@SETTINGS
@given(ranges(), constraints(EDGE))
def test_restricted_clips_when_no_zero_point_covers(r, c):
    lo, hi = target(*r, c)
    qp = restricted(TensorStats(*r), c)
    side = check_clipping(qp, c, lo, hi)
    steps = {"neg": qp.zero_point - c.qmin, "pos": c.qmax - qp.zero_point}
    floor = (c.min_real_range or 0.0) / (c.qmax - c.qmin)
    if side in steps and (-lo if side == "neg" else hi) > 0:
        # the covered side is covered tightly
        expected = (-lo if side == "neg" else hi) / steps[side]
        assert math.isclose(qp.scale, max(expected, floor), rel_tol=RTOL), (qp, expected)


@SETTINGS
@given(ranges(), constraints(EDGE, forms=("power-of-two", "float")))
def test_power_of_two_clips_when_no_zero_point_covers(r, c):
    lo, hi = target(*r, c)
    qp = power_of_two(TensorStats(*r), c)
    side = check_clipping(qp, c, lo, hi)
    extent = {"neg": -lo, "pos": hi}.get(side, 0.0)
    steps = {"neg": qp.zero_point - c.qmin, "pos": c.qmax - qp.zero_point}.get(side, 0)
    if extent > 0 and steps > 0 and c.max_exponent is None:
        assert 2.0 ** exponent(qp) == 2.0 ** clamp_exponent(math.log2(smallest_pow2_at_least(extent / steps)), c)


def test_clipping_documented_examples():
    # uint8 {0}: negative values clip to 0, the positive side is covered
    qp = restricted(TensorStats(-2.0, 1.0), cons("uint8", (0,)))
    assert (qp.zero_point, qp.scale) == (0, np.float32(1.0 / 255))
    # uint8 {255}: the negative side is covered, positive values clip
    qp = restricted(TensorStats(-1.0, 2.0), cons("uint8", (255,)))
    assert (qp.zero_point, qp.scale) == (255, np.float32(1.0 / 255))
    # uint8 {0, 255}: either side can be covered; the larger one is, the smaller one clips
    assert restricted(TensorStats(-0.1, 10.0), cons("uint8", (0, 255))).zero_point == 0
    assert restricted(TensorStats(-10.0, 0.1), cons("uint8", (0, 255))).zero_point == 255
    assert power_of_two(TensorStats(-0.1, 10.0), cons("uint8", (0, 255))).zero_point == 0
    # nothing representable (all-negative values, uint8 {0}): the all-zeros scale, never 0
    qp = restricted(TensorStats(-2.0, -1.0), cons("uint8", (0,)))
    assert (qp.zero_point, qp.scale) == (0, np.float32(1.0 / 255))
    qp = restricted(TensorStats(1.0, 2.0), cons("uint8", (255,)))
    assert (qp.zero_point, qp.scale) == (255, np.float32(1.0 / 255))
    qp = power_of_two(TensorStats(-2.0, -1.0), cons("uint8", (0,)))
    assert (qp.zero_point, qp.scale) == (0, np.float32(2.0**-7))


# ------------------------------------------------------------------------------------------------- mse


@st.composite
def histograms(draw) -> TensorStats:
    """Stats of random samples (normal, uniform, heavy-tailed or with outliers) with their histogram."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 2000))
    kind = draw(st.sampled_from(["normal", "uniform", "laplace", "outliers", "relu", "constant"]))
    loc = draw(st.sampled_from([0.0, 0.0, 1.0, -1.0, 3.0]))
    spread = 10.0 ** draw(st.integers(-20, 20))
    if kind == "normal":
        x = rng.normal(loc, 1.0, n)
    elif kind == "uniform":
        x = rng.uniform(loc - 1.0, loc + draw(st.sampled_from([0.1, 1.0, 5.0])), n)
    elif kind == "laplace":
        x = rng.laplace(loc, 1.0, n)
    elif kind == "outliers":
        x = np.concatenate([rng.normal(loc, 1.0, n), rng.normal(0.0, 50.0, 3)])
    elif kind == "relu":
        x = np.maximum(rng.normal(loc, 1.0, n), 0.0)
    else:
        x = np.full(n, loc)
    # Bin at unit scale, then scale the edges: binning tiny or huge values directly can fail.
    counts, edges = np.histogram(x, bins=draw(st.sampled_from([8, 64, 128, 512])))
    return TensorStats(float(x.min() * spread), float(x.max() * spread), histogram=(counts, edges * spread))


# 16-bit "any" is left out: 65536 zero points x 1296 candidate ranges per example is slow, and the
# search is the same code as for 8-bit.
MSE_BASES = [c for c in ANY + SETS + EDGE if c.zero_points is not None or c.qmax - c.qmin < 1000]


def error(stats: TensorStats, qp: QParams, c: Constraints) -> float:
    counts, edges = stats.histogram
    keep = counts > 0
    return expected_error(((edges[:-1] + edges[1:]) / 2)[keep], counts[keep].astype(np.float64), qp, c)


@settings(max_examples=150, deadline=None, database=None)
@given(histograms(), constraints(MSE_BASES, forms=("float", "float", "power-of-two")))
def test_mse_obeys_constraints_and_beats_covering(stats, c):
    qp = mse(stats, c)
    assert_valid(qp, c)
    cover = power_of_two if c.scale_form == "power-of-two" else restricted
    assert error(stats, qp, c) <= error(stats, cover(stats, c), c)
    if c.scale_form == "float":
        assert error(stats, qp, c) <= error(stats, restricted(stats, c), c)


@SETTINGS
@given(ranges(), constraints(ANY + SETS + EDGE, forms=("float", "power-of-two")))
def test_mse_without_histogram_covers(r, c):
    stats = TensorStats(*r)
    qp = mse(stats, c)
    assert_valid(qp, c)
    assert qp == (power_of_two if c.scale_form == "power-of-two" else restricted)(stats, c)


def test_mse_clips_outliers():
    # Squared error: clipping two outliers at 20 to ~5 (cost ~2 * 15**2) must buy more rounding error
    # than it costs, hence the million samples (rounding error ~ n * scale**2 / 12).
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.0, 1.0, 1_000_000), [20.0, -20.0]])
    stats = TensorStats(float(x.min()), float(x.max()), histogram=np.histogram(x, bins=512))
    c = cons("int8", (0,), (-127, 127))
    qp, cover = mse(stats, c), restricted(stats, c)
    assert qp.scale < cover.scale / 2  # a clipped range: the outliers are not worth 8 bits
    assert error(stats, qp, c) < error(stats, cover, c) / 2


def mse_reference(stats: TensorStats, c: Constraints) -> QParams:
    """The search ``mse`` documents, one candidate at a time (the vectorised policy must agree with it)."""
    cover = power_of_two if c.scale_form == "power-of-two" else restricted
    best = cover(stats, c)
    if stats.histogram is None or not (np.asarray(stats.histogram[0]) > 0).any():
        return best
    best_err = error(stats, best, c)
    rmin, rmax = min(stats.rmin, 0.0), max(stats.rmax, 0.0)
    seen = {(float(best.scale), best.zero_point)}
    for a in FRACTIONS if rmin < 0 else [1.0]:
        for b in FRACTIONS if rmax > 0 else [1.0]:
            qp = cover(TensorStats(rmin * a, rmax * b), c)
            if (float(qp.scale), qp.zero_point) in seen:
                continue
            seen.add((float(qp.scale), qp.zero_point))
            err = error(stats, qp, c)
            if err < best_err:
                best, best_err = qp, err
    return best


# Wide grids with any zero point, where the vectorised search looks only around the crossing point.
WIDE = [cons("uint16"), cons("int16"), cons("int16", None, (-32767, 32767)), cons("uint8"), cons("int8")]


@settings(max_examples=150, deadline=None, database=None)
@given(histograms(), constraints(MSE_BASES + WIDE, forms=("float", "float", "power-of-two")))
def test_mse_equals_the_one_by_one_search(stats, c):
    if c.scale_form == "power-of-two" and c.zero_points is None and c.qmax - c.qmin > 1000:
        return  # the reference is too slow there (65536 zero points per candidate)
    assert mse(stats, c) == mse_reference(stats, c)


@SETTINGS
@given(
    st.lists(ranges(), min_size=1, max_size=20),
    constraints(ANY + SETS + EDGE + WIDE, forms=("float", "power-of-two")),
)
def test_cover_many_equals_the_covering_policy(rs, c):
    if c.scale_form == "power-of-two" and c.zero_points is None and c.qmax - c.qmin > 1000:
        rs = rs[:2]
    cover = power_of_two if c.scale_form == "power-of-two" else restricted
    lo, hi = np.array([r[0] for r in rs]), np.array([r[1] for r in rs])
    got = cover_many(lo, hi, c)
    assert got == [cover(TensorStats(*r), c) for r in rs]
    assert all(isinstance(q.scale, np.float32) for q in got)


def test_mse_16_bit_any_zero_point_is_fast():
    # The 16-bit grid used to cost 65536 zero points per candidate (~1.5 s per tensor); now ~ms.
    import time

    rng = np.random.default_rng(1)
    x = np.concatenate([rng.laplace(0.3, 1.0, 100_000), [40.0]])
    stats = TensorStats(float(x.min()), float(x.max()), histogram=np.histogram(x, bins=2048))
    c = dataclasses.replace(cons("uint16"), min_real_range=1e-4)
    t0 = time.perf_counter()
    qp = mse(stats, c)
    assert time.perf_counter() - t0 < 0.5
    assert_valid(qp, c)
    assert error(stats, qp, c) <= error(stats, restricted(stats, c), c)


# ------------------------------------------------------------------------- whole float32 range, validity

# Beyond 1e-30..1e30: subnormals and values near float32's largest. The policies may clip or fall back
# here, but must still return a usable scale (positive, finite) and an allowed zero point.
f32_values = st.floats(width=32, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(ranges(values=f32_values.map(abs)), constraints(ANY + SETS + EDGE, forms=("float", "power-of-two")))
def test_valid_over_all_float32(r, c):
    stats = TensorStats(*r)
    for policy in (power_of_two, mse):
        assert_valid(policy(stats, c), c)
    if c.scale_form == "float":
        assert_valid(restricted(stats, c), c)
    if c.scale_form == "float" and c.zero_points is None:
        assert_valid(asymmetric(stats, c), c)
    if c.scale_form == "float" and midpoint_allowed(c):
        assert_valid(symmetric(stats, c), c)
