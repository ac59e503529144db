"""The ``hwquant`` command: parses, calls the public API, prints."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

import hwquant
from hwquant.errors import HwquantError

app = typer.Typer(
    name="hwquant",
    help="Quantize ONNX models for a named hardware target.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
profiles_app = typer.Typer(help="List, show and compare hardware profiles.", no_args_is_help=True)
app.add_typer(profiles_app, name="profiles")
out = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"hwquant {hwquant.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Quantize ONNX models for a named hardware target."""


@profiles_app.command("list")
def profiles_list(json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the registered profiles with their source and plugin.

    Example: hwquant profiles list
    """
    infos = hwquant.list_profiles()
    if json_out:
        rows = [{"name": i.name, "description": i.description, "source": i.source, "plugin": i.plugin} for i in infos]
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "description", "source", "plugin")
    for i in infos:
        table.add_row(i.name, i.description, i.source, i.plugin)
    out.print(table)


def main() -> None:
    """Console-script entry point: one readable line per error, exit 2 for unusable input."""
    try:
        app()
    except HwquantError as exc:
        err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
        raise SystemExit(2) from None
