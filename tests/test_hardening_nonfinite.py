"""Class 5: NaN and Inf never pass silently: latents and weights are checked, parity never blames the artifact for
its input and never writes NaN into a manifest, results JSON with NaN/Infinity is invalid."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import latents_for
from tests.test_hardening_common import clean, fake_manifest, results_doc, save_tensor_file, tiny, work

FIXTURES = (clean, results_doc, tiny, work)  # shared fixtures of the hardening suite (test_hardening_common.py)


@pytest.mark.parametrize("value, needle", [(float("nan"), "1 NaN"), (float("inf"), "1 Inf"),
                                           (float("-inf"), "1 Inf")])
def test_decode_refuses_nonfinite_latents(clean, tiny, work, value, needle):
    z = latents_for("wan", t=2, h=4, w=4)
    z[0, 3, 1, 2, 0] = value
    src = save_tensor_file(work / "z.safetensors", z)
    line = clean("decode", src, "-o", "v.mp4", "--checkpoint", tiny["ckpt"], needles=(needle, "[0, 3, 1, 2, 0]"))
    assert "latents" in line


def test_decode_refuses_nonfinite_pt_latents(clean, tiny, work):
    z = latents_for("wan", t=2, h=4, w=4)
    z[..., 0] = float("nan")
    torch.save(z, str(work / "z.pt"))
    clean("decode", work / "z.pt", "-o", "v.mp4", "--checkpoint", tiny["ckpt"], needles=("NaN",))


def test_parity_refuses_nan_latents_before_running_the_artifact(clean, tiny, work):
    z = latents_for("wan", t=1, h=4, w=4)
    z[0, 0, 0, 0, 0] = float("nan")
    src = save_tensor_file(work / "z.safetensors", z)
    art = work / "a.onnx"
    art.write_bytes(b"\x08" * 64)  # not even an ONNX model: it is never reached
    mp = fake_manifest(art, tiny["student"], "onnx")
    before = mp.read_text()
    line = clean("parity", art, "--latents", src, needles=("NaN",))
    assert "artifact" not in line.split("latents")[0] and mp.read_text() == before


def test_bench_refuses_nan_latents(clean, tiny, work):
    z = latents_for("wan", t=2, h=4, w=4)
    z[0, 0, 0, 0, 0] = float("nan")
    src = save_tensor_file(work / "z.safetensors", z)
    clean("bench", "--family", "wan", "--checkpoint", tiny["ckpt"], "--teacher", tiny["teacher"], "--runtime",
          "torch", "--latents", src, "--out", "bench", needles=("NaN",))


@pytest.mark.parametrize("argv", [
    ("export", "--target", "onnx", "--res", "64x64", "--latent-frames", "1", "-o", "arts"),
    ("decode", "{latents}", "-o", "v.mp4"),
    ("eval", "--videos", "{video}", "--frames", "5", "--teacher", "{teacher}"),
], ids=["export", "decode", "eval"])
def test_nan_weights_refused(clean, tiny, argv):
    argv = [a.format(**{k: str(v) for k, v in tiny.items()}) for a in argv]
    clean(*argv, "--checkpoint", tiny["nan_ckpt"], needles=("nan_student.safetensors", "non-finite"))


def test_distill_init_nan_weights(clean, tiny):
    clean("distill", "--teacher", tiny["teacher"], "--videos", tiny["video"], "--crop", "32", "--latent-frames", "2",
          "--steps", "2", "-o", "run", "--init", tiny["nan_ckpt"], needles=("--init", "non-finite"))


class _StandInRunner:
    """Replaces the runtime (the reference side is what these tests exercise)."""

    name, version, load_ms = "onnxruntime", "stand-in", 1.0
    frames = None

    def __init__(self, artifact, threads=None, compute_units="all"):
        from turbo_vaed.exporters.manifest import read_manifest

        self.manifest = read_manifest(artifact)

    def run(self, x):
        f, c, h, w = self.manifest["outputs"][0]["shape"]
        return np.full((f, c, h, w), self.frames, np.float32)


def _stand_in(monkeypatch, frames):
    import turbo_vaed.targets

    monkeypatch.setattr(_StandInRunner, "frames", frames)
    monkeypatch.setattr(turbo_vaed.targets, "load_runner", _StandInRunner)


def test_parity_reference_with_nan_weights_is_not_the_artifacts_fault(clean, tiny, work, monkeypatch):
    from turbo_vaed.decoders.store import load_decoder

    _stand_in(monkeypatch, 0.0)
    art = work / "a.onnx"
    art.write_bytes(b"\x08" * 64)
    dec = load_decoder(tiny["nan_ckpt"])
    mp = fake_manifest(art, dec.module, "onnx")
    doc = json.loads(mp.read_text())
    doc["decoder"]["checkpoint"] = str(tiny["nan_ckpt"])
    doc["decoder"]["weights_sha256"] = dec.weights_sha256()
    mp.write_text(json.dumps(doc))
    clean("parity", art, needles=("reference", "non-finite"))
    assert json.loads(mp.read_text())["parity"] is None


def test_parity_nonfinite_artifact_output_is_the_artifacts_fault(clean, tiny, work, monkeypatch):
    _stand_in(monkeypatch, float("nan"))
    art = work / "a.onnx"
    art.write_bytes(b"\x08" * 64)
    mp = fake_manifest(art, tiny["student"], "onnx", shape=(1, 16, 4, 4), out_frames=1)
    clean("parity", art, needles=("artifact produced non-finite frames",))
    text = mp.read_text()
    assert "NaN" not in text and json.loads(text)["parity"] is None


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_bench_validate_rejects_nonfinite_latency(clean, results_doc, work, literal):
    text = json.dumps(results_doc).replace('"p50": ', f'"p50": {literal}, "x_": ', 1)
    (work / "r.json").write_text(text)
    clean("bench", "--validate", "r.json", needles=("r.json",))


def test_validate_results_rejects_nan_in_memory(results_doc):
    from turbo_vaed.bench.schema import validate_results
    from turbo_vaed.errors import UserError

    bad = json.loads(json.dumps(results_doc))
    bad["results"][0]["latency_ms"]["p90"] = float("nan")
    with pytest.raises(UserError, match="latency_ms/p90"):
        validate_results(bad)
