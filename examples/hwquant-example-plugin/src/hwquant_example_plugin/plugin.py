"""The plugin module named by the entry point: two hook implementations, public hwquant API only."""

from __future__ import annotations

from pathlib import Path

import hwquant
from hwquant_example_plugin.policy import acme_centered

PROFILES_DIR = Path(__file__).parent / "profiles"


@hwquant.hookimpl
def hwquant_profiles() -> list[Path]:
    """The profile files shipped in this package (hwquant validates them; a profile is data, not code)."""
    return sorted(PROFILES_DIR.glob("*.toml"))


@hwquant.hookimpl
def hwquant_policies() -> dict[str, object]:
    """The policies this plugin adds, by the name profiles use in ``policy = "..."``."""
    return {"acme-centered": acme_centered}
