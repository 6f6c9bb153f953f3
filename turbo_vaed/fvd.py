"""rFVD: Fréchet distance between I3D (Kinetics-400) logits of reconstructed and ground-truth clips.

As in the FVD of Unterthiner et al. (and VideoGPT's port): 16-frame windows, frames resized so the shorter
side is 224 and centre-cropped to 224x224, RGB in [-1, 1], the 400 time-averaged logits as features, and
the Fréchet distance between Gaussians fitted to the two feature sets. Long clips give several windows
(``stride`` frames apart). With few windows the covariance is low-rank and the number is a small-sample
estimate: compare rFVD values within one run (same clips, same windows), not with papers' numbers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from turbo_vaed.errors import UserError

WINDOW = 16
SIZE = 224


def resize_for_i3d(video: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """(B, 3, F, H, W) -> (B, 3, F, size, size): shorter side to ``size`` (bilinear), centre crop."""
    b, c, f, h, w = video.shape
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = video.transpose(1, 2).reshape(b * f, c, h, w)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=s < 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[:, :, top: top + size, left: left + size]
    return x.reshape(b, f, c, size, size).transpose(1, 2).clamp(-1, 1)


def check_stride(stride: int) -> int:
    if stride < 1:
        raise UserError(f"--fvd-stride must be >= 1, got {stride}")
    return stride


def windows(video: torch.Tensor, length: int = WINDOW, stride: int = 1) -> torch.Tensor:
    """All ``length``-frame windows ``stride`` frames apart: (B, 3, F, H, W) -> (N, 3, length, H, W)."""
    check_stride(stride)
    f = video.shape[2]
    if f < length:
        raise UserError(f"rFVD needs clips of at least {length} frames, got {f}: pass --frames >= {length + 1}")
    starts = range(0, f - length + 1, stride)
    return torch.cat([video[:, :, s: s + length] for s in starts])


@torch.inference_mode()
def i3d_logits(i3d: torch.nn.Module, video: torch.Tensor, stride: int = 1, batch: int = 4) -> np.ndarray:
    """I3D logits (N, 400) of every window of ``video`` (B, 3, F, H, W) in [-1, 1]."""
    w = windows(resize_for_i3d(video.float()), stride=stride)
    return torch.cat([i3d(w[i: i + batch]) for i in range(0, len(w), batch)]).double().numpy()


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature rows ``a`` (N, D) and ``b`` (M, D).

    ``tr(sqrt(Sa Sb))`` is taken as the sum of square roots of the eigenvalues of ``sqrt(Sa) Sb sqrt(Sa)``
    (symmetric PSD, so it stays real and stable when the covariances are singular).
    """
    if len(a) < 2 or len(b) < 2:
        raise UserError("rFVD needs at least 2 windows per side: use longer clips (--frames), more clips, or a "
                        "smaller --fvd-stride")
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    vals, vecs = np.linalg.eigh(ca)
    root_a = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    cross = np.linalg.eigvalsh(root_a @ cb @ root_a)
    tr_sqrt = float(np.sqrt(np.clip(cross, 0, None)).sum())
    d = float(((mu_a - mu_b) ** 2).sum() + np.trace(ca) + np.trace(cb) - 2 * tr_sqrt)
    return max(d, 0.0)


class RFVD:
    """Collects I3D logits per decoder over clips; :meth:`scores` gives each decoder's rFVD to ground truth."""

    def __init__(self, i3d: torch.nn.Module, stride: int = 1, batch: int = 4) -> None:
        self.i3d, self.stride, self.batch = i3d, check_stride(stride), batch
        self.feats: dict[str, list[np.ndarray]] = {}

    def add(self, name: str, video: torch.Tensor) -> None:
        self.feats.setdefault(name, []).append(i3d_logits(self.i3d, video, self.stride, self.batch))

    def scores(self, reference: str = "ground_truth") -> dict[str, float | int]:
        """``{<name>_rfvd: distance to the reference}`` for every other name, plus ``rfvd_windows``."""
        ref = np.concatenate(self.feats[reference])
        out: dict[str, float | int] = {f"{k}_rfvd": frechet_distance(np.concatenate(v), ref)
                                       for k, v in self.feats.items() if k != reference}
        out["rfvd_windows"] = len(ref)
        return out
