"""Streaming decode: chunk by chunk, exact (concatenation equals the full decode), on every runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import assert_streams_exactly, full_decode, latents_for, small_student
from turbo_vaed.config import student_families
from turbo_vaed.decoders import as_decoder
from turbo_vaed.exporters import export_artifact
from turbo_vaed.lowering import from_mobile_layout
from turbo_vaed.metrics import psnr
from turbo_vaed.streaming import stream_artifact, stream_decoder

WAN_LATENTS = Path(__file__).resolve().parents[2] / "shared" / "data" / "wan21_latents_61f_320x512.pth"
TOL_TORCH, TOL_RUNTIME = 1e-5, 1e-4


@pytest.mark.parametrize("family", student_families())
def test_pytorch_stream_equals_full_decode(family):
    """Every chunk size, every length: the same frames (count and values) as the full decode."""
    student = small_student(family)
    dec = as_decoder(student)
    for t in (1, 2, 5, 16, 21):
        z = latents_for(family, t=t, h=2, w=3, seed=t)
        ref = full_decode(student, z)
        assert ref.shape[0] == dec.frames_out(t)
        for chunk in (1, 2, 3):
            got = np.concatenate(list(stream_decoder(dec, z, chunk)))
            assert got.shape == ref.shape, (family, t, chunk)
            assert np.abs(got - ref).max() <= TOL_TORCH, (family, t, chunk, np.abs(got - ref).max())


def test_stream_on_real_wan_latents():
    if not WAN_LATENTS.is_file():
        pytest.skip("real Wan 2.1 latents (../shared/data) not present here")
    from turbo_vaed.checkpoint import DEFAULT_STUDENT
    from turbo_vaed.decoders.store import load_decoder
    from turbo_vaed.latents_io import load_latents

    dec = load_decoder(DEFAULT_STUDENT)
    z, _ = load_latents(WAN_LATENTS, "ntchw")
    z = z[:, :, :, :16, :24]  # 16 latent frames (61 frames), a 128x192 crop
    assert z.shape[2] == 16
    ref = full_decode(dec.module, z)
    got = np.concatenate(list(stream_decoder(dec, z, 3)))
    assert got.shape[0] == 61 and np.abs(got - ref).max() <= TOL_TORCH


@pytest.fixture(scope="module")
def wan_student():
    return small_student("wan")


@pytest.mark.parametrize("target", ["onnx", "executorch", "coreml"])
def test_exported_stream_step_is_exact(wan_student, target, tmp_path):
    from turbo_vaed.targets import load_runner

    res = export_artifact(wan_student, target, "32x32", latent_frames=2, precision="fp32", out_dir=tmp_path,
                          stream=True)
    m = res.manifest
    st = m["stream"]
    assert [i["name"] for i in m["inputs"][:3]] == ["latents", "first", "trim"]
    assert [s["name"] for s in st["states"]] == [i["name"] for i in m["inputs"][3:]]
    assert all(s["init"] == "zeros" and s["next"] == o["name"] for s, o in zip(st["states"], m["outputs"][1:],
                                                                                strict=True))
    assert m["report"]["max_rank"] <= 4 and st["frames_per_chunk"] == 8 and st["first_chunk_skip"] == 3
    if target == "executorch":  # the whole step in one XNNPACK partition, nothing on portable kernels
        assert m["report"]["partitions"] == 1 and not m["report"].get("non_delegated_ops"), m["report"]
    est = st["memory_estimate"]  # the app's working-set budget, per precision
    assert est["fp32"]["states_bytes"] == 4 * sum(int(np.prod(s["shape"])) for s in st["states"])
    fp32 = est["fp32"]
    assert fp32["bytes"] == 2 * est["fp16"]["bytes"]
    assert fp32["bytes"] == sum(fp32[k] for k in ("weights_bytes", "states_bytes", "latents_bytes", "peak_live_bytes"))
    frames = 4 * int(np.prod(m["outputs"][0]["shape"]))
    assert est["fp32"]["peak_live_bytes"] >= frames + est["fp32"]["states_bytes"]  # frames and next states included
    runner = load_runner(res.artifact, 2)
    if target == "onnx":  # streaming settings (README "Streaming"): arena on, memory patterns and reuse off
        opts = runner.session.get_session_options()
        assert opts.enable_cpu_mem_arena and not opts.enable_mem_pattern and not opts.enable_mem_reuse
    assert_streams_exactly(runner, wan_student, (1, 5), 4, 4, TOL_RUNTIME, target)


def test_onnx_stream_runs_without_torch(wan_student, tmp_path):
    """An app's loop (runner + run_stream) imports no torch: an ONNX Runtime decode carries no 200 MB of torch
    in its peak RSS, and its frames are still exact."""
    import subprocess
    import sys

    res = export_artifact(wan_student, "onnx", "32x32", latent_frames=1, precision="fp32", out_dir=tmp_path,
                          stream=True)
    z = latents_for("wan", t=5, h=4, w=4, seed=5)
    np.save(tmp_path / "z.npy", z.numpy())
    np.save(tmp_path / "ref.npy", full_decode(wan_student, z))
    code = f"""
import sys
import numpy as np
from turbo_vaed.streaming import stream_artifact
from turbo_vaed.targets import load_runner
runner = load_runner({str(res.artifact)!r}, 1)
got = np.concatenate(list(stream_artifact(runner, np.load({str(tmp_path / "z.npy")!r}), True)))
ref = np.load({str(tmp_path / "ref.npy")!r})
assert got.shape == ref.shape, (got.shape, ref.shape)
print(float(np.abs(got - ref).max()), sorted(m for m in ("torch", "diffusers", "onnx") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    diff, loaded = out.stdout.split(maxsplit=1)
    assert float(diff) <= TOL_RUNTIME and loaded.strip() == "[]", out.stdout


def test_fp16_stream_keeps_quality_without_drift(wan_student, tmp_path):
    from turbo_vaed.targets import load_runner

    res = export_artifact(wan_student, "onnx", "32x32", latent_frames=1, precision="fp16", out_dir=tmp_path,
                          stream=True)
    runner = load_runner(res.artifact, 2)
    z = latents_for("wan", t=16, h=4, w=4, seed=3)
    chunks = [from_mobile_layout(torch.from_numpy(c)) for c in stream_artifact(runner, z, True)]
    ref = from_mobile_layout(torch.from_numpy(full_decode(wan_student, z)))
    assert psnr(torch.cat(chunks, dim=2), ref) >= 45.0
    first, last = chunks[0], chunks[-1]
    n0, n1 = first.shape[2], last.shape[2]
    assert psnr(last, ref[:, :, -n1:]) >= psnr(first, ref[:, :, :n0]) - 3.0  # no drift along the stream


def test_cli_decode_stream_writes_every_frame(cli, tmp_path, wan_student):
    from turbo_vaed.checkpoint import save_student
    from turbo_vaed.latents_io import save_latents
    from turbo_vaed.video_io import read_video

    ck = save_student(wan_student, tmp_path / "s.safetensors")
    lat = save_latents(tmp_path / "z.safetensors", latents_for("wan", t=6, h=4, w=4), "wan")
    res = cli("decode", lat, "-o", tmp_path / "a.mp4", "--checkpoint", ck, "--stream", "--chunk", "2")
    assert res.code == 0, res.err
    assert read_video(tmp_path / "a.mp4")[0].shape[0] == 21
    res = cli("export", "--target", "onnx", "--res", "32x32", "--latent-frames", "2", "--checkpoint", ck,
              "--stream", "-o", tmp_path / "art")
    assert res.code == 0, res.err
    (art,) = (tmp_path / "art").glob("*-stream.onnx")
    res = cli("decode", lat, "-o", tmp_path / "b.mp4", "--checkpoint", ck, "--artifact", art)
    assert res.code == 0, res.err
    assert read_video(tmp_path / "b.mp4")[0].shape[0] == 21 and "onnxruntime" in res.out


def test_exported_flags_stay_separate_inputs(tmp_path):
    """cogvideox keeps every frame for even T: first = 1 with trim = 0 must decode differently from trim = 1
    (an exporter given one tensor object for both flags may merge them into one graph input)."""
    from turbo_vaed.targets import load_runner

    student = small_student("cogvideox")
    res = export_artifact(student, "onnx", "32x32", latent_frames=2, precision="fp32", out_dir=tmp_path, stream=True)
    runner = load_runner(res.artifact, 1)
    for t in (2, 3, 4):
        z = latents_for("cogvideox", t=t, h=4, w=4, seed=t)
        got = np.concatenate(list(stream_artifact(runner, z, lambda n: as_decoder(student).arch.trims(
            as_decoder(student).config, n))))
        ref = full_decode(student, z)
        assert got.shape == ref.shape and np.abs(got - ref).max() <= TOL_RUNTIME, t


def test_cli_bench_stream_reports_a_validated_result(cli, tmp_path, wan_student):
    import json
    import shutil
    from pathlib import Path

    from turbo_vaed.bench.schema import load_results
    from turbo_vaed.checkpoint import save_student
    from turbo_vaed.exporters.manifest import manifest_path

    ck = save_student(wan_student, tmp_path / "s.safetensors")
    res = cli("bench", "--stream", "--checkpoint", ck, "--res", "32x32", "--latent-frames", "2", "--stream-frames",
              "5", "--runtime", "onnxruntime", "--threads", "1", "--out", tmp_path / "b", "--json", tmp_path / "r.json")
    assert res.code == 0, res.err
    doc = load_results(tmp_path / "r.json")  # validated against the schema
    (r,) = doc["results"]
    s = r["stream"]
    assert s["frames"] == 17 == r["model"]["output_frames"] and s["latent_frames"] == 5
    assert s["sustained_fps"] > 0 and s["first_chunk_ms"] > 0 and r["settings"]["iterations"] == 2
    assert "sustained" in res.out
    # measured in a fresh process that loads ONNX Runtime and no torch: the peak is the runtime's, as in an app
    assert "in a fresh process (without torch)" in r["notes"] and r["peak_memory_bytes"] > 0, r["notes"]
    # the exported step given as ARTIFACT: measured as it is (its chunk and size from its manifest), not re-exported
    art = Path(r["model"]["artifact"])
    again = cli("bench", str(art), "--stream", "--stream-frames", "3", "--threads", "1", "--out", tmp_path / "b2",
                "--json", tmp_path / "r2.json")
    assert again.code == 0, again.err
    (r2,) = load_results(tmp_path / "r2.json")["results"]
    assert r2["model"]["artifact"] == str(art) and r2["stream"]["frames"] == 9 and r2["stream"]["calls"] == 2
    assert not (tmp_path / "b2").exists() or not any((tmp_path / "b2").iterdir())
    fixed = tmp_path / "fixed"
    fixed.mkdir()
    shutil.copy(art, fixed / art.name)
    m = json.loads(manifest_path(art).read_text())
    del m["stream"]
    manifest_path(fixed / art.name).write_text(json.dumps(m))
    err = cli("bench", str(fixed / art.name), "--stream", "--threads", "1", "--out", tmp_path / "b3")
    assert err.code == 2 and "export --stream" in err.err and "Traceback" not in err.err
    bad = json.loads((tmp_path / "r.json").read_text())
    bad["results"][0]["stream"]["sustained_fps"] = -1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    from turbo_vaed.errors import UserError

    with pytest.raises(UserError):
        load_results(tmp_path / "bad.json")
