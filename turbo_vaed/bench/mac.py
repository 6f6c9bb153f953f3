"""``turbovaed bench --device mac``: Core ML predictions through coremltools, one result per compute-unit set.

Compute units use the schema's names (as the iOS harness writes them) and map to coremltools':
all -> ALL, cpuAndNeuralEngine -> CPU_AND_NE, cpuOnly -> CPU_ONLY, cpuAndGPU -> CPU_AND_GPU.
Prediction needs macOS; elsewhere this driver stops with a one-line error before doing any work.
"""

from __future__ import annotations

import platform
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from turbo_vaed.bench.collect import Planned, make_doc, result_entry, run_planned, teacher_comparisons
from turbo_vaed.bench.measure import Job
from turbo_vaed.bench.options import BenchOptions
from turbo_vaed.bench.stats import host_device
from turbo_vaed.errors import UserError
from turbo_vaed.targets.coreml import COMPUTE_UNITS as COREML_UNITS  # schema name -> coremltools member


def coreml_unit_name(units: str) -> str:
    """coremltools ``ComputeUnit`` member name for a schema compute-unit name."""
    try:
        return COREML_UNITS[units]
    except KeyError:
        raise UserError(f"unknown compute units '{units}': choose from {', '.join(COREML_UNITS)}") from None


def coreml_compute_unit(units: str):
    """The ``coremltools.ComputeUnit`` for a schema compute-unit name."""
    import coremltools as ct

    return getattr(ct.ComputeUnit, coreml_unit_name(units))


def require_macos(system: str | None = None) -> None:
    """Raise the one-line error for --device mac off macOS."""
    system = system or platform.system()
    if system != "Darwin":
        raise UserError(f"--device mac needs macOS (Core ML predictions run only there; this is {system}): "
                        "run it on a Mac, or use --device host here")


def _sysctl(key: str) -> str | None:
    try:
        out = subprocess.run(["sysctl", "-n", key], capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def mac_device(model: str | None = None, soc: str | None = None, version: str | None = None) -> dict:
    """Device block for this Mac (model identifier, Apple silicon name, macOS version)."""
    dev = host_device("mac")
    model = model or _sysctl("hw.model") or dev["model"]
    soc = soc or _sysctl("machdep.cpu.brand_string")
    return {**dev, "model": model, "os": "macOS", "os_version": version or platform.mac_ver()[0] or dev["os_version"],
            "cpu": soc or dev["cpu"], "soc": soc}


def summarise_plan(ops: Iterable[tuple[str, str | None]]) -> dict:
    """{op type: {preferred device: count}} from (op type, device class name) pairs."""
    names = {"MLCPUComputeDevice": "cpu", "MLGPUComputeDevice": "gpu", "MLNeuralEngineComputeDevice": "neural_engine"}
    counts: dict[str, Counter] = {}
    for op, dev in ops:
        counts.setdefault(op, Counter())[names.get(dev or "", "unknown")] += 1
    return {op: dict(c) for op, c in sorted(counts.items())}


def compute_plan(mlpackage: Path, units: str) -> dict | None:  # pragma: no cover - macOS only
    """MLComputePlan of the compiled model: preferred device per op type (None if unavailable)."""
    try:
        import coremltools as ct
        from coremltools.models.compute_plan import MLComputePlan

        model = ct.models.MLModel(str(mlpackage), compute_units=coreml_compute_unit(units))
        plan = MLComputePlan.load_from_path(model.get_compiled_model_path(), coreml_compute_unit(units))
        program = plan.model_structure.program
        if program is None:
            return None
        ops = []
        for op in program.functions["main"].block.operations:
            usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
            dev = type(usage.preferred_compute_device).__name__ if usage else None
            ops.append((op.operator_name, dev))
        return summarise_plan(ops)
    except Exception:  # noqa: BLE001  the plan is informative only
        return None


def plan_coreml(artifact: Path, family: str, inputs, units: tuple[str, ...], threads: int, warmup: int,
                iters: int, sha256: str | None = None, notes: list[str] | None = None) -> list[Planned]:
    """One Core ML job per compute-unit set."""
    planned = []
    for cu in units:
        coreml_unit_name(cu)
        job = Job(f"student/coreml-{cu}", "coreml", family, str(artifact), inputs.latents, warmup, iters, threads,
                  compute_units=cu)
        planned.append(Planned(job, "student", inputs.width, inputs.height, inputs.preset, artifact=artifact,
                               artifact_sha256=sha256, notes=list(notes or [])))
    return planned


def bench_mac(opts: BenchOptions) -> dict:  # prediction paths: macOS only
    """Core ML predictions of the student (ARTIFACT or a fresh export) per compute-unit set, optionally vs teacher."""
    require_macos()
    import torch

    from turbo_vaed.bench import host

    console = host.console_for(opts)
    threads = opts.threads or torch.get_num_threads()
    units = tuple(dict.fromkeys(opts.compute_units)) or ("all",)
    for cu in units:
        coreml_unit_name(cu)
    bad = [r for r in opts.runtimes if r != "coreml"]
    if bad:
        raise UserError(f"--device mac runs Core ML only; --runtime {bad[0]} is a --device host runtime")
    if opts.artifact is not None:
        artifact = Path(opts.artifact)
        if host.runtime_of(artifact) != "coreml":
            raise UserError(f"--device mac benches .mlpackage artifacts, not {artifact.name}: use --device host")
        m = host.read_manifest(artifact)
        family = m["family"]
        inputs = host.artifact_inputs(artifact, m, opts.latents)
        planned = plan_coreml(artifact, family, inputs, units, threads, opts.warmup, opts.iters, m.get("sha256"))
    else:
        family = host.bench_family(opts)
        inputs = host.host_inputs(opts, family)
        student, ckpt, notes = host._resolve_student(family, opts, console)
        ckpt = host.student_checkpoint(student, opts.out_dir, f"{family}-student" + ("-random" if notes else ""),
                                       ckpt)
        artifact = host.export_for("coreml", student, ckpt, family, inputs, opts.out_dir, console)
        planned = plan_coreml(artifact, family, inputs, units, threads, opts.warmup, opts.iters, notes=notes)
    if opts.vs_teacher:
        src, folder, note = host.teacher_source(opts.teacher, family)
        planned.append(host.plan_teacher(src, folder, note, family, inputs, threads,
                                         int(opts.extra.get("teacher_warmup", opts.warmup)),
                                         int(opts.extra.get("teacher_iters", opts.iters))))
    raws = run_planned(planned, console, isolate=opts.isolate)
    device = mac_device()
    results = []
    for p, raw in zip(planned, raws, strict=True):
        if p.job.runtime == "coreml":
            raw["compute_plan"] = compute_plan(Path(p.job.source), p.job.compute_units or "all")
        results.append(result_entry(p, raw, device))
    return make_doc(results, teacher_comparisons(results))
