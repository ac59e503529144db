"""``hwquant.check``: does a quantized ONNX model obey a target's rules?"""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from hwquant.api import resolve
from hwquant.checker.graph import analyse, load_model
from hwquant.checker.report import CheckReport
from hwquant.checker.rules import run
from hwquant.profile.schema import Profile


def check(model: str | os.PathLike[str] | onnx.ModelProto, profile: str | Path | Profile) -> CheckReport:
    """Check a quantized ONNX model (QDQ or QOperator, from any tool) against a hardware profile.

    ``model`` is a path or an ``onnx.ModelProto`` (never modified); ``profile`` a registered name, a
    profile file or a :class:`~hwquant.Profile`. Returns a :class:`CheckReport`; ``report.ok`` is False
    when any finding has severity ``error``. A float model is an error finding (``nothing-quantized``),
    never a pass.

    Raises :class:`~hwquant.ModelError` naming the file when it is missing or not ONNX, and
    :class:`~hwquant.UnknownNameError` for an unknown profile name.
    """
    prof = resolve(profile)
    proto, label = load_model(model)
    graph = analyse(proto)
    roles = [t.role for t in graph.tensors.values()]
    checked = {
        "activations": roles.count("activation"),
        "weights": roles.count("weight"),
        "biases": roles.count("bias"),
        "nodes": graph.n_nodes,
    }
    return CheckReport(
        model=label, profile=prof.name, format=graph.format, findings=tuple(run(graph, prof)), checked=checked
    )
