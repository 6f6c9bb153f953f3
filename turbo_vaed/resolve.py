"""Resolve what the CLI's --family/--teacher/--checkpoint options point to."""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn

from turbo_vaed.checkpoint import DEFAULT_STUDENT, build_student, load_student
from turbo_vaed.errors import UserError
from turbo_vaed.families import get_family
from turbo_vaed.student import TurboVAEDDecoder
from turbo_vaed.teachers import load_teacher, reference_family

REFERENCE_STUDENT_CONFIG = "wan-reference"


class RandomStudentWarning(UserWarning):
    """A student was built with random weights."""


def resolve_family(family: str | None, teacher: str = "reference") -> str:
    """The family named, or the reference teacher's."""
    if family is not None:
        return get_family(family).name
    if teacher in ("reference", None):
        return reference_family()
    if teacher == "random":
        raise UserError("--teacher random needs --family")
    import json

    from turbo_vaed.teachers import family_of_class

    p = Path(teacher) / "config.json"
    if not p.is_file():
        raise UserError(f"teacher directory not found or has no config.json: {teacher}")
    return family_of_class(json.loads(p.read_text()).get("_class_name", ""))


def resolve_teacher(teacher: str, family: str | None) -> nn.Module:
    """``reference`` (built-in), ``random`` (default config, random weights) or a directory."""
    if teacher == "random":
        return load_teacher(family, None)
    return load_teacher(family, teacher)


def uses_reference(family: str, teacher: str) -> bool:
    """True when ``teacher`` is the built-in reference and it exists for ``family``."""
    from turbo_vaed.teachers import REFERENCE_DIR

    return teacher == "reference" and (REFERENCE_DIR / "config.json").is_file() and family == reference_family()


def resolve_student(family: str, checkpoint: str | None, teacher: str = "reference") -> TurboVAEDDecoder:
    """A student: --checkpoint, else the committed default for the reference teacher, else random init."""
    if checkpoint is not None:
        return load_student(checkpoint, family)
    if uses_reference(family, teacher) and DEFAULT_STUDENT.is_file():
        return load_student(DEFAULT_STUDENT, family)
    warnings.warn(f"{family} student built with RANDOM weights (pass --checkpoint for a trained one)",
                  RandomStudentWarning, stacklevel=2)
    cfg = REFERENCE_STUDENT_CONFIG if uses_reference(family, teacher) else family
    return build_student(family, None, cfg)
