"""``hwquant compare FLOAT_MODEL QUANT_MODEL --data PATH``: per-output accuracy of a quantized model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from hwquant.cli import render
from hwquant.cli.render import EXIT_FAILED, out


def compare_command(
    float_model: Annotated[
        Path, typer.Argument(metavar="FLOAT_MODEL", help="The float ONNX model.", show_default=False)
    ],
    quant_model: Annotated[
        Path, typer.Argument(metavar="QUANT_MODEL", help="The quantized ONNX model.", show_default=False)
    ],
    data: Annotated[
        Path,
        typer.Option(
            "--data",
            "-d",
            metavar="PATH",
            help="Evaluation data: .npz/.npy, a folder of them, or onnxruntime `test_data_set_*` folders. "
            "Arrays of an .npz that are not model inputs (labels) are skipped.",
            show_default=False,
        ),
    ],
    samples: Annotated[
        int | None,
        typer.Option("--samples", "-n", metavar="N", min=1, help="Use at most N samples.", show_default=False),
    ] = None,
    min_sqnr: Annotated[
        float | None,
        typer.Option(
            "--min-sqnr",
            metavar="DB",
            help="Exit 1 when an output's SQNR is below DB decibels (for CI).",
            show_default=False,
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON.")] = False,
) -> None:
    """Compare a quantized model's outputs with the float model's on the same data.

    Per output: SQNR (signal-to-quantization-noise ratio, dB; higher is better), cosine similarity,
    max absolute error, and top-1 agreement for classifier-shaped outputs (`[N, classes]`).

    Example:

        hwquant compare model.onnx model.int8.onnx --data eval.npz
    """
    import hwquant

    result = hwquant.compare(float_model, quant_model, data, samples=samples)
    below = [o.output for o in result.outputs if min_sqnr is not None and not o.sqnr_db >= min_sqnr]
    if json_out:
        render.print_json(result.to_json())
    else:
        table = Table("output", "SQNR (dB)", "cosine", "max abs error", "top-1 agreement")
        for o in result.outputs:
            top1 = "-" if o.top1_agreement is None else f"{o.top1_agreement:.1%}"
            sqnr = Text(render.num(o.sqnr_db, 4), style="red" if o.output in below else "")
            table.add_row(o.output, sqnr, f"{o.cosine:.5f}", render.num(o.max_abs_error, 3), top1)
        if not render.state.quiet:
            out.print(
                f"{quant_model} against {float_model} on {result.samples} samples ({result.data})", soft_wrap=True
            )
        out.print(table)
        if result.ignored:
            render.note(f"skipped arrays that are not model inputs: {', '.join(result.ignored)}")
    if below:
        worst = min(o.sqnr_db for o in result.outputs)
        shown = "inf" if math.isinf(worst) else f"{worst:.2f}"
        render.error(f"SQNR below {min_sqnr} dB for {', '.join(below)} (lowest {shown} dB)")
        raise typer.Exit(EXIT_FAILED)
