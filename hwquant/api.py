"""Public functions for profiles and policies (the engine and checker add theirs in their packages)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hwquant.plugins.registry import ProfileInfo, is_profile_path, registry
from hwquant.policies.base import Policy
from hwquant.profile.load import profile_json_schema as _schema
from hwquant.profile.schema import Profile


def get_profile(name: str) -> Profile:
    """The registered profile ``name``, fully resolved; an unknown name raises with close matches."""
    return registry().get_profile(name)


def load_profile(path: str | Path) -> Profile:
    """Load a profile file (TOML or JSON); ``extends`` may name any registered profile."""
    return registry().load_profile(path)


def resolve(profile: str | Path | Profile) -> Profile:
    """A :class:`Profile` from a profile object, a registered name, or a path to a profile file."""
    if isinstance(profile, Profile):
        return profile
    if isinstance(profile, Path) or is_profile_path(profile):
        return load_profile(profile)
    return get_profile(profile)


def list_profiles() -> list[ProfileInfo]:
    """Every registered profile: name, description, source, and the plugin (and file) it comes from."""
    reg = registry()
    return [reg.profile_info(n) for n in reg.profile_names() if not _conflicted(reg, n)]


def _conflicted(reg, name: str) -> bool:
    return f"profile {name}" in reg.conflicts()


def get_policy(name: str) -> Policy:
    """The policy registered as ``name``."""
    return registry().get_policy(name)


def list_policies() -> list[str]:
    """Names of every registered policy."""
    return registry().policy_names()


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema of profile files, for editors and CI validation."""
    return _schema()
