"""Exporters: lowered student -> Core ML / ExecuTorch / ONNX artifact + ``<name>.manifest.json``, atomically.

``export_artifact`` lowers the 5-D reference (:func:`turbo_vaed.lowering.lower`), converts it in a temp
folder inside ``out_dir``, writes the manifest there, then renames everything into place (manifest last).
On any failure the temp folder is removed and nothing new is left in ``out_dir``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from turbo_vaed.errors import UserError
from turbo_vaed.exporters.graph import Converted
from turbo_vaed.exporters.manifest import build_manifest, manifest_path, student_section, write_manifest
from turbo_vaed.exporters.phone_report import finish_report, mobile_gflops_per_frame, module_weights_bytes
from turbo_vaed.exporters.presets import (
    TARGETS,
    check_target,
    load_preset,
    lowering_options,
    resolve_delegate,
    resolve_latent_frames,
    resolve_precision,
)
from turbo_vaed.families import RESOLUTIONS, resolve_resolution
from turbo_vaed.lowering import lower
from turbo_vaed.student import TurboVAEDDecoder

__all__ = ["TARGETS", "EXTENSIONS", "ExportResult", "export_artifact", "default_name"]

EXTENSIONS = {"coreml": ".mlpackage", "executorch": ".pte", "onnx": ".onnx"}
TARGET_OF_EXT = {".mlpackage": "coreml", ".pte": "executorch", ".onnx": "onnx", ".ort": "onnx"}


@dataclass
class ExportResult:
    artifact: Path
    manifest_path: Path
    manifest: dict


def default_name(family: str, target: str, delegate: str | None, preset: str, precision: str, t: int) -> str:
    parts = [family, target] + ([delegate] if delegate and target == "executorch" else []) + [preset, precision]
    return "-".join(parts) + f"-t{t}"


def _convert(target: str, mobile, example, tmp: Path, name: str, precision: str, preset: dict,
             delegate: str | None) -> Converted:
    if target == "coreml":
        from turbo_vaed.exporters import coreml

        return coreml.convert(mobile, example, tmp, name, precision, preset)
    if target == "executorch":
        from turbo_vaed.exporters import executorch

        return executorch.convert(mobile, example, tmp, name, precision, preset, delegate or "xnnpack")
    from turbo_vaed.exporters import onnx

    return onnx.convert(mobile, example, tmp, name, precision, preset)


def _commit(files: list[Path], out_dir: Path, tmp: Path) -> None:
    """Move ``files`` from ``tmp`` into ``out_dir`` in order (replacing older ones; folders too)."""
    for i, src in enumerate(files):
        dest = out_dir / src.name
        if dest.is_dir() and not dest.is_symlink():
            os.replace(dest, tmp / f".old-{i}-{src.name}")  # removed with tmp
        os.replace(src, dest)


def export_artifact(decoder: TurboVAEDDecoder, target: str, res: str, *, latent_frames: int | None = 3,
                    precision: str | None = "fp32", out_dir: Path | str = Path("out/artifacts"),
                    delegate: str | None = None, name: str | None = None, checkpoint: str | Path | None = None,
                    progress: Callable[[str], None] | None = None) -> ExportResult:
    """Lower ``decoder`` and export it for ``target`` at ``res`` (preset name or ``WxH``).

    ``latent_frames``/``precision`` ``None`` take the preset's value (``export/<target>.toml``).
    Bad input raises :class:`UserError` before anything is written.
    """
    say = progress or (lambda _msg: None)
    target = check_target(target)
    preset = load_preset(target)
    fam = decoder.family
    width, height = resolve_resolution(res, fam)
    preset_name = res if res in RESOLUTIONS else f"{width}x{height}"
    delegate = resolve_delegate(target, delegate, preset)
    precision = resolve_precision(precision, preset, delegate)
    t = resolve_latent_frames(latent_frames, preset, preset_name)
    opts = lowering_options(preset, delegate, precision)
    name = name or default_name(fam.name, target, delegate, preset_name, precision, t)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"artifact name '{name}' must be letters, digits, '.', '_' or '-' (no folders): fix --name")
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UserError(f"checkpoint not found: {checkpoint}; pass --checkpoint PATH to a .safetensors student")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"output folder {out_dir} is a file: pass -o DIR")

    t0 = time.perf_counter()
    say(f"lowering the {fam.name} student to a rank-4 graph ({opts.shuffle}, fp16_safe={opts.fp16_safe})")
    mobile = lower(decoder, opts)
    in_shape = mobile.input_shape(t, height, width)
    out_shape = (fam.frames_out(t), 3, height, width)
    example = torch.randn(*in_shape, generator=torch.Generator().manual_seed(0))
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir))
    try:
        say(f"converting to {target}{f' ({delegate})' if delegate else ''} {precision} "
            f"[{', '.join(map(str, in_shape))}] -> [{', '.join(map(str, out_shape))}]")
        try:
            conv = _convert(target, mobile, example, tmp, name, precision, preset, delegate)
        except UserError:
            raise
        except Exception as e:  # converter failures: one line, nothing written
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UserError(f"{target} export failed ({type(e).__name__}: {msg[:300]}); nothing was written") from e
        say("counting FLOPs and writing the manifest")
        gflops = mobile_gflops_per_frame(mobile, in_shape)
        weights = conv.report.pop("weights_bytes", None) or module_weights_bytes(mobile, precision)
        report = finish_report(conv.report, weights_bytes=weights, gflops_per_frame=gflops)
        extra = {"lowering": asdict(opts), "export_seconds": round(time.perf_counter() - t0, 2),
                 "extra_files": [p.name for p in conv.extra_files], **conv.extra}
        manifest = build_manifest(
            name=name, artifact=conv.artifact, target=target, delegate=delegate, preset=preset_name,
            family=fam.name, width=width, height=height, input_shape=list(in_shape), output_shape=list(out_shape),
            precision=precision, io_dtype=conv.io_dtype, student=student_section(decoder, checkpoint),
            report=report, extra=extra)
        mpath = write_manifest(tmp / manifest_path(conv.artifact).name, manifest)
        _commit([conv.artifact, *conv.extra_files, mpath], out_dir, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    final = out_dir / conv.artifact.name
    return ExportResult(artifact=final, manifest_path=manifest_path(final), manifest=manifest)
