"""``turbovaed bench --suite``: the standard host table and ``BENCHMARKS.md``.

Every family x host runtime at 256p and 480p, then 720p on each family's fastest runtime (at the
largest of those); the teacher (default diffusers config, random weights: speed does not depend on
weights) at 256p with one counted iteration. Students are the ``models/<family>.json`` configs
(random weights unless ``--checkpoint``). Targets are checked on ratios measured in this one run.

Limits for small runs (``opts.extra``): ``suite_families``, ``suite_res`` (resolutions for every
runtime), ``suite_fast_res`` (for the fastest runtime only; default 720p, skipped when
``suite_res`` is given), ``suite_teacher_res`` (default 256p), ``report_path``.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path

from turbo_vaed.bench.options import BenchOptions
from turbo_vaed.errors import UserError
from turbo_vaed.families import FAMILIES, get_family
from turbo_vaed.fileio import write_bytes

TARGET_RATIOS = {"hunyuan": 10.0, "cogvideox": 14.0, "ltx": 4.0, "wan": 5.0}
TARGET_FPS_480P = 2.0
DEFAULT_RES = ("256p", "480p")
DEFAULT_FAST_RES = ("720p",)
DEFAULT_TEACHER_RES = ("256p",)


@dataclass
class SuitePlan:
    families: tuple[str, ...]
    resolutions: tuple[str, ...]
    fast_resolutions: tuple[str, ...]
    teacher_resolutions: tuple[str, ...]
    out_dir: Path
    report_path: Path
    runs: list[dict] = field(default_factory=list)  # {"family", "res", "path", "doc"}


def plan_suite(opts: BenchOptions) -> SuitePlan:
    """What the suite will run, from ``opts`` (``--family`` limits the families)."""
    x = opts.extra
    fams = tuple(x.get("suite_families") or ([opts.family] if opts.family else FAMILIES))
    for f in fams:
        get_family(f)
    res = tuple(x.get("suite_res") or DEFAULT_RES)
    fast = tuple(x.get("suite_fast_res", () if x.get("suite_res") else DEFAULT_FAST_RES))
    if opts.artifact is not None:
        raise UserError("--suite exports its own artifacts: drop the ARTIFACT argument")
    if opts.checkpoint is not None and len(fams) > 1:
        raise UserError("--checkpoint applies to one family: pass --family with --suite --checkpoint")
    out = Path(opts.out_dir)
    return SuitePlan(fams, res, fast, tuple(x.get("suite_teacher_res", DEFAULT_TEACHER_RES)), out,
                     Path(x.get("report_path") or out / "BENCHMARKS.md"))


def _teacher_for(opts: BenchOptions, family: str) -> str:
    """A --teacher folder of this family is used; otherwise the default config with random weights."""
    if opts.teacher not in ("reference", "random"):
        cfg = Path(opts.teacher) / "config.json"
        if cfg.is_file():
            from turbo_vaed.teachers import family_of_class

            if family_of_class(json.loads(cfg.read_text()).get("_class_name", "")) == family:
                return opts.teacher
    return "random"


def chunk_latent_frames(runtime: str, res: str, requested: int) -> int:
    """Latent frames for a large-preset run: the export preset's chunk for ``runtime`` at ``res``, at most
    ``requested`` (a phone decodes 720p in chunks; a whole 3-frame 720p decode in fp32 can exhaust RAM)."""
    from turbo_vaed.bench.options import EXPORT_TARGET
    from turbo_vaed.exporters.presets import load_preset, resolve_latent_frames

    target = EXPORT_TARGET.get(runtime, ("onnx",))[0]
    return min(requested, resolve_latent_frames(None, load_preset(target), res))


def _bench_one(opts: BenchOptions, plan: SuitePlan, family: str, res: str, runtimes: tuple[str, ...],
               fast: bool = False) -> dict:
    from turbo_vaed.bench.host import bench_host
    from turbo_vaed.bench.report import print_results
    from turbo_vaed.jsonio import write_json

    if fast:  # the fastest runtime at the large presets decodes one preset chunk, as the exported app would
        opts = replace(opts, latent_frames=chunk_latent_frames(runtimes[0], res, opts.latent_frames))
    sub = replace(opts, family=family, res=res, runtimes=runtimes, vs_teacher=res in plan.teacher_resolutions,
                  teacher=_teacher_for(opts, family), json_path=None, artifact=None, out_dir=plan.out_dir / "artifacts",
                  extra={"teacher_warmup": 0, "teacher_iters": 1, **opts.extra})
    doc = bench_host(sub)
    path = write_json(plan.out_dir / "json" / f"{family}-{res}{'-fast' if fast else ''}.json", doc)
    print_results(doc, title=f"{family} {res}", console=opts.extra.get("console"))
    plan.runs.append({"family": family, "res": res, "fast": fast, "path": str(path), "doc": doc})
    return doc


def fastest_runtime(doc: dict) -> str:
    """The student runtime with the lowest p50 in a results document."""
    students = [r for r in doc["results"] if r["model"]["decoder"] == "student"]
    return min(students, key=lambda r: r["latency_ms"]["p50"])["runtime"]["name"]


def run_suite(opts: BenchOptions) -> dict:
    """Run the standard table, write one JSON per run plus BENCHMARKS.md; returns the targets summary."""
    from turbo_vaed.bench.host import HOST_RUNTIMES, console_for

    plan = plan_suite(opts)
    console = console_for(opts)
    opts = replace(opts, extra={**opts.extra, "console": console})
    runtimes = tuple(opts.runtimes) or HOST_RUNTIMES
    load_before = _loadavg()
    console.print(f"suite: {', '.join(plan.families)} x {', '.join(runtimes)} at {', '.join(plan.resolutions)}"
                  + (f"; fastest runtime at {', '.join(plan.fast_resolutions)}" if plan.fast_resolutions else "")
                  + f"; teacher at {', '.join(plan.teacher_resolutions) or 'none'} -> {plan.out_dir}")
    for fam in plan.families:
        last = None
        for res in plan.resolutions:
            last = _bench_one(opts, plan, fam, res, runtimes)
        if last is not None and plan.fast_resolutions:
            best = fastest_runtime(last)
            for res in plan.fast_resolutions:
                _bench_one(opts, plan, fam, res, (best,), fast=True)
    summary = check_targets(plan.runs, plan.teacher_resolutions[0] if plan.teacher_resolutions else "256p",
                            str(opts.extra.get("suite_fps_res", "480p")))
    summary["load_average"] = {"before": load_before, "after": _loadavg()}
    from turbo_vaed.jsonio import write_json

    write_json(plan.out_dir / "json" / "summary.json", {k: v for k, v in summary.items()})
    text = render_markdown(plan, summary, opts)
    write_bytes(plan.report_path, text.encode())
    for line in summary_lines(summary):
        console.print(line)
    console.print(f"wrote {plan.report_path} and {len(plan.runs)} JSON files in {plan.out_dir / 'json'}")
    return summary


# ---------------------------------------------------------------- targets


def _students(doc: dict) -> list[dict]:
    return [r for r in doc["results"] if r["model"]["decoder"] == "student"]


def check_targets(runs: list[dict], ratio_res: str = "256p", fps_res: str = "480p") -> dict:
    """The issue's targets from the runs of one suite; a target with no measurement is ``None`` (not run)."""
    ratios, lowered, fps480 = [], [], []
    for run in runs:
        doc, fam, res = run["doc"], run["family"], run["res"]
        studs = _students(doc)
        teacher = next((r for r in doc["results"] if r["model"]["decoder"] == "teacher"), None)
        if teacher and res == ratio_res and studs and not run.get("fast"):
            best = min(studs, key=lambda r: r["latency_ms"]["p50"])
            ratio = teacher["latency_ms"]["p50"] / best["latency_ms"]["p50"]
            tgt = TARGET_RATIOS[fam]
            ratios.append({"family": fam, "teacher_p50_ms": teacher["latency_ms"]["p50"],
                           "student_runtime": best["runtime"]["name"], "student_p50_ms": best["latency_ms"]["p50"],
                           "ratio": ratio, "target": tgt, "passed": ratio >= tgt})
        by_rt = {r["runtime"]["name"]: r["latency_ms"]["p50"] for r in studs}
        graph = {k: v for k, v in by_rt.items() if k in ("onnxruntime", "executorch")}
        if "torch" in by_rt and graph:
            rt = min(graph, key=graph.get)
            lowered.append({"family": fam, "res": res, "torch_p50_ms": by_rt["torch"], "runtime": rt,
                            "p50_ms": graph[rt], "speedup": by_rt["torch"] / graph[rt],
                            "passed": graph[rt] < by_rt["torch"]})
        if res == fps_res and studs and not run.get("fast"):
            best = max(studs, key=lambda r: r["fps"])
            fps480.append({"family": fam, "runtime": best["runtime"]["name"], "fps": best["fps"]})
    best480 = max(fps480, key=lambda r: r["fps"]) if fps480 else None
    return {
        "ratios": ratios,
        "lowered_vs_eager": lowered,
        "fps_480p": fps480,
        "fps_480p_best": best480,
        "ratio_res": ratio_res,
        "fps_res": fps_res,
        "passed": {
            "ratios": all(r["passed"] for r in ratios) if ratios else None,
            "lowered_vs_eager": all(r["passed"] for r in lowered) if lowered else None,
            "fps_480p": best480["fps"] >= TARGET_FPS_480P if best480 else None,
        },
    }


def summary_lines(s: dict) -> list[str]:
    out = []
    for r in s["ratios"]:
        out.append(f"{r['family']}: student/{r['student_runtime']} {r['ratio']:.1f}x faster than the teacher "
                   f"at {s['ratio_res']} "
                   f"(target >= {r['target']:g}x): {'PASS' if r['passed'] else 'MISS'}")
    for r in s["lowered_vs_eager"]:
        out.append(f"{r['family']} {r['res']}: {r['runtime']} {r['p50_ms']:.1f} ms vs torch eager "
                   f"{r['torch_p50_ms']:.1f} ms ({r['speedup']:.2f}x): {'PASS' if r['passed'] else 'MISS'}")
    b = s["fps_480p_best"]
    if b:
        out.append(f"{s['fps_res']} fastest: {b['family']} on {b['runtime']} at {b['fps']:.2f} FPS (target >= "
                   f"{TARGET_FPS_480P:g}): {'PASS' if b['fps'] >= TARGET_FPS_480P else 'MISS'}")
    return out


# ---------------------------------------------------------------- BENCHMARKS.md


def reproduce_command(plan: SuitePlan, opts: BenchOptions, threads: int | None) -> str:
    """The command line that reruns this suite."""
    cmd = ["turbovaed", "bench", "--suite"]
    if len(plan.families) == 1:
        cmd += ["--family", plan.families[0]]
    if plan.resolutions != DEFAULT_RES:
        for r in plan.resolutions:
            cmd += ["--suite-res", r]
    for r in opts.runtimes:
        cmd += ["--runtime", r]
    if opts.checkpoint is not None:
        cmd += ["--checkpoint", str(opts.checkpoint)]
    if opts.teacher not in ("reference", "random"):
        cmd += ["--teacher", str(opts.teacher)]
    if opts.latent_frames != 3:
        cmd += ["--latent-frames", str(opts.latent_frames)]
    cmd += ["--threads", str(threads), "--warmup", str(opts.warmup), "--iters", str(opts.iters),
            "--out", str(plan.out_dir)]
    return " ".join(cmd)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("turbovaed", "torch", "diffusers", "onnxruntime", "onnx", "executorch", "coremltools", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _mark(ok: bool | None) -> str:
    return "not measured" if ok is None else ("PASS" if ok else "MISS")


def render_markdown(plan: SuitePlan, s: dict, opts: BenchOptions) -> str:
    """BENCHMARKS.md: machine, versions, table, targets, how to reproduce."""
    first = plan.runs[0]["doc"]["results"][0] if plan.runs else None
    dev = first["device"] if first else {}
    threads = first["runtime"]["threads"] if first else None
    lines = ["# Benchmarks", "",
             f"Generated by `turbovaed bench --suite` on {plan.runs[-1]['doc']['created'] if plan.runs else '-'}.",
             "", "## Machine", "",
             f"- CPU: {dev.get('cpu') or dev.get('model', '-')} ({dev.get('cpu_count', '-')} logical cores), "
             f"{(dev.get('memory_bytes') or 0) / 2**30:.1f} GiB RAM, {dev.get('os', '-')} {dev.get('os_version', '-')}",
             f"- threads per runtime: {threads}; load average (1/5/15 min) before {s['load_average']['before']}, "
             f"after {s['load_average']['after']} (the machine may be shared: compare ratios within this run)",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()),
             "", "## Method", "",
             f"- cold start = load + first run; then {opts.warmup} warm-up and {opts.iters} counted runs per student "
             "runtime (the teacher: 0 warm-up, 1 counted run after its first run); latency p50/p90 over counted runs;",
             f"- FPS = output frames / p50 seconds; {opts.latent_frames} latent frames per decode "
             f"({get_family('wan').frames_out(opts.latent_frames)} output frames, "
             f"{get_family('ltx').frames_out(opts.latent_frames)} for LTX); fp32 throughout;",
             "- each runtime runs in a fresh process: peak memory is that process's peak resident set (VmHWM), "
             "which includes Python and the runtime libraries;",
             "- the fastest-runtime rows at the large presets (720p) decode one export-preset chunk "
             "(`[latent_frames]` in `export/<target>.toml`, e.g. 2 latent frames at 720p), as the phone apps do;",
             (f"- student: `{opts.checkpoint}`" if opts.checkpoint else
              "- students: `models/<family>.json` with random weights") +
             ("; teachers: the diffusers default config with random weights" if opts.teacher in ("reference", "random")
              else f"; teacher: `{opts.teacher}` for its family, else the diffusers default config with random weights")
             + f" (speed does not depend on weight values); artifacts exported by the run into "
             f"`{plan.out_dir / 'artifacts'}`.", "",
             "## Results", "",
             "| family | preset | size | runtime | decoder | frames | load ms | first ms | p50 ms | p90 ms | FPS | "
             "peak MB | artifact MB |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in plan.runs:
        for r in run["doc"]["results"]:
            m, lat = r["model"], r["latency_ms"]
            size = m.get("artifact_bytes")
            lines.append(
                f"| {m['family']} | {run['res']} | {m['width']}x{m['height']} | {r['runtime']['name']} | "
                f"{m['decoder']} | {m['output_frames']} | {r['cold_start']['load_ms']:.0f} | "
                f"{r['cold_start']['first_run_ms']:.0f} | {lat['p50']:.1f} | {lat['p90']:.1f} | {r['fps']:.2f} | "
                f"{(r.get('peak_memory_bytes') or 0) / 2**20:.0f} | {f'{size / 2**20:.2f}' if size else '-'} |")
    lines += ["", f"## Targets (ratios measured in this run, teacher vs. best student at {s['ratio_res']})", "",
              "| family | teacher p50 ms | best student runtime | student p50 ms | ratio | target | |",
              "|---|---:|---|---:|---:|---:|---|"]
    for r in s["ratios"]:
        lines.append(f"| {r['family']} | {r['teacher_p50_ms']:.0f} | {r['student_runtime']} | "
                     f"{r['student_p50_ms']:.1f} | {r['ratio']:.1f}x | >= {r['target']:g}x | {_mark(r['passed'])} |")
    if not s["ratios"]:
        lines.append("| - | not measured in this run | | | | | |")
    lines += ["", "Lowered graph (ONNX Runtime or ExecuTorch, the faster) vs. PyTorch eager student, p50 "
              "(the target holds when every row passes):", "",
              "| family | preset | torch ms | runtime | ms | speedup | |", "|---|---|---:|---|---:|---:|---|"]
    for r in s["lowered_vs_eager"]:
        lines.append(f"| {r['family']} | {r['res']} | {r['torch_p50_ms']:.1f} | {r['runtime']} | {r['p50_ms']:.1f} "
                     f"| {r['speedup']:.2f}x | {_mark(r['passed'])} |")
    b = s["fps_480p_best"]
    lines += ["", f"{s['fps_res']} decode, fastest family: "
              + (f"{b['family']} on {b['runtime']}, {b['fps']:.2f} FPS (target >= {TARGET_FPS_480P:g}): "
                 f"{_mark(b['fps'] >= TARGET_FPS_480P)}" if b else "not measured in this run"), "",
              "Summary: " + ", ".join(f"{k} {_mark(v)}" for k, v in s["passed"].items()), "",
              "## Reproduce", "", "```",
              reproduce_command(plan, opts, threads), "```", "",
              f"Raw results (turbovaed.bench/1): `{plan.out_dir / 'json'}`; one file per family and preset, "
              "`-fast` for the fastest runtime at 720p; `summary.json` holds the targets check.", ""]
    return "\n".join(lines)
