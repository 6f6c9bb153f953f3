"""``turbovaed bench --device host``: PyTorch (reference and lowered), ONNX Runtime and ExecuTorch here.

Without an ARTIFACT the student is exported into ``--out`` first (said on the console; a previous
export whose manifest matches the same weights, shape and toolchain is reused). Each runtime is
measured in a fresh process so its peak resident memory is its own (see :mod:`.measure`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from turbo_vaed.bench.collect import Planned, make_doc, result_entry, run_planned, teacher_comparisons
from turbo_vaed.bench.measure import Job
from turbo_vaed.bench.options import EXPORT_TARGET, BenchOptions
from turbo_vaed.bench.stats import host_device
from turbo_vaed.decoders import Decoder
from turbo_vaed.errors import UserError
from turbo_vaed.families import RESOLUTIONS, get_family, resolve_resolution
from turbo_vaed.targets import runtime_of_suffix

HOST_RUNTIMES = ("torch", "torch-lowered", "onnxruntime", "executorch")


def console_for(opts: BenchOptions) -> Console:
    """The toolchain's console (or one passed in ``opts.extra['console']``)."""
    if opts.extra.get("console") is not None:
        return opts.extra["console"]
    from turbo_vaed.console import console

    return console


# ---------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """Latents to decode and the picture size they decode to."""

    latents: np.ndarray  # (1, C, T, h, w) float32
    width: int
    height: int
    preset: str | None
    source: str  # "random (seed 0)" or the latents file


def random_latents(family: str, res: str, latent_frames: int, seed: int = 0) -> Inputs:
    """Normal random latents of the preset (or WxH) shape; speed does not depend on their values."""
    fam = get_family(family)
    if latent_frames < 1:
        raise UserError(f"--latent-frames must be >= 1, got {latent_frames}")
    w, h = resolve_resolution(res, fam)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, fam.latent_channels, latent_frames, h // fam.spatial_factor, w // fam.spatial_factor,
                    generator=g)
    return Inputs(z.numpy(), w, h, res if res in RESOLUTIONS else f"{w}x{h}", f"random (seed {seed})")


def file_latents(path: Path, family: str) -> Inputs:
    """Latents from a file written by ``turbovaed encode`` (first batch item)."""
    from turbo_vaed.latents_io import check_latent_geometry, load_latents

    z, _meta = load_latents(path)
    check_latent_geometry(z, family)
    f = get_family(family).spatial_factor
    w, h = z.shape[-1] * f, z.shape[-2] * f
    return Inputs(z[:1].float().contiguous().numpy(), w, h, f"{w}x{h}", str(path))


def host_inputs(opts: BenchOptions, family: str) -> Inputs:
    if opts.latents is not None:
        return file_latents(opts.latents, family)
    return random_latents(family, opts.res, opts.latent_frames)


# ---------------------------------------------------------------- artifacts


def artifact_inputs(artifact: Path, manifest: dict, latents: Path | None) -> Inputs:
    """Latents for an artifact's fixed input ``[T, C, h, w]``: from ``latents`` (checked) or random."""
    family = manifest["family"]
    f = get_family(family).spatial_factor
    t, c, hl, wl = manifest["inputs"][0]["shape"]
    if latents is not None:
        inputs = file_latents(latents, family)
        if list(inputs.latents.shape[1:]) != [c, t, hl, wl]:
            raise UserError(f"latents {list(inputs.latents.shape)} do not fit {artifact.name} "
                            f"(input [T, C, h, w] = {[t, c, hl, wl]}): pass latents of that shape or re-export")
    else:
        inputs = random_latents(family, f"{wl * f}x{hl * f}", t)
    inputs.preset = manifest.get("preset", inputs.preset)
    return inputs


def read_manifest(artifact: Path) -> dict:
    """The validated manifest next to an artifact (one-line error if missing or malformed)."""
    from turbo_vaed.exporters.manifest import read_manifest as _read

    return _read(artifact)


def runtime_of(artifact: Path) -> str:
    """The runtime that runs an artifact, from its extension."""
    suffixes = runtime_of_suffix()
    rt = suffixes.get(artifact.suffix)
    if rt is None:
        raise UserError(f"cannot bench {artifact.name}: expected one of {', '.join(suffixes)}")
    return rt


def student_checkpoint(student: Decoder, out_dir: Path, name: str, given: Path | None) -> Path:
    """The checkpoint the torch runtimes load: ``given``, the decoder's own file, or the decoder saved as
    ``out_dir/name``."""
    if given is not None and str(given) != "random":
        from turbo_vaed.decoders.store import resolve_builtin

        return resolve_builtin(str(given)) if str(given).startswith("builtin:") else Path(given)
    from turbo_vaed.decoders.store import save_decoder

    return save_decoder(student, Path(out_dir) / f"{name}.safetensors")


def _reusable(artifact: Path, target: str, student: Decoder, precision: str | None, w: int, h: int,
              t: int) -> bool:
    """True if ``artifact`` was exported from these weights, shape, precision and toolchain, and is intact."""
    from turbo_vaed.exporters.manifest import toolchain, tree_sha256

    if not artifact.exists():
        return False
    try:
        m = read_manifest(artifact)
        same = (m["target"] == target and (precision is None or m["precision"] == precision)
                and (m["width"], m["height"], m["latent_frames"]) == (w, h, t)
                and m["decoder"].get("weights_sha256") == student.weights_sha256()
                and all(m["toolchain"].get(k) == v for k, v in toolchain(target).items()))
        if same and m.get("sha256"):
            same = tree_sha256(artifact) == m["sha256"]
        return bool(same)
    except (UserError, KeyError, TypeError, AttributeError, OSError):
        return False


def export_for(runtime: str, student: Decoder, ckpt: Path, family: str, inputs: Inputs,
               out_dir: Path, console: Console, fresh: bool = False) -> Path:
    """Export (or reuse) the student artifact ``runtime`` needs; says which on the console."""
    target, delegate, ext = EXPORT_TARGET[runtime]
    precision = "fp32" if runtime != "coreml" else None  # Core ML: the preset's (fp16 for the Neural Engine)
    t = int(inputs.latents.shape[2])
    name = f"{family}-{student.arch.name}-{target}-{inputs.width}x{inputs.height}-t{t}"
    artifact = Path(out_dir) / f"{name}{ext}"
    if not fresh and _reusable(artifact, target, student, precision, inputs.width, inputs.height, t):
        console.print(f"reusing {artifact} (its manifest matches these weights, shape and toolchain)")
        return artifact
    from turbo_vaed.exporters import export_artifact

    console.print(f"no ARTIFACT given: exporting the {family} {student.arch.name} decoder to {target} "
                  f"({inputs.width}x{inputs.height}, {t} latent frames) -> {artifact}")
    with console.status(f"exporting {target}"):
        res = export_artifact(student, target, f"{inputs.width}x{inputs.height}", latent_frames=t,
                              precision=precision, out_dir=Path(out_dir), delegate=delegate, name=name,
                              checkpoint=None if student.checkpoint == "random" else ckpt)
    return Path(res.artifact)


# ---------------------------------------------------------------- teacher


def teacher_source(teacher: str, family: str) -> tuple[str, Path | None, str]:
    """Check ``--teacher`` against the family early; (source for the child, folder, note)."""
    from turbo_vaed.console import warn
    from turbo_vaed.resolve import uses_reference
    from turbo_vaed.teachers import REFERENCE_DIR, family_of_class

    if not get_family(family).has_teacher:
        raise UserError(f"family {family} has no teacher VAE class in diffusers 0.42: drop --vs-teacher")
    if teacher == "reference" and not uses_reference(family, teacher):
        warn(f"the built-in reference teacher is not {family}: comparing with the {family} teacher's default "
             "diffusers config with RANDOM weights (speed only)")
        teacher = "random"
    if teacher == "random":
        return "random", None, "teacher: default diffusers config, random weights (speed only)"
    folder = REFERENCE_DIR if teacher == "reference" else Path(teacher)
    cfg = folder / "config.json"
    if not cfg.is_file():
        if teacher == "reference":
            raise UserError("the built-in reference teacher is not installed (models/reference): "
                            "pass --family F --teacher random, or --teacher PATH to a diffusers VAE folder")
        raise UserError(f"teacher directory not found or has no config.json: {folder}; pass a diffusers VAE folder")
    fam = family_of_class(json.loads(cfg.read_text()).get("_class_name", ""))
    if fam != family:
        raise UserError(f"teacher {folder} is family '{fam}', not '{family}': pass the matching --family/--teacher")
    return str(folder), folder, f"teacher: {folder}"


def plan_teacher(source: str, folder: Path | None, note: str, family: str, inputs: Inputs, threads: int,
                 warmup: int, iters: int) -> Planned:
    job = Job("teacher/diffusers", "diffusers", family, source, inputs.latents, warmup, iters, threads)
    return Planned(job, "teacher", inputs.width, inputs.height, inputs.preset, artifact=folder,
                   notes=[note], check_frames=False)


# ---------------------------------------------------------------- students


def plan_students(student: Decoder, ckpt: Path, family: str, inputs: Inputs, runtimes: tuple[str, ...],
                  out_dir: Path, threads: int, warmup: int, iters: int, console: Console,
                  notes: list[str] | None = None, fresh_exports: bool = False) -> list[Planned]:
    """One planned job per runtime; exports what the artifact runtimes need first."""
    planned = []
    for rt in runtimes:
        src = ckpt if rt in ("torch", "torch-lowered") else export_for(
            rt, student, ckpt, family, inputs, out_dir, console, fresh_exports)
        job = Job(f"student/{rt}", rt, family, str(src), inputs.latents, warmup, iters, threads)
        planned.append(Planned(job, "student", inputs.width, inputs.height, inputs.preset, artifact=src,
                               notes=list(notes or []), frames=student.frames_out(int(inputs.latents.shape[2]))))
    return planned


def _runtimes(opts: BenchOptions, artifact_runtime: str | None) -> tuple[str, ...]:
    if artifact_runtime is not None:
        extra = [r for r in opts.runtimes if r != artifact_runtime]
        if extra:
            raise UserError(f"ARTIFACT runs on {artifact_runtime}; --runtime {extra[0]} does not apply to it: "
                            "drop --runtime or the ARTIFACT")
        rts: tuple[str, ...] = (artifact_runtime,)
    else:
        rts = tuple(dict.fromkeys(opts.runtimes)) or HOST_RUNTIMES
    if "coreml" in rts:
        raise UserError("Core ML runs on macOS only: use --device mac (host runtimes: "
                        f"{', '.join(HOST_RUNTIMES)})")
    return rts


def _resolve_student(family: str, opts: BenchOptions, console: Console) -> tuple[Decoder, Path | None, list]:
    """The decoder and the checkpoint file it came from (None if built in memory)."""
    from turbo_vaed.console import ShownWarnings
    from turbo_vaed.resolve import RandomStudentWarning, resolve_decoder

    notes = []
    with ShownWarnings(RandomStudentWarning):
        student = resolve_decoder(family, None if opts.checkpoint is None else str(opts.checkpoint), opts.teacher)
    ckpt: Path | None = None
    if student.checkpoint == "random":
        notes.append(f"{student.arch.name}: random weights (speed only)")
    else:
        from turbo_vaed.decoders.store import resolve_builtin

        ck = student.checkpoint
        ckpt = resolve_builtin(ck) if ck.startswith("builtin:") else Path(ck)
    return student, ckpt, notes


def bench_host(opts: BenchOptions) -> dict:
    """Measure the student on every host runtime (or the given ARTIFACT), optionally vs the teacher."""
    console = console_for(opts)
    threads = opts.threads or torch.get_num_threads()
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if opts.warmup < 0 or opts.iters < 1:
        raise UserError("--iters must be >= 1 and --warmup >= 0")
    isolate = opts.isolate
    t_warm = int(opts.extra.get("teacher_warmup", opts.warmup))
    t_iters = int(opts.extra.get("teacher_iters", opts.iters))
    planned: list[Planned] = []
    if opts.artifact is not None:
        artifact = Path(opts.artifact)
        runtimes = _runtimes(opts, runtime_of(artifact))
        m = read_manifest(artifact)
        family = m["family"]
        if opts.family is not None and opts.family != family:
            raise UserError(f"{artifact.name} is a {family} artifact, not {opts.family}: drop --family or fix it")
        inputs = artifact_inputs(artifact, m, opts.latents)
        job = Job(f"student/{runtimes[0]}", runtimes[0], family, str(artifact), inputs.latents, opts.warmup,
                  opts.iters, threads)
        planned.append(Planned(job, "student", inputs.width, inputs.height, inputs.preset, artifact=artifact,
                               artifact_sha256=m.get("sha256"), frames=int(m["output_frames"])))
    else:
        runtimes = _runtimes(opts, None)
        family = bench_family(opts)
        inputs = host_inputs(opts, family)
        student, ckpt, notes = _resolve_student(family, opts, console)
        name = f"{family}-{student.arch.name}" + ("-random" if notes else "")
        ckpt = student_checkpoint(student, opts.out_dir, name, ckpt)
        planned += plan_students(student, ckpt, family, inputs, runtimes, opts.out_dir, threads, opts.warmup,
                                 opts.iters, console, notes, bool(opts.extra.get("fresh_exports", False)))
    if opts.vs_teacher:
        src, folder, note = teacher_source(opts.teacher, family)
        planned.append(plan_teacher(src, folder, note, family, inputs, threads, t_warm, t_iters))
    console.print(f"bench {family} {inputs.width}x{inputs.height}, latents {list(inputs.latents.shape)} "
                  f"({inputs.source}), {threads} threads, warm-up {opts.warmup}, {opts.iters} counted runs")
    raws = run_planned(planned, console, isolate=isolate)
    device = host_device("host")
    results = [result_entry(p, r, device) for p, r in zip(planned, raws, strict=True)]
    return make_doc(results, teacher_comparisons(results))


def bench_family(opts: BenchOptions) -> str:
    """--family, else the --teacher folder's family, else the installed reference teacher's."""
    from turbo_vaed.resolve import resolve_family

    if opts.family is not None or opts.teacher != "reference" or opts.checkpoint is not None:
        return resolve_family(opts.family, opts.teacher, opts.checkpoint)
    return _reference_family()


def _reference_family() -> str:
    from turbo_vaed.teachers import REFERENCE_DIR, reference_family

    if not (REFERENCE_DIR / "config.json").is_file():
        raise UserError("the built-in reference teacher is not installed (models/reference): pass --family F "
                        "(with --teacher random or --teacher PATH)")
    return reference_family()
