"""``turbovaed bench --stream``: a whole clip (default 21 latent frames) decoded chunk by chunk on the host.

Per runtime: first-frame latency (the first chunk's call), steady-state latency per chunk, sustained FPS over
the clip, peak resident memory, in the ``turbovaed.bench/1`` schema (``stream`` field of each result). The
streaming artifact is exported first (state tensors as explicit inputs/outputs, see ``export --stream``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from turbo_vaed.bench.collect import make_doc
from turbo_vaed.bench.options import DEFAULT_CLIP_LATENT_FRAMES, EXPORT_TARGET, BenchOptions
from turbo_vaed.bench.stats import fps, host_device, latency_summary
from turbo_vaed.errors import UserError

STREAM_RUNTIMES = ("onnxruntime", "executorch")


@dataclass
class StreamJob:
    """One streamed clip through one artifact; picklable, so it runs in a fresh process (:func:`run_job`)."""

    label: str
    artifact: str
    threads: int
    latents: np.ndarray  # (T, C, h, w) float32: the whole clip, the app's layout
    trims: bool  # the full decode of this clip trims its first frames (the family's rule)

    @property
    def steps(self) -> int:
        return int(self.latents.shape[0])


def measure_stream(job: StreamJob, progress=None, fresh_process: bool = False) -> dict:
    """Load ``job.artifact``'s runner and stream the clip through it, timing every call; raw figures.

    Imports only the runtime (an ONNX Runtime step runs without torch), so in a fresh process the peak resident
    memory is the runner's, its model's and the interpreter's, as in an app.
    """
    from turbo_vaed.bench.measure import PeakRSS
    from turbo_vaed.streaming import run_stream
    from turbo_vaed.targets import load_runner

    step = progress or (lambda _d, _n: None)
    times: list[float] = []
    with PeakRSS(fresh_process) as mem:
        step("loading", 0)
        t0 = time.perf_counter()
        runner = load_runner(Path(job.artifact), job.threads)
        load_ms = (time.perf_counter() - t0) * 1e3
        spec = runner.manifest["stream"]
        k = int(spec["chunk_latent_frames"])

        def timed(feeds):
            t = time.perf_counter()
            out = runner.run_all(feeds)
            times.append((time.perf_counter() - t) * 1e3)
            step("streaming", max(0, min(k, job.steps - k * (len(times) - 1))))  # latent frames done (0: flush)
            return out

        frames, first_frame_ms = 0, None
        t_clip = time.perf_counter()
        for out in run_stream(timed, spec, job.latents, job.trims):
            if not np.isfinite(out).all():
                raise UserError(f"{Path(job.artifact).name} produced NaN/Inf frames from finite latents: re-export it")
            if first_frame_ms is None:
                first_frame_ms = (time.perf_counter() - t_clip) * 1e3
            frames += out.shape[0]
        wall = time.perf_counter() - t_clip
    return {"load_ms": load_ms, "times_ms": times, "frames": frames, "first_frame_ms": first_frame_ms or 0.0,
            "wall_s": wall, "peak_rss": int(mem.peak), "baseline_rss": int(mem.baseline), "memory_method": mem.method,
            "isolated": fresh_process, "version": str(runner.version), "torch_loaded": "torch" in sys.modules}


def bench_stream(opts: BenchOptions) -> dict:
    """Measure a streamed decode of a whole clip on every requested host runtime; a validated results doc."""
    import torch

    from turbo_vaed.bench.collect import progress_bar
    from turbo_vaed.bench.host import _resolve_student, bench_family, console_for, random_latents
    from turbo_vaed.bench.measure import run_job
    from turbo_vaed.exporters import export_artifact
    from turbo_vaed.exporters.manifest import read_manifest
    from turbo_vaed.families import get_family, resolve_res

    console = console_for(opts)
    clip = int(opts.extra.get("stream_frames", DEFAULT_CLIP_LATENT_FRAMES))
    threads = opts.threads or torch.get_num_threads()
    if opts.artifact is not None:
        jobs, arch, cfg, family, r, chunk, notes = _given_artifact(Path(opts.artifact))
    else:
        runtimes = tuple(dict.fromkeys(opts.runtimes)) or ("onnxruntime",)
        bad = [r for r in runtimes if r not in STREAM_RUNTIMES]
        if bad:
            raise UserError(f"--stream measures {', '.join(STREAM_RUNTIMES)} on the host, not {bad[0]}")
        chunk = int(opts.latent_frames)
        family = bench_family(opts)
        dec, _ckpt, notes = _resolve_student(family, opts, console)
        arch, cfg = dec.arch, dec.config
        r = resolve_res(opts.res, get_family(family))
        jobs = [(rt, None) for rt in runtimes]
    z = random_latents(family, f"{r.width}x{r.height}", clip).latents  # (1, C, T, h, w), seed 0
    x = np.ascontiguousarray(z[0].transpose(1, 0, 2, 3))
    trims = arch.trims(cfg, clip)
    results = []
    for rt, given in jobs:
        target, delegate, _ = EXPORT_TARGET[rt]
        if given is not None:
            art = given
            console.print(f"streaming {clip} latent frames through {art.name} ({rt}, {r}, {chunk} latent frames "
                          "per chunk)", soft_wrap=True)
        else:
            console.print(f"exporting the {family} {arch.name} streaming step for {rt} ({r}, {chunk} latent "
                          "frames per chunk)")
            with console.status(f"exporting {target} --stream"):
                art = export_artifact(dec, target, r, latent_frames=chunk, precision="fp32",
                                      out_dir=Path(opts.out_dir), delegate=delegate, stream=True).artifact
        with progress_bar(console) as bar:
            task = bar.add_task(f"{art.name}: streaming", total=clip)
            raw = run_job(StreamJob(f"{arch.name}/{rt}-stream", str(art), threads, x, trims),
                          lambda d, n, _t=task, _a=art.name: bar.update(_t, description=f"{_a}: {d}", advance=n),
                          isolate=opts.isolate, fn=measure_stream)
        times, frames, wall = raw["times_ms"], raw["frames"], raw["wall_s"]
        m = read_manifest(art)
        steady = times[1:] or times
        lat = latency_summary(steady)
        where = ("in the bench process" if not raw["isolated"] else
                 f"in a fresh process ({'with' if raw['torch_loaded'] else 'without'} torch)")
        results.append({
            "label": f"{arch.name}/{rt}-stream",
            "device": host_device("host"),
            "runtime": {"name": rt, "version": raw["version"], "compute_units": None, "delegate": delegate,
                        "threads": threads, "precision": m["precision"]},
            "model": {"family": family, "decoder": "student", "artifact": str(art), "artifact_sha256": m["sha256"],
                      "artifact_bytes": m["size_bytes"], "preset": r.preset, "width": r.width, "height": r.height,
                      "latent_shape": list(z.shape), "output_frames": frames},
            "settings": {"warmup": 0, "iterations": len(steady)},
            "cold_start": {"load_ms": round(raw["load_ms"], 2), "first_run_ms": round(times[0], 2)},
            "latency_ms": lat,
            "fps": fps(m["stream"]["frames_per_chunk"], lat["p50"]),
            "peak_memory_bytes": raw["peak_rss"],
            "thermal": None,
            "compute_plan": None,
            "notes": "; ".join([*notes, f"streamed {clip} latent frames in chunks of {chunk}; peak RSS "
                                f"({raw['memory_method']}) {where}, {raw['baseline_rss'] / 2**20:.0f} MiB before "
                                "load"]),
            "stream": {"chunk_latent_frames": chunk, "latent_frames": clip, "frames": frames,
                       "first_chunk_ms": round(times[0], 2), "steady_chunk_ms": lat,
                       "sustained_fps": frames / max(wall, 1e-9), "calls": len(times),
                       "first_frame_ms": round(raw["first_frame_ms"], 2)},
        })
        if frames != arch.frames_out(cfg, clip):
            raise UserError(f"{art.name} streamed {frames} frames for {clip} latent frames, the decoder's rule says "
                            f"{arch.frames_out(cfg, clip)}: re-export it")
    return make_doc(results)


def _given_artifact(art: Path):
    """What ``bench --stream ARTIFACT`` measures: the artifact itself, with its decoder, size, chunk and latent
    shape from its manifest (nothing is exported)."""
    from turbo_vaed.bench.host import read_manifest, runtime_of
    from turbo_vaed.decoders import get_architecture
    from turbo_vaed.families import Resolution
    from turbo_vaed.targets import runtime_of_suffix

    rt = runtime_of(art)
    if rt not in STREAM_RUNTIMES:
        takes = ", ".join(s for s, r in runtime_of_suffix().items() if r in STREAM_RUNTIMES)
        raise UserError(f"--stream measures {' and '.join(STREAM_RUNTIMES)} artifacts on the host ({takes}), "
                        f"not {art.name}")
    m = read_manifest(art)
    if not m.get("stream"):
        raise UserError(f"{art.name} decodes fixed chunks, not a stream: export it with `turbovaed export "
                        "--stream`, or drop --stream")
    d = m["decoder"]
    arch = get_architecture(d["arch"])
    cfg = arch.config_from_dict(d["config"])
    r = Resolution(int(m["width"]), int(m["height"]), str(m.get("preset") or f"{m['width']}x{m['height']}"))
    notes = [f"the given artifact {art.name} ({d.get('checkpoint') or 'weights of the export'})"]
    return [(rt, art)], arch, cfg, m["family"], r, int(m["stream"]["chunk_latent_frames"]), notes
