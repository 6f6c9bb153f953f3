"""Distillation: loss goes down on real frames, resume is exact, feature taps, bad input."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import small_student, small_teacher
from turbo_vaed.config import load_student_config, student_families
from turbo_vaed.decoders.student_model import AlignmentHeads
from turbo_vaed.distill.losses import match_shape
from turbo_vaed.families import FAMILIES
from turbo_vaed.teachers import FeatureTaps, teacher_decode
from turbo_vaed.video_io import shipped_clip


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A tiny wan teacher folder (random weights) and a tiny student config file."""
    root = tmp_path_factory.mktemp("distill")
    teacher = small_teacher("wan")
    teacher.save_pretrained(str(root / "teacher"))
    cfg = load_student_config("wan-reference").scaled(0.5, 1)
    (root / "student.json").write_text(cfg.to_json())
    return root


def _distill(cli, setup, out, *extra):
    return cli("distill", "--teacher", setup / "teacher", "--student-config", setup / "student.json",
               "--videos", shipped_clip("bikes"), "--crop", "32", "--latent-frames", "2", "--batch", "1",
               "--threads", "1", "--log-every", "1", "--save-every", "100", "-o", out, *extra)


def test_loss_goes_down_on_real_frames(cli, tiny_setup, tmp_path):
    res = _distill(cli, tiny_setup, tmp_path / "run", "--steps", "30", "--lr", "3e-3", "--ema", "0.0")
    assert res.code == 0, res.err + res.out
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and {"pixel", "output", "feature", "total"} <= set(rows[0])
    first = sum(r["total"] for r in rows[:5]) / 5
    last = sum(r["total"] for r in rows[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert (tmp_path / "run" / "student.safetensors").is_file()
    assert "perceptual loss: off" in res.out


def test_resume_matches_uninterrupted(cli, tiny_setup, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert _distill(cli, tiny_setup, a, "--steps", "4").code == 0
    assert _distill(cli, tiny_setup, b, "--steps", "4", "--stop-at", "2").code == 0
    res = _distill(cli, tiny_setup, b, "--steps", "4", "--resume")
    assert res.code == 0, res.err
    wa = load_file(str(a / "checkpoint" / "model.safetensors"))
    wb = load_file(str(b / "checkpoint" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6, rtol=0), k
    ea, eb = load_file(str(a / "student.safetensors")), load_file(str(b / "student.safetensors"))
    for k in ea:
        assert torch.allclose(ea[k], eb[k], atol=1e-6, rtol=0), k


@pytest.mark.parametrize("family", student_families())
def test_feature_taps_and_projection_shapes(family):
    teacher, student = small_teacher(family), small_student(family)
    c = FAMILIES[family].latent_channels
    z = torch.randn(1, c, 3, 2, 3)
    with torch.no_grad(), FeatureTaps(teacher) as taps:
        out = teacher_decode(teacher, z)
    feats = taps.features()
    dec = teacher.decoder
    assert len(feats) == 1 + len(dec.up_blocks)
    assert feats[0].shape[2:] == z.shape[2:]  # mid block runs at latent resolution
    assert feats[-1].shape[-1] * (out.shape[-1] // feats[-1].shape[-1]) == out.shape[-1]
    with torch.no_grad():
        _, s_feats = student(z, return_features=True)
    n = min(len(s_feats), len(feats))
    heads = AlignmentHeads(student.stage_channels()[:n], [f.shape[1] for f in feats[:n]])
    proj = heads(s_feats[:n])
    for p, t in zip(proj, feats[:n], strict=True):
        assert match_shape(p, t).shape == t.shape


def test_bad_input(cli, tiny_setup, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("distill", "--teacher", tiny_setup / "teacher", "--videos", empty, "-o", tmp_path / "r")
    assert res.code == 2 and "no videos found" in res.err and len(res.err.strip().splitlines()) == 1
    res = _distill(cli, tiny_setup, tmp_path / "r2", "--steps", "1", "--latent-frames", "70")
    assert res.code == 2 and "shorter than the clip length" in res.err, res.err
    # wrong family for the checkpoint
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from turbo_vaed.checkpoint import save_student

        ck = save_student(small_student("hunyuan"), tmp_path / "hy.safetensors")
    res = cli("eval", "--checkpoint", ck, "--teacher", tiny_setup / "teacher", "--frames", "5")
    assert res.code == 2 and "hunyuan student" in res.err, res.err
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


class _TinyPerceptual(torch.nn.Module):
    """A stand-in perceptual net (fixed random conv features), saved as TorchScript like a real LPIPS."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.conv(x) - self.conv(y)).abs().mean(dim=(1, 2, 3))


def test_perceptual_adversarial_accum_checkpointing(cli, tiny_setup, tmp_path):
    lp = tmp_path / "lpips.pt"
    torch.jit.save(torch.jit.script(_TinyPerceptual()), str(lp))
    res = _distill(cli, tiny_setup, tmp_path / "run", "--steps", "2", "--lpips", lp, "--w-lpips", "0.5",
                   "--w-adv", "0.1", "--adv-start", "1", "--accum", "2", "--grad-checkpointing")
    assert res.code == 0, res.err
    rows = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert "lpips" in rows[0] and rows[0]["lpips"] > 0 and "adv" not in rows[0]
    assert "adv" in rows[1] and "disc" in rows[1]
    assert "perceptual loss: off" not in res.out
    out = tmp_path / "eval.json"
    res = cli("eval", "--checkpoint", tmp_path / "run" / "student.safetensors", "--teacher", tiny_setup / "teacher",
              "--frames", "5", "--lpips", lp, "--json", out)
    assert res.code == 0, res.err
    data = json.loads(out.read_text())
    assert data["skipped"] == ["rfvd"] and data["mean"]["student_lpips"] > 0
