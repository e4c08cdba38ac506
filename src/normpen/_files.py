"""Output that is all or nothing, never written through a link, and never replaces what normpen did not write.

One piece serves ``normpen fit``, ``normpen sweep`` (an output directory) and
``normpen predict --out`` (one file); the promises are in ``docs/files.md``.

**Claim.** :func:`claim_output` first creates the lock file
``.NAME.normpen-lock`` beside the output directory ``NAME`` with an exclusive
create (``O_CREAT | O_EXCL``): of two runs given the same directory, the
second fails at once with :class:`OutputBusyError`, before any work.

**Ownership.** Every directory normpen writes holds ``.normpen-manifest.json``
(the report's writer uses the name too): the command that wrote it and the
size and SHA-256 of each file. A directory is *normpen's* when every entry in
it is a regular file the manifest lists, with the listed size and hash
(:func:`foreign_entries` is empty). Only such a directory, or an empty one,
may be replaced, and only with ``force``; a symbolic link is never written
through nor replaced.

**Atomic directory.** :meth:`OutputClaim.commit` writes every file into a
temporary sibling directory ``.NAME.XXXX.tmp``, then renames it to ``NAME``
in one step. Replacing a previous output renames the old directory aside,
renames the new one in, and deletes the old files the manifest proves
normpen's. A failure removes the temporary directory and puts the old one
back; readers see the old directory whole or the new one whole, never a mix.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

from normpen import __version__

__all__ = [
    "MANIFEST",
    "LOCK_SUFFIX",
    "OutputError",
    "OutputExistsError",
    "OutputBusyError",
    "OutputClaim",
    "claim_output",
    "foreign_entries",
    "write_file",
    "check_file_target",
    "read_capped",
    "sha256_hex",
]

MANIFEST = ".normpen-manifest.json"
LOCK_SUFFIX = ".normpen-lock"
#: A manifest lists a few file names and hashes; anything larger is not one.
MAX_MANIFEST_BYTES = 1 << 20
_MANIFEST_FORMAT = "normpen output manifest"


class OutputError(ValueError):
    """The output cannot be written where it was asked; the message says why and what to do."""


class OutputExistsError(OutputError):
    """Writing would replace files, and they may not be replaced (no ``force``, or not normpen's)."""


class OutputBusyError(OutputError):
    """Another normpen process holds the claim on this output."""


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of ``data`` as 64 hexadecimal digits."""
    return hashlib.sha256(data).hexdigest()


def read_capped(path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (a link to one is followed), refusing more than ``limit``.

    Opens without blocking (a FIFO is refused, not waited on), refuses by
    the size on disk, and reads at most one byte more than that size (a file
    growing meanwhile is caught), so ``/dev/zero`` or a huge file costs
    nothing. Raises ``FileNotFoundError``, ``OSError``, or ``ValueError`` for
    a file that is not a regular file or is larger than ``limit`` bytes.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as file:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError("is not a regular file")
        data = b"" if status.st_size > limit else file.read(status.st_size + 1)
    if status.st_size > limit or len(data) > limit:
        raise ValueError(f"is larger than {limit} bytes, the most normpen reads from it")
    return data


def _manifest_bytes(files: Mapping[str, bytes], generator: str) -> bytes:
    document = {
        "format": _MANIFEST_FORMAT,
        "generator": generator,
        "normpen_version": __version__,
        "files": {
            name: {"bytes": len(data), "sha256": sha256_hex(data)} for name, data in sorted(files.items())
        },
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _read_manifest(directory: Path) -> tuple[str, dict]:
    """``(generator, {name: {"bytes": n, "sha256": hex}})`` from ``directory``'s manifest, a regular file
    (not a link); ``("", {})`` without a valid one."""
    path = directory / MANIFEST
    try:
        regular = stat.S_ISREG(os.lstat(path).st_mode)
        document = json.loads(read_capped(path, MAX_MANIFEST_BYTES)) if regular else None
    except (OSError, ValueError, RecursionError):
        return "", {}
    valid = isinstance(document, dict) and document.get("format") == _MANIFEST_FORMAT
    files = document.get("files") if valid else None
    if not isinstance(files, dict):
        return "", {}
    entries = {
        name: entry
        for name, entry in files.items()
        if isinstance(entry, dict)
        and isinstance(entry.get("bytes"), int)
        and isinstance(entry.get("sha256"), str)
    }
    return str(document.get("generator")), entries


def _is_listed_file(path: Path, entry: dict | None) -> bool:
    """``path`` is a regular file (not a link) of the listed size and SHA-256."""
    if entry is None:
        return False
    try:
        status = os.lstat(path)
        if not stat.S_ISREG(status.st_mode) or status.st_size != entry["bytes"]:
            return False
        return sha256_hex(read_capped(path, entry["bytes"])) == entry["sha256"]
    except (OSError, ValueError):
        return False


def foreign_entries(directory) -> list[str]:
    """The names in ``directory`` that normpen cannot prove it wrote, sorted.

    Empty for an empty directory and for an output normpen wrote and nobody
    changed. Any entry is foreign unless it is the manifest or a regular file
    the manifest lists with the same size and SHA-256; without a valid
    manifest, every entry is.
    """
    directory = Path(directory)
    names = os.listdir(directory)
    entries = _read_manifest(directory)[1] if MANIFEST in names else {}
    if not entries:
        return sorted(names)
    proven = {name for name in names if _is_listed_file(directory / name, entries.get(name))}
    return sorted(set(names) - proven - {MANIFEST})


def _plain_name(name: str) -> str:
    if not isinstance(name, str) or name in ("", ".", "..", MANIFEST) or "/" in name or os.sep in name:
        raise ValueError(f"{name!r} cannot be an output file name: give a plain file name")
    return name


def _named_target(out) -> tuple[Path, Path]:
    """``(shown, target)``: ``out`` as written, for messages, and its absolute path (links unresolved)."""
    shown = Path(out)
    target = Path(os.path.abspath(shown))
    if not target.name:
        raise OutputError(f"{shown} has no name of its own; choose a new directory such as {shown / 'out'}")
    return shown, target


def _write_new_file(path: Path, data: bytes) -> None:
    """Create ``path`` (it must not exist; a link is not followed), write ``data``, flush it to disk."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o666)
    with os.fdopen(fd, "wb") as file:
        file.write(memoryview(data))
        file.flush()
        os.fsync(fd)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _make_parents(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; return the ones created, outermost first."""
    missing = []
    while not os.path.lexists(directory):
        missing.append(directory)
        directory = directory.parent
    for path in reversed(missing):
        os.mkdir(path)
    return list(reversed(missing))


def _remove_empty(directories: list[Path]) -> None:
    """Remove the directories (innermost first) that are still empty."""
    for path in reversed(directories):
        try:
            os.rmdir(path)
        except OSError:
            return


class OutputClaim:
    """The exclusive right to write one output directory, from :func:`claim_output` to the end of a ``with``.

    :meth:`commit` writes the directory; leaving the ``with`` block (normally
    or by an exception) releases the lock, and without a commit removes the
    parent directories the claim created, so a failed run leaves nothing.
    """

    def __init__(self, shown, target: Path, force: bool, generator: str, lock: Path, created: list[Path]):
        self.path = shown
        self._target = target
        self._force = force
        self._generator = generator
        self._lock = lock
        self._lock_id = _file_id(os.lstat(lock))
        self._created = created
        self._committed = False

    def __enter__(self) -> OutputClaim:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        """Remove the lock file (if it is still this claim's) and, without a commit, the parents it made."""
        try:
            if _file_id(os.lstat(self._lock)) == self._lock_id:
                os.unlink(self._lock)
        except FileNotFoundError:
            pass
        if not self._committed:
            _remove_empty(self._created)
        self._created = []

    def check(self) -> None:
        """Raise :class:`OutputError` unless the directory may be written now (see :func:`claim_output`)."""
        try:
            status = os.lstat(self._target)
        except FileNotFoundError:
            return
        shown = self.path
        if stat.S_ISLNK(status.st_mode):
            raise OutputExistsError(
                f"{shown} is a symbolic link; normpen never writes through or replaces a link: give --out a "
                "new directory"
            )
        if not stat.S_ISDIR(status.st_mode):
            raise OutputExistsError(f"{shown} is a file, not a directory; choose a new directory with --out")
        try:
            foreign = foreign_entries(self._target)
        except OSError as err:
            raise OutputError(f"cannot read {shown}: {err.strerror}; choose another --out") from None
        if foreign:
            listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise OutputExistsError(
                f"{shown} holds files normpen did not write or that changed since ({listed}); choose a new "
                f"or empty --out directory (--force replaces only a directory whose {MANIFEST} lists "
                "every file in it with its hash)"
            )
        if os.listdir(self._target) and not self._force:
            raise OutputExistsError(
                f"{shown} already holds {_read_manifest(self._target)[0]}'s output; choose another --out "
                "directory or pass --force to replace it"
            )

    def commit(self, files: Mapping[str, bytes]) -> Path:
        """Write ``files`` (name to bytes) and the manifest as the directory, in one rename; return its path.

        Raises :class:`OutputError` when the directory changed since the
        claim so that it may no longer be replaced, and ``OSError`` when the
        disk fails; either way nothing is left behind and a previous output
        is still in place, whole.
        """
        for name in files:
            _plain_name(name)
        parent = self._target.parent
        stage = Path(tempfile.mkdtemp(dir=parent, prefix=f".{self._target.name}.", suffix=".tmp"))
        try:
            os.chmod(stage, 0o777 & ~_umask())
            for name, data in files.items():
                _write_new_file(stage / name, data)
            _write_new_file(stage / MANIFEST, _manifest_bytes(files, self._generator))
            _fsync_directory(stage)
            self._swap_in(stage)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        self._committed = True
        _fsync_directory(parent)
        return self.path

    def _swap_in(self, stage: Path) -> None:
        """Rename ``stage`` to the target; a previous normpen output goes aside first and is deleted after."""
        self.check()
        if not os.path.lexists(self._target) or not os.listdir(self._target):
            _rename_no_clobber(stage, self._target, self.path)
            return
        aside = Path(
            tempfile.mkdtemp(dir=self._target.parent, prefix=f".{self._target.name}.", suffix=".tmp")
        )
        os.rename(self._target, aside)
        try:
            _rename_no_clobber(stage, self._target, self.path)
        except BaseException:
            os.rename(aside, self._target)
            raise
        _remove_owned(aside)


def _file_id(status: os.stat_result) -> tuple[int, int]:
    return status.st_dev, status.st_ino


def _rename_no_clobber(source: Path, target: Path, shown: Path) -> None:
    """Rename the directory ``source`` to ``target``, which must be absent or an empty directory."""
    try:
        os.rename(source, target)
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise
        raise OutputExistsError(
            f"{shown} changed while normpen was writing it (another program wrote into it); nothing was "
            "written: choose a new --out directory"
        ) from None


def _remove_owned(directory: Path) -> None:
    """Delete the files of a replaced output that its manifest proves normpen's, then the directory."""
    entries = _read_manifest(directory)[1]
    for name in os.listdir(directory):
        if name == MANIFEST or _is_listed_file(directory / name, entries.get(name)):
            os.unlink(directory / name)
    try:
        os.rmdir(directory)
    except OSError:
        warnings.warn(
            f"kept {directory}: it holds files normpen did not write, added while it replaced the output",
            stacklevel=3,
        )


def claim_output(out, force: bool, generator: str) -> OutputClaim:
    """Claim the output directory ``out`` for ``generator`` (e.g. ``"normpen fit"``); use it in a ``with``.

    The claim is the exclusive creation of the lock file ``.NAME.normpen-lock``
    beside ``out`` (its missing parents are created). Then ``out`` must be
    absent, an empty directory, or, with ``force``, a directory normpen wrote
    (:func:`foreign_entries` is empty); a symbolic link is always refused.

    Raises
    ------
    OutputBusyError
        Another process holds the claim (the message names the lock file).
    OutputExistsError
        ``out`` may not be replaced (the message says why and what to do).
    OutputError
        ``out`` has no name, or the lock cannot be created (an unwritable
        parent, say).
    """
    shown, target = _named_target(out)
    try:
        created = _make_parents(target.parent)
    except OSError as err:
        raise OutputError(f"cannot create the directory {err.filename}: {err.strerror}") from None
    lock = target.parent / f".{target.name}{LOCK_SUFFIX}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(lock, flags, 0o644)
    except FileExistsError:
        _remove_empty(created)
        raise OutputBusyError(
            f"{shown} is being written by another normpen run (it holds {lock}); wait for it or choose "
            f"another --out directory. If no normpen run is writing {shown}, one was killed: delete {lock}"
        ) from None
    except OSError as err:
        _remove_empty(created)
        raise OutputError(f"cannot claim {shown}: {err.strerror} ({lock}); choose a writable --out") from None
    with os.fdopen(fd, "w") as file:
        file.write(f"{generator} pid {os.getpid()}\n")
    claim = OutputClaim(shown, target, bool(force), generator, lock, created)
    try:
        claim.check()
    except BaseException:
        claim.release()
        raise
    return claim


def write_file(path, data: bytes, force: bool) -> Path:
    """Write ``data`` to the file ``path`` in one step; replace an existing one only with ``force``.

    The bytes go to a temporary file beside ``path`` first. Without
    ``force`` it is hard-linked to ``path``, which fails if anything (a
    dangling link included) has that name meanwhile; with ``force`` it is
    renamed over ``path``, replacing a file or a link itself, never writing
    through the link. The parent directory must exist.

    Raises :class:`OutputExistsError` when ``path`` exists and ``force`` is
    false, :class:`OutputError` when ``path`` is a directory or its parent is
    missing, ``OSError`` when the disk fails; nothing is left behind.
    """
    shown = Path(path)
    target = Path(os.path.abspath(shown))
    check_file_target(shown, force)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(memoryview(data))
            file.flush()
            os.fsync(handle)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; give it a new file's mode
        if force:
            os.replace(temporary, target)
        else:
            _link_no_clobber(temporary, target, shown)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return shown


def check_file_target(path, force: bool) -> None:
    """Raise :class:`OutputError` unless :func:`write_file` may write ``path`` now (same rules)."""
    shown = Path(path)
    target = Path(os.path.abspath(shown))
    if not target.parent.is_dir():
        raise OutputError(f"the directory {shown.parent} does not exist; create it or choose another file")
    try:
        status = os.lstat(target)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(status.st_mode):
        raise OutputError(f"{shown} is a directory; give a file name such as {shown / 'predictions.csv'}")
    if not force:
        what = "a symbolic link" if stat.S_ISLNK(status.st_mode) else "a file"
        raise OutputExistsError(f"{shown} exists ({what}); choose another file or pass --force to replace it")


def _link_no_clobber(source: str, target: Path, shown: Path) -> None:
    try:
        os.link(source, target, follow_symlinks=False)
    except FileExistsError:
        raise OutputExistsError(
            f"{shown} appeared while normpen was writing it; nothing was written: choose another file or "
            "pass --force to replace it"
        ) from None
