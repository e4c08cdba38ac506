"""Fitted linear models saved as data: ``model.json`` plus ``model.npz``, never pickle.

A model directory holds

- ``model.json``: the format marker, the estimator's class (one of
  :mod:`normpen.linear`'s estimators, checked against that list when loading),
  its constructor parameters, its scalar and label attributes
  (``lam_``, ``classes_``, ...), and free metadata (the table encoder of
  :mod:`normpen.tabular`, the command that made it);
- ``model.npz``: the numeric fitted arrays (``coef_``, ``intercept_``,
  ``lams_``, ``cv_mean_``, ...), read with ``allow_pickle=False``.

``model.json`` records the SHA-256 of ``model.npz``, which binds the two:
an archive from another fit, or one changed on disk, is refused.

Loading a file someone sent therefore runs no code: JSON and plain arrays
are parsed, and the only class made is one of normpen's own estimators. Every
size is capped and checked before anything is decompressed or allocated
(:func:`load_model` lists the checks; docs/files.md states them). The
estimator comes back with its fitted attributes, so its own ``predict`` serves.
:func:`save_model` writes the directory as a whole, atomically, and replaces
only a previous normpen output, only with ``force`` (:mod:`normpen._files`).
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from normpen import __version__
from normpen._files import OutputExistsError, claim_output, read_capped, sha256_hex

__all__ = [
    "FORMAT",
    "MODEL_JSON",
    "MODEL_ARRAYS",
    "ModelFileError",
    "OutputExistsError",
    "SavedModel",
    "model_files",
    "save_model",
    "load_model",
    "MAX_JSON_BYTES",
    "MAX_ARRAY_BYTES",
]

FORMAT = "normpen linear model"
#: 2: ``model.json`` records the SHA-256 of ``model.npz`` (``arrays_sha256``).
FORMAT_VERSION = 2
MODEL_JSON = "model.json"
MODEL_ARRAYS = "model.npz"
#: The most bytes read from ``model.json``: parameters, labels and the table encoder fit in far less.
MAX_JSON_BYTES = 64 << 20
#: The most bytes of ``model.npz`` on disk, and of all its arrays once decompressed.
MAX_ARRAY_BYTES = 1 << 30
#: Readers of the ``.npy`` header versions numpy writes (3.0, a UTF-8 header, only for odd field names).
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
#: Nesting allowed in a constructor parameter: a list of groups, each a list of column indices.
_MAX_PARAM_DEPTH = 2


class ModelFileError(ValueError):
    """A model directory that is not a readable normpen model; the message says what is wrong."""


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
    document["arrays_sha256"] = sha256_hex(buffer.getvalue())
    text = json.dumps(document, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    return {MODEL_JSON: text.encode("utf-8"), MODEL_ARRAYS: buffer.getvalue()}


def save_model(directory, estimator, metadata=None, force: bool = False) -> Path:
    """Write :func:`model_files` as the directory ``directory``, atomically; return its path.

    ``directory`` must not exist, be empty, or (with ``force``) hold a
    previous normpen output that nobody changed. Raises ``TypeError`` as
    :func:`model_files` does, :class:`OutputExistsError` (a ``ValueError``)
    when ``directory`` may not be replaced, and
    :class:`~normpen._files.OutputBusyError` while another process writes it.
    """
    files = model_files(estimator, metadata)
    with claim_output(directory, force, "normpen.model_io.save_model") as output:
        return output.commit(files)


def load_model(directory) -> SavedModel:
    """Read the model :func:`model_files` wrote into ``directory`` (or given as its ``model.json``).

    Nothing is trusted before it is checked: ``model.json`` must be a
    regular file of at most :data:`MAX_JSON_BYTES`, nested no deeper than a
    parameter needs, and name one of normpen's estimators; ``model.npz`` must
    be a regular file of at most :data:`MAX_ARRAY_BYTES` whose SHA-256 is the
    one ``model.json`` records. Its zip members must be exactly the listed
    arrays, and each member's ``.npy`` header (dtype, shape) is read and
    checked against the member's size, against :data:`MAX_ARRAY_BYTES` in
    total, and for a plain numeric dtype (never pickle) before its data is
    decompressed. Finally the fitted shapes must agree: ``coef_`` and
    ``intercept_`` finite floats, ``coef_`` with ``n_features_in_`` columns and
    one row per class (two classes: one row), a regressor's ``coef_`` 1-D with a
    scalar ``intercept_`` or 2-D with one row per entry of a 1-D ``intercept_``.

    Raises :class:`ModelFileError` (a ``ValueError``) naming the file and
    what is wrong with it.
    """
    directory = Path(directory)
    if directory.name == MODEL_JSON and directory.is_file():
        directory = directory.parent
    json_path = directory / MODEL_JSON
    document = _read_document(json_path)
    estimator = _estimator_from(document, json_path)
    arrays = _read_arrays(directory / MODEL_ARRAYS, document["arrays"], document["arrays_sha256"])
    for name, value in arrays.items():
        setattr(estimator, name, value)
    _check_fitted_shapes(estimator, directory)
    return SavedModel(estimator, document["metadata"])


def _read_file(path: Path, limit: int, missing: str) -> bytes:
    """The bytes of ``path`` (:func:`~normpen._files.read_capped`); each failure a :class:`ModelFileError`,
    the message ``missing`` when there is no such file."""
    try:
        return read_capped(path, limit)
    except (FileNotFoundError, NotADirectoryError):
        raise ModelFileError(missing) from None
    except OSError as err:
        raise ModelFileError(f"{path} cannot be read: {err.strerror}") from None
    except ValueError as err:
        raise ModelFileError(f"{path} {err}") from None


def _read_document(path: Path) -> dict:
    """``model.json`` parsed and checked for the format and the type of each top-level entry."""
    missing = f"{path.parent} holds no {MODEL_JSON}; give the directory that `normpen fit --out` wrote"
    text = _read_file(path, MAX_JSON_BYTES, missing)
    try:
        document = json.loads(text)
    except RecursionError:
        raise ModelFileError(f"{path} is not a normpen model: its JSON is nested too deeply") from None
    except ValueError as err:
        raise ModelFileError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a normpen linear model")
    if document.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has format version {document.get('format_version')!r}; this normpen "
            f"reads version {FORMAT_VERSION}: refit the model with this version"
        )
    expected = {
        "estimator": str,
        "params": dict,
        "attributes": dict,
        "arrays": list,
        "arrays_sha256": str,
        "metadata": dict,
    }
    wrong = [key for key, kind in expected.items() if not isinstance(document.get(key), kind)]
    if wrong:
        raise ModelFileError(f"{path} is malformed: {', '.join(wrong)} missing or of the wrong type")
    return document


def _estimator_from(document: dict, path: Path):
    """The estimator ``model.json`` names, made with its parameters and given its JSON attributes."""
    cls = _estimator_classes().get(document["estimator"])
    if cls is None:
        raise ModelFileError(f"{path} names no normpen estimator: {document['estimator']!r}")
    try:
        for name, value in document["params"].items():
            _check_param(name, value, 0)
        estimator = cls(**document["params"])
        array_names = [_attribute_name(name) for name in document["arrays"]]
        if len(set(array_names)) != len(array_names) or set(array_names) & set(document["attributes"]):
            raise TypeError("an attribute is listed twice")
        for name, value in document["attributes"].items():
            setattr(estimator, _attribute_name(name), _attribute_value(name, value))
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"{path} is malformed: {err}") from None
    return estimator


def _check_param(name, value, depth):
    """A constructor parameter is JSON data: a number, text, true/false, null, or a list of those (a list
    of lists for groups)."""
    if value is None or isinstance(value, bool | int | float | str):
        return
    if isinstance(value, list) and depth < _MAX_PARAM_DEPTH:
        for item in value:
            _check_param(name, item, depth + 1)
        return
    raise TypeError(f"parameter {name!r} is not a number, text or list of numbers")


def _attribute_name(name):
    public = isinstance(name, str) and name.isidentifier() and not name.startswith("_")
    if not (public and name.endswith("_")):
        raise TypeError(f"{name!r} is not a fitted-attribute name")
    return name


def _attribute_value(name, value):
    """A JSON attribute: a number, text, true/false or null, or ``{"labels": [...]}`` for class labels."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    labels = value.get("labels") if isinstance(value, dict) and len(value) == 1 else None
    if isinstance(labels, list) and all(isinstance(v, bool | int | float | str) for v in labels):
        return np.array(labels)
    raise TypeError(f"attribute {name!r} is neither a number, text, nor a list of class labels")


def _read_arrays(path: Path, names: list, digest: str) -> dict:
    """The arrays of ``model.npz``, after its hash, member names, headers and sizes have been checked."""
    data = _read_file(path, MAX_ARRAY_BYTES, f"{path} is missing; the model directory is incomplete")
    if sha256_hex(data) != digest:
        raise ModelFileError(
            f"{path} is not the archive its {MODEL_JSON} was saved with (their SHA-256 differ): it was "
            "changed, damaged or comes from another fit; use the directory `normpen fit` wrote, unchanged"
        )
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = _array_members(archive, names, path)
            return {name: _read_member(archive, info, path) for name, info in members.items()}
    except ModelFileError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError) as err:
        raise ModelFileError(f"{path} is not a plain numpy archive: {err}") from None


def _array_members(archive: zipfile.ZipFile, names: list, path: Path) -> dict:
    """``{array name: zip member}``, checked against ``names`` and, by the declared sizes, against the cap."""
    infos = archive.infolist()
    members = {info.filename.removesuffix(".npy"): info for info in infos if info.filename.endswith(".npy")}
    if len(members) != len(infos) or sorted(members) != sorted(names):
        held = sorted(info.filename for info in infos)
        raise ModelFileError(f"{path} holds {held}, but {MODEL_JSON} lists arrays {sorted(names)}")
    if any(info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) for info in infos):
        raise ModelFileError(f"{path} uses a compression numpy does not write; save it again with numpy")
    total = sum(info.file_size for info in infos)
    if total > MAX_ARRAY_BYTES:
        raise ModelFileError(
            f"{path} would decompress to {total} bytes, more than the {MAX_ARRAY_BYTES} normpen reads"
        )
    return members


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> np.ndarray:
    """One array: its ``.npy`` header read and checked against the member's size, then its data."""
    with archive.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in _NPY_HEADERS:
            raise ModelFileError(f"{path}: {info.filename} has .npy version {version}, not 1.0 or 2.0")
        shape, fortran_order, dtype = _NPY_HEADERS[version](member)
        plain = dtype.kind in "biuf" and dtype.fields is None and dtype.subdtype is None
        if not plain or min(shape, default=0) < 0:
            raise ModelFileError(f"{path}: {info.filename} holds {dtype} of shape {shape}, not plain numbers")
        nbytes = math.prod(shape) * dtype.itemsize
        if member.tell() + nbytes != info.file_size:
            raise ModelFileError(
                f"{path}: {info.filename} claims shape {shape} of {dtype} ({nbytes} bytes), but holds "
                f"{info.file_size - member.tell()} bytes of data"
            )
        raw = member.read(nbytes)
    order = "F" if fortran_order else "C"
    return np.frombuffer(raw, dtype=dtype).reshape(shape, order=order).astype(dtype.newbyteorder("="))


def _check_fitted_shapes(estimator, directory: Path):
    """``coef_`` and ``intercept_`` are finite floats of the shapes the estimator's ``predict`` needs."""
    from sklearn.base import is_classifier

    n_features = getattr(estimator, "n_features_in_", None)
    coef, intercept = getattr(estimator, "coef_", None), getattr(estimator, "intercept_", None)
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise ModelFileError(f"{directory / MODEL_JSON} gives no number of features (n_features_in_)")
    if not (isinstance(coef, np.ndarray) and coef.dtype.kind == "f" and np.isfinite(coef).all()):
        raise ModelFileError(f"{directory / MODEL_ARRAYS} holds no finite float coef_ array")
    if is_classifier(estimator):
        classes = getattr(estimator, "classes_", None)
        labels = isinstance(classes, np.ndarray) and classes.ndim == 1 and classes.size >= 2
        if not (labels and np.unique(classes).size == classes.size):
            raise ModelFileError(f"{directory} gives no list of two or more distinct classes (classes_)")
        rows = 1 if classes.size == 2 else classes.size
        expected = ((rows, n_features), (rows,))
    elif np.ndim(intercept) == 0:
        expected = ((n_features,), ())
    else:
        outputs = np.shape(intercept)[0]
        expected = ((outputs, n_features), (outputs,))
    intercept_shape = np.shape(intercept)
    finite_intercept = isinstance(intercept, np.ndarray | float) and np.isfinite(intercept).all()
    if (coef.shape, intercept_shape) != expected or not finite_intercept:
        raise ModelFileError(
            f"{directory} holds coef_ of shape {coef.shape} and intercept_ of shape {intercept_shape}; "
            f"a {type(estimator).__name__} of {n_features} features needs {expected[0]} and {expected[1]} "
            "(finite numbers)"
        )
