"""``turbovaed encode`` and ``turbovaed decode``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import typer

from turbo_vaed.cli.app import app, console
from turbo_vaed.cli.options import CheckpointOpt, FamilyOpt, TeacherOpt, resolve_choices
from turbo_vaed.errors import UserError
from turbo_vaed.latents_io import check_latent_geometry, load_latents, save_latents
from turbo_vaed.parity import to_signed
from turbo_vaed.teachers import teacher_decode, teacher_encode
from turbo_vaed.video_io import crop_to_multiple, read_video, to_tensor, to_uint8, write_video


@app.command()
def encode(
    video: Path = typer.Argument(..., help="Input video file."),
    output: Path = typer.Option(..., "-o", "--output", help="Latents .safetensors to write."),
    teacher: TeacherOpt = "reference",
    family: FamilyOpt = None,
    frames: int = typer.Option(33, "--frames", min=1, help="Frames to read (rounded down to 1 + t*k)."),
    start: int = typer.Option(0, "--start", min=0, help="First frame."),
) -> None:
    """Encode a video to normalised latents with the teacher encoder."""
    from turbo_vaed.guards import check_output_file, require_encode_memory

    check_output_file(output, "latents output", (".safetensors",))
    choices = resolve_choices(family, teacher)
    fam = choices.family
    raw, fps = read_video(video, max_frames=frames, start=start)
    n = fam.valid_frame_count(raw.shape[0])
    raw = crop_to_multiple(raw[:n], fam.spatial_factor)
    vae = choices.teacher_vae()
    require_encode_memory(vae, (1, 3, *raw.shape[:3]))
    torch.manual_seed(0)
    with torch.inference_mode():
        z = teacher_encode(vae, to_tensor(raw))
    save_latents(output, z, fam.name, fps=fps, source=str(video))
    console.print(f"encoded {n} frames {raw.shape[2]}x{raw.shape[1]} -> latents {tuple(z.shape)} -> {output}")


def raw_latents(z: torch.Tensor, choices, meta: dict) -> torch.Tensor:
    """Normalised (diffusion-space) latents -> the raw VAE latents a ``raw``-convention decoder reads.

    Latent files from ``turbovaed encode`` are normalised; the teacher's own statistics undo that.
    """
    if meta.get("convention", "normalised") == "raw":
        return z
    from turbo_vaed.teachers import denormalize_latents

    if not choices.family.has_teacher:
        console.print(f"note: family {choices.family.name} has no teacher VAE in diffusers 0.42 to undo the latent "
                      "normalisation with: the latents go to the raw-latent decoder as they are (pass raw VAE "
                      "latents)", highlight=False)
        return z
    return denormalize_latents(choices.teacher_vae(), z)


def _decode_stream(latents: Path, layout: str, output: Path, model, choices, rate: float,
                   artifact: Path | None, chunk: int, bands: int = 1) -> None:
    """``decode --stream``: chunk by chunk (PyTorch or an exported artifact), frames written as they arrive."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from turbo_vaed.streaming import stream_artifact, stream_decoder
    from turbo_vaed.video_io import VideoWriter

    z, meta = load_latents(latents, layout)
    if model.latent_convention == "raw":
        z = raw_latents(z, choices, meta)
    total = model.frames_out(z.shape[2])
    if artifact is not None:
        from turbo_vaed.targets import load_runner

        runner = load_runner(artifact)
        if runner.manifest["decoder"].get("weights_sha256") not in (None, model.weights_sha256()):
            from turbo_vaed.console import warn

            warn(f"{artifact.name} was exported from other weights than --checkpoint's decoder: its frames are "
                 "its own")
        chunks = stream_artifact(runner, z, model.arch.trims(model.config, z.shape[2]))
        how = f"{runner.name} ({artifact.name})"
    else:
        chunks = stream_decoder(model, z, chunk, bands)
        how = f"PyTorch, {chunk} latent frames per chunk" + (f", tail in {bands} bands" if bands > 1 else "")
    t0 = time.perf_counter()
    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[fps]}"))
    with VideoWriter(output, rate) as w, Progress(*cols, console=console) as bar:
        task = bar.add_task("frames", total=total, fps="")
        for frames in chunks:
            if not np.isfinite(frames).all():
                raise UserError("the streamed decode produced NaN/Inf frames from finite latents: the artifact "
                                "or weights are broken; re-export it")
            lo, hi = model.output_range
            video = torch.from_numpy(frames).transpose(0, 1)[None]
            w.write(to_uint8(to_signed(video, (lo, hi))))
            done = w.frames
            bar.update(task, completed=done, fps=f"{done / max(time.perf_counter() - t0, 1e-9):.1f} FPS")
    console.print(f"streamed {tuple(z.shape)} -> {w.frames} frames ({how}) in {time.perf_counter() - t0:.2f}s "
                  f"-> {output}")


@app.command()
def decode(
    latents: Path = typer.Argument(..., help="Latents (.safetensors from `encode`, or a torch .pt/.pth)."),
    output: Path = typer.Option(..., "-o", "--output", help="mp4 to write."),
    decoder: str = typer.Option("student", "--decoder", help="student (the --checkpoint decoder) or teacher."),
    checkpoint: CheckpointOpt = None,
    teacher: TeacherOpt = "reference",
    family: FamilyOpt = None,
    layout: str = typer.Option("ncthw", "--layout", help="ncthw, or ntchw for N T C H W files."),
    fps: Optional[float] = typer.Option(None, "--fps", min=0.001, max=1000.0, help="Default: the latents'."),
    stream: bool = typer.Option(False, "--stream", help="Decode chunk by chunk in constant memory, writing frames "
                                "as they arrive (exact: equals the full decode)."),
    artifact: Optional[Path] = typer.Option(None, "--artifact", help="--stream through an exported streaming "
                                            "artifact (`export --stream`; ONNX Runtime, ExecuTorch, Core ML)."),
    chunk: int = typer.Option(2, "--chunk", min=1, max=64, help="--stream in PyTorch: latent frames per chunk."),
    bands: int = typer.Option(1, "--bands", min=1, max=256, help="--stream in PyTorch: run the high-resolution "
                              "tail in this many bands of rows (less memory, same frames; the student)."),
) -> None:
    """Decode latents to an mp4 with a decoder (default: the student) or the teacher."""
    from turbo_vaed.guards import (
        check_choice,
        check_decoder_finite,
        check_finite,
        check_number,
        check_output_file,
        require_decode_memory,
    )
    from turbo_vaed.latents_io import check_single, peek_latents

    check_choice(decoder, "decoder", ("student", "teacher"))
    check_number(fps, "--fps", lo=0, lo_open=True, hi=1000)
    check_output_file(output, "output", (".mp4", ".mov", ".mkv"))
    shape, meta = peek_latents(latents, layout)  # the header only: nothing large is read yet
    if family and meta.get("family") and meta["family"] != family:
        raise UserError(f"{latents} holds {meta['family']} latents, not {family}: drop --family or fix it")
    choices = resolve_choices(family or meta.get("family"), teacher, checkpoint)
    fam_name = choices.family.name
    check_latent_geometry(shape, fam_name)
    check_single(shape, str(latents))
    if decoder == "teacher":
        model = choices.teacher_vae()
    else:
        model = choices.decoder()
        check_decoder_finite(model)
        if shape[2] < model.min_latent_frames:
            raise UserError(f"this {model.arch.name} decoder needs at least {model.min_latent_frames} latent "
                            f"frames, {latents} holds {shape[2]}")
    if bands != 1 and not (stream or artifact is not None):
        raise UserError("--bands splits the streaming step: pass --stream too")
    if stream or artifact is not None:
        if decoder == "teacher":
            raise UserError("--stream decodes with a turbovaed decoder, not the teacher: drop --decoder teacher")
        rate = fps or float(meta.get("fps", 24) or 24)
        if artifact is not None and bands != 1:
            raise UserError("--bands is fixed when the artifact is exported (`export --stream --bands N`): drop it")
        return _decode_stream(latents, layout, output, model, choices, rate, artifact, chunk, bands)
    require_decode_memory(model, shape, fix="crop the latents or decode fewer frames" if decoder == "teacher" else
                          "decode with --stream (chunk by chunk, constant memory), or crop the latents")
    z, meta = load_latents(latents, layout)
    with torch.inference_mode():
        if decoder == "teacher":
            t0 = time.perf_counter()
            video = teacher_decode(model, z)
        else:
            if model.latent_convention == "raw":
                z = raw_latents(z, choices, meta)
            t0 = time.perf_counter()
            video = to_signed(model(z), model.output_range)
        dt = time.perf_counter() - t0
    check_finite(video, f"the {decoder} decode of finite latents", "its weights or numerics are broken "
                 "(fp16 overflow?); try another --checkpoint")
    rate = fps or float(meta.get("fps", 24) or 24)
    write_video(output, to_uint8(video), fps=rate)
    console.print(f"{decoder} decoded {tuple(z.shape)} -> {video.shape[2]} frames "
                  f"{video.shape[4]}x{video.shape[3]} in {dt:.2f}s -> {output}")
