"""Core ML exporter: coremltools ML program (.mlpackage), fixed shapes, ``latents`` -> ``frames``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from turbo_vaed.exporters.graph import Converted, export_graph, quiet
from turbo_vaed.exporters.phone_report import MAX_RANK, coreml_report, coreml_weights_bytes

NP_DTYPES = {"float32": np.float32, "float16": np.float16}


def deployment_target(name: str):
    import coremltools as ct

    try:
        return getattr(ct.target, name)
    except AttributeError:
        raise ValueError(f"unknown Core ML deployment target {name!r} (e.g. iOS18)") from None


def mil_max_rank(prog) -> int:
    """Largest tensor rank among the outputs of every op of a MIL program (nested blocks included)."""
    best = 0

    def visit(block) -> None:
        nonlocal best
        for op in block.operations:
            for v in op.outputs:
                shape = getattr(v, "shape", None)
                if shape is not None:
                    best = max(best, len(shape))
            for b in getattr(op, "blocks", []):
                visit(b)

    for fn in prog.functions.values():
        visit(fn)
    return best


def convert(mobile: torch.nn.Module, example: torch.Tensor, tmp: Path, name: str, precision: str,
            preset: dict) -> Converted:
    """Lowered decoder -> ``tmp/<name>.mlpackage``; asserts rank <= 4 on the converted MIL program."""
    import coremltools as ct

    io_dtype = preset.get("io_dtype", "float32")
    ep = export_graph(mobile, example)
    with quiet():
        ml = ct.convert(
            ep,
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
            minimum_deployment_target=deployment_target(preset.get("deployment_target", "iOS18")),
            inputs=[ct.TensorType(name="latents", shape=tuple(example.shape), dtype=NP_DTYPES[io_dtype])],
            outputs=[ct.TensorType(name="frames", dtype=NP_DTYPES[io_dtype])],
        )
    rank = mil_max_rank(ml._mil_program)
    if rank > MAX_RANK:
        raise RuntimeError(f"Core ML program has rank-{rank} tensors (the Neural Engine wants <= {MAX_RANK})")
    ml.short_description = f"Turbo-VAED decoder {name}: latents [T, C, h, w] -> frames [F, 3, H, W] in [-1, 1]"
    ml.user_defined_metadata["turbovaed.name"] = name
    path = tmp / f"{name}.mlpackage"
    with quiet():
        ml.save(str(path))
    report = coreml_report(ml.get_spec(), precision)
    report["mil_max_rank"] = rank
    report["weights_bytes"] = coreml_weights_bytes(path)
    return Converted(artifact=path, report=report, io_dtype=io_dtype,
                     extra={"deployment_target": preset.get("deployment_target", "iOS18"),
                            "compute_units": preset.get("compute_units", "all")})


def check(path: Path, precision: str) -> dict:
    """Re-read a saved .mlpackage's spec and report on it (works off macOS)."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(path))
    rep = coreml_report(spec, precision)
    rep["weights_bytes"] = coreml_weights_bytes(path)
    return rep
