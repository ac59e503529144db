"""Profile layer: the schema (pure data) and the file loader. Imports nothing above it."""

from hwquant.profile.dtypes import DTYPE_RANGES, DType
from hwquant.profile.load import load_profile_file, merge_profile_data, profile_json_schema, resolve_profile
from hwquant.profile.schema import (
    ActivationRules,
    BiasRules,
    FixedQParams,
    OpRules,
    Profile,
    QRange,
    RoleRules,
    ScaleRule,
    WeightRules,
)

__all__ = [
    "DTYPE_RANGES",
    "ActivationRules",
    "BiasRules",
    "DType",
    "FixedQParams",
    "OpRules",
    "Profile",
    "QRange",
    "RoleRules",
    "ScaleRule",
    "WeightRules",
    "load_profile_file",
    "merge_profile_data",
    "profile_json_schema",
    "resolve_profile",
]
