"""Packaging: the wheel carries the built-in profiles and works installed outside the checkout; the README's
commands and the CI script agree."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import pytest
from conftest import BUILTIN_PROFILES, REPO, run

import hwquant

README = REPO / "README.md"
CI_RUN = REPO / ".ci" / "run"


def quick_start_commands() -> list[str]:
    """The commands in the README's "Quick start" code block."""
    section = README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.DOTALL)
    assert block, "no code block under '## Quick start'"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


# ------------------------------------------------------------------------------------------------ README / CI


def test_readme_quick_start_has_two_commands():
    install_and_run, install_and_test = quick_start_commands()
    assert install_and_run.startswith("python3 -m venv .venv && ")
    assert "hwquant" in install_and_run.split("&&")[-1]
    assert install_and_test.startswith("python3 -m venv .venv && ")
    assert "pytest" in install_and_test


def test_ci_runs_exactly_the_readme_test_command():
    test_command = quick_start_commands()[1]
    lines = [line.strip() for line in CI_RUN.read_text(encoding="utf-8").splitlines()]
    assert test_command in lines, f"{CI_RUN} must run the README's test command verbatim:\n{test_command}"


def test_ci_script_is_strict_bash():
    text = CI_RUN.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(CI_RUN, os.X_OK)


def test_readme_sample_profile_is_valid(tmp_path):
    section = README.read_text(encoding="utf-8").split("## Profiles", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```toml\n(.*?)```", section, re.DOTALL)
    assert block, "no ```toml block under '## Profiles'"
    path = tmp_path / "sample.toml"
    path.write_text(block.group(1), encoding="utf-8")
    profile = hwquant.load_profile(path)
    assert profile.extends in BUILTIN_PROFILES


# ------------------------------------------------------------------------------------------------ the wheel


@pytest.mark.slow
def test_wheel_contents(hwquant_wheel: Path):
    with zipfile.ZipFile(hwquant_wheel) as whl:
        names = set(whl.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "hwquant = hwquant.cli.app:main" in whl.read(entry_points).decode()
    assert {f"hwquant/_profiles/{n}.toml" for n in BUILTIN_PROFILES} <= names
    assert "hwquant/__init__.py" in names
    assert not [n for n in names if n.startswith(("tests/", "examples/", "profiles/", "hwquant_example_plugin"))]


@pytest.mark.slow
def test_installed_cli_lists_builtins(installed):
    proc = run([installed.script("hwquant"), "profiles", "list", "--json"], cwd=installed.workdir)
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    for name in BUILTIN_PROFILES:
        assert rows[name]["plugin"] == "builtin"
        assert rows[name]["description"]


LIST_BUILTINS = """
import json, hwquant
from hwquant.plugins.builtin import builtin_profiles_dir
from hwquant.plugins.registry import registry
reg = registry()
print(json.dumps({
    "hwquant": hwquant.__file__,
    "dir": str(builtin_profiles_dir()),
    "builtin": list(reg.plugins["builtin"].profiles),
    "paths": {n: str(reg.profile_info(n).path) for n in reg.plugins["builtin"].profiles},
    "loaded": [hwquant.get_profile(n).name for n in reg.plugins["builtin"].profiles],
}))
"""


@pytest.mark.slow
def test_installed_wheel_loads_builtins_from_its_own_files(installed):
    out = json.loads(run([installed.python, "-c", LIST_BUILTINS], cwd=installed.workdir).stdout)
    package = Path(out["hwquant"]).parent
    assert package.is_relative_to(installed.root) and not package.is_relative_to(REPO)
    assert Path(out["dir"]) == package / "_profiles"
    assert out["builtin"] == out["loaded"] == sorted(BUILTIN_PROFILES)
    for name, path in out["paths"].items():
        assert Path(path) == package / "_profiles" / f"{name}.toml"
