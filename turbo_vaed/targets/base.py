"""The export-target interface: conversion, static report, toolchain, file suffixes and runner, per target.

A :class:`Target` sees only the lowered rank-4 module (latents ``[T, C, h, w]`` -> frames ``[F, 3, H, W]``)
and the preset; a :class:`Runner` sees only the artifact and its manifest.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from turbo_vaed.errors import UserError

if TYPE_CHECKING:  # torch only for conversion: a runner (ONNX Runtime) runs without it
    import torch

NP = {"float32": np.float32, "float16": np.float16}


@dataclass(frozen=True)
class GraphIO:
    """Names of a lowered graph's inputs and outputs, in call order (a whole-chunk decoder: latents -> frames;
    a streaming step adds its state tensors)."""

    inputs: tuple[str, ...] = ("latents",)
    outputs: tuple[str, ...] = ("frames",)


def as_examples(example) -> tuple[torch.Tensor, ...]:
    """One example tensor or a tuple of them, as a tuple."""
    return tuple(example) if isinstance(example, tuple | list) else (example,)


@dataclass
class Converted:
    """What a target wrote into the temp folder: the artifact first, then companions."""

    artifact: Path
    report: dict
    io_dtype: str = "float32"
    extra_files: list[Path] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


class Runner:
    """Loads an artifact once; ``run`` decodes latents ``[T, C, h, w]`` float32 to frames ``[F, 3, H, W]`` float32."""

    name = "?"
    version = "?"

    def __init__(self, artifact: Path, threads: int | None = None) -> None:
        from turbo_vaed.exporters.manifest import read_manifest

        self.artifact = Path(artifact)
        self.threads = threads
        self.manifest = read_manifest(self.artifact)
        self.input_shape = tuple(self.manifest["inputs"][0]["shape"])
        self.input_dtype = NP.get(self.manifest["inputs"][0].get("dtype", "float32"))
        if self.input_dtype is None:
            raise UserError(f"{self.artifact.name}: its manifest names input dtype "
                            f"{self.manifest['inputs'][0].get('dtype')!r}, not float32/float16: re-export it")
        from turbo_vaed.guards import check_artifact, reading

        check_artifact(self.artifact, self.manifest)  # before any native runtime sees the file
        t0 = time.perf_counter()
        with reading(self.artifact, f"{self.name} artifact", "re-export it with `turbovaed export`"):
            self._load()
        self.load_ms = (time.perf_counter() - t0) * 1e3

    def _load(self) -> None:
        raise NotImplementedError

    def _run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def check_input(self, latents: np.ndarray) -> np.ndarray:
        x = np.asarray(latents)
        if tuple(x.shape) != self.input_shape:
            raise UserError(f"{self.artifact.name} takes latents of shape {list(self.input_shape)} [T, C, h, w], "
                            f"got {list(x.shape)}: crop/pad the latents or export for this shape")
        return np.ascontiguousarray(x, dtype=self.input_dtype)

    def run(self, latents: np.ndarray) -> np.ndarray:
        out = self._run(self.check_input(latents))
        return np.asarray(out, dtype=np.float32)

    def run_all(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output (manifest order) for named inputs (a streaming step: latents, flags, states).

        A runner may write a streaming step's next states into the buffers of its state inputs (ONNX Runtime
        does: one copy of the states in memory); feed each call the states the previous call returned.
        """
        specs = self.manifest["inputs"]
        missing = [s["name"] for s in specs if s["name"] not in feeds]
        if missing:
            raise UserError(f"{self.artifact.name} needs inputs {', '.join(missing)}")
        arrays = []
        for s in specs:
            x = np.asarray(feeds[s["name"]])
            if list(x.shape) != list(s["shape"]):
                raise UserError(f"{self.artifact.name}: input {s['name']} must be {s['shape']}, got {list(x.shape)}")
            arrays.append(np.ascontiguousarray(x, dtype=NP[s.get("dtype", "float32")]))
        return [np.asarray(o, dtype=np.float32) for o in self._run_all(arrays)]

    def _run_all(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        raise UserError(f"{self.name} runner of {self.artifact.name} takes one input only")


class Target:
    """One export target. Subclasses live in ``turbo_vaed/targets/<name>.py`` as ``TARGET``."""

    name: ClassVar[str]  # coreml | executorch | onnx
    title: ClassVar[str] = ""  # how users write it: Core ML, ExecuTorch, ONNX
    runtime: ClassVar[str]  # the runner's name in results: coreml | executorch | onnxruntime
    suffixes: ClassVar[tuple[str, ...]]  # the artifact's suffix first, then companions it also runs
    delegates: ClassVar[tuple[str | None, ...]] = (None,)  # first is the default
    description: ClassVar[str] = ""

    @property
    def suffix(self) -> str:
        return self.suffixes[0]

    def convert(self, mobile: torch.nn.Module, example: torch.Tensor | tuple, tmp: Path, name: str, precision: str,
                preset: dict, delegate: str | None, io: GraphIO | None = None) -> Converted:
        """Lowered module -> ``tmp/<name><suffix>`` (+ companions) and its static phone-readiness report."""
        raise NotImplementedError

    def check(self, path: Path, precision: str, recorded: dict) -> dict:
        """Re-read a saved artifact: its static report merged over the manifest's ``recorded`` one."""
        raise NotImplementedError

    def toolchain(self) -> dict:
        """Versions of the converter/runtime packages this target uses."""
        return {}

    def runner(self, artifact: Path, threads: int | None, compute_units: str = "all") -> Runner:
        raise NotImplementedError
