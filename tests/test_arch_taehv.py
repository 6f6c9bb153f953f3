"""TAEHV decoder architecture: fixture parity (parallel, sequential, streaming), lowering, strict import."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from turbo_vaed.decoders import get_architecture
from turbo_vaed.decoders.taehv import (
    ARCH,
    ENCODER_KEYS,
    TAEHVDecoder,
    config_from_dict,
    config_to_dict,
    decode_sequential,
    variant_from_filename,
    variant_settings,
)
from turbo_vaed.errors import UserError
from turbo_vaed.lowering import LoweringOptions

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "decoders" / "taehv"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"TAEHV fixtures not found at {FIXTURES}")

ATOL = 1e-5
VARIANTS = ("taehv", "taew2_1", "taecvx", "taeltx_2")
SHARED_PTH = FIXTURES / "taehv" / "taehv.pth"  # taehv, taew2_1 and taecvx share it (settings from the name)
LTX_ST = FIXTURES / "taeltx_2" / "taeltx_2.safetensors"
FAMILIES = {"taehv": "hunyuan", "taew2_1": "wan", "taecvx": "cogvideox", "taeltx_2": "ltx2"}


def _meta(v: str) -> dict:
    return json.loads((FIXTURES / v / "meta.json").read_text())


def _io(v: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / v / "io.safetensors"))


def _ncthw(x: torch.Tensor) -> torch.Tensor:
    """Official N T C H W -> the project's N C T H W (and back: the same swap)."""
    return x.transpose(1, 2)


def _maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@pytest.fixture(scope="module")
def named_weights(tmp_path_factory) -> dict[str, Path]:
    """Each variant's weights under its own file name (the shared .pth is linked as taew2_1.pth / taecvx.pth)."""
    d = tmp_path_factory.mktemp("taehv_names")
    out = {"taehv": SHARED_PTH, "taeltx_2": LTX_ST}
    for v in ("taew2_1", "taecvx"):
        (d / f"{v}.pth").symlink_to(SHARED_PTH)
        out[v] = d / f"{v}.pth"
    return out


@pytest.fixture(scope="module")
def imported(named_weights) -> dict:
    """variant -> (Imported, loaded reference module, io tensors): import with the variant from the file name."""
    out = {}
    for v in VARIANTS:
        imp = ARCH.import_release(named_weights[v], None, None)
        m = ARCH.build(imp.config)
        m.load_state_dict(imp.state)
        out[v] = (imp, m.eval(), _io(v))
    return out


@pytest.fixture(scope="module")
def shared_state() -> dict[str, torch.Tensor]:
    return torch.load(str(SHARED_PTH), map_location="cpu", weights_only=True)


# ---------------------------------------------------------------------------------------------- config
def test_registered_and_config_round_trip():
    assert get_architecture("taehv") is ARCH
    for v in VARIANTS:
        cfg = variant_settings(v)
        assert config_from_dict(config_to_dict(cfg)) == cfg
        fixture_cfg = config_from_dict(json.loads((FIXTURES / v / "config.json").read_text()))
        assert fixture_cfg == cfg, v
        d = json.loads((FIXTURES / v / "config.json").read_text())
        for k in ("t_upscale", "frames_to_trim", "t_downscale", "patch_size", "latent_channels", "is_cogvideox"):
            assert config_to_dict(cfg)[k] == d[k], (v, k)
        assert ARCH.family(cfg) == FAMILIES[v]
        assert ARCH.output_range(cfg) == (0.0, 1.0)
    bad = dict(config_to_dict(variant_settings("taehv")), t_upscale=8)
    with pytest.raises(UserError, match="t_upscale"):
        config_from_dict(bad)
    with pytest.raises(UserError, match="unknown keys"):
        config_from_dict({"variant": "taehv", "widths": [1]})


def test_geometry_frame_rules_and_conventions():
    from turbo_vaed.families import FAMILIES as FAMS

    for v in VARIANTS:
        cfg, meta = variant_settings(v), _meta(v)
        assert ARCH.temporal_factor(cfg) == meta["temporal_compression"]
        assert ARCH.spatial_factor(cfg) == meta["spatial_compression"]
        assert ARCH.latent_channels(cfg) == meta["input"]["shape"][2]
        assert ARCH.min_latent_frames(cfg) == meta["min_latent_frames"] == 1
        t = meta["temporal_compression"]
        for n in range(1, 7):
            want = t * n if (cfg.is_cogvideox and n % 2 == 0) else t * n - (t - 1)
            assert ARCH.frames_out(cfg, n) == want
            assert ARCH.frames_out_streaming(cfg, n) == (t * n if cfg.is_cogvideox else want)
        if v != "taeltx_2":  # ltx2 is not in families.py (yet): its geometry comes from the config only
            fam = FAMS[FAMILIES[v]]
            assert (fam.latent_channels, fam.spatial_factor, fam.temporal_factor) == (
                cfg.latent_channels, cfg.spatial_factor, cfg.t_upscale)
            assert all(fam.frames_out(n) == ARCH.frames_out(cfg, n) for n in range(1, 7))
    # TAEHV decodes diffusion-space latents, except taecvx (the CogVideoX notebook divides by the scale first)
    assert {v: ARCH.latent_convention(variant_settings(v)) for v in VARIANTS} == {
        "taehv": "normalised", "taew2_1": "normalised", "taecvx": "raw", "taeltx_2": "normalised"}


def test_variant_from_file_name():
    assert variant_from_filename("/x/taew2_1.safetensors")[0] == "taew2_1"
    assert variant_from_filename("taecvx_fp16.pth")[0] == "taecvx"
    assert variant_from_filename("safetensors/taeltx_2.safetensors")[0] == "taeltx_2"
    assert variant_from_filename("taehv.pth")[0] == "taehv"
    v, why = variant_from_filename("model.pth")
    assert v == "taehv" and "default" in why
    with pytest.raises(UserError, match="taew2_2"):
        variant_from_filename("taew2_2.pth")


# ---------------------------------------------------------------------------------------------- parameters
def test_parameter_counts_exclude_the_encoder(shared_state):
    from safetensors.torch import load_file

    for v, expected in (("taehv", 9_844_611), ("taew2_1", 9_844_611), ("taecvx", 9_844_611),
                        ("taeltx_2", 10_194_160)):
        meta = _meta(v)
        assert meta["params"]["full_size_decoder"] == expected
        with torch.device("meta"):
            m = ARCH.build(variant_settings(v))
        assert sum(p.numel() for p in m.parameters()) == expected, v
    enc = {"taehv": shared_state, "taeltx_2": load_file(str(LTX_ST))}
    for v, sd in enc.items():
        n = sum(t.numel() for k, t in sd.items() if k.startswith("encoder."))
        assert n == _meta(v)["params"]["encoder"]  # 1,470,928 / 1,565,568: ignored, not loaded
        assert {k for k in sd if k.startswith("encoder.")} == set(ENCODER_KEYS)


# ---------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("v", VARIANTS)
def test_reference_matches_all_three_stored_decode_paths(imported, v):
    imp, m, io = imported[v]
    assert imp.config.variant == v and imp.ignored == ("encoder.* (64 tensors)",)
    assert any(f"variant {v}" in n and "file name" in n for n in imp.notes)
    z = _ncthw(io["latents"])
    with torch.no_grad():
        par = _ncthw(ARCH.reference(m, z))
    stream = _ncthw(decode_sequential(m, z, streaming=True))  # frame by frame, memory carried
    assert par.shape == io["frames"].shape
    assert par.shape[1] == ARCH.frames_out(imp.config, z.shape[2])
    assert stream.shape[1] == ARCH.frames_out_streaming(imp.config, z.shape[2]) == io["frames_streaming"].shape[1]
    assert _maxabs(par, io["frames"]) <= ATOL
    assert _maxabs(par, io["frames_sequential"]) <= ATOL
    assert _maxabs(stream, io["frames_streaming"]) <= ATOL
    # the sequential path is the streamed one with decode_video's trim (taecvx: 3 more frames dropped, odd T)
    drop = stream.shape[1] - par.shape[1]
    assert drop == (3 if v == "taecvx" else 0)
    assert _maxabs(stream[:, drop:], io["frames_sequential"]) <= ATOL
    assert float(par.min()) >= 0.0 and float(par.max()) <= 1.0


@pytest.mark.parametrize("v", VARIANTS)
def test_single_latent_frame_is_the_causal_prefix(imported, v):
    """T=1 decodes to the first frame(s) of the stored T=3 decodes (TAEHV is causal)."""
    imp, m, io = imported[v]
    z1 = _ncthw(io["latents"])[:, :, :1]
    with torch.no_grad():
        f1 = _ncthw(m(z1))
        s1 = _ncthw(m(z1, streaming=True))
    assert f1.shape[1] == ARCH.frames_out(imp.config, 1) == 1
    assert _maxabs(f1, io["frames"][:, :1]) <= ATOL
    n = ARCH.frames_out_streaming(imp.config, 1)
    assert n == (4 if v == "taecvx" else 1)
    assert _maxabs(s1, io["frames_streaming"][:, :n]) <= ATOL


def test_taecvx_even_t_keeps_every_frame(imported):
    imp, m, io = imported["taecvx"]
    ze = _ncthw(io["latents_even"])
    with torch.no_grad():
        fe = _ncthw(m(ze))
    assert fe.shape[1] == ARCH.frames_out(imp.config, 4) == 16
    assert _maxabs(fe, io["frames_even"]) <= ATOL
    seq = _ncthw(decode_sequential(m, ze))  # decode_video(parallel=False): even T, nothing trimmed either
    assert _maxabs(seq, io["frames_even_sequential"]) <= ATOL
    assert _maxabs(seq, io["frames_even_streaming"]) <= ATOL  # streaming never trims: the same frames
    # T=2 (even): 8 untrimmed frames = the first 8 of the never-trimmed streamed T=3 decode
    with torch.no_grad():
        f2 = _ncthw(m(_ncthw(io["latents"])[:, :, :2]))
    assert _maxabs(f2, io["frames_streaming"][:, :8]) <= ATOL


# ---------------------------------------------------------------------------------------------- lowering
CROP = {"taehv": (2, 3), "taew2_1": (2, 3), "taecvx": (2, 3), "taeltx_2": (2, 3)}  # non-square latent crops


@pytest.fixture(scope="module")
def crops(imported) -> dict:
    """(variant, T) -> (latents (1, C, T, h, w) cropped from the fixture's, reference frames): computed once."""
    cache: dict = {}

    def get(v: str, t: int):
        if (v, t) not in cache:
            _, m, io = imported[v]
            h, w = CROP[v]
            z = _ncthw(io["latents_even"] if t == 4 else io["latents"])[:, :, :t, :h, :w].contiguous()
            with torch.no_grad():
                cache[(v, t)] = (z, ARCH.reference(m, z))
        return cache[(v, t)]

    return get


def _lowered(m: TAEHVDecoder, z: torch.Tensor, **opts) -> torch.Tensor:
    low = ARCH.lower(m, LoweringOptions(**opts))
    with torch.no_grad():
        return low(z[0].transpose(0, 1).contiguous()).transpose(0, 1).unsqueeze(0)


@pytest.mark.parametrize("v", ["taehv", "taeltx_2"])
@pytest.mark.parametrize("shuffle", ["pixel_shuffle", "transpose"])
@pytest.mark.parametrize("fp16_safe", [True, False])
def test_lowered_matches_reference(imported, crops, v, shuffle, fp16_safe):
    _, m, _ = imported[v]
    z, ref = crops(v, 3)
    assert _maxabs(_lowered(m, z, shuffle=shuffle, fp16_safe=fp16_safe), ref) <= ATOL


@pytest.mark.parametrize("v,t", [("taew2_1", 3), ("taecvx", 3), ("taecvx", 4), ("taecvx", 2), ("taehv", 1),
                                 ("taeltx_2", 1)])
def test_lowered_frame_rules(imported, crops, v, t):
    imp, m, _ = imported[v]
    z, ref = crops(v, t)
    low = _lowered(m, z, shuffle="transpose")
    assert low.shape[2] == ARCH.frames_out(imp.config, t)
    assert _maxabs(low, ref) <= ATOL


def test_batch_elements_decode_independently(imported, crops):
    _, m, _ = imported["taehv"]
    z, ref = crops("taehv", 3)
    z2 = torch.cat([z, z.flip(-1)], 0)
    with torch.no_grad():
        out = m(z2)
        other = m(z.flip(-1))
    assert _maxabs(out[:1], ref) <= ATOL and _maxabs(out[1:], other) <= ATOL
    assert _maxabs(decode_sequential(m, z2), out) <= ATOL


def _op_census(ep) -> tuple[set[str], int, list[int]]:
    ops, rank, conv_ranks = set(), 0, []
    for n in ep.graph.nodes:
        val = n.meta.get("val")
        if isinstance(val, torch.Tensor):
            rank = max(rank, val.dim())
        if n.op == "call_function":
            name = str(n.target)
            ops.add(name)
            if "conv" in name:
                conv_ranks.append(n.args[1].meta["val"].dim())
    return ops, rank, conv_ranks


@pytest.mark.parametrize("v,shuffle", [("taeltx_2", "pixel_shuffle"), ("taehv", "transpose")])
def test_lowered_graph_is_phone_friendly(imported, v, shuffle):
    _, m, io = imported[v]
    low = ARCH.lower(m, LoweringOptions(shuffle=shuffle))
    x = io["latents"][0, :2, :, :2, :3].contiguous()  # N T C H W -> [T, C, h, w]; graph shape only
    ep = torch.export.export(low, (x,))
    for graph in (ep, ep.run_decompositions({})):
        ops, rank, conv_ranks = _op_census(graph)
        assert rank <= 4
        assert conv_ranks and all(r == 4 for r in conv_ranks)  # Conv2d weights only
        banned = ("upsample", "interpolate", "conv3d", "grid_sampler", "index", "gather", "repeat", "expand")
        assert not [o for o in ops if any(b in o for b in banned)], ops
        if shuffle == "transpose":
            assert not [o for o in ops if "pixel_shuffle" in o]
    with torch.no_grad():
        assert _maxabs(ep.module()(x), low(x)) <= ATOL


def test_fp16_lowered_psnr(imported, crops):
    """Half-precision run of the lowered module vs fp32: PSNR >= 45 dB on [0, 1] frames."""
    for v in ("taehv", "taeltx_2"):
        _, m, _ = imported[v]
        x = crops(v, 1)[0][0].transpose(0, 1).contiguous()  # one latent frame: t_up frames before the trim
        low = ARCH.lower(m, LoweringOptions(fp16_safe=True))
        with torch.no_grad():
            y = low(x)
            yh = low.half()(x.half()).float()
        assert torch.isfinite(yh).all()
        mse = float(((yh - y) ** 2).mean())
        psnr = 10 * math.log10(1.0 / max(mse, 1e-20))
        print(f"{v} fp16 PSNR {psnr:.1f} dB")
        assert psnr >= 45.0, (v, psnr)


# ---------------------------------------------------------------------------------------------- import, strictness
def _save_st(state: dict[str, torch.Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_pth_and_safetensors_load_the_same(shared_state, tmp_path, imported):
    p = _save_st(shared_state, tmp_path / "taehv.safetensors")
    a = ARCH.import_release(p, None, None)
    b = imported["taehv"][0]
    assert a.config == b.config and a.state.keys() == b.state.keys()
    assert all(torch.equal(a.state[k], b.state[k]) and a.state[k].dtype == torch.float32 for k in a.state)
    assert any("float16" in n for n in a.notes)


def test_variant_flag_and_config_file(tmp_path, named_weights):
    imp = ARCH.import_release(SHARED_PTH, None, "taecvx")
    assert imp.config.variant == "taecvx" and any("--variant" in n for n in imp.notes)
    cfg_path = FIXTURES / "taew2_1" / "config.json"
    imp = ARCH.import_release(SHARED_PTH, cfg_path, None)
    assert imp.config.variant == "taew2_1" and imp.config.family == "wan"
    with pytest.raises(UserError, match="contradicts"):
        ARCH.import_release(SHARED_PTH, cfg_path, "taehv")
    with pytest.raises(UserError, match="unknown TAEHV variant"):
        ARCH.import_release(SHARED_PTH, None, "taesd")


def test_wider_tgrow_keeps_the_last_rows(tmp_path, shared_state):
    """patch_tgrow_layers: a config with a time upscale disabled keeps the last rows of the TGrow weight."""
    cfg = dict(config_to_dict(variant_settings("taehv")), decoder_time_upscale=[False, False, True])
    cfg.pop("t_upscale"), cfg.pop("frames_to_trim")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    imp = ARCH.import_release(SHARED_PTH, tmp_path / "cfg.json", None)
    k = "decoder.13.conv.weight"
    assert torch.equal(imp.state[k], shared_state[k][-128:].float())
    assert any(k in n for n in imp.notes)
    assert ARCH.frames_out(imp.config, 3) == 5 and ARCH.temporal_factor(imp.config) == 2


@pytest.mark.parametrize("case", ["missing", "unknown", "unknown_encoder", "shape", "not_tensor"])
def test_strict_refusals(tmp_path, shared_state, case):
    sd = dict(shared_state)
    if case == "missing":
        del sd["decoder.8.weight"]
        match = "1 missing.*decoder.8.weight"
    elif case == "unknown":
        sd["decoder.99.weight"] = torch.zeros(3)
        match = "1 unexpected.*decoder.99.weight"
    elif case == "unknown_encoder":  # only the real encoder tensor names are known extras
        sd["encoder.18.weight"] = torch.zeros(3)
        match = "1 unexpected.*encoder.18.weight"
    elif case == "shape":
        sd["decoder.20.weight"] = torch.zeros(64, 64, 1, 1, dtype=torch.float16)
        match = "wrong shape.*decoder.20.weight"
    else:
        p = tmp_path / "taehv.pth"
        torch.save({**sd, "step": 3}, str(p))
        with pytest.raises(UserError, match="not tensors.*'step'"):
            ARCH.import_release(p, None, None)
        return
    p = _save_st(sd, tmp_path / "taehv.safetensors")
    with pytest.raises(UserError, match=match) as e:
        ARCH.import_release(p, None, None)
    assert "\n" not in str(e.value)


def test_wrong_variant_for_the_weights():
    with pytest.raises(UserError, match=r"wrong shape.*decoder\.1\.weight.*variant taeltx_2") as e:
        ARCH.import_release(SHARED_PTH, None, "taeltx_2")
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="variant taehv"):
        ARCH.import_release(LTX_ST, None, "taehv")


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_payload_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "taehv.pth"
    torch.save({"decoder.1.weight": torch.zeros(1), "x": _Payload(marker)}, str(p))
    assert not marker.exists()
    with pytest.raises(UserError, match="holds more than tensors"):
        ARCH.import_release(p, None, None)
    assert not marker.exists()


def test_unsupported_file_names_are_refused(tmp_path):
    p = tmp_path / "taew2_2.pth"
    p.symlink_to(SHARED_PTH)
    with pytest.raises(UserError, match="does not support"):
        ARCH.import_release(p, None, None)
    assert ARCH.import_release(p, None, "taew2_1").config.variant == "taew2_1"  # --variant overrides the name
