"""The plugin author's path, tested: docs/writing-a-plugin.md followed as written, in a fresh virtual environment.

The page's install commands (``python3 -m venv``, ``source``, ``pip install . ./examples/hwquant-example-plugin``)
are what the session fixture ``installed`` does: a new venv outside the checkout with hwquant's wheel and the example
plugin. Every other command and Python block of the page then runs in order with that venv's ``hwquant`` and
``python``, from a folder holding a copy of ``examples/``: ``hwquant plugins`` and ``hwquant profiles list`` show the
plugin and its profile, the bundled model is quantized with it, ``hwquant check`` passes, the plugin's own tests
pass, and its wheel builds with the profile inside.
"""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from test_docs import Block, Command, blocks, example_workdir, run_command, run_page, shell_env

PAGE = "writing-a-plugin.md"
PLUGIN_DIR = "./examples/hwquant-example-plugin"
# What the `installed` fixture installs, as the page spells it (the plugin with or without its test extra).
INSTALLED = {".", PLUGIN_DIR, f"{PLUGIN_DIR}[test]"}


def _pip_targets(cmd: Command) -> list[str]:
    words = shlex.split(cmd.text, comments=True)
    words = words[words.index("install") + 1 :]
    return [w for w in words if not w.startswith("-")]


def test_the_page_installs_what_the_fixture_installs():
    """The fixture stands in for the page's install commands, so they must install exactly hwquant and the plugin."""
    setup = [c for b in blocks(PAGE) if b.lang == "console" and not b.skip for c in b.commands() if c.setup]
    assert [c.text for c in setup[:2]] == ["python3 -m venv .venv", "source .venv/bin/activate"]
    targets = {t for c in setup if "install" in c.text.split() for t in _pip_targets(c)}
    assert targets <= INSTALLED and {".", PLUGIN_DIR} <= {t.removesuffix("[test]") for t in targets}


@pytest.mark.slow
def test_plugin_author_path(installed, tmp_path: Path):
    cwd = example_workdir(tmp_path)
    env = shell_env(installed.root / "bin")
    seen: list[str] = []

    def python(block: Block, where: Path) -> str:
        proc = subprocess.run(
            [str(installed.python), "-c", block.body],
            cwd=where,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, f"{block.where}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        return proc.stdout

    def setup(cmd: Command, block: Block) -> None:
        seen.append(cmd.text)  # done by the `installed` fixture (see test_the_page_installs_what_the_fixture_installs)

    counts = run_page(PAGE, cwd, env, python=python, setup=setup)
    assert any(s.startswith("pip install . ") for s in seen)
    assert counts["commands"] >= 8 and counts["python"] >= 2

    # What the page promises, checked against the same venv.
    def out(*args: str) -> str:
        cmd = Command(0, shlex.join(["hwquant", *args]))
        return run_command(cmd, Block(PAGE, 0, "console", None, "", False), cwd, env).stdout

    plugins = out("plugins")
    assert "example" in plugins and "hwquant-example-plugin" in plugins and "acme-centered" in plugins
    assert "acme-npu-u8" in out("profiles", "list")
    assert (cwd / "digits.acme.onnx").is_file()
    assert "PASS" in out("check", "digits.acme.onnx", "--profile", "acme-npu-u8")
    assert "acme-centered (example)" in out("explain", "acme.json", "--tensor", "logits")
    assert (cwd / "dist" / "hwquant_example_plugin-0.1.0-py3-none-any.whl").is_file()
