"""Teacher/student decode latency in PyTorch eager, 3 latent frames at 256x256 output, 2 threads.

Prints one table and the ratios measured in this one run (issue 2's speed targets).
Usage: python scripts/bench_student_vs_teacher.py [--families hunyuan,cogvideox,ltx,wan] [--iters 1]
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings

import torch

from turbo_vaed.config import load_student_config
from turbo_vaed.decoders.student_model import TurboVAEDDecoder
from turbo_vaed.families import get_family
from turbo_vaed.teachers import load_teacher, teacher_decode

TARGETS = {"hunyuan": 10.0, "cogvideox": 14.0, "ltx": 4.0, "wan": 5.0}


def _time(fn, iters: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _pair(name: str, z: torch.Tensor, iters: int) -> tuple[float, float]:
    teacher = load_teacher(name, None)
    student = TurboVAEDDecoder(load_student_config(name)).eval()
    with torch.inference_mode():
        return _time(lambda: teacher_decode(teacher, z), iters), _time(lambda: student(z), iters)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default="hunyuan,cogvideox,ltx,wan")
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}")
    print(f"{'family':10s} {'teacher s':>10s} {'student s':>10s} {'ratio':>7s} {'target':>7s}")
    for name in args.families.split(","):
        fam = get_family(name)
        z = torch.randn(1, fam.latent_channels, 3, 256 // fam.spatial_factor, 256 // fam.spatial_factor)
        tt, ts = _pair(name, z, args.iters)
        ok = "ok" if tt / ts >= TARGETS[name] else "MISS"
        print(f"{name:10s} {tt:10.2f} {ts:10.3f} {tt / ts:6.1f}x {TARGETS[name]:6.1f}x {ok}", flush=True)


if __name__ == "__main__":
    main()
