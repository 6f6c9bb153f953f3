"""The committed default student reproduces its model card and stays within the wan budget."""

from __future__ import annotations

import json

import pytest

from turbo_vaed.checkpoint import DEFAULT_STUDENT, load_student
from turbo_vaed.cli.info_cmd import BUDGETS
from turbo_vaed.decoders.student_model import count_parameters
from turbo_vaed.demo import DEMO_FRAMES
from turbo_vaed.evaluate import evaluate_clip, load_eval_clip
from turbo_vaed.teachers import load_teacher, teacher_decoder_parameters
from turbo_vaed.video_io import HELDOUT_CLIP, shipped_clip

CARD = DEFAULT_STUDENT.parent / "student_card.json"


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads(CARD.read_text())


def test_default_student_reproduces_its_card(card):
    student, teacher = load_student(DEFAULT_STUDENT, "wan"), load_teacher("wan", "reference")
    r = evaluate_clip(student, teacher, load_eval_clip(shipped_clip(HELDOUT_CLIP), "wan", DEMO_FRAMES))
    assert abs(r["student_psnr"] - card["student_psnr"]) <= 0.3, (r, card)
    assert abs(r["teacher_psnr"] - card["teacher_psnr"]) <= 0.3, (r, card)
    assert abs(r["student_colour"] - card["student_colour"]) <= 0.03, (r, card)
    assert r["psnr_retention"] >= 0.95 and r["ssim_retention"] >= 0.95, r
    assert r["scale8x_psnr"] < r["scale4x_psnr"] and "scale4x_colour" in r, r  # baselines measured alongside
    assert count_parameters(student) <= BUDGETS["wan"] * teacher_decoder_parameters(teacher)


def test_eval_cli_json(cli, tmp_path):
    """The CLI path (short clip; the card's 33-frame figures are checked above and in test_fvd)."""
    out = tmp_path / "eval.json"
    res = cli("eval", "--frames", "9", "--json", out)
    assert res.code == 0, res.err
    data = json.loads(out.read_text())
    m = data["mean"]
    assert data["frames"] == 9 and data["checkpoint"] == "built-in" and [c["clip"] for c in data["clips"]] == [
        f"{HELDOUT_CLIP}.mp4"]
    assert m["psnr_retention"] == pytest.approx(m["student_psnr"] / m["teacher_psnr"]) and m["psnr_retention"] > 0.9
    assert data["skipped"] == ["lpips", "rfvd"] and "skipped: LPIPS" in res.out and "rFVD (pass --i3d" in res.out
