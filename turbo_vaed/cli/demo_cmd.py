"""``turbovaed demo``: the README's main job on the built-in default."""

from __future__ import annotations

from pathlib import Path

import typer

from turbo_vaed.cli.app import app, console
from turbo_vaed.cli.options import ThreadsOpt, resolve_choices, set_threads
from turbo_vaed.console import Table
from turbo_vaed.demo import DemoContext, reconstruction_stage
from turbo_vaed.jsonio import write_json
from turbo_vaed.teachers import reference_family


@app.command()
def demo(
    out: Path = typer.Option(Path("out/demo"), "-o", "--out", help="Output folder."),
    threads: ThreadsOpt = None,
    export: bool = typer.Option(True, "--export/--no-export", help="Export + parity stage (256p, all targets)."),
    bench: bool = typer.Option(True, "--bench/--no-bench", help="Host bench stage (student vs. teacher, 256p)."),
) -> None:
    """Encode the held-out clip with the reference teacher, decode with teacher and student, compare."""
    from turbo_vaed.guards import check_output_dir, check_output_file

    check_output_dir(out)  # before minutes of work, not after
    check_output_file(out / "demo.json", "results file")
    check_output_file(out / "side_by_side.mp4", "video")
    threads = set_threads(threads)
    family = reference_family()
    choices = resolve_choices(None, "reference", None)
    ctx = DemoContext(out_dir=out, family=choices.family.name, teacher=choices.teacher_vae(),
                      student=choices.decoder())
    with console.status("reconstructing the held-out clip (teacher encode, teacher + student decode)"):
        res = reconstruction_stage(ctx)
    t = Table(title=f"held-out clip {res['clip']}: {res['frames']} frames {res['size'][0]}x{res['size'][1]}, "
                    f"{family} reference teacher")
    for c in ("decoder", "PSNR dB", "SSIM", "latency s", "params", "retention PSNR/SSIM"):
        t.add_column(c, justify="right" if c != "decoder" else "left")
    for name, r in res["decoders"].items():
        ret = f"{r['psnr_retention']:.1%} / {r['ssim_retention']:.1%}" if "psnr_retention" in r else "-"
        t.add_row(name, f"{r['psnr']:.2f}", f"{r['ssim']:.4f}", f"{r['latency_s']:.3f}",
                  f"{r['params'] / 1e6:.2f}M", ret)
    console.print(t)
    console.print(f"side-by-side (input | teacher | student): {res['video']}")
    st = res["stream"]
    if st.get("max_abs_vs_full") is not None:
        console.print(f"streamed decode ({st['chunk']} latent frames per chunk, {st['frames']} frames): max abs "
                      f"difference to the full decode {st['max_abs_vs_full']:.2e}")
    if export:
        from turbo_vaed.exporters.demo_stage import export_stage, export_table

        console.print(export_table(export_stage(ctx)))
    if bench:
        from turbo_vaed.bench.demo_stage import bench_stage
        from turbo_vaed.bench.report import print_results

        doc = bench_stage(ctx, threads=threads, console=console)
        print_results(doc, title="host bench 256p: student runtimes vs. teacher", console=console)
    write_json(out / "demo.json", {"schema": "turbovaed.demo/1", **ctx.results})
    console.print(f"results: {out / 'demo.json'}")
