"""Decoder checkpoints on disk: save, load, and rebuild the reference an artifact's manifest names.

Two forms, both safetensors (nothing executable is ever read):
- a file ``NAME.safetensors`` with the architecture and config in its metadata (``turbovaed.decoder/1``;
  the older ``turbovaed.student/1`` student files load as architecture ``student``);
- a folder (written by ``turbovaed import``) with ``decoder.json`` (architecture, config, provenance) and
  ``weights.safetensors``.
Checkpoint labels in manifests: a path, ``builtin:<name>`` (shipped in ``models/``) or ``random`` (seed 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from turbo_vaed.config import MODELS_DIR
from turbo_vaed.decoders import get_architecture
from turbo_vaed.decoders.base import Decoder, weights_sha256
from turbo_vaed.errors import UserError
from turbo_vaed.fileio import atomic_path, file_sha256

FORMAT = "turbovaed.decoder/1"
LEGACY_STUDENT_FORMAT = "turbovaed.student/1"
FOLDER_CONFIG = "decoder.json"
FOLDER_WEIGHTS = "weights.safetensors"
BUILTINS: dict[str, Path] = {"reference": MODELS_DIR / "reference" / "student.safetensors"}
RANDOM = "random"
RANDOM_SEED = 0


def builtin_label(path: str | Path) -> str | None:
    """``builtin:<name>`` when ``path`` is a shipped checkpoint, else None."""
    p = Path(path).resolve()
    for name, q in BUILTINS.items():
        if q.resolve() == p:
            return f"builtin:{name}"
    return None


def _meta(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as e:
        raise UserError(f"checkpoint {path} is corrupt or not safetensors ({type(e).__name__}): "
                        "re-export or re-train it") from None


def _state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return {k: v.float() for k, v in load_file(str(path)).items()}
    except Exception as e:
        raise UserError(f"checkpoint {path} is corrupt ({type(e).__name__}): re-export or re-train it") from None


def _json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UserError(f"{path} is not valid JSON ({type(e).__name__}): re-import the decoder") from None
    if not isinstance(d, dict):
        raise UserError(f"{path} is not a JSON object: re-import the decoder")
    return d


def read_header(path: str | Path) -> tuple[str, dict, dict]:
    """(architecture name, config dict, provenance) of a checkpoint file or folder, without loading weights."""
    p = Path(path)
    if p.is_dir():
        cj = p / FOLDER_CONFIG
        if not cj.is_file() or not (p / FOLDER_WEIGHTS).is_file():
            raise UserError(f"{p} is not a turbovaed decoder folder (needs {FOLDER_CONFIG} and {FOLDER_WEIGHTS}): "
                            "create one with `turbovaed import`")
        d = _json(cj)
        if d.get("format") != FORMAT or not isinstance(d.get("config"), dict) or not isinstance(d.get("arch"), str):
            raise UserError(f"{cj} is not a {FORMAT} document: re-import the decoder")
        return d["arch"], d["config"], dict(d.get("provenance") or {})
    if not p.is_file():
        raise UserError(f"checkpoint not found: {p}; pass --checkpoint PATH to a .safetensors decoder or an "
                        "imported decoder folder")
    meta = _meta(p)
    if "config" not in meta:
        raise UserError(f"checkpoint {p} has no turbovaed config in its metadata: save it with turbovaed")
    try:
        cfg = json.loads(meta["config"])
        prov = json.loads(meta.get("provenance", "{}"))
    except (ValueError, RecursionError):
        raise UserError(f"checkpoint {p} has a corrupt config in its metadata: re-export or re-train it") from None
    fmt = meta.get("format", LEGACY_STUDENT_FORMAT)
    arch = "student" if fmt == LEGACY_STUDENT_FORMAT else meta.get("arch", "")
    if fmt not in (FORMAT, LEGACY_STUDENT_FORMAT) or not isinstance(cfg, dict):
        raise UserError(f"checkpoint {p} is not a turbovaed decoder ({fmt}): save it with turbovaed")
    return arch, cfg, prov if isinstance(prov, dict) else {}


def load_decoder(path: str | Path, family: str | None = None) -> Decoder:
    """Load a checkpoint file or folder strictly; checks the family if given."""
    p = Path(path)
    arch_name, cfg_d, prov = read_header(p)
    arch = get_architecture(arch_name)
    cfg = arch.config_from_dict(cfg_d)
    if family is not None and arch.family(cfg) != family:
        raise UserError(f"checkpoint {p} is a {arch.family(cfg)} decoder, not {family}: pass the matching --family")
    module = arch.build(cfg)
    wpath = p / FOLDER_WEIGHTS if p.is_dir() else p
    rep = arch.strict_state(cfg, module, _state(wpath), str(p))
    module.load_state_dict(rep.state, strict=True)
    label = builtin_label(p) or str(p)
    return Decoder(arch, cfg, module.eval(), label, file_sha256(wpath), prov)


def random_decoder(arch_name: str, cfg_d: dict, seed: int = RANDOM_SEED) -> Decoder:
    """A decoder of ``arch_name`` built from ``cfg_d`` with seed-``seed`` random weights (label ``random``)."""
    arch = get_architecture(arch_name)
    cfg = arch.config_from_dict(cfg_d)
    torch.manual_seed(seed)
    return Decoder(arch, cfg, arch.build(cfg).eval(), RANDOM, None)


def save_decoder(decoder: Decoder, path: str | Path, dtype: torch.dtype | None = None,
                 extra: dict | None = None) -> Path:
    """Save ``decoder`` as one safetensors file (architecture and config in the metadata), atomically."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in decoder.module.state_dict().items()}
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    meta = {"format": FORMAT, "arch": decoder.arch.name, "config": json.dumps(decoder.config_dict(), sort_keys=True)}
    if decoder.provenance:
        meta["provenance"] = json.dumps(decoder.provenance)
    if extra:
        meta["extra"] = json.dumps(extra)
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp), metadata=meta)
    return Path(path)


def resolve_builtin(label: str) -> Path:
    name = label.split(":", 1)[1]
    if name not in BUILTINS:
        raise UserError(f"unknown built-in decoder '{name}': use one of {', '.join(BUILTINS)}")
    if not BUILTINS[name].is_file():
        raise UserError(f"the built-in decoder '{name}' is missing ({BUILTINS[name]}): reinstall turbovaed")
    return BUILTINS[name]


def rebuild(section: dict, checkpoint: str | Path | None = None) -> Decoder:
    """The reference decoder a manifest's ``decoder`` section names, checked against its weights hash.

    ``checkpoint`` overrides the recorded one (a moved file, say).
    """
    ck = str(checkpoint) if checkpoint is not None else section.get("checkpoint")
    want = section.get("weights_sha256")
    if ck is None:  # turbovaed.manifest/1 recorded no checkpoint for random and built-in students alike
        dec = random_decoder(section["arch"], section["config"])
        if want and weights_sha256(dec.module) != want and BUILTINS["reference"].is_file():
            dec = load_decoder(BUILTINS["reference"])
    elif ck == RANDOM:
        dec = random_decoder(section["arch"], section["config"])
    elif ck.startswith("builtin:"):
        dec = load_decoder(resolve_builtin(ck))
    elif Path(ck).exists():
        dec = load_decoder(ck)
    else:
        raise UserError(f"the checkpoint this artifact was exported from is gone ({ck}): pass --checkpoint PATH "
                        "to it")
    if want and weights_sha256(dec.module) != want:
        where = f"checkpoint {ck}" if ck not in (None, RANDOM) else "a seed-0 random decoder"
        raise UserError(f"cannot rebuild the reference: {where} does not match the weights the artifact was "
                        "exported from; pass --checkpoint PATH to that decoder")
    return dec.eval()
