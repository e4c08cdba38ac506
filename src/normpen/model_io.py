"""Fitted linear models saved as data: ``model.json`` plus ``model.npz``, never pickle.

A model directory holds

- ``model.json``: the format marker, the estimator's class (one of
  :mod:`normpen.linear`'s estimators, checked against that list when loading),
  its constructor parameters, its scalar and label attributes
  (``lam_``, ``classes_``, ...), and free metadata (the table encoder of
  :mod:`normpen.tabular`, the command that made it);
- ``model.npz``: the numeric fitted arrays (``coef_``, ``intercept_``,
  ``lams_``, ``cv_mean_``, ...), read with ``allow_pickle=False``.

Loading a file someone sent therefore runs no code: JSON and plain arrays
are parsed, and the only class made is one of normpen's own estimators. The
estimator comes back with its fitted attributes, so its own ``predict`` serves.
Files are written atomically, all or none (:func:`normpen.report.writer.write_files`),
and an existing file is replaced only with ``force``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from normpen import __version__
from normpen.report.writer import write_files

__all__ = [
    "FORMAT",
    "MODEL_JSON",
    "MODEL_ARRAYS",
    "ModelFileError",
    "OutputExistsError",
    "SavedModel",
    "model_files",
    "load_model",
    "check_new_files",
    "write_new_files",
]

FORMAT = "normpen linear model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
MODEL_ARRAYS = "model.npz"


class ModelFileError(ValueError):
    """A model directory that is not a readable normpen model; the message says what is wrong."""


class OutputExistsError(ValueError):
    """Writing would replace existing files, and ``force`` was not given."""


@dataclass(frozen=True)
class SavedModel:
    """A loaded model: the fitted estimator and the metadata saved with it."""

    estimator: object
    metadata: dict


def _estimator_classes() -> dict:
    from sklearn.base import BaseEstimator

    import normpen.linear as linear

    classes = (getattr(linear, name) for name in linear.__all__)
    return {cls.__name__: cls for cls in classes if isinstance(cls, type) and issubclass(cls, BaseEstimator)}


def _json_param(name, value):
    """A constructor parameter as JSON: numbers, text, None, arrays as (nested) lists, a splitter as its
    number of folds."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, Integral | Real):
        return value.item() if isinstance(value, np.generic) else value
    if hasattr(value, "get_n_splits"):
        return int(value.get_n_splits())
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, list | tuple):
        return [_json_param(name, item) for item in value]
    raise TypeError(
        f"parameter {name}={value!r} cannot be saved as data; save models whose parameters are numbers, "
        "names or arrays"
    )


def _split_attributes(estimator):
    """Fitted attributes (public, trailing underscore) as ``(json_part, numeric_arrays)``."""
    scalars, arrays = {}, {}
    for name, value in vars(estimator).items():
        if not name.endswith("_") or name.startswith("_"):
            continue
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            arrays[name] = value
        elif isinstance(value, np.ndarray):
            scalars[name] = {"labels": value.tolist()}
        else:
            scalars[name] = _json_param(name, value)
    return scalars, arrays


def model_files(estimator, metadata=None) -> dict[str, bytes]:
    """The files of a fitted estimator: ``{"model.json": ..., "model.npz": ...}`` (bytes, not yet written).

    ``metadata`` is any JSON-ready dict stored beside it. Raises ``TypeError``
    for an estimator that is not one of :mod:`normpen.linear`'s or that has a
    parameter which cannot be saved as data.
    """
    name = type(estimator).__name__
    if _estimator_classes().get(name) is not type(estimator):
        raise TypeError(f"only normpen.linear estimators can be saved, got {name}")
    params = {key: _json_param(key, value) for key, value in estimator.get_params(deep=False).items()}
    scalars, arrays = _split_attributes(estimator)
    document = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "normpen_version": __version__,
        "estimator": name,
        "params": params,
        "attributes": scalars,
        "arrays": sorted(arrays),
        "metadata": metadata or {},
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return {MODEL_JSON: text.encode("utf-8"), MODEL_ARRAYS: buffer.getvalue()}


def load_model(directory) -> SavedModel:
    """Read the model :func:`model_files` wrote into ``directory``.

    Raises :class:`ModelFileError` for a missing or malformed ``model.json``,
    an unknown estimator class or format version, and arrays that are
    missing, extra or need pickle.
    """
    directory = Path(directory)
    if directory.is_file() and directory.name == MODEL_JSON:
        directory = directory.parent
    try:
        document = json.loads((directory / MODEL_JSON).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(
            f"{directory} holds no {MODEL_JSON}; give the directory that `normpen fit --out` wrote"
        ) from None
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{directory / MODEL_JSON} is not valid JSON: {err}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelFileError(f"{directory / MODEL_JSON} is not a normpen linear model")
    if document.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{directory / MODEL_JSON} has format version {document.get('format_version')!r}; this normpen "
            f"reads version {FORMAT_VERSION}: refit the model with this version"
        )
    name = document.get("estimator")
    cls = _estimator_classes().get(name)
    if cls is None:
        raise ModelFileError(f"{directory / MODEL_JSON} names no normpen estimator: {name!r}")
    try:
        estimator = cls(**document["params"])
        for name, value in document["attributes"].items():
            setattr(estimator, _attribute_name(name), _attribute_value(value))
        arrays = _read_arrays(directory / MODEL_ARRAYS, document["arrays"])
    except (KeyError, TypeError, AttributeError) as err:
        raise ModelFileError(f"{directory / MODEL_JSON} is malformed: {err!r}") from None
    for name, value in arrays.items():
        setattr(estimator, _attribute_name(name), value)
    return SavedModel(estimator, dict(document.get("metadata") or {}))


def _attribute_name(name):
    public = isinstance(name, str) and name.isidentifier() and not name.startswith("_")
    if not (public and name.endswith("_")):
        raise TypeError(f"{name!r} is not a fitted-attribute name")
    return name


def _attribute_value(value):
    if isinstance(value, dict):
        return np.array(value["labels"])
    return value


def _read_arrays(path, names) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except FileNotFoundError:
        raise ModelFileError(f"{path} is missing; the model directory is incomplete") from None
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{path} is not a plain numpy archive: {err}") from None
    if sorted(arrays) != sorted(names):
        raise ModelFileError(f"{path} holds arrays {sorted(arrays)}, but model.json lists {sorted(names)}")
    return arrays


def check_new_files(directory, names, force: bool) -> None:
    """Raise unless ``names`` may be written into ``directory``.

    ``ValueError`` when ``directory`` is a file; :class:`OutputExistsError`
    naming the files that exist when ``force`` is false.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file, not a directory; choose a directory with --out")
    existing = sorted(name for name in names if (directory / name).exists())
    if existing and not force:
        raise OutputExistsError(
            f"{directory} already holds {', '.join(existing)}; choose another --out directory or pass "
            "--force to replace them"
        )


def write_new_files(directory, files: dict[str, bytes], force: bool) -> list[Path]:
    """Write ``files`` (name to content) into ``directory`` all or none, after :func:`check_new_files`.

    Creates ``directory`` if needed; returns the written paths.
    """
    directory = Path(directory)
    check_new_files(directory, files, force)
    directory.mkdir(parents=True, exist_ok=True)
    write_files(directory, files)
    return [directory / name for name in files]
