"""The built-in plugin: hwquant's own profiles and policies, registered through the public hooks."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from hwquant.plugins.hookspecs import hookimpl
from hwquant.policies import BUILTIN_POLICIES
from hwquant.profile.load import PROFILE_SUFFIXES


def builtin_profiles_dir() -> Path:
    """Folder holding the built-in profile files.

    In an installed wheel they ship as ``hwquant/_profiles``; in a source checkout (editable install)
    they are the repository's top-level ``profiles/`` folder.
    """
    packaged = Path(str(resources.files("hwquant"))) / "_profiles"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "profiles"


@hookimpl
def hwquant_profiles() -> list[Path]:
    folder = builtin_profiles_dir()
    return sorted(p for p in folder.iterdir() if p.suffix in PROFILE_SUFFIXES)


@hookimpl
def hwquant_policies():
    return dict(BUILTIN_POLICIES)
