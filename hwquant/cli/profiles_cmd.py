"""``hwquant profiles list|show|schema|diff``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import hwquant
from hwquant.cli import render, toml_emit
from hwquant.cli.render import out
from hwquant.plugins.registry import is_profile_path, registry

profiles_app = typer.Typer(
    help="List, show, diff hardware profiles and print their JSON Schema.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ProfileArg = Annotated[str, typer.Argument(metavar="NAME|PATH", help="A registered profile name or a profile file.")]


def _origin(profile: str) -> dict[str, Any]:
    """Where ``profile`` (a name or a path) comes from."""
    if is_profile_path(profile):
        return {"plugin": None, "path": str(Path(profile))}
    info = registry().profile_info(profile)
    return {"plugin": info.plugin, "path": str(info.path) if info.path else None}


@profiles_app.command("list")
def profiles_list(json_out: JsonOpt = False) -> None:
    """List the registered profiles: name, target, source document and plugin.

    The table shows the first sentence of each description; `--json`, `hwquant --verbose profiles list`
    and `profiles show` give the full text.

    Example:

        hwquant profiles list
    """
    infos = hwquant.list_profiles()
    if json_out:
        rows = [
            {
                "name": i.name,
                "description": i.description,
                "source": i.source,
                "extends": i.extends,
                "plugin": i.plugin,
                "path": str(i.path) if i.path else None,
            }
            for i in infos
        ]
        render.print_json(render.dumps(rows))
        return
    table = Table("name", "description", "extends", "source", "plugin")
    table.columns[0].no_wrap = True
    table.columns[3].max_width = 40
    table.columns[3].overflow = "ellipsis"
    table.columns[3].no_wrap = not render.state.verbose
    for i in infos:
        desc = " ".join(i.description.split()) if render.state.verbose else render.first_sentence(i.description)
        table.add_row(i.name, desc, i.extends or "", i.source, i.plugin)
    out.print(table)
    conflicts = [k for k in registry().conflicts() if k.startswith("profile ")]
    if conflicts:
        render.warn(f"not listed, contributed by several plugins: {', '.join(conflicts)} (see `hwquant plugins`)")


@profiles_app.command("show")
def profiles_show(
    profile: ProfileArg,
    json_out: JsonOpt = False,
    toml_out: Annotated[bool, typer.Option("--toml", help="Print plain TOML (a valid profile file).")] = False,
) -> None:
    """Show a profile fully resolved (after `extends`), every field with its value.

    The default output is TOML with a comment saying where the profile comes from; `--toml` leaves the
    comment out (the output is then a valid profile file), `--json` prints JSON.

    Examples:

        hwquant profiles show restricted-u8
        hwquant profiles show my-npu.toml --json
    """
    if json_out and toml_out:
        raise typer.BadParameter("choose one of --json and --toml")
    prof = hwquant.resolve(profile)
    data = prof.model_dump(mode="json")
    if json_out:
        render.print_json(json.dumps(data, indent=2))
        return
    text = toml_emit.dumps(data)
    if not toml_out:
        origin = _origin(profile)
        where = f"file {origin['path']}" if origin["path"] else "no file"
        plugin = f"plugin '{origin['plugin']}', " if origin["plugin"] else ""
        chain = f", extends '{prof.extends}' (values below include what it inherits)" if prof.extends else ""
        text = f"# profile '{prof.name}' from {plugin}{where}{chain}\n" + text
    out.print(text, end="", markup=False, soft_wrap=True)


@profiles_app.command("schema")
def profiles_schema() -> None:
    """Print the JSON Schema of profile files (for editors and CI validation).

    Example:

        hwquant profiles schema > profile.schema.json
    """
    render.print_json(json.dumps(hwquant.profile_json_schema(), indent=2))


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted field paths -> leaf values (lists are leaves; an empty table has no fields)."""
    if isinstance(data, dict):
        flat: dict[str, Any] = {}
        for key, value in data.items():
            flat |= flatten(value, f"{prefix}.{key}" if prefix else str(key))
        return flat
    return {prefix: data}


_UNSET = object()


def _cell(value: Any, full: bool) -> str:
    if value is _UNSET:
        return "(unset)"
    if value is None:
        return "(none)"
    text = value if isinstance(value, str) else json.dumps(value)
    text = " ".join(text.split())
    if not full and len(text) > 60:
        text = text[:59] + "…"
    return text


@profiles_app.command("diff")
def profiles_diff(
    a: Annotated[str, typer.Argument(metavar="A", help="First profile: a name or a profile file.")],
    b: Annotated[str, typer.Argument(metavar="B", help="Second profile: a name or a profile file.")],
    json_out: JsonOpt = False,
) -> None:
    """Compare two resolved profiles field by field.

    Lists the dotted fields whose values differ once both profiles are resolved (after `extends`).
    Long text values are shortened in the table; `hwquant --verbose profiles diff` or `--json` gives
    them in full.

    Example:

        hwquant profiles diff ort-default restricted-u8
    """
    pa, pb = hwquant.resolve(a), hwquant.resolve(b)
    fa, fb = flatten(pa.model_dump(mode="json")), flatten(pb.model_dump(mode="json"))
    fields = list(dict.fromkeys([*fa, *fb]))
    diffs = [(f, fa.get(f, _UNSET), fb.get(f, _UNSET)) for f in fields if fa.get(f, _UNSET) != fb.get(f, _UNSET)]
    if json_out:
        rows = [
            {"field": f, "a": None if x is _UNSET else x, "b": None if y is _UNSET else y, "unset": _unset(x, y)}
            for f, x, y in diffs
        ]
        render.print_json(render.dumps({"a": pa.name, "b": pb.name, "differences": rows}))
        return
    if not diffs:
        out.print(f"{pa.name} and {pb.name} are identical once resolved")
        return
    table = Table("field", pa.name if pa.name != pb.name else a, pb.name if pa.name != pb.name else b)
    table.columns[0].no_wrap = True
    full = render.state.verbose
    for f, x, y in diffs:
        table.add_row(f, _cell(x, full), _cell(y, full))
    out.print(table)
    render.note(f"{len(diffs)} of {len(fields)} fields differ")


def _unset(x: Any, y: Any) -> list[str]:
    return [side for side, v in (("a", x), ("b", y)) if v is _UNSET]
