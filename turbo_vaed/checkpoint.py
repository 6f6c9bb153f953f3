"""Student checkpoints: safetensors with the student config in the metadata, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from turbo_vaed.config import MODELS_DIR, StudentConfig, load_student_config
from turbo_vaed.errors import UserError
from turbo_vaed.student import TurboVAEDDecoder

DEFAULT_STUDENT = MODELS_DIR / "reference" / "student.safetensors"


def deployable_state_dict(decoder: TurboVAEDDecoder) -> dict[str, torch.Tensor]:
    """The decoder's weights only (alignment heads live outside the decoder)."""
    return {k: v.detach().contiguous() for k, v in decoder.state_dict().items()}


def save_student(decoder: TurboVAEDDecoder, path: str | Path, dtype: torch.dtype | None = None,
                 extra: dict | None = None) -> Path:
    """Save the deployable decoder as safetensors (config in metadata), atomically."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sd = deployable_state_dict(decoder)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    meta = {"format": "turbovaed.student/1", "config": decoder.cfg.to_json()}
    if extra:
        meta["extra"] = json.dumps(extra)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        save_file(sd, str(tmp), metadata=meta)
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def read_student_metadata(path: str | Path) -> dict:
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}; pass --checkpoint PATH to a .safetensors student")
    try:
        with safe_open(str(p), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise UserError(
            f"checkpoint {p} is corrupt or not safetensors ({type(e).__name__}): re-export or re-train it"
        ) from None


def load_student(path: str | Path, family: str | None = None) -> TurboVAEDDecoder:
    """Load a student checkpoint; checks the family if given."""
    from safetensors.torch import load_file

    p = Path(path)
    meta = read_student_metadata(p)
    if "config" not in meta:
        raise UserError(f"checkpoint {p} has no turbovaed config in its metadata: save it with turbovaed")
    cfg = StudentConfig.from_dict(json.loads(meta["config"]))
    if family is not None and cfg.family != family:
        raise UserError(f"checkpoint {p} is a {cfg.family} student, not {family}: pass the matching --family")
    dec = TurboVAEDDecoder(cfg)
    try:
        sd = load_file(str(p))
        dec.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except Exception as e:
        raise UserError(
            f"checkpoint {p} does not match its config ({type(e).__name__}): re-train or re-export it"
        ) from None
    return dec.eval()


def build_student(family: str, checkpoint: str | Path | None = None, config: str | None = None,
                  seed: int = 0) -> TurboVAEDDecoder:
    """A student from a checkpoint, or a randomly initialised one from ``models/<config|family>.json``."""
    if checkpoint is not None:
        return load_student(checkpoint, family)
    torch.manual_seed(seed)
    return TurboVAEDDecoder(load_student_config(config or family)).eval()


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
