"""The profile format: frozen pydantic models describing what a hardware target accepts.

A profile is pure data. Every section has a default (onnxruntime's default static recipe), so a
profile file that ``extends`` another only states what it changes. Field-by-field reference:
``hwquant profiles schema`` or :func:`hwquant.profile_json_schema`.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from hwquant.profile.dtypes import DTYPE_RANGES, DType

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=64)]
OpType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class QRange(_Frozen):
    """Integer range the target uses for one data type, e.g. narrow int8 ``{qmin=-127, qmax=127}``."""

    qmin: int = Field(description="Smallest stored integer the target uses.")
    qmax: int = Field(description="Largest stored integer the target uses.")

    @model_validator(mode="after")
    def _ordered(self) -> QRange:
        if self.qmin >= self.qmax:
            raise ValueError(f"qmin ({self.qmin}) must be below qmax ({self.qmax})")
        return self


class ScaleRule(_Frozen):
    """Form of the scale: any positive float32, or a power of two ``2**e`` with optional bounds on e."""

    form: Literal["float", "power-of-two"] = Field(
        "float", description="'float': any positive float32; 'power-of-two': scale = 2**e."
    )
    min_exponent: int | None = Field(None, description="Smallest allowed e in 2**e (power-of-two only).")
    max_exponent: int | None = Field(None, description="Largest allowed e in 2**e (power-of-two only).")

    @model_validator(mode="after")
    def _bounds(self) -> ScaleRule:
        if self.form == "float" and (self.min_exponent is not None or self.max_exponent is not None):
            raise ValueError("exponent bounds only apply to form = 'power-of-two'")
        lo, hi = self.min_exponent, self.max_exponent
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_exponent ({lo}) is above max_exponent ({hi})")
        return self

    def allows(self, scale: float) -> bool:
        """True when ``scale`` has this form (positive and finite in every case)."""
        if not (math.isfinite(scale) and scale > 0):
            return False
        if self.form == "float":
            return True
        mantissa, exp = math.frexp(scale)
        if mantissa != 0.5:
            return False
        e = exp - 1
        return (self.min_exponent is None or e >= self.min_exponent) and (
            self.max_exponent is None or e <= self.max_exponent
        )


ZeroPoints = list[int] | Literal["any"]


class RoleRules(_Frozen):
    """What the target accepts for one tensor role (activations or weights)."""

    dtypes: list[DType] = Field(min_length=1, description="Data types the target accepts for this role.")
    default_dtype: DType | None = Field(None, description="Data type used unless told otherwise; first of dtypes.")
    zero_points: dict[DType, ZeroPoints] = Field(
        default_factory=dict,
        description="Allowed zero points per data type, as stored integers ('any' when absent). "
        "They are absolute values: a reduced range [0, 127] lists its own midpoint, 64.",
    )
    ranges: dict[DType, QRange] = Field(
        default_factory=dict, description="qmin/qmax per data type; the data type's full range when absent."
    )
    min_real_range: float | None = Field(
        None, gt=0, description="Smallest rmax - rmin a tensor is given (onnxruntime's MinimumRealRange)."
    )
    scale: ScaleRule = ScaleRule()
    policy: Slug = Field("asymmetric", description="Name of the zero-point/scale policy (a plugin name).")

    @property
    def dtype(self) -> DType:
        """The data type used by default for this role."""
        return self.default_dtype or self.dtypes[0]

    def qrange(self, dtype: DType) -> QRange:
        """The [qmin, qmax] range for ``dtype`` (declared, else the data type's full range)."""
        if dtype in self.ranges:
            return self.ranges[dtype]
        lo, hi = DTYPE_RANGES[dtype]
        return QRange(qmin=lo, qmax=hi)

    def allowed_zero_points(self, dtype: DType) -> list[int] | None:
        """Allowed zero points for ``dtype``, or None when any value in [qmin, qmax] is allowed."""
        zps = self.zero_points.get(dtype, "any")
        return None if zps == "any" else list(zps)

    @field_validator("dtypes")
    @classmethod
    def _unique(cls, v: list[DType]) -> list[DType]:
        if len(set(v)) != len(v):
            raise ValueError(f"data types are listed twice: {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> RoleRules:
        if self.default_dtype is not None and self.default_dtype not in self.dtypes:
            raise ValueError(f"default_dtype: '{self.default_dtype}' is not one of dtypes {self.dtypes}")
        for dtype, r in self.ranges.items():
            lo, hi = DTYPE_RANGES[dtype]
            if r.qmin < lo or r.qmax > hi:
                raise ValueError(f"ranges.{dtype}: [{r.qmin}, {r.qmax}] exceeds {dtype} [{lo}, {hi}]")
        for dtype, zps in self.zero_points.items():
            if zps == "any":
                continue
            if not zps:
                raise ValueError(f"zero_points.{dtype}: list is empty (write 'any' to allow every value)")
            r = self.qrange(dtype)
            bad = [z for z in zps if not r.qmin <= z <= r.qmax]
            if bad:
                limits = f"{'ranges.' if dtype in self.ranges else ''}{dtype} [{r.qmin}, {r.qmax}]"
                raise ValueError(f"zero_points.{dtype}: {bad} outside {limits}")
        return self


class ActivationRules(RoleRules):
    """Rules for activations (tensors computed at run time, and constants quantized like them)."""

    dtypes: list[DType] = Field(default_factory=lambda: ["uint8"], min_length=1)


class WeightRules(RoleRules):
    """Rules for weights (Conv/Gemm/MatMul constant inputs), including per-channel quantization."""

    dtypes: list[DType] = Field(default_factory=lambda: ["int8"], min_length=1)
    zero_points: dict[DType, ZeroPoints] = Field(default_factory=lambda: {"int8": [0], "uint8": [128]})
    ranges: dict[DType, QRange] = Field(default_factory=lambda: {"int8": QRange(qmin=-127, qmax=127)})
    policy: Slug = "symmetric"
    per_channel: dict[OpType, int] = Field(
        default_factory=dict,
        description="Op types whose weights are quantized per channel, with the channel axis of the "
        "weight (Conv: 0, ConvTranspose: 1, MatMul: 1, Gemm: 0 with transB=1). Empty: per-tensor only.",
    )


class BiasRules(_Frozen):
    """Rules for the bias of Conv/Gemm: int32, scale = input scale x weight scale, zero point 0."""

    quantize: bool = Field(
        True, description="Quantize biases to int32; false keeps them float (QDQ output only: QOperator needs int32)."
    )
    scale_rtol: float = Field(1e-5, ge=0, description="Relative tolerance on scale = input x weight scale.")


class FixedQParams(_Frozen):
    """Output qparams a target imposes on an op type, e.g. Softmax int8 (1/256, -128)."""

    scale: float = Field(gt=0, description="The output scale the target imposes.")
    zero_point: int = Field(description="The output zero point the target imposes.")


class OpRules(_Frozen):
    """Per-op rules: which ops run quantized, fixed output qparams, same-qparams op types, and op types
    quantized on their inputs only."""

    quantize: list[OpType] = Field(
        default_factory=list, description="Op types the target runs quantized; empty: all onnxruntime can."
    )
    exclude: list[OpType] = Field(default_factory=list, description="Op types kept in float.")
    fixed_output: dict[OpType, dict[DType, FixedQParams]] = Field(
        default_factory=dict, description="Fixed output scale/zero point per op type and data type."
    )
    shared_qparams: list[OpType] = Field(
        default_factory=list, description="Op types whose inputs and outputs share one scale and zero point."
    )
    float_outputs: list[OpType] = Field(
        default_factory=list,
        description="Op types that do not quantize their outputs (a quantized consumer still quantizes its input). "
        "With `quantize` on the compute ops: Q/DQ on compute-op inputs only, TensorRT's recommended placement.",
    )
    fixed_tolerance: float = Field(1e-6, ge=0, description="Relative tolerance when checking fixed scales.")


class Profile(_Frozen):
    """What a hardware target accepts; loaded from a TOML/JSON file or contributed by a plugin."""

    name: Slug
    description: str = Field("", description="What the target is and what it accepts, in a few sentences.")
    source: str = Field("", description="Vendor document or spec the profile is based on.")
    extends: Slug | None = Field(None, description="Name of the profile this one inherits and overrides.")
    activations: ActivationRules = ActivationRules()
    weights: WeightRules = WeightRules()
    bias: BiasRules = BiasRules()
    ops: OpRules = OpRules()

    @model_validator(mode="after")
    def _fixed_outputs_fit(self) -> Profile:
        for op, per_dtype in self.ops.fixed_output.items():
            for dtype, fixed in per_dtype.items():
                r = self.activations.qrange(dtype)
                where = f"ops.fixed_output.{op}.{dtype}"
                if not r.qmin <= fixed.zero_point <= r.qmax:
                    raise ValueError(f"{where}: zero point {fixed.zero_point} outside [{r.qmin}, {r.qmax}]")
                allowed = self.activations.allowed_zero_points(dtype)
                if allowed is not None and fixed.zero_point not in allowed:
                    raise ValueError(
                        f"{where}: zero point {fixed.zero_point} is not in activations.zero_points.{dtype} {allowed}"
                    )
                if not self.activations.scale.allows(fixed.scale):
                    raise ValueError(
                        f"{where}: scale {fixed.scale} breaks activations.scale ({self.activations.scale.form})"
                    )
        overlap = set(self.ops.quantize) & set(self.ops.exclude)
        if overlap:
            raise ValueError(f"ops: {sorted(overlap)} both in quantize and exclude")
        fixed_float = set(self.ops.float_outputs) & set(self.ops.fixed_output)
        if fixed_float:
            raise ValueError(f"ops: {sorted(fixed_float)} both in float_outputs and fixed_output")
        return self

    def role(self, role: str) -> RoleRules:
        """The rules of ``role`` ('activations' or 'weights')."""
        if role not in ("activations", "weights"):
            raise ValueError(f"unknown role '{role}'")
        return getattr(self, role)

    def policies(self) -> set[str]:
        """Names of the policies this profile uses."""
        return {self.activations.policy, self.weights.policy}
