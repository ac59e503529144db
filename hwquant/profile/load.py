"""Reading profile files (TOML or JSON) and resolving ``extends``. Never executes code."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from hwquant.errors import ProfileError
from hwquant.profile.schema import Profile

PROFILE_SUFFIXES = (".toml", ".json")
_FIELD_PREFIX = re.compile(r"^([A-Za-z_]\w*(?:\.[\w-]+)*): (.+)$", re.DOTALL)


def load_profile_file(path: str | Path) -> dict[str, Any]:
    """Read a profile file into a plain dict (not yet validated or resolved).

    Raises :class:`ProfileError` naming the file when it is missing, unreadable or not TOML/JSON.
    """
    path = Path(path)
    if path.suffix not in PROFILE_SUFFIXES:
        raise ProfileError(f"profile files end in .toml or .json, not '{path.suffix}'", source=str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"cannot read profile file: {exc.strerror or exc}", source=str(path)) from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"not valid {path.suffix[1:].upper()}: {exc}", source=str(path)) from exc
    if not isinstance(data, dict):
        raise ProfileError("a profile file holds one table/object at the top level", source=str(path))
    data.pop("$schema", None)  # editors' schema hint, not a field
    return data


def merge_profile_data(parent: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge ``child`` over ``parent``: tables merge key by key, every other value replaces."""
    out = dict(parent)
    for key, value in child.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_profile_data(out[key], value)
        else:
            out[key] = value
    return out


def validate_profile(data: Mapping[str, Any], source: str) -> Profile:
    """Validate a fully merged profile dict, turning pydantic errors into a :class:`ProfileError`."""
    try:
        return Profile.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"] if p != "[key]"]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "literal_error":  # "Input should be 'uint8', ...": say what was given
            msg += f", not {err['input']!r}"
        # A model validator reports on its whole model; its message starts with the field it means
        # ("zero_points.uint8: ..."), which completes the location.
        m = _FIELD_PREFIX.match(msg)
        if m:
            loc.append(m.group(1))
            msg = m.group(2)
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ProfileError(msg + more, source=source, field=".".join(loc) or None) from None


def resolve_profile(
    name: str,
    lookup: Callable[[str], tuple[Mapping[str, Any], str]],
) -> Profile:
    """Resolve profile ``name`` through its ``extends`` chain.

    ``lookup(name)`` returns the raw data of a profile and a label of where it came from (a file path
    or a plugin), raising ``LookupError`` for unknown names. Cycles and unknown parents are errors
    naming the file and the ``extends`` field.
    """
    chain: list[tuple[Mapping[str, Any], str]] = []
    seen: list[str] = []
    current: str | None = name
    while current is not None:
        if current in seen:
            cycle = " -> ".join([*seen, current])
            raise ProfileError(f"extends cycle: {cycle}", source=chain[-1][1], field="extends")
        try:
            data, source = lookup(current)
        except LookupError as exc:
            if not chain:
                raise
            raise ProfileError(
                f"unknown parent profile '{current}': {exc}", source=chain[-1][1], field="extends"
            ) from None
        seen.append(current)
        chain.append((data, source))
        parent = data.get("extends")
        if parent is not None and not isinstance(parent, str):
            raise ProfileError("must be a profile name", source=source, field="extends")
        current = parent
    merged: dict[str, Any] = {}
    for data, source in reversed(chain):
        # validate every level of the chain, so an error points at the file that introduced it
        merged = merge_profile_data(merged, data)
        profile = validate_profile(merged, source)
    return profile


def profile_json_schema() -> dict[str, Any]:
    """The JSON Schema of the profile file format (for editors and CI validation)."""
    schema = Profile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "hwquant profile"
    schema.setdefault("properties", {})["$schema"] = {"type": "string", "description": "Schema hint for editors."}
    return schema
