"""``hwquant explain REPORT.json``: which rule and policy gave each tensor its qparams, and what it cost."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from hwquant.cli import render
from hwquant.cli.render import out
from hwquant.errors import HwquantError

DECISION_KEYS = ("tensor", "role", "rule", "scale", "zero_point")


class SortKey(StrEnum):
    cost = "cost"
    step = "step"
    widened = "widened"
    name = "name"


def load_report(path: Path) -> dict[str, Any]:
    """A quantize report (``QuantResult.to_json()``), checked enough to explain it."""
    try:
        text = path.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise HwquantError(f"{path}: is a folder, not a report file") from None
    except UnicodeDecodeError:
        raise HwquantError(f"{path}: not a hwquant report (not text; write one with `quantize --report`)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HwquantError(f"{path}: not a hwquant report (invalid JSON: {exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("decisions"), list):
        raise HwquantError(f"{path}: not a hwquant report (no 'decisions'; write one with `hwquant quantize --report`)")
    for i, d in enumerate(data["decisions"]):
        missing = [k for k in DECISION_KEYS if not isinstance(d, dict) or k not in d]
        if missing:
            raise HwquantError(f"{path}: decision {i} lacks {', '.join(missing)}")
    return data


def costs(d: dict[str, Any]) -> tuple[float, float]:
    """``(step, added)``: rounding error per value (scale**2 / 12, largest channel) and the part of it the
    constraint added by widening the grid (a plain min/max grid would have scale / (1 + widened))."""
    scales = d["scale"] if isinstance(d["scale"], list) else [d["scale"]]
    step = max(float(s) for s in scales) ** 2 / 12
    widened = float(d.get("widened") or 0.0)
    return step, step * (1 - 1 / (1 + widened) ** 2) if widened > 0 else 0.0


def _sorted(decisions: list[dict[str, Any]], key: SortKey) -> list[dict[str, Any]]:
    if key == SortKey.name:
        return sorted(decisions, key=lambda d: d["tensor"])
    if key == SortKey.widened:
        return sorted(decisions, key=lambda d: (-float(d.get("widened") or 0), -costs(d)[0], d["tensor"]))
    if key == SortKey.step:
        return sorted(decisions, key=lambda d: (-costs(d)[0], d["tensor"]))
    return sorted(decisions, key=lambda d: (-costs(d)[1], -costs(d)[0], d["tensor"]))


def _range(r: Any, digits: int = 4) -> str:
    if not isinstance(r, (list, tuple)) or len(r) != 2:
        return "-"
    return f"[{render.num(float(r[0]), digits)}, {render.num(float(r[1]), digits)}]"


def _qparams(d: dict[str, Any]) -> str:
    scale, zp = d["scale"], d["zero_point"]
    if isinstance(scale, list):
        lo, hi = min(scale), max(scale)
        zps = sorted(set(zp)) if isinstance(zp, list) else [zp]
        zp_text = str(zps[0]) if len(zps) == 1 else f"{len(zps)} values"
        return f"{len(scale)} channels, scale {render.num(lo)}..{render.num(hi)}, zp {zp_text}"
    return f"scale {render.num(float(scale))}, zp {zp}"


def _policy(d: dict[str, Any]) -> str:
    if not d.get("policy"):
        return "-"
    return f"{d['policy']} ({d['plugin']})" if d.get("plugin") else str(d["policy"])


def explain_command(
    report: Annotated[
        Path,
        typer.Argument(
            metavar="REPORT.json", help="A report written by `hwquant quantize --report`.", show_default=False
        ),
    ],
    tensor: Annotated[
        str | None,
        typer.Option("--tensor", "-t", metavar="NAME", help="Show one tensor's decision in full.", show_default=False),
    ] = None,
    top: Annotated[int, typer.Option("--top", metavar="N", min=0, help="Show the N costliest tensors (0: all).")] = 20,
    sort: Annotated[
        SortKey,
        typer.Option(
            "--sort",
            help="cost: error the constraint added; step: rounding error (scale²/12); widened: range growth; name.",
        ),
    ] = SortKey.cost,
    json_out: Annotated[bool, typer.Option("--json", help="Print the sorted decisions as JSON.")] = False,
) -> None:
    """Explain a quantize report: which rule and policy set each tensor's qparams, and at what cost.

    For each tensor: the rule that decided it (`policy`: the role's policy on the tensor's own range;
    `shared`: one scale and zero point for a group of tensors that must agree; `fixed`: the profile
    fixes the op's output), the policy and its plugin, the observed range and the range the chosen
    scale and zero point cover, how much wider that is than needed (`widened`), and whether observed
    values fall outside it (`clipped`). Tensors are sorted by the rounding error the constraint added:
    scale²/12 against the scale a plain min/max grid would have had.

    Examples:

        hwquant quantize model.onnx out.onnx -p restricted-u8 -c calib.npz --report report.json
        hwquant explain report.json --top 10
        hwquant explain report.json --tensor conv1_out
    """
    data = load_report(report)
    decisions = data["decisions"]
    if tensor is not None:
        _explain_one(data, tensor)
        return
    ordered = _sorted(decisions, sort)
    shown = ordered if top == 0 else ordered[:top]
    if json_out:
        rows = []
        for d in shown:
            step, added = costs(d)
            rows.append(d | {"step_error": step, "added_error": added})
        render.print_json(render.dumps({"profile": data.get("profile"), "decisions": rows}))
        return
    if not render.state.quiet:
        _header(data)
    table = Table(
        "tensor", "role", "rule", "policy (plugin)", "raw range -> covered", "widened", "clipped", "added error"
    )
    table.columns[0].overflow = "fold"
    table.columns[4].no_wrap = True
    if render.state.verbose:
        table.add_column("qparams")
    for d in shown:
        step, added = costs(d)
        widened = float(d.get("widened") or 0.0)
        table.add_row(
            d["tensor"],
            d["role"],
            d["rule"],
            _policy(d),
            f"{_range(d.get('raw_range'), 3)} -> {_range(d.get('covered'), 3)}",
            Text(f"{widened:.1%}", style="yellow" if widened > 0.1 else ""),
            Text("yes", style="red") if d.get("clipped") else "no",
            render.num(added, 3) if added else "0",
            *([_qparams(d)] if render.state.verbose else []),
        )
    out.print(table)
    if len(shown) < len(ordered):
        render.note(f"{len(ordered) - len(shown)} more tensors; --top 0 shows all, --tensor NAME one in full")


def _header(data: dict[str, Any]) -> None:
    cov = data.get("coverage") or {}
    check = data.get("check") or {}
    verdict = "PASS" if check.get("ok") else "FAIL" if check else "not checked"
    out.print(
        f"profile {data.get('profile')}, {str(data.get('format', '?')).upper()}, {data.get('method', '?')} "
        f"calibration; {cov.get('quantized', '?')}/{cov.get('total', '?')} compute ops quantized; "
        f"check {verdict}; {len(data['decisions'])} tensors",
        soft_wrap=True,
    )


def _explain_one(data: dict[str, Any], name: str) -> None:
    by_name = {d["tensor"]: d for d in data["decisions"]}
    if name not in by_name:
        hint = render.did_you_mean(name, list(by_name))
        raise HwquantError(f"tensor '{name}' is not in the report (it was not quantized).{hint}")
    d = by_name[name]
    step, added = costs(d)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    why = {
        "policy": "the role's policy, on the tensor's own range",
        "shared": "one scale and zero point shared by a group of tensors (ranges unified first)",
        "fixed": "fixed by the profile for this op's output",
    }.get(d["rule"], "")
    grid.add_row("tensor", d["tensor"])
    grid.add_row("role / dtype", f"{d['role']} / {d.get('dtype', '?')}")
    grid.add_row("rule", f"{d['rule']}: {why}" if why else d["rule"])
    grid.add_row("policy", _policy(d))
    grid.add_row("scale", json.dumps(d["scale"]))
    grid.add_row("zero point", json.dumps(d["zero_point"]))
    if d.get("axis") is not None:
        grid.add_row("axis", str(d["axis"]))
    grid.add_row("observed range", _range(d.get("raw_range")))
    grid.add_row("range the policy saw", _range(d.get("range")))
    grid.add_row("covered range", _range(d.get("covered")))
    widened = float(d.get("widened") or 0.0)
    grid.add_row("widened", f"{widened:.2%} wider than needed" if widened else "no")
    grid.add_row("clipped", "yes: observed values fall outside the covered range" if d.get("clipped") else "no")
    grid.add_row(
        "rounding error", f"{render.num(step, 3)} per value (scale²/12); the constraint added {render.num(added, 3)}"
    )
    if d.get("note"):
        grid.add_row("note", d["note"])
    group = [t for t in d.get("group") or [] if t != name]
    grid.add_row("shares qparams with", ", ".join(group) if group else "-")
    out.print(grid)
    members = [by_name[t] for t in group if t in by_name]
    if members:
        table = Table("group member", "role", "rule", "qparams", "raw range", title_justify="left")
        for m in members:
            table.add_row(m["tensor"], m["role"], m["rule"], _qparams(m), _range(m.get("raw_range")))
        out.print(table)
