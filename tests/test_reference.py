"""The built-in reference teacher reconstructs the held-out clip at its model card's figures."""

from __future__ import annotations

import json

import pytest
import torch

from turbo_vaed.demo import DEMO_FRAMES, load_heldout
from turbo_vaed.evaluate import baseline_rows, colour_kept
from turbo_vaed.metrics import psnr, ssim
from turbo_vaed.teachers import REFERENCE_DIR, load_teacher, teacher_decode, teacher_encode


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((REFERENCE_DIR / "training.json").read_text())["heldout"]


def test_reference_reconstructs_heldout_clip_as_card_states(card):
    vae = load_teacher("wan", "reference")
    x, _ = load_heldout("wan", DEMO_FRAMES)
    assert x.shape[2] == card["frames"] and x.shape[-1] == card["width"]
    with torch.inference_mode():
        rec = teacher_decode(vae, teacher_encode(vae, x))
    assert abs(psnr(rec, x) - card["psnr"]) <= 0.5, (psnr(rec, x), card)
    assert abs(ssim(rec, x) - card["ssim"]) <= 0.02
    assert abs(colour_kept(rec, x) - card["colour"]) <= 0.03, (colour_kept(rec, x), card)
    readme = (REFERENCE_DIR / "README.md").read_text()
    assert f"{card['psnr']:.2f}" in readme and f"{card['colour']:.1%}" in readme


def test_card_reports_the_scaling_baselines_as_measured(card):
    """The card's baseline rows are the 8x / 4x area-down, bilinear-up figures of the same frames."""
    x, _ = load_heldout("wan", DEMO_FRAMES)
    base = baseline_rows(x, 8)
    for k in ("scale8x_psnr", "scale4x_psnr", "scale8x_colour"):
        assert card["eval"][k] == pytest.approx(base[k], abs=0.01), k
    readme = (REFERENCE_DIR / "README.md").read_text()
    assert f"| 8x area-down / bilinear-up | {base['scale8x_psnr']:.2f} |" in readme
    assert f"| 4x area-down / bilinear-up | {base['scale4x_psnr']:.2f} |" in readme


@pytest.mark.xfail(strict=True, reason="issue 17: the shipped teacher (21.5 dB, SSIM 0.64, 84% colour) is above "
                   "8x but below 4x scaling; flips to a pass (and strict xfail fails) once a teacher meets the targets")
def test_reference_beats_4x_scaling_and_keeps_colour(card):
    """Issue 17's targets for the teacher: above 4x scaling, SSIM >= 0.75, >= 85% of the colour."""
    assert card["psnr"] > card["eval"]["scale4x_psnr"] and card["ssim"] >= 0.75, card
    assert card["colour"] >= 0.85 and min(card["cell_chroma_r2"]) > 0.5, card


def test_model_card_shows_the_heldout_montage():
    from PIL import Image

    png = REFERENCE_DIR / "heldout_montage.png"
    assert "(heldout_montage.png)" in (REFERENCE_DIR / "README.md").read_text()
    w, h = Image.open(png).size
    assert w >= 3 * 176 and h >= 3 * 144  # input | teacher | student, 3 frames of the held-out clip


def test_reference_weights_fit_the_repo_budget():
    from turbo_vaed.config import MODELS_DIR

    total = sum(p.stat().st_size for p in MODELS_DIR.rglob("*.safetensors"))
    assert total <= 20 * 2**20, total
    assert "carphone" not in json.dumps(json.loads((REFERENCE_DIR / "training.json").read_text())["train_clips"])
