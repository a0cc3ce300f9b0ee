"""Atomic file writes: write a temporary file next to the target, then rename it into place, so
an interrupted run never leaves a partial file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces ``path``, on error it
    is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp (and writers that recreate the file) leave 0600: give the usual permissions.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def staged_files() -> Iterator[Callable[[str | os.PathLike], Path]]:
    """All-or-nothing writes of several files. Yields ``stage(path) -> temporary path``: write each
    file to its temporary path (in the target's folder, so the final rename never crosses
    filesystems). When the block ends normally every temporary file replaces its target; when it
    raises (an error, Ctrl-C) every temporary file is removed, and so is every folder ``stage``
    created, so nothing is left behind. (If a rename itself fails, the files renamed before it
    stay: each is complete.)"""
    staged: list[tuple[Path, Path]] = []
    created: list[Path] = []  # folders made for staged files, outermost first

    def stage(path: str | os.PathLike) -> Path:
        path = Path(path)
        missing, parent = [], path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        path.parent.mkdir(parents=True, exist_ok=True)
        created.extend(reversed(missing))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        staged.append((Path(tmp), path))
        return Path(tmp)

    try:
        yield stage
        mode = 0o666 & ~_umask()
        for tmp, _ in staged:
            os.chmod(tmp, mode)  # mkstemp leaves 0600: give the usual permissions
        while staged:
            tmp, path = staged[0]
            os.replace(tmp, path)
            staged.pop(0)
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty: never removes anything this block did not make
        raise


def check_writable_folder(path: str | os.PathLike) -> None:
    """Raise OSError (saying why) unless files can be created in folder ``path`` or, when it does
    not exist yet, in the nearest existing folder above it (where it would be made). Probes with a
    real temporary file, removed at once, so it also holds for root and read-only filesystems."""
    path = Path(path)
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == path else f" (its parent {existing} is a file)"
        raise NotADirectoryError(f"{path} is not a folder{where}")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lnca-write-probe.", dir=existing)
    except OSError as exc:
        raise PermissionError(f"cannot write in {existing} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)
