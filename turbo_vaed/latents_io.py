"""Latent files: safetensors with key ``latents`` (B, C, T, h, w) plus family metadata.

Reading is safe (safetensors, or ``torch.load(weights_only=True)``) and checked before anything large is
allocated: :func:`peek_latents` reads the shape from the header alone, :func:`load_latents` refuses a tensor the
memory cannot hold and one that holds NaN/Inf.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from turbo_vaed.errors import UserError
from turbo_vaed.families import get_family

LAYOUTS = ("ncthw", "ntchw")
FIX = "re-encode it with `turbovaed encode`"


def save_latents(path: str | Path, z: torch.Tensor, family: str, fps: float = 24.0, source: str = "") -> Path:
    """Write normalised latents atomically."""
    from safetensors.torch import save_file

    from turbo_vaed.fileio import atomic_path

    p = Path(path)
    with atomic_path(p) as tmp:
        save_file({"latents": z.detach().float().contiguous()}, str(tmp),
                  metadata={"format": "turbovaed.latents/1", "family": family, "fps": str(fps), "source": source})
    return p


def _not_found(p: Path) -> UserError:
    return UserError(f"latents file not found: {p}; make one with `turbovaed encode VIDEO -o {p.name}`")


def _clean_meta(meta: dict) -> dict:
    """Metadata with values turbovaed reads checked: an unknown family is an error, a bad fps is dropped."""
    meta = {str(k): str(v) for k, v in meta.items()}
    if meta.get("family"):
        get_family(meta["family"])
    if "fps" in meta:
        try:
            fps = float(meta["fps"])
            ok = math.isfinite(fps) and 0 < fps <= 1000
        except ValueError:
            ok = False
        if not ok:
            meta.pop("fps")
    return meta


def _layout_shape(shape: tuple[int, ...], layout: str, p: Path) -> tuple[int, ...]:
    if layout not in LAYOUTS:
        raise UserError(f"unknown latent layout '{layout}': use ncthw or ntchw")
    if layout == "ntchw":
        if len(shape) != 5:
            raise UserError(f"latents in {p} have rank {len(shape)}, expected 5 (N, T, C, H, W)")
        shape = (shape[0], shape[2], shape[1], shape[3], shape[4])
    return tuple(shape)


def peek_latents(path: str | Path, layout: str = "ncthw") -> tuple[tuple[int, ...], dict]:
    """(shape in N C T H W, metadata) of a latents file, without reading the tensor."""
    from turbo_vaed.guards import reading, safetensors_header

    p = Path(path)
    if not p.is_file():
        raise _not_found(p)
    if layout not in LAYOUTS:
        raise UserError(f"unknown latent layout '{layout}': use ncthw or ntchw")
    if p.suffix in (".pt", ".pth"):
        with reading(p, "latents", FIX):
            z = _torch_tensor(p, mmap=True)
            shape = tuple(z.shape)
        return _layout_shape(shape, layout, p), {}
    head = safetensors_header(p, "latents", FIX)
    if "latents" not in head:
        raise UserError(f"{p} has no 'latents' tensor: write it with `turbovaed encode`")
    meta = head.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise UserError(f"cannot read latents {p}: corrupt metadata: {FIX}")
    return _layout_shape(tuple(int(s) for s in head["latents"]["shape"]), layout, p), _clean_meta(meta)


def _torch_tensor(p: Path, mmap: bool = False) -> torch.Tensor:
    try:
        z = torch.load(str(p), map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError:
        if not mmap:
            raise
        z = torch.load(str(p), map_location="cpu", weights_only=True)  # legacy (non-zip) files cannot be mapped
    if isinstance(z, dict):
        if not z:
            raise UserError(f"{p} holds an empty dict, not latents: {FIX}")
        z = z.get("latents", next(iter(z.values())))
    if not isinstance(z, torch.Tensor):
        raise UserError(f"{p} does not hold a tensor")
    return z


def load_latents(path: str | Path, layout: str = "ncthw", first: tuple[int, int, int] | None = None
                 ) -> tuple[torch.Tensor, dict]:
    """Read latents from .safetensors (key ``latents``) or a torch .pt/.pth tensor.

    ``layout="ntchw"`` transposes N T C H W files (e.g. the Wan pipeline's) to N C T H W. ``first=(T, h, w)``
    reads only the first batch item's first T frames and top-left h x w (what a fixed-shape artifact takes), so
    a long video's latents are never read whole. The tensor must fit in the memory available and hold only
    finite values (one-line errors otherwise).
    """
    from turbo_vaed.guards import check_finite, reading, require_memory

    p = Path(path)
    shape, meta = peek_latents(p, layout)
    if first is not None and len(shape) == 5:
        t, h, w = first
        shape = (1, shape[1], min(shape[2], t), min(shape[3], h), min(shape[4], w))
    n = math.prod(shape)
    require_memory(8 * n, f"reading latents {p} of shape {list(shape)}",
                   "pass fewer latent frames or a smaller crop of them")
    with reading(p, "latents", FIX):
        if p.suffix in (".pt", ".pth"):
            z = _torch_tensor(p, mmap=first is not None)
            if first is not None and z.dim() == 5:
                z = _first(z, first, layout).clone()
        else:
            from safetensors import safe_open

            with safe_open(str(p), framework="pt") as f:
                if first is not None and len(shape) == 5:
                    z = _first(f.get_slice("latents"), first, layout)
                else:
                    z = f.get_tensor("latents")
        if z.is_complex() or not (z.is_floating_point() or z.dtype in (torch.int8, torch.uint8, torch.int16,
                                                                        torch.int32, torch.int64)):
            raise UserError(f"latents in {p} have dtype {z.dtype}: expected a float tensor; {FIX}")
        if layout == "ntchw":
            if z.dim() != 5:
                raise UserError(f"latents in {p} have rank {z.dim()}, expected 5 (N, T, C, H, W)")
            z = z.transpose(1, 2)
        z = z.float().contiguous()
    check_finite(z, f"latents file {p}", f"the latents are broken: {FIX} (or fix what wrote them)")
    return z, meta


def _first(z, first: tuple[int, int, int], layout: str):
    """``z[:1, :, :T, :h, :w]`` (N C T H W) or ``z[:1, :T, :, :h, :w]`` (N T C H W) of a tensor or a slice."""
    t, h, w = first
    if layout == "ntchw":
        return z[:1, :t, :, :h, :w]
    return z[:1, :, :t, :h, :w]


def check_latent_geometry(z: torch.Tensor | tuple[int, ...], family: str) -> None:
    """One-line errors for rank, channels of the family (``z`` a tensor or its shape)."""
    shape = tuple(z.shape) if isinstance(z, torch.Tensor) else tuple(int(s) for s in z)
    fam = get_family(family)
    if len(shape) != 5:
        raise UserError(
            f"latents must have rank 5 (batch, {fam.latent_channels}, frames, height, width), got shape "
            f"{shape}: add the batch axis, or pass --layout ntchw for N T C H W files"
        )
    if shape[1] != fam.latent_channels:
        raise UserError(
            f"latents have {shape[1]} channels but family {fam.name} expects {fam.latent_channels}: "
            f"pass the --family that made them"
        )
    if min(shape[-2:]) < 1 or shape[2] < 1 or shape[0] < 1:
        raise UserError(f"latents shape {shape} is empty")
    f = fam.spatial_factor
    h, w = shape[-2] * f, shape[-1] * f
    if h > MAX_SIDE or w > MAX_SIDE:
        raise UserError(
            f"latents {shape[-2]}x{shape[-1]} decode to {w}x{h} pixels with the {fam.name} factor {f}, "
            f"above the {MAX_SIDE}px limit: check --family (these may be {_guess(shape)} latents) or crop them"
        )


def check_single(shape: tuple[int, ...], source: str, what: str = "decode writes one video") -> None:
    """A batch of more than one latent video is refused (never silently cut to the first)."""
    if len(shape) == 5 and shape[0] != 1:
        raise UserError(f"{source} holds a batch of {shape[0]} latent videos, but {what}: split it into one "
                        "file per video (shape 1 x C x T x h x w)")


MAX_SIDE = 4096


def _guess(shape: tuple[int, ...]) -> str:
    from turbo_vaed.families import FAMILIES

    names = [f.name for f in FAMILIES.values() if f.latent_channels == shape[1]]
    return "/".join(names) or "other"
