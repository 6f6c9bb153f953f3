"""``turbovaed export`` (lower + Core ML / ExecuTorch / ONNX + phone-readiness report) and ``turbovaed parity``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from turbo_vaed.cli.app import app, console
from turbo_vaed.cli.options import CheckpointOpt, FamilyOpt, ResOpt, ThreadsOpt, resolve_choices, set_threads
from turbo_vaed.console import Table
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


@app.command("export")
def export_cmd(
    target: Optional[str] = typer.Option(None, "--target", "-t", help=TARGET_HELP),
    res: ResOpt = "256p",
    family: FamilyOpt = None,
    checkpoint: CheckpointOpt = None,
    latent_frames: Optional[int] = typer.Option(None, "--latent-frames", "-T", min=1,
                                                help="Latent frames per chunk (default: the preset's)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp16 or fp32 (default: the preset's)."),
    delegate: Optional[str] = typer.Option(None, "--delegate", help="executorch: xnnpack (default) or coreml."),
    out: Path = typer.Option(Path("out/artifacts"), "-o", "--out", help="Output folder."),
    name: Optional[str] = typer.Option(None, "--name", help="Artifact base name (default from the options)."),
    check: Optional[Path] = typer.Option(None, "--check", help="Re-read ARTIFACT and print its report; no export."),
    stream: bool = typer.Option(False, "--stream", help="Export the streaming step: state tensors as explicit "
                                "inputs/outputs, named in the manifest, for exact chunk-by-chunk decoding."),
    bands: int = typer.Option(1, "--bands", min=1, max=256, help="With --stream: run the step's high-resolution "
                              "tail in this many bands of rows, one after the other (same numbers, about N times "
                              "smaller activations there; the student)."),
    band_stages: Optional[int] = typer.Option(None, "--band-stages", min=1, max=8, help="With --bands or "
                                              "--tail-frames: how many of the highest-resolution stages the split "
                                              "tail spans (default 1: the last stage only, the least recomputed "
                                              "context; --tail-frames starts it after the last temporal upsample "
                                              "at the latest)."),
    tail_frames: int = typer.Option(0, "--tail-frames", min=0, max=1024, help="With --stream: run the step's "
                                    "high-resolution tail this many frames at a time, each temporal conv's state "
                                    "carried from group to group (same numbers, nothing recomputed; the student, "
                                    "and TAEHV: its last TGrow and full-resolution convs frame by frame)."),
    threads: ThreadsOpt = None,
) -> None:
    """Lower a decoder and export it for phones, with its manifest and phone-readiness report."""
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

    if target is None:
        raise UserError("--target is required: coreml, executorch or onnx (or --check ARTIFACT)")
    check_target(target)
    choices = resolve_choices(family, "reference", checkpoint)
    r = choices.resolution(res)
    preset = load_preset(target)
    d = resolve_delegate(target, delegate, preset)
    prec = resolve_precision(precision, preset, d)
    t = resolve_latent_frames(latent_frames, preset, r.preset)
    from turbo_vaed.guards import check_output_dir

    check_output_dir(out)
    set_threads(threads)
    decoder = choices.decoder()
    t0 = time.perf_counter()
    with console.status(f"exporting {choices.family.name} to {target} at {r}") as status:
        result = export_artifact(decoder, target, r, latent_frames=t, precision=prec, out_dir=out, delegate=d,
                                 name=name, progress=lambda msg: status.update(msg), stream=stream,
                                 bands=bands, band_stages=band_stages, tail_frames=tail_frames)
    m = result.manifest
    console.print(report_table(m["report"], f"{result.artifact.name}: {m['target']}"
                               f"{'/' + m['delegate'] if m['delegate'] else ''} {m['precision']}, "
                               f"latents {m['inputs'][0]['shape']} -> frames {m['outputs'][0]['shape']}"))
    extra = "".join(f" + {f}" for f in m.get("extra_files", []))
    console.print(f"wrote {result.artifact}{extra} ({m['size_bytes'] / 2**20:.2f} MiB) and "
                  f"{result.manifest_path.name} in {time.perf_counter() - t0:.1f}s")


def print_check(artifact: Path) -> None:
    """``--check``: re-read the artifact, compare with its manifest, print the report."""
    from turbo_vaed.exporters.manifest import manifest_path, read_manifest, tree_sha256
    from turbo_vaed.targets import target_of_artifact

    tgt = target_of_artifact(artifact)
    target = tgt.name
    if not artifact.exists():
        raise UserError(f"artifact not found: {artifact}; export one with `turbovaed export`")
    manifest = read_manifest(artifact) if manifest_path(artifact).is_file() else None
    report = dict(manifest["report"]) if manifest else {}
    precision = manifest["precision"] if manifest else "fp16"
    try:
        report = tgt.check(artifact, precision, report)
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
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", help="Override the decoder the manifest "
                                             "names (a moved checkpoint): PATH, builtin:NAME or random."),
    compute_units: str = typer.Option("all", "--compute-units",
                                      help="Core ML: all, cpuAndNeuralEngine, cpuAndGPU, cpuOnly."),
    threads: ThreadsOpt = None,
    seed: int = typer.Option(0, "--seed"),
    write: bool = typer.Option(True, "--write/--no-write", help="Store the figures in the manifest."),
) -> int:
    """Run ARTIFACT in its runtime and compare with the PyTorch reference (max abs error, PSNR)."""
    from turbo_vaed.exporters.manifest import manifest_path
    from turbo_vaed.guards import check_choice, check_output_file
    from turbo_vaed.parity import run_parity
    from turbo_vaed.targets.coreml import COMPUTE_UNITS

    check_choice(compute_units, "--compute-units", COMPUTE_UNITS)
    check_choice(layout, "--layout", ("ncthw", "ntchw"))
    if write and artifact.exists():
        check_output_file(manifest_path(artifact), "manifest")
    set_threads(threads)
    with console.status(f"running {artifact.name} and the PyTorch reference"):
        rec = run_parity(artifact, latents=latents, layout=layout, checkpoint=checkpoint, threads=threads,
                         compute_units=compute_units, seed=seed, write=write)
    t = Table(title=f"parity: {artifact.name} vs PyTorch reference")
    for c in ("runtime", "evaluator", "max abs error", "PSNR dB", "criterion", "result"):
        t.add_column(c, justify="right" if c in ("max abs error", "PSNR dB") else "left")
    t.add_row(f"{rec['runtime']} {rec['runtime_version']}", rec.get("evaluator", rec["runtime"]),
              f"{rec['max_abs_error']:.3g}",
              f"{rec['psnr_db']:.2f}", rec["criterion"], "[green]passed[/]" if rec["passed"] else "[red]FAILED[/]")
    console.print(t)
    console.print(f"latents: {rec['latents']}" + ("; stored in the manifest" if write else ""), highlight=False)
    return 0 if rec["passed"] else 1
