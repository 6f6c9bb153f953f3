"""``turbovaed bench --suite``: the standard host table and ``BENCHMARKS.md``.

Every family x host runtime at 256p and 480p, then 720p on each decoder's fastest runtime (at the
largest of those); the teacher (default diffusers config, random weights: speed does not depend on
weights) at 256p with one counted iteration. Targets are checked on ratios measured in this one run.

Decoders (``--decoders``, default ``student,turbo-vaed``): ``student`` is the project's student
(``models/<family>.json``, random weights unless ``--checkpoint``); any other name is a decoder
architecture with full-size configs, benchmarked with seed-0 random weights for every family it has one
for (:func:`full_size_configs`: the architecture's ``full_size_config(family)`` method, else the data
files ``models/<arch>/*.json``, each config naming its family). The teacher is measured once per family,
in the run of the first decoder listed for it; a family without a teacher (dcae) gets decoder rows only.
A new architecture joins the suite with data alone.

Limits for small runs (``opts.extra``): ``suite_families``, ``suite_res`` (resolutions for every
runtime), ``suite_fast_res`` (for the fastest runtime only; default 720p, skipped when
``suite_res`` is given), ``suite_teacher_res`` (default 256p), ``suite_decoders`` (comma list),
``suite_configs`` (``{decoder: {family: config dict}}`` replacing the full-size configs), ``report_path``.
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
STUDENT = "student"  # the project's own student
DEFAULT_DECODERS = (STUDENT, "turbo-vaed")
PREFERRED_ORDER = ("turbo-vaed", "taehv", "flash-vaed")  # released architectures, in this order when listed
TARGET_FPS_480P = 2.0
DEFAULT_RES = ("256p", "480p")
DEFAULT_FAST_RES = ("720p",)
DEFAULT_TEACHER_RES = ("256p",)


# ---------------------------------------------------------------- decoders


def released_architectures() -> list[str]:
    """Registered architectures other than the project's student that ship full-size configs."""
    from turbo_vaed.config import MODELS_DIR
    from turbo_vaed.decoders import architectures

    names = [n for n, a in architectures().items() if n != STUDENT
             and (callable(getattr(a, "full_size_config", None)) or any((MODELS_DIR / n).glob("*.json")))]
    return sorted(names, key=lambda n: (PREFERRED_ORDER.index(n) if n in PREFERRED_ORDER else len(PREFERRED_ORDER),
                                        n))


def full_size_configs(decoder: str) -> dict[str, dict]:
    """``{family: config dict}`` of the full-size decoders of ``decoder`` (``student`` or an architecture name).

    ``student``: ``models/<family>.json``. An architecture: its ``full_size_config(family)`` method where it has
    one, else every ``models/<arch>/*.json`` (the family read from each config; the first file per family wins).
    """
    import json

    from turbo_vaed.config import MODELS_DIR, load_student_config, student_families
    from turbo_vaed.decoders import get_architecture

    if decoder == STUDENT:
        return {f: load_student_config(f).to_dict() for f in student_families()}
    arch = get_architecture(decoder)
    method = getattr(arch, "full_size_config", None)
    out: dict[str, dict] = {}
    if callable(method):
        for fam in FAMILIES:
            d = method(fam)
            if d is not None:
                out[fam] = d
        return out
    for path in sorted((MODELS_DIR / decoder).glob("*.json")):
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read the {decoder} config {path} ({type(e).__name__}): reinstall turbovaed") \
                from None
        out.setdefault(arch.family(arch.config_from_dict(d)), d)
    return out


def parse_decoders(text: str | list | tuple | None) -> tuple[str, ...]:
    """``--decoders student,turbo-vaed,...`` as a tuple (order kept, duplicates dropped); one-line errors."""
    items = text.split(",") if isinstance(text, str) else list(text or DEFAULT_DECODERS)
    names = tuple(dict.fromkeys(str(i).strip() for i in items if str(i).strip()))
    choices = (STUDENT, *released_architectures())
    if not names:
        raise UserError(f"--decoders is empty: pass a comma list of {', '.join(choices)}")
    for n in names:
        if n not in choices:
            from turbo_vaed.decoders import architectures

            why = (f"'{n}' ships no full-size configs (models/{n}/*.json)" if n in architectures()
                   else f"unknown decoder '{n}'")
            raise UserError(f"--decoders: {why}: choose from {', '.join(choices)}")
    return names


@dataclass
class SuitePlan:
    families: tuple[str, ...]
    resolutions: tuple[str, ...]
    fast_resolutions: tuple[str, ...]
    teacher_resolutions: tuple[str, ...]
    out_dir: Path
    report_path: Path
    runs: list[dict] = field(default_factory=list)  # {"family", "res", "decoder", "fast", "path", "doc"}
    decoders: tuple[str, ...] = (STUDENT,)
    configs: dict[str, dict[str, dict]] = field(default_factory=dict)  # decoder -> family -> config dict
    checkpoint_decoder: str | None = None  # the decoder --checkpoint replaces

    def decoders_for(self, family: str) -> list[str]:
        """The decoders benchmarked for ``family``, in --decoders order."""
        return [d for d in self.decoders if family in self.configs.get(d, {}) or d == self.checkpoint_decoder]


def plan_suite(opts: BenchOptions) -> SuitePlan:
    """What the suite will run, from ``opts`` (``--family`` limits the families)."""
    x = opts.extra
    decoders = parse_decoders(x.get("suite_decoders"))
    if opts.artifact is not None:
        raise UserError("--suite exports its own artifacts: drop the ARTIFACT argument")
    configs = {d: dict(full_size_configs(d)) for d in decoders}
    for d, by_family in (x.get("suite_configs") or {}).items():
        configs.setdefault(d, {}).update(by_family)
    ck_decoder = None
    if opts.checkpoint is not None:
        from turbo_vaed.decoders.store import read_header, resolve_builtin

        ck = str(opts.checkpoint)
        ck_decoder = read_header(resolve_builtin(ck) if ck.startswith("builtin:") else ck)[0]
        if ck_decoder not in decoders:
            raise UserError(f"--checkpoint {ck} is a {ck_decoder} decoder: include {ck_decoder} in --decoders")
    if x.get("suite_families") or opts.family:
        fams = tuple(x.get("suite_families") or [opts.family])
    else:
        fams = tuple(f for f in FAMILIES if any(f in configs[d] for d in decoders))
    for f in fams:
        get_family(f)
        if not any(f in configs[d] for d in decoders) and ck_decoder is None:
            raise UserError(f"no decoder of --decoders {','.join(decoders)} has a {f} config: pass another --family "
                            "or --decoders")
    res = tuple(x.get("suite_res") or DEFAULT_RES)
    fast = tuple(x.get("suite_fast_res", () if x.get("suite_res") else DEFAULT_FAST_RES))
    if opts.checkpoint is not None and len(fams) > 1:
        raise UserError("--checkpoint applies to one family: pass --family with --suite --checkpoint")
    out = Path(opts.out_dir)
    return SuitePlan(fams, res, fast, tuple(x.get("suite_teacher_res", DEFAULT_TEACHER_RES)), out,
                     Path(x.get("report_path") or out / "BENCHMARKS.md"), decoders=decoders, configs=configs,
                     checkpoint_decoder=ck_decoder)


def random_checkpoint(decoder: str, family: str, cfg: dict, folder: Path) -> Path:
    """A seed-0 random ``decoder`` built from ``cfg``, saved as ``folder/<family>-<decoder>-random.safetensors``
    (kept when a file with that config is already there: seed-0 weights are the same)."""
    from turbo_vaed.decoders import get_architecture
    from turbo_vaed.decoders.store import random_decoder, read_header, save_decoder

    arch = get_architecture(decoder)
    want = arch.config_to_dict(arch.config_from_dict(cfg))
    path = Path(folder) / f"{family}-{decoder}-random.safetensors"
    if path.is_file():
        try:
            have_arch, have, prov = read_header(path)
            if have_arch == arch.name and have == want and prov.get("random_seed") == 0:
                return path
        except UserError:
            pass
    dec = random_decoder(decoder, cfg)
    dec.provenance = {"random_seed": 0, "note": f"random weights for speed runs ({decoder}, {family})"}
    return save_decoder(dec, path)


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


def _suite_checkpoint(opts: BenchOptions, plan: SuitePlan, decoder: str, family: str) -> Path | None:
    """The checkpoint a decoder's runs load: --checkpoint for its decoder, the project student's default (None),
    or a saved seed-0 random decoder of the full-size (or ``suite_configs``) config."""
    if decoder == plan.checkpoint_decoder:
        return Path(opts.checkpoint)
    if decoder == STUDENT and not (opts.extra.get("suite_configs") or {}).get(STUDENT, {}).get(family):
        return None  # bench_host's own: models/<family>.json, random weights (said in the results)
    return random_checkpoint(decoder, family, plan.configs[decoder][family], plan.out_dir / "decoders")


def _relabel(doc: dict, decoder: str, note: str | None) -> dict:
    """Results of a released decoder: labels ``<decoder>/<runtime>`` (the teacher's stay), the note added."""
    from turbo_vaed.bench.schema import validate_results

    if decoder == STUDENT and not note:
        return doc
    names = {}
    for r in doc["results"]:
        if r["model"]["decoder"] != "student":
            continue
        if decoder != STUDENT:
            names[r["label"]] = f"{decoder}/{r['runtime']['name']}"
            r["label"] = names[r["label"]]
        if note:
            r["notes"] = "; ".join(x for x in (note, r.get("notes")) if x)
    for c in doc.get("comparisons", []):
        c["candidate"] = names.get(c["candidate"], c["candidate"])
    return validate_results(doc, "bench results")


def _bench_one(opts: BenchOptions, plan: SuitePlan, family: str, res: str, runtimes: tuple[str, ...],
               fast: bool = False, decoder: str = STUDENT, checkpoint: Path | None = None,
               with_teacher: bool = True) -> dict:
    from turbo_vaed.bench.host import bench_host
    from turbo_vaed.bench.report import print_results
    from turbo_vaed.jsonio import write_json

    if fast:  # the fastest runtime at the large presets decodes one preset chunk, as the exported app would
        opts = replace(opts, latent_frames=chunk_latent_frames(runtimes[0], res, opts.latent_frames))
    teacher = with_teacher and res in plan.teacher_resolutions and get_family(family).has_teacher
    sub = replace(opts, family=family, res=res, runtimes=runtimes, vs_teacher=teacher, checkpoint=checkpoint,
                  teacher=_teacher_for(opts, family), json_path=None, artifact=None, out_dir=plan.out_dir / "artifacts",
                  extra={"teacher_warmup": 0, "teacher_iters": 1, **opts.extra})
    doc = bench_host(sub)
    note = None
    if decoder != STUDENT and decoder != plan.checkpoint_decoder:
        note = f"{decoder}: full-size config, random weights (seed 0; speed only)"
    doc = _relabel(doc, decoder, note)
    tag = "" if decoder == STUDENT else f"-{decoder}"
    path = write_json(plan.out_dir / "json" / f"{family}{tag}-{res}{'-fast' if fast else ''}.json", doc)
    print_results(doc, title=f"{family} {decoder} {res}", console=opts.extra.get("console"))
    plan.runs.append({"family": family, "res": res, "fast": fast, "decoder": decoder, "path": str(path), "doc": doc})
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
                  + f"; teacher at {', '.join(plan.teacher_resolutions) or 'none'}; decoders "
                  f"{', '.join(plan.decoders)} -> {plan.out_dir}")
    for fam in plan.families:
        decs = plan.decoders_for(fam)
        if not get_family(fam).has_teacher:
            console.print(f"note: {fam} has no teacher in diffusers 0.42: its decoders are benchmarked without a "
                          "teacher comparison", highlight=False)
        for i, dec in enumerate(decs):
            ck = _suite_checkpoint(opts, plan, dec, fam)
            last = None
            for res in plan.resolutions:
                last = _bench_one(opts, plan, fam, res, runtimes, decoder=dec, checkpoint=ck, with_teacher=i == 0)
            if last is not None and plan.fast_resolutions:
                best = fastest_runtime(last)
                for res in plan.fast_resolutions:
                    _bench_one(opts, plan, fam, res, (best,), fast=True, decoder=dec, checkpoint=ck,
                               with_teacher=i == 0)
    summary = check_targets(plan.runs, plan.teacher_resolutions[0] if plan.teacher_resolutions else "256p",
                            str(opts.extra.get("suite_fps_res", "480p")))
    summary["load_average"] = {"before": load_before, "after": _loadavg()}
    summary["decoder_facts"] = decoder_facts(plan, opts)
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
    """The issue's targets from the runs of one suite; a target with no measurement is ``None`` (not run).

    The targets are the project student's (runs without a ``decoder`` are its). ``decoders`` compares every
    decoder's best runtime with the teacher and the project student of the same family and preset.
    """
    teachers: dict[tuple[str, str], float] = {}
    best: dict[tuple[str, str, str], dict] = {}  # (decoder, family, res) -> fastest student result
    for run in runs:
        if run.get("fast"):
            continue
        t = next((r for r in run["doc"]["results"] if r["model"]["decoder"] == "teacher"), None)
        if t is not None:
            teachers[(run["family"], run["res"])] = t["latency_ms"]["p50"]
        studs = _students(run["doc"])
        if studs:
            best[(run.get("decoder", STUDENT), run["family"], run["res"])] = min(
                studs, key=lambda r: r["latency_ms"]["p50"])
    ratios, lowered, fps480, decoders = [], [], [], []
    for run in runs:
        doc, fam, res, dec = run["doc"], run["family"], run["res"], run.get("decoder", STUDENT)
        studs = _students(doc)
        if not studs:
            continue
        fastest = min(studs, key=lambda r: r["latency_ms"]["p50"])
        t50 = None if run.get("fast") else teachers.get((fam, res))
        s_best = None if run.get("fast") else best.get((STUDENT, fam, res))
        decoders.append({
            "family": fam, "decoder": dec, "res": res, "fast": bool(run.get("fast")),
            "runtime": fastest["runtime"]["name"], "p50_ms": fastest["latency_ms"]["p50"], "fps": fastest["fps"],
            "output_frames": fastest["model"].get("output_frames"),
            "teacher_p50_ms": t50, "vs_teacher": t50 / fastest["latency_ms"]["p50"] if t50 else None,
            "student_p50_ms": s_best["latency_ms"]["p50"] if s_best and dec != STUDENT else None,
            "vs_student": (s_best["latency_ms"]["p50"] / fastest["latency_ms"]["p50"])
            if s_best and dec != STUDENT else None,
        })
        if dec != STUDENT:
            continue
        if t50 is not None and res == ratio_res and fam in TARGET_RATIOS:
            ratio = t50 / fastest["latency_ms"]["p50"]
            tgt = TARGET_RATIOS[fam]
            ratios.append({"family": fam, "teacher_p50_ms": t50, "student_runtime": fastest["runtime"]["name"],
                           "student_p50_ms": fastest["latency_ms"]["p50"], "ratio": ratio, "target": tgt,
                           "passed": ratio >= tgt})
        by_rt = {r["runtime"]["name"]: r["latency_ms"]["p50"] for r in studs}
        graph = {k: v for k, v in by_rt.items() if k in ("onnxruntime", "executorch")}
        if "torch" in by_rt and graph:
            rt = min(graph, key=graph.get)
            lowered.append({"family": fam, "res": res, "torch_p50_ms": by_rt["torch"], "runtime": rt,
                            "p50_ms": graph[rt], "speedup": by_rt["torch"] / graph[rt],
                            "passed": graph[rt] < by_rt["torch"]})
        if res == fps_res and not run.get("fast"):
            top = max(studs, key=lambda r: r["fps"])
            fps480.append({"family": fam, "runtime": top["runtime"]["name"], "fps": top["fps"]})
    best480 = max(fps480, key=lambda r: r["fps"]) if fps480 else None
    return {
        "ratios": ratios,
        "lowered_vs_eager": lowered,
        "fps_480p": fps480,
        "fps_480p_best": best480,
        "decoders": decoders,
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
    for r in s.get("decoders", []):
        if r["decoder"] == STUDENT:
            continue
        vs = [f"{r['vs_teacher']:.1f}x faster than the teacher" if r["vs_teacher"] else None,
              f"{r['vs_student']:.2f}x the project student's speed" if r["vs_student"] else None]
        out.append(f"{r['family']} {r['decoder']} {r['res']}{' (fast)' if r['fast'] else ''}: {r['runtime']} "
                   f"{r['p50_ms']:.1f} ms, {r['fps']:.2f} FPS" + "".join(f"; {v}" for v in vs if v))
    return out


# ---------------------------------------------------------------- parameters and FLOPs


def _meta_decoder(opts: BenchOptions, plan: SuitePlan, decoder: str, family: str):
    """The decoder a run measured, built on the meta device (config only)."""
    from turbo_vaed.decoders.store import random_decoder, read_header, resolve_builtin

    if decoder == plan.checkpoint_decoder:
        ck = str(opts.checkpoint)
        arch, cfg, _ = read_header(resolve_builtin(ck) if ck.startswith("builtin:") else ck)
    elif decoder in plan.configs and family in plan.configs[decoder]:
        arch, cfg = decoder, plan.configs[decoder][family]
    else:
        from turbo_vaed.config import load_student_config

        arch, cfg = STUDENT, load_student_config(family).to_dict()
    import torch

    with torch.device("meta"):
        return random_decoder(arch, cfg)


def _meta_teacher(opts: BenchOptions, family: str):
    import warnings

    import torch

    from turbo_vaed.teachers import load_teacher, teacher_class

    src = _teacher_for(opts, family)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if src == "random":
            return load_teacher(family, None)
        cls = teacher_class(get_family(family))
        return cls.from_config(cls.load_config(src))


def decoder_facts(plan: SuitePlan, opts: BenchOptions) -> list[dict]:
    """Parameters and GFLOPs per output frame (``opts.latent_frames`` latent frames, meta device) of the teacher
    and every decoder of each family, at every preset the suite ran."""
    import torch

    from turbo_vaed.families import resolve_resolution
    from turbo_vaed.flops import count_flops
    from turbo_vaed.teachers import teacher_decoder_parameters

    presets = tuple(dict.fromkeys((*plan.resolutions, *plan.fast_resolutions)))
    t = max(1, int(opts.latent_frames))
    out = []
    for fam in plan.families:
        f = get_family(fam)

        def z(res: str, _f=f) -> torch.Tensor:
            w, h = resolve_resolution(res, _f)
            return torch.zeros(1, _f.latent_channels, t, h // _f.spatial_factor, w // _f.spatial_factor,
                               device="meta")

        entries = []
        if f.has_teacher:
            try:
                vae = _meta_teacher(opts, fam)
                entries.append(("teacher", teacher_decoder_parameters(vae), lambda x, _v=vae: _v.decode(x).sample,
                                f.frames_out(t)))
            except Exception:  # noqa: BLE001  no figures rather than no report
                entries.append(("teacher", None, None, f.frames_out(t)))
        for dec in plan.decoders_for(fam):
            d = _meta_decoder(opts, plan, dec, fam)
            entries.append((dec, d.parameters(), d, d.frames_out(t)))
        for name, params, fn, frames in entries:
            gflops: dict[str, float | None] = {}
            for res in presets:
                try:
                    gflops[res] = count_flops(fn, z(res)) / frames / 1e9 if fn is not None else None
                except Exception:  # noqa: BLE001  a forward that does not run on the meta device
                    gflops[res] = None
            out.append({"family": fam, "decoder": name, "parameters": params, "gflops_per_frame": gflops,
                        "latent_frames": t})
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
    if plan.decoders != DEFAULT_DECODERS:
        cmd += ["--decoders", ",".join(plan.decoders)]
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
    no_teacher = [f for f in plan.families if not get_family(f).has_teacher]
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
             (f"- {plan.checkpoint_decoder}: `{opts.checkpoint}`" if opts.checkpoint else
              "- students: `models/<family>.json` with random weights") +
             "".join(f"; {d}: full-size configs (`models/{d}/`) with random weights" for d in plan.decoders
                     if d not in (STUDENT, plan.checkpoint_decoder)) +
             ("; teachers: the diffusers default config with random weights" if opts.teacher in ("reference", "random")
              else f"; teacher: `{opts.teacher}` for its family, else the diffusers default config with random weights")
             + f" (speed does not depend on weight values); artifacts exported by the run into "
             f"`{plan.out_dir / 'artifacts'}`.",
             *([f"- no teacher for {', '.join(no_teacher)}: diffusers 0.42 has no class for it (Video DC-AE), "
                "so its decoders have no teacher comparison;"] if no_teacher else []), "",
             *_facts_section(s.get("decoder_facts") or []),
             "## Results", "",
             "| family | preset | size | runtime | decoder | frames | load ms | first ms | p50 ms | p90 ms | FPS | "
             "peak MB | artifact MB |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in plan.runs:
        for r in run["doc"]["results"]:
            m, lat = r["model"], r["latency_ms"]
            size = m.get("artifact_bytes")
            who = run.get("decoder", STUDENT) if m["decoder"] == "student" else m["decoder"]
            lines.append(
                f"| {m['family']} | {run['res']} | {m['width']}x{m['height']} | {r['runtime']['name']} | "
                f"{who} | {m['output_frames']} | {r['cold_start']['load_ms']:.0f} | "
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
    lines += _decoders_section(s)
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


def _facts_section(facts: list[dict]) -> list[str]:
    """``## Decoders``: parameters and GFLOPs per output frame of everything the run measured."""
    if not facts:
        return []
    presets = list(facts[0]["gflops_per_frame"])
    t = facts[0]["latent_frames"]
    lines = ["## Decoders", "", f"Parameters and GFLOPs per output frame ({t} latent frames; counted on the meta "
             "device from the configs the run measured):", "",
             "| family | decoder | parameters | " + " | ".join(f"GFLOPs/frame {p}" for p in presets) + " |",
             "|---|---|---:|" + "---:|" * len(presets)]
    for f in facts:
        p = f["parameters"]
        lines.append(f"| {f['family']} | {f['decoder']} | {f'{p / 1e6:.2f}M' if p else '-'} | "
                     + " | ".join("-" if f["gflops_per_frame"][x] is None else f"{f['gflops_per_frame'][x]:.1f}"
                                  for x in presets) + " |")
    return [*lines, ""]


def _decoders_section(s: dict) -> list[str]:
    """Every decoder's fastest runtime per family and preset, beside the teacher and the project student."""
    rows = s.get("decoders") or []
    if not any(r["decoder"] != STUDENT for r in rows):
        return []
    lines = ["", "Teacher, released decoders and the project student (fastest runtime of each, p50; ratios "
             "within this run):", "",
             "| family | preset | decoder | runtime | frames | p50 ms | FPS | vs teacher | vs project student |",
             "|---|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        vt = f"{r['vs_teacher']:.1f}x" if r["vs_teacher"] else (
            "-" if get_family(r["family"]).has_teacher else "no teacher")
        vs = f"{r['vs_student']:.2f}x" if r["vs_student"] else "-"
        res = f"{r['res']}{' (fastest runtime)' if r['fast'] else ''}"
        lines.append(f"| {r['family']} | {res} | {r['decoder']} | {r['runtime']} | {r['output_frames'] or '-'} | "
                     f"{r['p50_ms']:.1f} | {r['fps']:.2f} | {vt} | {vs} |")
    return lines
