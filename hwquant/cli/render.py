"""Shared output helpers for the CLI: consoles, global flags, JSON, messages, sizes, progress bars.

Colour follows rich's rules: none when the stream is not a terminal, none when ``NO_COLOR`` is set.
Results go to stdout; messages, warnings, errors and progress bars go to stderr, so ``--json`` output
can be piped as is.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

# Exit codes (documented in `hwquant --help`).
EXIT_OK = 0
EXIT_FAILED = 1  # the model fails its profile or verification
EXIT_USAGE = 2  # bad usage or unusable input

_PIPE_WIDTH = 120  # table width when stdout is not a terminal and COLUMNS is unset


@dataclass
class State:
    """Global flags from the root command."""

    quiet: bool = False
    verbose: bool = False
    debug: bool = False


state = State()


def _console(stderr: bool) -> Console:
    probe = Console(stderr=stderr)
    width = None if probe.is_terminal or os.environ.get("COLUMNS") else _PIPE_WIDTH
    return Console(stderr=stderr, width=width, highlight=False)


out = _console(stderr=False)
err = _console(stderr=True)


# ----------------------------------------------------------------------------------------------- messages


def error(message: str, hint: str | None = None) -> None:
    """One error line (and an optional hint line) on stderr, never wrapped."""
    err.print(Text.assemble(("error: ", "bold red"), message), soft_wrap=True)
    if hint:
        err.print(Text(hint, style="dim"), soft_wrap=True)


def warn(message: str) -> None:
    """A warning line on stderr (shown even with --quiet: warnings matter)."""
    err.print(Text.assemble(("warning: ", "bold yellow"), message), soft_wrap=True)


def note(message: str) -> None:
    """An informational line on stderr, hidden by --quiet."""
    if not state.quiet:
        err.print(Text(message, style="dim"), soft_wrap=True)


def detail(message: str) -> None:
    """A line on stderr shown only with --verbose."""
    if state.verbose and not state.quiet:
        err.print(Text(message, style="dim"), soft_wrap=True)


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` replacement: one readable line instead of a source excerpt."""
    warn(str(message))


# ----------------------------------------------------------------------------------------------- output


def print_json(text: str) -> None:
    """JSON text on stdout: highlighted on a terminal, byte-for-byte as given otherwise."""
    if out.is_terminal and not out.no_color:
        out.print_json(text)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()


def dumps(data: Any) -> str:
    """Stable, indented JSON for results (numpy scalars and paths made plain)."""
    return json.dumps(data, indent=2, default=_plain)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def did_you_mean(name: str, known: list[str]) -> str:
    """`` Did you mean 'x'?`` for close spellings of ``name`` among ``known``, else ''."""
    matches = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""


def first_sentence(text: str) -> str:
    """The headline of a description: its first sentence, cut at a ': ' that introduces details."""
    text = " ".join(text.split())
    m = re.search(r"(?<=[.!?])\s+(?=[A-Z0-9(])", text)
    head = text[: m.start()] if m else text
    if ": " in head:
        head = head.split(": ", 1)[0]
    return head.rstrip(".")


def human_size(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


def num(value: float | None, digits: int = 4) -> str:
    """A float for tables: ``inf``/``-inf``/``nan`` spelled out, else ``digits`` significant digits."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


# ----------------------------------------------------------------------------------------------- progress


class _RateColumn(ProgressColumn):
    """Average samples per second since the command started calibrating (``rate`` field of the task)."""

    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        return Text("? samples/s" if rate is None else f"{rate:,.1f} samples/s", style="cyan")


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[int, int | None], None] | None]:
    """A rich progress bar on stderr fed by a ``progress(done, total)`` callback; None with --quiet.

    The bar appears on the first call, so nothing is drawn when the command fails before calibrating.
    """
    if state.quiet:
        yield None
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        _RateColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=False,
        refresh_per_second=8,
    )
    task = progress.add_task(description, total=None, rate=None)
    started = False
    t0 = time.perf_counter()  # callbacks come per batch: time from here, not from the first call

    def update(done: int, total: int | None) -> None:
        nonlocal started
        if not started:  # drawn from the first batch on, so early errors print no empty bar
            started = True
            progress.start()
        elapsed = time.perf_counter() - t0
        progress.update(task, completed=done, total=total, rate=done / elapsed if done and elapsed > 0 else None)

    try:
        yield update
    finally:
        if started:
            progress.stop()
