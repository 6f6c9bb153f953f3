"""The decoder/target seams, choices resolved once, and the three default workflows (issue: foundation)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from torch import nn

from tests.conftest import latents_for, small_student, small_teacher
from turbo_vaed.config import student_families
from turbo_vaed.decoders import Architecture, architectures, register
from turbo_vaed.decoders.store import load_decoder, random_decoder, save_decoder
from turbo_vaed.exporters.manifest import read_manifest
from turbo_vaed.families import get_family
from turbo_vaed.lowering import spatial_shuffle
from turbo_vaed.teachers import teacher_decode

ELLIPSIS = "\u2026"


# ---------------------------------------------------------------- frame rules


@pytest.mark.parametrize("family", student_families())
def test_student_frame_count_equals_teachers(family):
    """The student decodes exactly the teacher's frame count for T = 1..4 (CogVideoX: 4T for even T)."""
    teacher, student = small_teacher(family), small_student(family)
    for t in (1, 2, 3, 4):
        z = latents_for(family, t=t, h=2, w=2)
        with torch.no_grad():
            f_teacher = teacher_decode(teacher, z).shape[2]
            f_student = student(z).shape[2]
        assert f_student == f_teacher == get_family(family).frames_out(t), (family, t, f_student, f_teacher)


def test_cogvideox_rule_is_the_diffusers_one():
    fam = get_family("cogvideox")
    assert [fam.frames_out(t) for t in (1, 2, 3, 4)] == [1, 8, 9, 16]
    assert [get_family("dcae").frames_out(t) for t in (1, 2, 3)] == [4, 8, 12]


# ---------------------------------------------------------------- a decoder architecture defined only here


@dataclass(frozen=True)
class TinyConfig:
    family: str = "wan"
    width: int = 8


class TinyNet(nn.Module):
    """Causal 2-tap temporal conv, SiLU, 1x1 conv to 3*8*8 channels, pixel shuffle x8: F = T frames."""

    def __init__(self, cfg: TinyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c = get_family(cfg.family).latent_channels
        self.temporal = nn.Conv3d(c, cfg.width, (2, 3, 3), padding=(0, 1, 1))
        self.out = nn.Conv2d(cfg.width, 3 * 64, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.cat([z[:, :, :1], z], dim=2)  # causal: first frame repeated
        x = F.silu(self.temporal(x))
        b, c, t, h, w = x.shape
        y = F.pixel_shuffle(self.out(x.transpose(1, 2).reshape(b * t, c, h, w)), 8)
        return torch.tanh(y).reshape(b, t, 3, h * 8, w * 8).transpose(1, 2)


class TinyMobile(nn.Module):
    """The same numbers on frames in the batch axis: both taps stacked on channels for one Conv2d."""

    def __init__(self, src: TinyNet, shuffle: str) -> None:
        super().__init__()
        w = src.temporal.weight.detach()  # [Cout, Cin, 2, 3, 3]
        self.weight = nn.Parameter(w.permute(0, 2, 1, 3, 4).reshape(w.shape[0], -1, 3, 3).clone())
        self.bias = nn.Parameter(src.temporal.bias.detach().clone())
        self.out = src.out
        self.shuffle = shuffle

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        t = z.shape[0]
        x = torch.cat([z[:1], z], dim=0)
        x = torch.cat([x[0:t], x[1 : t + 1]], dim=1)
        x = F.conv2d(x, self.weight, self.bias, padding=1)
        x = x * torch.sigmoid(x)
        return torch.tanh(spatial_shuffle(self.out(x), 8, self.shuffle))


class TinyArch(Architecture):
    name = "tiny-test"

    def config_from_dict(self, d: dict) -> TinyConfig:
        return TinyConfig(**d)

    def config_to_dict(self, cfg: TinyConfig) -> dict:
        return {"family": cfg.family, "width": cfg.width}

    def family(self, cfg: TinyConfig) -> str:
        return cfg.family

    def build(self, cfg: TinyConfig) -> nn.Module:
        return TinyNet(cfg)

    def frames_out(self, cfg: TinyConfig, latent_frames: int) -> int:
        return latent_frames

    def latent_convention(self, cfg) -> str:
        return "normalised"

    def lower(self, module: nn.Module, options) -> nn.Module:
        return TinyMobile(module, options.shuffle)

    def owns(self, module: nn.Module) -> bool:
        return isinstance(module, TinyNet)


@pytest.fixture(scope="module")
def tiny_arch():
    arch = register(TinyArch())
    yield arch
    from turbo_vaed import decoders

    decoders._REGISTRY.pop(arch.name, None)


def test_seam_a_new_architecture_goes_everywhere(tiny_arch, tmp_path):
    """A decoder defined only in this test: lower, export to all three targets, parity, host bench."""
    from turbo_vaed.bench.host import bench_host
    from turbo_vaed.bench.options import BenchOptions
    from turbo_vaed.exporters import export_artifact
    from turbo_vaed.parity import run_parity
    from turbo_vaed.targets import TARGET_NAMES, get_target

    assert "tiny-test" in architectures()
    dec = random_decoder("tiny-test", {"family": "wan", "width": 8})
    z = latents_for("wan", t=2, h=4, w=4)
    with torch.no_grad():
        ref = dec(z)
        low = dec.lower()(z[0].transpose(0, 1)).transpose(0, 1)[None]
    assert ref.shape == (1, 3, 2, 32, 32)
    assert (low - ref).abs().max() <= 1e-5
    arts = {}
    for target in TARGET_NAMES:
        res = export_artifact(dec, target, "32x32", latent_frames=2, precision="fp32", out_dir=tmp_path / "art")
        m = read_manifest(res.artifact)
        assert m["decoder"]["arch"] == "tiny-test" and m["decoder"]["checkpoint"] == "random"
        assert m["output_frames"] == 2 and m["report"]["max_rank"] <= 4
        assert res.artifact.suffix == get_target(target).suffix
        arts[target] = res.artifact
    for target in TARGET_NAMES:  # Core ML off macOS: the saved ML program through the MIL reference evaluator
        rec = run_parity(arts[target])  # the reference is rebuilt from the manifest alone
        assert rec["passed"] and rec["max_abs_error"] <= 1e-4, rec
    ckpt = save_decoder(dec, tmp_path / "tiny.safetensors")
    assert load_decoder(ckpt).weights_sha256() == dec.weights_sha256()
    opts = BenchOptions(checkpoint=ckpt, runtimes=("torch", "torch-lowered", "onnxruntime", "executorch"),
                        res="32x32", latent_frames=2, warmup=0, iters=1, threads=1, out_dir=tmp_path / "bench",
                        extra={"isolate": False, "console": Console(width=80, record=True)})
    doc = bench_host(opts)
    assert [r["label"] for r in doc["results"]] == [f"student/{r}" for r in opts.runtimes]
    assert all(r["model"]["output_frames"] == 2 for r in doc["results"])


def test_strict_state_names_the_offending_keys(tiny_arch):
    from turbo_vaed.errors import UserError

    dec = random_decoder("tiny-test", {"family": "wan", "width": 8})
    sd = dict(dec.module.state_dict())
    sd.pop("out.bias")
    sd["stray.weight"] = torch.zeros(1)
    sd["temporal.weight"] = torch.zeros(1, 2, 3)
    with pytest.raises(UserError) as e:
        tiny_arch.strict_state(dec.config, dec.module, sd, "x.pth")
    msg = str(e.value)
    assert "1 missing (out.bias)" in msg and "1 unexpected (stray.weight)" in msg and "temporal.weight" in msg


# ---------------------------------------------------------------- the three default workflows, through the CLI


def test_default_export_then_parity_passes(cli, tmp_path):
    res = cli("export", "--target", "onnx", "--res", "256p", "--latent-frames", "1", "-o", tmp_path)
    assert res.code == 0, res.err
    art = tmp_path / "wan-onnx-256p-fp32-t1.onnx"
    m = read_manifest(art)
    assert m["decoder"]["checkpoint"] == "builtin:reference" and m["decoder"]["checkpoint_sha256"]
    res = cli("parity", art)
    assert res.code == 0, res.err
    assert read_manifest(art)["parity"]["passed"] is True


def test_random_full_size_export_then_parity_passes(cli, tmp_path):
    res = cli("export", "--target", "onnx", "--res", "256p", "--family", "wan", "--checkpoint", "random",
              "--latent-frames", "1", "-o", tmp_path)
    assert res.code == 0, res.err
    warnings_ = [ln for ln in res.err.splitlines() if ln.startswith("warning:")]
    assert len(warnings_) == 1 and "RANDOM" in warnings_[0], res.err
    m = read_manifest(tmp_path / "wan-onnx-256p-fp32-t1.onnx")
    assert m["decoder"]["checkpoint"] == "random" and m["decoder"]["config"]["name"] == "wan"
    res = cli("parity", tmp_path / "wan-onnx-256p-fp32-t1.onnx")
    assert res.code == 0, res.err


def test_bench_other_family_vs_teacher_brings_its_teacher(cli, tmp_path):
    out = tmp_path / "bench"
    res = cli("bench", "--device", "host", "--family", "hunyuan", "--res", "256p", "--vs-teacher", "--runtime",
              "torch", "--latent-frames", "1", "--warmup", "0", "--iters", "1", "--threads", "2", "--out", out,
              "--json", tmp_path / "b.json")
    assert res.code == 0, res.err
    warns = [ln for ln in res.err.splitlines() if ln.startswith("warning:")]
    assert any("teacher" in w and "RANDOM" in w for w in warns), res.err
    doc = json.loads((tmp_path / "b.json").read_text())
    (comp,) = doc["comparisons"]
    assert comp["baseline"] == "teacher/diffusers" and comp["speedup"] > 0
    assert "speedup" in res.out and ELLIPSIS not in res.out


# ---------------------------------------------------------------- tables at 80 columns


def test_tables_fit_80_columns_without_cut_cells(tmp_path):
    from pathlib import Path

    from turbo_vaed.bench.report import print_results
    from turbo_vaed.bench.schema import load_results
    from turbo_vaed.cli.export_cmd import report_table
    from turbo_vaed.exporters.demo_stage import export_table

    sample = Path(__file__).resolve().parents[1] / "ios_bench/Tests/TurboVAEDBenchTests/Fixtures/sample-results.json"
    con = Console(width=80, record=True)
    print_results(load_results(sample), title="a long title for a benchmark run on a device", console=con)
    report = {"max_rank": 4, "partitions": 1, "slow_path_ops": ["fp32 compute (the Neural Engine runs fp16 only)"],
              "non_delegated_ops": {}, "weights_bytes": 123456, "gflops_per_frame": 1.5,
              "op_counts": {f"op_with_a_long_name_{i}": i for i in range(12)}}
    con.print(report_table(report, "wan-coreml-256p-fp16-t3.mlpackage: coreml fp16"))
    row = {"target": "executorch", "delegate": "xnnpack", "precision": "fp32", "size_bytes": 5_000_000,
           "export_s": 12.3, "max_rank": 4, "partitions": 1, "slow_path_ops": [], "note": "",
           "parity": {"max_abs_error": 1.2e-6, "psnr_db": 120.0, "passed": True}}
    con.print(export_table({"res": "256p", "rows": [row, {**row, "target": "coreml", "delegate": None,
                                                           "parity": None, "note": "Core ML needs macOS"}]}))
    text = con.export_text()
    assert ELLIPSIS not in text
    assert max(len(ln) for ln in text.splitlines()) <= 80
    wide = Console(width=200, record=True)
    print_results(load_results(sample), console=wide)
    assert "artifact MB" in wide.export_text()  # wider terminals get every column


def test_info_table_fits_80_columns(cli):
    res = cli("info")
    assert res.code == 0, res.err
    assert ELLIPSIS not in res.out and max(len(ln) for ln in res.out.splitlines()) <= 80
