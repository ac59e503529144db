"""``hwquant plugins``: what is loaded, from which distribution, what it contributes, what failed."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from hwquant.cli import render
from hwquant.cli.render import out
from hwquant.plugins.registry import registry


def plugins_command(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """List loaded plugins, what each contributes, and the ones that failed to load.

    For each plugin: its distribution and version and the profiles and policies it contributes. Then
    the plugins that failed to load, with their errors, and names two plugins both contribute (those
    cannot be used until one plugin goes). Plugins register through the `hwquant` entry-point group;
    hwquant's own profiles and policies come from the `builtin` plugin.

    Example:

        hwquant plugins
    """
    reg = registry()
    infos = sorted(reg.plugins.values(), key=lambda p: (p.error is not None, p.name != "builtin", p.name))
    conflicts = reg.conflicts()
    if json_out:
        data = {
            "plugins": [
                {
                    "name": p.name,
                    "distribution": p.distribution,
                    "version": p.version,
                    "profiles": list(p.profiles),
                    "policies": list(p.policies),
                    "ok": p.error is None,
                    "error": p.error,
                }
                for p in infos
            ],
            "conflicts": [
                {"kind": key.split(" ", 1)[0], "name": key.split(" ", 1)[1], "plugins": owners}
                for key, owners in conflicts.items()
            ],
        }
        render.print_json(render.dumps(data))
        return

    loaded = [p for p in infos if p.error is None]
    failed = [p for p in infos if p.error is not None]
    table = Table(
        "plugin", "distribution", "version", "profiles", "policies", title="Loaded plugins", title_justify="left"
    )
    for p in loaded:
        table.add_row(
            p.name, p.distribution or "-", p.version or "-", ", ".join(p.profiles) or "-", ", ".join(p.policies) or "-"
        )
    out.print(table)
    if failed:
        bad = Table("plugin", "distribution", "version", "error", title="Failed to load", title_justify="left")
        for p in failed:
            bad.add_row(p.name, p.distribution or "-", p.version or "-", Text(p.error or "", style="red"))
        out.print(bad)
    if conflicts:
        clash = Table(
            "name", "contributed by", title="Conflicts (unusable until one plugin goes)", title_justify="left"
        )
        for key, owners in conflicts.items():
            clash.add_row(key, Text(", ".join(owners), style="yellow"))
        out.print(clash)
    render.note(
        f"{len(loaded)} plugin{'s' if len(loaded) != 1 else ''} loaded, {len(failed)} failed, "
        f"{len(conflicts)} conflict{'s' if len(conflicts) != 1 else ''}"
    )
