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


def test_720p_coreml_parity(student, tmp_path):
    """Full-frame 720p Core ML numbers: the saved ML program through the MIL reference (fp16 emulation off macOS)."""
    from turbo_vaed.parity import FP16_MIN_PSNR

    res = export_artifact(student, "coreml", "720p", latent_frames=1, precision="fp16", out_dir=tmp_path)
    rec = run_parity(res.artifact, threads=2)
    assert rec["passed"] and rec["psnr_db"] >= FP16_MIN_PSNR, rec


def test_720p_onnx_parity(student, tmp_path):
    """Full-frame 720p numbers through ONNX Runtime (one latent frame keeps the CPU time to seconds)."""
    res = export_artifact(student, "onnx", "720p", latent_frames=1, out_dir=tmp_path)
    rec = run_parity(res.artifact, threads=2)
    assert rec["max_abs_error"] <= FP32_MAX_ABS and rec["passed"]


@pytest.fixture(scope="module")
def official_ltx():
    """The official Turbo-VAED LTX decoder at full size (models/turbo-vaed/LTX.json), seed-0 random weights."""
    from turbo_vaed.decoders.store import random_decoder
    from turbo_vaed.decoders.turbo_vaed_official import full_size_config

    return random_decoder("turbo-vaed", full_size_config("ltx"))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnx", "executorch", "coreml"])
def test_720p_export_official_turbo_vaed_ltx(target, official_ltx, tmp_path):
    """1280x704 (720p rounded to LTX's x32), the preset's chunk: rank 4, one partition, nothing off the fast path."""
    assert official_ltx.parameters() == 41_896_023
    res = export_artifact(official_ltx, target, "720p", latent_frames=None, precision=None, out_dir=tmp_path)
    m = res.manifest
    chunk = load_preset(target)["latent_frames"]["720p"]
    assert (m["width"], m["height"], m["preset"]) == (1280, 704, "720p")
    assert m["decoder"]["arch"] == "turbo-vaed" and m["decoder"]["latent_convention"] == "raw"
    assert m["inputs"][0]["shape"] == [chunk, 128, 22, 40]
    assert m["outputs"][0]["shape"] == [8 * chunk - 7, 3, 704, 1280]
    rep = m["report"]
    assert rep["max_rank"] <= 4 and rep["slow_path_ops"] == [] and rep["partitions"] == 1
    if target == "executorch":
        assert rep["non_delegated_ops"] == {} and rep["backends"] == {"XnnpackBackend": 1}
    if target == "coreml":
        assert rep["mil_max_rank"] <= 4
    assert m["export_seconds"] < 300  # "in minutes" on 2 shared cores
    print(f"\nofficial Turbo-VAED LTX 720p {target}: export {m['export_seconds']:.1f} s, "
          f"{m['size_bytes'] / 2**20:.1f} MiB, {rep.get('gflops_per_frame', 0):.1f} GFLOPs/frame")
    assert res.artifact.exists() and res.manifest_path.is_file()
