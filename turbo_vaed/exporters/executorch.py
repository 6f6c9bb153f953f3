"""ExecuTorch exporter: .pte with the XNNPACK delegate (Android CPU) or the Core ML delegate (iOS)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from turbo_vaed.exporters.graph import Converted, export_graph, quiet
from turbo_vaed.exporters.phone_report import executorch_report, pte_report


def partitioner(delegate: str, precision: str, preset: dict):
    if delegate == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    import coremltools as ct
    from executorch.backends.apple.coreml.compiler import CoreMLBackend
    from executorch.backends.apple.coreml.partition import CoreMLPartitioner

    from turbo_vaed.exporters.coreml import deployment_target

    specs = CoreMLBackend.generate_compile_specs(
        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
        minimum_deployment_target=deployment_target(preset.get("deployment_target", "iOS18")),
    )
    return CoreMLPartitioner(compile_specs=specs)


def convert(mobile: torch.nn.Module, example: torch.Tensor, tmp: Path, name: str, precision: str,
            preset: dict, delegate: str) -> Converted:
    """Lowered decoder -> ``tmp/<name>.pte``; the report lists partitions and ops left to portable kernels."""
    from executorch.exir import to_edge_transform_and_lower

    module, io_dtype = mobile, "float32"
    if delegate == "xnnpack" and precision == "fp16":
        # an fp16 graph with fp16 I/O: XNNPACK does not take boundary casts, which would run as portable kernels
        module, example, io_dtype = copy.deepcopy(mobile).half(), example.half(), "float16"
    ep = export_graph(module, example)
    with quiet():
        edge = to_edge_transform_and_lower(ep, partitioner=[partitioner(delegate, precision, preset)])
        report = executorch_report(edge.exported_program())
        prog = edge.to_executorch()
    path = tmp / f"{name}.pte"
    with open(path, "wb") as f:
        prog.write_to_file(f)
    report["weights_bytes"] = pte_report(path)["constant_bytes"]  # what the file holds
    if delegate == "xnnpack" and precision == "fp16":
        report["notes"] = ["XNNPACK stores conv weights as fp32 in the .pte (converted to fp16 at load): "
                           "the file is not smaller than fp32, run-time memory and compute are fp16"]
    return Converted(artifact=path, report=report, io_dtype=io_dtype,
                     extra={"deployment_target": preset.get("deployment_target")} if delegate == "coreml" else {})


def check(path: Path) -> dict:
    """What the .pte itself says (delegate calls, ops left to kernels, constant bytes)."""
    return pte_report(path)
