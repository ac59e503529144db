"""Shared test helpers: the checkout's paths, subprocesses with a clean environment, and (once per session)
hwquant's wheel installed with the example plugin into a fresh venv outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_PLUGIN = REPO / "examples" / "hwquant-example-plugin"
BUILTIN_PROFILES = ("ort-default", "pow2-int8", "qnn-htp-a16w8", "restricted-u8", "tensorrt-int8", "tflite-int8")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would leak the checkout or its venv into a child."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}}
    env.update(PYTHONDONTWRITEBYTECODE="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", **extra)
    return env


def run(cmd: list, cwd: Path, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` (no stdin, output captured); a failure shows both output streams."""
    proc = subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env or clean_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{cmd} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


@dataclass(frozen=True)
class Venv:
    """A venv outside the checkout, and an empty folder outside it to run commands from."""

    root: Path
    workdir: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def script(self, name: str) -> Path:
        return self.root / "bin" / name


@pytest.fixture(scope="session")
def hwquant_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hwquant's wheel, built from the checkout (isolated build, so hatchling comes from the index)."""
    out = tmp_path_factory.mktemp("wheel")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", out, REPO], cwd=out)
    (wheel,) = out.glob("hwquant-*.whl")
    return wheel


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory, hwquant_wheel: Path) -> Venv:
    """A fresh venv (no system site-packages) with the wheel, its dependencies and the example plugin.

    Built once per session; the base interpreter is the one running the tests.
    """
    root = tmp_path_factory.mktemp("venv") / "venv"
    assert REPO not in root.parents
    run([sys.executable, "-m", "venv", root], cwd=root.parent)
    venv = Venv(root, tmp_path_factory.mktemp("elsewhere"))
    run([venv.python, "-m", "pip", "install", "-q", hwquant_wheel, f"{EXAMPLE_PLUGIN}[test]"], cwd=venv.workdir)
    return venv
