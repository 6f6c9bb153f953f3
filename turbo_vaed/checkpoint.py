"""Student checkpoints (the project's own architecture): thin helpers over :mod:`turbo_vaed.decoders.store`."""

from __future__ import annotations

from pathlib import Path

import torch

from turbo_vaed.config import load_student_config
from turbo_vaed.decoders import as_decoder
from turbo_vaed.decoders.store import BUILTINS, load_decoder, save_decoder
from turbo_vaed.decoders.student_model import TurboVAEDDecoder
from turbo_vaed.errors import UserError
from turbo_vaed.fileio import file_sha256

__all__ = ["DEFAULT_STUDENT", "save_student", "load_student", "build_student", "file_sha256"]

DEFAULT_STUDENT = BUILTINS["reference"]


def save_student(decoder: TurboVAEDDecoder, path: str | Path, dtype: torch.dtype | None = None,
                 extra: dict | None = None) -> Path:
    """Save the deployable student (alignment heads live outside it) as safetensors, atomically."""
    return save_decoder(as_decoder(decoder), path, dtype, extra)


def load_student(path: str | Path, family: str | None = None) -> TurboVAEDDecoder:
    """Load a student checkpoint's module; checks the family if given."""
    dec = load_decoder(path, family)
    if dec.arch.name != "student":
        raise UserError(f"checkpoint {path} is a {dec.arch.name} decoder, not a turbovaed student: "
                        "distillation starts from a student checkpoint")
    return dec.module


def build_student(family: str, checkpoint: str | Path | None = None, config: str | None = None,
                  seed: int = 0) -> TurboVAEDDecoder:
    """A student from a checkpoint, or a randomly initialised one from ``models/<config|family>.json``."""
    if checkpoint is not None:
        return load_student(checkpoint, family)
    torch.manual_seed(seed)
    return TurboVAEDDecoder(load_student_config(config or family)).eval()
