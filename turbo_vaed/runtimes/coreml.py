"""Core ML runner (coremltools ``MLModel``): prediction needs macOS."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from turbo_vaed.errors import UserError
from turbo_vaed.runtimes.base import Runner

COMPUTE_UNITS = {"all": "ALL", "cpuAndNeuralEngine": "CPU_AND_NE", "cpuAndGPU": "CPU_AND_GPU", "cpuOnly": "CPU_ONLY"}


def check_macos() -> None:
    if platform.system() != "Darwin":
        raise UserError(f"Core ML prediction needs macOS (this is {platform.system()}): run `turbovaed parity` or "
                        "the bench on a Mac; the static report works here (`turbovaed export --check ARTIFACT`)")


def compute_unit(name: str):
    import coremltools as ct

    if name not in COMPUTE_UNITS:
        raise UserError(f"unknown compute units '{name}': use one of {', '.join(COMPUTE_UNITS)}")
    return getattr(ct.ComputeUnit, COMPUTE_UNITS[name])


class CoreMLRunner(Runner):
    name = "coreml"

    def __init__(self, artifact: Path, threads: int | None = None, compute_units: str = "all") -> None:
        compute_unit(compute_units)  # validate before loading anything
        check_macos()
        self.compute_units = compute_units
        super().__init__(artifact, threads)

    def _load(self) -> None:  # pragma: no cover - macOS only
        import coremltools as ct

        self.version = ct.__version__
        self.model = ct.models.MLModel(str(self.artifact), compute_units=compute_unit(self.compute_units))

    def _run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - macOS only
        return self.model.predict({"latents": x})["frames"]
