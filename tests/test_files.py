"""What normpen promises about files (docs/files.md), checked as a user meets it on the command line.

Output directories are claimed before any work (two runs on one directory:
the second fails at once, exit 2), written whole by one rename, replaced only
with ``--force`` and only when their manifest proves them normpen's; links
are never written through; ``normpen predict`` refuses a damaged or hostile
model directory with exit 2 and a message, never a traceback or a large
allocation; and every call that fails leaves the files it was given as they
were (issue 13, items 2, 3, 4, 14 and rule (b)).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import normpen._files as files
import normpen.model_io as model_io
from normpen._files import (
    LOCK_SUFFIX,
    MANIFEST,
    OutputBusyError,
    OutputExistsError,
    claim_output,
    foreign_entries,
    sha256_hex,
    write_file,
)
from normpen.cli import EXIT_BAD_INPUT, EXIT_FIT_FAILED, app
from normpen.datasets import load
from normpen.linear import Lasso, LassoCV
from normpen.model_io import MODEL_ARRAYS, MODEL_JSON, load_model, save_model

FIT_ARGS = ["--n-lams", "5", "--cv", "3"]


@pytest.fixture
def runner():
    return CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})


def _invoke(runner, *args):
    return runner.invoke(app, [str(a) for a in args])


def _tree(root: Path) -> dict:
    """Every entry under ``root`` (hidden ones too): a file's SHA-256, a link's target, ``"dir"``."""
    entries = {}
    for directory, subdirectories, names in os.walk(root):
        for name in subdirectories + names:
            path = Path(directory, name)
            relative = str(path.relative_to(root))
            if path.is_symlink():
                entries[relative] = "-> " + os.readlink(path)
            elif path.is_dir():
                entries[relative] = "dir"
            else:
                entries[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return entries


def _exited(result, code):
    """The command exited with ``code`` by itself: no traceback (the exception is the exit)."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A model directory `normpen fit` wrote (lasso on the embedded diabetes data) and a table to predict."""
    root = tmp_path_factory.mktemp("fitted")
    result = CliRunner().invoke(app, ["fit", *FIT_ARGS, "--out", str(root / "model")])
    assert result.exit_code == 0, result.output
    diabetes = load("diabetes")
    frame = pd.DataFrame(diabetes.X, columns=diabetes.feature_names)
    frame.to_csv(root / "new.csv", index=False)
    return root / "model", root / "new.csv", frame


@pytest.fixture
def model(fitted, tmp_path):
    """A copy of the fitted model directory, free to damage."""
    return Path(shutil.copytree(fitted[0], tmp_path / "model"))


# ---- item 2: two runs on one directory ---------------------------------------------------------------


def test_a_second_claim_on_the_same_directory_fails_at_once(tmp_path):
    with claim_output(tmp_path / "out", False, "first"):
        assert (tmp_path / f".out{LOCK_SUFFIX}").exists()
        with pytest.raises(OutputBusyError, match="being written by another normpen run.*out.normpen-lock"):
            claim_output(tmp_path / "out", False, "second")
    assert os.listdir(tmp_path) == []
    with claim_output(tmp_path / "out", False, "third") as claim:
        claim.commit({"a.txt": b"a"})
    assert sorted(os.listdir(tmp_path / "out")) == sorted(["a.txt", MANIFEST])


def test_fit_on_a_claimed_directory_exits_2_before_fitting(runner, tmp_path, monkeypatch):
    def never(self, X, y, sample_weight=None, on_fold=None):
        raise AssertionError("fitted although the directory was claimed")

    monkeypatch.setattr(LassoCV, "fit", never)
    with claim_output(tmp_path / "out", False, "normpen fit"):
        result = _invoke(runner, "fit", *FIT_ARGS, "--out", tmp_path / "out")
        _exited(result, EXIT_BAD_INPUT)
        assert "being written by another normpen run" in " ".join(result.output.split())
    assert os.listdir(tmp_path) == []


def _fit_command(out):
    code = "from normpen.cli import app; app(prog_name='normpen')"
    return [sys.executable, "-c", code, "fit", *FIT_ARGS, "--out", str(out)]


def test_two_fits_at_once_one_writes_the_other_exits_2(tmp_path):
    # Whichever order the two processes reach the directory in, exactly one claims it: the other finds it
    # claimed (exit 2, "being written") or already written (exit 2, "already holds"); never both 0.
    command, env = _fit_command(tmp_path / "X"), os.environ | {"COLUMNS": "300"}
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in processes)
    assert [code for code, _ in outcomes] == [0, EXIT_BAD_INPUT], outcomes
    assert "Traceback" not in outcomes[1][1]
    assert "being written by another normpen run" in outcomes[1][1] or "already holds" in outcomes[1][1]
    assert os.listdir(tmp_path) == ["X"]
    assert foreign_entries(tmp_path / "X") == []
    load_model(tmp_path / "X")


# ---- item 3: links are never written through ---------------------------------------------------------


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_a_dangling_link_in_the_output_directory_is_never_replaced(runner, tmp_path, force):
    out = tmp_path / "out"
    out.mkdir()
    (out / "fit.json").symlink_to(tmp_path / "elsewhere.json")
    before = _tree(tmp_path)
    result = _invoke(runner, "fit", *FIT_ARGS, "--out", out, *force)
    _exited(result, EXIT_BAD_INPUT)
    assert "did not write" in result.output and "fit.json" in result.output
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_an_output_directory_that_is_a_link_is_refused(runner, tmp_path, force):
    (tmp_path / "real").mkdir()
    (tmp_path / "out").symlink_to(tmp_path / "real")
    result = _invoke(runner, "fit", *FIT_ARGS, "--out", tmp_path / "out", *force)
    _exited(result, EXIT_BAD_INPUT)
    assert "symbolic link" in result.output
    assert _tree(tmp_path) == {"real": "dir", "out": f"-> {tmp_path / 'real'}"}


def test_predict_out_never_writes_through_a_link(runner, fitted, tmp_path):
    model, data, _ = fitted
    link = tmp_path / "predictions.csv"
    link.symlink_to(tmp_path / "target.csv")
    result = _invoke(runner, "predict", model, data, "--out", link)
    _exited(result, EXIT_BAD_INPUT)
    assert "exists (a symbolic link)" in result.output and "--force" in result.output
    assert link.is_symlink() and not (tmp_path / "target.csv").exists()
    _exited(_invoke(runner, "predict", model, data, "--out", link, "--force"), 0)
    assert not link.is_symlink() and not (tmp_path / "target.csv").exists()
    assert link.read_text().startswith("row,prediction\n")


def test_write_file_without_force_never_replaces(tmp_path):
    write_file(tmp_path / "a.csv", b"one", force=False)
    with pytest.raises(OutputExistsError, match="exists \\(a file\\).*--force"):
        write_file(tmp_path / "a.csv", b"two", force=False)
    write_file(tmp_path / "a.csv", b"two", force=True)
    assert (tmp_path / "a.csv").read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["a.csv"]


# ---- item 4: a directory is written whole and bound together -----------------------------------------


def test_fit_writes_one_directory_with_a_manifest_and_nothing_beside_it(fitted):
    model = fitted[0]
    assert sorted(os.listdir(model.parent)) == ["model", "new.csv"]
    manifest = json.loads((model / MANIFEST).read_text())
    assert manifest["generator"] == "normpen fit"
    listed = {name: entry["sha256"] for name, entry in manifest["files"].items()}
    written = {name: sha256_hex((model / name).read_bytes()) for name in os.listdir(model)}
    assert listed | {MANIFEST: written[MANIFEST]} == written
    document = json.loads((model / MODEL_JSON).read_text())
    assert document["arrays_sha256"] == sha256_hex((model / MODEL_ARRAYS).read_bytes())


def test_force_replaces_a_normpen_directory_whole(runner, model):
    (model / "fit.json").unlink()  # a normpen output with a file missing is still normpen's
    result = _invoke(runner, "fit", *FIT_ARGS, "--penalty", "ridge", "--out", model, "--force")
    _exited(result, 0)
    assert load_model(model).estimator.__class__.__name__ == "RidgeCV"
    assert foreign_entries(model) == [] and (model / "fit.json").exists()
    assert sorted(os.listdir(model.parent)) == ["model"]


def test_a_changed_file_makes_the_directory_the_users(runner, model):
    with open(model / "coefficients.csv", "a") as file:
        file.write("my note\n")
    before = _tree(model.parent)
    result = _invoke(runner, "fit", *FIT_ARGS, "--out", model, "--force")
    _exited(result, EXIT_BAD_INPUT)
    assert "changed since (coefficients.csv)" in " ".join(result.output.split())
    assert _tree(model.parent) == before


def _failing_on_call(real, failing_call, error):
    calls = []

    def replacement(*args, **kwargs):
        calls.append(args)
        if len(calls) == failing_call:
            raise error
        return real(*args, **kwargs)

    return replacement


@pytest.mark.parametrize(
    ("patched", "failing_call", "error"),
    [
        ("_write_new_file", 3, OSError(28, "No space left on device")),  # the disk fills while staging
        ("_write_new_file", 1, KeyboardInterrupt()),  # interrupted at the first file
        ("_rename_no_clobber", 1, OSError(5, "Input/output error")),  # the new directory cannot move in
    ],
)
def test_a_failed_replacement_leaves_the_old_directory_whole(
    data_xy, tmp_path, monkeypatch, patched, failing_call, error
):
    X, y = data_xy
    directory = save_model(tmp_path / "m", Lasso(0.1).fit(X, y))
    before = _tree(tmp_path)
    monkeypatch.setattr(files, patched, _failing_on_call(getattr(files, patched), failing_call, error))
    with pytest.raises(type(error)):
        save_model(directory, Lasso(0.5).fit(X, y), force=True)
    assert _tree(tmp_path) == before
    assert load_model(directory).estimator.lam == 0.1


def test_a_run_killed_between_its_renames_leaves_no_mixed_directory(data_xy, tmp_path):
    # The process dies (SIGKILL: no cleanup runs) right after moving the old directory aside: the model
    # directory is then absent, never half old and half new, and `predict` refuses it.
    X, y = data_xy
    directory = save_model(tmp_path / "m", Lasso(0.1).fit(X, y))
    script = textwrap.dedent(f"""
        import os, signal, numpy as np
        import normpen._files as files
        from normpen.linear import Lasso
        from normpen.model_io import save_model
        rename = os.rename
        def rename_then_die(source, target):
            rename(source, target)
            if str(source) == {str(directory)!r}:
                os.kill(os.getpid(), signal.SIGKILL)
        files.os.rename = rename_then_die
        X, y = np.load({str(tmp_path / "xy.npy")!r})[:, :-1], np.load({str(tmp_path / "xy.npy")!r})[:, -1]
        save_model({str(directory)!r}, Lasso(0.5).fit(X, y), force=True)
    """)
    np.save(tmp_path / "xy.npy", np.column_stack([X, y]))
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr
    assert not directory.exists()
    leftovers = [name for name in os.listdir(tmp_path) if name.startswith(".m.")]
    assert len(leftovers) == 3  # the old directory set aside, the new one staged, the lock
    with pytest.raises(model_io.ModelFileError, match="holds no model.json"):
        load_model(directory)


@pytest.fixture(scope="module")
def data_xy():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5))
    return X, X @ np.array([1.5, 0.0, -2.0, 0.0, 0.5]) + 0.3 * rng.normal(size=40)


# ---- item 14: `normpen predict` on damaged and hostile model directories ------------------------------


def _rehash(model):
    """Record the archive's current hash in model.json, as someone forging both files would."""
    document = json.loads((model / MODEL_JSON).read_text())
    document["arrays_sha256"] = sha256_hex((model / MODEL_ARRAYS).read_bytes())
    (model / MODEL_JSON).write_text(json.dumps(document))


def _truncate(model):
    data = (model / MODEL_ARRAYS).read_bytes()
    (model / MODEL_ARRAYS).write_bytes(data[: len(data) // 2])


def _flip_a_data_bit(model):
    data = bytearray((model / MODEL_ARRAYS).read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        info = archive.getinfo("coef_.npy")
    data[info.header_offset + 30 + len(info.filename) + info.file_size - 1] ^= 1  # last byte of coef_'s data
    (model / MODEL_ARRAYS).write_bytes(bytes(data))


def _savez(model, members: dict[str, bytes], compression=zipfile.ZIP_STORED):
    """Write model.npz with these raw members and record its hash: a forged archive with a valid hash."""
    with zipfile.ZipFile(model / MODEL_ARRAYS, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    _rehash(model)


def _npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _members(model) -> dict[str, bytes]:
    with zipfile.ZipFile(model / MODEL_ARRAYS) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _huge_header(model):
    members = _members(model)
    header = _npy(np.zeros(1))
    members["coef_.npy"] = header.replace(b"(1,)", b"(10000000000000,)")
    _savez(model, members)


def _replace_coef(array):
    def change(model):
        _savez(model, _members(model) | {"coef_.npy": _npy(array)})

    return change


def _deep_json(model):
    (model / MODEL_JSON).write_text("[" * 100_000 + "]" * 100_000)


def _json_is_dev_zero(model):
    (model / MODEL_JSON).unlink()
    (model / MODEL_JSON).symlink_to("/dev/zero")


def _json_too_large(model):
    with open(model / MODEL_JSON, "r+b") as file:
        file.truncate(model_io.MAX_JSON_BYTES + 1)  # sparse: costs no disk


def _npz_from_another_fit(model):
    X, y = load("diabetes").X, load("diabetes").y
    other = save_model(model.parent / "other", Lasso(5.0).fit(X, y))
    shutil.copy(other / MODEL_ARRAYS, model / MODEL_ARRAYS)
    shutil.rmtree(other)


def _encoder_wider_than_the_model(model):
    document = json.loads((model / MODEL_JSON).read_text())
    document["attributes"]["n_features_in_"] = 3
    _savez(model, _members(model) | {"coef_.npy": _npy(np.zeros(3))})
    document["arrays_sha256"] = sha256_hex((model / MODEL_ARRAYS).read_bytes())
    (model / MODEL_JSON).write_text(json.dumps(document))


DAMAGES = {
    "truncated npz": (_truncate, "SHA-256 differ"),
    "truncated npz, hash forged": (lambda m: (_truncate(m), _rehash(m)), "not a plain numpy archive"),
    "bit flipped in the data, hash forged": (lambda m: (_flip_a_data_bit(m), _rehash(m)), "Bad CRC-32"),
    "npz from another fit": (_npz_from_another_fit, "SHA-256 differ.*another fit"),
    "empty npz file": (lambda m: ((m / MODEL_ARRAYS).write_bytes(b""), _rehash(m)), "not a plain numpy"),
    "zip with no arrays": (lambda m: _savez(m, {}), r"holds \[\], but model.json lists"),
    "header claiming 1e13 elements": (_huge_header, r"claims shape \(10000000000000,\)"),
    "2-D coef_": (_replace_coef(np.zeros((1, 10))), r"coef_ of shape \(1, 10\).*needs \(10,\)"),
    "integer coef_": (_replace_coef(np.zeros(10, dtype=np.int64)), "no finite float coef_"),
    "object coef_": (_replace_coef(np.array([None] * 10)), "not plain numbers"),
    "100k-deep model.json": (_deep_json, "nested too deeply"),
    "model.json is /dev/zero": (_json_is_dev_zero, "not a regular file"),
    "model.json over the size cap": (_json_too_large, "larger than"),
    "encoder wider than the model": (_encoder_wider_than_the_model, r"encoder makes 10 columns.*\(3,\)"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_predict_refuses_a_damaged_model_with_exit_2(runner, fitted, model, damage):
    change, message = DAMAGES[damage]
    change(model)
    before = _tree(model.parent)
    result = _invoke(runner, "predict", model, fitted[1])
    _exited(result, EXIT_BAD_INPUT)
    assert re.search(message, " ".join(result.output.split())), result.output
    assert _tree(model.parent) == before


def _declare_size(path: Path, name: str, size: int):
    """Set the uncompressed size the zip headers (local and central) declare for member ``name``."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        offset = archive.getinfo(name).header_offset
    struct.pack_into("<I", data, offset + 22, size)  # local file header: uncompressed size at byte 22
    entry = data.index(b"PK\x01\x02")
    while data[entry + 46 : entry + 46 + len(name)] != name.encode():
        entry = data.index(b"PK\x01\x02", entry + 1)
    struct.pack_into("<I", data, entry + 24, size)  # central directory entry: uncompressed size at byte 24
    path.write_bytes(bytes(data))


def test_a_decompression_bomb_is_refused_from_its_headers(runner, fitted, model):
    # coef_ declares 2 GiB of float64 (shape (2**28,) in its .npy header, 2**31 + header bytes in the zip's
    # headers) in a 1 kB archive. Sizes are judged from the headers, so it is refused without inflating a
    # byte; an honest bomb (the same declaration, a real 2 MB stream) takes the same path.
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (2**28,)})
    _savez(model, _members(model) | {"coef_.npy": header.getvalue() + bytes(1 << 20)}, zipfile.ZIP_DEFLATED)
    _declare_size(model / MODEL_ARRAYS, "coef_.npy", len(header.getvalue()) + 2**31)
    _rehash(model)
    assert (model / MODEL_ARRAYS).stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        result = _invoke(runner, "predict", model, fitted[1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    _exited(result, EXIT_BAD_INPUT)
    assert "would decompress to 21474" in result.output
    # The peak is the table read, the archive and its hash: megabytes, far below the 2 GiB member.
    assert peak < 256 << 20


def test_archive_sizes_are_capped_before_reading(fitted, model, monkeypatch):
    monkeypatch.setattr(model_io, "MAX_ARRAY_BYTES", 100)
    with pytest.raises(model_io.ModelFileError, match="larger than 100 bytes"):
        load_model(model)


# ---- predict on non-finite and overflowing data ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.inf, r"column 'bmi' holds|'bmi'.*(inf|finite)"),
        (1e308, r"'bmi'.*(finite|overflow)|overflows on row\(s\) \[3\]"),
    ],
)
def test_predict_on_inf_or_huge_values_exits_2_naming_them(runner, fitted, tmp_path, value, message):
    model, _, frame = fitted
    frame = frame.copy()
    frame.loc[3, "bmi"] = value
    frame.to_csv(tmp_path / "extreme.csv", index=False)
    result = _invoke(runner, "predict", model, tmp_path / "extreme.csv", "--out", tmp_path / "p.csv")
    _exited(result, EXIT_BAD_INPUT)
    assert re.search(message, " ".join(result.output.split())), result.output
    assert os.listdir(tmp_path) == ["extreme.csv"]


# ---- rule (b): a call that fails leaves everything it was given as it was ------------------------------


def _bad_table(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    return tmp_path / "bad.csv"


FAILING_CALLS = {
    "fit --force over a model, bad data": (
        lambda t, m: ["fit", _bad_table(t), "--target", "nope", "--out", m, "--force"],
        EXIT_BAD_INPUT,
    ),
    "fit without --force over a model": (lambda t, m: ["fit", *FIT_ARGS, "--out", m], EXIT_BAD_INPUT),
    "fit into a file": (lambda t, m: ["fit", *FIT_ARGS, "--out", m / MODEL_JSON], EXIT_BAD_INPUT),
    "fit --force over a model, solver fails": (
        lambda t, m: ["fit", *FIT_ARGS, "--out", m, "--force"],
        EXIT_FIT_FAILED,
    ),
    "sweep over a model": (lambda t, m: ["sweep", "--epochs", "1", "--out", m], EXIT_BAD_INPUT),
    "predict --out an existing file": (
        lambda t, m: ["predict", m, _bad_table(t), "--out", m / MODEL_JSON],
        EXIT_BAD_INPUT,
    ),
    "predict on a table without the columns": (lambda t, m: ["predict", m, _bad_table(t)], EXIT_BAD_INPUT),
    "predict --out into a missing directory": (
        lambda t, m: ["predict", m, _bad_table(t), "--out", t / "no" / "p.csv"],
        EXIT_BAD_INPUT,
    ),
}


def _diverging_fit(self, X, y, sample_weight=None, on_fold=None):
    raise FloatingPointError("overflow in the solver")


@pytest.mark.parametrize("call", FAILING_CALLS)
def test_a_failing_command_leaves_every_file_as_it_was(runner, model, monkeypatch, call):
    make_args, code = FAILING_CALLS[call]
    args = make_args(model.parent, model)
    monkeypatch.setattr(LassoCV, "fit", _diverging_fit)  # reached only by the call that expects exit 3
    before = _tree(model.parent)
    result = _invoke(runner, *args)
    _exited(result, code)
    assert _tree(model.parent) == before


def test_failing_library_calls_leave_their_files(data_xy, model, tmp_path):
    X, y = data_xy
    before = _tree(tmp_path)
    with pytest.raises(TypeError):
        save_model(tmp_path / "x", object())
    with pytest.raises(OutputExistsError):
        save_model(model, Lasso(0.1).fit(X, y))
    with pytest.raises(OutputExistsError):
        write_file(model / MODEL_JSON, b"{}", force=False)
    with pytest.raises(ValueError, match="plain file name"):
        with claim_output(tmp_path / "y", False, "test") as claim:
            claim.commit({"../escape": b""})
    assert _tree(tmp_path) == before
