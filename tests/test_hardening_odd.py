"""Class 10: odd input gets the right answer or one line: eval's title shows the frames really scored, a batch of
two latents is refused (never cut to the first), results JSON nested without limit, a 400-digit number or a
236 MB file are one line, fast."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import latents_for
from tests.test_hardening_common import clean, fake_manifest, results_doc, save_tensor_file, tiny, work

FIXTURES = (clean, results_doc, tiny, work)  # shared fixtures of the hardening suite (test_hardening_common.py)


def test_eval_title_shows_the_real_frame_count(cli, tiny, work):
    res = cli("eval", "--checkpoint", tiny["ckpt"], "--teacher", tiny["teacher"], "--videos", tiny["video"],
              "--frames", "33", "--json", "e.json")
    assert res.code == 0, res.err
    out = " ".join(res.out.split())
    assert "9 frames each" in out and "33 frames" not in out
    doc = json.loads((work / "e.json").read_text())
    assert doc["frames"] == 9 and doc["frames_requested"] == 33 and doc["clips"][0]["frames"] == 9


@pytest.fixture
def two(work):
    return save_tensor_file(work / "two.safetensors", torch.cat([latents_for("wan", 2, 4, 4, seed=s) for s in (0, 1)]))


def test_decode_batch_of_two(clean, tiny, two):
    clean("decode", two, "-o", "v.mp4", "--checkpoint", tiny["ckpt"], needles=("batch of 2",))


def test_bench_batch_of_two(clean, tiny, two):
    clean("bench", "--family", "wan", "--checkpoint", tiny["ckpt"], "--teacher", tiny["teacher"], "--runtime",
          "torch", "--latents", two, "--out", "bench", needles=("batch of 2",))


def test_bench_artifact_batch_of_two(clean, tiny, work, two):
    art = work / "a.onnx"
    art.write_bytes(b"\x08" * 64)
    fake_manifest(art, tiny["student"], "onnx")
    clean("bench", art, "--latents", two, needles=("batch of 2",))


def test_parity_batch_of_two(clean, tiny, work, two):
    art = work / "a.onnx"
    art.write_bytes(b"\x08" * 64)
    fake_manifest(art, tiny["student"], "onnx")
    clean("parity", art, "--latents", two, needles=("(1, C, T, h, w)",))


@pytest.mark.parametrize("make, needle", [
    (lambda d: "[" * 200000 + "]" * 200000, "nested"),
    (lambda d: json.dumps({**d, "results": [[[[[[[[[[[[[[[[[[d["results"][0]]]]]]]]]]]]]]]]]]]}), "nested"),
    (lambda d: json.dumps(d).replace('"iterations": ', '"iterations": ' + "7" * 400 + ', "x_": ', 1), "400-digit"),
    (lambda d: json.dumps(d).replace('"p50": ', '"p50": 1' + "0" * 400 + ".5, \"x_\": ", 1), "overflows"),
], ids=["deep", "deep-in-schema", "400-digit-int", "400-digit-float"])
def test_validate_odd_json(clean, results_doc, work, make, needle):
    (work / "r.json").write_text(make(results_doc))
    clean("bench", "--validate", "r.json", needles=(needle,))


def test_validate_huge_file_is_refused_unread(clean, work):
    f = work / "huge.json"
    with open(f, "wb") as fh:
        fh.write(b"[")
        fh.truncate(236 * 2**20)  # sparse: 236 MB apparent, nothing on disk
    clean("bench", "--validate", f, needles=("236.0 MiB",))


def test_validate_accepts_the_real_thing(cli, results_doc, work):
    (work / "r.json").write_text(json.dumps(results_doc))
    res = cli("bench", "--validate", "r.json")
    assert res.code == 0, res.err


def test_pt_latents_without_tensors(clean, tiny, work):
    torch.save({"latents": [1, 2, 3]}, str(work / "z.pt"))
    clean("decode", work / "z.pt", "-o", "v.mp4", "--checkpoint", tiny["ckpt"], needles=("tensor",))
    torch.save({}, str(work / "e.pt"))
    clean("decode", work / "e.pt", "-o", "v.mp4", "--checkpoint", tiny["ckpt"], needles=("empty",))


def test_latents_with_a_garbage_fps_decode_at_24(cli, tiny, work):
    from safetensors.torch import save_file

    save_file({"latents": latents_for("wan", 2, 4, 4)}, str(work / "z.safetensors"),
              metadata={"format": "turbovaed.latents/1", "family": "wan", "fps": "nan"})
    res = cli("decode", work / "z.safetensors", "-o", "v.mp4", "--checkpoint", tiny["ckpt"])
    assert res.code == 0, res.err
    import av

    with av.open(str(work / "v.mp4")) as c:
        assert float(c.streams.video[0].average_rate) == pytest.approx(24.0)
