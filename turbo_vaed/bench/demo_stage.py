"""The demo's host bench stage: student on every host runtime vs. the demo's teacher, 256p, one run."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from turbo_vaed.bench.collect import make_doc, result_entry, run_planned, teacher_comparisons
from turbo_vaed.bench.host import HOST_RUNTIMES, plan_students, plan_teacher, random_latents
from turbo_vaed.bench.stats import host_device


def bench_stage(ctx, res: str = "256p", latent_frames: int = 3, warmup: int = 1, iters: int = 3,
                threads: int | None = None, runtimes: tuple[str, ...] = HOST_RUNTIMES, isolate: bool = True,
                console: Console | None = None) -> dict:
    """Bench ``ctx.student`` (every host runtime) and ``ctx.teacher`` on the same random latents at ``res``.

    The student is saved to ``<out>/bench/student.safetensors`` and exported next to it; the teacher is
    saved with ``save_pretrained`` to ``<out>/bench/teacher`` so each runtime loads in a fresh process.
    Stores the validated ``turbovaed.bench/1`` document in ``ctx.results["bench"]`` and
    ``<out>/bench/bench.json``, and returns it.
    """
    import torch

    from turbo_vaed.decoders.store import save_decoder
    from turbo_vaed.jsonio import write_json

    if console is None:
        from turbo_vaed.console import console
    out = Path(ctx.out_dir) / "bench"
    out.mkdir(parents=True, exist_ok=True)
    threads = threads or torch.get_num_threads()
    inputs = random_latents(ctx.family, res, latent_frames)
    ckpt = save_decoder(ctx.student, out / "student.safetensors")
    teacher_dir = out / "teacher"
    ctx.teacher.save_pretrained(str(teacher_dir))
    planned = plan_students(ctx.student, ckpt, ctx.family, inputs, runtimes, out, threads, warmup, iters, console,
                            notes=["demo student"])
    planned.append(plan_teacher(str(teacher_dir), teacher_dir, "teacher: the demo's teacher", ctx.family, inputs,
                                threads, warmup, iters))
    raws = run_planned(planned, console, isolate=isolate)
    device = host_device("host")
    results = [result_entry(p, r, device) for p, r in zip(planned, raws, strict=True)]
    doc = make_doc(results, teacher_comparisons(results))
    write_json(out / "bench.json", doc)
    ctx.results["bench"] = doc
    return doc
