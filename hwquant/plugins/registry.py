"""The plugin registry: loads the built-in and entry-point plugins and indexes what they contribute.

Plugins are discovered through the ``hwquant`` entry-point group. A plugin that fails to import, or
whose hook raises, is recorded with its distribution and the error; the others still load. Two
plugins contributing the same name are a :class:`PluginError` naming both, raised when that name is
looked up.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pluggy

from hwquant.errors import PluginError, ProfileError, UnknownNameError
from hwquant.plugins import builtin, hookspecs
from hwquant.policies.base import Policy
from hwquant.profile.load import PROFILE_SUFFIXES, load_profile_file, resolve_profile
from hwquant.profile.schema import Profile

ENTRY_POINT_GROUP = "hwquant"


@dataclass(frozen=True)
class PluginInfo:
    """A loaded (or failed) plugin: its name, distribution and what it contributes."""

    name: str
    distribution: str | None = None
    version: str | None = None
    profiles: tuple[str, ...] = ()
    policies: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class ProfileInfo:
    """Where a profile comes from: its plugin and, for file profiles, the file."""

    name: str
    description: str
    source: str
    extends: str | None
    plugin: str
    path: Path | None = None

    @property
    def origin(self) -> str:
        """A label naming the file (or plugin) the profile came from, for error messages."""
        return str(self.path) if self.path else f"profile '{self.name}' from plugin '{self.plugin}'"


@dataclass
class _Entry:
    data: Mapping[str, Any]
    info: ProfileInfo


@dataclass
class Registry:
    """Everything the loaded plugins contribute. Build one with :meth:`Registry.load`."""

    plugins: dict[str, PluginInfo] = field(default_factory=dict)
    # every contribution under each name; more than one is a conflict, reported on lookup
    _profiles: dict[str, list[_Entry]] = field(default_factory=dict)
    _policies: dict[str, list[tuple[Policy, str]]] = field(default_factory=dict)
    _cache: dict[str, Profile] = field(default_factory=dict)

    # ------------------------------------------------------------------ building
    @classmethod
    def load(cls, extra_plugins: Mapping[str, object] | None = None, entry_points: bool = True) -> Registry:
        """Load the built-in plugin, the ``hwquant`` entry points and ``extra_plugins`` (name -> object).

        A plugin counts whole or not at all: when one of its hooks raises or returns something unusable,
        it contributes nothing and ``plugins[name].error`` says why.
        """
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        reg = cls()
        dists: dict[str, tuple[str | None, str | None]] = {"builtin": ("hwquant", _version("hwquant"))}
        pm.register(builtin, name="builtin")
        if entry_points:
            for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
                dist = (ep.dist.name, ep.dist.version) if ep.dist else (None, None)
                try:
                    if pm.has_plugin(ep.name):
                        raise PluginError(f"a plugin named '{ep.name}' is already loaded (from {dists[ep.name][0]})")
                    pm.register(ep.load(), name=ep.name)
                    dists[ep.name] = dist
                except Exception as exc:  # a broken plugin must not take the others down
                    # a name clash is recorded under "name (distribution)", not over the plugin that has the name
                    key = ep.name if ep.name not in dists and ep.name not in reg.plugins else f"{ep.name} ({dist[0]})"
                    reg.plugins[key] = PluginInfo(key, *dist, error=_describe(exc, ep.value))
        for name, plugin in (extra_plugins or {}).items():
            pm.register(plugin, name=name)
        staged: dict[str, dict[str, list[Any]]] = {}
        for kind, hook, parse in (
            ("profiles", pm.hook.hwquant_profiles, _parse_profiles),
            ("policies", pm.hook.hwquant_policies, _parse_policies),
        ):
            for impl in hook.get_hookimpls():
                name = impl.plugin_name
                if name in reg.plugins:  # its other hook already failed
                    continue
                try:
                    staged.setdefault(name, {})[kind] = parse(name, impl.function())
                except Exception as exc:  # a broken hook must not take the others down
                    reg.plugins[name] = PluginInfo(name, *dists.get(name, (None, None)), error=_describe(exc, name))
        for name, _ in pm.list_name_plugin():
            if name in reg.plugins:
                continue
            profiles: list[_Entry] = staged.get(name, {}).get("profiles", [])
            policies: list[tuple[str, Policy]] = staged.get(name, {}).get("policies", [])
            for entry in profiles:
                reg._profiles.setdefault(entry.info.name, []).append(entry)
            for policy_name, fn in policies:
                reg._policies.setdefault(policy_name, []).append((fn, name))
            reg.plugins[name] = PluginInfo(
                name,
                *dists.get(name, (None, None)),
                profiles=tuple(sorted(e.info.name for e in profiles)),
                policies=tuple(sorted(n for n, _ in policies)),
            )
        return reg

    # ------------------------------------------------------------------ lookups
    def profile_names(self) -> list[str]:
        return sorted(self._profiles)

    def profile_info(self, name: str) -> ProfileInfo:
        """Where profile ``name`` comes from."""
        entries = self._profiles.get(name)
        if not entries:
            raise _unknown("profile", name, self.profile_names())
        _no_conflict("profile", name, [e.info.plugin for e in entries])
        return entries[0].info

    def _raw(self, name: str) -> tuple[Mapping[str, Any], str]:
        info = self.profile_info(name)
        return self._profiles[name][0].data, info.origin

    def get_profile(self, name: str) -> Profile:
        """The fully resolved profile ``name`` (after ``extends``), with its policy names checked."""
        if name not in self._cache:
            profile = resolve_profile(name, self._raw)
            self._check_policies(profile, self.profile_info(name).origin)
            self._cache[name] = profile
        return self._cache[name]

    def load_profile(self, path: str | Path) -> Profile:
        """Load a profile file that is not registered; ``extends`` resolves against the registry."""
        path = Path(path)
        data = load_profile_file(path)
        name = data.get("name")
        if not isinstance(name, str):
            raise ProfileError("every profile needs a 'name'", source=str(path), field="name")
        profile = resolve_profile(name, lambda n: (data, str(path)) if n == name else self._raw(n))
        self._check_policies(profile, str(path))
        return profile

    def _check_policies(self, profile: Profile, origin: str) -> None:
        for role in ("activations", "weights"):
            try:
                self.get_policy(profile.role(role).policy)
            except UnknownNameError as exc:
                raise ProfileError(str(exc), source=origin, field=f"{role}.policy") from None

    def policy_names(self) -> list[str]:
        return sorted(self._policies)

    def get_policy(self, name: str) -> Policy:
        """The policy registered as ``name``."""
        return self.policy_entry(name)[0]

    def policy_entry(self, name: str) -> tuple[Policy, str]:
        """The policy registered as ``name`` and the plugin that contributed it."""
        entries = self._policies.get(name)
        if not entries:
            raise _unknown("policy", name, self.policy_names())
        _no_conflict("policy", name, [plugin for _, plugin in entries])
        return entries[0]

    def conflicts(self) -> dict[str, list[str]]:
        """Names contributed by more than one plugin: 'profile NAME' / 'policy NAME' -> plugins."""
        out = {f"profile {n}": [e.info.plugin for e in es] for n, es in self._profiles.items() if len(es) > 1}
        out |= {f"policy {n}": [p for _, p in es] for n, es in self._policies.items() if len(es) > 1}
        return out


def _parse_profiles(plugin: str, result: Any) -> list[_Entry]:
    """Check what a ``hwquant_profiles`` hook returned; every item is parsed before any is registered."""
    if result is None:
        return []
    if isinstance(result, (str, Path, Mapping, Profile)):
        raise PluginError("hwquant_profiles must return a list of profiles, not a single one")
    entries = []
    for item in result:
        path = None
        if isinstance(item, Profile):
            data = item.model_dump(exclude_defaults=True)
            data["name"] = item.name
        elif isinstance(item, Mapping):
            data = dict(item)
        elif isinstance(item, (str, Path)):
            path = Path(item)
            data = load_profile_file(path)
        else:
            raise PluginError(f"hwquant_profiles returned {type(item).__name__}; expected a path or profile")
        name = data.get("name")
        if not isinstance(name, str):
            raise ProfileError("every profile needs a 'name'", source=str(path or plugin), field="name")
        info = ProfileInfo(
            name=name,
            description=str(data.get("description", "")),
            source=str(data.get("source", "")),
            extends=data.get("extends"),
            plugin=plugin,
            path=path,
        )
        entries.append(_Entry(data, info))
    return entries


def _parse_policies(plugin: str, result: Any) -> list[tuple[str, Policy]]:
    """Check what a ``hwquant_policies`` hook returned: a mapping of name -> callable."""
    if result is None:
        return []
    if not isinstance(result, Mapping):
        raise PluginError("hwquant_policies must return a mapping of name -> policy")
    for name, fn in result.items():
        if not callable(fn):
            raise PluginError(f"policy '{name}' is not callable")
    return list(result.items())


def _no_conflict(kind: str, name: str, owners: list[str]) -> None:
    if len(owners) > 1:
        raise PluginError(
            f"{kind} '{name}' is contributed by more than one plugin: {', '.join(owners)}. "
            f"Uninstall one of them or rename the {kind}."
        )


def _describe(exc: BaseException, where: str) -> str:
    return f"{type(exc).__name__}: {exc} (in {where})"


def _unknown(kind: str, name: str, known: list[str]) -> UnknownNameError:
    return UnknownNameError(kind, name, known, difflib.get_close_matches(name, known, n=3, cutoff=0.5))


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


_lock = threading.Lock()
_default: Registry | None = None


def registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = Registry.load()
        return _default


def reload_plugins() -> Registry:
    """Forget the loaded plugins and discover them again (after installing a plugin package)."""
    global _default
    with _lock:
        _default = None
    return registry()


def is_profile_path(value: str | Path) -> bool:
    """True when ``value`` names a profile file rather than a registered profile."""
    return Path(value).suffix in PROFILE_SUFFIXES
