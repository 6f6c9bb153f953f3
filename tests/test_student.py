"""Student decoder: shapes vs. teachers, range, budgets, state dict, checkpoints."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import latents_for, small_student, small_teacher
from turbo_vaed.checkpoint import load_student, save_student
from turbo_vaed.cli.info_cmd import BUDGETS, family_info
from turbo_vaed.config import load_student_config, student_families
from turbo_vaed.decoders.student_model import AlignmentHeads, TurboVAEDDecoder, count_parameters, pixel_shuffle_3d
from turbo_vaed.families import FAMILIES
from turbo_vaed.teachers import teacher_decode

FAMILY_NAMES = student_families()


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_student_matches_teacher_shape_and_range(family):
    teacher, student = small_teacher(family), small_student(family)
    z = latents_for(family) * 3
    with torch.no_grad():
        ref, out = teacher_decode(teacher, z), student(z)
    assert out.shape == ref.shape
    fam = FAMILIES[family]
    assert out.shape[2] == fam.frames_out(z.shape[2])
    assert torch.isfinite(out).all()
    assert out.min() >= -1 and out.max() <= 1


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_parameter_budget_on_default_teacher_config(family):
    info = family_info(family)
    assert info["student_params"] <= BUDGETS[family] * info["teacher_decoder_params"], info
    assert info["student_gflops_per_frame"]["720p"] > info["student_gflops_per_frame"]["256p"] > 0


def test_reference_student_within_wan_budget():
    from turbo_vaed.teachers import load_teacher, teacher_decoder_parameters

    student = TurboVAEDDecoder(load_student_config("wan-reference"))
    teacher = load_teacher("wan", "reference")
    assert count_parameters(student) <= BUDGETS["wan"] * teacher_decoder_parameters(teacher)


def test_pixel_shuffle_3d_layout():
    # channel layout (C, rt, rs, rs): channel c*rt*rs*rs + i*rs*rs + (a*rs + b) -> frame t*rt + i, pixel (a, b)
    c, rt, rs, t, h, w = 2, 2, 2, 3, 2, 2
    x = torch.arange(c * rt * rs * rs * t * h * w, dtype=torch.float32).reshape(1, c * rt * rs * rs, t, h, w)
    y = pixel_shuffle_3d(x, rt, rs)
    assert y.shape == (1, c, 1 + rt * (t - 1), h * rs, w * rs)
    for co, i, a, b, tt, yy, xx in [(1, 1, 0, 1, 2, 1, 0), (0, 1, 1, 1, 0, 0, 1), (1, 0, 1, 0, 1, 1, 1)]:
        frame = tt * rt + i - (rt - 1)
        if frame < 0:
            continue
        ch = co * rt * rs * rs + i * rs * rs + a * rs + b
        assert y[0, co, frame, yy * rs + a, xx * rs + b] == x[0, ch, tt, yy, xx]


def test_deployable_state_dict_has_no_heads_and_roundtrips(tmp_path):
    student = small_student("wan", 0.25)
    heads = AlignmentHeads(student.stage_channels(), [32, 32, 16, 8])
    assert count_parameters(heads) > 0
    sd = student.state_dict()
    assert not any("head" in k for k in sd)
    path = save_student(student, tmp_path / "s.safetensors")
    loaded = load_student(path, "wan")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, sd[k]), k
    z = latents_for("wan")
    with torch.no_grad():
        assert torch.equal(loaded(z), student(z))
    assert not list(tmp_path.glob(".*tmp*"))


def test_student_is_causal_in_time():
    student = small_student("wan", 0.25)
    z = latents_for("wan", t=4)
    z2 = z.clone()
    z2[:, :, 3] += 1.0
    with torch.no_grad():
        a, b = student(z), student(z2)
    # frames from latent frames 0..2 (1 + 4*2 = 9 frames) do not see latent frame 3
    assert torch.allclose(a[:, :, :9], b[:, :, :9])
    assert not torch.allclose(a[:, :, 9:], b[:, :, 9:])


def test_check_latents_one_line_errors():
    from turbo_vaed.errors import UserError

    student = small_student("wan")
    student.check_latents(latents_for("wan"))
    for bad, needle in [(torch.zeros(16, 3, 2, 2), "rank 5"), (torch.zeros(1, 8, 3, 2, 2), "8 channels")]:
        with pytest.raises(UserError, match=needle):
            student.check_latents(bad)
    with pytest.raises(UserError, match="expects"):
        student.check_latents(latents_for("wan"), spatial=(4, 4))
