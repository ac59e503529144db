"""Tests a plugin author runs against the installed plugin: registration, the profile, the policy."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest
from hwquant_example_plugin import plugin
from hwquant_example_plugin.policy import acme_centered

import hwquant
from hwquant.plugins.registry import registry

# ---------------------------------------------------------------------------------------------- registration


def test_entry_point_is_installed():
    eps = {ep.name: ep for ep in metadata.entry_points(group="hwquant")}
    assert eps["example"].value == "hwquant_example_plugin.plugin"
    assert eps["example"].dist.name == "hwquant-example-plugin"


def test_hwquant_loads_the_plugin_without_error():
    info = registry().plugins["example"]
    assert info.error is None
    assert info.distribution == "hwquant-example-plugin"
    assert info.profiles == ("acme-npu-u8",)
    assert info.policies == ("acme-centered",)


def test_profile_and_policy_found_by_name():
    assert hwquant.get_policy("acme-centered") is acme_centered
    listed = {i.name: i for i in hwquant.list_profiles()}
    assert listed["acme-npu-u8"].plugin == "example"
    assert listed["acme-npu-u8"].path.name == "acme-npu-u8.toml"


def test_hooks_return_the_shipped_files():
    paths = plugin.hwquant_profiles()
    assert [p.name for p in paths] == ["acme-npu-u8.toml"]
    assert all(p.is_file() for p in paths)
    assert plugin.hwquant_policies() == {"acme-centered": acme_centered}


# ---------------------------------------------------------------------------------------------- the profile


def test_profile_resolves_through_extends():
    p = hwquant.get_profile("acme-npu-u8")
    assert p.extends == "restricted-u8"
    assert p.activations.dtype == "uint8"
    assert p.activations.allowed_zero_points("uint8") == [0, 128]  # inherited from restricted-u8
    assert p.activations.policy == "acme-centered"
    assert p.weights.dtype == "int8"
    assert p.weights.allowed_zero_points("int8") == [0]
    assert (p.weights.qrange("int8").qmin, p.weights.qrange("int8").qmax) == (-127, 127)
    assert p.weights.per_channel == {"Conv": 0}
    assert p.ops.exclude == ["Softmax"]


# ---------------------------------------------------------------------------------------------- the policy

U8_0_128 = hwquant.Constraints(dtype="uint8", qmin=0, qmax=255, zero_points=(0, 128))
CONSTRAINTS = {
    "acme uint8 {0, 128}": U8_0_128,
    "uint8 any": hwquant.Constraints(dtype="uint8", qmin=0, qmax=255),
    "int8 {-64, 0, 64}": hwquant.Constraints(dtype="int8", qmin=-128, qmax=127, zero_points=(-64, 0, 64)),
    "int8 narrow {0}": hwquant.Constraints(dtype="int8", qmin=-127, qmax=127, zero_points=(0,)),
    "int8 pow2 {0}": hwquant.Constraints(
        dtype="int8", qmin=-128, qmax=127, zero_points=(0,), scale_form="power-of-two", min_exponent=-20
    ),
    "uint16 min range": hwquant.Constraints(dtype="uint16", qmin=0, qmax=65535, min_real_range=1e-4),
    "uint8 reduced {0, 64}": hwquant.Constraints(dtype="uint8", qmin=0, qmax=127, zero_points=(0, 64)),
    "uint8 only {0}": hwquant.Constraints(dtype="uint8", qmin=0, qmax=255, zero_points=(0,)),
}


def _ranges(seed: int = 0, n: int = 300) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    out = [(0.0, 0.0), (0.0, 6.0), (-1.0, 1.0), (-3.0, 0.0), (-1e-9, 1e-9), (-2.0, 1e5), (5.0, 7.0), (-7.0, -5.0)]
    for _ in range(n):
        a, b = np.sort(rng.standard_normal(2) * 10.0 ** rng.uniform(-4, 4))
        out.append((float(a), float(b)))
    return out


@pytest.mark.parametrize("name", CONSTRAINTS)
def test_policy_obeys_constraints_and_covers_the_range(name):
    c = CONSTRAINTS[name]
    for rmin, rmax in _ranges():
        qp = acme_centered(hwquant.TensorStats(rmin, rmax), c)
        assert c.allows(qp) is None, (name, rmin, rmax, qp)
        lo, hi = qp.covered(c.qmin, c.qmax)
        need_lo, need_hi = min(rmin, 0.0), max(rmax, 0.0)
        can_cover = (need_lo == 0 or any(z > c.qmin for z in c.candidate_zero_points())) and (
            need_hi == 0 or any(z < c.qmax for z in c.candidate_zero_points())
        )
        if can_cover:  # else one side clips, by design
            assert lo <= need_lo * (1 - 1e-6), (name, rmin, rmax, qp)
            assert hi >= need_hi * (1 - 1e-6), (name, rmin, rmax, qp)


def test_non_negative_tensor_takes_zero_point_0():
    qp = acme_centered(hwquant.TensorStats(0.0, 6.0), U8_0_128)
    assert qp.zero_point == 0
    assert float(qp.scale) == pytest.approx(6.0 / 255, rel=1e-6)


def test_signed_tensor_takes_zero_point_128():
    qp = acme_centered(hwquant.TensorStats(-1.0, 1.0), U8_0_128)
    assert qp.zero_point == 128
    assert float(qp.scale) == pytest.approx(1.0 / 127, rel=1e-6)  # the positive side needs 1/127 > 1/128


def test_nearest_centred_zero_point_wins_over_smallest_scale():
    # int8 {-64, 0, 64}, range [-1, 3]: the centred zero point is -128 + 255/4 = -64.25, so -64 is taken
    c = CONSTRAINTS["int8 {-64, 0, 64}"]
    qp = acme_centered(hwquant.TensorStats(-1.0, 3.0), c)
    assert qp.zero_point == -64
    assert float(qp.scale) == pytest.approx(max(1.0 / 64, 3.0 / 191), rel=1e-6)


def test_scale_is_never_rounded_below_the_need():
    for rmax in np.linspace(0.1, 10.0, 97):
        qp = acme_centered(hwquant.TensorStats(0.0, float(rmax)), U8_0_128)
        assert float(qp.scale) * 255 >= rmax


def test_power_of_two_scale():
    qp = acme_centered(hwquant.TensorStats(-1.0, 1.0), CONSTRAINTS["int8 pow2 {0}"])
    assert qp.zero_point == 0
    assert float(qp.scale) == 2.0**-6  # [-1, 1] needs 1/127 at qmax = 127, just above 2**-7
