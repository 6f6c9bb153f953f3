"""Teacher vs. student decode at 720p on one CUDA GPU (bf16, channels-last, torch.compile for the student).

Writes a turbovaed.bench/1 JSON (device kind "cuda") and prints a table with the speedups measured in
this one run. Teachers use their default diffusers configs with random weights (speed does not depend on
the weights). Usage: python scripts/gpu_bench_720p.py --out gpu_720p.json [--latent-frames 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time
import warnings

import torch

from turbo_vaed.config import load_student_config
from turbo_vaed.decoders.student_model import TurboVAEDDecoder
from turbo_vaed.families import FAMILIES, get_family, resolve_resolution
from turbo_vaed.teachers import load_teacher, teacher_decode


def cuda_time(fn, warmup: int, iters: int) -> tuple[list[float], float]:
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    first = (time.perf_counter() - t0) * 1000
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        torch.cuda.synchronize()
        out.append(s.elapsed_time(e))
    return out, first


def summary(samples: list[float]) -> dict:
    a = sorted(samples)
    pick = lambda q: a[min(len(a) - 1, int(round(q * (len(a) - 1))))]  # noqa: E731
    return {"min": a[0], "p50": pick(0.5), "p90": pick(0.9), "max": a[-1], "mean": sum(a) / len(a), "samples": a}


def result(label, family, decoder, runtime_version, z, frames, w, h, lat, first, warmup, iters, precision, notes):
    return {
        "label": label,
        "device": {"kind": "cuda", "model": torch.cuda.get_device_name(), "os": platform.system(),
                   "os_version": platform.release(), "cpu": platform.processor() or None, "soc": None,
                   "cpu_count": None, "memory_bytes": torch.cuda.get_device_properties(0).total_memory},
        "runtime": {"name": "diffusers" if decoder == "teacher" else "torch", "version": runtime_version,
                    "compute_units": None, "delegate": "cuda", "threads": None, "precision": precision},
        "model": {"family": family, "decoder": decoder, "artifact": None, "artifact_sha256": None,
                  "artifact_bytes": None, "preset": "720p", "width": w, "height": h,
                  "latent_shape": list(z.shape), "output_frames": frames},
        "settings": {"warmup": warmup, "iterations": iters},
        "cold_start": {"load_ms": 0.0, "first_run_ms": first},
        "latency_ms": lat, "fps": frames / (lat["p50"] / 1000), "peak_memory_bytes": torch.cuda.max_memory_allocated(),
        "thermal": None, "compute_plan": None, "notes": notes,
    }


def bench_family(name: str, args: argparse.Namespace, dtype: torch.dtype) -> tuple[list[dict], dict, str]:
    """Teacher, eager student and compiled student at 720p for one family."""
    results: list[dict] = []
    fam = get_family(name)
    w, h = resolve_resolution("720p", fam)
    f = fam.spatial_factor
    z = torch.randn(1, fam.latent_channels, args.latent_frames, h // f, w // f, device="cuda", dtype=dtype)
    frames = fam.frames_out(args.latent_frames)
    torch.cuda.reset_peak_memory_stats()
    teacher = load_teacher(name, None).to("cuda", dtype)
    with torch.inference_mode():
        lat_t, first_t = cuda_time(lambda: teacher_decode(teacher, z), 1, max(2, args.iters // 2))
    tl = summary(lat_t)
    results.append(result(f"{name}/teacher", name, "teacher", torch.__version__, z, frames, w, h, tl, first_t,
                          1, len(lat_t), "bf16", "diffusers default config, random weights, bf16"))
    torch.cuda.reset_peak_memory_stats()
    student = TurboVAEDDecoder(load_student_config(name)).to("cuda", dtype).eval()
    student = student.to(memory_format=torch.channels_last_3d)
    zc = z.contiguous(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        lat_s, first_s = cuda_time(lambda: student(zc), args.warmup, args.iters)
    sl = summary(lat_s)
    results.append(result(f"{name}/student-eager", name, "student", torch.__version__, z, frames, w, h, sl,
                          first_s, args.warmup, args.iters, "bf16", "eager, channels-last-3d"))
    best = sl
    cl = None
    if not args.no_compile:
        compiled = torch.compile(student)
        with torch.inference_mode():
            lat_c, first_c = cuda_time(lambda: compiled(zc), args.warmup, args.iters)
        cl = summary(lat_c)
        results.append(result(f"{name}/student-compiled", name, "student", torch.__version__, z, frames, w, h,
                              cl, first_c, args.warmup, args.iters, "bf16",
                              "torch.compile, channels-last-3d (first run includes compilation)"))
        best = cl if cl["p50"] < sl["p50"] else sl
    best_label = f"{name}/student-compiled" if best is cl else f"{name}/student-eager"
    comp = {"baseline": f"{name}/teacher", "candidate": best_label, "speedup": tl["p50"] / best["p50"]}
    line = (f"{name:10s} {tl['p50']:11.1f} {sl['p50']:11.1f} {(cl or sl)['p50']:12.1f} "
            f"{tl['p50'] / best['p50']:7.1f}x {frames / (best['p50'] / 1000):12.1f}")
    torch.cuda.empty_cache()
    return results, comp, line


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--latent-frames", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--out", default="gpu_720p.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.backends.cudnn.benchmark = True
    dtype = torch.bfloat16
    results, comps = [], []
    print(f"{torch.cuda.get_device_name()}  torch {torch.__version__}  720p, {args.latent_frames} latent frames, bf16")
    print(f"{'family':10s} {'teacher ms':>11s} {'student ms':>11s} {'compiled ms':>12s} {'speedup':>8s} "
          f"{'student FPS':>12s}")
    for name in args.families.split(","):
        res, comp, line = bench_family(name, args, dtype)
        results += res
        comps.append(comp)
        print(line, flush=True)
    doc = {"schema": "turbovaed.bench/1", "created": dt.datetime.now(dt.UTC).isoformat(),
           "tool": {"name": "turbovaed", "version": "0.1.0"}, "results": results, "comparisons": comps}
    with open(args.out, "w") as fh:
        json.dump(doc, fh, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
