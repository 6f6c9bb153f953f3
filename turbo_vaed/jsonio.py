"""Atomic JSON writing."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(path: str | Path, data: object) -> Path:
    """Write ``data`` as indented JSON to a temp file, then rename it into place."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p
