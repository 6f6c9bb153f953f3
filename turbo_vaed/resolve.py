"""Resolve the CLI's choices (family, teacher, decoder/checkpoint) once, into typed values.

Checkpoint specs: a path (a ``.safetensors`` decoder or an imported decoder folder), ``builtin:<name>``,
``random`` (the family's full-size student with seed-0 random weights), or nothing (the built-in default
student for the built-in teacher's family, else a random full-size student with a warning).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from torch import nn

from turbo_vaed.decoders import Decoder
from turbo_vaed.decoders.store import RANDOM, load_decoder, random_decoder, read_header, resolve_builtin
from turbo_vaed.errors import UserError
from turbo_vaed.families import get_family
from turbo_vaed.teachers import REFERENCE_DIR, RandomTeacherWarning, load_teacher, reference_family

REFERENCE_STUDENT_CONFIG = "wan-reference"


class RandomStudentWarning(UserWarning):
    """A decoder was built with random weights."""


def reference_installed() -> bool:
    return (REFERENCE_DIR / "config.json").is_file()


def checkpoint_family(checkpoint: str | Path | None) -> str | None:
    """The family a checkpoint file/folder is for (None for no checkpoint or ``random``)."""
    if checkpoint is None or str(checkpoint) == RANDOM:
        return None
    ck = str(checkpoint)
    path = resolve_builtin(ck) if ck.startswith("builtin:") else Path(ck)
    from turbo_vaed.decoders import get_architecture

    arch_name, cfg, _ = read_header(path)
    arch = get_architecture(arch_name)
    return arch.family(arch.config_from_dict(cfg))


def resolve_family(family: str | None, teacher: str = "reference", checkpoint: str | Path | None = None) -> str:
    """The family named, else the checkpoint's, else the teacher's (the built-in reference's by default)."""
    ck_family = checkpoint_family(checkpoint)
    if ck_family is not None and teacher not in ("reference", "random", None):
        t_family = _teacher_dir_family(teacher)
        if t_family != ck_family:
            raise UserError(f"checkpoint {checkpoint} is a {ck_family} student but the teacher is {t_family}: "
                            "pass the matching --teacher/--family")
    if family is not None:
        name = get_family(family).name
        if ck_family is not None and ck_family != name:
            raise UserError(f"checkpoint {checkpoint} is a {ck_family} decoder, not {name}: pass the matching "
                            "--family (or drop it)")
        return name
    if ck_family is not None:
        return ck_family
    if teacher in ("reference", None):
        if not reference_installed():
            raise UserError("the built-in reference teacher is not installed (models/reference): pass --family F")
        return reference_family()
    if teacher == "random":
        raise UserError("--teacher random needs --family")
    return _teacher_dir_family(teacher)


def _teacher_dir_family(teacher: str) -> str:
    """The family of a local diffusers VAE folder (from its config.json class name)."""
    import json

    from turbo_vaed.teachers import family_of_class

    p = Path(teacher) / "config.json"
    if not p.is_file():
        raise UserError(f"teacher directory not found or has no config.json: {teacher}")
    try:
        cls = json.loads(p.read_text()).get("_class_name", "")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        raise UserError(f"{p} is not a diffusers config (JSON object): fix the teacher folder") from None
    return family_of_class(cls)


def uses_reference(family: str, teacher: str) -> bool:
    """True when ``teacher`` is the built-in reference and it exists for ``family``."""
    return teacher == "reference" and reference_installed() and family == reference_family()


def resolve_teacher(teacher: str, family: str) -> nn.Module:
    """``reference`` (built-in; for another family: that family's random-weight teacher, with a warning),
    ``random`` (default config, random weights) or a local diffusers VAE directory."""
    fam = get_family(family)
    if teacher in ("random", "reference") and not fam.has_teacher:
        raise UserError(f"family {fam.name} has no teacher VAE class in diffusers 0.42 (Video DC-AE is not in it): "
                        "this step needs a teacher; use a family that has one")
    if teacher == "random" or (teacher == "reference" and not uses_reference(family, teacher)):
        return load_teacher(family, None)  # warns RandomTeacherWarning
    return load_teacher(family, teacher)


def resolve_decoder(family: str, checkpoint: str | Path | None, teacher: str = "reference") -> Decoder:
    """The decoder a command works on (see the module docstring); random ones warn RandomStudentWarning."""
    if checkpoint is not None and str(checkpoint) != RANDOM:
        ck = str(checkpoint)
        return load_decoder(resolve_builtin(ck) if ck.startswith("builtin:") else ck, family)
    if checkpoint is None and uses_reference(family, teacher):
        from turbo_vaed.decoders.store import BUILTINS

        if BUILTINS["reference"].is_file():
            return load_decoder(BUILTINS["reference"], family)
    from turbo_vaed.config import load_student_config

    cfg = load_student_config(family)
    why = "" if str(checkpoint) == RANDOM else " (pass --checkpoint for a trained one)"
    warnings.warn(f"the full-size {family} student has RANDOM weights (seed 0){why}", RandomStudentWarning,
                  stacklevel=2)
    return random_decoder("student", cfg.to_dict())


__all__ = ["RandomStudentWarning", "RandomTeacherWarning", "resolve_family", "resolve_teacher", "resolve_decoder",
           "uses_reference", "checkpoint_family", "reference_installed"]
