"""lower(): rank-4 phone graph with the reference's numbers; graph invariants on the torch.export'ed program."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import latents_for, small_student
from turbo_vaed.config import load_student_config, student_families
from turbo_vaed.decoders.student_model import CausalConv3d, RMSNorm, TurboVAEDDecoder
from turbo_vaed.exporters.graph import export_graph
from turbo_vaed.exporters.phone_report import exported_program_report
from turbo_vaed.lowering import (
    LoweringOptions,
    MobileRMSNorm,
    TemporalConv,
    from_mobile_layout,
    lower,
    to_mobile_layout,
)
from turbo_vaed.metrics import psnr

FAMILY_NAMES = student_families()
TOL = 1e-4
WAN_LATENTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "wan21_latents_61f_320x512.pth"
VARIANTS = [LoweringOptions(),
            LoweringOptions(fp16_safe=False, shuffle="transpose", rsqrt="div_sqrt"),
            LoweringOptions(fp16_safe=True, shuffle="transpose", rsqrt="rsqrt")]
# what a lowered graph may contain (ATen names after run_decompositions({}))
ALLOWED_OPS = {"conv2d", "cat", "slice.Tensor", "mul.Tensor", "add.Tensor", "div.Tensor", "sigmoid", "rsqrt",
               "sqrt", "abs", "maximum", "clamp", "view", "reshape", "permute", "pixel_shuffle", "_unsafe_view",
               "clone"}


def mobile_out(mobile, z5: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return from_mobile_layout(mobile(to_mobile_layout(z5)))


def wan_real_latents(t: int, h: int, w: int) -> torch.Tensor:
    from turbo_vaed.latents_io import load_latents

    z, _ = load_latents(WAN_LATENTS, "ntchw")
    return z[:, :, :t, :h, :w].contiguous()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_lowered_matches_reference_every_family(family):
    student = small_student(family)
    z = latents_for(family, t=3, h=3, w=4) * 2
    with torch.no_grad():
        ref = student(z)
    assert ref.std() > 1e-3  # a non-trivial output, so the comparison means something
    for opts in VARIANTS:
        out = mobile_out(lower(student, opts), z)
        assert out.shape == ref.shape
        err = (out - ref).abs().max().item()
        assert err <= TOL, (family, opts, err)


def test_lowered_matches_reference_student_weights():
    """The built-in reference student (trained weights when installed, else its config, seeded)."""
    from turbo_vaed.checkpoint import DEFAULT_STUDENT, load_student

    if DEFAULT_STUDENT.is_file():
        student = load_student(DEFAULT_STUDENT, "wan")
    else:
        torch.manual_seed(0)
        student = TurboVAEDDecoder(load_student_config("wan-reference")).eval()
    z = latents_for("wan", t=3, h=4, w=5, seed=1)
    with torch.no_grad():
        ref = student(z)
    assert (mobile_out(lower(student), z) - ref).abs().max().item() <= TOL


def test_lowered_matches_reference_on_teacher_latents():
    """Real latents from the reference teacher (encoding the held-out clip), when it is installed."""
    from turbo_vaed.teachers import REFERENCE_DIR, load_teacher, teacher_encode

    if not (REFERENCE_DIR / "config.json").is_file():
        pytest.skip("reference teacher not installed yet (models/reference)")
    from turbo_vaed.demo import load_heldout

    video, _ = load_heldout("wan", frames=9)
    video = video[..., :64, :64]
    with torch.no_grad():
        z = teacher_encode(load_teacher("wan", "reference"), video)
    torch.manual_seed(0)
    student = TurboVAEDDecoder(load_student_config("wan-reference")).eval()
    with torch.no_grad():
        ref = student(z)
    assert (mobile_out(lower(student), z) - ref).abs().max().item() <= TOL


@pytest.mark.skipif(not WAN_LATENTS.is_file(), reason="real Wan latents (../shared/data) not present here")
def test_fp16_lowered_on_real_wan_latents():
    """Half precision on realistic activations: no overflow, PSNR >= 45 dB vs. the fp32 reference."""
    torch.manual_seed(0)
    student = TurboVAEDDecoder(load_student_config("wan-reference")).eval()
    z = wan_real_latents(2, 16, 16)
    with torch.no_grad():
        ref = student(z)
        half = lower(student, fp16_safe=True).half()
        out = from_mobile_layout(half(to_mobile_layout(z).half()).float())
    assert torch.isfinite(out).all()
    assert psnr(out, ref) >= 45.0


@pytest.mark.parametrize("groups", [1, 8])
def test_temporal_conv_matches_causal_conv3d(groups):
    torch.manual_seed(0)
    src = CausalConv3d(8, 8, groups=groups).eval()
    x = torch.randn(1, 8, 4, 5, 6)
    with torch.no_grad():
        ref = src(x)
        out = TemporalConv(src)(x[0].transpose(0, 1)).transpose(0, 1).unsqueeze(0)
    assert (out - ref).abs().max().item() <= 1e-5


def test_fp16_safe_rmsnorm_does_not_overflow():
    torch.manual_seed(0)
    norm = RMSNorm(64)
    norm.weight.data = torch.rand(64) + 0.5
    for mag in (1e-4, 1.0, 100.0, 3000.0):
        x = torch.randn(2, 64, 4, 4) * mag
        x[0, :, 0, 0] = 0  # an all-zero position must stay finite
        ref = norm(x)
        out = MobileRMSNorm(norm, fp16_safe=True).half()(x.half()).float()
        assert torch.isfinite(out).all(), mag
        assert (out - ref).abs().max().item() < 0.02, mag
    # the plain form squares x in half precision: 100 * 4 sigma squared > 65504 -> wrong output
    x = torch.randn(2, 64, 4, 4) * 100.0
    plain = MobileRMSNorm(norm, fp16_safe=False).half()(x.half()).float()
    assert (plain - norm(x)).abs().max().item() > 0.5


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_exported_graph_is_phone_shaped(family):
    """rank <= 4, no Conv3d/interpolate, static shapes, only the expected op types."""
    mobile = lower(small_student(family))
    z = to_mobile_layout(latents_for(family, t=2, h=2, w=3))
    ep = export_graph(mobile, z)
    rep = exported_program_report(ep)
    assert rep["max_rank"] <= 4
    assert rep["slow_path_ops"] == []
    assert set(rep["op_counts"]) <= ALLOWED_OPS, set(rep["op_counts"]) - ALLOWED_OPS
    assert rep["op_counts"].get("conv2d", 0) > 0
    for node in ep.graph.nodes:
        val = node.meta.get("val")
        if isinstance(val, torch.Tensor):
            assert all(isinstance(d, int) for d in val.shape), node  # no symbolic (dynamic) dims
            assert val.dim() <= 4, node


def test_default_decompositions_would_make_rank6():
    """Why the exporters use run_decompositions({}): the default table turns pixel_shuffle into a rank-6 permute."""
    mobile = lower(small_student("wan"), shuffle="pixel_shuffle")
    z = to_mobile_layout(latents_for("wan", t=2, h=2, w=2))
    ep = torch.export.export(mobile, (z,))
    assert exported_program_report(ep.run_decompositions({}))["max_rank"] == 4
    assert exported_program_report(ep.run_decompositions())["max_rank"] == 6


def test_lower_rejects_other_modules():
    with pytest.raises(TypeError):
        lower(torch.nn.Conv2d(1, 1, 1))
    with pytest.raises(ValueError):
        LoweringOptions(shuffle="bilinear")
