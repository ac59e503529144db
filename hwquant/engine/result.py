"""What ``hwquant.quantize`` returns: decisions per tensor, coverage, accuracy, check report, timings."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TensorDecision:
    """How one tensor got its scale and zero point.

    ``rule`` says what decided it: ``policy`` (the role's policy on the tensor's own range),
    ``shared`` (one qparams for a group of tensors that must agree, range unified first),
    ``fixed`` (the profile fixes the op's output qparams). ``raw_range`` is the observed range;
    ``range`` the one the policy saw (after onnxruntime's Relu/Clip folding and group
    unification); ``covered`` what the chosen qparams can represent. ``widened`` is True when the
    constraint made the grid coarser than plain min/max would (covered span / needed span - 1 > 1e-3),
    ``clipped`` when part of the raw range lies more than half a step outside ``covered``.
    """

    tensor: str
    role: str
    dtype: str
    rule: str
    policy: str | None
    plugin: str | None
    raw_range: tuple[float, float]
    range: tuple[float, float]
    scale: float | list[float]
    zero_point: int | list[int]
    axis: int | None = None
    covered: tuple[float, float] = (0.0, 0.0)
    widened: float = 0.0
    clipped: bool = False
    group: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def step_error(self) -> float:
        """Rounding error per value (scale**2 / 12, largest channel), used to sort explanations."""
        scales = self.scale if isinstance(self.scale, list) else [self.scale]
        return max(scales) ** 2 / 12


@dataclass
class Coverage:
    """Compute ops quantized out of the total, and why the others stayed float."""

    quantized: int
    total: int
    float_ops: dict[str, str] = field(default_factory=dict)  # node name -> reason
    by_op_type: dict[str, tuple[int, int]] = field(default_factory=dict)  # op type -> (quantized, total)

    @property
    def ratio(self) -> float:
        return self.quantized / self.total if self.total else 0.0


@dataclass
class OutputAccuracy:
    """Quantized against float, over the evaluation samples, for one model output."""

    output: str
    sqnr_db: float
    cosine: float
    max_abs_error: float
    top1_agreement: float | None = None


@dataclass
class QuantResult:
    """Everything ``quantize`` did and found. ``to_json()`` gives stable keys for reports and CI."""

    output: Path | None
    profile: str
    format: str
    method: str
    decisions: list[TensorDecision]
    coverage: Coverage
    check: Any  # hwquant.checker.CheckReport
    accuracy: list[OutputAccuracy] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the output passed its profile check."""
        return bool(self.check is not None and self.check.ok)

    def decision(self, tensor: str) -> TensorDecision:
        """The decision for ``tensor`` (KeyError naming it when it was not quantized)."""
        for d in self.decisions:
            if d.tensor == tensor:
                return d
        raise KeyError(f"tensor '{tensor}' was not quantized")

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output) if self.output else None,
            "profile": self.profile,
            "format": self.format,
            "method": self.method,
            "ok": self.ok,
            "coverage": asdict(self.coverage) | {"ratio": self.coverage.ratio},
            "check": self.check.to_dict() if self.check is not None else None,
            "accuracy": [asdict(a) for a in self.accuracy],
            "timings": self.timings,
            "samples": self.samples,
            "sizes": self.sizes,
            "notes": self.notes,
            "decisions": [asdict(d) for d in self.decisions],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, default=_jsonable)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
