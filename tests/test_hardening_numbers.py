"""Class 7: every numeric option and choice is validated up front (one line, exit 2, nothing written)."""

from __future__ import annotations

import pytest

from tests.test_hardening_common import clean, tiny, work

FIXTURES = (clean, tiny, work)  # shared fixtures of the hardening suite (test_hardening_common.py)


def _distill(t, *extra):
    return ("distill", "--teacher", t["teacher"], "--videos", t["video"], "--crop", "32", "--latent-frames", "2",
            "--steps", "2", "--threads", "1", "-o", "run", *extra)


DISTILL_BAD = [
    (("--batch", "0"), "--batch"),
    (("--accum", "0"), "--accum"),
    (("--save-every", "0"), "--save-every"),
    (("--log-every", "0"), "--log-every"),
    (("--latent-frames", "0"), "--latent-frames"),
    (("--crop", "0"), "--crop"),
    (("--lr", "nan"), "--lr"),
    (("--lr", "-1"), "--lr"),
    (("--lr", "inf"), "--lr"),
    (("--mixed-precision", "fp8"), "--mixed-precision"),
    (("--steps", "0"), "--steps"),
    (("--steps", "-5"), "--steps"),
    (("--ema", "1.5"), "--ema"),
    (("--w-pixel", "nan"), "--w-pixel"),
    (("--w-feature", "-1"), "--w-feature"),
    (("--feature-stages", "99,-1"), "--feature-stages"),
    (("--feature-stages", "a,b"), "--feature-stages"),
    (("--stop-at", "0"), "--stop-at"),
    (("--stop-at", "5"), "--stop-at"),
    (("--threads", "0"), "--threads"),
    (("--adv-start", "-1"), "--adv-start"),
]


@pytest.mark.parametrize("extra, needle", DISTILL_BAD, ids=[" ".join(a) for a, _ in DISTILL_BAD])
def test_distill_numbers(clean, tiny, work, extra, needle):
    clean(*_distill(tiny, *extra), needles=(needle,))
    assert not (work / "run").exists()  # no run/distill.json


def test_distill_fp16_on_cpu(clean, tiny, work):
    import torch

    if torch.cuda.is_available():
        pytest.skip("fp16 mixed precision works on a GPU")
    clean(*_distill(tiny, "--mixed-precision", "fp16"), needles=("fp16",))


OTHER_BAD = [
    (("encode", "{video}", "-o", "z.safetensors", "--frames", "0"), "--frames"),
    (("encode", "{video}", "-o", "z.safetensors", "--frames", "-1"), "--frames"),
    (("encode", "{video}", "-o", "z.safetensors", "--start", "-2"), "--start"),
    (("decode", "{latents}", "-o", "v.mp4", "--fps", "-5"), "--fps"),
    (("decode", "{latents}", "-o", "v.mp4", "--fps", "0"), "--fps"),
    (("decode", "{latents}", "-o", "v.mp4", "--fps", "nan"), "--fps"),
    (("decode", "{latents}", "-o", "v.mp4", "--fps", "inf"), "--fps"),
    (("decode", "{latents}", "-o", "v.mp4", "--decoder", "bogus"), "decoder"),
    (("decode", "{latents}", "-o", "v.mp4", "--layout", "nhwc"), "layout"),
    (("export", "--target", "onnx", "--threads", "0", "--checkpoint", "{ckpt}"), "--threads"),
    (("export", "--target", "onnx", "--latent-frames", "0", "--checkpoint", "{ckpt}"), "--latent-frames"),
    (("export", "--target", "tflite", "--checkpoint", "{ckpt}"), "tflite"),
    (("demo", "--threads", "0"), "--threads"),
    (("eval", "--threads", "0"), "--threads"),
    (("eval", "--max-side", "0"), "--max-side"),
    (("eval", "--max-side", "4", "--checkpoint", "{ckpt}", "--teacher", "{teacher}"), "--max-side"),
    (("eval", "--frames", "0"), "--frames"),
    (("eval", "--fvd-stride", "0"), "--fvd-stride"),
    (("parity", "{latents}", "--compute-units", "bogus"), "compute-units"),
    (("bench", "--iters", "0"), "--iters"),
    (("bench", "--warmup", "-1"), "--warmup"),
    (("bench", "--latent-frames", "0"), "--latent-frames"),
    (("bench", "--threads", "0"), "--threads"),
    (("bench", "--compute-units", "bogus", "--device", "mac"), "compute units"),
    (("cache-latents", "--videos", "{video}", "-o", "cache", "--clips", "0"), "--clips"),
    (("cache-latents", "--videos", "{video}", "-o", "cache", "--clips", "-3"), "--clips"),
    (("cache-latents", "--videos", "{video}", "-o", "cache", "--crop", "0"), "--crop"),
    (("cache-latents", "--videos", "{video}", "-o", "cache", "--latent-frames", "0"), "--latent-frames"),
]


@pytest.mark.parametrize("argv, needle", OTHER_BAD, ids=[" ".join(a[:1] + a[-2:]) for a, _ in OTHER_BAD])
def test_other_commands_numbers(clean, tiny, argv, needle):
    argv = [a.format(**{k: str(v) for k, v in tiny.items()}) for a in argv]
    clean(*argv, needles=(needle,))
