"""Latency summaries and host facts for results in the ``turbovaed.bench/1`` schema."""

from __future__ import annotations

import datetime as _dt
import os
import platform

import numpy as np


def latency_summary(samples_ms: list[float]) -> dict:
    """min / p50 / p90 / max / mean of per-iteration latencies in ms (plus the samples)."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no latency samples")
    return {
        "min": float(a.min()), "p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
        "max": float(a.max()), "mean": float(a.mean()), "samples": [float(x) for x in a],
    }


def fps(output_frames: int, p50_ms: float) -> float:
    """Output frames per second at the median latency."""
    return output_frames / (p50_ms / 1000.0) if p50_ms > 0 else 0.0


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def host_device(kind: str = "host") -> dict:
    """Device block for the machine this runs on."""
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "kind": kind, "model": cpu, "os": platform.system(), "os_version": platform.release(),
        "cpu": cpu, "soc": None, "cpu_count": os.cpu_count(), "memory_bytes": int(psutil.virtual_memory().total),
    }
