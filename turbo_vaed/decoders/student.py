"""The project's own Turbo-VAED student as a decoder architecture (``student``): config, build, load, lowering.

The model itself is :mod:`turbo_vaed.decoders.student_model`; this module is what the rest of the toolchain
sees: its config type (``models/<family>.json``), strict loading, frame rule (the teacher family's own),
latent convention (``normalised``: diffusion-space latents) and the rank-4 lowering:

- Conv3d -> Conv2d with frames in the batch axis (:class:`turbo_vaed.lowering.TemporalConv`);
- temporal pixel shuffle -> a free reshape, the upsampling conv's output channels permuted frame-major once;
- spatial shuffle -> depth_to_space or rank-4 reshape/permute; RMSNorm -> fp16-safe 1x1-conv form.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from turbo_vaed.config import StudentConfig
from turbo_vaed.decoders.base import Architecture
from turbo_vaed.decoders.student_model import TurboVAEDDecoder, trims
from turbo_vaed.lowering import (
    LoweringOptions,
    MobileRMSNorm,
    MobileSeparable,
    TemporalConv,
    lower_conv,
    silu,
    spatial_shuffle,
)


def permute_out_channels(conv: nn.Module, perm: torch.Tensor) -> None:
    """Reorder a lowered conv's output channels in place (``out_new[i] = out_old[perm[i]]``)."""
    last = conv.pointwise if isinstance(conv, MobileSeparable) else conv
    with torch.no_grad():
        last.weight.data = last.weight.data[perm].clone()
        if last.bias is not None:
            last.bias.data = last.bias.data[perm].clone()


class MobileResBlock(nn.Module):
    def __init__(self, src, opts: LoweringOptions) -> None:
        super().__init__()
        self.norm1 = MobileRMSNorm(src.norm1, opts.fp16_safe, opts.rsqrt)
        self.conv1 = lower_conv(src.conv1)
        self.norm2 = MobileRMSNorm(src.norm2, opts.fp16_safe, opts.rsqrt)
        self.conv2 = lower_conv(src.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(silu(self.norm1(x)))
        h = self.conv2(silu(self.norm2(h)))
        return x + h


def frame_major_perm(cout: int, rt: int, rs: int) -> torch.Tensor:
    """Channel permutation (C, rt, rs, rs) -> (rt, C, rs, rs): new index i*C*rs^2 + c*rs^2 + p."""
    return torch.arange(cout * rt * rs * rs).reshape(cout, rt, rs * rs).permute(1, 0, 2).reshape(-1)


class MobileUpsample(nn.Module):
    """Conv with frame-major output channels, free reshape to frames, drop rt-1 frames, spatial shuffle."""

    def __init__(self, src, shuffle: str) -> None:
        super().__init__()
        self.rt, self.rs, self.shuffle, self.frame_rule = src.rt, src.rs, shuffle, src.frame_rule
        self.conv = lower_conv(src.conv)
        last = self.conv.pointwise if isinstance(self.conv, MobileSeparable) else self.conv
        cup = last.weight.shape[0]
        self.cout = cup // (self.rt * self.rs * self.rs)
        permute_out_channels(self.conv, frame_major_perm(self.cout, self.rt, self.rs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        t, c, h, w = y.shape
        if self.rt > 1:
            drop = self.rt - 1 if trims(self.frame_rule, t) else 0
            y = y.reshape(t * self.rt, c // self.rt, h, w)[drop:]
        return spatial_shuffle(y, self.rs, self.shuffle)


class MobileDecoder(nn.Module):
    """Rank-4 Turbo-VAED decoder: latents ``[T, C, h, w]`` -> frames ``[F(T), 3, H, W]`` in [-1, 1]."""

    def __init__(self, src: TurboVAEDDecoder, opts: LoweringOptions | None = None) -> None:
        super().__init__()
        self.cfg = src.cfg
        self.options = opts = opts or LoweringOptions()
        self.shuffle = opts.shuffle
        self.conv_in = TemporalConv(src.conv_in)
        layers: list[nn.Module] = []
        for stage in src.stages:
            layers.extend(MobileResBlock(b, opts) for b in stage.blocks)
            if stage.upsample is not None:
                layers.append(MobileUpsample(stage.upsample, opts.shuffle))
        self.layers = nn.Sequential(*layers)
        self.norm_out = MobileRMSNorm(src.norm_out, opts.fp16_safe, opts.rsqrt)
        self.conv_out = TemporalConv(src.conv_out)
        self.patch_size = src.cfg.patch_size

    @property
    def family(self):
        return self.cfg.fam

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.conv_in(z))
        x = self.conv_out(silu(self.norm_out(x)))
        x = spatial_shuffle(x, self.patch_size, self.shuffle)
        return torch.clamp(x, -1.0, 1.0)

    def input_shape(self, latent_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``[T, C, h, w]`` for a chunk of ``latent_frames`` decoding to ``width`` x ``height`` pixels."""
        f = self.family.spatial_factor
        return (latent_frames, self.family.latent_channels, height // f, width // f)

    def describe(self) -> dict:
        return asdict(self.options)



class StudentArchitecture(Architecture):
    """The Turbo-VAED student of this project (``models/<family>.json`` configs)."""

    name = "student"
    description = "turbovaed's Turbo-VAED student (3D depthwise-separable convs, decoupled 3D pixel shuffle)"

    def config_from_dict(self, d: dict) -> StudentConfig:
        return StudentConfig.from_dict(d)

    def config_to_dict(self, cfg: StudentConfig) -> dict:
        return cfg.to_dict()

    def family(self, cfg: StudentConfig) -> str:
        return cfg.family

    def build(self, cfg: StudentConfig) -> nn.Module:
        return TurboVAEDDecoder(cfg).eval()

    def frames_out(self, cfg: StudentConfig, latent_frames: int) -> int:
        return cfg.fam.frames_out(latent_frames)

    def latent_convention(self, cfg: Any) -> str:
        return "normalised"

    def lower(self, module: nn.Module, options: LoweringOptions) -> nn.Module:
        if not isinstance(module, TurboVAEDDecoder):
            raise TypeError(f"the student architecture lowers a TurboVAEDDecoder, got {type(module).__name__}")
        return MobileDecoder(module, options)

    def owns(self, module: nn.Module) -> bool:
        return isinstance(module, TurboVAEDDecoder)


ARCH = StudentArchitecture()
