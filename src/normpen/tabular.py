r"""A user's table as a design matrix: reading, column roles, standardising, one-hot encoding, missing values.

:func:`read_table` reads a delimited text file (``.csv``, ``.tsv``, ``.txt``,
each also compressed: ``.gz``, ``.bz2``, ``.xz``, ``.zip``, ``.zst``), Parquet,
or Excel when ``openpyxl`` is installed. The delimiter is sniffed from the
first lines, and numbers written with thousands separators (``3,078.5``) or
decimal commas (``3.078,5``) are recognised; every such guess is a
:class:`Decision` the caller prints.

:func:`fit_encoder` decides the role of every column (:attr:`TabularEncoder.decisions`)
and learns a :class:`TabularEncoder`:

- numeric columns are standardised, :math:`x_{ij} = (v_{ij} - \mu_j) / s_j`;
- date columns become numbers (days since 1970-01-01), then are standardised;
- text and boolean columns are one-hot encoded, :math:`x_{i,(c,\ell)} = [v_{ic} = \ell]`,
  one group of 0/1 columns per variable (:attr:`TabularEncoder.groups`); a
  column with more levels than ``max_levels`` (or than ``LEVEL_FRACTION`` of
  the rows, when that is fewer) keeps its most frequent ones but one and
  groups the rest as ``(other)``, so no column can blow up the design matrix;
- identifiers (text with a different value on every row, or a column that
  counts the rows 0, 1, 2, ...), constant and empty columns are left out.

Rows with a missing target are dropped; missing feature values are refused,
dropped or imputed (``na``), with a warning when more than
``MISSING_WARNING`` of the rows (or of a column) is missing. A fitted linear
model on these columns is mapped back to the original units by
:meth:`TabularEncoder.original_units`. The encoder is data
(:meth:`TabularEncoder.to_dict`), saved as JSON beside the model and
re-applied unchanged by ``normpen predict``.

Every problem with the table raises :class:`TableError` (a ``ValueError``)
whose message names the column and the fix.
"""

from __future__ import annotations

import csv
import io
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "NA_POLICIES",
    "MAX_LEVELS",
    "MISSING_WARNING",
    "OTHER_LEVEL",
    "Decision",
    "TableError",
    "TableRead",
    "TabularEncoder",
    "read_table",
    "fit_encoder",
    "training_data",
    "frame_from_arrays",
    "is_numeric_column",
]

#: What to do with a missing feature value: refuse the table, drop the row, or impute the mean / mode.
NA_POLICIES = ("error", "drop", "impute")
#: Most one-hot columns of one categorical variable; beyond, the rarest levels are grouped as OTHER_LEVEL.
MAX_LEVELS = 50
#: Most levels of a categorical column as a share of the training rows (fewer rows than MAX_LEVELS / 0.1).
LEVEL_FRACTION = 0.1
#: The level that stands for every grouped (rare, or unseen at predict time) level of a grouped column.
OTHER_LEVEL = "(other)"
#: Share of the rows (dropped) or of a column (imputed) above which missing values earn a warning.
MISSING_WARNING = 0.2
#: Fewest rows on which a column with a different text on every row is taken for an identifier.
ID_MIN_ROWS = 10
_TEXT_SUFFIXES = {".csv": None, ".txt": None, ".tsv": "\t", ".tab": "\t"}
_COMPRESSIONS = {".gz", ".bz2", ".xz", ".zip", ".zst"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls", ".ods"}
_SEPARATORS = (",", ";", "\t", "|")
_SNIFF_LINES = 50
#: A number with comma thousands separators (1,234 or 1,234,567.8) / with decimal commas (1.234,5 or 12,5).
_COMMA_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")
_PLAIN_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_DECIMAL_COMMA = re.compile(r"^[+-]?(\d{1,3}(\.\d{3})+|\d+)(,\d+)?$")
_ANY_NUMBER = re.compile(
    "|".join(f"({pattern.pattern})" for pattern in (_COMMA_THOUSANDS, _PLAIN_NUMBER, _DECIMAL_COMMA))
)
#: Share of a text column's values that must be numbers for its other values to be read as missing marks.
NUMERIC_SHARE = 0.9
#: Most distinct missing marks (``?``, ``-``, ...) in one such column.
MAX_MARKERS = 3


class TableError(ValueError):
    """The table cannot be used as given; the message names the problem and the fix."""


@dataclass(frozen=True)
class Decision:
    """One thing done with the user's data: the column (or ``"(file)"``, ``"(rows)"``), what, and why.

    ``warn`` marks a decision the user should look at (many rows dropped, a
    mostly-imputed column), printed as a warning as well.
    """

    column: str
    action: str
    reason: str
    warn: bool = False

    def to_dict(self) -> dict:
        return {"column": self.column, "action": self.action, "reason": self.reason, "warn": self.warn}


@dataclass(frozen=True)
class TableRead:
    """A table as read: the frame, how its text was parsed (``sep``, ``decimal``, ``thousands``; None
    for Parquet and Excel) and the :class:`Decision` of each guess."""

    frame: pd.DataFrame
    options: dict
    decisions: tuple[Decision, ...] = field(default=())


def read_table(path, *, sep=None, decimal=None, thousands=None) -> TableRead:
    """Read a delimited text, Parquet or Excel file (the module docstring lists the suffixes).

    ``sep`` (sniffed from the first lines when None), ``decimal`` and
    ``thousands`` (detected from the text columns when both are None) are
    the text format. Raises :class:`TableError` for a missing file, an
    unknown suffix, an Excel file without ``openpyxl``, an empty file and a
    file with a header but no rows.
    """
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] in _COMPRESSIONS
    kind_suffix = (
        (suffixes[-2] if len(suffixes) > 1 else "") if compressed else (suffixes[-1] if suffixes else "")
    )
    if not path.is_file():
        raise TableError(f"{path}: no such file; check the path")
    if kind_suffix in _TEXT_SUFFIXES:
        read = _read_text(path, sep or _TEXT_SUFFIXES[kind_suffix], decimal, thousands)
    elif kind_suffix in _PARQUET_SUFFIXES and not compressed:
        read = TableRead(_read_binary(path, "parquet"), {})
    elif kind_suffix in _EXCEL_SUFFIXES and not compressed:
        read = TableRead(_read_binary(path, "excel"), {})
    else:
        raise TableError(
            f"{path}: unknown file type {''.join(path.suffixes)!r}; give a .csv, .tsv or .txt file "
            "(optionally "
            ".gz, .bz2, .xz, .zip or .zst compressed), a .parquet file or an .xlsx file"
        )
    if read.frame.shape[0] == 0:
        raise TableError(f"{path} has a header but no data rows; add rows")
    read.frame.columns = [str(column) for column in read.frame.columns]
    return read


def _read_binary(path, kind) -> pd.DataFrame:
    import pandas as pd

    if kind == "excel":
        try:
            import openpyxl  # noqa: F401
        except ImportError:
            raise TableError(
                f"{path}: reading Excel needs the openpyxl package, which is not installed; "
                "`pip install openpyxl`, or save the sheet as CSV"
            ) from None
    try:
        return pd.read_parquet(path) if kind == "parquet" else pd.read_excel(path)
    except (ValueError, OSError, ImportError) as err:
        raise TableError(f"{path} cannot be read as {kind}: {err}") from None


def _read_text(path, sep, decimal, thousands) -> TableRead:
    """A delimited text file, its delimiter sniffed and its number format detected where not given."""
    import pandas as pd

    decisions = []
    if sep is None:
        sep = _sniff_separator(path)
        decisions.append(
            Decision(
                "(file)",
                f"columns separated by {sep!r}",
                "sniffed from the first lines; pass --sep to choose",
            )
        )
    options = {"sep": sep, "decimal": decimal or ".", "thousands": thousands}
    try:
        frame = pd.read_csv(path, sep=sep, decimal=options["decimal"], thousands=thousands)
        markers = _missing_markers(frame)
        if markers:
            decisions += [
                Decision(
                    column, f"read {', '.join(map(repr, tokens))} as missing", "every other value is a number"
                )
                for column, tokens in markers.items()
            ]
            frame = pd.read_csv(
                path, sep=sep, decimal=options["decimal"], thousands=thousands, na_values=markers
            )
        if decimal is None and thousands is None:
            detected = _number_format(frame, sep)
            if detected is not None:
                options.update(detected[0])
                decisions.append(detected[1])
                frame = pd.read_csv(
                    path,
                    sep=sep,
                    decimal=options["decimal"],
                    thousands=options["thousands"],
                    na_values=markers,
                )
    except pd.errors.EmptyDataError:
        raise TableError(f"{path} is empty; give a file with a header row and data rows") from None
    except TableError:
        raise
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        raise TableError(
            f"{path} cannot be read as delimited text (separator {sep!r}): {err}; check --sep"
        ) from None
    return TableRead(frame, options, tuple(decisions))


def _sniff_separator(path) -> str:
    """The candidate separator that splits the first lines into the same number (> 1) of fields on every
    line, the most fields winning; ``","`` when none does."""
    import pandas as pd

    try:
        with pd.io.common.get_handle(
            path, "r", compression="infer", encoding="utf-8", errors="replace"
        ) as handle:
            lines = [line for _, line in zip(range(_SNIFF_LINES), handle.handle, strict=False)]
    except (OSError, EOFError, ValueError):  # unreadable here: let read_csv report it
        return ","
    lines = [line for line in lines if line.strip()]
    if len(lines) > 1 and not lines[-1].endswith("\n"):
        lines = lines[:-1]  # a line cut by the sample
    best, best_fields = ",", 1
    for candidate in _SEPARATORS:
        counts = {len(row) for row in csv.reader(io.StringIO("".join(lines)), delimiter=candidate)}
        if len(counts) == 1 and (fields := counts.pop()) > best_fields:
            best, best_fields = candidate, fields
    return best


def _missing_markers(frame) -> dict:
    """``{column: tokens}`` for each text column whose values are numbers (in any of the formats above) but
    for at most ``MAX_MARKERS`` distinct tokens without digits (``?``, ``-``, ``n.a.``, ``missing``), which
    make up at most ``1 - NUMERIC_SHARE`` of its values: the file's marks for a missing number."""
    markers = {}
    for column in frame.columns:
        series = frame[column]
        if is_numeric_column(series) or series.dtype == bool:
            continue
        counts = series.dropna().astype(str).value_counts()
        stripped = counts.index.str.strip()
        numbers = np.array([bool(_ANY_NUMBER.match(v)) for v in stripped], dtype=bool)
        tokens = counts.index[~numbers]
        if not 0 < len(tokens) <= MAX_MARKERS or any(re.search(r"\d", t) for t in tokens):
            continue
        if counts[numbers].sum() >= NUMERIC_SHARE * counts.sum():
            markers[column] = sorted(tokens)
    return markers


def _number_format(frame, sep):
    """``({"decimal": ..., "thousands": ...}, Decision)`` when the text columns hold numbers written with
    thousands separators or decimal commas, else None.

    A column counts when every value is a number in one convention and one
    value at least uses the separator. ``1,234`` alone fits both; such a
    file follows its other columns (a column pandas already read with decimal
    points, such as ``14.23``, rules out decimal commas), and else is read
    with decimal commas when its separator is ``;`` (the usual pairing), with
    comma thousands otherwise. A file that writes numbers both ways raises
    :class:`TableError` asking for ``--decimal`` and ``--thousands``.
    """
    comma_thousands, decimal_comma, ambiguous = [], [], []
    for column in frame.columns:
        series = frame[column]
        if is_numeric_column(series) or series.dtype == bool:
            continue
        values = series.dropna().astype(str).str.strip()
        values = values[values != ""].unique()[:2000]
        if len(values) == 0:
            continue
        us = all(_COMMA_THOUSANDS.match(v) or _PLAIN_NUMBER.match(v) for v in values)
        eu = all(_DECIMAL_COMMA.match(v) for v in values) and any("," in v for v in values)
        if us and eu:
            ambiguous.append(column)
        elif us and any("," in v for v in values):
            comma_thousands.append(column)
        elif eu:
            decimal_comma.append(column)
    if not (comma_thousands or decimal_comma or ambiguous):
        return None
    point_decimals = [
        c for c in frame.columns if frame[c].dtype.kind == "f" and (frame[c].dropna() % 1 != 0).any()
    ]
    if decimal_comma and (comma_thousands or point_decimals):
        raise TableError(
            f"the file writes numbers both like '3.078,5' (column {decimal_comma[0]!r}) and like '3,078.5' "
            f"or '14.23' (column {(comma_thousands + point_decimals)[0]!r}); pass --decimal and --thousands"
        )
    point = comma_thousands or point_decimals
    european = bool(decimal_comma) if (point or decimal_comma) else sep == ";"
    columns = (decimal_comma if european else comma_thousands) + ambiguous
    options = {"decimal": ",", "thousands": "."} if european else {"decimal": ".", "thousands": ","}
    shown = ", ".join(repr(c) for c in columns[:5]) + (" ..." if len(columns) > 5 else "")
    example = "3.078,5" if european else "3,078.5"
    return options, Decision(
        "(file)",
        f"numbers read with decimal {options['decimal']!r} and thousands {options['thousands']!r}",
        f"column(s) {shown} are written like {example!r}; pass --decimal and --thousands to choose",
    )


def is_numeric_column(series) -> bool:
    """Whether a column holds numbers (booleans count as categories, not numbers)."""
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


@dataclass(frozen=True)
class TabularEncoder:
    """The learned map from a table to a design matrix (see the module docstring).

    Attributes
    ----------
    target : str
        Name of the target column (ignored by :meth:`transform` when absent).
    numeric : tuple of str
        Numeric feature columns (dates included), in design-matrix order.
    means, scales : tuple of float
        :math:`\\mu_j` and :math:`s_j` of the numeric columns on the training rows.
    categorical : tuple of str
        Categorical feature columns, after the numeric ones in the design matrix.
    levels : tuple of tuple
        The levels of each categorical column (sorted), one 0/1 column each;
        a grouped column has :data:`OTHER_LEVEL` among them, which takes
        every other level (an unseen one at predict time too).
    modes : tuple
        The most frequent level of each categorical column (for ``na="impute"``).
    na : {"error", "drop", "impute"}
        The missing-feature policy.
    dates : tuple of str
        The numeric columns read as dates: days since 1970-01-01.
    decisions : tuple of Decision
        What :func:`fit_encoder` did with each column, and why.
    """

    target: str
    numeric: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    categorical: tuple[str, ...]
    levels: tuple[tuple, ...]
    modes: tuple
    na: str
    dates: tuple[str, ...] = ()
    decisions: tuple[Decision, ...] = ()

    @property
    def feature_names(self) -> list[str]:
        """Column names of the design matrix: numeric names, then ``"column=level"``."""
        pairs = zip(self.categorical, self.levels, strict=True)
        dummies = [f"{c}={level}" for c, levels in pairs for level in levels]
        return [*self.numeric, *dummies]

    @property
    def groups(self) -> list[np.ndarray]:
        """Feature groups: each numeric column alone, each categorical variable's 0/1 columns together."""
        groups = [np.array([j]) for j in range(len(self.numeric))]
        start = len(self.numeric)
        for levels in self.levels:
            groups.append(np.arange(start, start + len(levels)))
            start += len(levels)
        return groups

    def rows(self, frame) -> np.ndarray:
        """Boolean mask of the rows of ``frame`` the encoder keeps: all, or (``na="drop"``) the complete ones.

        Raises :class:`TableError` naming the first column with a missing
        value, its count and the two ways on, when the policy is ``"error"``.
        """
        columns = [*self.numeric, *self.categorical]
        missing = frame[columns].isna()
        if self.na == "error" and missing.to_numpy().any():
            column = missing.any().idxmax()
            count = int(missing[column].sum())
            raise TableError(
                f"feature column {column!r} has {count} missing value(s) ({count / len(frame):.0%} of the "
                "rows); "
                "pass --missing impute to fill in the training mean (numeric) / most frequent level "
                "(categorical), or --missing drop to drop those rows, or --exclude the column"
            )
        if self.na == "drop":
            return ~missing.to_numpy().any(axis=1)
        return np.ones(frame.shape[0], dtype=bool)

    def transform(self, frame, *, sparse=False, order="C"):
        """The design matrix (float64) of the rows of ``frame`` kept by :meth:`rows`.

        With ``sparse=True`` a ``scipy.sparse`` CSR matrix (the 0/1 columns
        stored sparsely), worth it when the one-hot columns outnumber the
        numeric ones. A dense matrix is laid out in ``order``: ``"C"`` (rows
        contiguous) or ``"F"`` (columns contiguous, the layout the solvers of
        :mod:`normpen.linear` copy a design into; the same numbers either way).
        Raises :class:`TableError` for a missing feature column, a
        non-numeric or non-finite value in a numeric column, and a level
        never seen in training (unless the column was grouped).
        """
        absent = [c for c in (*self.numeric, *self.categorical) if c not in frame.columns]
        if absent:
            raise TableError(f"column(s) {absent} are missing; the model was trained with them, add them")
        frame = _subset(frame, self.rows(frame))
        numbers = self._numeric_block(frame)
        codes = [
            self._level_codes(frame[c], c, levels, mode)
            for c, levels, mode in zip(self.categorical, self.levels, self.modes, strict=True)
        ]
        return _design_matrix(numbers, codes, [len(levels) for levels in self.levels], sparse, order)

    def _numeric_block(self, frame) -> np.ndarray:
        r"""The numeric columns standardised, :math:`(v_j - \mu_j)/s_j` (a missing value as
        :math:`\mu_j`), in Fortran order: each column is filled and scaled in place, contiguously."""
        values = np.empty((frame.shape[0], len(self.numeric)), order="F")
        for j, column in enumerate(self.numeric):
            numbers = _column_numbers(frame[column], column, column in self.dates)
            standardised = values[:, j]
            np.subtract(np.where(np.isnan(numbers), self.means[j], numbers), self.means[j], out=standardised)
            standardised /= self.scales[j]
        return values

    def _level_codes(self, series, column, levels, mode) -> np.ndarray:
        """Index into ``levels`` of every value of ``series`` (missing values as ``mode``)."""
        keys = _level_keys(series.where(series.notna(), mode))
        index = {level: k for k, level in enumerate(levels)}
        unseen = sorted(set(keys.unique()) - set(levels))
        if unseen and OTHER_LEVEL in index:
            keys = keys.where(keys.isin(levels), OTHER_LEVEL)
        elif unseen:
            raise TableError(
                f"column {column!r} holds level {unseen[0]!r}, not seen in training (levels: "
                f"{_shorten(list(levels))}); map it to a known level or retrain with it"
            )
        return keys.map(index).to_numpy(dtype=np.int64)

    def original_units(self, coef, intercept):
        r"""Coefficients and intercept of the same linear function in the table's units.

        A model :math:`b + \sum_j w_j (v_j - \mu_j)/s_j + \sum w_{c\ell}[v_c = \ell]`
        equals :math:`b' + \sum_j (w_j/s_j) v_j + \sum w_{c\ell}[v_c = \ell]` with
        :math:`b' = b - \sum_j w_j \mu_j / s_j`. ``coef`` has the features on its
        last axis (shape ``(p,)`` or ``(K, p)``); ``intercept`` is a scalar or ``(K,)``.
        """
        coef = np.array(coef, dtype=np.float64)
        k = len(self.numeric)
        coef[..., :k] = coef[..., :k] / np.array(self.scales)
        shift = coef[..., :k] @ np.array(self.means)
        return coef, np.asarray(intercept, dtype=np.float64) - shift

    def to_dict(self) -> dict:
        """The encoder as JSON-ready data."""
        return {
            "target": self.target,
            "numeric": list(self.numeric),
            "means": list(self.means),
            "scales": list(self.scales),
            "categorical": list(self.categorical),
            "levels": [list(levels) for levels in self.levels],
            "modes": list(self.modes),
            "na": self.na,
            "dates": list(self.dates),
            "decisions": [decision.to_dict() for decision in self.decisions],
        }

    @classmethod
    def from_dict(cls, data: dict) -> TabularEncoder:
        """The encoder :meth:`to_dict` described; ``TableError`` if the data are not such a description."""
        try:
            encoder = cls(
                target=str(data["target"]),
                numeric=tuple(str(c) for c in data["numeric"]),
                means=tuple(float(m) for m in data["means"]),
                scales=tuple(float(s) for s in data["scales"]),
                categorical=tuple(str(c) for c in data["categorical"]),
                levels=tuple(tuple(str(level) for level in levels) for levels in data["levels"]),
                modes=tuple(None if mode is None else str(mode) for mode in data["modes"]),
                na=str(data["na"]),
                dates=tuple(str(c) for c in data.get("dates", ())),
                decisions=tuple(Decision(**d) for d in data.get("decisions", ())),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise TableError(f"not a normpen table encoder: {err!r}") from None
        lengths = {len(encoder.numeric), len(encoder.means), len(encoder.scales)}
        if len(lengths) != 1 or len({len(encoder.categorical), len(encoder.levels), len(encoder.modes)}) != 1:
            raise TableError("not a normpen table encoder: column lists of different lengths")
        if encoder.na not in NA_POLICIES or not all(s > 0 and math.isfinite(s) for s in encoder.scales):
            raise TableError("not a normpen table encoder: bad missing-value policy or scale")
        return encoder


def _design_matrix(numbers, codes, widths, sparse, order="C"):
    """``[numbers | one-hot of codes]``: the 0/1 block of categorical column ``c`` is ``widths[c]`` wide
    and has its 1 at ``codes[c]``; a CSR matrix when ``sparse``, else a dense array in ``order``."""
    n, k = numbers.shape
    starts = np.cumsum([0, *widths[:-1]])
    columns = (
        np.column_stack([start + code for start, code in zip(starts, codes, strict=True)]).ravel()
        if codes
        else np.zeros(0, dtype=np.int64)
    )
    if not codes and not sparse:
        return np.asarray(numbers, order=order)  # no 0/1 block: no new matrix for the order it is in
    rows = np.repeat(np.arange(n), len(codes))
    if sparse:
        from scipy import sparse as sp

        one_hot = sp.csr_matrix((np.ones(rows.size), (rows, columns)), shape=(n, int(sum(widths))))
        return sp.hstack([sp.csr_matrix(numbers), one_hot], format="csr")
    design = np.zeros((n, k + int(sum(widths))), order=order)
    design[:, :k] = numbers
    design[rows, k + columns] = 1.0
    return design


def _subset(frame, keep):
    """The rows of ``frame`` where the boolean array ``keep`` holds; ``frame`` itself when it holds
    everywhere (no copy of the table)."""
    return frame if keep.all() else frame[keep]


def _column_numbers(series, column, is_date) -> np.ndarray:
    """The values of a numeric (or date: days since 1970-01-01) column as float64, NaN where missing.

    Raises :class:`TableError` for a value that is not a number (a date),
    and for an infinite one.
    """
    import pandas as pd

    numbers = _date_days(series) if is_date else pd.to_numeric(series, errors="coerce").to_numpy(np.float64)
    bad = np.isnan(numbers) & series.notna().to_numpy()
    if bad.any():
        kind = "a date" if is_date else "numeric"
        raise TableError(
            f"column {column!r} is {kind} in training but holds {series[bad].iloc[0]!r}; fix that value"
        )
    infinite = np.isinf(numbers)
    if infinite.any():
        raise TableError(
            f"column {column!r} holds {int(infinite.sum())} infinite value(s) (e.g. {numbers[infinite][0]}); "
            "replace them by finite numbers or leave them empty (missing)"
        )
    return numbers


def _date_days(series) -> np.ndarray:
    """Days since 1970-01-01 (UTC) of every parsable date of ``series``, NaN elsewhere."""
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "could not infer format": parsed one by one
        stamps = pd.to_datetime(series, errors="coerce", format="mixed", utc=True)
    stamps = stamps.dt.tz_localize(None)
    return ((stamps - pd.Timestamp("1970-01-01")) / pd.Timedelta(days=1)).to_numpy(
        dtype=np.float64, na_value=np.nan
    )


def _level_keys(series):
    """Every value as text (an integral float such as 3.0 as ``"3"``), so that a code read from a file with
    missing values (a float column) matches the same code read from one without (an int column)."""
    uniques = series.dropna().unique()
    return series.map({value: _level_key(value) for value in uniques}).astype(object)


def _level_key(level) -> str:
    if isinstance(level, float | np.floating) and float(level).is_integer():
        return str(int(level))
    return str(level.item() if isinstance(level, np.generic) else level)


def _shorten(items, limit=10) -> str:
    shown = ", ".join(repr(item) for item in items[:limit])
    return f"[{shown}{', ...' if len(items) > limit else ''}]"


def _mean_and_scale(values) -> tuple[float, float]:
    """Mean and population standard deviation of the non-missing ``values``, computed on ``values / m``
    (``m`` their largest magnitude) so that numbers near the float64 limit (1e308) do not overflow."""
    present = values[~np.isnan(values)]
    magnitude = float(np.max(np.abs(present))) if present.size else 0.0
    if not magnitude > 0:
        return 0.0, 0.0
    scaled = present / magnitude
    return float(scaled.mean() * magnitude), float(scaled.std() * magnitude)


def fit_encoder(
    frame, target, *, na="error", categorical=(), exclude=(), max_levels=MAX_LEVELS
) -> TabularEncoder:
    """Learn the :class:`TabularEncoder` of ``frame``, whose column ``target`` is the response.

    Parameters
    ----------
    frame : pandas.DataFrame
    target : str
        The response column; every other column not in ``exclude`` may be a feature.
    na : {"error", "drop", "impute"}, default "error"
        Missing feature values: refuse (naming the column), drop the row, or
        fill in the training mean (numeric) / most frequent level (categorical).
        Rows with a missing target are always dropped (a :class:`Decision` says how many).
    categorical : sequence of str
        Numeric columns to treat as categorical (codes such as 1, 2, 3);
        text and boolean columns are categorical anyway.
    exclude : sequence of str
        Columns to leave out.
    max_levels : int, default MAX_LEVELS
        Most 0/1 columns of one categorical variable (the rarest levels beyond are grouped); fewer
        when ``LEVEL_FRACTION`` of the rows is fewer.

    Raises :class:`TableError` for a missing target or named column, fewer
    than two rows with a target, no feature left, an infinite value and
    missing feature values under ``na="error"``.
    """
    if na not in NA_POLICIES:
        raise TableError(f"na must be one of {NA_POLICIES}, got {na!r}")
    if max_levels < 2:
        raise TableError(f"max_levels must be at least 2, got {max_levels}")
    _check_columns(frame, [target], "target column", "pass --target with one of the columns")
    _check_columns(frame, list(categorical), "--categorical column", "name columns of the file")
    _check_columns(frame, list(exclude), "--exclude column", "name columns of the file")
    decisions = [Decision(c, "left out", "--exclude") for c in exclude if c != target]
    roles = {}
    for column in frame.columns:
        if column != target and column not in exclude:
            roles[column], decision = _column_role(frame[column], column in categorical)
            decisions += [decision] if decision else []
    frame = frame[_target_rows(frame[target], decisions)]
    if frame.shape[0] < 2:
        raise TableError(f"{frame.shape[0]} row(s) have a target value; a fit needs many more rows")
    features = {
        role: [c for c, r in roles.items() if r == role] for role in ("numeric", "date", "categorical")
    }
    skeleton = TabularEncoder(
        target, (*features["numeric"], *features["date"]), (), (), tuple(features["categorical"]), (), (), na
    )
    if not skeleton.numeric + skeleton.categorical:
        raise TableError(
            f"no feature column is left besides the target {target!r}: "
            + "; ".join(f"{d.column!r} {d.action} ({d.reason})" for d in decisions)
        )
    kept = frame[skeleton.rows(frame)]
    decisions += _missing_decisions(frame, kept, skeleton)
    if kept.shape[0] < 2:
        raise TableError(
            f"{kept.shape[0]} row(s) are complete; pass --missing impute instead of dropping rows"
        )
    numeric, means, scales = [], [], []
    for column in skeleton.numeric:
        mean, scale = _mean_and_scale(_column_numbers(kept[column], column, column in features["date"]))
        if scale > 0:
            numeric.append(column), means.append(mean), scales.append(scale)
        else:
            decisions.append(Decision(column, "left out", "constant: the same value on every row"))
    categories, levels, modes = [], [], []
    for column in skeleton.categorical:
        counts = _level_keys(kept[column].dropna()).value_counts()
        if len(counts) < 2:
            decisions.append(Decision(column, "left out", "constant: the same value on every row"))
            continue
        limit, bound = _level_limit(kept.shape[0], max_levels)
        if len(counts) > limit:
            decisions.append(
                Decision(
                    column,
                    f"kept its {limit - 1} most frequent levels, grouped the other {len(counts) - limit + 1}"
                    f" as {OTHER_LEVEL!r}",
                    f"{len(counts)} levels are more than {bound}",
                )
            )
            counts = counts.iloc[: limit - 1]
            counts[OTHER_LEVEL] = 0
        categories.append(column), levels.append(tuple(sorted(counts.index))), modes.append(counts.idxmax())
    if not numeric + categories:
        raise TableError(
            f"every feature column of the table is constant; a fit needs a column that varies: "
            f"{_shorten([*skeleton.numeric, *skeleton.categorical])}"
        )
    return TabularEncoder(
        target,
        tuple(numeric),
        tuple(means),
        tuple(scales),
        tuple(categories),
        tuple(levels),
        tuple(modes),
        na,
        tuple(c for c in numeric if c in features["date"]),
        tuple(decisions),
    )


def _level_limit(n_rows, max_levels) -> tuple[int, str]:
    """Most levels a categorical column keeps on ``n_rows`` training rows, and the bound that sets it:
    ``max_levels``, or ``LEVEL_FRACTION`` of the rows when that is fewer (a level seen on a handful of
    rows gets a coefficient the data cannot estimate)."""
    by_rows = max(2, int(LEVEL_FRACTION * n_rows))
    if by_rows < max_levels:
        return by_rows, f"{LEVEL_FRACTION:.0%} of the {n_rows} rows"
    return max_levels, f"--max-levels {max_levels}"


def _column_role(series, as_category) -> tuple[str, Decision | None]:
    """``"numeric"``, ``"date"``, ``"categorical"`` or ``"excluded"``, and the decision to report (None
    for a plain numeric or categorical column)."""
    column, present = series.name, series.dropna()
    if present.empty:
        return "excluded", Decision(column, "left out", "empty: no value on any row")
    if as_category:
        return "categorical", Decision(column, "categorical (one-hot)", "--categorical")
    if is_numeric_column(series):
        if _counts_rows(series):
            return "excluded", Decision(column, "left out", "identifier: it numbers the rows (0, 1, 2, ...)")
        return "numeric", None
    if _looks_like_dates(present):
        return "date", Decision(column, "date -> days since 1970-01-01", "every value reads as a date")
    if len(present) >= ID_MIN_ROWS and present.nunique() == len(present):
        return "excluded", Decision(column, "left out", "identifier: a different text on every row")
    return "categorical", None


def _counts_rows(series) -> bool:
    """Whether a numeric column is the row number (0, 1, 2, ... or 1, 2, 3, ...), as an index written
    out by ``DataFrame.to_csv`` is."""
    values = series.to_numpy()
    return len(values) >= ID_MIN_ROWS and values[0] in (0, 1) and bool(np.all(np.diff(values) == 1))


_DATE = re.compile(r"^\s*(\d{4}[-/.]\d{1,2}([-/.]\d{1,2})?|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4})([ T]\S.*)?$")


def _looks_like_dates(present) -> bool:
    """Whether every value is written as a date (2020-01-31, 31/01/2020, 2020-01, with a time or not)
    and parses as one; judged on up to 200 distinct values."""
    import pandas as pd

    sample = pd.Series(present.astype(str).unique()[:200])
    return bool(sample.str.match(_DATE).all()) and bool(np.isfinite(_date_days(sample)).all())


def _target_rows(series, decisions) -> np.ndarray:
    """Rows with a target value; a :class:`Decision` is added when some are dropped."""
    present = series.notna().to_numpy()
    dropped = int((~present).sum())
    if dropped:
        decisions.append(
            Decision(
                "(rows)",
                f"dropped {dropped} of {len(present)} rows",
                f"the target {series.name!r} is missing on them",
                warn=dropped > MISSING_WARNING * len(present),
            )
        )
    return present


def _missing_decisions(frame, kept, encoder) -> list[Decision]:
    """What the missing-feature policy did: the rows dropped, or each column imputed, with its share."""
    n = frame.shape[0]
    if encoder.na == "drop" and kept.shape[0] < n:
        dropped = n - kept.shape[0]
        return [
            Decision(
                "(rows)",
                f"dropped {dropped} of {n} rows",
                "a feature is missing on them (--missing drop)",
                warn=dropped > MISSING_WARNING * n,
            )
        ]
    if encoder.na != "impute":
        return []
    decisions = []
    for column, count in frame[[*encoder.numeric, *encoder.categorical]].isna().sum().items():
        if count:
            filled = "training mean" if column in encoder.numeric else "most frequent level"
            decisions.append(
                Decision(
                    column,
                    f"imputed {count} missing values ({count / n:.0%})",
                    f"the {filled} (--missing impute)",
                    warn=count > MISSING_WARNING * n,
                )
            )
    return decisions


def _check_columns(frame, names, what, fix):
    for name in names:
        if name not in frame.columns:
            shown = _shorten(list(frame.columns), 20)
            if frame.shape[1] == 1:
                fix = (
                    f"the file was read as one column, {frame.columns[0]!r}: if its columns are separated by "
                    "another character, pass --sep (e.g. --sep ';')"
                )
            raise TableError(f"{what} {name!r} is not in the file (columns: {shown}); {fix}")


def training_data(
    frame,
    encoder,
    task,
    *,
    sparse=False,
    order="C",
    hint="for class labels use --penalty logistic-l1, logistic-l2 or svm",
):
    """Design matrix and target of the training rows of ``frame``: ``(X, y)``.

    Rows without a target are dropped, then :meth:`TabularEncoder.transform`
    applies the encoder (``sparse`` and ``order`` as there). ``task="regression"`` needs a
    numeric, finite target: a text column raises :class:`TableError` ending
    with ``hint``; ``task="classification"`` keeps the labels as they are.
    """
    frame = _subset(frame, frame[encoder.target].notna().to_numpy())
    X = encoder.transform(frame, sparse=sparse, order=order)
    series = _subset(frame[encoder.target], encoder.rows(frame))
    if task == "classification":
        return X, series.to_numpy()
    if not is_numeric_column(series):
        raise TableError(
            f"the target column {encoder.target!r} is not numeric (e.g. {series.iloc[0]!r}), so it cannot "
            f"be regressed on; {hint}"
        )
    y = series.to_numpy(dtype=np.float64)
    if not np.isfinite(y).all():
        raise TableError(
            f"the target column {encoder.target!r} holds infinite values (e.g. "
            f"{y[~np.isfinite(y)][0]}); replace them by finite numbers or leave them empty"
        )
    return X, y


def frame_from_arrays(X, y, feature_names, target):
    """A DataFrame of ``X`` with ``feature_names`` and the column ``target`` holding ``y``."""
    import pandas as pd

    frame = pd.DataFrame(np.asarray(X), columns=list(feature_names))
    frame[target] = np.asarray(y)
    return frame
