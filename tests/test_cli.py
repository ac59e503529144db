"""The ``hwquant`` command, run as the installed console script in a subprocess.

Every command on success and on each kind of bad input: exit codes (0 success, 1 the model fails its
profile or verification, 2 bad usage or unusable input), messages that name the culprit in one or two
lines without a traceback, and no partial output.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import modelzoo
import numpy as np
import onnx
import pytest

import hwquant

REPO = Path(__file__).resolve().parents[1]
DIGITS = REPO / "examples" / "digits"
MODEL = DIGITS / "digits_cnn.onnx"
CALIB = DIGITS / "calibration.npz"
EVAL = DIGITS / "eval.npz"
ANSI = re.compile(r"\x1b\[")
COLOUR = re.compile(r"\x1b\[[0-9;]*(?:3[0-9]|9[0-7]|4[0-9])(?:;[0-9;]*)?m")


def _script() -> str:
    beside = Path(sys.executable).parent / ("hwquant.exe" if os.name == "nt" else "hwquant")
    found = str(beside) if beside.exists() else shutil.which("hwquant")
    assert found, "the hwquant console script is not installed next to this Python"
    return found


HWQUANT = _script()
_COLOUR_VARS = {"FORCE_COLOR", "PY_COLORS", "GITHUB_ACTIONS", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"}


def cli(*args: object, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``hwquant ARGS`` with output captured (not a terminal) and a wide, colourless default."""
    base = {k: v for k, v in os.environ.items() if k not in _COLOUR_VARS | {"HWQUANT_DEBUG", "COLUMNS"}}
    base["COLUMNS"] = "200"
    base.update(env or {})
    return subprocess.run(
        [HWQUANT, *map(str, args)],
        capture_output=True,
        text=True,
        env=base,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def cli_all(*commands: list[object], env: dict[str, str] | None = None) -> list[subprocess.CompletedProcess]:
    """Run several independent ``hwquant`` commands at once (each start-up imports onnx: ~1 s)."""
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return list(pool.map(lambda args: cli(*args, env=env), commands))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, *culprits: str) -> None:
    """Exit ``code``, a short error naming every culprit, no traceback."""
    assert proc.returncode == code, f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith("error:")]
    assert len(error_lines) == 1, proc.stderr
    start = lines.index(error_lines[0])
    message = " ".join(lines[start : start + 2])
    for culprit in culprits:
        assert culprit in message, f"{culprit!r} not in {message!r}"


# ------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Inputs good and bad, outside the checkout."""
    d = tmp_path_factory.mktemp("cli")
    paths = {
        "not_onnx": d / "notes.onnx",
        "bad_profile": d / "bad-profile.toml",
        "floaty": d / "floaty.toml",
        "empty_dir": d / "empty-calib",
        "junk_dir": d / "junk-calib",
        "wrong_names": d / "wrong-names.npz",
        "other_model": d / "cnn.onnx",
        "not_json": d / "report.txt",
    }
    paths["not_onnx"].write_text("this is not an ONNX model\n")
    paths["bad_profile"].write_text(
        'name = "bad-profile"\nextends = "ort-default"\n\n[activations]\ndtypes = ["uint9"]\n'
    )
    paths["floaty"].write_text('name = "floaty"\nextends = "ort-default"\n\n[ops]\nexclude = ["Conv", "Gemm"]\n')
    paths["empty_dir"].mkdir()
    paths["junk_dir"].mkdir()
    (paths["junk_dir"] / "readme.txt").write_text("no samples here\n")
    image = np.load(CALIB)["image"]
    np.savez(paths["wrong_names"], pixels=image)
    onnx.save(modelzoo.cnn(), paths["other_model"])
    paths["not_json"].write_text("not json {")
    return paths


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> dict[str, object]:
    """One successful quantize run of the digits example for restricted-u8, shared by later tests."""
    d = tmp_path_factory.mktemp("quantized")
    out, report, cache = d / "digits.u8.onnx", d / "report.json", d / "calib.npz"
    before = sha(MODEL)
    proc = cli(
        "quantize", MODEL, out, "--profile", "restricted-u8", "--calibration", CALIB, "--eval", EVAL,
        "--report", report, "--calibration-cache", cache,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sha(MODEL) == before
    return {"dir": d, "model": out, "report": report, "cache": cache, "proc": proc}


# ------------------------------------------------------------------------------------------------- root


def test_version_and_help():
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"hwquant {hwquant.__version__}"
    proc = cli("--help")
    assert proc.returncode == 0
    for command in ("quantize", "check", "compare", "explain", "profiles", "plugins"):
        assert command in proc.stdout
    assert "Exit codes" in proc.stdout


COMMANDS = ["quantize", "check", "compare", "explain", "plugins", "profiles list", "profiles show", "profiles schema",
            "profiles diff"]  # fmt: skip


def _help_sections() -> dict[str, str]:
    """docs/cli.md, generated from every command's --help (test_cli_reference_is_up_to_date keeps it current)."""
    text = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    return {m.group(1): m.group(2) for m in re.finditer(r"## `hwquant ?(.*?)`\n\n```text\n(.*?)```", text, re.DOTALL)}


def test_every_command_has_help_with_an_example():
    sections = _help_sections()
    for command in COMMANDS:
        text = sections[command]
        assert "Usage: hwquant " + command in text
        assert re.search(r"Examples?:", text), command
        assert f"hwquant {command}" in text.split("Example", 1)[1], command
    # and the console script prints the same help
    quantize, diff = cli_all(["quantize", "--help"], ["profiles", "diff", "-h"], env={"COLUMNS": "100"})
    for command, proc in (("quantize", quantize), ("profiles diff", diff)):
        assert proc.returncode == 0
        assert " ".join(proc.stdout.split()) == " ".join(sections[command].split())


def test_no_arguments_shows_help():
    proc = cli()
    assert proc.returncode in (0, 2)
    assert "Usage: hwquant" in proc.stdout + proc.stderr


def test_bad_usage_exits_2():
    flag, command, choice, both = cli_all(
        ["quantize", MODEL, "out.onnx", "--profile", "ort-default", "--no-such-flag"],
        ["no-such-command"],
        ["quantize", MODEL, "out.onnx", "--profile", "ort-default", "--method", "median"],
        ["--quiet", "--verbose", "profiles", "list"],
    )
    assert flag.returncode == 2 and "--no-such-flag" in flag.stderr
    assert command.returncode == 2 and "no-such-command" in command.stderr
    assert choice.returncode == 2 and "median" in choice.stderr
    assert both.returncode == 2 and "--quiet" in both.stderr


def test_piped_output_has_no_ansi_escapes():
    commands = [["profiles", "list"], ["plugins"], ["profiles", "show", "nope"]]
    for args, proc in zip(commands, cli_all(*commands), strict=True):
        assert not ANSI.search(proc.stdout + proc.stderr), args


def test_no_color_turns_colour_off_even_when_forced():
    (forced,) = cli_all(["profiles", "show", "nope"], env={"FORCE_COLOR": "1"})
    assert COLOUR.search(forced.stderr), "FORCE_COLOR should colour the error (sanity check of the regex)"
    (proc,) = cli_all(["profiles", "show", "nope"], env={"FORCE_COLOR": "1", "NO_COLOR": "1"})
    assert proc.returncode == 2
    assert not COLOUR.search(proc.stdout + proc.stderr)


def test_debug_shows_the_traceback():
    plain, debug = cli_all(["profiles", "show", "restricted_u8"], ["--debug", "profiles", "show", "restricted_u8"])
    assert_clean_error(plain, 2, "restricted_u8")
    assert debug.returncode == 2
    assert "Traceback" in debug.stderr and "UnknownNameError" in debug.stderr
    env = cli("profiles", "show", "restricted_u8", env={"HWQUANT_DEBUG": "1"})
    assert "Traceback" in env.stderr


# ------------------------------------------------------------------------------------------------- profiles


def test_profiles_list():
    proc, as_json, verbose = cli_all(["profiles", "list"], ["profiles", "list", "--json"], ["-v", "profiles", "list"])
    assert proc.returncode == 0, proc.stderr
    for info in hwquant.list_profiles():
        assert info.name in proc.stdout
    # first sentence only: the full restricted-u8 description is several sentences long
    assert "Applies to every uint8 activation" not in proc.stdout
    by_name = {r["name"]: r for r in json.loads(as_json.stdout)}
    assert by_name["restricted-u8"]["description"] == hwquant.get_profile("restricted-u8").description
    assert {"name", "description", "source", "plugin", "extends", "path"} <= set(by_name["ort-default"])
    assert "Applies to every uint8 activation" in " ".join(verbose.stdout.split())


def test_profiles_show_toml_round_trips(tmp_path):
    proc, default = cli_all(["profiles", "show", "restricted-u8", "--toml"], ["profiles", "show", "restricted-u8"])
    assert proc.returncode == 0, proc.stderr
    data = tomllib.loads(proc.stdout)
    assert data["activations"]["zero_points"] == {"uint8": [0, 128]}
    path = tmp_path / "copy.toml"
    path.write_text(proc.stdout)
    assert hwquant.load_profile(path) == hwquant.get_profile("restricted-u8")
    assert default.stdout.startswith("# profile 'restricted-u8' from plugin 'builtin'")
    assert tomllib.loads(default.stdout) == data


def test_profiles_show_json_and_file(files):
    builtin, from_file, both = cli_all(
        ["profiles", "show", "tflite-int8", "--json"],
        ["profiles", "show", files["floaty"], "--json"],
        ["profiles", "show", "ort-default", "--json", "--toml"],
    )
    assert json.loads(builtin.stdout) == hwquant.get_profile("tflite-int8").model_dump(mode="json")
    assert from_file.returncode == 0
    data = json.loads(from_file.stdout)
    assert data["name"] == "floaty" and data["ops"]["exclude"] == ["Conv", "Gemm"]
    assert both.returncode == 2


def test_profiles_show_errors(files, tmp_path):
    missing, broken = tmp_path / "missing.toml", tmp_path / "broken.toml"
    broken.write_text("name = \n")
    typo, invalid, absent, unparsable = cli_all(
        ["profiles", "show", "restricted_u8"],
        ["profiles", "show", files["bad_profile"]],
        ["profiles", "show", missing],
        ["profiles", "show", broken],
    )
    assert_clean_error(typo, 2, "restricted_u8", "Did you mean 'restricted-u8'")
    assert_clean_error(invalid, 2, str(files["bad_profile"]), "activations.dtypes")
    assert_clean_error(absent, 2, str(missing))
    assert_clean_error(unparsable, 2, str(broken), "TOML")


def test_profiles_schema():
    proc = cli("profiles", "schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema == json.loads(json.dumps(hwquant.profile_json_schema()))
    assert "activations" in schema["properties"]


def test_profiles_diff(files):
    proc, as_json, with_file, same, typo = cli_all(
        ["profiles", "diff", "ort-default", "restricted-u8"],
        ["profiles", "diff", "ort-default", "restricted-u8", "--json"],
        ["profiles", "diff", "ort-default", files["floaty"], "--json"],
        ["profiles", "diff", "tflite-int8", "tflite-int8"],
        ["profiles", "diff", "ort-default", "tensorrt_int8"],
    )
    assert proc.returncode == 0, proc.stderr
    assert "activations.policy" in proc.stdout and "restricted" in proc.stdout
    assert "activations.zero_points.uint8" in proc.stdout and "[0, 128]" in proc.stdout
    assert "weights.policy" not in proc.stdout  # equal fields are not listed
    data = json.loads(as_json.stdout)
    fields = {d["field"]: d for d in data["differences"]}
    assert fields["activations.policy"]["a"] == "asymmetric" and fields["activations.policy"]["b"] == "restricted"
    assert fields["activations.zero_points.uint8"]["unset"] == ["a"]
    file_diff = json.loads(with_file.stdout)
    assert {d["field"] for d in file_diff["differences"]} >= {"name", "ops.exclude"}
    assert same.returncode == 0 and "identical" in same.stdout
    assert_clean_error(typo, 2, "tensorrt_int8", "tensorrt-int8")


# ------------------------------------------------------------------------------------------------- plugins


def _fake_plugins(site: Path) -> None:
    """Two entry-point plugins on PYTHONPATH: one fails to import, one re-contributes 'ort-default'."""
    (site / "broken_plugin.py").write_text("raise RuntimeError('broken on purpose')\n")
    (site / "clash_plugin.py").write_text(
        "from hwquant import hookimpl\n\n@hookimpl\ndef hwquant_profiles():\n"
        "    return [{'name': 'ort-default', 'description': 'a second ort-default'}]\n"
    )
    for dist, ep in (("broken_plugin", "broken = broken_plugin"), ("clash_plugin", "clash = clash_plugin")):
        info = site / f"{dist}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[hwquant]\n{ep}\n")


def test_plugins():
    proc, as_json = cli_all(["plugins"], ["plugins", "--json"])
    assert proc.returncode == 0, proc.stderr
    assert "builtin" in proc.stdout and "hwquant" in proc.stdout and hwquant.__version__ in proc.stdout
    data = json.loads(as_json.stdout)
    (builtin,) = [p for p in data["plugins"] if p["name"] == "builtin"]
    assert builtin["ok"] and "restricted-u8" in builtin["profiles"] and "restricted" in builtin["policies"]


def test_plugins_failed_and_conflicting(tmp_path):
    _fake_plugins(tmp_path)
    proc, as_json, unusable = cli_all(
        ["plugins"], ["plugins", "--json"], ["profiles", "show", "ort-default"], env={"PYTHONPATH": str(tmp_path)}
    )
    assert proc.returncode == 0, proc.stderr
    assert "Failed to load" in proc.stdout and "broken on purpose" in proc.stdout
    assert "Conflicts" in proc.stdout and "profile ort-default" in proc.stdout
    data = json.loads(as_json.stdout)
    failed = {p["name"]: p for p in data["plugins"] if not p["ok"]}
    assert failed["broken"]["distribution"] == "broken_plugin" and failed["broken"]["version"] == "1.2.3"
    assert "RuntimeError: broken on purpose" in failed["broken"]["error"]
    assert data["conflicts"] == [{"kind": "profile", "name": "ort-default", "plugins": ["builtin", "clash"]}]
    # a conflicting name is unusable, with an error naming both plugins
    assert_clean_error(unusable, 2, "builtin", "clash")


# ------------------------------------------------------------------------------------------------- quantize


def test_quantize_summary(quantized):
    proc = quantized["proc"]
    text = " ".join(proc.stdout.split())
    for expected in ("restricted-u8", "(plugin builtin)", "5 / 5 compute ops quantized", "PASS", "SQNR", "probs"):
        assert expected in text, expected
    assert re.search(r"\d+(\.\d)? KB -> \d+(\.\d)? KB", text)
    assert "calibrating" in proc.stderr and "samples/s" in proc.stderr
    assert "skipping 'label'" in proc.stderr  # eval.npz holds labels beside the input
    assert quantized["model"].is_file() and quantized["cache"].is_file()
    report = json.loads(quantized["report"].read_text())
    assert report["ok"] and report["profile"] == "restricted-u8" and report["decisions"]
    assert report["samples"]["evaluation"] == 300
    assert hwquant.check(quantized["model"], "restricted-u8").ok


def test_quantize_json_and_cache(quantized, tmp_path):
    out = tmp_path / "again.onnx"
    proc = cli(
        "quantize", MODEL, out, "-p", "restricted-u8", "--calibration-cache", quantized["cache"], "--no-eval", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] and data["output"] == str(out)
    assert "reusing the calibration" in proc.stderr and "calibrating" not in proc.stderr
    assert out.is_file()


def test_quantize_quiet_prints_nothing_on_success(tmp_path):
    proc = cli("--quiet", "quantize", MODEL, tmp_path / "q.onnx", "-p", "ort-default", "-c", CALIB, "-n", "16")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and proc.stderr == ""


def test_quantize_random_warns(tmp_path):
    proc = cli("quantize", MODEL, tmp_path / "r.onnx", "-p", "tensorrt-int8", "--random", "8", "--no-eval")
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "random" in proc.stderr
    assert "tensorrt-int8" in proc.stdout


def test_quantize_verification_failure_writes_only_the_report(files, tmp_path):
    out, report = tmp_path / "float.onnx", tmp_path / "report.json"
    proc = cli("quantize", MODEL, out, "-p", files["floaty"], "-c", CALIB, "--report", report)
    assert_clean_error(proc, 1, "0 of 5 compute ops")
    assert not out.exists()
    assert json.loads(report.read_text())["coverage"]["quantized"] == 0
    assert "not written" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary files left behind
    # --no-verify writes it anyway
    proc = cli("quantize", MODEL, out, "-p", files["floaty"], "-c", CALIB, "--no-verify")
    assert proc.returncode == 0 and out.is_file()


BAD_QUANTIZE_INPUT = {
    # case: (what replaces the defaults, culprits the message must name)
    "missing model": ({"model": "{tmp}/no-such-model.onnx"}, ["no-such-model.onnx", "no such model file"]),
    "not onnx": ({"model": "{not_onnx}"}, ["notes.onnx", "not a readable ONNX model"]),
    "unknown profile": ({"profile": "restricted_u8"}, ["restricted_u8", "Did you mean 'restricted-u8'"]),
    "invalid profile file": ({"profile": "{bad_profile}"}, ["bad-profile.toml", "activations.dtypes", "uint9"]),
    "missing profile file": ({"profile": "{tmp}/missing-profile.toml"}, ["missing-profile.toml"]),
    "empty calibration dir": ({"extra": ["-c", "{empty_dir}"]}, ["empty-calib", "no samples"]),
    "calibration dir without samples": ({"extra": ["-c", "{junk_dir}"]}, ["junk-calib", "no samples"]),
    "missing calibration": ({"extra": ["-c", "{tmp}/no-such-calib.npz"]}, ["no-such-calib.npz", "not found"]),
    "mismatched input names": ({"extra": ["-c", "{wrong_names}"]}, ["'pixels'", "image"]),
    "no calibration at all": ({"extra": []}, ["--calibration", "--random"]),
    "calibration and random": ({"extra": ["-c", str(CALIB), "--random", "4"]}, ["--random"]),
    "output folder missing": ({"output": "{tmp}/no-such-folder/out.onnx"}, ["no-such-folder"]),
    "output is the input": ({"model": "{tmp}/in.onnx", "output": "{tmp}/in.onnx"}, ["in.onnx", "input"]),
    "report folder missing": (
        {"extra": ["-c", str(CALIB), "--report", "{tmp}/no-such-folder/r.json"]},
        ["--report", "no-such-folder"],
    ),
    "bad image size": ({"extra": ["-c", str(CALIB), "--image-size", "big"]}, ["--image-size", "big"]),
}


def test_quantize_bad_input(files, tmp_path):
    """Each kind of unusable input: exit 2, the culprit named, nothing written, the input untouched."""
    commands, folders = [], {}
    for i, (case, (changes, _)) in enumerate(BAD_QUANTIZE_INPUT.items()):
        tmp = tmp_path / f"case{i}"
        tmp.mkdir()
        shutil.copy(MODEL, tmp / "in.onnx")
        names = {k: str(v) for k, v in files.items()} | {"tmp": str(tmp)}
        args = {"model": str(MODEL), "output": f"{tmp}/out.onnx", "profile": "restricted-u8", "extra": ["-c", CALIB]}
        args |= changes
        values = [args["model"], args["output"], "--profile", args["profile"], *args["extra"]]
        commands.append(["quantize", *(str(v).format(**names) for v in values)])
        folders[case] = (tmp, {p.name: sha(p) for p in tmp.iterdir()})
    model_sha = sha(MODEL)
    for (case, (_, culprits)), proc in zip(BAD_QUANTIZE_INPUT.items(), cli_all(*commands), strict=True):
        try:
            assert_clean_error(proc, 2, *culprits)
        except AssertionError as exc:
            raise AssertionError(f"case '{case}': {exc}") from None
        tmp, before = folders[case]
        assert {p.name: sha(p) for p in tmp.iterdir()} == before, f"case '{case}' wrote or changed a file"
    assert sha(MODEL) == model_sha


# ------------------------------------------------------------------------------------------------- check


def test_check(quantized, files):
    q = quantized["model"]
    as_json, fail, typo, junk = cli_all(
        ["check", q, "--profile", "restricted-u8", "--json"],
        ["check", q, "--profile", "tensorrt-int8"],
        ["check", q, "--profile", "tensorrt_int8"],
        ["check", files["not_onnx"], "--profile", "ort-default"],
    )
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["ok"] and data["profile"] == "restricted-u8"
    assert fail.returncode == 1 and "FAIL" in fail.stdout
    assert_clean_error(typo, 2, "tensorrt_int8")
    assert_clean_error(junk, 2, "notes.onnx")


# ------------------------------------------------------------------------------------------------- compare


def test_compare(quantized):
    q = quantized["model"]
    proc, as_json, strict = cli_all(
        ["compare", MODEL, q, "--data", EVAL],
        ["compare", MODEL, q, "--data", EVAL, "--json", "-n", "50"],
        ["compare", MODEL, q, "--data", EVAL, "--min-sqnr", "200"],
    )
    assert proc.returncode == 0, proc.stderr
    assert "probs" in proc.stdout and "300 samples" in proc.stdout
    assert "label" in proc.stderr  # skipped: not a model input
    data = json.loads(as_json.stdout)
    (probs,) = data["outputs"]
    assert data["samples"] == 50 and probs["output"] == "probs"
    assert probs["sqnr_db"] > 20 and probs["cosine"] > 0.99 and probs["top1_agreement"] > 0.9
    assert probs["max_abs_error"] >= 0
    assert_clean_error(strict, 1, "SQNR below 200")


def test_compare_bad_input(quantized, files, tmp_path):
    q = quantized["model"]
    missing, junk, other, names, empty, no_data = cli_all(
        ["compare", tmp_path / "nope.onnx", q, "--data", EVAL],
        ["compare", MODEL, files["not_onnx"], "--data", EVAL],
        ["compare", files["other_model"], q, "--data", EVAL],
        ["compare", MODEL, q, "--data", files["wrong_names"]],
        ["compare", MODEL, q, "--data", files["empty_dir"]],
        ["compare", MODEL, q],
    )
    assert_clean_error(missing, 2, "nope.onnx")
    assert_clean_error(junk, 2, "notes.onnx")
    assert_clean_error(other, 2, "cnn.onnx", "different inputs")
    assert_clean_error(names, 2, "pixels", "image")
    assert_clean_error(empty, 2, "empty-calib")
    assert no_data.returncode == 2 and "--data" in no_data.stderr


# ------------------------------------------------------------------------------------------------- explain


def test_explain(quantized):
    report = quantized["report"]
    proc, as_json, top3 = cli_all(
        ["explain", report], ["explain", report, "--json", "--top", "0"], ["explain", report, "--json", "--top", "3"]
    )
    assert proc.returncode == 0, proc.stderr
    assert "restricted (builtin)" in proc.stdout and "added error" in proc.stdout
    data = json.loads(as_json.stdout)
    rows = data["decisions"]
    assert len(rows) == len(json.loads(report.read_text())["decisions"])
    added = [r["added_error"] for r in rows]
    assert added == sorted(added, reverse=True)  # costliest first
    shared = next(r for r in rows if r["group"] and r["rule"] == "shared")
    one = cli("explain", report, "--tensor", shared["tensor"])
    assert one.returncode == 0
    assert "shares qparams with" in one.stdout
    assert all(member in one.stdout for member in shared["group"])
    top = json.loads(top3.stdout)
    assert [r["tensor"] for r in top["decisions"]] == [r["tensor"] for r in rows[:3]]


def test_explain_bad_input(quantized, files, tmp_path):
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    typo, missing, junk, not_report = cli_all(
        ["explain", quantized["report"], "--tensor", "conv1.W"],
        ["explain", tmp_path / "nope.json"],
        ["explain", files["not_json"]],
        ["explain", other],
    )
    assert_clean_error(typo, 2, "conv1.W", "conv1.w")
    assert_clean_error(missing, 2, "nope.json")
    assert_clean_error(junk, 2, "report.txt", "not a hwquant report")
    assert_clean_error(not_report, 2, "other.json", "decisions")


# ------------------------------------------------------------------------------------------------- docs


def test_cli_reference_is_up_to_date():
    proc = subprocess.run(
        [sys.executable, str(REPO / "docs" / "gen_cli_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr + "\nregenerate with: python docs/gen_cli_reference.py"
    text = (REPO / "docs" / "cli.md").read_text()
    for command in ("quantize", "check", "compare", "explain", "plugins", "profiles list", "profiles diff"):
        assert f"## `hwquant {command}`" in text
