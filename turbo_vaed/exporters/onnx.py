"""ONNX exporter: static shapes, opset >= 18 (torch.onnx dynamo exporter), plus the ORT-format file."""

from __future__ import annotations

from pathlib import Path

import torch

from turbo_vaed.exporters.graph import CastIO, Converted, export_graph, quiet
from turbo_vaed.exporters.phone_report import onnx_report

MIN_OPSET = 18


def write_ort(onnx_path: Path, ort_path: Path, level: str = "basic") -> Path:
    """Convert to the ORT format (what ``onnxruntime.tools.convert_onnx_models_to_ort`` does for one model)."""
    import onnxruntime as ort

    levels = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
              "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}
    so = ort.SessionOptions()
    so.graph_optimization_level = levels[level]
    so.optimized_model_filepath = str(ort_path)
    so.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    return ort_path


def convert(mobile: torch.nn.Module, example: torch.Tensor, tmp: Path, name: str, precision: str,
            preset: dict) -> Converted:
    """Lowered decoder -> ``tmp/<name>.onnx`` (+ ``<name>.ort``)."""
    import onnx

    opset = int(preset.get("opset", MIN_OPSET))
    if opset < MIN_OPSET:
        raise ValueError(f"ONNX opset must be >= {MIN_OPSET}, preset says {opset}")
    module = CastIO(mobile, torch.float16) if precision == "fp16" else mobile
    ep = export_graph(module, example)
    path = tmp / f"{name}.onnx"
    with quiet():
        prog = torch.onnx.export(ep, (example,), dynamo=True, opset_version=opset, input_names=["latents"],
                                 output_names=["frames"], external_data=False, optimize=True, verbose=False)
        prog.save(str(path), external_data=False)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    extra_files = []
    if preset.get("ort_format", True):
        with quiet():
            extra_files.append(write_ort(path, tmp / f"{name}.ort", preset.get("ort_optimization", "basic")))
    report = onnx_report(path)
    return Converted(artifact=path, report=report, io_dtype="float32", extra_files=extra_files,
                     extra={"opset": opset, "ort_artifact": extra_files[0].name if extra_files else None})


def check(path: Path) -> dict:
    return onnx_report(path)
