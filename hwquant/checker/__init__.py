"""The conformance checker: does a quantized ONNX model obey a hardware profile's rules?

``check(model, profile) -> CheckReport`` works on models from any tool (onnxruntime, Quark, NNCF,
modelopt, hand-made), QDQ or QOperator. It uses ``onnx`` and numpy only; the engine calls it to verify
its own output. Rules and the JSON format: ``docs/check.md``.
"""

from hwquant.checker.checker import check
from hwquant.checker.report import RULES, SCHEMA, CheckReport, Finding

__all__ = ["RULES", "SCHEMA", "CheckReport", "Finding", "check"]
