"""The runner interface shared by every runtime."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from turbo_vaed.errors import UserError
from turbo_vaed.exporters.manifest import read_manifest

NP = {"float32": np.float32, "float16": np.float16}


class Runner:
    """Loads an artifact once; ``run`` decodes latents ``[T, C, h, w]`` float32 to frames ``[F, 3, H, W]`` float32."""

    name = "?"
    version = "?"

    def __init__(self, artifact: Path, threads: int | None = None) -> None:
        self.artifact = Path(artifact)
        self.threads = threads
        self.manifest = read_manifest(self.artifact)
        self.input_shape = tuple(self.manifest["inputs"][0]["shape"])
        self.input_dtype = NP[self.manifest["inputs"][0].get("dtype", "float32")]
        t0 = time.perf_counter()
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
