"""What :func:`hwquant.check` returns: findings, counts, a readable table and stable JSON.

The JSON layout (``CheckReport.to_dict``) is documented in ``docs/check.md``; its keys only ever grow,
and a change to an existing key bumps ``SCHEMA``.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # rich is imported when a report is rendered, not by every quantize() call
    from rich.console import Console
    from rich.table import Table

SCHEMA = "hwquant.check/1"

Severity = Literal["error", "warning"]
SEVERITIES: tuple[Severity, ...] = ("error", "warning")

# Every rule the checker applies, in report order, with the one line the docs and the table use.
RULES: dict[str, str] = {
    "nothing-quantized": "the model holds no quantized tensor at all (a float model never passes)",
    "consistent-qparams": "every reader of a quantized tensor uses the scale and zero point it was written with",
    "qparams-unknown": "scale and zero point are constants, so they can be checked",
    "dtype": "the data type of each quantized tensor is allowed for its role (activation or weight)",
    "zero-point": "each zero point is in the allowed set for its data type and within [qmin, qmax]",
    "symmetric": "zero point at the middle of [qmin, qmax] where the role's policy is symmetric",
    "value-range": "constant quantized values (weights, constants) lie within [qmin, qmax]",
    "per-channel": "per-channel scales only for op types the profile allows, on the declared axis",
    "scale": "scales are positive, finite and of the profile's form (e.g. powers of two)",
    "fixed-output": "op types with fixed output qparams (e.g. Softmax) use them, within the stated tolerance",
    "shared-qparams": "inputs and outputs of the profile's same-qparams op types share scale and zero point",
    "bias": "biases are int32 with zero point 0 and scale = input scale x weight scale",
    "coverage": "op types the profile runs quantized are not left in float",
}


@dataclass(frozen=True)
class Finding:
    """One broken (or doubtful) rule at one place in the model.

    ``node`` is the node that declares the quantization parameters (a QuantizeLinear, DequantizeLinear or
    QLinear* node) or, for node rules, the node at fault; nodes inside If/Loop/Scan bodies are written
    ``parent[attribute]/node``. ``tensor`` is the tensor as named in the model. ``role`` is
    ``activation``, ``weight`` or ``bias`` for tensor rules, else None.
    """

    rule: str
    severity: Severity
    node: str
    tensor: str
    expected: str
    found: str
    message: str
    role: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The finding as a JSON-ready dict (keys documented in docs/check.md)."""
        return {
            "rule": self.rule,
            "severity": self.severity,
            "node": self.node,
            "tensor": self.tensor,
            "role": self.role,
            "expected": self.expected,
            "found": self.found,
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"{self.severity}: [{self.rule}] {self.message}"


def _order(f: Finding) -> tuple[int, int]:
    rules = list(RULES)
    return SEVERITIES.index(f.severity), rules.index(f.rule) if f.rule in rules else len(rules)


@dataclass(frozen=True)
class CheckReport:
    """The result of checking one model against one profile.

    ``ok`` is True when no finding has severity ``error``. ``checked`` counts what was examined:
    quantized ``activations``, ``weights`` and ``biases``, and ``nodes`` (every node, subgraphs included).
    ``format`` is ``QDQ``, ``QOperator``, ``mixed`` or ``float``.
    """

    model: str
    profile: str
    format: str
    findings: tuple[Finding, ...] = ()
    checked: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # errors first, then rules in RULES order; the model's own order within each (stable sort)
        object.__setattr__(self, "findings", tuple(sorted(self.findings, key=_order)))

    @property
    def errors(self) -> list[Finding]:
        """Findings of severity ``error``."""
        return [f for f in self.findings if f.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        """Findings of severity ``warning``."""
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error-severity finding (warnings do not fail a model)."""
        return not self.errors

    def by_rule(self, rule: str) -> list[Finding]:
        """The findings of one rule."""
        if rule not in RULES:
            raise ValueError(f"unknown rule '{rule}'; rules: {', '.join(RULES)}")
        return [f for f in self.findings if f.rule == rule]

    def counts(self) -> dict[str, Any]:
        """``{"errors": n, "warnings": n, "rules": {rule: n, ...}}`` (rules with findings only)."""
        per_rule = Counter(f.rule for f in self.findings)
        return {
            "errors": len(self.errors),
            "warnings": len(self.warnings),
            "rules": {r: per_rule[r] for r in RULES if per_rule[r]},
        }

    def summary(self) -> str:
        """One line: verdict, counts, and what was checked."""
        c = self.counts()
        verdict = "PASS" if self.ok else "FAIL"
        what = ", ".join(f"{self.checked.get(k, 0)} {k}" for k in ("activations", "weights", "biases"))
        broken = f" ({', '.join(f'{r}: {n}' for r, n in c['rules'].items())})" if c["rules"] else ""
        return (
            f"{verdict}: {self.model} against profile '{self.profile}' ({self.format}): "
            f"{_plural(c['errors'], 'error')}, {_plural(c['warnings'], 'warning')}{broken}; checked {what}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict with stable keys (see docs/check.md)."""
        return {
            "schema": SCHEMA,
            "model": self.model,
            "profile": self.profile,
            "format": self.format,
            "ok": self.ok,
            "counts": self.counts(),
            "checked": {k: self.checked.get(k, 0) for k in ("activations", "weights", "biases", "nodes")},
            "findings": [f.to_dict() for f in self.findings],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """``to_dict()`` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> Table:
        """The findings as a :class:`rich.table.Table` (one row per finding)."""
        from rich.table import Table
        from rich.text import Text

        table = Table(title=Text(f"hwquant check: {self.model} / {self.profile}"), title_justify="left")
        table.add_column("severity", no_wrap=True)
        table.add_column("rule", no_wrap=True)
        for col in ("node", "tensor", "expected", "found"):
            table.add_column(col, overflow="fold")
        for f in self.findings:
            style = "red" if f.severity == "error" else "yellow"
            # Text cells: names such as 'if[then_branch]/matmul' must not be read as rich markup
            table.add_row(
                Text(f.severity, style=style), *(Text(v) for v in (f.rule, f.node, f.tensor, f.expected, f.found))
            )
        return table

    def render(self, width: int = 160) -> str:
        """The table (when there are findings) and the summary line as plain text."""
        from rich.console import Console

        buf = io.StringIO()
        console = Console(file=buf, width=width, color_system=None, highlight=False)
        self.print(console)
        return buf.getvalue()

    def print(self, console: Console) -> None:
        """Print the table (when there are findings) and the summary line to ``console``."""
        from rich.markup import escape

        if self.findings:
            console.print(self.table())
        style = "green" if self.ok else "red"
        console.print(f"[{style}]{escape(self.summary())}[/{style}]", highlight=False)

    def __str__(self) -> str:
        return self.render()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"
