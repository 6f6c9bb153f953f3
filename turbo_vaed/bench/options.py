"""Options shared by every bench driver (host, mac, iphone16pro, android)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEVICES = ("host", "mac", "iphone16pro", "android")
RUNTIMES = ("torch", "torch-lowered", "onnxruntime", "executorch", "coreml")
COMPUTE_UNITS = ("all", "cpuAndNeuralEngine", "cpuAndGPU", "cpuOnly")
# runtime -> (export target, delegate, artifact suffix) of the artifact it runs
EXPORT_TARGET = {"onnxruntime": ("onnx", None, ".onnx"), "executorch": ("executorch", "xnnpack", ".pte"),
                 "coreml": ("coreml", None, ".mlpackage")}


@dataclass
class BenchOptions:
    """What ``turbovaed bench`` was asked to do; each driver reads the fields it needs."""

    device: str = "host"
    artifact: Path | None = None
    runtimes: tuple[str, ...] = ()  # empty: the driver's default set
    family: str | None = None
    res: str = "256p"
    latent_frames: int = 3
    warmup: int = 1
    iters: int = 5
    vs_teacher: bool = False
    threads: int | None = None
    checkpoint: Path | None = None
    teacher: str = "reference"
    json_path: Path | None = None
    out_dir: Path = Path("out/bench")
    # device-specific
    simulator: bool = False
    compute_units: tuple[str, ...] = ("all",)
    serial: str | None = None
    latents: Path | None = None
    extra: dict = field(default_factory=dict)
