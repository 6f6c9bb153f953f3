"""Atomic JSON writing (strict: NaN and Inf are refused with one line naming the key, never written)."""

from __future__ import annotations

from pathlib import Path

from turbo_vaed.fileio import atomic_path


def write_json(path: str | Path, data: object) -> Path:
    """Write ``data`` as indented JSON through a temp file, then rename it into place.

    Non-finite numbers raise a one-line :class:`~turbo_vaed.errors.UserError` before anything is written.
    """
    from turbo_vaed.guards import dumps_json

    text = dumps_json(data, str(path))
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
