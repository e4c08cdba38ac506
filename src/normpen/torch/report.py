r"""What the penalties did to a model: per rule and per tensor, as data, a rich table or a figure.

Per tensor: shape, :math:`\lambda`, value :math:`P(\theta)`, the regulariser
:math:`\Omega(\theta)` (``penalty.norm``), the fraction of exact zeros, and
the rows (slices along axis 0: output units, filters) and columns (slices
along axis 1: input features, input channels) that are entirely zero. Per
rule: mode, total value, and for a lagrangian rule the budget and the
multiplier :math:`\mu` (the shadow price of the budget).
"""

from __future__ import annotations

import dataclasses
import io
import math

from rich.console import Console
from rich.table import Table

from normpen.torch.kernels import as_penalty_input

__all__ = ["TensorReport", "RuleReport", "Report", "Summary", "tensor_report"]


@dataclasses.dataclass(frozen=True)
class TensorReport:
    """One tensor under one rule (``zero_rows``/``zero_cols`` are None below 2 dimensions)."""

    name: str
    shape: tuple
    lam: float
    value: float
    norm: float
    zero_fraction: float
    zero_rows: int | None
    rows: int | None
    zero_cols: int | None
    cols: int | None


@dataclasses.dataclass(frozen=True)
class RuleReport:
    """One rule: its label, mode, total value, multiplier and budget (lagrangian), and its tensors."""

    label: str
    mode: str
    value: float
    multiplier: float | None
    budget: float | None
    tensors: list


def tensor_report(name, param, penalty, layout="plain"):
    """Measure one tensor under ``penalty`` (reads it to the host); rows are output units (``layout``)."""
    x = param.detach()
    zero = x == 0
    rows = cols = zero_rows = zero_cols = None
    if x.ndim >= 2:
        rows, cols = x.shape[0], x.shape[1]
        zero_rows = int(zero.reshape(rows, -1).all(dim=1).sum()) if x.numel() else 0
        zero_cols = int(zero.transpose(0, 1).reshape(cols, -1).all(dim=1).sum()) if x.numel() else 0
    view = as_penalty_input(penalty, x, layout)
    return TensorReport(
        name=name,
        shape=tuple(x.shape),
        lam=penalty.lam,
        value=float(penalty._value(view)),
        norm=float(penalty._norm(view)),
        zero_fraction=float(zero.sum()) / x.numel() if x.numel() else 0.0,
        zero_rows=zero_rows,
        rows=rows,
        zero_cols=zero_cols,
        cols=cols,
    )


class _PrintsItsTable:
    """``print(obj)`` and rich's console both show ``obj.table()``, the object's :class:`rich.table.Table`."""

    def __rich__(self):
        return self.table()

    def __str__(self):
        buffer = io.StringIO()
        Console(file=buffer, width=160).print(self.table())
        return buffer.getvalue()


@dataclasses.dataclass(frozen=True)
class Report(_PrintsItsTable):
    """The report of a :class:`~normpen.torch.Regularizer`: ``print`` it, ``to_dict()`` it, ``plot()`` it."""

    rules: list

    def to_dict(self):
        """Plain data (lists, dicts, numbers, strings): JSON-serialisable with ``allow_nan=True``."""
        return {"rules": [dataclasses.asdict(r) for r in self.rules]}

    def table(self):
        """A :class:`rich.table.Table` with one row per tensor and one summary row per rule."""
        table = Table(title="normpen regularizer report")
        for column in (
            "rule",
            "mode",
            "tensor",
            "shape",
            "lambda",
            "value",
            "norm",
            "zeros",
            "zero rows",
            "zero cols",
            "multiplier",
        ):
            table.add_column(column, justify="left" if column in ("rule", "mode", "tensor") else "right")
        for rule in self.rules:
            multiplier = "" if rule.multiplier is None else f"{rule.multiplier:.4g}"
            budget = "" if rule.budget is None else f" (budget {rule.budget:.4g})"
            table.add_row(
                rule.label,
                rule.mode,
                "[bold]total[/bold]",
                "",
                "",
                f"{rule.value:.4g}{budget}",
                "",
                "",
                "",
                "",
                multiplier,
            )
            for t in rule.tensors:
                table.add_row(
                    "",
                    "",
                    t.name,
                    "x".join(map(str, t.shape)),
                    f"{t.lam:.3g}",
                    f"{t.value:.4g}",
                    f"{t.norm:.4g}",
                    f"{100 * t.zero_fraction:.1f}%",
                    _count(t.zero_rows, t.rows),
                    _count(t.zero_cols, t.cols),
                    "",
                )
        return table

    def plot(self):
        """A matplotlib Figure: per tensor, the fraction of exact zeros and the norm :math:`\\Omega`.

        Built on :class:`matplotlib.figure.Figure` directly (no pyplot, no
        display needed); save it with ``fig.savefig(path)``.
        """
        from matplotlib.figure import Figure

        rows = [(f"{r.label}: {t.name}", t) for r in self.rules for t in r.tensors]
        fig = Figure(figsize=(10, 0.35 * max(len(rows), 2) + 1.2), layout="constrained")
        zeros_ax, norm_ax = fig.subplots(1, 2, sharey=True)
        labels = [label for label, _ in rows]
        positions = range(len(rows))
        zeros_ax.barh(positions, [100 * t.zero_fraction for _, t in rows], color="tab:blue")
        zeros_ax.set_xlabel("exact zeros (%)")
        zeros_ax.set_xlim(0, 100)
        zeros_ax.set_yticks(list(positions), labels, fontsize=8)
        zeros_ax.invert_yaxis()
        norm_ax.barh(
            positions, [t.norm if math.isfinite(t.norm) else 0.0 for _, t in rows], color="tab:orange"
        )
        norm_ax.set_xlabel("norm Omega(theta)")
        fig.suptitle("what each rule did, per tensor")
        return fig


@dataclasses.dataclass(frozen=True)
class Summary(_PrintsItsTable):
    """What each rule of a :class:`~normpen.torch.Regularizer` selected: ``print`` it or ``to_dict()`` it.

    ``rules``: one ``(label, mode, taken, left_out)`` per rule, ``taken`` a
    list of ``(name, shape, applied_by)`` (``"normpen"``, or the optimizer whose
    own decay the tensor's param group is handed to, say ``"Adam's weight_decay"``),
    ``left_out`` the >=2-D parameters the default pool did not take, as
    ``(name, shape, reason)``.
    """

    rules: list

    def to_dict(self):
        """Plain data: per rule its label, mode, the tensors taken (with who applies the rule to each) and
        those left out with the reason."""
        return {
            "rules": [
                {
                    "label": label,
                    "mode": mode,
                    "taken": [{"name": n, "shape": list(shape), "applied_by": by} for n, shape, by in taken],
                    "left_out": [{"name": n, "shape": list(shape), "reason": why} for n, shape, why in left],
                }
                for label, mode, taken, left in self.rules
            ]
        }

    def table(self):
        """A :class:`rich.table.Table`: one row per tensor taken or left out, grouped by rule."""
        table = Table(title="normpen regularizer: what each rule selected")
        for column in ("rule", "mode", "tensor", "shape", "taken", "applied by"):
            table.add_column(column)
        for label, mode, taken, left in self.rules:
            for i, (name, shape, by) in enumerate(taken):
                table.add_row(label if i == 0 else "", mode if i == 0 else "", name, _shape(shape), "yes", by)
            for name, shape, why in left:
                table.add_row("", "", name, _shape(shape), f"no: {why}", "")
        return table


def _shape(shape):
    return "x".join(map(str, shape))


def _count(zero, total):
    return "" if zero is None else f"{zero}/{total}"
