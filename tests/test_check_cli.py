"""The report (counts, table, JSON keys), unusable input, and the ``hwquant check`` command's exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import modelzoo
import onnx
import pytest
from test_check_rules import U8, conv

from hwquant import CheckReport, ModelError, UnknownNameError, check
from hwquant.checker import RULES, SCHEMA, Finding

REPORT_KEYS = {"schema", "model", "profile", "format", "ok", "counts", "checked", "findings"}
FINDING_KEYS = {"rule", "severity", "node", "tensor", "role", "expected", "found", "message"}


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Path]:
    """A passing and a failing model (against restricted-u8), a float model, and a file that is not ONNX."""
    paths = {
        "pass": tmp_path / "pass.onnx",
        "fail": tmp_path / "fail.onnx",
        "float": tmp_path / "float.onnx",
        "junk": tmp_path / "junk.onnx",
    }
    onnx.save(conv(act=(0.02, 128, U8), out=(0.05, 0, U8)), paths["pass"])
    onnx.save(conv(act=(0.02, 131, U8)), paths["fail"])
    onnx.save(modelzoo.cnn(), paths["float"])
    paths["junk"].write_text("this is not a model\n")
    return paths


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run(*args: str) -> Run:
    """The installed console script, as users run it (errors pass through its main())."""
    exe = Path(sys.executable).with_name("hwquant")
    proc = subprocess.run(
        [str(exe), "check", *args], capture_output=True, text=True, env=os.environ | {"NO_COLOR": "1"}
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


# ---------------------------------------------------------------------------------------------- report


def test_report_counts_table_and_json(models):
    report = check(models["fail"], "restricted-u8")
    assert isinstance(report, CheckReport) and not report.ok
    assert report.counts() == {"errors": 1, "warnings": 0, "rules": {"zero-point": 1}}
    data = json.loads(report.to_json())
    assert set(data) == REPORT_KEYS
    assert data["schema"] == SCHEMA and data["ok"] is False and data["profile"] == "restricted-u8"
    assert data["model"] == str(models["fail"]) and data["format"] == "QDQ"
    assert data["checked"] == {"activations": 2, "weights": 1, "biases": 1, "nodes": 7}
    (finding,) = data["findings"]
    assert set(finding) == FINDING_KEYS
    assert finding == {
        "rule": "zero-point",
        "severity": "error",
        "node": "x.Q",
        "tensor": "x",
        "role": "activation",
        "expected": "one of [0, 128] within [0, 255]",
        "found": "131",
        "message": "uint8 activation 'x' has zero point 131, expected one of [0, 128] within [0, 255]",
    }
    text = report.render()
    for word in ("severity", "zero-point", "x.Q", "131", "FAIL", "1 error"):
        assert word in text
    assert "error: [zero-point]" in str(report.findings[0])


def test_findings_are_ordered_errors_first_then_by_rule():
    report = CheckReport(
        "m",
        "p",
        "QDQ",
        (
            Finding("coverage", "warning", "n", "t", "e", "f", "m"),
            Finding("bias", "error", "n", "t", "e", "f", "m"),
            Finding("dtype", "error", "n", "t", "e", "f", "m"),
        ),
    )
    assert [f.rule for f in report.findings] == ["dtype", "bias", "coverage"]
    assert report.counts()["rules"] == {"dtype": 1, "bias": 1, "coverage": 1}
    with pytest.raises(ValueError, match="unknown rule"):
        report.by_rule("no-such-rule")
    assert set(RULES) >= {"dtype", "bias", "coverage"}


def test_model_proto_is_accepted_and_left_unchanged():
    model = conv()
    before = model.SerializeToString()
    report = check(model, "ort-default")
    assert report.ok and report.model == "handmade"
    assert model.SerializeToString() == before


def test_profile_object_and_profile_file(tmp_path, models):
    from hwquant import get_profile

    assert check(models["pass"], get_profile("restricted-u8")).ok
    toml = tmp_path / "strict.toml"
    toml.write_text('name = "strict"\nextends = "ort-default"\n[activations]\nzero_points = { uint8 = [0] }\n')
    report = check(models["pass"], toml)
    assert report.profile == "strict" and [f.tensor for f in report.errors] == ["x"]


# ---------------------------------------------------------------------------------------------- unusable input


def test_missing_and_non_onnx_files_raise_model_error(models, tmp_path):
    with pytest.raises(ModelError, match=r"nope\.onnx: no such file"):
        check(tmp_path / "nope.onnx", "ort-default")
    with pytest.raises(ModelError, match=r"junk\.onnx: not"):
        check(models["junk"], "ort-default")
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match=r"empty\.onnx"):
        check(empty, "ort-default")
    with pytest.raises(ModelError, match="is a directory"):
        check(tmp_path, "ort-default")
    with pytest.raises(ModelError, match="no graph nodes"):
        check(onnx.ModelProto(), "ort-default")


def test_unknown_profile_raises(models):
    with pytest.raises(UnknownNameError, match="unknown profile 'tensorrt'"):
        check(models["pass"], "tensorrt")


def test_float_model_is_an_error_not_a_pass(models):
    report = check(models["float"], "ort-default")
    assert not report.ok and report.format == "float"
    assert report.by_rule("nothing-quantized")[0].severity == "error"


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_exit_0_on_pass(models):
    result = run(str(models["pass"]), "--profile", "restricted-u8")
    assert result.exit_code == 0, result.output
    assert "PASS" in result.stdout and "0 errors" in result.stdout


def test_cli_exit_1_on_error_findings(models):
    result = run(str(models["fail"]), "-p", "restricted-u8")
    assert result.exit_code == 1, result.output
    assert "zero-point" in result.stdout and "131" in result.stdout and "FAIL" in result.stdout


def test_cli_float_model_exit_1(models):
    result = run(str(models["float"]), "-p", "ort-default")
    assert result.exit_code == 1
    assert "nothing-quantized" in result.stdout


def test_cli_json(models):
    result = run(str(models["fail"]), "-p", "restricted-u8", "--json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert set(data) == REPORT_KEYS and data["ok"] is False
    assert [f["tensor"] for f in data["findings"]] == ["x"]
    result = run(str(models["pass"]), "-p", "restricted-u8", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"] is True


@pytest.mark.parametrize(
    ("which", "profile", "message"),
    [
        ("missing", "ort-default", "missing.onnx: no such file"),
        ("junk", "ort-default", "junk.onnx: not a readable ONNX model"),
        ("pass", "no-such-profile", "unknown profile 'no-such-profile'"),
    ],
)
def test_cli_exit_2_on_unusable_input(models, tmp_path, which, profile, message):
    path = models.get(which, tmp_path / f"{which}.onnx")
    result = run(str(path), "-p", profile)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert result.stdout == ""
