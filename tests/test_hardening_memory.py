"""Class 4: a job that cannot fit in memory is refused before anything large is allocated, with the estimate
and the fix (a smaller --res, fewer latent frames, streaming/chunks)."""

from __future__ import annotations

import json

import pytest

from tests.test_hardening_common import clean, fake_manifest, sparse_latents, tiny, work

FIXTURES = (clean, tiny, work)  # shared fixtures of the hardening suite (test_hardening_common.py)

HUGE = (1, 16, 200, 512, 512)  # 3.4 GB of latents; decoding them asks for hundreds of GB


@pytest.fixture
def huge_latents(work):
    return sparse_latents(work / "huge.safetensors", HUGE)  # a hole on disk: no space used


def test_decode_huge_latents(clean, tiny, huge_latents):
    line = clean("decode", huge_latents, "-o", "v.mp4", "--checkpoint", tiny["ckpt"],
                 needles=("needs about", "GiB", "available", "--stream"))
    assert "797 frames of 4096x4096" in line


def test_decode_huge_latents_teacher(clean, tiny, huge_latents):
    clean("decode", huge_latents, "-o", "v.mp4", "--decoder", "teacher", "--teacher", tiny["teacher"],
          needles=("needs about",))


def test_parity_reads_only_the_chunk_it_needs(clean, tiny, work, huge_latents):
    """parity takes the artifact's chunk from a long latents file; the 3.4 GB are never read (the artifact's own
    problem is the error here)."""
    art = work / "a.onnx"
    art.write_bytes(b"\x08" * 64)
    fake_manifest(art, tiny["student"], "onnx")
    clean("parity", art, "--latents", huge_latents, needles=("a.onnx", "ONNX"))


def test_bench_huge_latents(clean, tiny, huge_latents):
    clean("bench", "--family", "wan", "--checkpoint", tiny["ckpt"], "--teacher", tiny["teacher"], "--res", "256p",
          "--runtime", "torch", "--latents", huge_latents, "--out", "bench", needles=("needs about",))


def test_export_huge_resolution(clean, tiny):
    clean("export", "--target", "onnx", "--res", "100000x100000", "--checkpoint", tiny["ckpt"], "-o", "arts",
          needles=("exporting", "needs about", "--res"))


def test_bench_huge_resolution(clean, tiny):
    clean("bench", "--family", "wan", "--checkpoint", tiny["ckpt"], "--teacher", tiny["teacher"], "--runtime",
          "torch", "--res", "100000x100000", "--out", "bench", needles=("needs about",))


@pytest.mark.parametrize("cmd", ["parity", "bench"])
def test_edited_manifest_shape(clean, tiny, work, cmd):
    art = work / "a.pte"
    art.write_bytes(b"\x3c\x00\x00\x00ET12eh00" + b"\0" * 64)
    mp = fake_manifest(art, tiny["student"], "executorch")
    doc = json.loads(mp.read_text())
    doc["inputs"][0]["shape"] = [200, 16, 512, 512]
    doc["outputs"][0]["shape"] = [797, 3, 4096, 4096]
    mp.write_text(json.dumps(doc))
    clean(cmd, art, needles=("needs about",))


def test_manifest_shape_not_integers(clean, tiny, work):
    art = work / "a.pte"
    art.write_bytes(b"\x3c\x00\x00\x00ET12eh00" + b"\0" * 64)
    mp = fake_manifest(art, tiny["student"], "executorch")
    doc = json.loads(mp.read_text())
    doc["inputs"][0]["shape"] = [1, 16, -4, "4"]
    mp.write_text(json.dumps(doc))
    clean("parity", art, needles=("positive integers",))


def test_decode_with_little_memory_measures_the_activations(clean, tiny, work, monkeypatch):
    """When the widest-layer bound does not fit, the largest activation is measured on the meta device, and the
    job is refused when input + output + 3 x that activation does not fit."""
    from tests.conftest import latents_for
    from tests.test_hardening_common import save_tensor_file
    from turbo_vaed.decoders.store import load_decoder
    from turbo_vaed.guards import meta_activations

    dec = load_decoder(tiny["ckpt"])
    shape = (1, 16, 2, 32, 32)
    largest, _ = meta_activations(lambda: dec.arch.build(dec.config), dec.arch.reference, shape)
    z = save_tensor_file(work / "z.safetensors", latents_for("wan", t=2, h=32, w=32))
    monkeypatch.setenv("TURBOVAED_AVAILABLE_MEMORY", str(2 * largest))
    clean("decode", z, "-o", "v.mp4", "--checkpoint", tiny["ckpt"], needles=("largest activation", "available"))


def test_encode_with_little_memory(clean, tiny, work, monkeypatch):
    from tests.test_hardening_common import tiny_video
    from turbo_vaed.guards import meta_activations
    from turbo_vaed.teachers import load_teacher, teacher_encode

    video = tiny_video(work / "big.mp4", frames=9, side=128)
    vae = load_teacher("wan", str(tiny["teacher"]))
    largest, _ = meta_activations(lambda: type(vae).from_config(vae.config), teacher_encode, (1, 3, 9, 128, 128))
    monkeypatch.setenv("TURBOVAED_AVAILABLE_MEMORY", str(8 * 3 * 9 * 128 * 128 + largest))
    clean("encode", video, "-o", "z.safetensors", "--teacher", tiny["teacher"], "--frames", "9",
          needles=("needs about", "largest activation", "--frames"))
