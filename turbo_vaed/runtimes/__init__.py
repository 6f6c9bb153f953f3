"""Run an exported artifact: ``load_runner(artifact) -> Runner`` with ``.run(latents [T,C,h,w]) -> frames``.

ONNX Runtime (CPU EP) for .onnx/.ort, the ExecuTorch Python runtime for .pte, Core ML (coremltools, macOS
only) for .mlpackage. Every runner checks the input against the artifact's manifest and returns float32.
"""

from __future__ import annotations

from pathlib import Path

from turbo_vaed.errors import UserError
from turbo_vaed.runtimes.base import Runner

__all__ = ["Runner", "load_runner", "RUNTIME_OF_EXT"]

RUNTIME_OF_EXT = {".onnx": "onnxruntime", ".ort": "onnxruntime", ".pte": "executorch", ".mlpackage": "coreml"}


def load_runner(artifact: str | Path, threads: int | None = None, compute_units: str = "all") -> Runner:
    """A loaded runner for ``artifact`` (its manifest must lie next to it)."""
    p = Path(artifact)
    rt = RUNTIME_OF_EXT.get(p.suffix)
    if rt is None:
        raise UserError(f"cannot run {p.name}: expected one of {', '.join(RUNTIME_OF_EXT)}")
    if not p.exists():
        raise UserError(f"artifact not found: {p}; export one with `turbovaed export`")
    if rt == "onnxruntime":
        from turbo_vaed.runtimes.ort import OrtRunner

        return OrtRunner(p, threads)
    if rt == "executorch":
        from turbo_vaed.runtimes.et import ExecuTorchRunner

        return ExecuTorchRunner(p, threads)
    from turbo_vaed.runtimes.coreml import CoreMLRunner

    return CoreMLRunner(p, threads, compute_units)
