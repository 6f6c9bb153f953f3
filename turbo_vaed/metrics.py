"""Reconstruction metrics on videos in [-1, 1]: PSNR and SSIM (pytorch-msssim)."""

from __future__ import annotations

import math

import torch


def _frames01(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, F, H, W) in [-1, 1] -> (B*F, 3, H, W) in [0, 1]."""
    b, c, f, h, w = video.shape
    return ((video.float().clamp(-1, 1) + 1) / 2).transpose(1, 2).reshape(b * f, c, h, w)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB over the whole video (pixel range [0, 1])."""
    mse = torch.mean((_frames01(a) - _frames01(b)) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean per-frame SSIM (11x11 Gaussian window, pixel range [0, 1])."""
    from pytorch_msssim import ssim as _ssim

    return float(_ssim(_frames01(a), _frames01(b), data_range=1.0, size_average=True))


def max_abs_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())
