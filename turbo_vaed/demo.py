"""The demo pipeline on the built-in default: encode the held-out clip, decode with teacher and student.

Later stages (export + parity, host bench) append their own results to :class:`DemoContext`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from turbo_vaed.decoders import Decoder, as_decoder
from turbo_vaed.families import get_family
from turbo_vaed.metrics import psnr, ssim
from turbo_vaed.teachers import teacher_decode, teacher_decoder_parameters, teacher_encode
from turbo_vaed.video_io import HELDOUT_CLIP, crop_to_multiple, read_video, shipped_clip, to_tensor, to_uint8

DEMO_FRAMES = 33  # 1 + 4*8: 9 latent frames of the held-out clip


@dataclass
class DemoContext:
    """Everything the demo stages share and report."""

    out_dir: Path
    family: str
    teacher: torch.nn.Module
    student: Decoder
    video: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    fps: float = 24.0
    results: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.student = as_decoder(self.student)  # a bare module of a registered architecture is accepted


def load_heldout(family: str, frames: int = DEMO_FRAMES) -> tuple[torch.Tensor, float]:
    """The held-out clip (never used for training) as (1, 3, F, H, W) in [-1, 1]."""
    fam = get_family(family)
    raw, fps = read_video(shipped_clip(HELDOUT_CLIP), max_frames=frames)
    raw = crop_to_multiple(raw[: fam.valid_frame_count(raw.shape[0])], fam.spatial_factor)
    return to_tensor(raw), fps


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


STREAM_CHUNK = 2  # latent frames per streamed chunk in the demo


def stream_check(student: Decoder, latents: torch.Tensor, full: torch.Tensor) -> dict:
    """Decode ``latents`` again chunk by chunk (the phone's way) and compare with the full decode ``full``."""
    from turbo_vaed.errors import UserError
    from turbo_vaed.streaming import stream_decoder

    try:
        got = np.concatenate(list(stream_decoder(student, latents, STREAM_CHUNK)))
    except UserError as e:  # an architecture without a streaming step
        return {"chunk": STREAM_CHUNK, "max_abs_vs_full": None, "note": str(e)}
    ref = full[0].transpose(0, 1).numpy()
    err = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
    return {"chunk": STREAM_CHUNK, "frames": int(got.shape[0]), "max_abs_vs_full": err}


def reconstruction_stage(ctx: DemoContext, frames: int = DEMO_FRAMES) -> dict:
    """Encode the held-out clip, decode with teacher and student, side-by-side mp4, metrics."""
    from turbo_vaed.video_io import write_video

    ctx.video, ctx.fps = load_heldout(ctx.family, frames)
    with torch.inference_mode():
        ctx.latents, t_enc = _timed(teacher_encode, ctx.teacher, ctx.video)
        rec_t, t_t = _timed(teacher_decode, ctx.teacher, ctx.latents)
        rec_s, t_s = _timed(ctx.student, ctx.latents)
    rows = {
        "teacher": dict(psnr=psnr(rec_t, ctx.video), ssim=ssim(rec_t, ctx.video), latency_s=t_t,
                        params=teacher_decoder_parameters(ctx.teacher)),
        "student": dict(psnr=psnr(rec_s, ctx.video), ssim=ssim(rec_s, ctx.video), latency_s=t_s,
                        params=ctx.student.parameters()),
    }
    rows["student"]["psnr_retention"] = rows["student"]["psnr"] / rows["teacher"]["psnr"]
    rows["student"]["ssim_retention"] = rows["student"]["ssim"] / rows["teacher"]["ssim"]
    stream_err = stream_check(ctx.student, ctx.latents, rec_s)
    side = np.concatenate([to_uint8(ctx.video), to_uint8(rec_t), to_uint8(rec_s)], axis=2)
    mp4 = write_video(ctx.out_dir / "side_by_side.mp4", side, fps=ctx.fps)
    res = dict(clip=HELDOUT_CLIP, frames=int(ctx.video.shape[2]),
               size=[int(ctx.video.shape[4]), int(ctx.video.shape[3])],
               latents=list(ctx.latents.shape), encode_s=t_enc, decoders=rows, video=str(mp4), stream=stream_err)
    ctx.results["reconstruction"] = res
    return res
