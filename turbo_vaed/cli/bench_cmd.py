"""``turbovaed bench``: one command, four devices; each driver returns a turbovaed.bench/1 document."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Optional

import typer

from turbo_vaed.bench.options import COMPUTE_UNITS, DEVICES, RUNTIMES, BenchOptions
from turbo_vaed.cli.app import app, console
from turbo_vaed.cli.options import CheckpointOpt, FamilyOpt, ResLongOpt, TeacherOpt, ThreadsOpt
from turbo_vaed.errors import UserError

# device -> (module, function); each function takes BenchOptions and returns a validated results doc
DRIVERS = {
    "host": ("turbo_vaed.bench.host", "bench_host"),
    "mac": ("turbo_vaed.bench.mac", "bench_mac"),
    "iphone16pro": ("turbo_vaed.bench.ios", "bench_iphone"),
    "android": ("turbo_vaed.bench.android", "bench_android"),
}


def _driver(device: str):
    if device not in DEVICES:
        raise UserError(f"unknown device '{device}': choose one of {', '.join(DEVICES)}")
    mod, fn = DRIVERS[device]
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError):
        raise UserError(f"--device {device} is not available in this build of turbovaed") from None


@app.command()
def bench(
    artifact: Optional[Path] = typer.Argument(None, help="Exported artifact (.onnx/.ort/.pte/.mlpackage); "
                                              "without it, host bench exports what it needs."),
    device: str = typer.Option("host", "--device", "-d", help=f"One of {', '.join(DEVICES)}."),
    runtime: list[str] = typer.Option([], "--runtime", "-r", help=f"Repeatable; one of {', '.join(RUNTIMES)}."),
    family: FamilyOpt = None,
    res: ResLongOpt = "256p",
    latent_frames: int = typer.Option(3, "--latent-frames", min=1, max=64),
    warmup: int = typer.Option(1, "--warmup", min=0),
    iters: int = typer.Option(5, "--iters", min=1),
    vs_teacher: bool = typer.Option(False, "--vs-teacher", help="Also time the teacher decoder; report speedup."),
    threads: ThreadsOpt = None,
    checkpoint: CheckpointOpt = None,
    teacher: TeacherOpt = "reference",
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write results (turbovaed.bench/1)."),
    out_dir: Path = typer.Option(Path("out/bench"), "--out", help="Where exported artifacts/results go."),
    suite: bool = typer.Option(False, "--suite", help="Standard table: every family x runtime; writes BENCHMARKS.md."),
    stream: bool = typer.Option(False, "--stream", help="Decode a whole clip chunk by chunk (host: exports the "
                                "streaming step, --latent-frames per chunk; iphone16pro/android: pass an `export "
                                "--stream` artifact): first-frame latency, steady latency per chunk, sustained FPS, "
                                "memory."),
    stream_frames: int = typer.Option(21, "--stream-frames", min=1, max=4096,
                                      help="--stream: latent frames of the clip (21: a 5-second Wan clip; phones: "
                                      "a --latents file sets the clip instead)."),
    simulator: bool = typer.Option(False, "--simulator", help="iphone16pro: run on the iOS simulator."),
    compute_units: list[str] = typer.Option([], "--compute-units", help=f"Core ML: {', '.join(COMPUTE_UNITS)}."),
    serial: Optional[str] = typer.Option(
        None, "--serial", help="android: adb serial; iphone16pro: iPhone name or UDID (xcrun devicectl list devices)."
    ),
    apk: Optional[Path] = typer.Option(None, "--apk", help="android: prebuilt android_bench APK."),
    latents: Optional[Path] = typer.Option(None, "--latents", help="Latents file to decode (default: random)."),
    suite_res: list[str] = typer.Option([], "--suite-res", help="--suite: resolutions for every runtime "
                                        "(repeatable; default 256p and 480p, plus 720p for the fastest runtime)."),
    decoders: Optional[str] = typer.Option(None, "--decoders", help="--suite: comma list of decoders to "
                                           "benchmark per family: student (the project's), turbo-vaed, taehv, "
                                           "flash-vaed (released, random weights from their full-size configs); "
                                           "default student,turbo-vaed."),
    validate: Optional[Path] = typer.Option(None, "--validate", help="Check a results JSON file "
                                            "(turbovaed.bench/1, from any device) and print it."),
) -> None:
    """Benchmark decoders: cold start, warm latency, FPS, memory; JSON in turbovaed.bench/1."""
    if validate is not None:
        from turbo_vaed.bench.report import print_results
        from turbo_vaed.bench.schema import load_results

        print_results(load_results(validate), title=str(validate), console=console)
        console.print(f"{validate}: valid turbovaed.bench/1")
        return
    for r in runtime:
        if r not in RUNTIMES:
            raise UserError(f"unknown runtime '{r}': choose from {', '.join(RUNTIMES)}")
    for cu in compute_units:
        if cu not in COMPUTE_UNITS:
            raise UserError(f"unknown compute units '{cu}': choose from {', '.join(COMPUTE_UNITS)}")
    if decoders is not None and not suite:
        raise UserError("--decoders applies to --suite: add --suite or drop --decoders")
    if iters < 1 or warmup < 0:
        raise UserError("--iters must be >= 1 and --warmup >= 0")
    opts = BenchOptions(
        device=device, artifact=artifact, runtimes=tuple(runtime), family=family, res=res,
        latent_frames=latent_frames, warmup=warmup, iters=iters, vs_teacher=vs_teacher, threads=threads,
        checkpoint=Path(checkpoint) if checkpoint else None, teacher=teacher, json_path=json_path,
        out_dir=out_dir, simulator=simulator,
        compute_units=tuple(compute_units) or ("all",), serial=serial, latents=latents,
        extra={**({"apk": str(apk)} if apk else {}), **({"suite_res": list(suite_res)} if suite_res else {}),
               **({"suite_decoders": decoders} if decoders is not None else {})},
    )
    if artifact is not None and not artifact.exists():
        raise UserError(f"artifact not found: {artifact}; export one with `turbovaed export`")
    from turbo_vaed.guards import check_bench_request, check_output_file

    if json_path is not None:
        check_output_file(json_path, "results file", (".json",))
    if not suite:
        check_bench_request(opts)  # before anything is exported, allocated or spawned
    from turbo_vaed.bench.measure import BenchError

    try:
        if suite:
            from turbo_vaed.bench.suite import run_suite

            run_suite(opts)
            return
        if stream:
            opts.extra.update(stream=True, stream_frames=stream_frames)
            if device == "host":
                from turbo_vaed.bench.stream import bench_stream

                doc = bench_stream(opts)
            elif device in ("iphone16pro", "android"):
                doc = _driver(device)(opts)  # the app streams the clip (ios.py / android.py read opts.extra)
            else:
                raise UserError("--stream runs on --device host, iphone16pro or android; --device mac times "
                                "whole chunks with coremltools")
        else:
            doc = _driver(device)(opts)
    except BenchError as e:  # a measurement process died (e.g. out of memory): one line, exit 2
        raise UserError(f"benchmark failed: {e}") from None
    from turbo_vaed.bench.report import print_results
    from turbo_vaed.jsonio import write_json

    print_results(doc, title=f"turbovaed bench --device {device}", console=console)
    if json_path:
        write_json(json_path, doc)
        console.print(f"wrote {json_path}", soft_wrap=True)
