"""Exporters at 256p: ONNX and ExecuTorch parity, Core ML conversion + static report, CLI and bad input."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import pytest
import torch

from tests.conftest import small_student
from turbo_vaed.exporters import export_artifact
from turbo_vaed.exporters.manifest import read_manifest, tree_sha256, validate_manifest
from turbo_vaed.parity import FP16_MIN_PSNR, FP32_MAX_ABS, run_parity

WAN_LATENTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "wan21_latents_61f_320x512.pth"
IS_MAC = platform.system() == "Darwin"


def flat(text: str) -> str:
    """Console text with rich's line wrapping undone."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def student():
    return small_student("wan")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def onnx_art(student, out_dir):
    return export_artifact(student, "onnx", "256p", latent_frames=2, out_dir=out_dir)


@pytest.fixture(scope="module")
def pte_art(student, out_dir):
    return export_artifact(student, "executorch", "256p", latent_frames=2, out_dir=out_dir)


@pytest.fixture(scope="module")
def coreml_art(student, out_dir):
    return export_artifact(student, "coreml", "256p", latent_frames=2, precision="fp16", out_dir=out_dir)


def check_manifest(res, target: str) -> dict:
    m = validate_manifest(json.loads(res.manifest_path.read_text()), res.manifest_path)
    assert m["target"] == target and m["family"] == "wan" and (m["width"], m["height"]) == (256, 256)
    assert m["inputs"][0]["shape"] == [2, 16, 32, 32] and m["outputs"][0]["shape"] == [5, 3, 256, 256]
    assert m["latent_frames"] == 2 and m["output_frames"] == 5
    assert m["sha256"] == tree_sha256(res.artifact) and m["size_bytes"] > 0
    assert m["report"]["max_rank"] <= 4 and m["report"]["slow_path_ops"] == []
    assert m["report"]["weights_bytes"] > 0 and m["report"]["gflops_per_frame"] > 0
    assert not list(res.artifact.parent.glob(".*tmp"))  # temp folders gone
    return m


def test_onnx_export_and_parity(onnx_art):
    m = check_manifest(onnx_art, "onnx")
    assert onnx_art.artifact.suffix == ".onnx" and onnx_art.artifact.with_suffix(".ort").is_file()
    assert m["opset"] >= 18 and m["report"]["partitions"] == 1
    assert m["report"]["ep_partitions"] == {"NNAPI EP": 1, "CoreML EP": 1}
    assert "DepthToSpace" not in m["report"]["op_counts"]  # the ONNX preset uses the NNAPI-friendly shuffle
    rec = run_parity(onnx_art.artifact, threads=2)
    assert rec["runtime"] == "onnxruntime" and rec["passed"]
    assert rec["max_abs_error"] <= FP32_MAX_ABS
    assert read_manifest(onnx_art.artifact)["parity"]["max_abs_error"] == rec["max_abs_error"]
    rec_ort = run_parity(onnx_art.artifact.with_suffix(".ort"), threads=2, write=False)
    assert rec_ort["max_abs_error"] <= FP32_MAX_ABS


def test_executorch_xnnpack_export_and_parity(pte_art):
    from turbo_vaed.targets.executorch import pte_report

    m = check_manifest(pte_art, "executorch")
    assert m["delegate"] == "xnnpack" and m["precision"] == "fp32"
    assert m["report"]["partitions"] == 1 and m["report"]["non_delegated_ops"] == {}
    on_disk = pte_report(pte_art.artifact)  # what the .pte itself says
    assert on_disk["backends"] == {"XnnpackBackend": 1} and on_disk["non_delegated_ops"] == {}
    rec = run_parity(pte_art.artifact, threads=2)
    assert rec["runtime"] == "executorch" and rec["max_abs_error"] <= FP32_MAX_ABS and rec["passed"]


def test_executorch_fp16_psnr(student, out_dir):
    res = export_artifact(student, "executorch", "256p", latent_frames=2, precision="fp16", out_dir=out_dir)
    m = res.manifest
    assert m["inputs"][0]["dtype"] == "float16" and m["report"]["partitions"] == 1
    assert m["report"]["non_delegated_ops"] == {}
    latents = WAN_LATENTS if WAN_LATENTS.is_file() else None  # real activations where available
    rec = run_parity(res.artifact, latents=latents, layout="ntchw", threads=2)
    assert rec["psnr_db"] >= FP16_MIN_PSNR and rec["passed"]


def read_mil_ranks(package: Path) -> tuple[int, set[str]]:
    """Max tensor rank and op types, read from the saved MIL program."""
    import coremltools as ct

    spec = ct.utils.load_spec(str(package))
    assert spec.WhichOneof("Type") == "mlProgram"
    rank, ops = 0, set()
    for fn in spec.mlProgram.functions.values():
        for blk in fn.block_specializations.values():
            for op in blk.operations:
                ops.add(op.type)
                for o in op.outputs:
                    rank = max(rank, o.type.tensorType.rank)
    return rank, ops


def test_coreml_conversion_and_report(coreml_art, cli):
    m = check_manifest(coreml_art, "coreml")
    assert coreml_art.artifact.suffix == ".mlpackage" and coreml_art.artifact.is_dir()
    assert m["precision"] == "fp16" and m["deployment_target"] == "iOS18"
    assert m["report"]["spec_version"] >= 9  # iOS 18
    rank, ops = read_mil_ranks(coreml_art.artifact)
    assert rank <= 4
    assert "pixel_shuffle" in ops and "conv" in ops
    assert not ops & {"gather", "upsample_bilinear", "upsample_nearest_neighbor", "resize"}
    import coremltools as ct

    spec = ct.utils.load_spec(str(coreml_art.artifact))
    assert [i.name for i in spec.description.input] == ["latents"]
    assert [o.name for o in spec.description.output] == ["frames"]
    assert list(spec.description.output[0].type.multiArrayType.shape) == [5, 3, 256, 256]
    res = cli("export", "--check", coreml_art.artifact)
    assert res.code == 0, res.err
    assert "matches its manifest" in flat(res.out) and "max tensor rank" in flat(res.out)


def test_executorch_coreml_delegate(student, out_dir):
    res = export_artifact(student, "executorch", "256p", latent_frames=2, precision=None, delegate="coreml",
                          out_dir=out_dir)
    assert res.manifest["precision"] == "fp16"  # the preset's default for the Core ML delegate
    assert res.manifest["report"]["backends"] == {"CoreMLBackend": 1}
    assert res.manifest["report"]["non_delegated_ops"] == {} and res.manifest["report"]["max_rank"] <= 4
    if not IS_MAC:  # the embedded ML program, extracted from the .pte and evaluated (fp16 emulation)
        rec = run_parity(res.artifact, write=False)
        assert rec["evaluator"].startswith("mil-reference") and rec["psnr_db"] >= FP16_MIN_PSNR, rec


@pytest.mark.skipif(not IS_MAC, reason="Core ML prediction needs macOS (coremltools cannot run models on Linux)")
def test_coreml_prediction_parity(coreml_art):
    latents = WAN_LATENTS if WAN_LATENTS.is_file() else None
    rec = run_parity(coreml_art.artifact, latents=latents, layout="ntchw", compute_units="cpuOnly")
    assert rec["runtime"] == "coreml" and rec["psnr_db"] >= FP16_MIN_PSNR


@pytest.mark.skipif(IS_MAC, reason="off macOS parity evaluates the saved ML program (on macOS: the prediction test)")
def test_coreml_parity_off_macos_uses_the_mil_reference(coreml_art, cli):
    res = cli("parity", coreml_art.artifact)
    assert res.code == 0, res.err
    assert "mil-reference" in flat(res.out) and "passed" in res.out
    rec = read_manifest(coreml_art.artifact)["parity"]
    assert rec["evaluator"] == "mil-reference" and rec["compute_units"] is None
    assert rec["passed"] and rec["psnr_db"] >= FP16_MIN_PSNR, rec


def test_cli_export_check_and_parity_with_checkpoint(student, tmp_path, cli):
    from turbo_vaed.checkpoint import save_student

    ckpt = save_student(student, tmp_path / "student.safetensors")
    out = tmp_path / "out"
    res = cli("export", "--target", "onnx", "--res", "256p", "--family", "wan", "--checkpoint", ckpt,
              "--latent-frames", "1", "-o", out)
    assert res.code == 0, res.err
    art = out / "wan-onnx-256p-fp32-t1.onnx"
    assert art.is_file() and "max tensor rank" in flat(res.out) and "ops off the fast path" in flat(res.out)
    m = read_manifest(art)
    assert m["decoder"]["checkpoint"] == str(ckpt) and m["decoder"]["checkpoint_sha256"]
    assert m["decoder"]["arch"] == "student"
    res = cli("export", "--check", art)
    assert res.code == 0 and "matches its manifest" in flat(res.out)
    res = cli("parity", art, "--threads", "2")
    assert res.code == 0, res.err
    assert "passed" in res.out and read_manifest(art)["parity"]["passed"] is True


def test_cli_parity_on_real_latents_file(onnx_art, cli):
    if not WAN_LATENTS.is_file():
        pytest.skip("real Wan latents (../shared/data) not present here")
    res = cli("parity", onnx_art.artifact, "--latents", WAN_LATENTS, "--layout", "ntchw", "--no-write")
    assert res.code == 0, res.err
    assert "wan21_latents_61f_320x512.pth: first 2 of 16 frames" in flat(res.out)


@pytest.mark.parametrize("argv, needle", [
    (["--target", "tflite"], "unknown export target"),
    (["--target", "onnx", "--res", "999p"], "unsupported resolution"),
    (["--target", "onnx", "--res", "250x250"], "not divisible"),
    (["--target", "onnx", "--checkpoint", "missing.safetensors"], "checkpoint not found"),
    (["--target", "onnx", "--precision", "int3"], "unknown precision"),
    (["--target", "onnx", "--delegate", "xnnpack"], "--delegate applies"),
    (["--target", "executorch", "--delegate", "qnn"], "unknown ExecuTorch delegate"),
    (["--target", "onnx", "--latent-frames", "0"], "--latent-frames"),
    ([], "--target is required"),
])
def test_cli_bad_input_exits_2_without_files(argv, needle, tmp_path, cli):
    out = tmp_path / "out"
    res = cli("export", "--family", "wan", "-o", out, *argv)
    assert res.code == 2
    assert needle in res.err and len(res.err.strip().splitlines()) == 1, res.err
    assert not out.exists() or not any(out.iterdir())


def test_bad_artifact_for_check_and_parity(tmp_path, cli):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not onnx")
    for argv in (("export", "--check", bad), ("export", "--check", tmp_path / "none.pte"),
                 ("parity", tmp_path / "none.pte"), ("export", "--check", tmp_path / "x.txt")):
        res = cli(*argv)
        assert res.code == 2 and len(res.err.strip().splitlines()) == 1, (argv, res.err)


def test_failed_conversion_leaves_nothing(student, tmp_path, monkeypatch):
    from turbo_vaed.errors import UserError
    from turbo_vaed.targets import onnx as onnx_exporter

    def broken(mobile, example, tmp, name, precision, preset):
        (tmp / f"{name}.onnx").write_bytes(b"partial")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(onnx_exporter, "convert", broken)
    with pytest.raises(UserError, match="nothing was written"):
        export_artifact(student, "onnx", "256p", latent_frames=1, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_reexport_replaces_mlpackage_atomically(student, tmp_path):
    a = export_artifact(student, "coreml", "256p", latent_frames=1, precision="fp16", out_dir=tmp_path, name="m")
    torch.manual_seed(1)
    other = small_student("wan")
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.01)
    b = export_artifact(other, "coreml", "256p", latent_frames=1, precision="fp16", out_dir=tmp_path, name="m")
    assert a.artifact == b.artifact and b.manifest["sha256"] == tree_sha256(b.artifact)
    assert a.manifest["sha256"] != b.manifest["sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.manifest.json", "m.mlpackage"]
    rec = run_parity(b.artifact, reference=other, write=False)  # the replaced program is the new weights'
    assert rec["passed"] and rec["psnr_db"] >= FP16_MIN_PSNR, rec


def test_demo_export_stage(student, tmp_path):
    from turbo_vaed.demo import DemoContext
    from turbo_vaed.exporters.demo_stage import export_stage, export_table

    z = torch.randn(1, 16, 5, 20, 24, generator=torch.Generator().manual_seed(0))  # tiled up to 32x32
    ctx = DemoContext(out_dir=tmp_path, family="wan", teacher=None, student=student, latents=z)
    result = export_stage(ctx, latent_frames=1, threads=2)
    assert ctx.results["export"] is result
    rows = {r["target"]: r for r in result["rows"]}
    assert set(rows) == {"coreml", "executorch", "onnx"}
    for target in ("executorch", "onnx"):
        p = rows[target]["parity"]
        assert p["passed"] and p["max_abs_error"] <= FP32_MAX_ABS and "(tiled)" in p["latents"]
    assert rows["coreml"]["max_rank"] <= 4 and Path(rows["coreml"]["artifact"]).is_dir()
    p = rows["coreml"]["parity"]  # off macOS: the MIL reference evaluator, fp16 emulation
    assert p["passed"] and p["psnr_db"] >= FP16_MIN_PSNR, p
    assert p["evaluator"] == ("coreml" if IS_MAC else "mil-reference")
    assert export_table(result).row_count == 3
