"""Reconstruction quality of a student vs. its teacher on real clips, and the retention ratio."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from turbo_vaed.families import get_family
from turbo_vaed.fvd import RFVD
from turbo_vaed.metrics import psnr, ssim
from turbo_vaed.student import TurboVAEDDecoder
from turbo_vaed.teachers import teacher_decode, teacher_encode
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


@torch.inference_mode()
def evaluate_clip(student: TurboVAEDDecoder, teacher: torch.nn.Module, video: torch.Tensor,
                  perceptual: torch.nn.Module | None = None, rfvd: RFVD | None = None) -> dict:
    """PSNR/SSIM (and LPIPS when a perceptual net is given) of teacher and student vs. the input.

    With ``rfvd``, the clip's ground truth and both reconstructions also go into its I3D feature sets.
    """
    z = teacher_encode(teacher, video)
    rec_t = teacher_decode(teacher, z)
    rec_s = student(z)
    if rfvd is not None:
        for name, v in (("ground_truth", video), ("teacher", rec_t), ("student", rec_s)):
            rfvd.add(name, v)
    r = {
        "teacher_psnr": psnr(rec_t, video), "teacher_ssim": ssim(rec_t, video),
        "student_psnr": psnr(rec_s, video), "student_ssim": ssim(rec_s, video),
        "student_vs_teacher_psnr": psnr(rec_s, rec_t),
    }
    if perceptual is not None:
        r["teacher_lpips"] = float(perceptual(rec_t, video))
        r["student_lpips"] = float(perceptual(rec_s, video))
    r["psnr_retention"] = r["student_psnr"] / r["teacher_psnr"]
    r["ssim_retention"] = r["student_ssim"] / r["teacher_ssim"]
    return r


def summarize(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], float)]
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    mean["psnr_retention"] = mean["student_psnr"] / mean["teacher_psnr"]
    mean["ssim_retention"] = mean["student_ssim"] / mean["teacher_ssim"]
    return mean
