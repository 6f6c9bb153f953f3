"""Eval baselines: area-down / bilinear-up scaling at the family's factor and half of it, and the colour figure."""

from __future__ import annotations

import pytest
import torch

from turbo_vaed.evaluate import (
    baseline_factors,
    baseline_rows,
    colour_kept,
    colourfulness,
    load_eval_clip,
    scale_baseline,
)
from turbo_vaed.metrics import psnr
from turbo_vaed.video_io import HELDOUT_CLIP, shipped_clip


def test_baseline_factors_are_the_family_factor_and_half():
    assert baseline_factors(8) == (8, 4)
    assert baseline_factors(32) == (32, 16)
    assert baseline_factors(2) == (2,)


def test_scale_baseline_keeps_shape_and_flat_video():
    flat = torch.full((1, 3, 5, 32, 48), 0.25)
    flat[:, 1] = -0.5
    out = scale_baseline(flat, 8)
    assert out.shape == flat.shape
    assert torch.allclose(out, flat, atol=1e-6)
    assert colour_kept(out, flat) == pytest.approx(1.0, abs=1e-6)


def test_colour_figure_grey_is_zero_and_scale_invariant():
    v = torch.rand(1, 3, 3, 16, 16) * 2 - 1
    grey = v.mean(1, keepdim=True).expand_as(v)
    assert colourfulness(grey) == pytest.approx(0.0, abs=1e-6)
    assert colour_kept(grey, v) == pytest.approx(0.0, abs=1e-6)
    half = v * 0.5  # halving the [-1, 1] signal halves |RGB - Y| in [0, 1] units
    assert colour_kept(half, v) == pytest.approx(0.5, rel=1e-4)


def test_heldout_baselines_match_the_issue_figures():
    """33 frames of the held-out clip: 8x scaling 19.94 dB, 4x scaling 23.42 dB (as issue 17 measured)."""
    x = load_eval_clip(shipped_clip(HELDOUT_CLIP), "wan", 33)
    r = baseline_rows(x, 8)
    assert set(r) == {f"scale{k}x_{m}" for k in (8, 4) for m in ("psnr", "ssim", "colour")}
    assert r["scale8x_psnr"] == pytest.approx(19.94, abs=0.05)
    assert r["scale4x_psnr"] == pytest.approx(23.42, abs=0.05)
    assert r["scale8x_psnr"] < r["scale4x_psnr"] and r["scale8x_ssim"] < r["scale4x_ssim"]
    assert r["scale4x_psnr"] == pytest.approx(psnr(scale_baseline(x, 4), x))
    assert 0.5 < r["scale8x_colour"] < r["scale4x_colour"] <= 1.0
