"""``turbovaed encode`` and ``turbovaed decode``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import torch
import typer

from turbo_vaed.cli.app import app, console
from turbo_vaed.errors import UserError
from turbo_vaed.families import get_family
from turbo_vaed.latents_io import check_latent_geometry, load_latents, save_latents
from turbo_vaed.resolve import resolve_family, resolve_student, resolve_teacher
from turbo_vaed.teachers import teacher_decode, teacher_encode
from turbo_vaed.video_io import crop_to_multiple, read_video, to_tensor, to_uint8, write_video

TEACHER_HELP = "'reference' (built-in), 'random' (default config, random weights) or a diffusers VAE folder."


@app.command()
def encode(
    video: Path = typer.Argument(..., help="Input video file."),
    output: Path = typer.Option(..., "-o", "--output", help="Latents .safetensors to write."),
    teacher: str = typer.Option("reference", "--teacher", help=TEACHER_HELP),
    family: Optional[str] = typer.Option(None, "--family", "-f"),
    frames: int = typer.Option(33, "--frames", help="Frames to read (rounded down to 1 + t*k)."),
    start: int = typer.Option(0, "--start", help="First frame."),
) -> None:
    """Encode a video to normalised latents with the teacher encoder."""
    fam = get_family(resolve_family(family, teacher))
    raw, fps = read_video(video, max_frames=frames, start=start)
    n = fam.valid_frame_count(raw.shape[0])
    raw = crop_to_multiple(raw[:n], fam.spatial_factor)
    vae = resolve_teacher(teacher, fam.name)
    torch.manual_seed(0)
    with torch.inference_mode():
        z = teacher_encode(vae, to_tensor(raw))
    save_latents(output, z, fam.name, fps=fps, source=str(video))
    console.print(f"encoded {n} frames {raw.shape[2]}x{raw.shape[1]} -> latents {tuple(z.shape)} -> {output}")


@app.command()
def decode(
    latents: Path = typer.Argument(..., help="Latents (.safetensors from `encode`, or a torch .pt/.pth)."),
    output: Path = typer.Option(..., "-o", "--output", help="mp4 to write."),
    decoder: str = typer.Option("student", "--decoder", help="student or teacher."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Student .safetensors."),
    teacher: str = typer.Option("reference", "--teacher", help=TEACHER_HELP),
    family: Optional[str] = typer.Option(None, "--family", "-f"),
    layout: str = typer.Option("ncthw", "--layout", help="ncthw, or ntchw for N T C H W files."),
    fps: Optional[float] = typer.Option(None, "--fps"),
) -> None:
    """Decode latents to an mp4 with the student (default) or the teacher."""
    if decoder not in ("student", "teacher"):
        raise UserError(f"unknown decoder '{decoder}': use student or teacher")
    if output.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        raise UserError(f"output {output} must end in .mp4 (or .mov/.mkv)")
    z, meta = load_latents(latents, layout)
    fam_name = family or meta.get("family") or resolve_family(None, teacher)
    if family and meta.get("family") and meta["family"] != family:
        raise UserError(f"{latents} holds {meta['family']} latents, not {family}: drop --family or fix it")
    check_latent_geometry(z, fam_name)
    if checkpoint is not None and not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    with torch.inference_mode():
        if decoder == "teacher":
            model = resolve_teacher(teacher, fam_name)
            t0 = time.perf_counter()
            video = teacher_decode(model, z)
        else:
            model = resolve_student(fam_name, str(checkpoint) if checkpoint else None, teacher)
            t0 = time.perf_counter()
            video = model(z)
        dt = time.perf_counter() - t0
    rate = fps or float(meta.get("fps", 24) or 24)
    write_video(output, to_uint8(video), fps=rate)
    console.print(f"{decoder} decoded {tuple(z.shape)} -> {video.shape[2]} frames "
                  f"{video.shape[4]}x{video.shape[3]} in {dt:.2f}s -> {output}")
