"""Hand-computed expectations for the built-in policies."""

from __future__ import annotations

import numpy as np
import pytest

from hwquant.policies import Constraints, TensorStats, asymmetric, mse, power_of_two, restricted, symmetric

INT8 = Constraints(dtype="int8", qmin=-128, qmax=127, zero_points=(0,))
INT8_NARROW = Constraints(dtype="int8", qmin=-127, qmax=127, zero_points=(0,))
UINT8 = Constraints(dtype="uint8", qmin=0, qmax=255)
UINT8_0_128 = Constraints(dtype="uint8", qmin=0, qmax=255, zero_points=(0, 128))
UINT8_REDUCED = Constraints(dtype="uint8", qmin=0, qmax=127, zero_points=(0, 64))


def pow2(c: Constraints, lo: int | None = None, hi: int | None = None) -> Constraints:
    return Constraints(c.dtype, c.qmin, c.qmax, c.zero_points, "power-of-two", lo, hi, c.min_real_range)


def qp_of(policy, rmin: float, rmax: float, c: Constraints) -> tuple[int, float]:
    qp = policy(TensorStats(rmin, rmax), c)
    assert isinstance(qp.scale, np.float32) and c.allows(qp) is None
    return qp.zero_point, float(qp.scale)


# --------------------------------------------------------------------------------------------- power-of-two


@pytest.mark.parametrize(
    "rmin,rmax,c,expected",
    [
        # int8 {0}: negative side needs 3.1 / 128 = 0.0242 -> 2**-5 = 0.03125 (2**-6 = 0.0156 is short)
        (-3.1, 1.2, pow2(INT8), (0, 2.0**-5)),
        # narrow int8: 1 / 127 = 0.00787 -> 2**-6 (2**-7 = 0.0078125 is just short)
        (-1.0, 1.0, pow2(INT8_NARROW), (0, 2.0**-6)),
        # exactly a power of two: 128 * 2**-7 = 1.0 covers -1.0 with no rounding up
        (-1.0, 0.5, pow2(INT8), (0, 2.0**-7)),
        # uint8 {0, 128}: zp 0 needs 1 / 255 -> 2**-7; zp 128 needs 1 / 127 -> 2**-6; zp 0 wins
        (0.0, 1.0, pow2(UINT8_0_128), (0, 2.0**-7)),
        # negative values need zp 128: max(0.5 / 128, 0.25 / 127) = 2**-8
        (-0.5, 0.25, pow2(UINT8_0_128), (128, 2.0**-8)),
        # all zeros: smallest power of two >= 1 / 255
        (0.0, 0.0, pow2(UINT8_0_128), (0, 2.0**-7)),
        # large ranges: 1000 / 127 = 7.87 -> 8
        (-5.0, 1000.0, pow2(INT8_NARROW), (0, 8.0)),
    ],
)
def test_power_of_two_examples(rmin, rmax, c, expected):
    assert qp_of(power_of_two, rmin, rmax, c) == expected


@pytest.mark.parametrize(
    "lo,hi,expected",
    [
        (None, None, 2.0**-5),
        (-8, 0, 2.0**-5),  # within the bounds: unchanged
        (-3, None, 2.0**-3),  # below the lower bound: raised (covers more than needed)
        (-5, -5, 2.0**-5),
        (None, -6, 2.0**-6),  # above the upper bound: lowered (clips -3.1 to -128 * 2**-6 = -2.0)
        (-12, -10, 2.0**-10),
    ],
)
def test_power_of_two_exponent_bounds(lo, hi, expected):
    assert qp_of(power_of_two, -3.1, 1.2, pow2(INT8, lo, hi)) == (0, expected)


def test_power_of_two_bounds_on_tiny_and_degenerate_ranges():
    # raised to 2**-10, both zero points cover; the one centring [0, 1e-6] in the grid wins
    assert qp_of(power_of_two, 0.0, 1e-6, pow2(UINT8_0_128, -10, None)) == (128, 2.0**-10)
    assert qp_of(power_of_two, 0.0, 0.0, pow2(UINT8_0_128, None, -9)) == (0, 2.0**-9)
    assert qp_of(power_of_two, 0.0, 0.0, pow2(UINT8_0_128, -4, None)) == (0, 2.0**-4)


# ----------------------------------------------------------------------------------------------- restricted


@pytest.mark.parametrize(
    "rmin,rmax,c,expected",
    [
        (0.0, 2.55, UINT8_0_128, (0, np.float32(2.55 / 255))),  # = float32(0.01)
        (0.5, 2.55, UINT8_0_128, (0, np.float32(2.55 / 255))),  # zero is always included
        (-1.0, 1.0, UINT8_0_128, (128, np.float32(1 / 127))),  # max(1 / 128, 1 / 127)
        (-2.0, 1.0, UINT8_0_128, (128, np.float32(2 / 128))),
        (-1.0, 0.0, UINT8_0_128, (128, np.float32(1 / 128))),
        (0.0, 0.0, UINT8_0_128, (0, np.float32(1 / 255))),  # all zeros
        # reduce_range: [0, 127] with its own midpoint 64
        (-1.0, 1.0, UINT8_REDUCED, (64, np.float32(1 / 63))),
        (0.0, 1.27, UINT8_REDUCED, (0, np.float32(1.27 / 127))),
        # a single allowed zero point: uint8 {128}
        (0.0, 1.0, Constraints("uint8", 0, 255, (128,)), (128, np.float32(1 / 127))),
        # "any": the smallest covering scale; here zp 85 covers -1 and 2 exactly with scale 1 / 85
        (-1.0, 2.0, UINT8, (85, np.float32(1 / 85))),
    ],
)
def test_restricted_examples(rmin, rmax, c, expected):
    zp, scale = qp_of(restricted, rmin, rmax, c)
    assert (zp, np.float32(scale)) == expected
    assert np.float32(2.55 / 255) == np.float32(0.01)


def test_restricted_min_real_range():
    c = Constraints("uint8", 0, 255, (0, 128), min_real_range=1.0)
    # [0, 0.1] is stretched to [0, 1.0]
    assert qp_of(restricted, 0.0, 0.1, c) == (0, float(np.float32(1 / 255)))
    # all zeros too: 1 / 255, then floored at 1.0 / 255
    assert qp_of(restricted, 0.0, 0.0, c) == (0, float(np.float32(1 / 255)))
    # [-0.1, 0] becomes [-0.1, 0.9]: zp 128, max(0.1 / 128, 0.9 / 127)
    assert qp_of(restricted, -0.1, 0.0, c) == (128, float(np.float32(0.9 / 127)))


# -------------------------------------------------------------------------------------- asymmetric/symmetric


def test_affine_examples():
    # [-1, 1] uint8: scale 2 / 255, zero point round(127.5) = 128 (half to even)
    assert qp_of(asymmetric, -1.0, 1.0, UINT8) == (128, float(np.float32(2 / 255)))
    # [0, 2.55]: zero point 0, scale 0.01
    assert qp_of(asymmetric, 0.0, 2.55, UINT8) == (0, float(np.float32(float(np.float32(2.55)) / 255)))
    # all zeros: onnxruntime's fallback (scale 1, zero point 0)
    assert qp_of(asymmetric, 0.0, 0.0, UINT8) == (0, 1.0)
    # symmetric narrow int8: absmax / 127
    assert qp_of(symmetric, -1.0, 0.5, INT8_NARROW) == (0, float(np.float32(2 / 254)))
    # symmetric uint8 {128}: [-2, 2] over 255 steps
    assert qp_of(symmetric, 0.0, 2.0, Constraints("uint8", 0, 255, (128,))) == (128, float(np.float32(4 / 255)))


# ---------------------------------------------------------------------------------------------------- mse


def test_mse_without_histogram_is_the_covering_policy():
    stats = TensorStats(-3.1, 1.2)
    assert mse(stats, UINT8_0_128) == restricted(stats, UINT8_0_128)
    assert mse(stats, pow2(INT8)) == power_of_two(stats, pow2(INT8))


@pytest.mark.parametrize("rmin,rmax", [(0.5, 2.0), (-2.0, -0.5)])
def test_mse_one_signed_ranges_with_histogram(rmin, rmax):
    # used to raise: the clipped candidate [rmin, b * rmax] had rmin > b * rmax
    x = np.random.default_rng(1).uniform(rmin, rmax, 1000)
    stats = TensorStats(float(x.min()), float(x.max()), histogram=np.histogram(x, bins=64))
    for c in (UINT8_0_128, INT8_NARROW, pow2(INT8)):
        assert c.allows(mse(stats, c)) is None
