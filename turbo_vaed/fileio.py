"""The ground floor for files: one atomic write, one file/tree hash, stale-temp cleanup.

Every file turbovaed writes goes to a hidden temp path next to its destination and is renamed into place
only when complete, so an interrupted or failed run leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def temp_sibling(path: str | Path, tag: str = "tmp") -> Path:
    """A hidden path next to ``path`` for this process: ``.NAME.tmpPID.SUFFIX`` (suffix kept for writers
    that pick a format from it)."""
    p = Path(path)
    return p.with_name(f".{p.stem}.{tag}{os.getpid()}{p.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path to write ``path`` through; renamed onto ``path`` on success, removed on failure.

    Works for files and folders (a folder that already exists at ``path`` is replaced).
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(p)
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and p.is_dir() and not p.is_symlink():
            old = temp_sibling(p, "old")
            os.replace(p, old)
            os.replace(tmp, p)
            _remove(old)
        else:
            os.replace(tmp, p)
    finally:
        _remove(tmp)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tree_sha256(path: str | Path) -> str:
    """sha256 of a file, or of a folder (relative paths and contents of its files, sorted)."""
    path = Path(path)
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in sorted(q for q in path.rglob("*") if q.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def tree_size(path: str | Path) -> int:
    """Bytes of a file, or of every file in a folder."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(q.stat().st_size for q in path.rglob("*") if q.is_file())
