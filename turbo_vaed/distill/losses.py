"""Distillation losses: pixel, output, feature alignment, perceptual (optional), adversarial (optional)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from turbo_vaed.errors import UserError


def match_shape(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Resample (B, C, T, H, W) features to ``like``'s (T, H, W) (trilinear; training only)."""
    if x.shape[2:] == like.shape[2:]:
        return x
    return F.interpolate(x, size=like.shape[2:], mode="trilinear", align_corners=False)


def _rms_normalize(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-6)


def feature_loss(projected: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Mean MSE between channel-RMS-normalised projected student features and teacher features."""
    losses = [F.mse_loss(_rms_normalize(match_shape(p, t)), _rms_normalize(t.detach()))
              for p, t in zip(projected, teacher, strict=True)]
    return torch.stack(losses).mean()


class Perceptual(nn.Module):
    """LPIPS-style perceptual distance from a local TorchScript file: ``d(x, y)`` on images in [-1, 1].

    Frames are folded into the batch axis. Any scripted module with that signature works (e.g. an
    LPIPS network exported with torch.jit.script from a local copy of its weights).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        p = Path(path)
        if not p.is_file():
            raise UserError(f"perceptual weights not found: {p}; pass a TorchScript LPIPS file or drop --lpips")
        try:
            self.net = torch.jit.load(str(p), map_location="cpu").eval()
        except Exception as e:
            raise UserError(
                f"cannot load perceptual network {p} ({type(e).__name__}): export it with torch.jit.save"
            ) from None
        for q in self.net.parameters():
            q.requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        xf = x.transpose(1, 2).reshape(b * t, c, h, w)
        yf = y.transpose(1, 2).reshape(b * t, c, h, w)
        return self.net(xf, yf).mean()


class PatchDiscriminator3D(nn.Module):
    """3D PatchGAN discriminator on video clips (hinge loss)."""

    def __init__(self, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv3d(3, channels, 4, stride=(1, 2, 2), padding=1), nn.LeakyReLU(0.2)]
        c = channels
        for _ in range(1, layers):
            mods += [nn.Conv3d(c, c * 2, 4, stride=(1, 2, 2), padding=1), nn.GroupNorm(8, c * 2), nn.LeakyReLU(0.2)]
            c *= 2
        mods.append(nn.Conv3d(c, 1, 3, padding=1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    return -fake.mean()
