"""Every CLI command from hwquant's installed wheel (a fresh venv outside the checkout, with the example
plugin), run the way a user would: the main flows of the README."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import REPO, run

DIGITS = REPO / "examples" / "digits"


@pytest.mark.slow
def test_every_command_from_the_installed_wheel(installed):
    work = installed.workdir / "cli-flows"
    work.mkdir()
    for name in ("digits_cnn.onnx", "calibration.npz", "eval.npz"):
        shutil.copy(DIGITS / name, work / name)
    hwquant = installed.script("hwquant")

    def ok(*args: str) -> str:
        return run([hwquant, *args], cwd=work).stdout

    assert "hwquant " in ok("--version")
    profiles = {r["name"]: r for r in json.loads(ok("profiles", "list", "--json"))}
    assert profiles["acme-npu-u8"]["plugin"] == "example" and profiles["restricted-u8"]["plugin"] == "builtin"
    assert json.loads(ok("profiles", "show", "acme-npu-u8", "--json"))["activations"]["policy"] == "acme-centered"
    diff = json.loads(ok("profiles", "diff", "restricted-u8", "acme-npu-u8", "--json"))
    assert "activations.policy" in {d["field"] for d in diff["differences"]}
    assert "properties" in json.loads(ok("profiles", "schema"))
    plugins = {p["name"]: p for p in json.loads(ok("plugins", "--json"))["plugins"]}
    assert plugins["example"]["distribution"] == "hwquant-example-plugin" and plugins["example"]["ok"]

    summary = ok(
        "quantize", "digits_cnn.onnx", "digits.acme.onnx", "--profile", "acme-npu-u8",
        "--calibration", "calibration.npz", "--eval", "eval.npz", "--report", "report.json",
    )  # fmt: skip
    assert "PASS" in summary and (work / "digits.acme.onnx").is_file()
    assert json.loads(ok("check", "digits.acme.onnx", "--profile", "acme-npu-u8", "--json"))["ok"]
    (probs,) = json.loads(ok("compare", "digits_cnn.onnx", "digits.acme.onnx", "--data", "eval.npz", "--json"))[
        "outputs"
    ]
    assert probs["cosine"] > 0.99
    decisions = json.loads(ok("explain", "report.json", "--json"))["decisions"]
    assert any(d["policy"] == "acme-centered" and d["plugin"] == "example" for d in decisions)

    bad = run(
        [hwquant, "quantize", "digits_cnn.onnx", "x.onnx", "-p", "acme_npu_u8", "-c", "calibration.npz"],
        work,
        check=False,
    )
    assert bad.returncode == 2 and "Did you mean 'acme-npu-u8'" in bad.stderr and not (work / "x.onnx").exists()
