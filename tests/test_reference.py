"""The built-in reference teacher reconstructs the held-out clip at its model card's figures."""

from __future__ import annotations

import json

import pytest
import torch

from turbo_vaed.demo import DEMO_FRAMES, load_heldout
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
    readme = (REFERENCE_DIR / "README.md").read_text()
    assert f"{card['psnr']:.2f}" in readme


def test_reference_weights_fit_the_repo_budget():
    from turbo_vaed.config import MODELS_DIR

    total = sum(p.stat().st_size for p in MODELS_DIR.rglob("*.safetensors"))
    assert total <= 20 * 2**20, total
    assert "carphone" not in json.dumps(json.loads((REFERENCE_DIR / "training.json").read_text())["train_clips"])
