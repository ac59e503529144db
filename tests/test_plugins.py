"""Plugins: in-process registries built from real pluggy plugins, entry points from real distribution metadata,
and (slow) the example plugin and a broken one installed with pip into a fresh venv."""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
import types
from pathlib import Path

import numpy as np
import pytest
from conftest import BUILTIN_PROFILES, EXAMPLE_PLUGIN, REPO, clean_env, run

import hwquant
from hwquant.errors import PluginError, ProfileError, UnknownNameError
from hwquant.plugins.builtin import builtin_profiles_dir
from hwquant.plugins.registry import Registry
from hwquant.policies import BUILTIN_POLICIES


def half_scale(stats: hwquant.TensorStats, constraints: hwquant.Constraints) -> hwquant.QParams:
    """A toy policy: zero point 0 (or the smallest allowed), scale 0.5."""
    return hwquant.QParams(np.float32(0.5), int(constraints.candidate_zero_points()[0]))


class Contrib:
    """A real pluggy plugin object contributing the given profiles and policies."""

    def __init__(self, profiles=(), policies=None):
        self._profiles = list(profiles)
        self._policies = dict(policies or {})

    @hwquant.hookimpl
    def hwquant_profiles(self):
        return self._profiles

    @hwquant.hookimpl
    def hwquant_policies(self):
        return self._policies


def module_plugin(name: str, **hooks) -> types.ModuleType:
    """A plugin that is a module, like the ones entry points name."""
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(mod, hook_name, hwquant.hookimpl(fn))
    return mod


def load(**plugins) -> Registry:
    return Registry.load(extra_plugins=plugins, entry_points=False)


# ------------------------------------------------------------------------------------------------ in process


def test_builtins_come_through_the_same_hooks():
    reg = load()
    assert list(reg.plugins) == ["builtin"]
    info = reg.plugins["builtin"]
    assert info.error is None
    assert info.distribution == "hwquant"
    assert info.profiles == tuple(sorted(BUILTIN_PROFILES))
    assert info.policies == tuple(sorted(BUILTIN_POLICIES))
    for name in BUILTIN_PROFILES:
        where = reg.profile_info(name)
        assert where.plugin == "builtin"
        assert where.path == builtin_profiles_dir() / f"{name}.toml"
    assert reg.policy_entry("restricted") == (BUILTIN_POLICIES["restricted"], "builtin")
    assert reg.conflicts() == {}


def test_plugin_contributes_profiles_in_every_form_and_a_policy(tmp_path):
    path = tmp_path / "file-npu.toml"
    path.write_text('name = "file-npu"\nextends = "dict-npu"\n[weights]\npolicy = "half"\n', encoding="utf-8")
    as_dict = {"name": "dict-npu", "extends": "tflite-int8", "activations": {"policy": "half"}}
    as_object = hwquant.Profile(name="object-npu", description="from an object", weights={"policy": "mse"})
    reg = load(mine=Contrib([path, as_dict, as_object], {"half": half_scale}))
    assert reg.plugins["mine"].profiles == ("dict-npu", "file-npu", "object-npu")
    assert reg.plugins["mine"].policies == ("half",)
    assert reg.get_policy("half") is half_scale
    profile = reg.get_profile("file-npu")  # file -> dict -> built-in file
    assert profile.activations.policy == profile.weights.policy == "half"
    assert profile.ops.fixed_output == reg.get_profile("tflite-int8").ops.fixed_output
    assert reg.get_profile("object-npu") == as_object
    assert reg.profile_info("file-npu").path == path
    assert reg.profile_info("dict-npu").origin == "profile 'dict-npu' from plugin 'mine'"


def test_module_plugin():
    mod = module_plugin("tiny_plugin", hwquant_policies=lambda: {"half": half_scale})
    reg = load(tiny=mod)
    assert reg.plugins["tiny"].policies == ("half",)
    assert reg.plugins["tiny"].profiles == ()
    assert reg.policy_entry("half") == (half_scale, "tiny")


def test_same_profile_from_two_plugins_names_both_on_lookup():
    reg = load(alpha=Contrib([{"name": "twin-npu"}]), beta=Contrib([{"name": "twin-npu"}, {"name": "solo-npu"}]))
    # loading succeeds; the clash is reported when the name is used
    assert reg.plugins["alpha"].error is None and reg.plugins["beta"].error is None
    for lookup in (reg.get_profile, reg.profile_info):
        with pytest.raises(PluginError) as exc:
            lookup("twin-npu")
        assert "'twin-npu'" in str(exc.value) and "alpha" in str(exc.value) and "beta" in str(exc.value)
    assert reg.get_profile("solo-npu").name == "solo-npu"
    assert reg.get_profile("ort-default").name == "ort-default"
    assert {k: sorted(v) for k, v in reg.conflicts().items()} == {"profile twin-npu": ["alpha", "beta"]}


def test_same_policy_from_two_plugins_names_both_on_lookup():
    uses = {"name": "uses-twin", "activations": {"policy": "twin"}}
    reg = load(alpha=Contrib([uses], {"twin": half_scale}), beta=Contrib(policies={"twin": half_scale}))
    with pytest.raises(PluginError) as exc:
        reg.get_policy("twin")
    assert "policy 'twin'" in str(exc.value) and "alpha" in str(exc.value) and "beta" in str(exc.value)
    with pytest.raises(PluginError, match=r"alpha, beta|beta, alpha"):
        reg.get_profile("uses-twin")  # a profile naming a conflicted policy cannot resolve either
    assert reg.get_policy("symmetric") is BUILTIN_POLICIES["symmetric"]


def test_plugin_reusing_a_builtin_name_conflicts_with_builtin():
    reg = load(shadow=Contrib([{"name": "tflite-int8"}], {"symmetric": half_scale}))
    with pytest.raises(PluginError, match="builtin, shadow"):
        reg.get_profile("tflite-int8")
    with pytest.raises(PluginError, match="builtin, shadow"):
        reg.get_policy("symmetric")
    assert reg.get_policy("asymmetric") is BUILTIN_POLICIES["asymmetric"]


def test_hook_that_raises_is_reported_and_others_still_load():
    def boom():
        raise RuntimeError("the Acme SDK is not installed")

    broken = module_plugin("broken_plugin", hwquant_profiles=boom, hwquant_policies=lambda: {"lost": half_scale})
    reg = load(broken=broken, good=Contrib([{"name": "good-npu"}], {"half": half_scale}))
    info = reg.plugins["broken"]
    assert info.error is not None
    assert "RuntimeError: the Acme SDK is not installed" in info.error and "broken" in info.error
    # a plugin counts whole or not at all: its working hook contributes nothing either
    assert info.profiles == () and info.policies == ()
    with pytest.raises(UnknownNameError):
        reg.get_policy("lost")
    assert reg.plugins["good"].error is None
    assert reg.get_profile("good-npu").name == "good-npu"
    assert reg.get_policy("half") is half_scale
    assert set(BUILTIN_PROFILES) <= set(reg.profile_names())


@pytest.mark.parametrize(
    ("profiles", "policies", "message"),
    [
        ("one.toml", None, "must return a list of profiles"),
        ([42], None, "hwquant_profiles returned int"),
        (["{tmp}/missing.toml"], None, "missing.toml"),
        (["{tmp}/bad.toml"], None, "not valid TOML"),
        ([{"description": "no name"}], None, "needs a 'name'"),
        ([], ["half"], "must return a mapping"),
        ([], {"half": "not callable"}, "policy 'half' is not callable"),
    ],
)
def test_unusable_hook_results_are_reported(tmp_path, profiles, policies, message):
    (tmp_path / "bad.toml").write_text("name = [", encoding="utf-8")
    if isinstance(profiles, list):
        profiles = [p.format(tmp=tmp_path) if isinstance(p, str) else p for p in profiles]
    odd = Contrib(policies={})
    odd._profiles, odd._policies = profiles, policies
    reg = load(odd=odd, good=Contrib([{"name": "good-npu"}]))
    assert message in reg.plugins["odd"].error
    assert reg.plugins["good"].error is None and reg.get_profile("good-npu")


def test_unknown_policy_in_a_plugin_profile_names_the_plugin():
    reg = load(mine=Contrib([{"name": "needs-policy", "weights": {"policy": "not-there"}}]))
    with pytest.raises(ProfileError) as exc:
        reg.get_profile("needs-policy")
    assert exc.value.field == "weights.policy"
    assert "profile 'needs-policy' from plugin 'mine'" in str(exc.value)


def _fake_distribution(site: Path, dist: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Write an installed distribution (dist-info with entry_points.txt) and its modules into ``site``."""
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n", encoding="utf-8")
    eps = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[hwquant]\n{eps}", encoding="utf-8")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")


def test_entry_points_from_installed_metadata(tmp_path, monkeypatch):
    site = tmp_path / "site"
    good = """
        import hwquant
        @hwquant.hookimpl
        def hwquant_profiles():
            return [{"name": "ep-npu", "extends": "restricted-u8"}]
    """
    _fake_distribution(site, "ep-good", {"epgood": "ep_good_mod"}, {"ep_good_mod": good})
    _fake_distribution(site, "ep-broken", {"epbroken": "ep_broken_mod"}, {"ep_broken_mod": "raise ImportError('no')"})
    _fake_distribution(site, "ep-squatter", {"builtin": "ep_good_mod"}, {})
    monkeypatch.syspath_prepend(str(site))
    for mod in ("ep_good_mod", "ep_broken_mod"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    reg = Registry.load()
    assert reg.plugins["epgood"].distribution == "ep-good"
    assert reg.plugins["epgood"].version == "1.0"
    assert reg.plugins["epgood"].profiles == ("ep-npu",)
    assert reg.get_profile("ep-npu").activations.policy == "restricted"
    broken = reg.plugins["epbroken"]
    assert broken.distribution == "ep-broken"
    assert "ImportError: no" in broken.error and "ep_broken_mod" in broken.error
    # an entry point reusing a loaded plugin's name is reported under its own key; 'builtin' is untouched
    assert reg.plugins["builtin"].distribution == "hwquant" and reg.plugins["builtin"].error is None
    assert "already loaded" in reg.plugins["builtin (ep-squatter)"].error
    assert set(BUILTIN_PROFILES) <= set(reg.profile_names())


def test_hwquant_code_never_names_the_example_plugin():
    for path in [*(REPO / "hwquant").rglob("*.py"), *(REPO / "profiles").glob("*"), REPO / "pyproject.toml"]:
        text = path.read_text(encoding="utf-8")
        for word in ("hwquant_example_plugin", "hwquant-example-plugin", "acme-npu-u8", "acme-centered"):
            assert word not in text.lower(), f"{path} mentions {word}"


# ------------------------------------------------------------------------------------------------ installed

PROBE = """
import json, hwquant
from hwquant.plugins.registry import registry
profile = hwquant.get_profile("acme-npu-u8")
policy = hwquant.get_policy("acme-centered")
qp = policy(hwquant.TensorStats(-1.0, 3.0), hwquant.Constraints("uint8", 0, 255, (0, 128)))
print(json.dumps({
    "hwquant": hwquant.__file__,
    "profile": profile.model_dump(mode="json"),
    "policy": policy.__module__,
    "qparams": [float(qp.scale), qp.zero_point],
    "plugins": {n: vars(i) for n, i in registry().plugins.items()},
    "builtins": [hwquant.get_profile(n).name for n in %r],
}))
"""


def probe(venv, env=None) -> dict:
    return json.loads(run([venv.python, "-c", PROBE % (BUILTIN_PROFILES,)], cwd=venv.workdir, env=env).stdout)


@pytest.mark.slow
def test_installed_plugin_is_found_by_name(installed):
    out = probe(installed)
    assert Path(out["hwquant"]).is_relative_to(installed.root)  # the wheel, not the checkout
    assert out["profile"]["name"] == "acme-npu-u8"
    assert out["profile"]["activations"]["policy"] == "acme-centered"
    assert out["profile"]["activations"]["zero_points"] == {"uint8": [0, 128]}
    assert out["policy"] == "hwquant_example_plugin.policy"
    assert out["qparams"][1] == 128
    example = out["plugins"]["example"]
    assert example["error"] is None
    assert (example["distribution"], example["version"]) == ("hwquant-example-plugin", "0.1.0")
    assert example["profiles"] == ["acme-npu-u8"] and example["policies"] == ["acme-centered"]
    assert out["builtins"] == list(BUILTIN_PROFILES)


@pytest.mark.slow
def test_installed_cli_lists_plugin_profile(installed):
    table = run([installed.script("hwquant"), "profiles", "list"], cwd=installed.workdir).stdout
    assert "acme-npu-u8" in table and "example" in table
    rows = json.loads(run([installed.script("hwquant"), "profiles", "list", "--json"], cwd=installed.workdir).stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["acme-npu-u8"]["plugin"] == "example"
    assert "Acme NPU-1" in by_name["acme-npu-u8"]["description"]


@pytest.mark.slow
def test_example_plugin_own_tests_pass(installed, tmp_path):
    copy = shutil.copytree(EXAMPLE_PLUGIN, tmp_path / "plugin", ignore=shutil.ignore_patterns("__pycache__"))
    proc = run([installed.python, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=copy)
    assert " passed" in proc.stdout and "failed" not in proc.stdout


BROKEN_PYPROJECT = """
[build-system]
requires = ["hatchling>=1.24"]
build-backend = "hatchling.build"

[project]
name = "hwquant-broken-plugin"
version = "0.3.0"

[project.entry-points.hwquant]
broken = "hwquant_broken_plugin"
"""


@pytest.mark.slow
def test_plugin_that_fails_to_import_is_reported(installed, tmp_path):
    src = tmp_path / "src"
    (src / "hwquant_broken_plugin").mkdir(parents=True)
    (src / "pyproject.toml").write_text(BROKEN_PYPROJECT, encoding="utf-8")
    (src / "hwquant_broken_plugin" / "__init__.py").write_text(
        'raise ImportError("libacme.so: cannot open shared object file")\n', encoding="utf-8"
    )
    # a real pip install, into its own folder put on the path, so the shared venv stays as it was
    site = tmp_path / "site"
    run([installed.python, "-m", "pip", "install", "-q", "--no-deps", "--target", site, src], cwd=tmp_path)
    env = clean_env(PYTHONPATH=str(site))
    out = probe(installed, env=env)
    broken = out["plugins"]["broken"]
    assert broken["distribution"] == "hwquant-broken-plugin" and broken["version"] == "0.3.0"
    assert "ImportError: libacme.so: cannot open shared object file" in broken["error"]
    assert broken["profiles"] == [] and broken["policies"] == []
    assert out["plugins"]["example"]["error"] is None and out["plugins"]["builtin"]["error"] is None
    assert out["profile"]["name"] == "acme-npu-u8" and out["builtins"] == list(BUILTIN_PROFILES)
    rows = json.loads(run([installed.script("hwquant"), "profiles", "list", "--json"], cwd=tmp_path, env=env).stdout)
    assert {"acme-npu-u8", *BUILTIN_PROFILES} <= {r["name"] for r in rows}
