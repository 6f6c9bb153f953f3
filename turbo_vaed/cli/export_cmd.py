"""``turbovaed export`` (lower + Core ML / ExecuTorch / ONNX + phone-readiness report) and ``turbovaed parity``."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Optional

import torch
import typer
from rich.table import Table

from turbo_vaed.cli.app import app, console
from turbo_vaed.errors import UserError

TARGET_HELP = "coreml (.mlpackage), executorch (.pte) or onnx (.onnx + .ort)."


def report_table(report: dict, title: str) -> Table:
    """The phone-readiness report as a rich table."""
    t = Table(title=title, show_header=False, title_justify="left")
    t.add_column("item", style="bold")
    t.add_column("value", overflow="fold")
    slow = report.get("slow_path_ops") or []
    nd = report.get("non_delegated_ops") or {}
    gf = report.get("gflops_per_frame")
    rows = [
        ("max tensor rank", str(report.get("max_rank"))),
        ("partitions", str(report.get("partitions")) if report.get("partitions") is not None else "-"),
        ("ops off the fast path", "[green]none[/]" if not slow else "[yellow]" + "; ".join(slow) + "[/]"),
        ("non-delegated ops", "none" if not nd else ", ".join(f"{k} x{v}" for k, v in nd.items())),
        ("weights", f"{report.get('weights_bytes', 0) / 2**20:.2f} MiB"),
        ("GFLOPs / output frame", f"{gf:.3f}" if isinstance(gf, int | float) else "-"),
        ("op counts", ", ".join(f"{k} {v}" for k, v in (report.get("op_counts") or {}).items())),
    ]
    for extra in ("ep_partitions", "backends", "spec_version", "opset"):
        if report.get(extra) is not None:
            rows.append((extra.replace("_", " "), str(report[extra])))
    for k, v in rows:
        t.add_row(k, v)
    return t


def _family(family: Optional[str]) -> str:
    from turbo_vaed.resolve import resolve_family

    try:
        return resolve_family(family, "reference")
    except FileNotFoundError:
        raise UserError("the built-in reference teacher is not installed (models/reference): pass --family F") from None


def _student(family: str, checkpoint: Optional[Path]):
    from turbo_vaed.resolve import RandomStudentWarning, resolve_student

    if checkpoint is not None and not checkpoint.is_file():
        raise UserError(f"checkpoint not found: {checkpoint}; pass --checkpoint PATH to a .safetensors student")
    from turbo_vaed.checkpoint import build_student
    from turbo_vaed.teachers import REFERENCE_DIR

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomStudentWarning)
        if (REFERENCE_DIR / "config.json").is_file():
            student = resolve_student(family, str(checkpoint) if checkpoint else None, "reference")
        else:  # no built-in reference installed: the family's own student config
            if checkpoint is None:
                warnings.warn(f"{family} student built with RANDOM weights (pass --checkpoint for a trained one)",
                              RandomStudentWarning, stacklevel=1)
            student = build_student(family, checkpoint)
    for w in caught:
        if issubclass(w.category, RandomStudentWarning):
            console.print(f"[yellow]warning:[/] {w.message}")
    return student


@app.command("export")
def export_cmd(
    target: Optional[str] = typer.Option(None, "--target", "-t", help=TARGET_HELP),
    res: str = typer.Option("256p", "--res", "-r", help="256p, 480p, 720p, 1080p or WxH (divisible by the factor)."),
    family: Optional[str] = typer.Option(None, "--family", "-f", help="Default: the reference teacher's (wan)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Student .safetensors."),
    latent_frames: Optional[int] = typer.Option(None, "--latent-frames", "-T",
                                                help="Latent frames per chunk (default: the preset's)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp16 or fp32 (default: the preset's)."),
    delegate: Optional[str] = typer.Option(None, "--delegate", help="executorch: xnnpack (default) or coreml."),
    out: Path = typer.Option(Path("out/artifacts"), "-o", "--out", help="Output folder."),
    name: Optional[str] = typer.Option(None, "--name", help="Artifact base name (default from the options)."),
    check: Optional[Path] = typer.Option(None, "--check", help="Re-read ARTIFACT and print its report; no export."),
    threads: int = typer.Option(2, "--threads"),
) -> None:
    """Lower the student and export it for phones, with its manifest and phone-readiness report."""
    if check is not None:
        print_check(check)
        return
    from turbo_vaed.exporters import export_artifact
    from turbo_vaed.exporters.presets import (
        check_target,
        load_preset,
        resolve_delegate,
        resolve_latent_frames,
        resolve_precision,
    )
    from turbo_vaed.families import RESOLUTIONS, get_family, resolve_resolution

    if target is None:
        raise UserError("--target is required: coreml, executorch or onnx (or --check ARTIFACT)")
    check_target(target)
    fam = get_family(_family(family))
    w, h = resolve_resolution(res, fam)
    preset = load_preset(target)
    d = resolve_delegate(target, delegate, preset)
    prec = resolve_precision(precision, preset, d)
    t = resolve_latent_frames(latent_frames, preset, res if res in RESOLUTIONS else f"{w}x{h}")
    torch.set_num_threads(threads)
    student = _student(fam.name, checkpoint)
    t0 = time.perf_counter()
    with console.status(f"exporting {fam.name} to {target} at {w}x{h}") as status:
        result = export_artifact(student, target, res, latent_frames=t, precision=prec, out_dir=out, delegate=d,
                                 name=name, checkpoint=checkpoint, progress=lambda msg: status.update(msg))
    m = result.manifest
    console.print(report_table(m["report"], f"{result.artifact.name}: {m['target']}"
                               f"{'/' + m['delegate'] if m['delegate'] else ''} {m['precision']}, "
                               f"latents {m['inputs'][0]['shape']} -> frames {m['outputs'][0]['shape']}"))
    extra = "".join(f" + {f}" for f in m.get("extra_files", []))
    console.print(f"wrote {result.artifact}{extra} ({m['size_bytes'] / 2**20:.2f} MiB) and "
                  f"{result.manifest_path.name} in {time.perf_counter() - t0:.1f}s")


def print_check(artifact: Path) -> None:
    """``--check``: re-read the artifact, compare with its manifest, print the report."""
    from turbo_vaed.exporters import TARGET_OF_EXT
    from turbo_vaed.exporters.manifest import manifest_path, read_manifest, tree_sha256

    target = TARGET_OF_EXT.get(artifact.suffix)
    if target is None:
        raise UserError(f"cannot check {artifact.name}: expected .mlpackage, .pte, .onnx or .ort")
    if not artifact.exists():
        raise UserError(f"artifact not found: {artifact}; export one with `turbovaed export`")
    manifest = read_manifest(artifact) if manifest_path(artifact).is_file() else None
    report = dict(manifest["report"]) if manifest else {}
    precision = manifest["precision"] if manifest else "fp16"
    try:
        if target == "coreml":
            from turbo_vaed.exporters import coreml

            report.update(coreml.check(artifact, precision))
        elif target == "executorch":
            from turbo_vaed.exporters import executorch

            fresh = executorch.check(artifact)
            if not report:  # no manifest: what the .pte itself holds
                fresh["weights_bytes"] = fresh["constant_bytes"]
            fresh["slow_path_ops"] = list(dict.fromkeys(fresh["slow_path_ops"] + [
                s for s in report.get("slow_path_ops", []) if "not delegated" not in s]))
            report.update(fresh)
        elif artifact.suffix == ".onnx":
            from turbo_vaed.exporters import onnx

            report.update(onnx.check(artifact))
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot read {artifact.name} ({type(e).__name__}): it is corrupt or not a {target} "
                        "artifact; re-export it") from None
    if not report:
        raise UserError(f"{artifact.name} has no manifest and cannot be parsed here: re-export it")
    title = f"{artifact.name}: {target}"
    if manifest:
        same = manifest.get("sha256") == tree_sha256(artifact) if artifact.suffix != ".ort" else None
        state = {True: "matches its manifest", False: "[red]differs from its manifest[/]", None: "ORT format"}[same]
        title += f" {manifest['precision']}, latents {manifest['inputs'][0]['shape']} ({state})"
    console.print(report_table(report, title))
    if manifest and manifest.get("parity"):
        p = manifest["parity"]
        console.print(f"parity ({p['runtime']}, {p['latents']}): max abs error {p['max_abs_error']:.3g}, "
                      f"PSNR {p['psnr_db']:.2f} dB, {'passed' if p['passed'] else '[red]FAILED[/]'}")


@app.command()
def parity(
    artifact: Path = typer.Argument(..., help="Exported artifact (.onnx/.ort/.pte/.mlpackage)."),
    latents: Optional[Path] = typer.Option(None, "--latents", help="Latents file (default: random normal, seed 0)."),
    layout: str = typer.Option("ncthw", "--layout", help="ncthw, or ntchw for N T C H W files (e.g. Wan's)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Student it was exported from."),
    compute_units: str = typer.Option("all", "--compute-units",
                                      help="Core ML: all, cpuAndNeuralEngine, cpuAndGPU, cpuOnly."),
    threads: Optional[int] = typer.Option(None, "--threads"),
    seed: int = typer.Option(0, "--seed"),
    write: bool = typer.Option(True, "--write/--no-write", help="Store the figures in the manifest."),
) -> int:
    """Run ARTIFACT in its runtime and compare with the PyTorch reference (max abs error, PSNR)."""
    from turbo_vaed.parity import run_parity

    if threads:
        torch.set_num_threads(threads)
    with console.status(f"running {artifact.name} and the PyTorch reference"):
        rec = run_parity(artifact, latents=latents, layout=layout, checkpoint=checkpoint, threads=threads,
                         compute_units=compute_units, seed=seed, write=write)
    t = Table(title=f"parity: {artifact.name} vs PyTorch reference")
    for c in ("runtime", "max abs error", "PSNR dB", "criterion", "result"):
        t.add_column(c, justify="right" if c in ("max abs error", "PSNR dB") else "left")
    t.add_row(f"{rec['runtime']} {rec['runtime_version']}", f"{rec['max_abs_error']:.3g}",
              f"{rec['psnr_db']:.2f}", rec["criterion"], "[green]passed[/]" if rec["passed"] else "[red]FAILED[/]")
    console.print(t)
    console.print(f"latents: {rec['latents']}" + ("; stored in the manifest" if write else ""), highlight=False)
    return 0 if rec["passed"] else 1
