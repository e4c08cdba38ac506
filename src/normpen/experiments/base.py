r"""The contract every experiment of the report fulfils: :class:`Check`, :class:`Result`, :class:`Experiment`.

An experiment reproduces one claim of the seed texts. It is one module in
:mod:`normpen.experiments` that builds an :class:`Experiment` (name, title, the
seed section it reproduces, the claim in one sentence, a fixed seed, and a
``compute(quick, seed)`` function) and one line in
:mod:`normpen.experiments.registry`.

``compute`` returns a :class:`Result`: matplotlib figures and a list of
:class:`Check`\ s. A check compares a measured number with the value theory
predicts; it is built with one of the constructors :meth:`Check.close`,
:meth:`Check.at_most`, :meth:`Check.at_least` or :meth:`Check.equal`, and
whether it passed is *computed* from the numbers, never set by hand.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from numbers import Integral, Real
from types import MappingProxyType

from matplotlib.figure import Figure

__all__ = ["Check", "Result", "Experiment", "Verdict", "VERDICT_STATUSES", "SEED_SWEEP_SIZE", "check_slug"]

#: Number of seeds (0, 1, ..., 29) of the recorded seed sweep (``benchmarks/seed_sweep.py``) that an
#: empirical check's ``pass_rate`` is measured over.
SEED_SWEEP_SIZE = 30

_SLUG = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

#: How each relation reads, with ``m`` the measured value, ``e`` the expected one and ``t`` the tolerance.
_CRITERIA = {
    "close": "|m − e| ≤ t",
    "at_most": "m ≤ e + t",
    "at_least": "m ≥ e − t",
    "equal": "m = e",
}


def check_slug(value, name):
    """Return ``value`` if it is a lowercase slug (``a-z``, ``0-9``, single hyphens), else raise.

    Experiment and figure names become file names and HTML anchors, so they
    are restricted to this alphabet.
    """
    if not isinstance(value, str) or not _SLUG.fullmatch(value):
        raise ValueError(
            f"{name} must be a lowercase slug such as 'sparsity-dialogue' (letters a-z, digits, "
            f"single hyphens), got {value!r}"
        )
    return value


def _number(value, name):
    """``value`` as a plain ``int`` (integers, booleans) or ``float`` (other reals); else TypeError."""
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return float(value)
    try:  # 0-d numpy arrays and torch tensors
        return _number(value.item(), name)
    except (AttributeError, ValueError, RuntimeError):
        raise TypeError(
            f"{name} must be a real number, got {type(value).__name__}; reduce arrays to one number "
            "first (e.g. with .max())"
        ) from None


@dataclass(frozen=True)
class Check:
    r"""A measured number compared with the value theory predicts.

    Build checks with the constructors, which fix the relation and the
    tolerance: :meth:`close`, :meth:`at_most`, :meth:`at_least`, :meth:`equal`.
    :attr:`passed` is computed from the fields, so it cannot disagree with them.

    Parameters
    ----------
    name : str
        What is measured, in a few words (unique within an experiment).
    measured : int or float
        The measurement. NaN never passes.
    expected : int or float
        The value from theory, or the bound for ``at_most`` / ``at_least``.
    tolerance : float
        Absolute slack :math:`t \ge 0` of the comparison.
    relation : {"close", "at_most", "at_least", "equal"}
        :math:`|m - e| \le t`, :math:`m \le e + t`, :math:`m \ge e - t`, :math:`m = e`.
    pass_rate : float or None
        ``None`` for a check of the claim, which must pass for every seed. A
        number in [0, 1] marks the check *empirical* (an effect of one random
        draw, not a guarantee) and records the fraction of seeds of the
        recorded seed sweep (``benchmarks/seed_sweep.py``, :data:`SEED_SWEEP_SIZE`
        seeds) on which it passed.
    """

    name: str
    measured: float
    expected: float
    tolerance: float
    relation: str
    pass_rate: float | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"Check name must be a non-empty string, got {self.name!r}")
        if self.relation not in _CRITERIA:
            raise ValueError(f"relation must be one of {sorted(_CRITERIA)}, got {self.relation!r}")
        object.__setattr__(self, "measured", _number(self.measured, "measured"))
        expected = _number(self.expected, "expected")
        if not math.isfinite(expected):
            raise ValueError(f"expected must be finite, got {expected} (check {self.name!r})")
        object.__setattr__(self, "expected", expected)
        tolerance = float(_number(self.tolerance, "tolerance"))
        if not (math.isfinite(tolerance) and tolerance >= 0):
            raise ValueError(f"tolerance must be finite and >= 0, got {tolerance} (check {self.name!r})")
        if self.relation == "equal" and tolerance != 0:
            raise ValueError("an 'equal' check has tolerance 0; use Check.close for a tolerance")
        object.__setattr__(self, "tolerance", tolerance)
        if self.pass_rate is not None:
            rate = float(_number(self.pass_rate, "pass_rate"))
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"pass_rate must lie in [0, 1], got {rate} (check {self.name!r})")
            object.__setattr__(self, "pass_rate", rate)

    @property
    def empirical(self) -> bool:
        """True for an empirical check (one with a recorded ``pass_rate``), False for a check of the claim."""
        return self.pass_rate is not None

    @property
    def kind(self) -> str:
        """``"claim"``, or for an empirical check ``"empirical, passes on 93% of 30 seeds"``."""
        if self.pass_rate is None:
            return "claim"
        return f"empirical, passes on {100 * self.pass_rate:.0f}% of {SEED_SWEEP_SIZE} seeds"

    @classmethod
    def close(cls, name, measured, expected, *, rtol=0.0, atol=0.0, pass_rate=None):
        r"""Passes when :math:`|m - e| \le \text{atol} + \text{rtol}\,|e|`.

        At least one of ``rtol``, ``atol`` must be positive; use :meth:`equal`
        for an exact comparison.
        """
        rtol, atol = float(_number(rtol, "rtol")), float(_number(atol, "atol"))
        if rtol < 0 or atol < 0 or rtol + atol == 0:
            raise ValueError(
                f"Check.close needs rtol >= 0 and atol >= 0, not both 0 (got rtol={rtol}, atol={atol}); "
                "use Check.equal for an exact comparison"
            )
        expected = _number(expected, "expected")
        return cls(name, measured, expected, atol + rtol * abs(expected), "close", pass_rate)

    @classmethod
    def at_most(cls, name, measured, bound, *, atol=0.0, pass_rate=None):
        r"""Passes when :math:`m \le \text{bound} + \text{atol}`."""
        return cls(name, measured, bound, atol, "at_most", pass_rate)

    @classmethod
    def at_least(cls, name, measured, bound, *, atol=0.0, pass_rate=None):
        r"""Passes when :math:`m \ge \text{bound} - \text{atol}`."""
        return cls(name, measured, bound, atol, "at_least", pass_rate)

    @classmethod
    def equal(cls, name, measured, expected, *, pass_rate=None):
        """Passes when :math:`m = e` exactly (counts, indices, exact zeros)."""
        return cls(name, measured, expected, 0.0, "equal", pass_rate)

    @property
    def passed(self) -> bool:
        """Whether the measurement meets the expectation; computed, never stored."""
        m, e, t = self.measured, self.expected, self.tolerance
        if self.relation == "close":
            return abs(m - e) <= t
        if self.relation == "at_most":
            return m <= e + t
        if self.relation == "at_least":
            return m >= e - t
        return m == e

    @property
    def criterion(self) -> str:
        """The comparison in symbols, e.g. ``"|m − e| ≤ t"``."""
        return _CRITERIA[self.relation]

    def to_dict(self) -> dict:
        """All fields plus ``criterion``, ``passed``, ``empirical`` and ``kind``, as plain Python values."""
        return {
            "name": self.name,
            "measured": self.measured,
            "expected": self.expected,
            "tolerance": self.tolerance,
            "relation": self.relation,
            "criterion": self.criterion,
            "passed": self.passed,
            "empirical": self.empirical,
            "pass_rate": self.pass_rate,
            "kind": self.kind,
        }


@dataclass(frozen=True)
class Result:
    """What :meth:`Experiment.run` returns: the checks and the figures.

    Parameters
    ----------
    checks : sequence of Check
        At least one; names unique.
    figures : mapping of str to matplotlib.figure.Figure
        Figure name (a slug: it becomes part of a file name) to figure. Build
        figures with ``matplotlib.figure.Figure()`` rather than ``pyplot`` so no
        global state or GUI backend is involved.
    notes : str
        One or two sentences on the set-up (sizes, grid), shown under the claim.
    """

    checks: tuple[Check, ...]
    figures: Mapping[str, Figure] = field(default_factory=dict)
    notes: str = ""

    def __post_init__(self):
        checks = tuple(self.checks)
        if not checks:
            raise ValueError("a Result needs at least one Check: an experiment without checks proves nothing")
        for check in checks:
            if not isinstance(check, Check):
                raise TypeError(f"checks must be Check objects, got {type(check).__name__}")
        names = [c.name for c in checks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"check names must be unique within a Result; repeated: {duplicates}")
        for name, figure in self.figures.items():
            check_slug(name, "figure name")
            if not isinstance(figure, Figure):
                raise TypeError(f"figure {name!r} must be a matplotlib Figure, got {type(figure).__name__}")
        if not isinstance(self.notes, str):
            raise TypeError(f"notes must be a string, got {type(self.notes).__name__}")
        object.__setattr__(self, "checks", checks)
        object.__setattr__(self, "figures", MappingProxyType(dict(self.figures)))


#: What each verdict status says about the text's claim.
VERDICT_STATUSES = MappingProxyType(
    {
        "confirmed": "the text's claim holds as written",
        "narrowed": "the text's claim holds only under a condition the text does not state",
        "refuted": "the text's statement is false as written; a check shows the counterexample",
        "literature": "no sentence of the seed texts makes this claim; it is taken from the literature",
    }
)


@dataclass(frozen=True)
class Verdict:
    """What the experiment found about the text's claim.

    Parameters
    ----------
    status : {"confirmed", "narrowed", "refuted", "literature"}
        See :data:`VERDICT_STATUSES`.
    reason : str
        One or two sentences: what was confirmed, the condition the claim
        needs (narrowed), the counterexample (refuted), or the source
        (literature).
    evidence : tuple of str
        Names of the checks of the experiment's :class:`Result` that show the
        verdict; required for ``narrowed`` and ``refuted``.
        :meth:`Experiment.run` verifies that they exist.
    """

    status: str
    reason: str
    evidence: tuple[str, ...] = ()

    def __post_init__(self):
        if self.status not in VERDICT_STATUSES:
            raise ValueError(f"verdict status must be one of {sorted(VERDICT_STATUSES)}, got {self.status!r}")
        if not isinstance(self.reason, str) or not self.reason.strip():
            raise ValueError(f"a {self.status!r} verdict needs a reason (a non-empty string)")
        evidence = (self.evidence,) if isinstance(self.evidence, str) else tuple(self.evidence)
        if not all(isinstance(name, str) and name.strip() for name in evidence):
            raise ValueError(f"verdict evidence must be check names, got {self.evidence!r}")
        if self.status in ("narrowed", "refuted") and not evidence:
            raise ValueError(f"a {self.status!r} verdict names the checks that show it (evidence=...)")
        object.__setattr__(self, "evidence", evidence)

    def to_dict(self) -> dict:
        """``status``, ``reason``, ``evidence`` and what the status means, as plain Python values."""
        return {
            "status": self.status,
            "meaning": VERDICT_STATUSES[self.status],
            "reason": self.reason,
            "evidence": list(self.evidence),
        }


@dataclass(frozen=True)
class Experiment:
    """One claim of the seed texts, reproduced and checked.

    Parameters
    ----------
    name : str
        Slug used on the command line (``--only``), in file names and anchors.
    title : str
        Section heading in the report.
    seed_section : str
        The seed text(s) and section(s) reproduced, e.g.
        ``"000 The Dialogue with Sparsity; 004 L1 Regularization and Sparsity"``.
    claim : str
        The claim, in one sentence.
    compute : callable
        ``compute(quick: bool, seed: int) -> Result``. ``quick`` uses smaller
        sizes with the same checks; all randomness comes from ``seed``.
    seed : int
        The fixed seed :meth:`run` passes to ``compute`` unless told another.
    verdict : Verdict
        What the experiment found about the text's claim; required, by
        keyword (``verdict=Verdict(...)``).
    """

    name: str
    title: str
    seed_section: str
    claim: str
    compute: Callable[..., Result]
    seed: int = 0
    verdict: Verdict = field(kw_only=True)

    def __post_init__(self):
        check_slug(self.name, "name")
        for attr in ("title", "seed_section", "claim"):
            value = getattr(self, attr)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"experiment {self.name!r}: {attr} must be a non-empty string")
        if not callable(self.compute):
            raise TypeError(f"experiment {self.name!r}: compute must be callable, got {self.compute!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, Integral) or self.seed < 0:
            raise ValueError(f"experiment {self.name!r}: seed must be an int >= 0, got {self.seed!r}")
        if not isinstance(self.verdict, Verdict):
            raise TypeError(f"experiment {self.name!r}: verdict must be a Verdict, got {self.verdict!r}")

    def run(self, quick: bool = False, seed: int | None = None) -> Result:
        """Run with ``seed`` (default: the experiment's fixed seed); ``quick`` for small sizes, same checks.

        Raises if a check the verdict names as evidence is missing from the result.
        """
        if seed is None:
            seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        result = self.compute(quick=bool(quick), seed=int(seed))
        if not isinstance(result, Result):
            raise TypeError(
                f"experiment {self.name!r}: compute returned {type(result).__name__}, expected a Result"
            )
        names = {check.name for check in result.checks}
        missing = [name for name in self.verdict.evidence if name not in names]
        if missing:
            raise ValueError(f"experiment {self.name!r}: the verdict's evidence names no check {missing}")
        return result
