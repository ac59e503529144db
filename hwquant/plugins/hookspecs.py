"""Hook specifications: everything a plugin can contribute to hwquant.

A plugin is a module (or object) with functions named after these hooks and marked with
``@hwquant.hookimpl``; a package exposes it through the ``hwquant`` entry-point group::

    [project.entry-points.hwquant]
    acme = "acme_hwquant.plugin"
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from hwquant.policies.base import Policy
    from hwquant.profile.schema import Profile

PROJECT = "hwquant"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def hwquant_profiles() -> Iterable[Path | str | Profile | Mapping[str, Any]]:
    """Return the profiles this plugin contributes.

    Each item is a path to a profile file (``.toml`` or ``.json``), a :class:`~hwquant.Profile`, or a
    mapping in the profile file format. Profile names must be unique across all plugins.
    """


@hookspec
def hwquant_policies() -> Mapping[str, Policy]:
    """Return the zero-point/scale policies this plugin contributes, by name.

    A policy is a callable ``policy(stats: TensorStats, constraints: Constraints) -> QParams``; it must
    be pure numpy (no onnxruntime) and return qparams that obey ``constraints``. Policy names must be
    unique across all plugins. A policy that wants the tensor's histogram in ``stats.histogram`` sets the
    attribute ``needs_histogram = True`` on itself; calibration then collects histograms.
    """
