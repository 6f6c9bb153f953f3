"""Time one decoder on one runtime: load, first run, warm-up, counted runs, peak resident memory.

Each measurement normally runs in a fresh ``spawn`` subprocess (:func:`run_job`), so the peak
resident set it reports belongs to that runtime alone: on Linux it is the process's ``VmHWM``
(kernel high-water mark of RSS), elsewhere the maximum of psutil RSS samples taken every 5 ms.
Either way it includes the interpreter and imported libraries; ``baseline_rss`` (RSS just before
the model is loaded) is reported next to it so the model's own share can be read off.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from turbo_vaed.errors import UserError

TORCH_RUNTIMES = ("torch", "torch-lowered", "diffusers")
ARTIFACT_RUNTIMES = ("onnxruntime", "executorch", "coreml")

Progress = Callable[[str, int], None]  # (phase description, steps completed in this call)
Measure = Callable[..., dict]  # (job, progress, fresh_process=...) -> raw figures


class BenchError(RuntimeError):
    """A measurement failed inside the bench process (not a user-input problem)."""


@dataclass
class Job:
    """One (decoder, runtime) measurement; picklable so it can cross into a spawned process."""

    label: str
    runtime: str  # torch | torch-lowered | diffusers | onnxruntime | executorch | coreml
    family: str
    source: str  # student checkpoint | artifact path | teacher dir | "random" | "reference"
    latents: np.ndarray  # (1, C, T, h, w) float32, normalised
    warmup: int
    iters: int
    threads: int
    compute_units: str | None = None  # Core ML only (schema names: all, cpuAndNeuralEngine, ...)

    @property
    def steps(self) -> int:
        """Progress steps: load, first run, warm-up runs, counted runs."""
        return 2 + self.warmup + self.iters


# ---------------------------------------------------------------- peak memory


def _vm_hwm() -> int | None:
    """Peak RSS of this process (Linux ``VmHWM``) in bytes, or None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak resident memory over a ``with`` block (VmHWM when trustworthy, else sampled RSS)."""

    def __init__(self, fresh_process: bool, interval_s: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval_s
        self._stop = threading.Event()
        self._peak = 0
        self._hwm_ok = (_vm_hwm() is not None) and (fresh_process or _reset_hwm())
        self.baseline = self._proc.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._peak = self.baseline
        if not self._hwm_ok:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        if self._hwm_ok:
            self._peak = max(self._peak, _vm_hwm() or 0)

    @property
    def peak(self) -> int:
        return int(self._peak)

    @property
    def method(self) -> str:
        return "VmHWM" if self._hwm_ok else "psutil RSS sampled every 5 ms"


# ---------------------------------------------------------------- runtimes


def _frames(out: np.ndarray | object, rank5: bool) -> tuple[int, list[int]]:
    shape = [int(s) for s in out.shape]  # type: ignore[attr-defined]
    return (shape[2] if rank5 else shape[0]), shape


def _open(job: Job) -> tuple[Callable[[], object], bool, dict]:
    """Load the decoder for ``job``; returns (run, output_is_rank5, runtime info)."""
    import torch

    torch.set_num_threads(job.threads)
    if job.runtime in TORCH_RUNTIMES:
        x5 = torch.from_numpy(job.latents)
        if job.runtime == "diffusers":
            import diffusers

            from turbo_vaed.teachers import load_teacher, teacher_decode

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                vae = load_teacher(job.family, None if job.source == "random" else job.source)

            def run():
                with torch.inference_mode():
                    return teacher_decode(vae, x5)

            return run, True, {"version": diffusers.__version__, "delegate": None, "precision": "fp32"}
        from turbo_vaed.decoders.store import load_decoder

        dec = load_decoder(job.source, job.family)
        if job.runtime == "torch-lowered":
            dec = dec.lower()
            x = x5[0].transpose(0, 1).contiguous()  # [T, C, h, w]
        else:
            x = x5

        def run():
            with torch.inference_mode():
                return dec(x)

        return run, job.runtime == "torch", {"version": torch.__version__, "delegate": None, "precision": "fp32"}
    from turbo_vaed import targets

    load_runner = targets.load_runner
    kwargs = {"compute_units": job.compute_units} if job.runtime == "coreml" else {}
    runner = load_runner(Path(job.source), job.threads, **kwargs)
    if runner.name != job.runtime:
        raise UserError(f"{job.source} runs on {runner.name}, not {job.runtime}: pass the matching --runtime")
    xin = np.ascontiguousarray(job.latents[0].transpose(1, 0, 2, 3), dtype=np.float32)
    delegate = {"onnxruntime": "CPUExecutionProvider"}.get(job.runtime, runner.manifest.get("delegate"))
    info = {"version": str(runner.version), "delegate": delegate,
            "precision": runner.manifest.get("precision", "fp32")}
    return (lambda: runner.run(xin)), False, info


def _preimport(job: Job) -> None:
    """Import the runtime's libraries before the clock starts (load time is model load, not imports)."""
    import torch  # noqa: F401

    if job.runtime == "diffusers":
        from turbo_vaed.families import get_family
        from turbo_vaed.teachers import teacher_class

        teacher_class(get_family(job.family))  # diffusers imports its model classes lazily
    elif job.runtime == "torch-lowered":
        import turbo_vaed.lowering  # noqa: F401
    elif job.runtime in ARTIFACT_RUNTIMES:
        import turbo_vaed.targets  # noqa: F401

        mod = {"onnxruntime": "onnxruntime", "executorch": "executorch.runtime", "coreml": "coremltools"}
        try:
            __import__(mod[job.runtime])
        except ImportError:
            pass


def measure(job: Job, progress: Progress | None = None, fresh_process: bool = False) -> dict:
    """Run ``job`` here; returns raw figures (ms, frames, bytes) for :mod:`turbo_vaed.bench.host`."""
    step = progress or (lambda _d, _n: None)
    _preimport(job)
    with PeakRSS(fresh_process) as mem:
        step("loading", 0)
        t0 = time.perf_counter()
        run, rank5, info = _open(job)
        load_ms = (time.perf_counter() - t0) * 1e3
        step("first run", 1)
        t0 = time.perf_counter()
        out = run()
        first_ms = (time.perf_counter() - t0) * 1e3
        frames, shape = _frames(out, rank5)
        del out
        step("warm-up" if job.warmup else "timing", 1)
        for _ in range(job.warmup):
            run()
            step("warm-up", 1)
        samples = []
        for _ in range(job.iters):
            t0 = time.perf_counter()
            run()
            samples.append((time.perf_counter() - t0) * 1e3)
            step("timing", 1)
    return {"load_ms": load_ms, "first_run_ms": first_ms, "samples_ms": samples, "output_frames": frames,
            "output_shape": shape, "peak_rss": mem.peak, "baseline_rss": int(mem.baseline),
            "memory_method": mem.method, "isolated": fresh_process, **info}


# ---------------------------------------------------------------- process isolation


def _log_tail(path: str, n: int = 2000) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")[-n:].strip()
    except OSError:
        return ""


def _last_line(text: str, n: int = 240) -> str:
    """The last non-indented, non-empty line of ``text`` (a traceback's ``Type: message``), cut to ``n``."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln[:1].isspace()]
    return lines[-1][:n] if lines else ""


def _death(code: int | None) -> str:
    """What an exit code of a dead bench process means, in words."""
    import signal

    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        if -code == signal.SIGKILL:
            return f"killed by {name} (out of memory? try a smaller --res)"
        return f"the runtime crashed ({name}; a corrupt artifact? re-export it)"
    return "crashed"


def _child(fn: Measure, job, q, log_path: str) -> None:  # runs in the spawned process
    """Measure in this fresh process; native-library chatter on fd 2 goes to ``log_path`` (shown on failure)."""
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    os.dup2(fd, 2)
    os.close(fd)
    try:
        from turbo_vaed.console import quiet_third_party

        quiet_third_party()
        warnings.simplefilter("ignore")
        res = fn(job, lambda d, n: q.put(("progress", (d, n))), fresh_process=True)
        q.put(("result", res))
    except UserError as e:
        q.put(("user_error", str(e)))
    except BaseException as e:  # noqa: BLE001  report anything, the parent decides
        q.put(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def run_job(job, progress: Progress | None = None, isolate: bool = True, fn: Measure | None = None) -> dict:
    """Measure ``job`` with ``fn`` (default :func:`measure`; any picklable module-level function taking ``(job,
    progress, fresh_process)``, such as :func:`turbo_vaed.bench.stream.measure_stream`) in a fresh spawned
    process (``isolate``) or in this one."""
    fn = fn or measure
    if not isolate:
        return fn(job, progress, fresh_process=False)
    import tempfile

    step = progress or (lambda _d, _n: None)
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    fd, log_path = tempfile.mkstemp(prefix="turbovaed-bench-", suffix=".log")
    os.close(fd)
    proc = ctx.Process(target=_child, args=(fn, job, q, log_path), name=f"bench {job.label}", daemon=True)
    proc.start()
    try:
        while True:
            try:
                kind, payload = q.get(timeout=0.25)
            except queue.Empty:
                if proc.is_alive():
                    continue
                try:  # the last message may land just after the exit
                    kind, payload = q.get(timeout=1.0)
                except queue.Empty:
                    code = proc.exitcode
                    why = _death(code)
                    log = _last_line(_log_tail(log_path))
                    raise BenchError(f"{job.label}: the bench process exited with code {code}: {why}"
                                     + (f" (its last words: {log})" if log else "")) from None
            if kind == "progress":
                step(*payload)
            elif kind == "result":
                return payload
            elif kind == "user_error":
                raise UserError(payload)
            else:  # one line: the exception, never the child's whole traceback
                raise BenchError(f"{job.label} failed in the bench process: {_last_line(payload.split(chr(10))[0])}")
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
        q.close()
        os.unlink(log_path)
