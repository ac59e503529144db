"""The ``hwquant`` command: parses, calls the public API, prints.

The root command holds the global flags (``--quiet``, ``--verbose``, ``--debug``, ``--version``); each
command lives in its own module. :func:`main` turns hwquant's errors into one or two readable lines
and an exit code: 0 success, 1 the model fails its profile or verification, 2 bad usage or unusable
input. ``--debug`` (or ``HWQUANT_DEBUG=1``) shows the traceback as well.
"""

from __future__ import annotations

import sys
import traceback
import warnings
from typing import Annotated

import typer

import hwquant
from hwquant.cli import render
from hwquant.cli.check_cmd import check_command
from hwquant.cli.compare_cmd import compare_command
from hwquant.cli.explain_cmd import explain_command
from hwquant.cli.plugins_cmd import plugins_command
from hwquant.cli.profiles_cmd import profiles_app
from hwquant.cli.quantize_cmd import quantize_command
from hwquant.cli.render import EXIT_FAILED, EXIT_USAGE
from hwquant.errors import HwquantError, VerificationError

app = typer.Typer(
    name="hwquant",
    epilog="Exit codes: 0 success, 1 the model fails its profile or verification, 2 bad usage or unusable input.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        render.out.print(f"hwquant {hwquant.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only results, warnings and errors (no progress or notes).")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print more detail (full texts, every op).")] = False,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="HWQUANT_DEBUG", help="Show the traceback of errors.")
    ] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Quantize ONNX models for a named hardware target.

    Global options go before the command: `hwquant --verbose quantize`, not `hwquant quantize --verbose`.

    Examples:

        hwquant profiles list
        hwquant quantize model.onnx model.int8.onnx --profile restricted-u8 --calibration calib.npz
        hwquant check model.int8.onnx --profile restricted-u8
        hwquant compare model.onnx model.int8.onnx --data eval.npz
    """
    if quiet and verbose:
        raise typer.BadParameter("--quiet and --verbose contradict each other")
    render.state.quiet = quiet
    render.state.verbose = verbose
    render.state.debug = debug


app.command("quantize")(quantize_command)
app.command("check")(check_command)
app.command("compare")(compare_command)
app.command("explain")(explain_command)
app.add_typer(profiles_app, name="profiles")
app.command("plugins")(plugins_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: readable errors and the documented exit codes."""
    warnings.showwarning = render.show_warning
    try:
        app(args=argv, prog_name="hwquant")
    except SystemExit:
        raise
    except KeyboardInterrupt:
        render.error("interrupted")
        raise SystemExit(130) from None
    except VerificationError as exc:
        _fail(exc, EXIT_FAILED, _check_hint(exc))
    except HwquantError as exc:
        _fail(exc, EXIT_USAGE)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        _fail(exc, EXIT_USAGE, message=f"{where}{exc.strerror or exc}")
    except Exception as exc:
        _fail(
            exc,
            EXIT_USAGE,
            "This may be a bug in hwquant; run with --debug for the traceback and report it.",
            message=f"unexpected {type(exc).__name__}: {exc}",
        )


def _check_hint(exc: VerificationError) -> str | None:
    check = getattr(exc.result, "check", None)
    return None if check is None else check.summary()


def _fail(exc: BaseException, code: int, hint: str | None = None, *, message: str | None = None) -> None:
    if render.state.debug:
        traceback.print_exception(exc, file=sys.stderr)
    render.error(message or str(exc), hint)
    raise SystemExit(code) from None
