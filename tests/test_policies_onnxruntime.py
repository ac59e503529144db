"""onnxruntime as the oracle: ``asymmetric``/``symmetric`` == ``compute_scale_zp``, ``restricted`` with
zero points {qmin, mid} == ``snap_zero_point_to_uint8``, bit for bit.

onnxruntime gets its inputs the way its quantizer passes them: the calibrated range as float32 numpy
values (scalars or 0-d arrays), qmin/qmax as numpy arrays of the quantized type from
``get_qmin_qmax_for_qType`` (full, ``reduce_range`` and symmetric tables).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto
from onnxruntime.quantization.quant_utils import compute_scale_zp, get_qmin_qmax_for_qType, snap_zero_point_to_uint8
from test_policies import magnitudes, ranges

from hwquant.policies import Constraints, TensorStats, asymmetric, restricted, symmetric

SETTINGS = settings(max_examples=500, deadline=None, database=None)
QTYPES = {
    "uint8": TensorProto.UINT8,
    "int8": TensorProto.INT8,
    "uint16": TensorProto.UINT16,
    "int16": TensorProto.INT16,
    "uint4": TensorProto.UINT4,
    "int4": TensorProto.INT4,
}


def _tables() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(dtype, qmin, qmax) of every range onnxruntime's quantizer uses, without duplicates."""
    out, seen = [], set()
    for dtype, qtype in QTYPES.items():
        for reduce_range, sym in ((False, False), (True, False), (False, True)):
            qmin, qmax = get_qmin_qmax_for_qType(qtype, reduce_range=reduce_range, symmetric=sym)
            if (dtype, int(qmin), int(qmax)) not in seen:
                seen.add((dtype, int(qmin), int(qmax)))
                out.append((dtype, qmin, qmax))
    return out


TABLES = _tables()
UINT8_TABLES = [t for t in TABLES if t[0] == "uint8"]  # [0, 255] and reduce_range [0, 127]
MIN_REAL_RANGES = [None, None, 1e-4, 1.0]

# Any finite float32 (subnormals and float32's largest included), plus the log-spread magnitudes.
f32_values = st.one_of(st.floats(width=32, allow_nan=False, allow_infinity=False).map(abs), magnitudes)
as_ort = st.sampled_from([np.float32, lambda v: np.array(v, dtype=np.float32)])  # scalar or 0-d array


def bits(x) -> int:
    return int(np.asarray(x, dtype=np.float32).view(np.uint32))


def test_tables_cover_reduce_range_and_narrow():
    pairs = {(d, int(lo), int(hi)) for d, lo, hi in TABLES}
    assert {("uint8", 0, 255), ("uint8", 0, 127), ("int8", -127, 127), ("int8", -64, 64), ("int4", -4, 3)} <= pairs


@SETTINGS
@given(
    ranges(values=f32_values),
    st.sampled_from(TABLES),
    st.sampled_from(MIN_REAL_RANGES),
    st.booleans(),
    as_ort,
)
def test_affine_equals_compute_scale_zp(r, table, min_real_range, sym, to_ort):
    dtype, qmin, qmax = table
    c = Constraints(dtype=dtype, qmin=int(qmin), qmax=int(qmax), min_real_range=min_real_range)
    ort_zp, ort_scale = compute_scale_zp(to_ort(r[0]), to_ort(r[1]), qmin, qmax, sym, min_real_range)
    qp = (symmetric if sym else asymmetric)(TensorStats(*r), c)
    assert bits(qp.scale) == bits(ort_scale), (qp, ort_scale)
    expected_zp = int(ort_zp)
    if sym and float(ort_scale) == 1.0 and int(ort_zp) == 0:
        # Documented deviation: below float32 tiny (all zeros) onnxruntime gives zero point 0 even for
        # symmetric; hwquant keeps the midpoint (differs only for unsigned types, e.g. uint8: 128).
        expected_zp = round((int(qmin) + int(qmax)) / 2)
    assert qp.zero_point == expected_zp, (qp, ort_zp)


@pytest.mark.parametrize("dtype,qmin,qmax", TABLES, ids=[f"{d}[{int(lo)},{int(hi)}]" for d, lo, hi in TABLES])
@pytest.mark.parametrize("min_real_range", [None, 1e-4])
def test_affine_equals_compute_scale_zp_on_edges(dtype, qmin, qmax, min_real_range):
    c = Constraints(dtype=dtype, qmin=int(qmin), qmax=int(qmax), min_real_range=min_real_range)
    big, tiny = float(np.finfo(np.float32).max), float(np.finfo(np.float32).smallest_subnormal)
    for rmin, rmax in [(0.0, 0.0), (-0.0, 0.0), (-1.0, 1.0), (0.0, 2.55), (-3.1, 1.2), (2.0, 3.0), (-3.0, -2.0),
                       (-big, big), (-tiny, tiny), (0.0, tiny), (1e-38, 1e-38), (-1e-30, 1e30)]:  # fmt: skip
        rmin, rmax = float(np.float32(rmin)), float(np.float32(rmax))  # the same values for both
        for sym in (False, True):
            rmin32, rmax32 = np.array(rmin, np.float32), np.array(rmax, np.float32)
            ort_zp, ort_scale = compute_scale_zp(rmin32, rmax32, qmin, qmax, sym, min_real_range)
            qp = (symmetric if sym else asymmetric)(TensorStats(rmin, rmax), c)
            assert bits(qp.scale) == bits(ort_scale), (rmin, rmax, sym, qp, ort_scale)
            if not (sym and float(ort_scale) == 1.0):  # the documented deviation, see above
                assert qp.zero_point == int(ort_zp), (rmin, rmax, sym, qp, ort_zp)


def test_symmetric_all_zeros_keeps_the_midpoint():
    # onnxruntime: (zero point 0, scale 1); hwquant: the midpoint, so uint8 {128} profiles stay valid
    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.UINT8)
    zero = np.array(0.0, np.float32)
    assert [int(v) for v in compute_scale_zp(zero, zero, qmin, qmax, True)] == [0, 1]
    qp = symmetric(TensorStats(0.0, 0.0), Constraints(dtype="uint8", qmin=0, qmax=255, zero_points=(128,)))
    assert (qp.zero_point, float(qp.scale)) == (128, 1.0)
    qp = symmetric(TensorStats(0.0, 0.0), Constraints(dtype="int8", qmin=-127, qmax=127, zero_points=(0,)))
    assert (qp.zero_point, float(qp.scale)) == (0, 1.0)


def restricted_constraints(qmin, qmax, min_real_range) -> Constraints:
    lo, hi = int(qmin), int(qmax)
    mid = (lo + hi + 1) // 2  # onnxruntime's midpoint: 128 for [0, 255], 64 for reduce_range [0, 127]
    return Constraints(dtype="uint8", qmin=lo, qmax=hi, zero_points=(lo, mid), min_real_range=min_real_range)


@SETTINGS
@given(
    ranges(values=f32_values),
    st.sampled_from(UINT8_TABLES),
    st.sampled_from([*MIN_REAL_RANGES, 1e-30]),
    as_ort,
)
def test_restricted_equals_snap_zero_point_to_uint8(r, table, min_real_range, to_ort):
    _, qmin, qmax = table
    c = restricted_constraints(qmin, qmax, min_real_range)
    ort_zp, ort_scale = snap_zero_point_to_uint8(
        to_ort(r[0]), to_ort(r[1]), qmin=qmin, qmax=qmax, min_real_range=min_real_range
    )
    qp = restricted(TensorStats(*r), c)
    assert qp.zero_point == int(ort_zp), (qp, ort_zp)
    if float(ort_scale) == 0.0:
        # Documented deviation: a range below ~1e-43 underflows onnxruntime's scale to 0 (unusable);
        # hwquant uses the all-zeros scale 1 / (qmax - qmin) instead.
        assert bits(qp.scale) == bits(1.0 / (int(qmax) - int(qmin))), qp
    else:
        assert bits(qp.scale) == bits(ort_scale), (qp, ort_scale)


@pytest.mark.parametrize("reduce_range", [False, True])
@pytest.mark.parametrize("min_real_range", [None, 1e-4, 1.0])
def test_restricted_equals_snap_on_degenerate_and_edges(reduce_range, min_real_range):
    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.UINT8, reduce_range=reduce_range)
    c = restricted_constraints(qmin, qmax, min_real_range)
    big = float(np.finfo(np.float32).max)
    for rmin, rmax in [(0.0, 0.0), (-0.0, 0.0), (-0.0, -0.0), (0.0, 2.55), (-1.0, 1.0), (2.0, 2.0), (-2.0, -2.0),
                       (-1e-3, 1e-5), (-1e-5, 1e-3), (1e-30, 1e-30), (-big, big), (-1e-30, 1e30)]:  # fmt: skip
        rmin, rmax = float(np.float32(rmin)), float(np.float32(rmax))  # the same values for both
        ort_zp, ort_scale = snap_zero_point_to_uint8(
            np.float32(rmin), np.float32(rmax), qmin=qmin, qmax=qmax, min_real_range=min_real_range
        )
        qp = restricted(TensorStats(rmin, rmax), c)
        assert (qp.zero_point, bits(qp.scale)) == (int(ort_zp), bits(ort_scale)), (rmin, rmax, qp, ort_zp, ort_scale)


def test_restricted_underflow_deviation():
    # [0, 1e-45]: onnxruntime's scale underflows to 0; hwquant falls back to the all-zeros scale
    qmin, qmax = get_qmin_qmax_for_qType(TensorProto.UINT8)
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    _, ort_scale = snap_zero_point_to_uint8(np.float32(0.0), np.float32(tiny), qmin=qmin, qmax=qmax)
    assert float(ort_scale) == 0.0
    qp = restricted(TensorStats(0.0, tiny), restricted_constraints(qmin, qmax, None))
    assert qp.zero_point == 0 and math.isclose(qp.scale, 1 / 255, rel_tol=1e-7)
