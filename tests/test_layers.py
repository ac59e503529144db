"""The layers import downward only: profile -> policies/plugins -> checker -> engine -> CLI."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hwquant"
# what each layer may import from hwquant (besides itself and hwquant.errors)
ALLOWED = {
    "profile": set(),
    "policies": {"profile"},
    "plugins": {"profile", "policies"},
    "checker": {"profile", "policies", "plugins", "api"},
    "engine": {"profile", "policies", "plugins", "api", "checker"},
}


def _hwquant_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "hwquant" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_downward(layer):
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        wrong = _hwquant_imports(path) - ALLOWED[layer] - {layer, "errors"}
        assert not wrong, f"{path.relative_to(PACKAGE.parent)} imports upward: {sorted(wrong)}"


def test_profiles_policies_and_checker_never_load_onnxruntime():
    code = (
        "import sys, hwquant, hwquant.policies, hwquant.checker; "
        "hwquant.get_profile('restricted-u8'); hwquant.list_profiles(); "
        "print('onnxruntime' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
