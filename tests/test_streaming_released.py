"""Streaming the released decoders (official Turbo-VAED, TAEHV, Flash-VAED): chunk by chunk equals the full decode.

Their steps are built on ``turbo_vaed.decoders.timeline`` (``start``/``remaining`` controls, a ``valid`` output,
flush calls for the non-causal Turbo-VAED and Flash-LTX whose output lags, Flash-Wan's restart at latent frame
21). The reference is the lowered full decode, itself checked against the official fixtures elsewhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from turbo_vaed.decoders.store import random_decoder
from turbo_vaed.errors import UserError
from turbo_vaed.lowering import LoweringOptions
from turbo_vaed.streaming import run_stream, stream_artifact, stream_decoder, stream_spec

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "decoders"
LENGTHS, CHUNKS = (1, 2, 5, 16, 21), (1, 2, 3)
TOL_TORCH, TOL_RUNTIME, TOL_F64 = 1e-5, 1e-4, 1e-9
H, W = 2, 3  # non-square latents


def fixture_decoder(arch: str, rel: str):
    path = FIXTURES / rel
    if not path.is_file():
        pytest.skip(f"decoder fixtures (../shared/fixtures/decoders/{rel}) not present here")
    return random_decoder(arch, json.loads(path.read_text()))


def latents(dec, t: int, seed: int | None = None) -> torch.Tensor:
    c = dec.arch.latent_channels(dec.config)
    return torch.randn(1, c, t, H, W, generator=torch.Generator().manual_seed(t if seed is None else seed))


def full(mobile, z: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return mobile(z[0].transpose(0, 1).to(next(mobile.parameters()).dtype)).numpy()


def stream64(dec, z: torch.Tensor, chunk: int) -> np.ndarray:
    """The streaming step run in float64 through the same driver (exactness without fp32 rounding)."""
    step = dec.arch.stream_step(dec.module, LoweringOptions(), chunk, H, W)
    mod, spec = step.module.double(), stream_spec(step)
    names = ["latents", *spec["controls"], *(s["name"] for s in spec["states"])]

    def call(feeds):
        with torch.no_grad():
            return [o.numpy() for o in mod(*(torch.from_numpy(np.asarray(feeds[n], np.float64)) for n in names))]

    x = z[0].transpose(0, 1).double().numpy()
    return np.concatenate(list(run_stream(call, spec, x, lambda t: dec.arch.trims(dec.config, t))))


def check_fp32(dec, lengths=LENGTHS, chunks=CHUNKS, tol=TOL_TORCH) -> float:
    mobile, worst = dec.lower(), 0.0
    for t in lengths:
        z = latents(dec, t)
        ref = full(mobile, z)
        assert ref.shape[0] == dec.frames_out(t)
        for k in chunks:
            got = np.concatenate(list(stream_decoder(dec, z, k)))
            assert got.shape == ref.shape, (t, k, got.shape, ref.shape)
            err = float(np.abs(got - ref).max())
            assert err <= tol, (t, k, err)
            worst = max(worst, err)
    return worst


def check_f64(dec, cases: tuple[tuple[int, int], ...]) -> None:
    """Float64 streamed vs full decode for each (latent frames, chunk) case."""
    mobile, refs = dec.lower().double(), {}
    for t, k in cases:
        z = latents(dec, t)
        if t not in refs:
            refs[t] = full(mobile, z.double())
        got = stream64(dec, z, k)
        assert got.shape == refs[t].shape, (t, k)
        assert np.abs(got - refs[t]).max() <= TOL_F64, (t, k, np.abs(got - refs[t]).max())


# ---------------------------------------------------------------------------------------------- PyTorch


def test_turbo_vaed_hunyuan_stream_is_exact():
    """Non-causal: one frame of look-ahead per temporal conv, so the output lags and flush calls end it."""
    dec = fixture_decoder("turbo-vaed", "turbo_vaed/Hunyuan/tiny.config.json")
    step = dec.arch.stream_step(dec.module, LoweringOptions(), 2, H, W)
    assert step.controls == ("start", "remaining") and step.valid_output and step.flush_chunks > 0
    check_fp32(dec)


def test_turbo_vaed_cog_stream_is_exact():
    check_fp32(fixture_decoder("turbo-vaed", "turbo_vaed/Cog/tiny.config.json"), lengths=(2, 5), chunks=(2,))


# the tiny fixtures are deep (the LTX one lags 20 latent frames): a few cases each keep the module fast
F64_CASES = {"LTX": ((1, 3), (5, 1), (5, 2), (21, 3)), "DC": ((1, 1), (5, 3), (16, 2))}


@pytest.mark.parametrize("fam", sorted(F64_CASES))
def test_turbo_vaed_ltx_dc_stream_is_exact_in_float64(fam):
    """The tiny LTX/DC fixtures end in a 2-channel RMS norm whose fp32 rounding is ill-conditioned (the official
    fp32 decode is 1.4e-4 from float64), so exactness is checked in float64, where rounding does not hide a
    wrong frame; fp32 stays within the runtime tolerance."""
    dec = fixture_decoder("turbo-vaed", f"turbo_vaed/{fam}/tiny.config.json")
    check_f64(dec, F64_CASES[fam])
    check_fp32(dec, lengths=(5,), chunks=(2,), tol=TOL_RUNTIME * 5)


@pytest.mark.parametrize("variant", ["taehv", "taew2_1", "taecvx", "taeltx_2"])
def test_taehv_stream_is_exact(variant):
    """Memory blocks carry one frame; taecvx keeps all frames for even T and trims for odd T (``trim``)."""
    dec = fixture_decoder("taehv", f"taehv/{variant}/config.json")
    step = dec.arch.stream_step(dec.module, LoweringOptions(), 1, H, W)
    assert step.flush_chunks == 0 and "trim" in step.controls  # causal: nothing lags
    check_fp32(dec, lengths=(1, 2, 5, 16) if variant == "taehv" else (1, 2, 5))


def test_flash_wan_stream_is_exact_and_restarts_at_21():
    dec = fixture_decoder("flash-vaed", "flash_vaed/Wan/config.json")
    step = dec.arch.stream_step(dec.module, LoweringOptions(), 2, H, W)
    assert step.restart_at == (21,)
    check_fp32(dec, lengths=(1, 2, 5, 21, 23))
    assert dec.frames_out(23) == 86  # [1, 4 x 20, 1, 4]: the official cache restart


def test_flash_ltx_stream_is_exact():
    dec = fixture_decoder("flash-vaed", "flash_vaed/LTX/tiny.config.json")
    check_f64(dec, ((1, 1), (5, 1), (5, 2), (16, 3)))
    check_fp32(dec, lengths=(2, 21), chunks=(2,), tol=2 * TOL_TORCH)


def test_base_architecture_without_a_step_says_so():
    """An architecture that declares no temporal state refuses --stream in one line, never a wrong stream."""
    from turbo_vaed.decoders.base import Architecture
    from turbo_vaed.errors import UserError

    class _NoStep:
        name = "toy"

    with pytest.raises(UserError, match="no streaming step"):
        Architecture.stream_step(_NoStep(), None, None, 1, 1, 1)


def test_timeline_masks_are_exact_for_long_videos_in_fp16():
    """``remaining`` instead of a total keeps the end-of-video arithmetic in small numbers: a 2-hour video
    (10,800 latent frames) still gets exact masks in fp16."""
    from turbo_vaed.decoders.timeline import Clock, Timeline, ramp_for

    ramp, one = ramp_for(16).half(), torch.ones(1, 1, 1, 1).half()
    for start, remaining in ((10_798, 2), (0, 10_800), (10_800, -1)):
        tl = Timeline(torch.full((1, 1, 1, 1), float(start)).half(), torch.full((1, 1, 1, 1), float(remaining)).half(),
                      [], ramp, one)
        v = tl.valid(Clock(rate=4, off=3, drop=3), 8).reshape(-1).float().numpy()
        tau = start * 4 - 3 + np.arange(8)
        want = ((tau >= 0) & (tau < (start + remaining) * 4 - 3)).astype(np.float32)
        assert np.array_equal(v, want), (start, remaining, v, want)


# ---------------------------------------------------------------------------------------------- runtimes


def runtime_stream(dec, target: str, precision: str, tmp_path: Path, lengths,
                   tail_frames: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    from turbo_vaed.exporters import export_artifact
    from turbo_vaed.targets import load_runner

    s = dec.arch.spatial_factor(dec.config)
    res = export_artifact(dec, target, f"{W * s}x{H * s}", latent_frames=2, precision=precision, out_dir=tmp_path,
                          stream=True, tail_frames=tail_frames)
    m = res.manifest
    st = m["stream"]
    names = [i["name"] for i in m["inputs"]]
    assert names[: 1 + len(st["controls"])] == ["latents", *st["controls"]]
    assert [o["name"] for o in m["outputs"][:2]] == ["frames", "valid"] and st["valid_output"] == "valid"
    assert m["report"]["max_rank"] <= 4
    runner, mobile, out = load_runner(res.artifact, 1), dec.lower(), []
    for t in lengths:
        z = latents(dec, t)
        got = np.concatenate(list(stream_artifact(runner, z, lambda n: dec.arch.trims(dec.config, n))))
        out.append((got, full(mobile, z)))
    return out


def test_turbo_vaed_stream_artifact_is_exact(tmp_path):
    """ONNX Runtime. (ExecuTorch runs the Flash-Wan step below: the same timeline ops in a smaller graph.)"""
    dec = fixture_decoder("turbo-vaed", "turbo_vaed/Hunyuan/tiny.config.json")
    # 23 latent frames: an odd last chunk, then the flush calls of a 50-latent-frame lag (the tiny fixture is deep)
    for got, ref in runtime_stream(dec, "onnx", "fp32", tmp_path, (1, 23)):
        assert got.shape == ref.shape and np.abs(got - ref).max() <= TOL_RUNTIME


def test_turbo_vaed_fp16_coreml_stream_has_no_drift(tmp_path):
    """Core ML fp16 (the MIL reference evaluator off macOS) over a 23-latent-frame stream: >= 45 dB, and the
    last chunk's frames within 3 dB of the first's."""
    from turbo_vaed.metrics import psnr

    dec = fixture_decoder("turbo-vaed", "turbo_vaed/Hunyuan/tiny.config.json")
    ((got, ref),) = runtime_stream(dec, "coreml", "fp16", tmp_path, (23,))
    g, r = (torch.from_numpy(a).transpose(0, 1)[None] for a in (got, ref))
    assert psnr(g, r) >= 45.0
    assert psnr(g[:, :, -8:], r[:, :, -8:]) >= psnr(g[:, :, :8], r[:, :, :8]) - 3.0


def test_taecvx_stream_artifact_keeps_the_frame_rule(tmp_path):
    """ONNX: odd T trims the first 3 frames, even T keeps them (the ``trim`` control)."""
    dec = fixture_decoder("taehv", "taehv/taecvx/config.json")
    for (got, ref), t in zip(runtime_stream(dec, "onnx", "fp32", tmp_path, (2, 5)), (2, 5), strict=True):
        assert got.shape[0] == dec.frames_out(t) and np.abs(got - ref).max() <= TOL_RUNTIME


@pytest.mark.parametrize("variant", ["taehv", "taew2_1", "taecvx", "taeltx_2"])
def test_taehv_tail_frames_stream_is_exact(variant):
    """``--tail-frames G``: the last TGrow, its projection and the output conv G output frames at a time (nothing
    there mixes frames): the same frames as the full decode, for every group size below the chunk's frames."""
    dec = fixture_decoder("taehv", f"taehv/{variant}/config.json")
    mobile = dec.lower()
    for t in (1, 2, 5):
        z = latents(dec, t)
        ref = full(mobile, z)
        for k in (1, 2):
            for g in (1, 2, 3):
                got = np.concatenate(list(stream_decoder(dec, z, k, tail_frames=g)))
                assert got.shape == ref.shape and np.abs(got - ref).max() <= TOL_TORCH, (t, k, g)
    with pytest.raises(UserError, match="fewer than"):  # a group of all the chunk's frames is no split
        dec.arch.stream_step(dec.module, LoweringOptions(stream_tail_frames=dec.config.t_upscale), 1, H, W)


def test_taehv_tail_frames_artifact_is_exact_and_smaller(tmp_path):
    """ONNX Runtime (states in place) runs the frame-by-frame step exactly; at 720p the full-size Wan 2.1 TAEHV's
    working-set estimate falls by more than half (ORT measured 4.29 -> 2.09-2.40 GiB, README "Streaming")."""
    from turbo_vaed.exporters import stream_memory_estimate

    dec = fixture_decoder("taehv", "taehv/taew2_1/config.json")
    for got, ref in runtime_stream(dec, "onnx", "fp32", tmp_path, (1, 5), tail_frames=1):
        assert got.shape == ref.shape and np.abs(got - ref).max() <= TOL_RUNTIME
    est = {}
    for g in (0, 1):
        step = dec.arch.stream_step(dec.module, LoweringOptions(stream_tail_frames=g, stream_band_order=True), 1,
                                    90, 160)
        est[g] = stream_memory_estimate(step, (1, 16, 90, 160), 4)
    assert est[1]["states_bytes"] == est[0]["states_bytes"]  # nothing more carried
    assert est[1]["peak_live_bytes"] < 0.5 * est[0]["peak_live_bytes"], est


def test_flash_wan_stream_artifact_restarts(tmp_path):
    """ExecuTorch: 23 latent frames stream as the official two segments (86 frames), every op on XNNPACK (one
    partition, nothing on portable kernels: the row picks are bmm, not a reduction over frames)."""
    dec = fixture_decoder("flash-vaed", "flash_vaed/Wan/config.json")
    ((got, ref),) = runtime_stream(dec, "executorch", "fp32", tmp_path, (23,))
    assert got.shape[0] == 86 and np.abs(got - ref).max() <= TOL_RUNTIME
    (man,) = tmp_path.glob("*.manifest.json")
    rep = json.loads(man.read_text())["report"]
    assert rep["partitions"] == 1 and not rep["non_delegated_ops"], rep


def _same_through_codec(a: np.ndarray, b: np.ndarray) -> bool:
    """Two mp4s of the same frames (to 1e-6 before uint8 rounding): a pixel one LSB off at the rounding can change
    x264's decisions for a block, so a few pixels differ by more than the rounding (9 measured on one machine,
    0.3% of pixels over 2). The videos as a whole must agree to >= 45 dB and a mean difference under 0.1 LSB."""
    d = a.astype(float) - b.astype(float)
    mse = float((d**2).mean())
    return (mse == 0 or 10 * np.log10(255**2 / mse) >= 45) and float(np.abs(d).mean()) < 0.1


def test_cli_streams_an_imported_decoder(cli, tmp_path):
    """import taehv -> decode --stream (PyTorch) and export --stream -> decode --artifact (ONNX Runtime):
    the family's frame count, the same frames as the full decode."""
    from turbo_vaed.latents_io import save_latents
    from turbo_vaed.video_io import read_video

    weights = FIXTURES / "taehv" / "taehv" / "taehv.pth"
    if not weights.is_file():
        pytest.skip("TAEHV fixture weights not present here")
    res = cli("import", "taehv", "--weights", weights, "-o", tmp_path / "dec")
    assert res.code == 0, res.err
    lat = save_latents(tmp_path / "z.safetensors", torch.randn(1, 16, 7, 4, 6, generator=torch.Generator()
                                                                .manual_seed(0)), "hunyuan")
    res = cli("decode", lat, "-o", tmp_path / "full.mp4", "--checkpoint", tmp_path / "dec")
    assert res.code == 0, res.err
    res = cli("decode", lat, "-o", tmp_path / "a.mp4", "--checkpoint", tmp_path / "dec", "--stream", "--chunk", "2")
    assert res.code == 0, res.err
    full_frames = read_video(tmp_path / "full.mp4")[0]
    a = read_video(tmp_path / "a.mp4")[0]
    assert a.shape == full_frames.shape and a.shape[0] == 25  # 4T - 3
    assert _same_through_codec(a, full_frames)
    res = cli("export", "--target", "onnx", "--res", "48x32", "--latent-frames", "2", "--checkpoint",
              tmp_path / "dec", "--stream", "-o", tmp_path / "art")
    assert res.code == 0, res.err
    (art,) = (tmp_path / "art").glob("*-stream.onnx")
    res = cli("decode", lat, "-o", tmp_path / "b.mp4", "--checkpoint", tmp_path / "dec", "--artifact", art)
    assert res.code == 0, res.err
    b = read_video(tmp_path / "b.mp4")[0]
    assert b.shape == full_frames.shape and _same_through_codec(b, full_frames)
