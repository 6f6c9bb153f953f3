"""Class 1: no code from a data file runs. A planted pickle (whose ``__reduce__`` would create a marker file) is
refused by every place that reads a file; the marker never appears."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch

from tests.test_hardening_common import clean, fake_manifest, tiny, work

FIXTURES = (clean, tiny, work)  # shared fixtures of the hardening suite (test_hardening_common.py)

MARKER = "PWNED"


class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears if the loader runs code from the file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path):
    return tmp_path / MARKER


def _torch_payload(path, marker, wrap=lambda p: {"latents": p}):
    torch.save(wrap(Payload(str(marker))), str(path))
    return path


def _raw_payload(path, marker):
    path.write_bytes(pickle.dumps(Payload(str(marker))))
    return path


def test_the_payload_is_live(tmp_path, marker):
    """Sanity: a full unpickler does run it (so the refusals below mean something)."""
    p = _raw_payload(tmp_path / "x.pkl", marker)
    pickle.loads(p.read_bytes()).close()
    assert marker.exists()


@pytest.mark.parametrize("name", ["z.pt", "z.pth"])
def test_decode_latents(clean, work, marker, name):
    src = _torch_payload(work / name, marker)
    clean("decode", src, "-o", "v.mp4", needles=("latents",))
    assert not marker.exists()


def test_decode_latents_ntchw(clean, work, marker):
    src = _torch_payload(work / "z.pth", marker, wrap=lambda p: p)
    clean("decode", src, "-o", "v.mp4", "--layout", "ntchw")
    assert not marker.exists()


def test_parity_latents(clean, tiny, work, marker):
    art = work / "a.onnx"
    art.write_bytes(b"\x08\x07" * 64)
    fake_manifest(art, tiny["student"], "onnx")
    src = _torch_payload(work / "z.pt", marker)
    clean("parity", art, "--latents", src, needles=("latents",))
    assert not marker.exists()


def test_bench_latents(clean, tiny, work, marker):
    src = _torch_payload(work / "z.pt", marker)
    clean("bench", "--family", "wan", "--checkpoint", tiny["ckpt"], "--teacher", tiny["teacher"], "--runtime",
          "torch", "--latents", src, "--out", "bench")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["ck.pth", "ck.safetensors", "ck.pt"])
def test_decoder_checkpoint(clean, tiny, work, marker, name):
    ck = _torch_payload(work / name, marker, wrap=lambda p: {"weight": p})
    clean("decode", tiny["latents"], "-o", "v.mp4", "--checkpoint", ck)
    assert not marker.exists()


def test_import_weights(clean, work, marker):
    w = _torch_payload(work / "taehv.pth", marker, wrap=lambda p: {"decoder.1.weight": p})
    clean("import", "taehv", "--weights", w, "-o", "dec", needles=("nothing in it was run",))
    assert not marker.exists()


def test_distill_resume_accelerate_pickles(clean, tiny, work, marker):
    """An accelerate-style checkpoint (custom_checkpoint_0.pkl, random_states_0.pkl) is never unpickled."""
    ck = work / "run" / "checkpoint"
    ck.mkdir(parents=True)
    _raw_payload(ck / "custom_checkpoint_0.pkl", marker)
    _raw_payload(ck / "random_states_0.pkl", marker)
    _torch_payload(ck / "optimizer.bin", marker, wrap=lambda p: {"state": p})
    clean("distill", "--teacher", tiny["teacher"], "--videos", tiny["video"], "--crop", "32", "--latent-frames", "2",
          "--steps", "2", "-o", "run", "--resume", needles=("never loaded",))
    assert not marker.exists()


def test_distill_resume_planted_state(clean, tiny, work, marker):
    """Pickles dressed as the new safe files (model/training .safetensors, state.json) are refused too."""
    ck = work / "run" / "checkpoint"
    ck.mkdir(parents=True)
    for f in ("model.safetensors", "training.safetensors"):
        _torch_payload(ck / f, marker)
    (ck / "state.json").write_text(json.dumps({"format": "turbovaed.distill-state/1", "config": {}}))
    clean("distill", "--teacher", tiny["teacher"], "--videos", tiny["video"], "--crop", "32", "--latent-frames", "2",
          "--steps", "2", "-o", "run", "--resume")
    assert not marker.exists()


@pytest.mark.parametrize("flag", ["--init", "--lpips"])
def test_distill_init_and_lpips(clean, tiny, work, marker, flag):
    f = _torch_payload(work / ("ck.safetensors" if flag == "--init" else "lpips.pt"), marker)
    clean("distill", "--teacher", tiny["teacher"], "--videos", tiny["video"], "--crop", "32", "--latent-frames", "2",
          "--steps", "2", "-o", "run", flag, f)
    assert not marker.exists()


def test_distill_latent_cache_shard(clean, tiny, work, marker):
    cache = work / "cache"
    cache.mkdir()
    (cache / "index.json").write_text(json.dumps({"format": "turbovaed.latent_cache/1", "family": "wan",
                                                  "clips": 1, "shards": 1}))
    _torch_payload(cache / "shard_0000.safetensors", marker)
    clean("distill", "--teacher", tiny["teacher"], "--latent-cache", cache, "--crop", "32", "--latent-frames", "2",
          "--steps", "2", "-o", "run")
    assert not marker.exists()


@pytest.mark.parametrize("flag", ["--i3d", "--lpips"])
def test_eval_weights(clean, tiny, work, marker, flag):
    f = _raw_payload(work / ("i3d.ckpt" if flag == "--i3d" else "lpips.pt"), marker)
    clean("eval", "--checkpoint", tiny["ckpt"], "--teacher", tiny["teacher"], "--videos", tiny["video"],
          "--frames", "17", flag, f)
    assert not marker.exists()


def test_i3d_convert(clean, work, marker):
    f = _raw_payload(work / "i3d-kinetics-400.ckpt", marker)
    clean("i3d-convert", f, "-o", "i3d.safetensors")
    assert not marker.exists()


@pytest.mark.parametrize("argv", [("encode", "{f}.mp4", "-o", "z.safetensors"), ("bench", "--validate", "{f}.json"),
                                  ("export", "--check", "{f}.pte"), ("export", "--check", "{f}.onnx"),
                                  ("parity", "{f}.pte"), ("bench", "{f}.pte")],
                         ids=["video", "results", "check-pte", "check-onnx", "parity-pte", "bench-pte"])
def test_other_readers(clean, tiny, work, marker, argv):
    for ext in ("mp4", "json", "pte", "onnx"):
        _raw_payload(work / f"planted.{ext}", marker)
    fake_manifest(work / "planted.pte", tiny["student"], "executorch")
    clean(*[a.format(f="planted") for a in argv])
    assert not marker.exists()


def test_manifest_is_json_only(clean, tiny, work, marker):
    art = work / "a.onnx"
    shutil.copy(tiny["latents"], art)
    _raw_payload(work / "a.manifest.json", marker)
    clean("parity", art, needles=("manifest",))
    assert not marker.exists()


def test_teacher_folder_pickled_weights(clean, tiny, work, marker):
    """A --teacher folder whose weights are a pickle (diffusion_pytorch_model.bin) is read weights-only."""
    t = work / "teacher"
    t.mkdir()
    shutil.copy(tiny["teacher"] / "config.json", t / "config.json")
    _torch_payload(t / "diffusion_pytorch_model.bin", marker, wrap=lambda p: {"decoder.conv_in.weight": p})
    clean("decode", tiny["latents"], "-o", "v.mp4", "--decoder", "teacher", "--teacher", t,
          needles=("teacher",))
    assert not marker.exists()


@pytest.mark.parametrize("text", ["[1, 2]", "{\"_class_name\": ", "NaN"])
def test_teacher_and_student_configs_are_json_only(clean, tiny, work, text):
    t = work / "teacher"
    t.mkdir()
    (t / "config.json").write_text(text)
    clean("decode", tiny["latents"], "-o", "v.mp4", "--decoder", "teacher", "--teacher", t,
          needles=("teacher config",))
    (work / "student.json").write_text(text)
    clean("distill", "--teacher", tiny["teacher"], "--videos", tiny["video"], "--crop", "32", "--latent-frames", "2",
          "--steps", "2", "-o", "run", "--student-config", work / "student.json", needles=("student config",))
