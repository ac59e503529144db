"""``hwquant check MODEL --profile NAME [--json]``: does a quantized model obey a target's rules?"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def check_command(
    model: Annotated[
        Path, typer.Argument(metavar="MODEL", help="Quantized ONNX model (QDQ or QOperator).", show_default=False)
    ],
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Profile name or profile file (.toml/.json).", show_default=False)
    ],
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON (keys in docs/check.md).")] = False,
) -> None:
    """Check a quantized ONNX model against a hardware profile and print the findings.

    Exit code 0 when no finding is an error, 1 when one is, 2 on unusable input (bad file, unknown profile).

    Example: hwquant check model.qdq.onnx --profile tensorrt-int8
    """
    from hwquant.checker import check  # onnx loads only for the commands that need it

    report = check(model, profile)  # errors reach main(): one line, exit 2, traceback with --debug
    if json_out:
        typer.echo(report.to_json())
    else:
        console = Console()
        if not console.is_terminal and not os.environ.get("COLUMNS"):
            console = Console(width=160)  # logs and pipes: wide enough that tensor names do not fold
        report.print(console)
    raise typer.Exit(0 if report.ok else 1)
