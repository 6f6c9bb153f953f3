"""Flash-VAED (``flash-vaed``): fixture parity of the reference and the rank-4 lowering, strict import, counts.

Fixtures: ``shared/fixtures/decoders/flash_vaed/{Wan,LTX}`` (random weights in the release layout, outputs of the
official code). The Wan weights are full size (fixed widths): its tests use the fixture's small latents.
"""

from __future__ import annotations

import copy
import json
import pickle
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from turbo_vaed.decoders import get_architecture
from turbo_vaed.decoders.flash_vaed import ARCH, FlashLTXConfig, FlashWanConfig, wan_segments
from turbo_vaed.errors import UserError
from turbo_vaed.lowering import LoweringOptions
from turbo_vaed.metrics import psnr

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "decoders" / "flash_vaed"
WAN_DIR, LTX_DIR = FIXTURES / "Wan", FIXTURES / "LTX"
pytestmark = pytest.mark.skipif(not (WAN_DIR / "full.pth").is_file() or not (LTX_DIR / "tiny.pth").is_file(),
                                reason=f"Flash-VAED fixtures not found under {FIXTURES}")

FP32_TOL = 1e-5  # the README's tolerance for an independent implementation
FP16_MIN_PSNR = 45.0
WAN_DECODER_PARAMS, WAN_CONV2_PARAMS, LTX_DECODER_PARAMS = 5_859_723, 272, 66_955_024  # meta.json
OPTIONS = [LoweringOptions(fp16_safe=s, shuffle=m) for m in ("pixel_shuffle", "transpose") for s in (True, False)]
OPTION_IDS = [f"{o.shuffle}-{'safe' if o.fp16_safe else 'plain'}" for o in OPTIONS]


def _io(d: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(d / "io.safetensors"))


def _load(weights: Path, config: Path | None, variant: str | None = None) -> torch.nn.Module:
    imp = ARCH.import_release(weights, config, variant)
    m = ARCH.build(imp.config)
    m.load_state_dict(imp.state)
    return m.eval()


def _setup(weights: Path, config: Path, d: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    m = _load(weights, config)
    io = _io(d)
    with torch.no_grad():  # decoded once per module, shared by the tests
        io["ref"] = ARCH.reference(m, io["latents"])
        io["ref_unclamped"] = m(io["latents"], clamp=False)
    return m, io


@pytest.fixture(scope="module")
def wan():
    return _setup(WAN_DIR / "full.pth", WAN_DIR / "config.json", WAN_DIR)


@pytest.fixture(scope="module")
def ltx():
    return _setup(LTX_DIR / "tiny.pth", LTX_DIR / "tiny.config.json", LTX_DIR)


def _mobile(z: torch.Tensor) -> torch.Tensor:
    return z[0].transpose(0, 1).contiguous()


def _video(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(0, 1).unsqueeze(0)


def _maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).abs().max())


def test_registered_and_conventions():
    assert get_architecture("flash-vaed") is ARCH
    w, x = FlashWanConfig(), FlashLTXConfig()
    assert (ARCH.family(w), ARCH.family(x)) == ("wan", "ltx")
    assert (ARCH.latent_convention(w), ARCH.latent_convention(x)) == ("normalised", "raw")
    assert ARCH.output_range(w) == ARCH.output_range(x) == (-1.0, 1.0)
    assert ARCH.min_latent_frames(w) == ARCH.min_latent_frames(x) == 1
    assert (ARCH.latent_channels(w), ARCH.spatial_factor(w), ARCH.temporal_factor(w)) == (16, 8, 4)
    assert (ARCH.latent_channels(x), ARCH.spatial_factor(x), ARCH.temporal_factor(x)) == (128, 32, 8)


def test_frame_rules():
    w, x = FlashWanConfig(), FlashLTXConfig()
    assert [ARCH.frames_out(w, t) for t in (1, 2, 3, 21)] == [1, 5, 9, 81]
    # the official cache restarts after latent frame 20: frames per latent frame [1, 4 x 20, 1, 4] for T=23
    assert ARCH.frames_out(w, 22) == 82 and ARCH.frames_out(w, 23) == 86
    assert wan_segments(23) == [(0, 21), (21, 23)]
    assert [ARCH.frames_out(x, t) for t in (1, 2, 3, 30)] == [1, 9, 17, 233]
    with pytest.raises(UserError):
        ARCH.frames_out(w, 0)


@pytest.mark.parametrize("variant", ["wan", "ltx"])
def test_reference_matches_fixture(variant, request):
    m, io = request.getfixturevalue(variant)
    ref, unclamped = io["ref"], io["ref_unclamped"]
    with torch.no_grad():
        ref_t1 = ARCH.reference(m, io["latents_t1"])
    if variant == "wan":  # frames: [3, F, H, W] clamped by the wrapper; frames_unclamped: [1, 3, F, H, W]
        assert _maxabs(unclamped, io["frames_unclamped"]) <= FP32_TOL
        assert _maxabs(ref, io["frames"].unsqueeze(0)) <= FP32_TOL
        assert _maxabs(ref_t1, io["frames_t1"].unsqueeze(0)) <= FP32_TOL
    else:  # frames: model.decode output, before infer.py's clamp
        assert _maxabs(unclamped, io["frames"]) <= FP32_TOL
        assert _maxabs(ref, io["frames"].clamp(-1, 1)) <= FP32_TOL
        assert _maxabs(ref_t1, io["frames_t1"].clamp(-1, 1)) <= FP32_TOL
    assert ref.shape[2] == ARCH.frames_out(m.cfg, io["latents"].shape[2])
    assert float(ref.min()) >= -1.0 and float(ref.max()) <= 1.0


@pytest.mark.parametrize("variant, opts", [(v, o) for v in ("wan", "ltx") for o in OPTIONS]
                         + [("ltx", LoweringOptions(rsqrt="div_sqrt"))],
                         ids=[f"{v}-{i}" for v in ("wan", "ltx") for i in OPTION_IDS] + ["ltx-div_sqrt"])
def test_lowered_matches_reference(variant, opts, request):
    m, io = request.getfixturevalue(variant)
    z = io["latents"]
    low = ARCH.lower(m, opts)
    low.clamp = False  # compared before and after the final clamp (the clamp itself: test_wan_cache_restart...)
    with torch.no_grad():
        raw = _video(low(_mobile(z)))
    assert raw.shape == (1, 3, ARCH.frames_out(m.cfg, z.shape[2]), *io["ref"].shape[-2:])
    assert _maxabs(raw.clamp(-1, 1), io["ref"]) <= FP32_TOL
    stored = io["frames_unclamped"] if variant == "wan" else io["frames"]
    assert _maxabs(raw, stored) <= FP32_TOL


def test_wan_cache_restart_after_latent_frame_20(wan):
    """T=23: latent frame 21 restarts like a first frame (86 frames); the lowered graph reproduces it."""
    m, _ = wan
    z = torch.randn(1, 16, 23, 1, 2, generator=torch.Generator().manual_seed(3))
    low = ARCH.lower(m, LoweringOptions())
    with torch.no_grad():
        ref = ARCH.reference(m, z)
        tail = ARCH.reference(m, z[:, :, 21:])  # latent frames 21, 22 decoded as a video of their own
        out = low(_mobile(z))
    assert ref.shape[2] == ARCH.frames_out(m.cfg, 23) == 86
    assert _maxabs(ref[:, :, 81:], tail) <= FP32_TOL
    assert _maxabs(_video(out), ref) <= FP32_TOL  # the lowered graph (default options, clamped) reproduces it


def _census(module: torch.nn.Module, x: torch.Tensor) -> tuple[Counter, int, set[int]]:
    """torch.export op counts, the max tensor rank over every node, and the ranks of all conv weights."""
    with torch.no_grad():
        ep = torch.export.export(module.eval(), (x,), strict=False).run_decompositions({})
    ops: Counter = Counter()
    max_rank, conv_ranks = 0, set()
    for n in ep.graph.nodes:
        val = n.meta.get("val")
        for v in val if isinstance(val, list | tuple) else [val]:
            if isinstance(v, torch.Tensor):
                max_rank = max(max_rank, v.dim())
        if n.op == "call_function":
            name = str(n.target).removeprefix("aten.").removesuffix(".default")
            ops[name] += 1
            if "conv" in name:
                conv_ranks.add(n.args[1].meta["val"].dim())
    return ops, max_rank, conv_ranks


@pytest.mark.parametrize("variant", ["wan", "ltx"])
def test_lowered_graph_is_phone_friendly(variant, request):
    if variant == "wan":
        m, io = request.getfixturevalue("wan")
        z = _mobile(io["latents"][:, :, :2])
    else:  # every LTX block kind, one resnet each (the op kinds of the fixture graph, a quarter of its size)
        torch.manual_seed(0)
        m = ARCH.build(FlashLTXConfig(decoder_block_out_channels=(32, 64, 32, 32),
                                      decoder_layers_per_block=(1, 1, 1, 1, 1)))
        z = torch.randn(2, 128, 2, 3)
    modes = ("transpose",) if variant == "wan" else ("transpose", "pixel_shuffle")  # the Wan export is the slow one
    for opts in (LoweringOptions(shuffle=mode) for mode in modes):
        ops, max_rank, conv_ranks = _census(ARCH.lower(m, opts), z)
        assert max_rank <= 4 and conv_ranks == {4}, (max_rank, conv_ranks)
        banned = ("conv3d", "upsample", "interpolate", "full", "zeros", "_to_copy", "index", "abs")
        assert not [o for o in ops if any(b in o for b in banned)], ops
        assert "convolution" in ops or "conv2d" in ops
        assert ("pixel_shuffle" in ops) == (opts.shuffle == "pixel_shuffle"), ops
        if variant == "wan":
            assert ops["bmm"] == 2 and ops["softmax.int"] == 1, ops  # the per-frame attention


def test_parameter_counts():
    with torch.device("meta"):
        wan = ARCH.build(FlashWanConfig())
        ltx_full = ARCH.build(ARCH.config_from_dict(json.loads((LTX_DIR / "config.json").read_text())))
        ltx_default = ARCH.build(FlashLTXConfig())
        ltx_tiny = ARCH.build(ARCH.config_from_dict(json.loads((LTX_DIR / "tiny.config.json").read_text())))
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    # the decode path is conv2 (post-quant conv) + decoder; meta.json's 5,859,723 is the decoder alone
    assert count(wan.decoder) == WAN_DECODER_PARAMS
    assert count(wan.conv2) == WAN_CONV2_PARAMS
    assert count(wan) == WAN_DECODER_PARAMS + WAN_CONV2_PARAMS == 5_859_995
    assert count(ltx_full) == count(ltx_default) == LTX_DECODER_PARAMS
    assert count(ltx_tiny) == 525_064


@pytest.mark.parametrize("name", ["Wan/config.json", "LTX/config.json", "LTX/tiny.config.json",
                                  "LTX/teacher_config.json"])
def test_config_round_trip(name):
    d = json.loads((FIXTURES / name).read_text())
    cfg = ARCH.config_from_dict(d)
    out = json.loads(json.dumps(ARCH.config_to_dict(cfg)))
    assert ARCH.config_from_dict(out) == cfg
    assert out["variant"] == ("wan" if name.startswith("Wan") else "ltx")
    assert {k for k in d if not k.startswith("_")} <= set(out)  # the official / derived keys are kept
    if name == "LTX/tiny.config.json":
        assert cfg.widths == (32, 32, 16, 8)  # meta.json: reversed, blocks >= 2 divided by 4
    if name == "LTX/config.json":
        assert cfg.widths == (512, 512, 64, 32)


def test_import_reports_variant_extras_and_dtype(tmp_path):
    (tmp_path / "Flash_VAED_Wan.pth").symlink_to(WAN_DIR / "full.pth")
    imp = ARCH.import_release(tmp_path / "Flash_VAED_Wan.pth", None, None)
    assert imp.config == FlashWanConfig() and imp.ignored == ("conv1.bias", "conv1.weight")
    assert any("from the file name" in n for n in imp.notes)
    assert {t.dtype for t in imp.state.values()} == {torch.float32}
    imp = ARCH.import_release(LTX_DIR / "tiny.pth", LTX_DIR / "tiny.config.json", "ltx")
    assert imp.ignored == ("mean_of_means", "std_of_means")
    assert any("from --variant" in n for n in imp.notes)
    imp = ARCH.import_release(LTX_DIR / "tiny.pth", LTX_DIR / "tiny.config.json", None)
    assert any("from the config" in n for n in imp.notes)


def _ltx_state() -> dict[str, torch.Tensor]:
    return torch.load(LTX_DIR / "tiny.pth", weights_only=True)


def _refused(tmp_path: Path, state: dict, match: str, config: Path | None = LTX_DIR / "tiny.config.json",
             variant: str | None = "ltx", name: str = "w.pth") -> None:
    p = tmp_path / name
    torch.save(state, p)
    with pytest.raises(UserError, match=match) as e:
        ARCH.import_release(p, config, variant)
    assert "\n" not in str(e.value)


def test_refuses_missing_unknown_and_misshaped_keys(tmp_path):
    sd = _ltx_state()
    _refused(tmp_path, {k: v for k, v in sd.items() if k != "decoder.conv_out.conv.bias"},
             r"1 missing \(decoder\.conv_out\.conv\.bias\)")
    _refused(tmp_path, {**sd, "decoder.bogus.weight": torch.zeros(1)}, r"1 unexpected \(decoder\.bogus\.weight\)")
    _refused(tmp_path, {**sd, "conv1.weight": torch.zeros(1)}, r"unexpected \(conv1\.weight\)")  # a Wan extra
    bad = dict(sd)
    bad["decoder.conv_in.conv.weight"] = torch.zeros(33, 128, 3, 3, 3)
    _refused(tmp_path, bad, r"wrong shape \(decoder\.conv_in\.conv\.weight: \[33, 128, 3, 3, 3\]")
    _refused(tmp_path, {**sd, "decoder.conv_in.conv.bias": [0.0] * 32}, r"non-tensor")


def test_refuses_the_wrong_config_for_the_weights(tmp_path):
    with pytest.raises(UserError, match="wrong shape"):  # tiny weights, full-size config
        ARCH.import_release(LTX_DIR / "tiny.pth", LTX_DIR / "config.json", None)
    (tmp_path / "Flash_VAED_LTX.pth").symlink_to(LTX_DIR / "tiny.pth")
    with pytest.raises(UserError, match="wrong shape"):  # no config: the released (full-size) one
        ARCH.import_release(tmp_path / "Flash_VAED_LTX.pth", None, None)
    with pytest.raises(UserError, match="missing"):  # Wan weights read as LTX
        ARCH.import_release(WAN_DIR / "full.pth", None, "ltx")
    with pytest.raises(UserError, match="contradicts"):
        ARCH.import_release(WAN_DIR / "full.pth", LTX_DIR / "config.json", "wan")
    with pytest.raises(UserError, match="--variant"):  # full.pth names no variant
        ARCH.import_release(WAN_DIR / "full.pth", None, None)
    with pytest.raises(UserError, match="unknown Flash-VAED variant"):
        ARCH.import_release(WAN_DIR / "full.pth", None, "hunyuan")


@pytest.mark.parametrize("d, match", [
    ({"variant": "wan", "dim": 128}, "fixed"),
    ({"variant": "wan", "decoder": {"class": "HybridDecoder3d"}}, "hard-coded"),
    ({"variant": "wan", "latents_std": [1.0] * 15}, "latents_std"),
    ({"variant": "ltx", "timestep_conditioning": True}, "timestep_conditioning"),
    ({"variant": "ltx", "decoder_block_out_channels": [130, 256, 512, 512]}, "divisible"),
    ({"variant": "ltx", "decoder_blocks": [1]}, "unknown"),
    ({"foo": 1}, "variant"),
])
def test_refuses_bad_configs(d, match):
    with pytest.raises(UserError, match=match):
        ARCH.config_from_dict(d)


class _Payload:
    """Unpickling this would create ``marker``: a loader that runs pickled code fails the test."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_refuses_pickled_objects_without_running_them(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "Flash_VAED_LTX.pth"
    with open(p, "wb") as f:
        pickle.dump({"decoder.conv_in.conv.weight": _Payload(marker)}, f)
    with pytest.raises(UserError, match="nothing in it was run"):
        ARCH.import_release(p, LTX_DIR / "tiny.config.json", None)
    torch.save({"decoder.conv_in.conv.weight": _Payload(marker)}, p)
    with pytest.raises(UserError):
        ARCH.import_release(p, LTX_DIR / "tiny.config.json", None)
    assert not marker.exists()


class _RoundToHalf(TorchDispatchMode):
    """Every float32 op output rounded to fp16 (inf beyond 65504): fp16 storage with fp32 arithmetic per op."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        return tree_map(lambda t: t.half().float() if isinstance(t, torch.Tensor) and t.dtype == torch.float32
                        else t, out)


def _fp16_emulated(module: torch.nn.Module, z: torch.Tensor) -> torch.Tensor:
    """``module`` with fp16 weights on fp16 inputs, every intermediate tensor stored as fp16 (see _RoundToHalf)."""
    m = copy.deepcopy(module).half().float()
    with torch.no_grad(), _RoundToHalf():
        return m(z.half().float())


@pytest.mark.parametrize("variant", ["wan", "ltx"])
def test_fp16_lowered_psnr(variant, request):
    """The fp16-safe lowered graph run in half precision vs fp32: >= 45 dB.

    On CPU, PyTorch runs half-precision grouped convs one group at a time (~18k calls for Wan's depthwise convs,
    30+ s), so there the Wan graph runs with fp16 *storage* emulated (fp16 weights and inputs, every op's output
    rounded to fp16, so an overflow is an inf just as in half precision); the LTX case runs real half-precision
    kernels and checks that the emulation agrees with them. On a CUDA machine both run in half precision there.
    """
    m, io = request.getfixturevalue(variant)
    z = _mobile(io["latents"][:, :, :2, :1, :2] if variant == "wan" else io["latents"][:, :, :2])
    low = ARCH.lower(m, LoweringOptions(fp16_safe=True))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.no_grad():
        y32 = low(z)
        emulated = _fp16_emulated(low, z)
        y16 = (copy.deepcopy(low).to(dev).half()(z.to(dev).half()).float().cpu()
               if variant == "ltx" or dev == "cuda" else emulated)
    assert torch.isfinite(y16).all() and torch.isfinite(emulated).all()
    db = psnr(_video(y16), _video(y32))
    print(f"{variant}: fp16 vs fp32 PSNR {db:.1f} dB (emulated: {psnr(_video(emulated), _video(y32)):.1f} dB)")
    assert db >= FP16_MIN_PSNR
    assert psnr(_video(emulated), _video(y32)) >= FP16_MIN_PSNR
    if y16 is not emulated:  # the emulation tracks real half-precision kernels
        assert psnr(_video(emulated), _video(y16)) >= FP16_MIN_PSNR + 10
