"""720p exports, one family per target (the built-in reference student's config), with the preset's chunk."""

from __future__ import annotations

import pytest
import torch

from turbo_vaed.config import load_student_config
from turbo_vaed.decoders.student_model import TurboVAEDDecoder
from turbo_vaed.exporters import export_artifact
from turbo_vaed.exporters.presets import load_preset
from turbo_vaed.parity import FP32_MAX_ABS, run_parity


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return TurboVAEDDecoder(load_student_config("wan-reference")).eval()


@pytest.mark.parametrize("target", ["onnx", "executorch", "coreml"])
def test_720p_export(target, student, tmp_path):
    res = export_artifact(student, target, "720p", latent_frames=None, precision=None, out_dir=tmp_path)
    m = res.manifest
    chunk = load_preset(target)["latent_frames"]["720p"]
    assert (m["width"], m["height"], m["preset"]) == (1280, 720, "720p")
    assert m["latent_frames"] == chunk and m["inputs"][0]["shape"] == [chunk, 16, 90, 160]
    assert m["outputs"][0]["shape"] == [1 + 4 * (chunk - 1), 3, 720, 1280]
    assert m["report"]["max_rank"] <= 4 and m["report"]["slow_path_ops"] == []
    assert m["report"]["partitions"] == 1
    assert m["export_seconds"] < 300  # "in minutes" on 2 shared cores
    assert res.artifact.exists() and res.manifest_path.is_file()


def test_720p_onnx_parity(student, tmp_path):
    """Full-frame 720p numbers through ONNX Runtime (one latent frame keeps the CPU time to seconds)."""
    res = export_artifact(student, "onnx", "720p", latent_frames=1, out_dir=tmp_path)
    rec = run_parity(res.artifact, threads=2)
    assert rec["max_abs_error"] <= FP32_MAX_ABS and rec["passed"]
