"""Calibration and evaluation data: samples from code or from files, checked against the model's inputs.

:func:`open_samples` turns any supported source into a :class:`SampleSource`, a re-iterable stream of
``{input_name: ndarray}`` dicts that were each checked against the model's graph inputs.

Sources
    In code: a list (any sequence) of dicts; any other iterable of dicts (a generator works once); a
    function returning a fresh iterable on each call (re-iterable streaming); an onnxruntime
    ``CalibrationDataReader`` (anything with ``get_next()``; re-iterable when it has ``rewind()``); a dict of
    stacked arrays or, for a one-input model, one stacked array.

    From files: a stacked ``.npz`` (or ``.npy``) file; a directory of ``.npz``/``.npy`` files, one sample per
    file, in natural name order (``s2`` before ``s10``; ``.npy`` only for one-input models); onnxruntime's
    ``test_data_set_*/input_*.pb`` layout (the directory holding the sets, or one set; tensors map to inputs
    by name, unnamed ones by the number in ``input_K.pb``); an image file or folder (searched recursively,
    e.g. class subfolders) when :class:`ImagePreprocess` is given (needs Pillow: ``hwquant[images]``). The
    image preprocessing applies only where there are images: other sources ignore it, so one setting can
    serve both calibration and evaluation data.

    Random data only with ``random=N`` and no source, with a :class:`RandomDataWarning`.

Stacked arrays (``.npz``, ``.npy``, dicts) are split along their leading axis. An array of rank R+1 for an
input of rank R holds one sample per row. An array of the input's rank whose leading dim is symbolic (or
1) holds one batch-1 sample per row: ``x[i:i+1]``, so a ``[64, 3, 224, 224]`` file gives 64 samples of
``[1, 3, 224, 224]``. Any other array is one sample. All arrays of a file must give the same count.
Arrays that are not model inputs (e.g. ``label``) are an error unless named in ``ignore``.

File sources stream: a directory loads one file per sample, a stacked ``.npz`` reads one row at a time
from the zip member (a Fortran-ordered array is read whole), a ``.npy`` is memory-mapped.

Checks, per sample (a :class:`~hwquant.errors.CalibrationError` names the sample index, 0-based, the
file when there is one, and the input):

* names: unknown names (the message lists the model's inputs) and missing inputs;
* shape: rank and every fixed dim (symbolic dims accept any size). A sample with one axis less than the
  input, whose leading dim is symbolic or 1, gets a batch axis of 1 added;
* dtype: an exact match, or a cast within a kind: float to float (float64 data for a float32 input is
  cast; values that overflow the target are an error) and integer to integer when every value fits.
  Integers are never converted to floats nor floats to integers, and bool only matches bool;
* values: no NaN or Inf, no empty (zero-size) array;
* the source: no samples at all, and unreadable or corrupt files.
"""

from __future__ import annotations

import itertools
import os
import re
import warnings
import zipfile
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper

from hwquant.errors import CalibrationError, ModelError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImagePreprocess",
    "InputSpec",
    "RandomDataWarning",
    "Sample",
    "SampleSource",
    "input_specs",
    "open_samples",
    "validate_sample",
]

Sample = dict[str, np.ndarray]
"""One model feed: ``{input_name: array}``."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
"""File name endings (lower case) recognised as images in an image folder."""

_RANDOM_BATCH = 1
_RANDOM_DIM = 16


class RandomDataWarning(UserWarning):
    """Calibration runs on random data: the ranges it finds say nothing about real inputs."""


# --------------------------------------------------------------------------------------------- model inputs


@dataclass(frozen=True)
class InputSpec:
    """One graph input of the model (initializers excluded).

    ``shape`` holds an int for a fixed dim, the dim_param string for a symbolic one and None for an
    unnamed unknown dim; ``shape`` itself is None when the model declares no shape (any rank accepted).
    """

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...] | None

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    def shape_text(self) -> str:
        if self.shape is None:
            return "[?]"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def __str__(self) -> str:
        return f"{self.name} {self.shape_text()} {self.dtype}"


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's graph inputs that are not initializers, in graph order."""
    graph = model.graph
    constants = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    specs = []
    for vi in graph.input:
        if vi.name in constants:
            continue
        kind = vi.type.WhichOneof("value")
        if kind != "tensor_type":
            raise ModelError(f"model input '{vi.name}' is a {kind or 'value of unknown type'}, not a tensor")
        tt = vi.type.tensor_type
        try:
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        except Exception as exc:  # undefined or unsupported element type
            raise ModelError(f"model input '{vi.name}' has an unsupported element type {tt.elem_type}") from exc
        shape = None
        if tt.HasField("shape"):
            shape = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim)
        specs.append(InputSpec(vi.name, dtype, shape))
    if not specs:
        raise ModelError("the model has no inputs to feed (every graph input is an initializer)")
    return specs


def _listing(specs: Sequence[InputSpec]) -> str:
    return ", ".join(str(s) for s in specs)


# --------------------------------------------------------------------------------------------- validation


def _where(index: int, origin: str | None) -> str:
    return f"sample {index} ({origin})" if origin else f"sample {index}"


def validate_sample(sample: Any, specs: Sequence[InputSpec], *, index: int = 0, origin: str | None = None) -> Sample:
    """Check one sample against the model inputs and return it as ``{name: contiguous ndarray}`` in the
    model's input order, with the allowed casts and the batch axis applied (see the module docstring).

    ``index`` (0-based) and ``origin`` (a file name) only go into error messages.
    """
    where = _where(index, origin)
    if not isinstance(sample, Mapping):
        raise CalibrationError(
            f"{where}: expected a dict {{input_name: array}}, got {type(sample).__name__}; "
            f"the model's inputs are: {_listing(specs)}"
        )
    names = {s.name for s in specs}
    unknown = [k for k in sample if k not in names]
    if unknown:
        what = ", ".join(repr(k) for k in unknown)
        raise CalibrationError(
            f"{where}: unknown input{'s' if len(unknown) > 1 else ''} {what}; the model's inputs are: {_listing(specs)}"
        )
    missing = [s for s in specs if s.name not in sample]
    if missing:
        what = ", ".join(f"'{s.name}'" for s in missing)
        raise CalibrationError(
            f"{where}: missing input{'s' if len(missing) > 1 else ''} {what}; the model's inputs are: {_listing(specs)}"
        )
    return {s.name: _check_array(sample[s.name], s, f"{where}, input '{s.name}'") for s in specs}


def _check_array(value: Any, spec: InputSpec, label: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise CalibrationError(f"{label}: not convertible to an array ({exc})") from exc
    if arr.dtype.kind not in "biufc":
        raise CalibrationError(f"{label}: has dtype {arr.dtype}, not numeric; the model expects {spec.dtype}")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    arr = _check_shape(arr, spec, label)
    if arr.size == 0:
        raise CalibrationError(f"{label}: is empty (shape {arr.shape})")
    if arr.dtype.kind in "fc":
        _check_finite(arr, label)
    arr = _cast(arr, spec, label)
    return np.ascontiguousarray(arr)


def _check_shape(arr: np.ndarray, spec: InputSpec, label: str) -> np.ndarray:
    if spec.shape is None:
        return arr
    rank = len(spec.shape)
    if arr.ndim == rank - 1 and (not isinstance(spec.shape[0], int) or spec.shape[0] == 1):
        arr = arr[np.newaxis]  # a sample without its batch axis
    if arr.ndim != rank:
        raise CalibrationError(
            f"{label}: has rank {arr.ndim} (shape {tuple(arr.shape)}) but the model expects rank {rank} "
            f"{spec.shape_text()}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, arr.shape, strict=True)):
        if isinstance(want, int) and want != got:
            raise CalibrationError(
                f"{label}: has shape {tuple(arr.shape)} but the model expects {spec.shape_text()} "
                f"(axis {axis} is {got}, expected {want})"
            )
    return arr


def _check_finite(arr: np.ndarray, label: str, note: str = "") -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        nan = int(np.count_nonzero(np.isnan(arr)))
        inf = int(np.count_nonzero(bad)) - nan
        first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), arr.shape))
        raise CalibrationError(f"{label}: contains {nan} NaN and {inf} Inf values{note} (first at index {first})")


def _cast(arr: np.ndarray, spec: InputSpec, label: str) -> np.ndarray:
    have, want = arr.dtype, spec.dtype
    if have == want:
        return arr
    if have.kind == "f" and want.kind == "f":
        with np.errstate(over="ignore"):
            out = arr.astype(want)
        _check_finite(out, label, note=f" after the cast from {have} to {want} (values out of {want} range)")
        return out
    if have.kind in "iu" and want.kind in "iu":
        info = np.iinfo(want)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < info.min or hi > info.max:
            raise CalibrationError(
                f"{label}: has dtype {have} with values in [{lo}, {hi}], which do not fit the model's {want}"
            )
        return arr.astype(want)
    hint = ""
    if have.kind in "iub" and want.kind in "fc":
        hint = "; hwquant never converts integers to floats: convert (and scale) the data yourself"
    elif have.kind in "fc" and want.kind in "iub":
        hint = "; hwquant never rounds floats to integers: convert the data yourself"
    raise CalibrationError(f"{label}: has dtype {have} but the model expects {want}{hint}")


# --------------------------------------------------------------------------------------------- backends
#
# A backend produces raw samples; SampleSource validates them and handles ranges (split / take).
# rows(start, stop) yields (index, raw sample, origin) for indices in [start, stop), stop None = to the end.


class _Backend:
    one_shot = False
    description = ""

    def count(self) -> int | None:
        raise NotImplementedError

    def rows(self, start: int, stop: int | None) -> Iterator[tuple[int, Any, str | None]]:
        raise NotImplementedError

    def measure(self) -> int:
        """Count the samples, iterating when the count is not known up front."""
        n = self.count()
        if n is None:
            n = sum(1 for _ in self.rows(0, None))
        return n


class _SequenceBackend(_Backend):
    def __init__(self, seq: Sequence[Any], description: str):
        self.seq = seq
        self.description = description

    def count(self) -> int:
        return len(self.seq)

    def rows(self, start, stop):
        for i in range(start, len(self.seq) if stop is None else min(stop, len(self.seq))):
            yield i, self.seq[i], None


class _IterableBackend(_Backend):
    """An iterable of unknown length: made anew by ``make`` on each iteration unless one-shot."""

    def __init__(self, make: Callable[[], Iterable[Any]], description: str, *, one_shot: bool, length=None):
        self.make = make
        self.description = description
        self.one_shot = one_shot
        self.length = length
        self.used = False

    def count(self) -> int | None:
        return self.length

    def measure(self) -> int:
        if self.length is None:
            if self.one_shot:
                raise CalibrationError(self._one_shot_message("be counted or split"))
            self.length = sum(1 for _ in self.make())
        return self.length

    def _one_shot_message(self, what: str) -> str:
        return (
            f"{self.description} is a one-shot iterator and cannot {what}: pass a list, a function that "
            "returns a fresh iterable on each call, or a data reader with rewind()"
        )

    def rows(self, start, stop):
        if self.one_shot:
            if self.used:
                raise CalibrationError(self._one_shot_message("be iterated twice") + "; it was already consumed")
            self.used = True
        try:
            iterator = iter(self.make())
        except TypeError as exc:
            raise CalibrationError(f"{self.description} did not return an iterable ({exc})") from exc
        for i, raw in itertools.islice(enumerate(iterator), start, stop):
            yield i, raw, None


class _ReaderBackend(_IterableBackend):
    """An onnxruntime CalibrationDataReader (or anything with ``get_next()``)."""

    def __init__(self, reader: Any):
        self.reader = reader
        rewind = getattr(reader, "rewind", None)
        self.rewind = rewind if callable(rewind) else None
        try:
            length = len(reader)
        except (TypeError, NotImplementedError):
            length = None
        name = type(reader).__name__
        super().__init__(self._generate, f"data reader {name}", one_shot=self.rewind is None, length=length)

    def _generate(self) -> Iterator[Any]:
        if self.rewind is not None:
            self.rewind()
        while (item := self.reader.get_next()) is not None:
            yield item


class _RandomBackend(_Backend):
    def __init__(self, specs: Sequence[InputSpec], n: int, seed: int, dims: Mapping[str, int]):
        self.n, self.seed = n, seed
        symbolic = {d for s in specs for d in (s.shape or ()) if isinstance(d, str)}
        unknown = sorted(set(dims) - symbolic)
        if unknown:
            known = ", ".join(sorted(symbolic)) or "none"
            raise CalibrationError(
                f"dims names {', '.join(unknown)}: not symbolic dims of the model's inputs (those are: {known})"
            )
        self.shapes: list[tuple[InputSpec, tuple[int, ...]]] = []
        for s in specs:
            if s.shape is None:
                raise CalibrationError(f"cannot make random data for input '{s.name}': the model declares no shape")
            if s.dtype.kind not in "biuf":
                raise CalibrationError(f"cannot make random data for input '{s.name}' of dtype {s.dtype}")
            shape = []
            for axis, d in enumerate(s.shape):
                if isinstance(d, int):
                    shape.append(d)
                elif isinstance(d, str) and d in dims:
                    shape.append(int(dims[d]))
                else:
                    shape.append(_RANDOM_BATCH if axis == 0 else _RANDOM_DIM)
            self.shapes.append((s, tuple(shape)))
        self.description = f"{n} random samples (seed {seed}; not meaningful)"

    def count(self) -> int:
        return self.n

    def rows(self, start, stop):
        for i in range(start, self.n if stop is None else min(stop, self.n)):
            rng = np.random.default_rng([self.seed, i])
            sample = {}
            for s, shape in self.shapes:
                if s.dtype.kind == "f":
                    sample[s.name] = rng.standard_normal(shape).astype(s.dtype)
                elif s.dtype.kind == "b":
                    sample[s.name] = rng.random(shape) < 0.5
                else:
                    sample[s.name] = rng.integers(0, 2, shape).astype(s.dtype)
            yield i, sample, None


class _FilesBackend(_Backend):
    """One sample per file (or per folder), loaded when reached."""

    def __init__(self, paths: Sequence[Path], load: Callable[[Path], Mapping[str, Any]], description: str):
        self.paths = list(paths)
        self.load = load
        self.description = description

    def count(self) -> int:
        return len(self.paths)

    def rows(self, start, stop):
        for i in range(start, len(self.paths) if stop is None else min(stop, len(self.paths))):
            yield i, self.load(self.paths[i]), str(self.paths[i])


# ---- stacked arrays: columns split along the leading axis


class _Column:
    """One stacked array; ``read(start, stop)`` yields ``arr[i]`` for i in [start, stop)."""

    shape: tuple[int, ...]

    def read(self, start: int, stop: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def whole(self) -> np.ndarray:
        raise NotImplementedError


class _MemColumn(_Column):
    def __init__(self, arr: np.ndarray):
        self.arr = arr
        self.shape = tuple(arr.shape)

    def read(self, start, stop):
        for i in range(start, stop):
            yield np.array(self.arr[i])  # a plain copy, also of a memory-mapped row

    def whole(self):
        return np.array(self.arr)


class _NpzColumn(_Column):
    """An array inside an ``.npz`` read row by row from its (possibly compressed) zip member."""

    def __init__(self, path: Path, member: str, label: str):
        self.path, self.member, self.label = path, member, label
        try:
            with zipfile.ZipFile(path) as zf, zf.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:  # other header versions: read the whole array when needed
                    arr = self._load()
                    shape, fortran, dtype = arr.shape, True, arr.dtype
                self.offset = f.tell()
        except CalibrationError:
            raise
        except Exception as exc:
            raise CalibrationError(f"cannot read {label}: {exc}") from exc
        if dtype.hasobject:
            raise CalibrationError(f"cannot read {label}: it holds Python objects, not numbers")
        self.shape, self.dtype, self.streamable = tuple(shape), dtype, not fortran

    def _load(self) -> np.ndarray:
        try:
            with np.load(self.path, allow_pickle=False) as z:
                return z[self.member.removesuffix(".npy")]
        except Exception as exc:
            raise CalibrationError(f"cannot read {self.label}: {exc}") from exc

    def whole(self):
        return self._load()

    def read(self, start, stop):
        if start >= stop:
            return
        if not self.streamable:
            arr = self._load()
            for i in range(start, stop):
                yield np.array(arr[i])
            return
        row_shape = self.shape[1:]
        row_bytes = int(np.prod(row_shape, dtype=np.int64)) * self.dtype.itemsize
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as f:
                f.seek(self.offset + start * row_bytes)
                for _ in range(start, stop):
                    buf = f.read(row_bytes)
                    if len(buf) != row_bytes:
                        raise EOFError("the file ends early")
                    yield np.frombuffer(bytearray(buf), dtype=self.dtype).reshape(row_shape)
        except CalibrationError:
            raise
        except Exception as exc:
            raise CalibrationError(f"cannot read {self.label}: {exc}") from exc


_SINGLE, _ROWS, _BATCH1 = "single", "rows", "batch1"


def _stack_mode(spec: InputSpec, shape: tuple[int, ...]) -> tuple[str, int]:
    rank = spec.rank
    if rank is None:
        return _SINGLE, 1
    if len(shape) == rank + 1:
        return _ROWS, shape[0]
    if len(shape) == rank and rank >= 1:
        lead = spec.shape[0]
        if isinstance(lead, int) and lead != 1:
            return _SINGLE, 1
        return _BATCH1, shape[0]
    return _SINGLE, 1


class _StackedBackend(_Backend):
    def __init__(self, columns: Mapping[str, _Column], specs: Sequence[InputSpec], label: str, origin: str | None):
        by_name = {s.name: s for s in specs}
        unknown = [k for k in columns if k not in by_name]
        if unknown:
            raise CalibrationError(
                f"{label}: unknown input{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)}; "
                f"the model's inputs are: {_listing(specs)} (arrays that are not inputs, such as labels, can be "
                "skipped with ignore)"
            )
        if not columns:
            raise CalibrationError(f"no samples in {label}: it holds no arrays")
        self.columns = dict(columns)
        self.modes = {k: _stack_mode(by_name[k], c.shape) for k, c in self.columns.items()}
        counts = {n for _, n in self.modes.values()}
        if len(counts) > 1:
            detail = ", ".join(f"'{k}' {n} (shape {self.columns[k].shape})" for k, (_, n) in self.modes.items())
            raise CalibrationError(f"{label}: the arrays hold different numbers of samples: {detail}")
        self.n = counts.pop()
        self.origin = origin
        kinds = {m for m, _ in self.modes.values()}
        stacked = kinds != {_SINGLE}
        self.description = f"{label} ({self.n} {'stacked ' if stacked else ''}sample{'s' if self.n != 1 else ''})"

    def count(self) -> int:
        return self.n

    def rows(self, start, stop):
        stop = self.n if stop is None else min(stop, self.n)
        if start >= stop:
            return
        readers = {}
        for k, (mode, _) in self.modes.items():
            col = self.columns[k]
            if mode == _SINGLE:
                readers[k] = iter([col.whole()])
            elif mode == _ROWS:
                readers[k] = col.read(start, stop)
            else:
                readers[k] = (row[np.newaxis] for row in col.read(start, stop))
        for i in range(start, stop):
            sample = {k: next(r) for k, r in readers.items()}
            yield i, sample, self.origin


# --------------------------------------------------------------------------------------------- images


@dataclass(frozen=True)
class ImagePreprocess:
    """How image files become one input tensor: ``x = (pixel * scale - mean) / std`` per channel.

    ``size`` is ``(height, width)`` (an int means square); None takes it from the model input's fixed
    spatial dims. ``resize`` "stretch" resizes to ``size`` directly, "center_crop" scales the shorter side
    to cover ``size`` and crops the centre. ``mean`` and ``std`` are per channel in the output
    ``channel_order`` (one value applies to every channel). ``input`` names the model input fed (default:
    the model's only input). An integer model input (e.g. uint8) takes raw pixels: scale 1, mean 0, std 1.
    """

    size: tuple[int, int] | None = None
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    scale: float = 1 / 255
    input: str | None = None
    grayscale: bool = False
    resize: Literal["stretch", "center_crop"] = "stretch"

    def __post_init__(self) -> None:
        size = self.size
        if size is not None:
            if isinstance(size, int):
                size = (size, size)
            size = tuple(size)
            if len(size) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in size):
                raise CalibrationError(f"image size must be (height, width) in positive pixels, got {self.size!r}")
            object.__setattr__(self, "size", (int(size[0]), int(size[1])))
        for name, allowed in (
            ("layout", ("NCHW", "NHWC")),
            ("channel_order", ("RGB", "BGR")),
            ("resize", ("stretch", "center_crop")),
        ):
            if getattr(self, name) not in allowed:
                raise CalibrationError(f"image {name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        channels = self.channels
        for name in ("mean", "std"):
            values = getattr(self, name)
            values = (values,) if isinstance(values, int | float) else tuple(float(v) for v in values)
            if channels == 1 and len(values) > 1 and len(set(values)) == 1:
                values = values[:1]  # grayscale with the default (0, 0, 0) / (1, 1, 1)
            if len(values) not in (1, channels):
                raise CalibrationError(f"image {name} needs 1 or {channels} values, got {len(values)}")
            object.__setattr__(self, name, values)
        if any(v == 0 for v in self.std):
            raise CalibrationError(f"image std must not be 0, got {self.std}")
        if not self.scale > 0:
            raise CalibrationError(f"image scale must be positive, got {self.scale}")

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    def describe(self) -> str:
        size = "model size" if self.size is None else f"{self.size[0]}x{self.size[1]}"
        return f"{size} {self.layout} {'gray' if self.grayscale else self.channel_order}"


def _import_pil():
    try:
        from PIL import Image
    except ImportError as exc:
        raise CalibrationError(
            "reading an image folder needs Pillow, which is not installed: pip install 'hwquant[images]'"
        ) from exc
    return Image


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


class _ImageLoader:
    """Checks the preprocessing against the model input once, then turns each file into a sample."""

    def __init__(self, pre: ImagePreprocess, specs: Sequence[InputSpec]):
        self.Image = _import_pil()
        if pre.input is not None:
            found = [s for s in specs if s.name == pre.input]
            if not found:
                raise CalibrationError(
                    f"image input '{pre.input}' is not a model input; the model's inputs are: {_listing(specs)}"
                )
            spec = found[0]
        elif len(specs) == 1:
            spec = specs[0]
        else:
            raise CalibrationError(
                f"the model has {len(specs)} inputs ({_listing(specs)}): name the image input (ImagePreprocess.input)"
            )
        label = f"image input '{spec.name}' {spec.shape_text()}"
        if spec.rank not in (3, 4):
            raise CalibrationError(f"{label}: an image input needs rank 4 (or 3 without a batch axis)")
        dims = spec.shape[-3:]
        c_axis, hw = (0, dims[1:]) if pre.layout == "NCHW" else (2, dims[:2])
        channel = dims[c_axis]
        if isinstance(channel, int) and channel != pre.channels:
            other = dims[2] if pre.layout == "NCHW" else dims[0]
            hint = ""
            if other == pre.channels:
                hint = f"; the model looks {'NHWC' if pre.layout == 'NCHW' else 'NCHW'}: set the layout accordingly"
            raise CalibrationError(
                f"{label}: has {channel} channels on the {pre.layout} channel axis but the preprocessing makes "
                f"{pre.channels} ({'grayscale' if pre.grayscale else pre.channel_order}){hint}"
            )
        size = pre.size
        if size is None:
            if not all(isinstance(d, int) for d in hw):
                raise CalibrationError(f"{label}: its height and width are not fixed: give the image size")
            size = (int(hw[0]), int(hw[1]))
        for d, v, what in zip(hw, size, ("height", "width"), strict=True):
            if isinstance(d, int) and d != v:
                raise CalibrationError(f"{label}: expects {what} {d} ({pre.layout}) but the image size gives {v}")
        if spec.dtype.kind in "iu" and not (pre.scale == 1 and set(pre.mean) == {0.0} and set(pre.std) == {1.0}):
            raise CalibrationError(
                f"{label}: has dtype {spec.dtype}, which takes raw pixels: use scale 1, mean 0 and std 1"
            )
        if spec.dtype.kind not in "iuf":
            raise CalibrationError(f"{label}: has dtype {spec.dtype}, which images cannot feed")
        self.pre, self.spec, self.size = pre, spec, size

    def __call__(self, path: Path) -> Sample:
        pre, (h, w) = self.pre, self.size
        Image = self.Image
        try:
            with Image.open(path) as im:
                im = im.convert("L" if pre.grayscale else "RGB")
                if pre.resize == "center_crop":
                    ratio = max(h / im.height, w / im.width)
                    rw, rh = max(w, round(im.width * ratio)), max(h, round(im.height * ratio))
                    im = im.resize((rw, rh), Image.Resampling.BILINEAR)
                    left, top = (rw - w) // 2, (rh - h) // 2
                    im = im.crop((left, top, left + w, top + h))
                elif im.size != (w, h):
                    im = im.resize((w, h), Image.Resampling.BILINEAR)
                pixels = np.asarray(im, dtype=np.float32)
        except Exception as exc:
            raise CalibrationError(f"cannot read image {path}: {exc}") from exc
        pixels = pixels[..., np.newaxis] if pixels.ndim == 2 else pixels
        if pre.channel_order == "BGR" and not pre.grayscale:
            pixels = pixels[..., ::-1]
        if self.spec.dtype.kind in "iu":
            arr = pixels.astype(self.spec.dtype)
        else:
            mean = np.asarray(pre.mean, dtype=np.float32)
            std = np.asarray(pre.std, dtype=np.float32)
            arr = ((pixels * np.float32(pre.scale) - mean) / std).astype(self.spec.dtype)
        if pre.layout == "NCHW":
            arr = arr.transpose(2, 0, 1)
        if self.spec.rank == 4:
            arr = arr[np.newaxis]
        return {self.spec.name: np.ascontiguousarray(arr)}


# --------------------------------------------------------------------------------------------- files


def _natural_key(text: str) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _sorted(paths: Iterable[Path], root: Path) -> list[Path]:
    return sorted(paths, key=lambda p: _natural_key(p.relative_to(root).as_posix()))


def _show_dir(path: Path) -> str:
    text = str(path)
    return text if text.endswith(os.sep) else text + os.sep


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _drop(sample: Mapping[str, Any], ignore: Collection[str]) -> Mapping[str, Any]:
    return {k: v for k, v in sample.items() if k not in ignore} if ignore else sample


def _load_npz(path: Path, ignore: Collection[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise ValueError("not an .npz archive")
            return {k: z[k] for k in z.files if k not in ignore}
    except Exception as exc:
        raise CalibrationError(f"cannot read {path}: {exc}") from exc


def _load_npy(path: Path, name: str) -> dict[str, np.ndarray]:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise CalibrationError(f"cannot read {path}: {exc}") from exc
    if not isinstance(arr, np.ndarray):
        raise CalibrationError(f"cannot read {path}: not a .npy array")
    return {name: arr}


def _load_array_file(path: Path, specs: Sequence[InputSpec], ignore: Collection[str]) -> dict[str, np.ndarray]:
    if path.suffix.lower() == ".npz":
        return _load_npz(path, ignore)
    return _load_npy(path, specs[0].name)


def _load_pb_set(folder: Path, specs: Sequence[InputSpec]) -> dict[str, np.ndarray]:
    files = _sorted((p for p in folder.glob("input_*.pb") if p.is_file()), folder)
    if not files:
        raise CalibrationError(f"no samples in {_show_dir(folder)}: it has no input_*.pb files")
    sample: dict[str, np.ndarray] = {}
    for position, f in enumerate(files):
        match = re.fullmatch(r"input_(\d+)\.pb", f.name)
        index = int(match.group(1)) if match else position
        try:
            tensor = onnx.TensorProto()
            tensor.ParseFromString(f.read_bytes())
            if tensor.data_type == onnx.TensorProto.UNDEFINED:
                raise ValueError("not a serialized TensorProto (no data type)")
            arr = numpy_helper.to_array(tensor, base_dir=str(folder))
        except Exception as exc:
            raise CalibrationError(f"cannot read {f}: {exc}") from exc
        name = tensor.name
        if not name:
            if index >= len(specs):
                raise CalibrationError(
                    f"{f}: the tensor has no name and its index {index} is past the model's "
                    f"{len(specs)} inputs ({_listing(specs)})"
                )
            name = specs[index].name
        if name in sample:
            raise CalibrationError(f"{f}: input '{name}' is given twice in {_show_dir(folder)}")
        sample[name] = arr
    return sample


def _open_path(
    path: Path, specs: Sequence[InputSpec], image: ImagePreprocess | None, ignore: Collection[str]
) -> _Backend:
    if not path.exists():
        raise CalibrationError(f"calibration data not found: {path} (no such file or directory)")
    if path.is_file():
        return _open_file(path, specs, image, ignore)
    shown = _show_dir(path)
    if image is not None:
        files = _sorted((p for p in path.rglob("*") if _is_image(p) and p.is_file()), path)
        if files:
            loader = _ImageLoader(image, specs)
            return _FilesBackend(files, loader, f"{shown} ({_plural(len(files), 'image')}, {image.describe()})")
    sets = _sorted((p for p in path.glob("test_data_set_*") if p.is_dir()), path)
    if sets:
        return _FilesBackend(
            sets, lambda d: _load_pb_set(d, specs), f"{shown} ({_plural(len(sets), 'test_data_set_* folder')})"
        )
    if any(path.glob("input_*.pb")):
        return _FilesBackend([path], lambda d: _load_pb_set(d, specs), f"{shown} (1 input_*.pb set)")
    arrays = _sorted(
        (p for p in path.iterdir() if p.suffix.lower() in (".npz", ".npy") and p.is_file() and p.name[0] != "."), path
    )
    if arrays:
        kinds = {p.suffix.lower() for p in arrays}
        if ".npy" in kinds and len(specs) > 1:
            npy = next(p for p in arrays if p.suffix.lower() == ".npy")
            raise CalibrationError(
                f"{npy}: a .npy file holds one array but the model has {len(specs)} inputs ({_listing(specs)}); "
                "save each sample as an .npz with one array per input name"
            )
        counts = " and ".join(
            f"{sum(p.suffix.lower() == k for p in arrays)} {k}" for k in (".npz", ".npy") if k in kinds
        )
        return _FilesBackend(
            arrays,
            lambda p: _load_array_file(p, specs, ignore),
            f"{shown} ({counts} file{'s' if len(arrays) > 1 else ''})",
        )
    images = [p for p in path.rglob("*") if _is_image(p)]
    if images:
        raise CalibrationError(
            f"{shown} holds {_plural(len(images), 'image')} but no image preprocessing was given "
            "(size, layout, channel order, mean/std)"
        )
    raise CalibrationError(
        f"no samples in {shown}: expected .npz/.npy files, test_data_set_*/input_*.pb folders, "
        "or images with image preprocessing"
    )


def _open_file(path: Path, specs: Sequence[InputSpec], image: ImagePreprocess | None, ignore) -> _Backend:
    suffix = path.suffix.lower()
    if image is not None and _is_image(path):
        return _FilesBackend([path], _ImageLoader(image, specs), f"{path} (1 image, {image.describe()})")
    if suffix == ".npz":
        try:
            with zipfile.ZipFile(path) as zf:
                members = [m for m in zf.namelist() if m.endswith(".npy")]
        except Exception as exc:
            raise CalibrationError(f"cannot read {path}: {exc}") from exc
        columns = {}
        for m in members:
            key = m.removesuffix(".npy")
            if key not in ignore:
                columns[key] = _NpzColumn(path, m, f"{path} (array '{key}')")
        return _StackedBackend(columns, specs, str(path), str(path))
    if suffix == ".npy":
        if len(specs) > 1:
            raise CalibrationError(
                f"{path}: a .npy file holds one array but the model has {len(specs)} inputs ({_listing(specs)}); "
                "use an .npz with one array per input name"
            )
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise CalibrationError(f"cannot read {path}: {exc}") from exc
        return _StackedBackend({specs[0].name: _MemColumn(arr)}, specs, str(path), str(path))
    if _is_image(path):
        raise CalibrationError(f"{path} is an image but no image preprocessing was given")
    raise CalibrationError(
        f"unsupported calibration data file {path}: expected .npz or .npy, a directory of them, "
        "a directory of test_data_set_*/input_*.pb, or an image folder"
    )


# --------------------------------------------------------------------------------------------- SampleSource


class SampleSource:
    """A re-iterable stream of validated samples (see :func:`open_samples`).

    File sources never hold all samples in memory. ``count`` is None when the length is unknown (an
    iterable without ``len()``); ``len()`` then raises TypeError. ``split`` and ``take`` return views that
    share the underlying data; sample indices in error messages always refer to the original source.
    """

    def __init__(
        self,
        backend: _Backend,
        specs: Sequence[InputSpec],
        *,
        start: int = 0,
        stop: int | None = None,
        ignore: Collection[str] = frozenset(),
    ):
        self._backend = backend
        self._specs = list(specs)
        self._start = start
        self._stop = stop
        self._ignore = frozenset(ignore)

    def _view(self, start: int, stop: int | None) -> SampleSource:
        return SampleSource(self._backend, self._specs, start=start, stop=stop, ignore=self._ignore)

    @property
    def specs(self) -> list[InputSpec]:
        """The model inputs each sample is checked against."""
        return list(self._specs)

    @property
    def count(self) -> int | None:
        """How many samples this source yields, or None when unknown."""
        total = self._backend.count()
        if total is None:
            return None
        stop = total if self._stop is None else min(self._stop, total)
        return max(0, stop - self._start)

    @property
    def is_random(self) -> bool:
        """True for random data (``random=N``): results computed from it are not meaningful."""
        return isinstance(self._backend, _RandomBackend)

    @property
    def description(self) -> str:
        """What the data is, for reports: e.g. ``calib/ (64 .npz files), samples 0-55``."""
        base = self._backend.description
        if self._start == 0 and self._stop is None:
            return base
        n = self.count
        if n is None:
            return f"{base}, first {self._stop} samples at most"
        if n == 0:
            return f"{base}, no samples"
        if n == 1:
            return f"{base}, sample {self._start}"
        return f"{base}, samples {self._start}-{self._start + n - 1}"

    def __iter__(self) -> Iterator[Sample]:
        yielded = 0
        for index, raw, origin in self._backend.rows(self._start, self._stop):
            if self._ignore and isinstance(raw, Mapping):
                raw = _drop(raw, self._ignore)
            yield validate_sample(raw, self._specs, index=index, origin=origin)
            yielded += 1
        if yielded == 0 and self._start == 0:
            raise CalibrationError(f"no samples in {self._backend.description}")

    def __len__(self) -> int:
        n = self.count
        if n is None:
            raise TypeError(f"{self.description} has no known length (its count is None)")
        return n

    def __bool__(self) -> bool:
        return self.count != 0

    def __repr__(self) -> str:
        return f"<SampleSource {self.description}>"

    def split(self, holdout: int) -> tuple[SampleSource, SampleSource]:
        """``(calibration, evaluation)``: the last ``holdout`` samples are held back for evaluation.

        The two parts are disjoint and at least one sample stays for calibration. An iterable of unknown
        length is counted first (one pass); a one-shot iterator cannot be split.
        """
        if isinstance(holdout, bool) or not isinstance(holdout, int | np.integer) or holdout < 0:
            raise CalibrationError(f"holdout must be a non-negative number of samples, got {holdout!r}")
        if self._backend.one_shot:
            raise CalibrationError(self._backend._one_shot_message("be split"))
        n = self.count
        if n is None:
            self._backend.measure()
            n = self.count
        if holdout >= n:
            raise CalibrationError(
                f"cannot hold back {_plural(holdout, 'sample')} for evaluation from {self.description}: "
                f"it has only {n}, and at least one must remain for calibration"
            )
        cut = self._start + n - holdout
        return self._view(self._start, cut), self._view(cut, self._start + n)

    def take(self, n: int) -> SampleSource:
        """The first ``n`` samples (all of them when there are fewer)."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise CalibrationError(f"the number of samples must be a positive integer, got {n!r}")
        stop = self._start + int(n)
        if self._stop is not None:
            stop = min(stop, self._stop)
        return self._view(self._start, stop)

    def as_reader(self):
        """An onnxruntime ``CalibrationDataReader`` over these samples (with ``rewind``, ``len`` when known
        and ``set_range``, as ``quantize_static`` uses with ``CalibStridedMinMax``)."""
        from onnxruntime.quantization import CalibrationDataReader

        source = self

        class _Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it: Iterator[Sample] | None = None

            def get_next(self) -> Sample | None:
                if self._it is None:
                    self._it = iter(source)
                return next(self._it, None)

            def rewind(self) -> None:
                self._it = None

            def set_range(self, start_index: int, end_index: int) -> None:
                part = source._view(source._start + start_index, source._start + end_index)
                self._it = iter(part)

            def __len__(self) -> int:
                return len(source)

        return _Reader()


# --------------------------------------------------------------------------------------------- open_samples


def open_samples(
    source: Any,
    model: onnx.ModelProto | str | os.PathLike | Sequence[InputSpec],
    *,
    image: ImagePreprocess | None = None,
    random: int | None = None,
    seed: int = 0,
    dims: Mapping[str, int] | None = None,
    ignore: Collection[str] = (),
) -> SampleSource:
    """Open calibration (or evaluation) data for ``model`` (a ModelProto, a path to one, or its input specs).

    ``source`` is one of the kinds listed in the module docstring, or None with ``random=N`` for N random
    samples (float inputs: standard normal; integer inputs: 0 or 1; symbolic dims: ``dims[name]``, else 1
    for the leading axis and 16 elsewhere), which warns with :class:`RandomDataWarning`. ``image`` is the
    preprocessing for an image folder. ``ignore`` names arrays to skip in dicts and ``.npz`` files (e.g. a
    ``label`` array stored beside the inputs).

    The first sample of a source of known length is checked right away, so most mistakes surface here;
    the others are checked as they are read.
    """
    specs = _specs_of(model)
    ignore = frozenset(ignore)
    if random is not None:
        if source is not None:
            raise CalibrationError("pass either a calibration data source or random=N, not both")
        if isinstance(random, bool) or not isinstance(random, int | np.integer) or random < 1:
            raise CalibrationError(f"random must be a positive number of samples, got {random!r}")
        backend = _RandomBackend(specs, int(random), seed, dims or {})
        warnings.warn(
            f"calibrating on {_plural(int(random), 'random sample')}: the ranges come from noise, not real inputs, "
            "so the quantized model's accuracy is not meaningful; pass real calibration data",
            RandomDataWarning,
            stacklevel=2,
        )
        return SampleSource(backend, specs)
    if dims:
        raise CalibrationError("dims only applies to random data (random=N)")
    if source is None:
        raise CalibrationError(
            "no calibration data: pass samples (a list of {input_name: array} dicts, a reader, a file or a folder), "
            "or random=N to calibrate on random data (not meaningful)"
        )
    if isinstance(source, SampleSource):
        return SampleSource(
            source._backend, specs, start=source._start, stop=source._stop, ignore=ignore | source._ignore
        )
    backend = _backend_for(source, specs, image, ignore)
    result = SampleSource(backend, specs, ignore=ignore)
    n = result.count
    if n == 0:
        raise CalibrationError(f"no samples in {backend.description}")
    if n is not None and not backend.one_shot:
        first = iter(result.take(1))  # fail early on the common mistakes
        next(first)
        first.close()
    return result


def _specs_of(model: Any) -> list[InputSpec]:
    if isinstance(model, onnx.ModelProto):
        return input_specs(model)
    if isinstance(model, str | os.PathLike):
        try:
            loaded = onnx.load(os.fspath(model), load_external_data=False)
        except Exception as exc:
            raise ModelError(f"cannot read model {model}: {exc}") from exc
        return input_specs(loaded)
    specs = list(model)
    if not specs or not all(isinstance(s, InputSpec) for s in specs):
        raise TypeError("model must be an onnx.ModelProto, a path to one, or a list of InputSpec")
    return specs


def _backend_for(source: Any, specs: list[InputSpec], image: ImagePreprocess | None, ignore) -> _Backend:
    if isinstance(source, str | os.PathLike):
        return _open_path(Path(source), specs, image, ignore)
    if isinstance(source, bytes | bytearray):
        raise CalibrationError("calibration data given as bytes: pass a path, or samples as {input_name: array}")
    if callable(getattr(source, "get_next", None)):
        return _ReaderBackend(source)
    if isinstance(source, np.ndarray):
        if len(specs) > 1:
            raise CalibrationError(
                f"a single array cannot feed a model with {len(specs)} inputs ({_listing(specs)}): "
                "pass a dict {input_name: array}"
            )
        return _StackedBackend({specs[0].name: _MemColumn(source)}, specs, "array", None)
    if isinstance(source, Mapping):
        columns = {}
        for k, v in source.items():
            if k in ignore:
                continue
            try:
                columns[k] = _MemColumn(np.asarray(v))
            except Exception as exc:
                raise CalibrationError(f"dict entry '{k}': not convertible to an array ({exc})") from exc
        return _StackedBackend(columns, specs, f"dict of {_plural(len(columns), 'array')}", None)
    if isinstance(source, Sequence):
        return _SequenceBackend(source, f"{type(source).__name__} of {_plural(len(source), 'sample')}")
    if isinstance(source, Iterable):
        name = type(source).__name__
        try:
            length = len(source)
        except TypeError:
            length = None
        if iter(source) is source:
            return _IterableBackend(lambda: source, f"{name} (one-shot)", one_shot=True, length=length)
        return _IterableBackend(lambda: source, name, one_shot=False, length=length)
    if callable(source):
        name = getattr(source, "__name__", type(source).__name__)
        return _IterableBackend(source, f"{name}()", one_shot=False)
    raise CalibrationError(
        f"unsupported calibration data of type {type(source).__name__}: expected a list or iterable of "
        "{input_name: array} dicts, a CalibrationDataReader, a dict of arrays, or a path"
    )


def extra_arrays(data: Any, model: str | os.PathLike | onnx.ModelProto) -> list[str]:
    """Arrays of a stacked ``.npz`` that are not inputs of ``model`` (e.g. ``label``), when every input is
    there.

    Those are safe to skip. When an input is missing nothing is skipped, so the error names the
    unexpected array instead. Anything unreadable gives ``[]``: opening the data or model reports it.
    """
    if not isinstance(data, (str, os.PathLike)) or Path(data).suffix.lower() != ".npz" or not Path(data).is_file():
        return []
    try:
        with zipfile.ZipFile(data) as zf:
            keys = [m.removesuffix(".npy") for m in zf.namelist() if m.endswith(".npy")]
        if not isinstance(model, onnx.ModelProto):
            model = onnx.load(os.fspath(model), load_external_data=False)
        inputs = {s.name for s in input_specs(model)}
    except Exception:
        return []
    if not inputs <= set(keys):
        return []
    return [k for k in keys if k not in inputs]
