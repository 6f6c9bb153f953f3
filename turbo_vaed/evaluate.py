"""Reconstruction quality of a student vs. its teacher on real clips, and the retention ratio."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from turbo_vaed.decoders import Decoder
from turbo_vaed.families import get_family
from turbo_vaed.fvd import RFVD
from turbo_vaed.metrics import psnr, ssim
from turbo_vaed.teachers import family_of, teacher_decode, teacher_encode
from turbo_vaed.video_io import crop_to_multiple, read_video, to_tensor


def load_eval_clip(path: Path, family: str, frames: int, max_side: int | None = None) -> torch.Tensor:
    """First ``frames`` frames (rounded to 1 + t*k), optionally downscaled, cropped to the factor."""
    fam = get_family(family)
    raw, _ = read_video(path, max_frames=frames)
    raw = raw[: fam.valid_frame_count(raw.shape[0])]
    x = to_tensor(crop_to_multiple(raw, fam.spatial_factor))
    if max_side and max(x.shape[-2:]) > max_side:
        s = max_side / max(x.shape[-2:])
        b, c, f, h, w = x.shape
        y = F.interpolate(x[0].transpose(0, 1), scale_factor=s, mode="area")
        x = y.transpose(0, 1)[None]
        fct = fam.spatial_factor
        x = x[..., : x.shape[-2] // fct * fct, : x.shape[-1] // fct * fct]
    return x


LUMA = (0.299, 0.587, 0.114)  # BT.601


def colourfulness(video: torch.Tensor) -> float:
    """Mean |RGB - Y| (BT.601 luma) of a (B, 3, F, H, W) video in [-1, 1], in [0, 1] pixel units."""
    v = (video.float().clamp(-1, 1) + 1) / 2
    y = LUMA[0] * v[:, 0] + LUMA[1] * v[:, 1] + LUMA[2] * v[:, 2]
    return float((v - y[:, None]).abs().mean())


def colour_kept(rec: torch.Tensor, video: torch.Tensor) -> float:
    """The colour figure: colourfulness of the reconstruction over that of the input (1.0 = all kept)."""
    return colourfulness(rec) / max(colourfulness(video), 1e-8)


def scale_baseline(video: torch.Tensor, factor: int) -> torch.Tensor:
    """Area-down by ``factor`` then bilinear-up to the input size, frame by frame (a codec's floor)."""
    b, c, f, h, w = video.shape
    x = video.transpose(1, 2).reshape(b * f, c, h, w).float()
    small = F.interpolate(x, size=(h // factor, w // factor), mode="area")
    up = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(-1, 1)
    return up.reshape(b, f, c, h, w).transpose(1, 2)


def baseline_factors(spatial_factor: int) -> tuple[int, ...]:
    """The scaling baselines a codec of this spatial factor is compared with: the factor and half of it."""
    return tuple(dict.fromkeys(f for f in (spatial_factor, spatial_factor // 2) if f >= 2))


def baseline_rows(video: torch.Tensor, spatial_factor: int, perceptual: torch.nn.Module | None = None) -> dict:
    """``scale{k}x_psnr`` / ``_ssim`` / ``_colour`` (and ``_lpips``) of the scaling baselines on ``video``."""
    r = {}
    for k in baseline_factors(spatial_factor):
        if min(video.shape[-2:]) < k:  # too small to scale down by k
            continue
        rec = scale_baseline(video, k)
        r[f"scale{k}x_psnr"] = psnr(rec, video)
        r[f"scale{k}x_ssim"] = ssim(rec, video)
        r[f"scale{k}x_colour"] = colour_kept(rec, video)
        if perceptual is not None:
            r[f"scale{k}x_lpips"] = float(perceptual(rec, video))
    return r


def decode_with(decoder: Decoder | torch.nn.Module, teacher: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Frames in [-1, 1] from normalised latents ``z`` with any decoder: a ``raw``-convention decoder gets the
    teacher's de-normalised latents, and its output range is mapped to [-1, 1]."""
    from turbo_vaed.decoders import as_decoder
    from turbo_vaed.parity import to_signed
    from turbo_vaed.teachers import denormalize_latents

    dec = as_decoder(decoder)
    zin = denormalize_latents(teacher, z) if dec.latent_convention == "raw" else z
    return to_signed(dec(zin), dec.output_range)


@torch.inference_mode()
def evaluate_clip(student: Decoder, teacher: torch.nn.Module, video: torch.Tensor,
                  perceptual: torch.nn.Module | None = None, rfvd: RFVD | None = None,
                  baselines: bool = True) -> dict:
    """PSNR/SSIM and colour kept (and LPIPS when a perceptual net is given) of teacher and student.

    With ``baselines``, the area-down / bilinear-up scaling baselines at the teacher family's spatial
    factor and half of it are measured on the same frames. With ``rfvd``, the clip's ground truth and
    both reconstructions also go into its I3D feature sets.
    """
    z = teacher_encode(teacher, video)
    rec_t = teacher_decode(teacher, z)
    rec_s = decode_with(student, teacher, z)
    if rfvd is not None:
        for name, v in (("ground_truth", video), ("teacher", rec_t), ("student", rec_s)):
            rfvd.add(name, v)
    r = {
        "teacher_psnr": psnr(rec_t, video), "teacher_ssim": ssim(rec_t, video),
        "student_psnr": psnr(rec_s, video), "student_ssim": ssim(rec_s, video),
        "student_vs_teacher_psnr": psnr(rec_s, rec_t),
        "teacher_colour": colour_kept(rec_t, video), "student_colour": colour_kept(rec_s, video),
    }
    if perceptual is not None:
        r["teacher_lpips"] = float(perceptual(rec_t, video))
        r["student_lpips"] = float(perceptual(rec_s, video))
    r["psnr_retention"] = r["student_psnr"] / r["teacher_psnr"]
    r["ssim_retention"] = r["student_ssim"] / r["teacher_ssim"]
    if baselines:
        r.update(baseline_rows(video, family_of(teacher).spatial_factor, perceptual))
    return r


def summarize(rows: list[dict]) -> dict:
    """Mean of every figure over the clips; retention ratios of the means."""
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    mean["psnr_retention"] = mean["student_psnr"] / mean["teacher_psnr"]
    mean["ssim_retention"] = mean["student_ssim"] / mean["teacher_ssim"]
    return mean
