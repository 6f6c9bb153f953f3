"""Export targets: one module per target (``turbo_vaed/targets/<name>.py`` defining ``TARGET``).

``TARGET_NAMES`` is the one list of targets; suffixes, runtimes and delegates are read from the modules.
Adding a target (LiteRT, QNN) is one module here, one preset in ``export/`` and one schema value.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from turbo_vaed.errors import UserError
from turbo_vaed.targets.base import Converted, Runner, Target

TARGET_NAMES = ("coreml", "executorch", "onnx")

__all__ = ["TARGET_NAMES", "Converted", "Runner", "Target", "get_target", "targets", "target_of_artifact",
           "target_of_runtime", "runtime_of_suffix", "load_runner"]

_CACHE: dict[str, Target] = {}


def get_target(name: str | None) -> Target:
    """The target called ``name``, or a one-line :class:`UserError` listing them."""
    if name not in TARGET_NAMES:
        raise UserError(f"unknown export target '{name}': choose one of {', '.join(TARGET_NAMES)} (--target)")
    if name not in _CACHE:
        _CACHE[name] = importlib.import_module(f"{__name__}.{name}").TARGET
    return _CACHE[name]


def targets() -> list[Target]:
    return [get_target(n) for n in TARGET_NAMES]


def runtime_of_suffix() -> dict[str, str]:
    """Artifact suffix -> runtime name (``.onnx`` and ``.ort`` -> onnxruntime, ...)."""
    return {s: t.runtime for t in targets() for s in t.suffixes}


def target_of_artifact(path: str | Path) -> Target:
    """The target an artifact belongs to, from its suffix."""
    suffix = Path(path).suffix
    for t in targets():
        if suffix in t.suffixes:
            return t
    known = ", ".join(s for t in targets() for s in t.suffixes)
    raise UserError(f"cannot run {Path(path).name}: expected one of {known}")


def target_of_runtime(runtime: str) -> Target:
    for t in targets():
        if t.runtime == runtime:
            return t
    raise UserError(f"no export target runs on '{runtime}'")


def load_runner(artifact: str | Path, threads: int | None = None, compute_units: str = "all") -> Runner:
    """A loaded runner for ``artifact`` (its manifest must lie next to it)."""
    p = Path(artifact)
    target = target_of_artifact(p)
    if not p.exists():
        raise UserError(f"artifact not found: {p}; export one with `turbovaed export`")
    return target.runner(p, threads, compute_units)
