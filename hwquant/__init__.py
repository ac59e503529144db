"""hwquant: quantize ONNX models for a named hardware target.

Profiles (data) say what a target accepts, policies (plugins) compute scales and zero points, and the
engine drives onnxruntime's quantizer, then checks its own output against the profile.
"""

from importlib import metadata

from hwquant.api import (
    get_policy,
    get_profile,
    list_policies,
    list_profiles,
    load_profile,
    profile_json_schema,
    resolve,
)
from hwquant.errors import (
    CalibrationError,
    HwquantError,
    ModelError,
    PluginError,
    PolicyError,
    ProfileError,
    UnknownNameError,
    VerificationError,
)
from hwquant.plugins.hookspecs import hookimpl
from hwquant.policies.base import Constraints, QParams, TensorStats
from hwquant.profile.schema import Profile

# The checker imports onnx and the engine onnxruntime: load them on first use, so that commands that
# only read profiles start quickly.
_LAZY = {
    "check": "hwquant.checker",
    "CheckReport": "hwquant.checker",
    "quantize": "hwquant.engine.quantize",
    "calibrate": "hwquant.engine.quantize",
    "QuantResult": "hwquant.engine.result",
    "Calibration": "hwquant.engine.calibrate",
    "ImagePreprocess": "hwquant.engine.data",
    "compare": "hwquant.engine.compare",
    "Comparison": "hwquant.engine.compare",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'hwquant' has no attribute '{name}'")


try:
    __version__ = metadata.version("hwquant")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "Calibration",
    "CalibrationError",
    "CheckReport",
    "Comparison",
    "Constraints",
    "HwquantError",
    "ImagePreprocess",
    "ModelError",
    "PluginError",
    "PolicyError",
    "Profile",
    "ProfileError",
    "QParams",
    "QuantResult",
    "TensorStats",
    "UnknownNameError",
    "VerificationError",
    "__version__",
    "calibrate",
    "check",
    "compare",
    "get_policy",
    "get_profile",
    "hookimpl",
    "list_policies",
    "list_profiles",
    "load_profile",
    "profile_json_schema",
    "quantize",
    "resolve",
]
