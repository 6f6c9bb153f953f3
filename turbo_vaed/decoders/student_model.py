"""The Turbo-VAED student decoder (PyTorch reference, 5-D, trainable)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from turbo_vaed.config import StageConfig, StudentConfig
from turbo_vaed.errors import UserError
from turbo_vaed.latents_io import check_latent_geometry


class RMSNorm(nn.Module):
    """RMS normalisation over the channel axis (dim 1) with a learned per-channel gain."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + self.eps) * self.weight.view(shape)


class CausalConv3d(nn.Module):
    """3D convolution, causal in time (first frame replicated k-1 times), zero padded in space."""

    def __init__(self, cin: int, cout: int, k: int = 3, groups: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.k = k
        self.conv = nn.Conv3d(cin, cout, k, padding=(0, k // 2, k // 2), groups=groups, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.k > 1:
            x = torch.cat([x[:, :, :1]] * (self.k - 1) + [x], dim=2)
        return self.conv(x)


class SeparableConv3d(nn.Module):
    """3D depthwise-separable convolution: causal depthwise k^3, then pointwise 1x1x1."""

    def __init__(self, cin: int, cout: int, k: int = 3) -> None:
        super().__init__()
        self.depthwise = CausalConv3d(cin, cin, k, groups=cin)
        self.pointwise = nn.Conv3d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def make_conv(kind: str, cin: int, cout: int) -> nn.Module:
    """A dense causal 3x3x3 ("full") or depthwise-separable ("dsc") convolution."""
    return CausalConv3d(cin, cout) if kind == "full" else SeparableConv3d(cin, cout)


class ResBlock(nn.Module):
    """Pre-norm residual block: (RMSNorm, SiLU, conv) x 2 + identity."""

    def __init__(self, channels: int, conv: str, eps: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(channels, eps)
        self.conv1 = make_conv(conv, channels, channels)
        self.norm2 = RMSNorm(channels, eps)
        self.conv2 = make_conv(conv, channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


def trims(frame_rule: str, t: int) -> bool:
    """Whether a temporal upsample of ``t`` frames drops its first rt-1 frames under the family's frame rule.

    ``causal``: always (1 + rt(T-1)); ``causal-odd`` (CogVideoX): only for odd T (even T keeps rt*T);
    ``full`` (DC-AE): never.
    """
    return frame_rule == "causal" or (frame_rule == "causal-odd" and t % 2 == 1)


def pixel_shuffle_3d(x: torch.Tensor, rt: int, rs: int, frame_rule: str = "causal") -> torch.Tensor:
    """Decoupled 3D pixel shuffle: channels (C, rt, rs, rs) -> frames x rt, pixels x rs.

    The first ``rt - 1`` frames are dropped where the family's frame rule trims (see :func:`trims`), so T
    frames become 1 + rt(T-1) in the causal convention.
    """
    b, c, t, h, w = x.shape
    co = c // (rt * rs * rs)
    if rt > 1:
        drop = rt - 1 if trims(frame_rule, t) else 0
        x = x.reshape(b, co, rt, rs * rs, t, h, w).permute(0, 1, 3, 4, 2, 5, 6)
        x = x.reshape(b, co * rs * rs, t * rt, h, w)[:, :, drop:]
        t = t * rt - drop
    if rs > 1:
        x = x.transpose(1, 2).reshape(b * t, co * rs * rs, h, w)
        x = F.pixel_shuffle(x, rs).reshape(b, t, co, h * rs, w * rs).transpose(1, 2)
    return x


class Upsample(nn.Module):
    """Conv to cout*rt*rs*rs channels, then the decoupled 3D pixel shuffle (no interpolation)."""

    def __init__(self, cin: int, cout: int, rt: int, rs: int, conv: str, frame_rule: str = "causal") -> None:
        super().__init__()
        self.rt, self.rs, self.frame_rule = rt, rs, frame_rule
        self.conv = make_conv(conv, cin, cout * rt * rs * rs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pixel_shuffle_3d(self.conv(x), self.rt, self.rs, self.frame_rule)


class Stage(nn.Module):
    """Residual blocks at one resolution, then an optional upsample to the next width."""

    def __init__(self, cfg: StageConfig, next_channels: int, eps: float, frame_rule: str = "causal") -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(cfg.channels, cfg.conv, eps) for _ in range(cfg.blocks))
        self.upsample = (
            Upsample(cfg.channels, next_channels, cfg.up_t, cfg.up_s, cfg.up_conv, frame_rule)
            if (cfg.up_t > 1 or cfg.up_s > 1) else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


class TurboVAEDDecoder(nn.Module):
    """Turbo-VAED student: normalised latents (B, C, T, h, w) -> video (B, 3, F(T), H, W) in [-1, 1] (family rule)."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg.validate()
        fam = cfg.fam
        chans = [s.channels for s in cfg.stages]
        self.conv_in = CausalConv3d(fam.latent_channels, chans[0])
        self.stages = nn.ModuleList(
            Stage(s, chans[min(i + 1, len(chans) - 1)], cfg.eps, fam.frame_rule) for i, s in enumerate(cfg.stages)
        )
        self.norm_out = RMSNorm(chans[-1], cfg.eps)
        p = cfg.patch_size
        self.conv_out = CausalConv3d(chans[-1], 3 * p * p)

    @property
    def family(self):
        return self.cfg.fam

    def stage_channels(self) -> list[int]:
        """Width of each stage's output feature (before its upsample)."""
        return [s.channels for s in self.cfg.stages]

    def check_latents(self, z: torch.Tensor, spatial: tuple[int, int] | None = None) -> None:
        """Raise a one-line :class:`UserError` if ``z`` is not (B, C, T, h, w) for this family."""
        check_latent_geometry(z, self.family.name)
        if spatial is not None and tuple(z.shape[-2:]) != tuple(spatial):
            raise UserError(f"latents are {tuple(z.shape[-2:])} but this artifact expects {tuple(spatial)}")

    def forward(self, z: torch.Tensor, return_features: bool = False):
        x = self.conv_in(z)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
            if stage.upsample is not None:
                x = stage.upsample(x)
        x = self.conv_out(F.silu(self.norm_out(x)))
        p = self.cfg.patch_size
        if p > 1:
            x = pixel_shuffle_3d(x, 1, p)
        x = x.clamp(-1.0, 1.0)
        return (x, feats) if return_features else x


class AlignmentHeads(nn.Module):
    """Training-only 1x1x1 projections of student stage features to teacher widths."""

    def __init__(self, student_widths: list[int], teacher_widths: list[int]) -> None:
        super().__init__()
        self.heads = nn.ModuleList(
            nn.Conv3d(s, t, 1) for s, t in zip(student_widths, teacher_widths, strict=False)
        )

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        return [h(f) for h, f in zip(self.heads, feats, strict=False)]


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())
