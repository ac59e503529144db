"""``hwquant quantize INPUT OUTPUT --profile NAME``: calibrate, quantize for the profile, verify, summarise."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from hwquant.cli import render
from hwquant.cli.render import EXIT_FAILED, out
from hwquant.errors import HwquantError, VerificationError

if TYPE_CHECKING:
    from hwquant.engine.result import QuantResult

IMAGE_PANEL = "Image preprocessing (for an image folder given to --calibration/--eval)"


class Method(StrEnum):
    minmax = "minmax"
    entropy = "entropy"
    percentile = "percentile"


class Format(StrEnum):
    qdq = "qdq"
    qoperator = "qoperator"


class Layout(StrEnum):
    NCHW = "NCHW"
    NHWC = "NHWC"


class ChannelOrder(StrEnum):
    RGB = "RGB"
    BGR = "BGR"


class Resize(StrEnum):
    stretch = "stretch"
    center_crop = "center_crop"


def _floats(text: str, flag: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise HwquantError(f"{flag} takes comma-separated numbers like 0.485,0.456,0.406, not '{text}'") from None


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(" ", "").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise HwquantError(f"--image-size takes HEIGHTxWIDTH (e.g. 224x224) or one number, not '{text}'")
    return values[0], values[1]


def image_preprocess(
    size: str | None,
    layout: Layout | None,
    channel_order: ChannelOrder | None,
    mean: str | None,
    std: str | None,
    pixel_scale: float | None,
    grayscale: bool,
    resize: Resize | None,
    image_input: str | None,
):
    """An ImagePreprocess from the image flags, or None when none was given."""
    given = [size, layout, channel_order, mean, std, pixel_scale, resize, image_input]
    if not grayscale and all(v is None for v in given):
        return None
    from hwquant.engine.data import ImagePreprocess

    kwargs: dict[str, Any] = {"grayscale": grayscale}
    if size is not None:
        kwargs["size"] = _size(size)
    if layout is not None:
        kwargs["layout"] = layout.value
    if channel_order is not None:
        kwargs["channel_order"] = channel_order.value
    if mean is not None:
        kwargs["mean"] = _floats(mean, "--mean")
    if std is not None:
        kwargs["std"] = _floats(std, "--std")
    if pixel_scale is not None:
        kwargs["scale"] = pixel_scale
    if resize is not None:
        kwargs["resize"] = resize.value
    if image_input is not None:
        kwargs["input"] = image_input
    return ImagePreprocess(**kwargs)


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder, so it is whole or absent."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _check_paths(input: Path, output: Path, report: Path | None, cache: Path | None) -> None:
    if not input.exists():
        raise HwquantError(f"{input}: no such model file")
    if input.is_dir():
        raise HwquantError(f"{input}: is a folder, not an ONNX model file")
    for flag, path in (("OUTPUT", output), ("--report", report), ("--calibration-cache", cache)):
        if path is None:
            continue
        if path.is_dir():
            raise HwquantError(f"{flag} {path}: is a folder; give a file name")
        if not path.parent.is_dir():
            raise HwquantError(f"{flag} {path}: folder {path.parent} does not exist")
        if path.resolve() == input.resolve():
            raise HwquantError(f"{flag} {path}: is the input model; hwquant never writes over its input")
    if report is not None and report.resolve() == output.resolve():
        raise HwquantError(f"--report {report}: is also the OUTPUT model path")


def quantize_command(
    input: Annotated[Path, typer.Argument(metavar="INPUT", help="Float ONNX model.", show_default=False)],
    output: Annotated[
        Path, typer.Argument(metavar="OUTPUT", help="Where to write the quantized model.", show_default=False)
    ],
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            "-p",
            metavar="NAME|PATH",
            help="Profile name or profile file (.toml/.json).",
            show_default=False,
        ),
    ],
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            "-c",
            metavar="PATH",
            help="Calibration data: .npz/.npy, a folder of them, onnxruntime `test_data_set_*` folders, "
            "an image folder (with the image options), or a saved calibration.",
            show_default=False,
        ),
    ] = None,
    random: Annotated[
        int | None,
        typer.Option(
            "--random",
            metavar="N",
            min=1,
            help="Calibrate on N random samples (accuracy not meaningful).",
            show_default=False,
        ),
    ] = None,
    samples: Annotated[
        int | None,
        typer.Option(
            "--samples", "-n", metavar="N", min=1, help="Use at most N calibration samples.", show_default=False
        ),
    ] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option(
            "--eval",
            metavar="PATH",
            help="Evaluation data (same kinds as --calibration); default: a held-back slice of the calibration data.",
            show_default=False,
        ),
    ] = None,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the accuracy evaluation.")] = False,
    method: Annotated[Method, typer.Option("--method", help="Calibration method.")] = Method.minmax,
    fmt: Annotated[Format, typer.Option("--format", help="QDQ nodes or QOperator (QLinear*) ops.")] = Format.qdq,
    calibration_cache: Annotated[
        Path | None,
        typer.Option(
            "--calibration-cache",
            metavar="FILE",
            help="Reuse the calibration saved in FILE, or save one there when FILE does not exist.",
            show_default=False,
        ),
    ] = None,
    report: Annotated[
        Path | None,
        typer.Option(
            "--report",
            metavar="FILE.json",
            help="Write the full result as JSON (also when verification fails); read it with `hwquant explain`.",
            show_default=False,
        ),
    ] = None,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Fail (exit 1, nothing written) when the output breaks the profile or quantizes no compute op.",
        ),
    ] = True,
    exclude_node: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-node", metavar="NAME", help="Keep this node in float (repeatable).", show_default=False
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON instead of the summary.")] = False,
    image_size: Annotated[
        str | None,
        typer.Option(
            "--image-size",
            metavar="HxW",
            help="Resize images to HxW (e.g. 224x224); default: the model input's size.",
            rich_help_panel=IMAGE_PANEL,
            show_default=False,
        ),
    ] = None,
    layout: Annotated[
        Layout | None,
        typer.Option("--layout", help="Tensor layout (default NCHW).", rich_help_panel=IMAGE_PANEL, show_default=False),
    ] = None,
    channel_order: Annotated[
        ChannelOrder | None,
        typer.Option(
            "--channel-order", help="Channel order (default RGB).", rich_help_panel=IMAGE_PANEL, show_default=False
        ),
    ] = None,
    mean: Annotated[
        str | None,
        typer.Option(
            "--mean",
            metavar="M[,M,M]",
            help="Per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406 (default 0).",
            rich_help_panel=IMAGE_PANEL,
            show_default=False,
        ),
    ] = None,
    std: Annotated[
        str | None,
        typer.Option(
            "--std",
            metavar="S[,S,S]",
            help="Per-channel std divided by, e.g. 0.229,0.224,0.225 (default 1).",
            rich_help_panel=IMAGE_PANEL,
            show_default=False,
        ),
    ] = None,
    pixel_scale: Annotated[
        float | None,
        typer.Option(
            "--pixel-scale",
            metavar="F",
            help="Pixels are multiplied by F first (default 1/255).",
            rich_help_panel=IMAGE_PANEL,
            show_default=False,
        ),
    ] = None,
    grayscale: Annotated[
        bool, typer.Option("--grayscale", help="Read images as one channel.", rich_help_panel=IMAGE_PANEL)
    ] = False,
    resize: Annotated[
        Resize | None,
        typer.Option(
            "--resize",
            help="Stretch to size, or cover and crop the centre.",
            rich_help_panel=IMAGE_PANEL,
            show_default=False,
        ),
    ] = None,
    image_input: Annotated[
        str | None,
        typer.Option(
            "--image-input",
            metavar="NAME",
            help="Model input the images feed (default: the only input).",
            rich_help_panel=IMAGE_PANEL,
            show_default=False,
        ),
    ] = None,
) -> None:
    """Quantize INPUT for a hardware profile and write the verified model to OUTPUT.

    Calibrates (with a progress bar), lets the profile's policies choose every scale and zero point,
    checks the output against the profile, and measures its accuracy against the float model. Then
    prints a summary: profile, ops quantized and why the rest stayed float, check result, SQNR and
    cosine per output, model size before/after, time.

    Nothing is written at OUTPUT when the command fails, and INPUT is never modified. Exit code 1
    means the output failed verification (the `--report` is still written).

    Examples:

        hwquant quantize model.onnx model.int8.onnx --profile restricted-u8 --calibration calib.npz
        hwquant quantize model.onnx out.onnx -p my-npu.toml -c images/ --image-size 224x224 \\
            --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
        hwquant quantize model.onnx out.onnx -p tensorrt-int8 --random 32 --report report.json
    """
    image = image_preprocess(image_size, layout, channel_order, mean, std, pixel_scale, grayscale, resize, image_input)
    _check_paths(input, output, report, calibration_cache)
    cached = calibration_cache is not None and calibration_cache.is_file()
    if calibration is not None and random is not None:
        raise HwquantError("give either --calibration PATH or --random N, not both")
    if no_eval and eval_data is not None:
        raise HwquantError("give either --eval PATH or --no-eval, not both")
    if calibration is None and random is None and not cached:
        raise HwquantError(
            "no calibration data: give --calibration PATH (.npz, a folder of .npy/.npz, test_data_set_* folders, "
            "or an image folder with --image-size), or --random N to calibrate on random data (accuracy not meaningful)"
        )
    if cached:
        render.note(f"reusing the calibration saved in {calibration_cache}")

    import hwquant

    prof = hwquant.resolve(profile)  # an unknown name or a broken file fails before any data is read
    calib_data = calibration if not cached else None
    eval_source: Any = False if no_eval else eval_data
    with render.progress_bar("calibrating") as progress:
        try:
            result = hwquant.quantize(
                input,
                output,
                prof,
                calib_data,
                method=method.value,
                samples=samples,
                eval_data=eval_source,
                format=fmt.value,
                calibration_cache=calibration_cache,
                verify=verify,
                image=image,
                random_samples=random,
                nodes_to_exclude=exclude_node or (),
                progress=progress,
            )
        except VerificationError as exc:
            failed = exc
            result = exc.result
        else:
            failed = None
    if result is not None and report is not None:
        write_atomic(report, result.to_json())
    if json_out and result is not None:
        render.print_json(result.to_json())
    elif result is not None and not render.state.quiet:
        print_summary(result, profile, input, output if failed is None else None)
    if failed is not None:
        render.error(str(failed))
        if report is not None and result is not None:
            render.err.print(Text(f"The full report is in {report} (read it with: hwquant explain {report})"))
        raise typer.Exit(EXIT_FAILED)
    if report is not None:
        render.note(f"report written to {report}")


def _file_size(path: Path | None) -> int | None:
    if path is None or not path.is_file():
        return None
    data = path.with_name(path.name + ".data")
    return path.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def print_summary(result: QuantResult, profile: str, input: Path, output: Path | None) -> None:
    """The human summary of a quantize run (rich panel and tables on stdout)."""
    from hwquant.plugins.registry import is_profile_path, registry

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    if is_profile_path(profile):
        where = f" (file {profile})"
    else:
        where = f" (plugin {registry().profile_info(profile).plugin})"
    grid.add_row("profile", f"{result.profile}{where}")
    n_cal, n_eval = result.samples.get("calibration", 0), result.samples.get("evaluation", 0)
    grid.add_row(
        "format",
        f"{result.format.upper() if result.format == 'qdq' else 'QOperator'}, {result.method} calibration on "
        f"{n_cal} sample{'s' if n_cal != 1 else ''}, evaluated on {n_eval}",
    )
    cov = result.coverage
    per_type = ", ".join(f"{t} {q}/{n}" for t, (q, n) in sorted(cov.by_op_type.items()))
    why = ""
    if cov.float_ops:
        reasons: dict[str, int] = {}
        for reason in cov.float_ops.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        why = "; float: " + "; ".join(f"{n} {r}" for r, n in reasons.items())
    ops = Text(f"{cov.quantized} / {cov.total} compute ops quantized", style="green" if cov.quantized else "red")
    ops.append(f" ({per_type}){why}" if per_type else why, style="")
    grid.add_row("ops", ops)
    if result.check is not None:
        grid.add_row("check", Text(result.check.summary(), style="green" if result.check.ok else "red"))
    before = _file_size(input) or result.sizes.get("input")
    after = _file_size(output) or result.sizes.get("output")
    ratio = f" ({after / before:.0%} of the input)" if before and after else ""
    grid.add_row("size", f"{render.human_size(before)} -> {render.human_size(after)}{ratio}")
    t = result.timings
    parts = ", ".join(f"{k} {render.seconds(t[k])}" for k in ("prepare", "calibrate", "quantize", "verify") if k in t)
    total = t.get("total", sum(t.get(k, 0.0) for k in ("prepare", "calibrate", "quantize", "verify")))
    grid.add_row("time", f"{render.seconds(total)} ({parts})")
    grid.add_row("output", str(output) if output else Text("not written", style="red"))

    parts_out: list[Any] = [grid]
    if result.accuracy:
        acc = Table("output", "SQNR (dB)", "cosine", "max abs error", "top-1 agreement", title_justify="left")
        for a in result.accuracy:
            top1 = "-" if a.top1_agreement is None else f"{a.top1_agreement:.1%}"
            acc.add_row(a.output, render.num(a.sqnr_db, 4), f"{a.cosine:.5f}", render.num(a.max_abs_error, 3), top1)
        parts_out.append(acc)
    elif n_eval == 0:
        parts_out.append(Text("accuracy: not measured (no evaluation data)", style="dim"))
    if cov.float_ops and render.state.verbose:
        kept = Table("kept in float", "why", title_justify="left")
        for node, reason in cov.float_ops.items():
            kept.add_row(node, reason)
        parts_out.append(kept)
    title = f"hwquant quantize: {input.name} for {result.profile}"
    out.print(Panel(Group(*parts_out), title=title, title_align="left", expand=False))
    if result.check is not None and not result.check.ok:
        out.print(result.check.table())
    if render.state.verbose:
        for line in result.notes:
            render.detail(f"note: {line}")
