"""Profile validation: built-ins, JSON Schema, TOML/JSON files, ``extends``, and every contradiction reported
with the file and the field at fault."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from conftest import BUILTIN_PROFILES, REPO
from hypothesis import given
from hypothesis import strategies as st

import hwquant
from hwquant.errors import ProfileError, UnknownNameError
from hwquant.plugins.registry import Registry


def write(folder: Path, filename: str, text: str) -> Path:
    path = folder / filename
    path.write_text(text, encoding="utf-8")
    return path


class FilesPlugin:
    """A real plugin object contributing profile files (so files can extend each other by name)."""

    def __init__(self, *paths: Path):
        self.paths = list(paths)

    @hwquant.hookimpl
    def hwquant_profiles(self):
        return self.paths


def registry_with_files(*paths: Path) -> Registry:
    return Registry.load(extra_plugins={"files": FilesPlugin(*paths)}, entry_points=False)


def assert_names_file_and_field(err: ProfileError, path: Path, field: str) -> None:
    assert err.source == str(path)
    assert err.field == field
    assert str(path) in str(err)
    assert f"field '{field}'" in str(err)


# ------------------------------------------------------------------------------------------------ built-ins


def test_builtin_profile_files_are_the_six():
    assert sorted(p.stem for p in (REPO / "profiles").glob("*.toml")) == sorted(BUILTIN_PROFILES)
    listed = {i.name: i for i in hwquant.list_profiles()}
    for name in BUILTIN_PROFILES:
        assert listed[name].plugin == "builtin"
        assert listed[name].path.name == f"{name}.toml"


@pytest.mark.parametrize("name", BUILTIN_PROFILES)
def test_builtin_profile_loads(name):
    profile = hwquant.get_profile(name)
    assert profile.name == name
    assert profile.description and profile.source
    for policy in profile.policies():
        assert callable(hwquant.get_policy(policy))
    # the same file loads by path too, and a resolved profile survives a round trip through its own dump
    assert hwquant.load_profile(REPO / "profiles" / f"{name}.toml") == profile
    assert hwquant.Profile.model_validate(profile.model_dump()) == profile


def test_restricted_u8_inherits_from_ort_default():
    parent, child = hwquant.get_profile("ort-default"), hwquant.get_profile("restricted-u8")
    assert child.extends == "ort-default"
    assert child.weights == parent.weights
    assert child.activations.dtypes == parent.activations.dtypes
    assert child.activations.policy == "restricted"
    assert child.activations.allowed_zero_points("uint8") == [0, 128]


def test_profiles_are_frozen():
    profile = hwquant.get_profile("tflite-int8")
    with pytest.raises(ValueError):
        profile.name = "other"  # type: ignore[misc]
    with pytest.raises(ValueError):
        profile.activations.policy = "symmetric"  # type: ignore[misc]


# ------------------------------------------------------------------------------------------------ JSON Schema


def _refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_json_schema_export_is_well_formed():
    schema = hwquant.profile_json_schema()
    assert json.loads(json.dumps(schema)) == schema
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["required"] == ["name"]
    assert set(hwquant.Profile.model_fields) <= set(schema["properties"])
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in schema["$defs"], ref
    # unknown keys are rejected by the schema too, at every level
    for obj in [schema, *schema["$defs"].values()]:
        if "properties" in obj:
            assert obj.get("additionalProperties") is False, obj.get("title")


def test_builtin_files_validate_against_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = hwquant.profile_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for path in sorted((REPO / "profiles").glob("*.toml")):
        validator.validate(tomllib.loads(path.read_text(encoding="utf-8")))
    assert not validator.is_valid({"name": "x", "colour": "red"})


# ------------------------------------------------------------------------------------------------ files

PROFILE_TOML = """
name = "my-npu"
description = "a test target"
extends = "tflite-int8"

[activations]
policy = "restricted"
zero_points = { int8 = [-128, 0, 127] }  # must keep the fixed outputs (Softmax -128, LogSoftmax 127) valid

[weights]
per_channel = { Gemm = 0 }

[ops]
shared_qparams = ["Concat"]
"""


def test_toml_and_json_files_load_the_same(tmp_path):
    data = tomllib.loads(PROFILE_TOML)
    toml_profile = hwquant.load_profile(write(tmp_path, "my-npu.toml", PROFILE_TOML))
    json_path = write(tmp_path, "my-npu.json", json.dumps({"$schema": "profile.schema.json", **data}))
    assert hwquant.load_profile(json_path) == toml_profile
    assert hwquant.resolve(json_path) == toml_profile
    assert hwquant.resolve(str(json_path)) == toml_profile
    assert hwquant.resolve(toml_profile) is toml_profile


def test_extends_merges_field_by_field(tmp_path):
    parent = hwquant.get_profile("tflite-int8")
    child = hwquant.load_profile(write(tmp_path, "my-npu.toml", PROFILE_TOML))
    assert child.name == "my-npu" and child.description == "a test target"
    # overridden fields
    assert child.activations.policy == "restricted"
    assert child.activations.allowed_zero_points("int8") == [-128, 0, 127]
    # sibling fields of an overridden table are inherited
    assert child.activations.dtypes == parent.activations.dtypes == ["int8"]
    assert child.source == parent.source
    # tables merge key by key: Gemm is added next to the inherited Conv
    assert child.weights.per_channel == {"Conv": 0, "Gemm": 0}
    assert child.weights.qrange("int8") == parent.weights.qrange("int8")
    # lists replace
    assert child.ops.shared_qparams == ["Concat"]
    # untouched tables are the parent's
    assert child.ops.fixed_output == parent.ops.fixed_output
    assert child.bias == parent.bias


def test_extends_chain_across_files(tmp_path):
    base = write(tmp_path, "base.toml", 'name = "base"\n[activations]\ndtypes = ["uint16"]\nmin_real_range = 0.5\n')
    mid = write(tmp_path, "mid.toml", 'name = "mid"\nextends = "base"\n[weights]\nper_channel = { Conv = 0 }\n')
    top = write(tmp_path, "top.json", json.dumps({"name": "top", "extends": "mid", "activations": {"policy": "mse"}}))
    reg = registry_with_files(base, mid, top)
    profile = reg.get_profile("top")
    assert profile.activations.dtypes == ["uint16"]
    assert profile.activations.min_real_range == 0.5
    assert profile.activations.policy == "mse"
    assert profile.weights.per_channel == {"Conv": 0}
    assert reg.profile_info("top").path == top


# ------------------------------------------------------------------------------------------------ errors

CONTRADICTIONS = {
    "zero point outside [qmin, qmax]": (
        "[activations]\nranges = { uint8 = { qmin = 0, qmax = 127 } }\nzero_points = { uint8 = [0, 128] }",
        "activations.zero_points.uint8",
        "[128] outside ranges.uint8 [0, 127]",
    ),
    "zero point outside the data type": (
        '[activations]\ndtypes = ["int8"]\nzero_points = { int8 = [0, 200] }',
        "activations.zero_points.int8",
        "[200] outside int8 [-128, 127]",
    ),
    "weight zero point outside the narrow range": (
        "[weights]\nzero_points = { int8 = [-128] }",
        "weights.zero_points.int8",
        "[-128] outside ranges.int8 [-127, 127]",
    ),
    "empty zero-point list": ("[activations]\nzero_points = { uint8 = [] }", "activations.zero_points.uint8", "empty"),
    "qmin equal to qmax": (
        "[activations]\nranges = { uint8 = { qmin = 10, qmax = 10 } }",
        "activations.ranges.uint8",
        "qmin (10) must be below qmax (10)",
    ),
    "qmin above qmax": (
        '[weights]\nranges = { int8 = { qmin = 5, qmax = -5 } }\nzero_points = { int8 = "any" }',
        "weights.ranges.int8",
        "qmin (5) must be below qmax (-5)",
    ),
    "range exceeding the data type": (
        "[activations]\nranges = { uint8 = { qmin = 0, qmax = 300 } }",
        "activations.ranges.uint8",
        "[0, 300] exceeds uint8 [0, 255]",
    ),
    "int4 range exceeding the data type": (
        '[weights]\ndtypes = ["int4"]\nranges = { int4 = { qmin = -8, qmax = 8 } }',
        "weights.ranges.int4",
        "[-8, 8] exceeds int4 [-8, 7]",
    ),
    "fixed output breaks the profile's own zero points": (
        'extends = "restricted-u8"\n[ops.fixed_output]\nSoftmax = { uint8 = { scale = 0.00390625, zero_point = 5 } }',
        "ops.fixed_output.Softmax.uint8",
        "zero point 5 is not in activations.zero_points.uint8 [0, 128]",
    ),
    "fixed output zero point outside the range": (
        'extends = "tflite-int8"\n[ops.fixed_output]\nSoftmax = { int8 = { scale = 0.00390625, zero_point = 200 } }',
        "ops.fixed_output.Softmax.int8",
        "zero point 200 outside [-128, 127]",
    ),
    "fixed output scale breaks power-of-two": (
        'extends = "pow2-int8"\n[ops.fixed_output]\nSigmoid = { int8 = { scale = 0.003, zero_point = 0 } }',
        "ops.fixed_output.Sigmoid.int8",
        "scale 0.003 breaks activations.scale (power-of-two)",
    ),
    "unknown data type": ('[activations]\ndtypes = ["uint9"]', "activations.dtypes.0", "not 'uint9'"),
    "unknown data type as a key": (
        "[activations]\nranges = { int3 = { qmin = 0, qmax = 3 } }",
        "activations.ranges.int3",
        "not 'int3'",
    ),
    "unknown data type in a fixed output": (
        "[ops.fixed_output]\nSoftmax = { float8 = { scale = 0.5, zero_point = 0 } }",
        "ops.fixed_output.Softmax.float8",
        "not 'float8'",
    ),
    "default data type not listed": (
        '[activations]\ndtypes = ["uint8"]\ndefault_dtype = "int8"',
        "activations.default_dtype",
        "'int8' is not one of dtypes ['uint8']",
    ),
    "op both quantized and excluded": ('[ops]\nquantize = ["Conv"]\nexclude = ["Conv"]', "ops", "['Conv'] both"),
    "fixed output of an op whose output stays float": (
        '[ops]\nfloat_outputs = ["Softmax"]\n[ops.fixed_output.Softmax]\nuint8 = { scale = 0.5, zero_point = 0 }',
        "ops",
        "['Softmax'] both in float_outputs and fixed_output",
    ),
    "exponent bounds on float scales": (
        "[activations.scale]\nmin_exponent = -8",
        "activations.scale",
        "exponent bounds only apply",
    ),
    "unknown top-level key": ('colour = "red"', "colour", "Extra inputs are not permitted"),
    "unknown nested key (a typo)": ("[activations]\nzero_point = { uint8 = [0] }", "activations.zero_point", "Extra"),
    "unknown policy name": ('[activations]\npolicy = "symetric"', "activations.policy", "Did you mean 'symmetric'"),
    "badly spelled policy name": ('[weights]\npolicy = "My Policy"', "weights.policy", "String should match pattern"),
    "unknown parent": ('extends = "tflite-int"', "extends", "unknown parent profile 'tflite-int'"),
    "extends cycle": ('extends = "bad"', "extends", "extends cycle: bad -> bad"),
    "parent zero points broken by the child's range": (
        'extends = "restricted-u8"\n[activations]\nranges = { uint8 = { qmin = 0, qmax = 127 } }',
        "activations.zero_points.uint8",
        "[128] outside ranges.uint8 [0, 127]",
    ),
}


@pytest.mark.parametrize("case", CONTRADICTIONS)
@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_contradiction_names_file_and_field(tmp_path, case, suffix):
    body, field, message = CONTRADICTIONS[case]
    data = tomllib.loads(f'name = "bad"\n{body}\n')
    path = write(tmp_path, f"bad{suffix}", json.dumps(data) if suffix == ".json" else f'name = "bad"\n{body}\n')
    with pytest.raises(ProfileError) as exc:
        hwquant.load_profile(path)
    assert_names_file_and_field(exc.value, path, field)
    assert message in str(exc.value)


def test_extends_cycle_across_files_names_the_file(tmp_path):
    a = write(tmp_path, "cyc-a.toml", 'name = "cyc-a"\nextends = "cyc-b"\n')
    b = write(tmp_path, "cyc-b.toml", 'name = "cyc-b"\nextends = "cyc-a"\n')
    reg = registry_with_files(a, b)
    with pytest.raises(ProfileError) as exc:
        reg.get_profile("cyc-a")
    assert_names_file_and_field(exc.value, b, "extends")
    assert "cyc-a -> cyc-b -> cyc-a" in str(exc.value)


def test_unknown_parent_of_a_registered_file(tmp_path):
    child = write(tmp_path, "child.toml", 'name = "child"\nextends = "no-such-parent"\n')
    with pytest.raises(ProfileError) as exc:
        registry_with_files(child).get_profile("child")
    assert_names_file_and_field(exc.value, child, "extends")


def test_error_in_a_parent_file_names_the_parent(tmp_path):
    bad_range = "[weights]\nranges = { int8 = { qmin = -200, qmax = 9 } }\n"
    parent = write(tmp_path, "parent.toml", f'name = "parent"\n{bad_range}')
    child = write(tmp_path, "child.toml", 'name = "child"\nextends = "parent"\n')
    with pytest.raises(ProfileError) as exc:
        registry_with_files(parent, child).get_profile("child")
    assert_names_file_and_field(exc.value, parent, "weights.ranges.int8")


def test_unknown_policy_is_reported_when_the_profile_is_resolved(tmp_path):
    path = write(tmp_path, "p.toml", 'name = "p"\n[weights]\npolicy = "acme-secret"\n')
    reg = registry_with_files(path)
    assert "p" in reg.profile_names()  # registering reads the file; only resolving checks the policy
    with pytest.raises(ProfileError) as exc:
        reg.get_profile("p")
    assert_names_file_and_field(exc.value, path, "weights.policy")
    assert "unknown policy 'acme-secret'" in str(exc.value)


@pytest.mark.parametrize(
    ("filename", "text", "message"),
    [
        ("p.toml", 'name = "p"\n[activations\n', "not valid TOML"),
        ("p.json", '{"name": "p",', "not valid JSON"),
        ("p.json", '["p"]', "one table/object at the top level"),
        ("p.yaml", 'name: "p"', "end in .toml or .json"),
        ("p.toml", 'description = "no name"', "needs a 'name'"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, filename, text, message):
    path = write(tmp_path, filename, text)
    with pytest.raises(ProfileError) as exc:
        hwquant.load_profile(path)
    assert str(path) in str(exc.value) and message in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(ProfileError, match="cannot read profile file"):
        hwquant.load_profile(tmp_path / "nope.toml")


# ------------------------------------------------------------------------------------------------ names


def test_unknown_profile_name_lists_close_matches():
    with pytest.raises(UnknownNameError) as exc:
        hwquant.get_profile("tflite-int")
    err = exc.value
    assert isinstance(err, LookupError) and isinstance(err, hwquant.HwquantError)
    assert err.kind == "profile" and err.name == "tflite-int"
    assert "tflite-int8" in err.matches
    assert set(BUILTIN_PROFILES) <= set(err.known)
    assert "Did you mean 'tflite-int8'" in str(err)
    assert "Known profiles:" in str(err)


def test_unknown_policy_name_lists_close_matches():
    with pytest.raises(UnknownNameError) as exc:
        hwquant.get_policy("powerof-two")
    assert exc.value.matches[0] == "power-of-two"
    assert "Known policies:" in str(exc.value)


def test_unknown_name_without_close_match():
    with pytest.raises(UnknownNameError) as exc:
        hwquant.get_profile("zzzzzzzz")
    assert exc.value.matches == []
    assert "Did you mean" not in str(exc.value)


# ------------------------------------------------------------------------------------------------ property


@given(
    qmin=st.integers(-10, 265),
    qmax=st.integers(-10, 265),
    zps=st.lists(st.integers(-20, 275), min_size=1, max_size=4),
)
def test_uint8_rules_accept_exactly_the_consistent_ones(qmin, qmax, zps):
    rules = {"ranges": {"uint8": {"qmin": qmin, "qmax": qmax}}, "zero_points": {"uint8": zps}}
    data = {"name": "p", "activations": rules}
    consistent = 0 <= qmin < qmax <= 255 and all(qmin <= z <= qmax for z in zps)
    try:
        profile = hwquant.Profile.model_validate(data)
    except ValueError:
        assert not consistent
    else:
        assert consistent
        assert profile.activations.allowed_zero_points("uint8") == zps
