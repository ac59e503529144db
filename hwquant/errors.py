"""Exceptions raised by hwquant. Every message names the file, tensor, field or plugin at fault."""

from __future__ import annotations


class HwquantError(Exception):
    """Base class of every error hwquant raises on purpose."""


class ProfileError(HwquantError):
    """A profile file or object is invalid or contradicts itself.

    ``source`` is the file (or plugin) the profile came from and ``field`` the dotted path of the
    offending field, when known.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        where = ", ".join(p for p in (source, f"field '{field}'" if field else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class UnknownNameError(HwquantError, LookupError):
    """A profile or policy name is not registered; ``matches`` holds close spellings."""

    def __init__(self, kind: str, name: str, known: list[str], matches: list[str]):
        self.kind = kind
        self.name = name
        self.known = known
        self.matches = matches
        hint = f" Did you mean {', '.join(repr(m) for m in matches)}?" if matches else ""
        listing = ", ".join(known) if known else "none"
        kinds = kind[:-1] + "ies" if kind.endswith("y") else kind + "s"
        super().__init__(f"unknown {kind} '{name}'.{hint} Known {kinds}: {listing}.")


class PluginError(HwquantError):
    """Plugins conflict (two contribute the same name) or a plugin returned something unusable."""


class PolicyError(HwquantError):
    """A policy returned quantization parameters that break the profile."""


class ModelError(HwquantError):
    """An input model is unreadable or unusable (missing file, not ONNX, already quantized, ...)."""


class CalibrationError(HwquantError):
    """Calibration data is missing, empty or does not match the model's inputs."""


class VerificationError(HwquantError):
    """The quantized model failed verification (onnx.checker, onnxruntime load, or the profile check)."""

    def __init__(self, message: str, result=None):
        self.result = result
        super().__init__(message)
