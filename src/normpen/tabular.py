r"""A user's table as a design matrix: reading, standardising, one-hot encoding, groups, missing values.

:func:`read_table` reads CSV or Parquet into a :class:`pandas.DataFrame`.
:func:`fit_encoder` learns a :class:`TabularEncoder` from it: which columns
are numeric and which categorical, the mean :math:`\mu_j` and standard
deviation :math:`s_j` of every numeric column, the levels of every
categorical one, and what to do with missing values. The encoder maps a
table to the design matrix

.. math::

    x_{ij} = (v_{ij} - \mu_j) / s_j \quad\text{(numeric column } j\text{)}, \qquad
    x_{i,(c,\ell)} = [v_{ic} = \ell] \quad\text{(level } \ell \text{ of categorical column } c\text{)},

so the penalty treats every numeric column on the same scale, and each
categorical variable becomes one group of 0/1 columns (:attr:`TabularEncoder.groups`)
for the group penalties. A fitted linear model on these columns is mapped
back to the original units by :meth:`TabularEncoder.original_units`. The
encoder is data (:meth:`TabularEncoder.to_dict`), saved as JSON beside the
model and re-applied unchanged by ``normpen predict``.

Every problem with the table raises :class:`TableError` (a ``ValueError``)
whose message names the column and the fix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "NA_POLICIES",
    "TableError",
    "TabularEncoder",
    "read_table",
    "fit_encoder",
    "training_data",
    "frame_from_arrays",
    "is_numeric_column",
]

#: What to do with a missing value: refuse the table, drop the row, or fill in the training mean / mode.
NA_POLICIES = ("error", "drop", "impute")
_READERS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class TableError(ValueError):
    """The table cannot be used as given; the message names the problem and the fix."""


def read_table(path) -> pd.DataFrame:
    """Read a CSV (``.csv``) or Parquet (``.parquet``, ``.pq``) file into a DataFrame.

    Raises :class:`TableError` for a missing file, an unknown suffix, an
    empty file and a file with a header but no rows.
    """
    import pandas as pd

    path = Path(path)
    kind = _READERS.get(path.suffix.lower())
    if kind is None:
        raise TableError(f"{path}: unknown file type {path.suffix!r}; give a .csv or .parquet file")
    if not path.is_file():
        raise TableError(f"{path}: no such file; check the path")
    try:
        frame = pd.read_csv(path) if kind == "csv" else pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise TableError(f"{path} is empty; give a file with a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError) as err:
        raise TableError(f"{path} cannot be read as {kind}: {err}") from None
    if frame.shape[0] == 0:
        raise TableError(f"{path} has a header but no data rows; add rows")
    frame.columns = [str(column) for column in frame.columns]
    return frame


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
        Numeric feature columns, in design-matrix order.
    means, scales : tuple of float
        :math:`\\mu_j` and :math:`s_j` of the numeric columns on the training rows.
    categorical : tuple of str
        Categorical feature columns, after the numeric ones in the design matrix.
    levels : tuple of tuple
        The levels of each categorical column (sorted), one 0/1 column each.
    modes : tuple
        The most frequent level of each categorical column (for ``na="impute"``).
    na : {"error", "drop", "impute"}
        The missing-value policy.
    """

    target: str
    numeric: tuple[str, ...]
    means: tuple[float, ...]
    scales: tuple[float, ...]
    categorical: tuple[str, ...]
    levels: tuple[tuple, ...]
    modes: tuple
    na: str

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
        value when the policy is ``"error"``.
        """
        columns = [*self.numeric, *self.categorical]
        missing = frame[columns].isna()
        if self.na == "error" and missing.to_numpy().any():
            column = missing.any().idxmax()
            count = int(missing[column].sum())
            raise TableError(
                f"column {column!r} has {count} missing value(s); remove them from the file, or pass "
                "--drop-na to drop those rows or --impute to fill in the training mean (numeric) / "
                "most frequent level (categorical)"
            )
        if self.na == "drop":
            return ~missing.to_numpy().any(axis=1)
        return np.ones(frame.shape[0], dtype=bool)

    def transform(self, frame) -> np.ndarray:
        """The design matrix (float64) of the rows of ``frame`` kept by :meth:`rows`.

        Raises :class:`TableError` for a missing feature column, a
        non-numeric value in a numeric column, and a level never seen in
        training.
        """
        absent = [c for c in (*self.numeric, *self.categorical) if c not in frame.columns]
        if absent:
            raise TableError(f"column(s) {absent} are missing; the model was trained with them, add them")
        frame = frame[self.rows(frame)]
        blocks = [self._numeric_block(frame)]
        blocks += [self._one_hot(frame[c], c, levels, mode)
                   for c, levels, mode in zip(self.categorical, self.levels, self.modes, strict=True)]
        return np.column_stack(blocks) if frame.shape[0] else np.zeros((0, len(self.feature_names)))

    def _numeric_block(self, frame) -> np.ndarray:
        import pandas as pd

        values = np.empty((frame.shape[0], len(self.numeric)))
        for j, column in enumerate(self.numeric):
            numbers = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
            bad = np.isnan(numbers) & frame[column].notna().to_numpy()
            if bad.any():
                raise TableError(
                    f"column {column!r} is numeric in training but holds {frame[column][bad].iloc[0]!r}; "
                    "fix that value"
                )
            values[:, j] = np.where(np.isnan(numbers), self.means[j], numbers)
        return (values - np.array(self.means)) / np.array(self.scales)

    def _one_hot(self, series, column, levels, mode) -> np.ndarray:
        keys = np.array([_level_key(v) for v in series.where(series.notna(), mode)], dtype=object)
        unseen = sorted(set(keys) - set(levels))
        if unseen:
            raise TableError(
                f"column {column!r} holds level {unseen[0]!r}, not seen in training (levels: "
                f"{list(levels)}); map it to a known level or retrain with it"
            )
        return np.column_stack([keys == level for level in levels]).astype(np.float64)

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
            )
        except (KeyError, TypeError, ValueError) as err:
            raise TableError(f"not a normpen table encoder: {err!r}") from None
        lengths = {len(encoder.numeric), len(encoder.means), len(encoder.scales)}
        if len(lengths) != 1 or len({len(encoder.categorical), len(encoder.levels), len(encoder.modes)}) != 1:
            raise TableError("not a normpen table encoder: column lists of different lengths")
        if encoder.na not in NA_POLICIES or not all(s > 0 and math.isfinite(s) for s in encoder.scales):
            raise TableError("not a normpen table encoder: bad missing-value policy or scale")
        return encoder


def _level_key(level) -> str:
    """A level as text (an integral float such as 3.0 as ``"3"``), so that a code read from a file with
    missing values (a float column) matches the same code read from one without (an int column)."""
    if isinstance(level, float | np.floating) and float(level).is_integer():
        return str(int(level))
    return str(level.item() if isinstance(level, np.generic) else level)


def fit_encoder(frame, target, *, na="error", categorical=(), exclude=()) -> TabularEncoder:
    """Learn the :class:`TabularEncoder` of ``frame``, whose column ``target`` is the response.

    Parameters
    ----------
    frame : pandas.DataFrame
    target : str
        The response column; every other column not in ``exclude`` is a feature.
    na : {"error", "drop", "impute"}, default "error"
        Missing feature values: refuse (naming the column), drop the row, or
        fill in the training mean (numeric) / most frequent level (categorical).
        Rows with a missing target are refused unless ``na="drop"``.
    categorical : sequence of str
        Numeric columns to treat as categorical (codes such as 1, 2, 3);
        text and boolean columns are categorical anyway.
    exclude : sequence of str
        Columns to leave out (identifiers, constant columns).

    Raises :class:`TableError` for a missing target or named column, no
    feature left, a constant feature column and missing values under ``na="error"``.
    """
    if na not in NA_POLICIES:
        raise TableError(f"na must be one of {NA_POLICIES}, got {na!r}")
    _check_columns(frame, [target], "target column", "pass --target with one of the columns")
    _check_columns(frame, list(categorical), "--categorical column", "name columns of the file")
    _check_columns(frame, list(exclude), "--exclude column", "name columns of the file")
    features = [c for c in frame.columns if c != target and c not in exclude]
    if not features:
        raise TableError(f"no feature column besides the target {target!r}; the file needs more columns")
    numeric = [c for c in features if is_numeric_column(frame[c]) and c not in categorical]
    categories = [c for c in features if c not in numeric]
    skeleton = TabularEncoder(target, tuple(numeric), (0.0,) * len(numeric), (1.0,) * len(numeric),
                              tuple(categories), ((),) * len(categories), (None,) * len(categories), na)
    kept = frame[skeleton.rows(frame) & _target_rows(frame[target], na)]
    if kept.shape[0] == 0:
        raise TableError("no rows are left after dropping the rows with missing values; impute with --impute")
    numbers = kept[numeric].to_numpy(dtype=np.float64)
    means = np.nanmean(numbers, axis=0) if numeric else np.zeros(0)
    scales = np.nanstd(numbers, axis=0) if numeric else np.zeros(0)
    levels, modes = [], []
    for column in categories:
        counts = kept[column].dropna().map(_level_key).value_counts()
        levels.append(tuple(sorted(counts.index)))
        modes.append(counts.idxmax() if len(counts) else None)
    constant = [c for c, s in zip(numeric, scales, strict=True) if not s > 0]
    constant += [c for c, lv in zip(categories, levels, strict=True) if len(lv) < 2]
    if constant:
        raise TableError(
            f"column {constant[0]!r} is constant (one value on every row), so it cannot be standardised and "
            f"carries no information; remove it from the file or pass --exclude {constant[0]}"
        )
    return TabularEncoder(target, tuple(numeric), tuple(map(float, means)), tuple(map(float, scales)),
                          tuple(categories), tuple(levels), tuple(modes), na)


def _check_columns(frame, names, what, fix):
    for name in names:
        if name not in frame.columns:
            shown = ", ".join(repr(c) for c in list(frame.columns)[:20])
            raise TableError(f"{what} {name!r} is not in the file (columns: {shown}); {fix}")


def _target_rows(series, na) -> np.ndarray:
    """Rows with a target value; a missing target is refused unless ``na="drop"``."""
    present = series.notna().to_numpy()
    if na != "drop" and not present.all():
        raise TableError(
            f"the target column {series.name!r} has {int((~present).sum())} missing value(s); a target "
            "cannot be imputed: remove those rows or pass --drop-na"
        )
    return present


def training_data(frame, encoder, task):
    """Design matrix and target of the training rows of ``frame``: ``(X, y)``.

    Rows without a target are dropped under ``na="drop"`` (refused
    otherwise), then :meth:`TabularEncoder.transform` applies the encoder.
    ``task="regression"`` needs a numeric target: a text column raises
    :class:`TableError` pointing to the classification penalties;
    ``task="classification"`` keeps the labels as they are.
    """
    frame = frame[_target_rows(frame[encoder.target], encoder.na)]
    X = encoder.transform(frame)
    series = frame[encoder.target][encoder.rows(frame)]
    if task == "classification":
        return X, series.to_numpy()
    if not is_numeric_column(series):
        raise TableError(
            f"the target column {encoder.target!r} is not numeric (e.g. {series.iloc[0]!r}), so it cannot "
            "be regressed on; for class labels use --penalty logistic-l1, logistic-l2 or svm"
        )
    return X, series.to_numpy(dtype=np.float64)


def frame_from_arrays(X, y, feature_names, target):
    """A DataFrame of ``X`` with ``feature_names`` and the column ``target`` holding ``y``."""
    import pandas as pd

    frame = pd.DataFrame(np.asarray(X), columns=list(feature_names))
    frame[target] = np.asarray(y)
    return frame
