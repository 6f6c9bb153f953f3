"""FLOPs per output frame, counted with torch.utils.flop_counter on the meta device."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from turbo_vaed.families import Family, resolve_resolution

FLOPS_LATENT_FRAMES = 3


def count_flops(fn: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(z)
    return int(counter.get_total_flops())


def flops_per_frame(module: torch.nn.Module, family: Family, res: str,
                    latent_frames: int = FLOPS_LATENT_FRAMES, fn: Callable | None = None) -> float:
    """FLOPs (2 x MACs) per output frame to decode ``latent_frames`` at preset ``res`` (meta device)."""
    w, h = resolve_resolution(res, family)
    f = family.spatial_factor
    z = torch.zeros(1, family.latent_channels, latent_frames, h // f, w // f, device="meta")
    total = count_flops(fn or module, z)
    return total / family.frames_out(latent_frames)
