"""Streamed vs fixed-chunk decode in one run: steady-state FPS ratio and peak RSS (ONNX Runtime, host CPU).

Exports the built-in default student (or ``--checkpoint``) twice at ``--res``: today's whole-chunk artifact
(``--latent-frames K``: 4K-3 frames per call, the temporal padding restarts at every chunk) and the streaming
step (chunks of K latent frames, 4K frames per call, state carried). Each is then measured in its own fresh
process (so VmHWM is that runner's peak): fixed = ``--iters`` calls after one warm-up; streamed = a whole clip
of ``--clip`` latent frames, steady state = every call after the first. Prints a table and writes ``--json``.

``--stream-chunk C`` streams chunks of C latent frames instead of K (e.g. the fixed-chunk artifact of today, K=2,
against streamed chunks of 1, 4 frames per call, where a phone's memory budget is tightest).

``--bands N`` adds a third row: the streaming step with its high-resolution tail in N bands of rows (same
frames, smaller activations), measured the same way; ``--tail-frames G`` runs that row's tail G frames at a time
(alone or with ``--bands``).

Usage: python scripts/stream_vs_fixed.py --res 720p --latent-frames 2 --stream-chunk 1 --clip 21 --threads 1 --bands 8
       python scripts/stream_vs_fixed.py --res 720p --latent-frames 2 --stream-chunk 1 --clip 9 --tail-frames 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def measure(kind: str, artifact: str, clip: int, iters: int, threads: int) -> dict:
    """Run in a fresh process: latency per call, frames per call, peak RSS (VmHWM). Imports no torch: an ONNX Runtime
    decode in an app carries none, so the peak is the runtime's, its model's and the interpreter's."""
    from turbo_vaed.bench.measure import PeakRSS
    from turbo_vaed.bench.stream import StreamJob, measure_stream
    from turbo_vaed.targets import load_runner

    g = np.random.default_rng(0)
    if kind == "fixed":
        with PeakRSS(fresh_process=True) as mem:
            runner = load_runner(Path(artifact), threads)
            x = g.standard_normal(runner.manifest["inputs"][0]["shape"], dtype=np.float32)
            runner.run(x)  # warm-up
            times: list[float] = []
            for _ in range(iters):
                t = time.perf_counter()
                out = runner.run(x)
                times.append(time.perf_counter() - t)
        per_call, frames, peak = out.shape[0], out.shape[0] * iters, mem.peak
    else:  # the bench's own streamed measurement (turbovaed bench --stream), in this fresh process
        from turbo_vaed.exporters.manifest import read_manifest

        m = read_manifest(Path(artifact))
        x = g.standard_normal((clip, *m["inputs"][0]["shape"][1:]), dtype=np.float32)
        raw = measure_stream(StreamJob(kind, artifact, threads, x, True), fresh_process=True)
        times = [t / 1e3 for t in raw["times_ms"][1:]]  # steady state: every call after the first
        per_call = m["stream"]["frames_per_chunk"]
        frames, peak = raw["frames"], raw["peak_rss"]
    med = float(np.median(times))
    return {"kind": kind, "frames_per_call": per_call, "median_s": med, "fps": per_call / med,
            "calls": len(times), "frames": frames, "peak_rss_mb": peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", default="720p")
    ap.add_argument("--latent-frames", type=int, default=2)
    ap.add_argument("--stream-chunk", type=int, default=None, help="latent frames per streamed chunk (default: K)")
    ap.add_argument("--clip", type=int, default=21)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--bands", type=int, default=1, help="also measure the streaming step with its tail in N bands")
    ap.add_argument("--band-stages", type=int, default=None, help="stages the bands span (default: the exporter's)")
    ap.add_argument("--tail-frames", type=int, default=0, help="also measure the step with its tail G frames at a time")
    ap.add_argument("--json", default="stream_vs_fixed.json")
    ap.add_argument("--_measure", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._measure:
        print(json.dumps(measure(args._measure[0], args._measure[1], args.clip, args.iters, args.threads)))
        return

    from rich.console import Console
    from rich.table import Table

    from turbo_vaed.checkpoint import DEFAULT_STUDENT
    from turbo_vaed.decoders.store import load_decoder
    from turbo_vaed.exporters import export_artifact

    console = Console()
    dec = load_decoder(args.checkpoint or DEFAULT_STUDENT)
    out = Path(tempfile.mkdtemp(prefix="stream_vs_fixed."))
    chunk = args.stream_chunk or args.latent_frames
    split = args.bands > 1 or args.tail_frames > 0
    kinds = [("fixed", 1, 0), ("stream", 1, 0)] + ([("stream", args.bands, args.tail_frames)] if split else [])
    rows = []
    for kind, bands, tail in kinds:
        label = kind if bands == 1 and not tail else "stream, " + ", ".join(
            [f"{bands} bands"] * (bands > 1) + [f"{tail} frame(s) at a time"] * (tail > 0)) + (
            f" over {args.band_stages} stage(s)" if args.band_stages else "")
        with console.status(f"exporting the {label} ONNX artifact at {args.res}"):
            k = args.latent_frames if kind == "fixed" else chunk
            art = str(export_artifact(dec, "onnx", args.res, latent_frames=k, precision="fp32",
                                      out_dir=out, stream=kind == "stream", bands=bands,
                                      band_stages=args.band_stages if bands > 1 or tail else None,
                                      tail_frames=tail, name=f"{kind}-b{bands}-f{tail}").artifact)
        with console.status(f"measuring {label} in a fresh process"):
            cmd = [sys.executable, __file__, "--_measure", kind, art, "--clip", str(args.clip),
                   "--iters", str(args.iters), "--threads", str(args.threads)]
            row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                             .strip().splitlines()[-1])
            rows.append({**row, "kind": label, "bands": bands})
    fixed, stream = rows[0], rows[1]
    ratio = stream["fps"] / fixed["fps"]
    t = Table(title=f"streamed vs fixed chunk, {args.res}, fixed K={args.latent_frames}, streamed chunks of {chunk}, "
                    f"ORT fp32, {args.threads} thread(s)")
    for c in ("artifact", "frames/call", "median s/call", "FPS", "peak RSS MiB"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(r["kind"], str(r["frames_per_call"]), f"{r['median_s']:.2f}", f"{r['fps']:.3f}",
                  f"{r['peak_rss_mb']:.0f}")
    console.print(t)
    console.print(f"steady streamed FPS / fixed-chunk FPS = [bold]{ratio:.3f}[/] (target >= 0.9); "
                  f"per call: {stream['median_s'] / fixed['median_s']:.3f}x the time for "
                  f"{stream['frames_per_call']}/{fixed['frames_per_call']} frames")
    doc = {"res": args.res, "latent_frames": args.latent_frames, "stream_chunk": chunk, "clip": args.clip,
           "band_stages": args.band_stages, "tail_frames": args.tail_frames,
           "threads": args.threads,
           "fixed": fixed, "stream": stream, "fps_ratio": ratio}
    if len(rows) > 2:
        banded = rows[2]
        doc.update(banded=banded, banded_fps_ratio=banded["fps"] / fixed["fps"])
        console.print(f"split ({rows[2]['kind']}) streamed FPS / fixed-chunk FPS = "
                      f"[bold]{doc['banded_fps_ratio']:.3f}[/]; peak RSS {banded['peak_rss_mb']:.0f} MiB "
                      "(target <= 2 GB at 720p: 1907 MiB)")
    Path(args.json).write_text(json.dumps(doc, indent=1))
    console.print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
