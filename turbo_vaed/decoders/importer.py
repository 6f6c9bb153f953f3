"""``turbovaed import``: a released checkpoint -> a turbovaed decoder folder (config, safetensors, provenance).

The architecture reads the file safely (:func:`turbo_vaed.decoders.base.read_weights_file`) and strictly
(:meth:`Architecture.import_release`); the folder is written to a temp path and renamed, so a refused file
leaves nothing behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from turbo_vaed.decoders import get_architecture
from turbo_vaed.decoders.base import Decoder
from turbo_vaed.decoders.store import FOLDER_CONFIG, FOLDER_WEIGHTS, FORMAT
from turbo_vaed.errors import UserError
from turbo_vaed.fileio import atomic_path, file_sha256


@dataclass(frozen=True)
class ImportResult:
    folder: Path
    decoder: Decoder
    ignored: tuple[str, ...]
    notes: tuple[str, ...]


def collapse(keys: tuple[str, ...] | list[str], limit: int = 6) -> list[str]:
    """Key names grouped by their first component when many share it: ``encoder.* (64 tensors)``."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        groups.setdefault(k.split(".", 1)[0], []).append(k)
    out = []
    for head, ks in groups.items():
        out.append(ks[0] if len(ks) == 1 and ks[0] == head else
                   (f"{head}.* ({len(ks)} tensors)" if len(ks) > 1 else ks[0]))
    return out if len(out) <= limit else [*out[:limit], f"... ({len(out) - limit} more groups)"]


def import_decoder(arch_name: str, weights: Path, config: Path | None = None, variant: str | None = None,
                   out: Path | None = None) -> ImportResult:
    """Read ``weights`` (+ ``config``) as architecture ``arch_name`` and write a decoder folder to ``out``."""
    arch = get_architecture(arch_name)
    weights = Path(weights)
    if config is not None and not Path(config).is_file():
        raise UserError(f"config not found: {config}; pass --config PATH to the checkpoint's JSON config")
    out = Path(out) if out is not None else Path("out/decoders") / f"{arch.name}-{weights.stem}"
    if out.exists() and not out.is_dir():
        raise UserError(f"output {out} is a file: pass -o DIR")
    if out.is_dir() and any(out.iterdir()) and not (out / FOLDER_CONFIG).is_file():
        raise UserError(f"output folder {out} exists and is not a turbovaed decoder folder: pass another -o DIR")
    imp = arch.import_release(weights, Path(config) if config is not None else None, variant)
    module = arch.build(imp.config)
    rep = arch.strict_state(imp.config, module, imp.state, str(weights))
    module.load_state_dict({k: v.float() for k, v in rep.state.items()}, strict=True)
    bad = [k for k, v in module.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise UserError(f"{weights} holds non-finite values (NaN/Inf) in {len(bad)} tensor(s) ({bad[0]}, ...): "
                        "the file is corrupt; re-download it")
    ignored = tuple(dict.fromkeys([*imp.ignored, *rep.ignored]))
    provenance = {"source": weights.name, "source_sha256": file_sha256(weights),
                  "config": Path(config).name if config is not None else None,
                  "ignored": collapse(ignored), "notes": list(imp.notes)}
    cfg = arch.config_to_dict(imp.config)
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in module.state_dict().items()}
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        save_file(sd, str(tmp / FOLDER_WEIGHTS), metadata={"format": FORMAT, "arch": arch.name,
                                                           "config": json.dumps(cfg, sort_keys=True)})
        (tmp / FOLDER_CONFIG).write_text(json.dumps({"format": FORMAT, "arch": arch.name, "config": cfg,
                                                     "provenance": provenance}, indent=2) + "\n")
    dec = Decoder(arch, imp.config, module.eval(), str(out), file_sha256(out / FOLDER_WEIGHTS), provenance)
    return ImportResult(out, dec, ignored, tuple(imp.notes))
