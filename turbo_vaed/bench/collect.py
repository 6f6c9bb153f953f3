"""Run planned measurements under a rich progress bar and turn them into ``turbovaed.bench/1`` results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from turbo_vaed.bench.measure import Job, run_job
from turbo_vaed.bench.schema import SCHEMA_ID, validate_results
from turbo_vaed.bench.stats import fps, latency_summary, utc_now
from turbo_vaed.errors import UserError
from turbo_vaed.families import get_family


@dataclass
class Planned:
    """A job plus what the results entry needs to say about it."""

    job: Job
    decoder: str  # student | teacher
    width: int
    height: int
    preset: str | None
    artifact: Path | None = None  # file or folder measured (checkpoint, .onnx, .pte, .mlpackage, teacher dir)
    artifact_sha256: str | None = None
    notes: list[str] = field(default_factory=list)
    check_frames: bool = True  # decoders must give their own frame count of H x W
    frames: int | None = None  # that frame count (None: the family's rule)


def artifact_facts(path: Path | None, sha256: str | None = None) -> tuple[str | None, str | None, int | None]:
    """(path, sha256, bytes) of a file or folder (sha256 of a folder: its sorted relative paths and contents)."""
    if path is None:
        return None, None, None
    from turbo_vaed.exporters.manifest import tree_sha256, tree_size

    p = Path(path)
    if not p.exists():
        return str(p), sha256, None
    return str(p), sha256 or tree_sha256(p), int(tree_size(p))


def progress_bar(console: Console) -> Progress:
    """The bench's progress bar: spinner, description, bar, done/total, elapsed."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    return Progress(*columns, console=console, transient=False)


def run_planned(planned: list[Planned], console: Console, isolate: bool = True) -> list[dict]:
    """Measure every planned job in order (one fresh process each when ``isolate``), with a progress bar."""
    raws: list[dict] = []
    with progress_bar(console) as bar:
        tasks = [bar.add_task(f"{p.job.label}: queued", total=p.job.steps) for p in planned]
        for p, task in zip(planned, tasks, strict=True):
            def step(desc: str, n: int, _t=task, _l=p.job.label) -> None:
                bar.update(_t, description=f"{_l}: {desc}", advance=n)

            raws.append(run_job(p.job, step, isolate=isolate))
            bar.update(task, description=f"{p.job.label}: done")
    return raws


def _check_output(p: Planned, raw: dict) -> None:
    fam = get_family(p.job.family)
    t = p.job.latents.shape[2]
    want = p.frames if p.frames is not None else fam.frames_out(t)
    shape = raw["output_shape"]
    hw = shape[-2:]
    if raw["output_frames"] != want or hw != [p.height, p.width]:
        where = f" ({p.artifact})" if p.artifact else ""
        raise UserError(f"{p.job.label}{where} decoded {t} latent frames to {raw['output_frames']} frames of "
                        f"{hw[1]}x{hw[0]}, expected {want} of {p.width}x{p.height}: re-export the artifact")


def result_entry(p: Planned, raw: dict, device: dict) -> dict:
    """One schema ``result`` from a planned job and its raw figures."""
    if p.check_frames:
        _check_output(p, raw)
    lat = latency_summary(raw["samples_ms"])
    art, sha, size = artifact_facts(p.artifact, p.artifact_sha256)
    shape = [int(s) for s in p.job.latents.shape]
    notes = list(p.notes)
    mb = 2**20
    how = "fresh process per runtime" if raw["isolated"] else "shared process"
    notes.append(f"peak RSS: {raw['memory_method']}, {how}, {raw['baseline_rss'] / mb:.0f} MB before load")
    if not p.check_frames and raw["output_frames"] != get_family(p.job.family).frames_out(shape[2]):
        notes.append(f"teacher decodes {shape[2]} latent frames to {raw['output_frames']} frames")
    return {
        "label": p.job.label,
        "device": device,
        "runtime": {"name": p.job.runtime, "version": raw["version"], "compute_units": p.job.compute_units,
                    "delegate": raw["delegate"], "threads": p.job.threads, "precision": raw["precision"]},
        "model": {"family": p.job.family, "decoder": p.decoder, "artifact": art, "artifact_sha256": sha,
                  "artifact_bytes": size, "preset": p.preset, "width": p.width, "height": p.height,
                  "latent_shape": shape, "output_frames": int(raw["output_frames"])},
        "settings": {"warmup": p.job.warmup, "iterations": p.job.iters},
        "cold_start": {"load_ms": raw["load_ms"], "first_run_ms": raw["first_run_ms"]},
        "latency_ms": lat,
        "fps": fps(int(raw["output_frames"]), lat["p50"]),
        "peak_memory_bytes": int(raw["peak_rss"]),
        "thermal": None,
        "compute_plan": raw.get("compute_plan"),
        "notes": "; ".join(notes) or None,
    }


def teacher_comparisons(results: list[dict]) -> list[dict]:
    """Teacher p50 / student p50 for every student measured alongside a teacher."""
    teachers = [r for r in results if r["model"]["decoder"] == "teacher"]
    out = []
    for t in teachers:
        for s in results:
            if s["model"]["decoder"] == "student" and s["model"]["family"] == t["model"]["family"]:
                out.append({"baseline": t["label"], "candidate": s["label"],
                            "speedup": t["latency_ms"]["p50"] / s["latency_ms"]["p50"]})
    return out


def make_doc(results: list[dict], comparisons: list[dict] | None = None) -> dict:
    """A validated ``turbovaed.bench/1`` document."""
    from turbo_vaed import __version__

    doc: dict = {"schema": SCHEMA_ID, "created": utc_now(), "tool": {"name": "turbovaed", "version": __version__},
                 "results": results}
    if comparisons:
        doc["comparisons"] = comparisons
    return validate_results(doc, "bench results")
