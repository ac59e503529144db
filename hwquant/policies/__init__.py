"""Policy layer: pure-numpy functions that turn an observed range into a scale and zero point.

The built-in policies are registered by :mod:`hwquant.plugins.builtin` through the same hook as
third-party ones; look them up with :func:`hwquant.get_policy`.
"""

from hwquant.policies.affine import asymmetric, symmetric
from hwquant.policies.base import Constraints, Policy, QParams, TensorStats, constraints_for
from hwquant.policies.mse import mse
from hwquant.policies.power_of_two import power_of_two
from hwquant.policies.restricted import restricted

BUILTIN_POLICIES: dict[str, Policy] = {
    "asymmetric": asymmetric,
    "symmetric": symmetric,
    "restricted": restricted,
    "power-of-two": power_of_two,
    "mse": mse,
}

__all__ = [
    "BUILTIN_POLICIES",
    "Constraints",
    "Policy",
    "QParams",
    "TensorStats",
    "asymmetric",
    "constraints_for",
    "mse",
    "power_of_two",
    "restricted",
    "symmetric",
]
