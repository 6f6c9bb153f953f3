"""Latent files: safetensors with key ``latents`` (B, C, T, h, w) plus family metadata."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from turbo_vaed.errors import UserError
from turbo_vaed.families import get_family


def save_latents(path: str | Path, z: torch.Tensor, family: str, fps: float = 24.0, source: str = "") -> Path:
    """Write normalised latents atomically."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        save_file({"latents": z.detach().float().contiguous()}, str(tmp),
                  metadata={"format": "turbovaed.latents/1", "family": family, "fps": str(fps), "source": source})
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    return p


def load_latents(path: str | Path, layout: str = "ncthw") -> tuple[torch.Tensor, dict]:
    """Read latents from .safetensors (key ``latents``) or a torch .pt/.pth tensor.

    ``layout="ntchw"`` transposes N T C H W files (e.g. the Wan pipeline's) to N C T H W.
    """
    p = Path(path)
    if not p.is_file():
        raise UserError(f"latents file not found: {p}; make one with `turbovaed encode VIDEO -o {p.name}`")
    meta: dict = {}
    try:
        if p.suffix in (".pt", ".pth"):
            z = torch.load(str(p), map_location="cpu", weights_only=True)
            if isinstance(z, dict):
                z = z.get("latents", next(iter(z.values())))
        else:
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                meta = dict(f.metadata() or {})
                if "latents" not in f.keys():
                    raise UserError(f"{p} has no 'latents' tensor: write it with `turbovaed encode`")
                z = f.get_tensor("latents")
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read latents {p}: corrupt or not safetensors/torch ({type(e).__name__})") from None
    if not isinstance(z, torch.Tensor):
        raise UserError(f"{p} does not hold a tensor")
    if layout == "ntchw":
        if z.dim() != 5:
            raise UserError(f"latents in {p} have rank {z.dim()}, expected 5 (N, T, C, H, W)")
        z = z.transpose(1, 2)
    elif layout != "ncthw":
        raise UserError(f"unknown latent layout '{layout}': use ncthw or ntchw")
    if meta.get("family"):
        get_family(meta["family"])
    return z.float().contiguous(), meta


def check_latent_geometry(z: torch.Tensor, family: str) -> None:
    """One-line errors for rank, channels of the family."""
    fam = get_family(family)
    if z.dim() != 5:
        raise UserError(
            f"latents must have rank 5 (batch, {fam.latent_channels}, frames, height, width), got shape "
            f"{tuple(z.shape)}: add the batch axis, or pass --layout ntchw for N T C H W files"
        )
    if z.shape[1] != fam.latent_channels:
        raise UserError(
            f"latents have {z.shape[1]} channels but family {fam.name} expects {fam.latent_channels}: "
            f"pass the --family that made them"
        )
    if min(z.shape[-2:]) < 1 or z.shape[2] < 1:
        raise UserError(f"latents shape {tuple(z.shape)} is empty")
    f = fam.spatial_factor
    h, w = z.shape[-2] * f, z.shape[-1] * f
    if h > MAX_SIDE or w > MAX_SIDE:
        raise UserError(
            f"latents {z.shape[-2]}x{z.shape[-1]} decode to {w}x{h} pixels with the {fam.name} factor {f}, "
            f"above the {MAX_SIDE}px limit: check --family (these may be {_guess(z)} latents) or crop them"
        )


MAX_SIDE = 4096


def _guess(z: torch.Tensor) -> str:
    from turbo_vaed.families import FAMILIES

    names = [f.name for f in FAMILIES.values() if f.latent_channels == z.shape[1]]
    return "/".join(names) or "other"
