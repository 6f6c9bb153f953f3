"""Flash-VAED decoders (``flash-vaed``): the released students for Wan 2.1 and LTX-Video.

Written from the fixture descriptions (``shared/fixtures/decoders/flash_vaed/*/meta.json``, README) and the
Flash-VAED paper only; the official code carries no licence and was not read. Two variants, one architecture:

``wan`` (``Flash_VAED_Wan.pth``, family ``wan``): a hybrid Wan 2.1 decoder with hard-coded widths. Input is the
*normalised* (diffusion-space) Wan latent; decode de-normalises it (``z / (1/std) + mean``), applies ``conv2`` (1x1x1,
the post-quant conv) and decodes causally: 3D convs pad time with zeros in front; ResidualBlockFast blocks are
RMS_norm -> SiLU -> depthwise-separable 3x3x3 (twice); RMS_norm is ``normalize(x) * sqrt(C) * gamma``; the middle
attention is per-frame 2D single-head attention; a temporal Resample leaves the first frame alone and runs its
causal (3,1,1) time conv over the later frames only (zero-padded from the second frame on), each of which becomes
two frames (channels ``[0:C]`` then ``[C:2C]``); upsampling is nearest-exact x2 + Conv2d 3x3; from ``upsamples[8]``
on everything is 2D per frame (ResidualBlock2D always has a 1x1 shortcut); the head is RMS_norm, SiLU and a causal
3x3x3 conv; the output is clamped to [-1, 1]. The official decode streams one latent frame at a time through a
frame cache that is cleared at latent frame 0 *and after latent frame 20*: from latent frame 21 on the video restarts
like a first frame (T=23 gives 86 frames, not 89). The reference here decodes whole sequences, which equals the
cached stream, and reproduces the restart.

``ltx`` (``Flash_VAED_LTX.pth``, family ``ltx``): a pruned LTX-Video decoder (diffusers ``AutoencoderKLLTXVideo``
layout, ``decoder.*`` keys) reading *raw* LTX latents; F = 8T - 7, x32. The decoder widths are reversed and the
blocks at index >= 2 divided by 4; the mid block and ``up_blocks[0..1]`` use depthwise-separable resnets whose
depthwise convs are causal (frame 0 twice in front), while the regular convs replicate both edge frames; the
resnets of ``up_blocks[2..3]`` always have a LayerNorm + 1x1 shortcut; ``up_blocks[3]`` uses 2D (per-frame)
resnets; the upsampler is the LTX 8-D reshape/permute followed by dropping the first frame; the final unpatchify
puts the first patch index on W. ``temb`` is ignored; the output is clamped afterwards (as infer.py does).

Lowering (:meth:`FlashVAEDArchitecture.lower`): frames ride in the batch axis, every tensor has rank <= 4, Conv2d
only (3D convs become stacked-tap or per-tap-summed Conv2d), per-frame attention is two ``bmm`` and a softmax,
nearest-exact x2 + Conv2d 3x3 is folded into one Conv2d 3x3 with 4x the output channels followed by a pixel shuffle
(sub-pixel form: identical in exact arithmetic, no interpolate op, and no upsampled input tensor), the temporal
channel-to-frame shuffles are free reshapes (conv output channels permuted once here), the LTX unpatchify is a
channel permutation + pixel shuffle, and every norm has an fp16-safe form.

The released decoders' configs ship as data, ``models/flash-vaed/{wan,ltx}.json`` (:func:`full_size_config`), for
benchmarks with random weights (``turbovaed bench --suite --decoders ...,flash-vaed``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from turbo_vaed.decoders.base import Architecture, Imported, LoadReport, read_weights_file
from turbo_vaed.decoders.timeline import Clock, ClockedStep, Timeline, clocked_stream_step
from turbo_vaed.errors import UserError
from turbo_vaed.lowering import LoweringOptions, silu, spatial_shuffle

WAN, LTX = "wan", "ltx"
VARIANTS = (WAN, LTX)
FAMILY_OF = {WAN: "wan", LTX: "ltx"}
RELEASE_FILES = {WAN: "Flash_VAED_Wan.pth", LTX: "Flash_VAED_LTX.pth"}

# ------------------------------------------------------------------------------------------------ Wan config

WAN_LATENTS_MEAN = (-0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
                    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921)
WAN_LATENTS_STD = (2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
                   3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.916)
WAN_Z_DIM = 16
WAN_CACHE_RESET = 21  # the official decode clears its frame cache at latent frame 0 and after latent frame 20
# WanVAE_ constructor values the released model uses; the hybrid decoder's widths are hard-coded, so these are fixed
WAN_FIXED = {"dim": 96, "z_dim": WAN_Z_DIM, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [],
             "temperal_downsample": [False, True, True], "CACHE_T": 2}
WAN_CLASS = "WanVAE_ (wrapper WanVAE)"

# The hard-coded HybridDecoder3d: (kind, in, out) per layer of ``decoder.upsamples``
WAN_MID = 384
WAN_UPSAMPLES: tuple[tuple[str, int, int], ...] = (
    ("ResidualBlockFast", 384, 384), ("ResidualBlockFast", 384, 384), ("ResidualBlockFast", 384, 384),
    ("Resample3d", 384, 192),
    ("ResidualBlockFast", 192, 384), ("ResidualBlockFast", 384, 384), ("ResidualBlockFast", 384, 384),
    ("Resample3d", 384, 24),
    ("ResidualBlock2D", 24, 24), ("ResidualBlock2D", 24, 24), ("ResidualBlock2D", 24, 24),
    ("Resample2d", 24, 12),
    ("ResidualBlock2D", 12, 12), ("ResidualBlock2D", 12, 12), ("ResidualBlock2D", 12, 12),
)
WAN_FIRST_2D = 8  # from upsamples[8] on the decoder runs per frame in 2D
WAN_HEAD_IN = 12


def _wan_decoder_description() -> dict:
    """The ``decoder`` entry of the derived Wan config.json (a description of the hard-coded widths)."""
    def layer(kind: str, cin: int, cout: int) -> str:
        if kind.startswith("Resample"):
            return f"Resample({cin},{cout},'{kind[-2:]}')"
        return f"{kind}({cin},{cout})"

    return {
        "class": "HybridDecoder3d",
        "widths_hard_coded": True,
        "conv1": [WAN_Z_DIM, WAN_MID],
        "middle": [f"ResidualBlockFast({WAN_MID},{WAN_MID})", f"AttentionBlock({WAN_MID})",
                   f"ResidualBlockFast({WAN_MID},{WAN_MID})"],
        "upsamples": [layer(*spec) for spec in WAN_UPSAMPLES],
        "head": [f"RMS_norm({WAN_HEAD_IN}, images=False)", "SiLU", f"CausalConv3d({WAN_HEAD_IN},3,3,padding=1)"],
    }


@dataclass(frozen=True)
class FlashWanConfig:
    """Flash-VAED Wan: only the latent statistics (and dropout, a no-op in eval) are free; the widths are fixed."""

    latents_mean: tuple[float, ...] = WAN_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN_LATENTS_STD
    dropout: float = 0.0

    @property
    def variant(self) -> str:
        return WAN


# ------------------------------------------------------------------------------------------------ LTX config

LTX_CLASS = "AutoencoderKLLTXVideo"
LTX_DEFAULTS: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 128,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["LTXVideoDownBlock3D"] * 4,
    "decoder_block_out_channels": [128, 256, 512, 512],
    "layers_per_block": [4, 3, 3, 3, 4],
    "decoder_layers_per_block": [4, 3, 3, 3, 4],
    "spatio_temporal_scaling": [True, True, True, False],
    "decoder_spatio_temporal_scaling": [True, True, True, False],
    "decoder_inject_noise": [False, False, False, False, False],
    "downsample_type": ["conv", "conv", "conv", "conv"],
    "upsample_residual": [False, False, False, False],
    "upsample_factor": [1, 1, 1, 1],
    "timestep_conditioning": False,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-6,
    "scaling_factor": 1.0,
    "encoder_causal": True,
    "decoder_causal": False,
    "spatial_compression_ratio": None,
    "temporal_compression_ratio": None,
}
# keys the decoder does not read (the encoder's), kept verbatim for the JSON round trip
LTX_ENCODER_KEYS = ("in_channels", "block_out_channels", "down_block_types", "layers_per_block",
                    "spatio_temporal_scaling", "downsample_type", "encoder_causal", "spatial_compression_ratio",
                    "temporal_compression_ratio")
LTX_PRUNE = 4  # decoder blocks at index >= 2 (after reversing) are divided by this
LTX_RMS_EPS = 1e-8


@dataclass(frozen=True)
class FlashLTXConfig:
    """Flash-VAED LTX: the decoder-side constructor arguments of ``AutoencoderKLLTXVideo`` (official keys)."""

    decoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    decoder_layers_per_block: tuple[int, ...] = (4, 3, 3, 3, 4)
    decoder_spatio_temporal_scaling: tuple[bool, ...] = (True, True, True, False)
    latent_channels: int = 128
    out_channels: int = 3
    patch_size: int = 4
    patch_size_t: int = 1
    resnet_norm_eps: float = 1e-6
    scaling_factor: float = 1.0
    decoder_causal: bool = False
    encoder: tuple[tuple[str, str], ...] = field(default=(), compare=False)  # encoder-only keys, JSON-encoded

    @property
    def variant(self) -> str:
        return LTX

    @property
    def widths(self) -> tuple[int, ...]:
        """Pruned decoder widths in decode order: reversed, blocks at index >= 2 divided by 4."""
        rev = tuple(reversed(self.decoder_block_out_channels))
        return tuple(c // LTX_PRUNE if i >= 2 else c for i, c in enumerate(rev))

    @property
    def layers(self) -> tuple[int, ...]:
        """Resnets of the mid block, then of each up block (decode order)."""
        return tuple(reversed(self.decoder_layers_per_block))

    @property
    def upsample(self) -> tuple[bool, ...]:
        """Whether each up block (decode order) has an upsampler."""
        return tuple(reversed(self.decoder_spatio_temporal_scaling))


FlashVAEDConfig = FlashWanConfig | FlashLTXConfig


def _bad(msg: str) -> UserError:
    return UserError(f"invalid Flash-VAED config: {msg}")


def _ints(d: dict, key: str, n: int) -> tuple[int, ...]:
    v = d[key]
    if not isinstance(v, list | tuple) or len(v) != n or not all(isinstance(x, int) and not isinstance(x, bool)
                                                                  for x in v):
        raise _bad(f"{key} must be a list of {n} integers, got {v!r}")
    return tuple(v)


def _bools(d: dict, key: str, n: int) -> tuple[bool, ...]:
    v = d[key]
    if not isinstance(v, list | tuple) or len(v) != n or not all(isinstance(x, bool) for x in v):
        raise _bad(f"{key} must be a list of {n} booleans, got {v!r}")
    return tuple(v)


def _floats(d: dict, key: str, n: int) -> tuple[float, ...]:
    v = d[key]
    if (not isinstance(v, list | tuple) or len(v) != n
            or not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
        raise _bad(f"{key} must be a list of {n} finite numbers, got {v!r}")
    return tuple(float(x) for x in v)


def _number(d: dict, key: str) -> float:
    v = d[key]
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v):
        raise _bad(f"{key} must be a number, got {v!r}")
    return float(v)


def detect_variant(d: dict) -> str | None:
    """``wan`` or ``ltx`` from a config dict (its ``variant`` key, class name or telltale keys), else None."""
    v = d.get("variant")
    if isinstance(v, str) and v.lower() in VARIANTS:
        return v.lower()
    cls = str(d.get("_class_name", "")) + " " + str(d.get("class", ""))
    if "WanVAE" in cls or "z_dim" in d:
        return WAN
    if "LTX" in cls or "latent_channels" in d or "decoder_block_out_channels" in d:
        return LTX
    return None


def variant_from_name(name: str) -> str | None:
    """``wan`` or ``ltx`` from a weights file name (``Flash_VAED_Wan.pth``), else None."""
    low = Path(name).name.lower()
    hits = [v for v in VARIANTS if v in low]
    return hits[0] if len(hits) == 1 else None


def wan_config_from_dict(d: dict) -> FlashWanConfig:
    known = {"class", "variant", "decoder", "latents_mean", "latents_std", "dropout", *WAN_FIXED}
    unknown = sorted(k for k in d if k not in known and not k.startswith("_"))
    if unknown:
        raise _bad(f"unknown Wan key(s) {', '.join(unknown[:3])}: Flash-VAED Wan takes {', '.join(sorted(known))}")
    for k, want in WAN_FIXED.items():
        if k in d and d[k] != want:
            raise _bad(f"{k}={d[k]!r}, but Flash-VAED Wan's decoder is fixed at {k}={want!r}")
    if "decoder" in d and d["decoder"] != _wan_decoder_description():
        raise _bad("the 'decoder' entry does not describe Flash-VAED Wan's hard-coded HybridDecoder3d "
                   "(its widths cannot be changed)")
    cfg = FlashWanConfig()
    if "latents_mean" in d:
        cfg = replace(cfg, latents_mean=_floats(d, "latents_mean", WAN_Z_DIM))
    if "latents_std" in d:
        std = _floats(d, "latents_std", WAN_Z_DIM)
        if min(std) <= 0:
            raise _bad("latents_std must be positive")
        cfg = replace(cfg, latents_std=std)
    if "dropout" in d:
        p = _number(d, "dropout")
        if not 0.0 <= p < 1.0:
            raise _bad(f"dropout must be in [0, 1), got {p}")
        cfg = replace(cfg, dropout=p)
    return cfg


def wan_config_to_dict(cfg: FlashWanConfig) -> dict:
    return {"variant": WAN, "class": WAN_CLASS, **json.loads(json.dumps(WAN_FIXED)),
            "dropout": cfg.dropout, "decoder": _wan_decoder_description(),
            "latents_mean": list(cfg.latents_mean), "latents_std": list(cfg.latents_std)}


def ltx_config_from_dict(d: dict) -> FlashLTXConfig:
    unknown = sorted(k for k in d if k not in LTX_DEFAULTS and k != "variant" and not k.startswith("_"))
    if unknown:
        raise _bad(f"unknown LTX key(s) {', '.join(unknown[:3])}: expected AutoencoderKLLTXVideo arguments")
    full = {**LTX_DEFAULTS, **{k: v for k, v in d.items() if k in LTX_DEFAULTS}}
    # fixed by the released architecture: refuse what would build a different decoder than the official code
    for k, want in (("decoder_inject_noise", [False] * 5), ("upsample_residual", [False] * 4),
                    ("upsample_factor", [1] * 4), ("timestep_conditioning", False), ("patch_size_t", 1),
                    ("latent_channels", 128), ("out_channels", 3)):
        got = list(full[k]) if isinstance(full[k], list | tuple) else full[k]
        if got != want:
            raise _bad(f"{k}={full[k]!r} is not supported (Flash-VAED LTX uses {k}={want!r})")
    widths = _ints(full, "decoder_block_out_channels", 4)
    layers = _ints(full, "decoder_layers_per_block", 5)
    scaling = _bools(full, "decoder_spatio_temporal_scaling", 4)
    if any(w <= 0 for w in widths) or any(n < 0 for n in layers):
        raise _bad("decoder widths must be positive and layer counts non-negative")
    if widths[0] % LTX_PRUNE or widths[1] % LTX_PRUNE:
        raise _bad(f"decoder_block_out_channels[0..1] must be divisible by {LTX_PRUNE} (they are pruned), "
                   f"got {list(widths)}")
    if widths[2] != widths[3]:
        raise _bad(f"decoder_block_out_channels[2] must equal [3] (up_blocks[1] has no conv_in in Flash-VAED LTX), "
                   f"got {list(widths)}")
    if list(scaling) != [True, True, True, False]:
        raise _bad(f"decoder_spatio_temporal_scaling={list(scaling)} changes the x8 time / x32 space factors of "
                   "the ltx family: use [true, true, true, false]")
    patch = full["patch_size"]
    if patch != 4:
        raise _bad(f"patch_size={patch!r}: the ltx family decodes x32 (patch_size 4)")
    eps = _number(full, "resnet_norm_eps")
    scale = _number(full, "scaling_factor")
    if eps <= 0 or scale == 0:
        raise _bad("resnet_norm_eps must be > 0 and scaling_factor non-zero")
    if not isinstance(full["decoder_causal"], bool):
        raise _bad(f"decoder_causal must be true or false, got {full['decoder_causal']!r}")
    enc = tuple((k, json.dumps(d[k])) for k in LTX_ENCODER_KEYS if k in d)
    return FlashLTXConfig(decoder_block_out_channels=widths, decoder_layers_per_block=layers,
                          decoder_spatio_temporal_scaling=scaling, patch_size=int(patch), resnet_norm_eps=eps,
                          scaling_factor=scale, decoder_causal=full["decoder_causal"], encoder=enc)


def ltx_config_to_dict(cfg: FlashLTXConfig) -> dict:
    d: dict[str, Any] = {"variant": LTX, "_class_name": LTX_CLASS, **json.loads(json.dumps(LTX_DEFAULTS))}
    d.update({k: json.loads(v) for k, v in cfg.encoder})
    d.update({
        "latent_channels": cfg.latent_channels, "out_channels": cfg.out_channels,
        "decoder_block_out_channels": list(cfg.decoder_block_out_channels),
        "decoder_layers_per_block": list(cfg.decoder_layers_per_block),
        "decoder_spatio_temporal_scaling": list(cfg.decoder_spatio_temporal_scaling),
        "patch_size": cfg.patch_size, "patch_size_t": cfg.patch_size_t, "resnet_norm_eps": cfg.resnet_norm_eps,
        "scaling_factor": cfg.scaling_factor, "decoder_causal": cfg.decoder_causal,
    })
    return d


# ------------------------------------------------------------------------------------------------ Wan reference


class WanRMSNorm(nn.Module):
    """``F.normalize`` over channels (L2, eps 1e-12) x sqrt(C) x gamma; gamma (C,1,1) for images, else (C,1,1,1)."""

    def __init__(self, dim: int, images: bool = True) -> None:
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1) * self.scale * self.gamma


class WanCausalConv3d(nn.Conv3d):
    """Conv3d with 2*p_t zero frames in front (nothing behind) and symmetric spatial zero padding."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int, int], padding: tuple[int, int, int],
                 groups: int = 1) -> None:
        super().__init__(cin, cout, kernel, padding=0, groups=groups)
        pt, ph, pw = padding
        self.causal_pad = (pw, pw, ph, ph, 2 * pt, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.causal_pad))


class WanSeparableConv3d(nn.Module):
    """CausalDepthwiseConv3d: causal depthwise k x k x k (groups=C) then pointwise 1x1x1, both with bias."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        p = k // 2
        self.depthwise_conv = WanCausalConv3d(cin, cin, k, (p, p, p), groups=cin)
        self.pointwise_conv = nn.Conv3d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class WanResidualBlockFast(nn.Module):
    """RMS_norm, SiLU, separable 3x3x3, RMS_norm, SiLU, dropout, separable 3x3x3; separable k=1 shortcut if in!=out."""

    def __init__(self, cin: int, cout: int, dropout: float) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            WanRMSNorm(cin, images=False), nn.SiLU(), WanSeparableConv3d(cin, cout, 3),
            WanRMSNorm(cout, images=False), nn.SiLU(), nn.Dropout(dropout), WanSeparableConv3d(cout, cout, 3))
        self.shortcut = WanSeparableConv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


def _frames_to_batch(x: torch.Tensor) -> torch.Tensor:
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)


def _batch_to_frames(x: torch.Tensor, b: int) -> torch.Tensor:
    bt, c, h, w = x.shape
    return x.reshape(b, bt // b, c, h, w).permute(0, 2, 1, 3, 4)


class WanAttentionBlock(nn.Module):
    """Per-frame single-head self-attention over H*W tokens: RMS_norm, 1x1 qkv (q, k, v), SDPA, 1x1 proj, + x."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = WanRMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(_frames_to_batch(x))
        qkv = self.to_qkv(y).reshape(b * t, 1, c * 3, h * w).permute(0, 1, 3, 2).contiguous()
        q, k, v = qkv.chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)
        y = self.proj(y.squeeze(1).permute(0, 2, 1).reshape(b * t, c, h, w))
        return x + _batch_to_frames(y, b)


class NearestExact2x(nn.Module):
    """Nearest-exact x2 upsampling, computed in fp32 (as the official Upsample)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x.float(), scale_factor=2.0, mode="nearest-exact").type_as(x)


class WanResample(nn.Module):
    """Upsampling: '3d' (time_conv from the 2nd frame on: 1 -> 2 frames, then per frame) or '2d' (per frame).

    ``resample`` = nearest-exact x2 + Conv2d 3x3. In '3d' mode the first frame skips the causal (3,1,1) time conv;
    the later frames go through it as a zero-padded causal sequence of their own, and each becomes 2 frames.
    '3d' takes and returns ``(B, C, T, H, W)``; '2d' takes and returns ``(B*T, C, H, W)``.
    """

    def __init__(self, cin: int, cout: int, temporal: bool) -> None:
        super().__init__()
        self.resample = nn.Sequential(NearestExact2x(), nn.Conv2d(cin, cout, 3, padding=1))
        self.time_conv = WanCausalConv3d(cin, cin * 2, (3, 1, 1), (1, 0, 0)) if temporal else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.time_conv is None:
            return self.resample(x)
        b, c, t, h, w = x.shape
        if t > 1:
            rest = self.time_conv(x[:, :, 1:])  # (b, 2c, t-1, h, w)
            rest = rest.reshape(b, 2, c, t - 1, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c, 2 * (t - 1), h, w)
            x = torch.cat([x[:, :, :1], rest], dim=2)
        return _batch_to_frames(self.resample(_frames_to_batch(x)), b)


class WanResidualBlock2D(nn.Module):
    """Per-frame RMS_norm, SiLU, Conv2d 3x3, RMS_norm, SiLU, dropout, Conv2d 3x3, plus an always-there 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, dropout: float) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            WanRMSNorm(cin), nn.SiLU(), nn.Conv2d(cin, cout, 3, padding=1),
            WanRMSNorm(cout), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(cout, cout, 3, padding=1))
        self.shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class FlashWanDecoder(nn.Module):
    """HybridDecoder3d: one causal sequence ``(B, 16, T, h, w)`` -> ``(B, 3, 1 + 4(T-1), 8h, 8w)`` (unclamped)."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = WanCausalConv3d(WAN_Z_DIM, WAN_MID, 3, (1, 1, 1))
        self.middle = nn.Sequential(WanResidualBlockFast(WAN_MID, WAN_MID, dropout), WanAttentionBlock(WAN_MID),
                                    WanResidualBlockFast(WAN_MID, WAN_MID, dropout))
        layers: list[nn.Module] = []
        for kind, cin, cout in WAN_UPSAMPLES:
            if kind == "ResidualBlockFast":
                layers.append(WanResidualBlockFast(cin, cout, dropout))
            elif kind == "ResidualBlock2D":
                layers.append(WanResidualBlock2D(cin, cout, dropout))
            else:
                layers.append(WanResample(cin, cout, temporal=kind == "Resample3d"))
        self.upsamples = nn.ModuleList(layers)
        self.head = nn.Sequential(WanRMSNorm(WAN_HEAD_IN, images=False), nn.SiLU(),
                                  WanCausalConv3d(WAN_HEAD_IN, 3, 3, (1, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        x = self.middle(self.conv1(x))
        for i, layer in enumerate(self.upsamples):
            if i == WAN_FIRST_2D:
                x = _frames_to_batch(x)
            x = layer(x)
        return self.head(_batch_to_frames(x, b))


def wan_segments(latent_frames: int) -> list[tuple[int, int]]:
    """Latent-frame ranges the official decode treats as independent videos (its cache restarts at frame 21)."""
    if latent_frames <= WAN_CACHE_RESET:
        return [(0, latent_frames)]
    return [(0, WAN_CACHE_RESET), (WAN_CACHE_RESET, latent_frames)]


class FlashVAEDWan(nn.Module):
    """Flash-VAED Wan (keys ``conv2.*``, ``decoder.*``): normalised latents ``(B, 16, T, h, w)`` -> frames."""

    def __init__(self, cfg: FlashWanConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv2 = nn.Conv3d(WAN_Z_DIM, WAN_Z_DIM, 1)
        self.decoder = FlashWanDecoder(cfg.dropout)
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32)
        inv_std = 1.0 / torch.tensor(cfg.latents_std, dtype=torch.float32)  # the official scale = [mean, 1/std]
        self.register_buffer("latents_mean", mean.view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("latents_inv_std", inv_std.view(1, -1, 1, 1, 1), persistent=False)

    def forward(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        x = self.conv2(z / self.latents_inv_std + self.latents_mean)
        y = torch.cat([self.decoder(x[:, :, a:b]) for a, b in wan_segments(x.shape[2])], dim=2)
        return y.clamp(-1.0, 1.0) if clamp else y


# ------------------------------------------------------------------------------------------------ LTX reference


def ltx_rms_norm(x: torch.Tensor, eps: float = LTX_RMS_EPS) -> torch.Tensor:
    """Weightless RMSNorm over channels (dim 1), statistics in fp32: ``x * rsqrt(mean_c(x^2) + eps)``."""
    ms = x.float().pow(2).mean(1, keepdim=True)
    return (x * torch.rsqrt(ms + eps)).to(x.dtype)


class LTXConv3d(nn.Module):
    """LTXVideoCausalConv3d (key ``.conv``): replicate time padding, causal (k-1 in front) or symmetric."""

    def __init__(self, cin: int, cout: int, k: int, causal: bool) -> None:
        super().__init__()
        self.k, self.causal = k, causal
        self.conv = nn.Conv3d(cin, cout, k, padding=(0, k // 2, k // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.k - 1
        if n:
            first, last = x[:, :, :1], x[:, :, -1:]
            parts = [first] * n + [x] if self.causal else [first] * (n // 2) + [x] + [last] * (n // 2)
            x = torch.cat(parts, dim=2)
        return self.conv(x)


class LTXDepthwiseConv3d(nn.Module):
    """Depthwise 3x3x3 (groups=C, always causal: frame 0 twice in front) + pointwise 1x1x1, both with bias."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv3d(cin, cin, 3, padding=(0, 1, 1), groups=cin)
        self.pointwise = nn.Conv3d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, :, :1], x[:, :, :1], x], dim=2)
        return self.pointwise(self.depthwise(x))


def _per_frame(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _batch_to_frames(layer(_frames_to_batch(x)), x.shape[0])


class LTXResnet(nn.Module):
    """LTX resnet: norm1, SiLU, conv1, norm2, SiLU, dropout, conv2 (+ LayerNorm + 1x1 shortcut when forced or in!=out).

    ``kind``: ``depthwise`` (separable causal convs), ``regular`` (LTXConv3d) or ``spatial`` (Conv2d per frame).
    """

    def __init__(self, kind: str, cin: int, cout: int, eps: float, causal: bool, force_shortcut: bool) -> None:
        super().__init__()
        self.kind, self.cin, self.cout = kind, cin, cout
        if kind == "depthwise":
            self.conv1: nn.Module = LTXDepthwiseConv3d(cin, cout)
            self.conv2: nn.Module = LTXDepthwiseConv3d(cout, cout)
        elif kind == "regular":
            self.conv1, self.conv2 = LTXConv3d(cin, cout, 3, causal), LTXConv3d(cout, cout, 3, causal)
        else:
            self.conv1, self.conv2 = nn.Conv2d(cin, cout, 3, padding=1), nn.Conv2d(cout, cout, 3, padding=1)
        self.norm3: nn.LayerNorm | None = None
        self.conv_shortcut: nn.Module | None = None
        if force_shortcut or cin != cout:
            self.norm3 = nn.LayerNorm(cin, eps=eps, elementwise_affine=True)
            self.conv_shortcut = nn.Conv2d(cin, cout, 1) if kind == "spatial" else LTXConv3d(cin, cout, 1, causal)

    def _conv(self, conv: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return _per_frame(conv, x) if self.kind == "spatial" else conv(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self._conv(self.conv1, F.silu(ltx_rms_norm(x)))
        h = self._conv(self.conv2, F.silu(ltx_rms_norm(h)))
        if self.norm3 is not None:
            x = self._conv(self.conv_shortcut, self.norm3(x.movedim(1, -1)).movedim(-1, 1))
        return h + x


class LTXUpsampler(nn.Module):
    """Conv 3x3x3 C -> 8C, the LTX 8-D reshape/permute to (2T, 2H, 2W), then the first frame dropped."""

    def __init__(self, c: int, causal: bool) -> None:
        super().__init__()
        self.conv = LTXConv3d(c, c * 8, 3, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        y = self.conv(x).reshape(b, -1, 2, 2, 2, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return y.reshape(b, -1, 2 * t, 2 * h, 2 * w)[:, :, 1:]


class LTXMidBlock(nn.Module):
    def __init__(self, c: int, n: int, eps: float, causal: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(LTXResnet("depthwise", c, c, eps, causal, False) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        return x


LTX_BLOCK_KINDS = ("depthwise", "depthwise", "regular", "spatial")  # resnet type of up_blocks[0..3]


class LTXUpBlock(nn.Module):
    """conv_in (regular resnet; always in up_blocks[2..3]), upsampler, resnets."""

    def __init__(self, index: int, cin: int, cout: int, n: int, upsample: bool, eps: float, causal: bool) -> None:
        super().__init__()
        force = index >= 2
        self.conv_in = LTXResnet("regular", cin, cout, eps, causal, True) if force or cin != cout else None
        self.upsamplers = nn.ModuleList([LTXUpsampler(cout, causal)]) if upsample else None
        self.resnets = nn.ModuleList(LTXResnet(LTX_BLOCK_KINDS[index], cout, cout, eps, causal, force)
                                     for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_in is not None:
            x = self.conv_in(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        for r in self.resnets:
            x = r(x)
        return x


class FlashLTXDecoder(nn.Module):
    """The pruned LTX decoder: ``(B, 128, T, h, w)`` -> ``(B, 3, 8T-7, 32h, 32w)`` (unclamped)."""

    def __init__(self, cfg: FlashLTXConfig) -> None:
        super().__init__()
        w, n, causal, eps = cfg.widths, cfg.layers, cfg.decoder_causal, cfg.resnet_norm_eps
        self.patch_size = cfg.patch_size
        self.conv_in = LTXConv3d(cfg.latent_channels, w[0], 3, causal)
        self.mid_block = LTXMidBlock(w[0], n[0], eps, causal)
        cin = w[0]
        blocks = []
        for i, cout in enumerate(w):
            blocks.append(LTXUpBlock(i, cin, cout, n[i + 1], cfg.upsample[i], eps, causal))
            cin = cout
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_out = LTXConv3d(cin, cfg.out_channels * cfg.patch_size**2, 3, causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(x))
        for blk in self.up_blocks:
            x = blk(x)
        x = self.conv_out(F.silu(ltx_rms_norm(x)))
        b, _, f, h, w = x.shape
        p = self.patch_size
        # unpatchify: channel c*p*p + p*a + b_ -> pixel (h*p + b_, w*p + a): the FIRST patch index goes to W
        x = x.reshape(b, -1, 1, p, p, f, h, w).permute(0, 1, 5, 2, 6, 4, 7, 3)
        return x.reshape(b, -1, f, h * p, w * p)


class FlashVAEDLTX(nn.Module):
    """Flash-VAED LTX (keys ``decoder.*``): raw LTX latents ``(B, 128, T, h, w)`` -> frames (temb ignored)."""

    def __init__(self, cfg: FlashLTXConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.decoder = FlashLTXDecoder(cfg)

    def forward(self, z: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        y = self.decoder(z / self.cfg.scaling_factor)
        return y.clamp(-1.0, 1.0) if clamp else y


# ------------------------------------------------------------------------------------------------ lowering


def _const(v: float) -> torch.Tensor:
    # scalars live in [1,1,1,1] buffers: python scalars would be fp32 0-d constants an fp16 graph casts at run time
    return torch.full((1, 1, 1, 1), float(v))


D_MIN = 2.0**-14  # fp16-safe norms: smallest normal fp16, lower bound of the per-position scale
FP16_NORM_FLOOR = 2.0**-14  # fp16-safe L2 norm: floor of the rescaled mean square (engages only for |x| ~ 1e-6)


class ChannelNorm(nn.Module):
    """A channel norm of ``[N, C, H, W]`` from 1x1 convs and elementwise ops: ``x * rsqrt(v) * weight + bias``.

    ``mode="add"``: v = mean_c(x^2) + eps (LTX RMSNorm; with ``center`` first subtract mean_c(x): LayerNorm).
    ``mode="max"``: v = max(mean_c(x^2), eps) (Wan RMS_norm, i.e. x / max(|x|_2, e) * sqrt(C) with eps = e^2 / C).
    ``fp16_safe``: each position is first divided by d = sqrt(C) mean_c|x| (>= 2^-14), so mean_c(y^2) is in
    [1/C, 1] and no square overflows half precision; the same in exact arithmetic (``max`` mode floors the rescaled
    mean square at 2^-14, which only matters where every channel is below ~1e-6). ``|x|`` is ``max(x, x * -1)``
    (exact; ONNX Runtime's Core ML execution provider takes Max and Mul, but not Abs).
    """

    def __init__(self, c: int, *, eps: float, mode: str, fp16_safe: bool, rsqrt: str,
                 weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, center: bool = False) -> None:
        super().__init__()
        self.mode, self.fp16_safe, self.rsqrt, self.center = mode, fp16_safe, rsqrt, center
        self.register_buffer("mean_w", torch.full((1, c, 1, 1), 1.0 / c))
        self.register_buffer("one", _const(1.0))
        if fp16_safe:
            self.register_buffer("scale_w", torch.full((1, c, 1, 1), 1.0 / math.sqrt(c)))
            self.register_buffer("minus_one", _const(-1.0))
            self.register_buffer("d_min", _const(D_MIN))
            self.register_buffer("sqrt_eps", _const(math.sqrt(eps)))
            self.register_buffer("floor", _const(FP16_NORM_FLOOR))
        else:
            self.register_buffer("eps", _const(eps))
        self.weight = None if weight is None else nn.Parameter(weight.detach().reshape(1, c, 1, 1).clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().reshape(1, c, 1, 1).clone())

    def _rs(self, v: torch.Tensor) -> torch.Tensor:
        return torch.rsqrt(v) if self.rsqrt == "rsqrt" else self.one / torch.sqrt(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.center:
            x = x - F.conv2d(x, self.mean_w)
        if not self.fp16_safe:
            ms = F.conv2d(x * x, self.mean_w)
            y = x * self._rs(ms + self.eps if self.mode == "add" else torch.maximum(ms, self.eps))
        else:
            absx = torch.maximum(x, x * self.minus_one)
            inv_d = self.one / torch.maximum(F.conv2d(absx, self.scale_w), self.d_min)
            y = x * inv_d
            ms = F.conv2d(y * y, self.mean_w)
            if self.mode == "add":
                e = inv_d * self.sqrt_eps
                v = ms + e * e
            else:
                v = torch.maximum(ms, self.floor)
            y = y * self._rs(v)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


def wan_norm(src: WanRMSNorm, opts: LoweringOptions) -> ChannelNorm:
    c = src.gamma.shape[0]
    return ChannelNorm(c, eps=1e-24 / c, mode="max", fp16_safe=opts.fp16_safe, rsqrt=opts.rsqrt,
                       weight=src.gamma.detach().reshape(-1))


def ltx_norm(c: int, opts: LoweringOptions) -> ChannelNorm:
    return ChannelNorm(c, eps=LTX_RMS_EPS, mode="add", fp16_safe=opts.fp16_safe, rsqrt=opts.rsqrt)


def layer_norm(src: nn.LayerNorm, opts: LoweringOptions) -> ChannelNorm:
    return ChannelNorm(src.weight.numel(), eps=src.eps, mode="add", fp16_safe=opts.fp16_safe, rsqrt=opts.rsqrt,
                       weight=src.weight, bias=src.bias, center=True)


class TimeConv(nn.Module):
    """A Conv3d (kt, kh, kw) on frames in the batch axis ``[T, C, H, W]``, rank 4, Conv2d only.

    ``pad``: ``zeros`` (kt-1 zero frames in front: Wan), ``causal`` (kt-1 copies of frame 0) or ``same``
    ((kt-1)/2 copies of each edge frame). Dense convs stack the taps on channels (one Conv2d, weight
    ``[Cout, kt*Cin, kh, kw]``); depthwise convs sum one depthwise Conv2d per tap. Spatial zero padding kh//2.
    """

    def __init__(self, conv: nn.Conv3d, pad: str) -> None:
        super().__init__()
        w = conv.weight.detach()
        cout, cin_g, kt, kh, kw = w.shape
        self.kt, self.pad, self.groups, self.spad = kt, pad, conv.groups, (kh // 2, kw // 2)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        if pad == "zeros":
            self.register_buffer("zero", _const(0.0))
        if self.groups == 1:
            self.weight = nn.Parameter(w.permute(0, 2, 1, 3, 4).reshape(cout, kt * cin_g, kh, kw).clone())
            self.taps = None
        elif cin_g == 1 and self.groups == cout:
            self.weight = None
            self.taps = nn.ParameterList(nn.Parameter(w[:, :, j].clone()) for j in range(kt))
        else:
            raise NotImplementedError(f"grouped Conv3d with groups={self.groups} is not lowered")

    def permute_outputs(self, perm: torch.Tensor) -> None:
        """Reorder the output channels once (``out_new[i] = out_old[perm[i]]``); dense convs only."""
        assert self.weight is not None
        with torch.no_grad():
            self.weight.data = self.weight.data[perm].clone()
            if self.bias is not None:
                self.bias.data = self.bias.data[perm].clone()

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        n = self.kt - 1
        if n == 0:
            return x
        if self.pad == "zeros":
            # x[:1] * 0, not torch.zeros: that becomes a `full` op XNNPACK leaves to the portable kernels
            return torch.cat([x[:1] * self.zero] * n + [x], dim=0)
        if self.pad == "causal":
            return torch.cat([x[:1]] * n + [x], dim=0)
        return torch.cat([x[:1]] * (n // 2) + [x] + [x[-1:]] * (n // 2), dim=0)

    def time_pad(self) -> tuple[int, int, str]:
        """(front, back, mode) of this conv's time padding, as :meth:`Timeline.pad` takes it."""
        n = self.kt - 1
        if self.pad == "same":
            return n // 2, n // 2, "replicate"
        return n, 0, "zeros" if self.pad == "zeros" else "replicate"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_padded(self._padded(x), x.shape[0])

    def from_padded(self, xp: torch.Tensor, t: int) -> torch.Tensor:
        """The ``t`` output frames of time-padded input frames ``xp`` (``t + kt - 1`` of them)."""
        if self.taps is None:
            if self.kt > 1:
                xp = torch.cat([xp[j : j + t] for j in range(self.kt)], dim=1)
            return F.conv2d(xp, self.weight, self.bias, padding=self.spad)
        y = F.conv2d(xp[0:t], self.taps[0], self.bias, padding=self.spad, groups=self.groups)
        for j in range(1, self.kt):
            y = y + F.conv2d(xp[j : j + t], self.taps[j], None, padding=self.spad, groups=self.groups)
        return y


def conv1x1(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Conv2d:
    """A 1x1 Conv2d with the given ``[Cout, Cin, ...]`` weight."""
    cout, cin = weight.shape[:2]
    out = nn.Conv2d(cin, cout, 1, bias=bias is not None)
    out.weight.data.copy_(weight.detach().reshape(cout, cin, 1, 1))
    if bias is not None:
        out.bias.data.copy_(bias.detach())
    return out


def copy_conv2d(src: nn.Conv2d) -> nn.Conv2d:
    out = nn.Conv2d(src.in_channels, src.out_channels, src.kernel_size, padding=src.padding,
                    groups=src.groups, bias=src.bias is not None)
    out.load_state_dict(src.state_dict())
    return out


class SeparableTimeConv(nn.Module):
    """Lowered depthwise-separable 3D conv: per-tap depthwise Conv2d sum, then a 1x1 Conv2d.

    A 1x1x1 depthwise conv (a per-channel scale + bias) is folded into the pointwise conv.
    """

    def __init__(self, depthwise: nn.Conv3d, pointwise: nn.Conv3d, pad: str) -> None:
        super().__init__()
        if depthwise.weight.shape[2:] == (1, 1, 1):
            s = depthwise.weight.detach().double().reshape(-1)
            bd = depthwise.bias.detach().double()
            wp = pointwise.weight.detach().double().reshape(pointwise.out_channels, -1)
            self.depthwise = None
            self.pointwise = conv1x1((wp * s[None]).float(), (pointwise.bias.detach().double() + wp @ bd).float())
        else:
            self.depthwise = TimeConv(depthwise, pad)
            self.pointwise = conv1x1(pointwise.weight, pointwise.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(x if self.depthwise is None else self.depthwise(x))


def subpixel_upconv_weight(w: torch.Tensor) -> torch.Tensor:
    """Nearest x2 + Conv2d 3x3 (pad 1) as one Conv2d 3x3 on the low-res input with 4x the output channels.

    Output channel ``o*4 + 2a + b`` is phase (row a, column b) of output channel o (pixel_shuffle order): high-res
    tap ``d`` of phase ``a`` reads low-res offset ``floor((a + d - 1) / 2)``; the taps that land on the same
    low-res pixel are summed (in fp64). Zero padding maps to zero padding, so the borders agree too.
    """
    m = torch.zeros(2, 3, 3, dtype=torch.float64)  # m[phase, low-res tap, high-res tap]
    for a in range(2):
        for d in range(3):
            m[a, (a + d - 1) // 2 + 1, d] = 1.0
    cout, cin = w.shape[:2]
    out = torch.einsum("ard,bse,oide->oabirs", m, m, w.detach().double())
    return out.reshape(cout * 4, cin, 3, 3).float()


class UpConv(nn.Module):
    """Nearest-exact x2 + Conv2d 3x3 on ``[N, Cin, H, W]``: one Conv2d to 4*Cout, then a 2x pixel shuffle."""

    def __init__(self, conv: nn.Conv2d, shuffle: str) -> None:
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.groups != 1:
            raise NotImplementedError("only nearest x2 followed by a dense Conv2d 3x3 (pad 1) is folded")
        self.shuffle = shuffle
        self.conv = nn.Conv2d(conv.in_channels, conv.out_channels * 4, 3, padding=1)
        self.conv.weight.data.copy_(subpixel_upconv_weight(conv.weight))
        self.conv.bias.data.copy_(conv.bias.detach().repeat_interleave(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spatial_shuffle(self.conv(x), 2, self.shuffle)


class _FamilyView:
    """The teacher family with this decoder's own frame rule (``mobile.family.frames_out``)."""

    def __init__(self, family: str, frames_out) -> None:
        from turbo_vaed.families import get_family

        self._family, self._frames_out = get_family(family), frames_out

    def frames_out(self, latent_frames: int) -> int:
        return self._frames_out(latent_frames)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._family, name)


class _MobileBase(nn.Module):
    """Common surface of the lowered decoders: ``clamp`` flag, ``family``, ``input_shape``, ``describe``."""

    def __init__(self, cfg: FlashVAEDConfig, opts: LoweringOptions) -> None:
        super().__init__()
        self.cfg, self.options, self.clamp = cfg, opts, True

    @property
    def family(self) -> _FamilyView:
        return _FamilyView(FAMILY_OF[self.cfg.variant], lambda t: ARCH.frames_out(self.cfg, t))

    def input_shape(self, latent_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``[T, C, h, w]`` for a chunk of ``latent_frames`` decoding to ``width`` x ``height`` pixels."""
        fam = self.family
        return (latent_frames, fam.latent_channels, height // fam.spatial_factor, width // fam.spatial_factor)

    def describe(self) -> dict:
        return {"fp16_safe": self.options.fp16_safe, "shuffle": self.options.shuffle, "rsqrt": self.options.rsqrt}

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, -1.0, 1.0) if self.clamp else x


# ---- Wan


class MobileWanResBlockFast(nn.Module):
    def __init__(self, src: WanResidualBlockFast, opts: LoweringOptions) -> None:
        super().__init__()
        r = src.residual
        self.norm1, self.norm2 = wan_norm(r[0], opts), wan_norm(r[3], opts)
        self.conv1 = SeparableTimeConv(r[2].depthwise_conv, r[2].pointwise_conv, "zeros")
        self.conv2 = SeparableTimeConv(r[6].depthwise_conv, r[6].pointwise_conv, "zeros")
        sc = src.shortcut
        self.shortcut = None if isinstance(sc, nn.Identity) else SeparableTimeConv(sc.depthwise_conv,
                                                                                   sc.pointwise_conv, "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(silu(self.norm2(self.conv1(silu(self.norm1(x))))))
        return h + (x if self.shortcut is None else self.shortcut(x))


class MobileWanAttention(nn.Module):
    """Per-frame attention as rank-3 ``bmm`` + softmax; 1/sqrt(C) is folded into q and k (C^-1/4 each)."""

    def __init__(self, src: WanAttentionBlock, opts: LoweringOptions) -> None:
        super().__init__()
        c = src.proj.in_channels
        self.norm = wan_norm(src.norm, opts)
        w, b = src.to_qkv.weight.detach().double(), src.to_qkv.bias.detach().double()
        s = float(c) ** -0.25
        self.q = conv1x1((w[:c] * s).float(), (b[:c] * s).float())
        self.k = conv1x1((w[c : 2 * c] * s).float(), (b[c : 2 * c] * s).float())
        self.v = conv1x1(w[2 * c :].float(), b[2 * c :].float())
        self.proj = copy_conv2d(src.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        y = self.norm(x)
        q = self.q(y).reshape(n, c, h * w).permute(0, 2, 1)  # [n, L, c]
        k = self.k(y).reshape(n, c, h * w)  # [n, c, L]
        v = self.v(y).reshape(n, c, h * w).permute(0, 2, 1)  # [n, L, c]
        a = torch.softmax(torch.bmm(q, k), dim=-1)  # [n, L, L]
        o = torch.bmm(a, v).permute(0, 2, 1).reshape(n, c, h, w)
        return x + self.proj(o)


class MobileWanResample(nn.Module):
    """Temporal: first frame as is, later frames through the causal time conv (2C channels -> 2 frames by a free
    reshape); then the folded nearest-exact x2 + Conv2d 3x3 on every frame."""

    def __init__(self, src: WanResample, opts: LoweringOptions) -> None:
        super().__init__()
        self.time_conv = None if src.time_conv is None else TimeConv(src.time_conv, "zeros")
        self.up = UpConv(src.resample[1], opts.shuffle)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, c, h, w = x.shape
        if self.time_conv is not None and t > 1:  # static: T is fixed at export
            rest = self.time_conv(x[1:]).reshape(2 * (t - 1), c, h, w)  # channels [jC:(j+1)C] -> frame 2t+j
            x = torch.cat([x[:1], rest], dim=0)
        return self.up(x)


class MobileWanResBlock2D(nn.Module):
    def __init__(self, src: WanResidualBlock2D, opts: LoweringOptions) -> None:
        super().__init__()
        r = src.residual
        self.norm1, self.norm2 = wan_norm(r[0], opts), wan_norm(r[3], opts)
        self.conv1, self.conv2 = copy_conv2d(r[2]), copy_conv2d(r[6])
        self.shortcut = copy_conv2d(src.shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(silu(self.norm2(self.conv1(silu(self.norm1(x))))))
        return h + self.shortcut(x)


class MobileWanBody(nn.Module):
    """One causal sequence ``[T, 16, h, w]`` (after conv2) -> ``[1 + 4(T-1), 3, 8h, 8w]`` (unclamped)."""

    def __init__(self, src: FlashWanDecoder, opts: LoweringOptions) -> None:
        super().__init__()
        self.conv1 = TimeConv(src.conv1, "zeros")
        layers: list[nn.Module] = []
        for m in [*src.middle, *src.upsamples]:
            if isinstance(m, WanResidualBlockFast):
                layers.append(MobileWanResBlockFast(m, opts))
            elif isinstance(m, WanAttentionBlock):
                layers.append(MobileWanAttention(m, opts))
            elif isinstance(m, WanResample):
                layers.append(MobileWanResample(m, opts))
            else:
                layers.append(MobileWanResBlock2D(m, opts))
        self.layers = nn.Sequential(*layers)
        self.head_norm = wan_norm(src.head[0], opts)
        self.head_conv = TimeConv(src.head[2], "zeros")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.conv1(x))
        return self.head_conv(silu(self.head_norm(x)))


class MobileFlashWan(_MobileBase):
    """Rank-4 Flash-VAED Wan: normalised latents ``[T, 16, h, w]`` -> frames ``[F, 3, 8h, 8w]`` in [-1, 1].

    De-normalisation is folded into conv2. For T > 21 the two segments of the official decode (its cache restart
    at latent frame 21) are decoded independently and concatenated: static, T is fixed at export.
    """

    def __init__(self, src: FlashVAEDWan, opts: LoweringOptions) -> None:
        super().__init__(src.cfg, opts)
        w = src.conv2.weight.detach().double().reshape(WAN_Z_DIM, WAN_Z_DIM)
        std = 1.0 / src.latents_inv_std.detach().double().reshape(-1)
        mean = src.latents_mean.detach().double().reshape(-1)
        self.conv2 = conv1x1((w * std[None]).float(), (src.conv2.bias.detach().double() + w @ mean).float())
        self.body = MobileWanBody(src.decoder, opts)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv2(z)
        segs = wan_segments(x.shape[0])
        y = self.body(x) if len(segs) == 1 else torch.cat([self.body(x[a:b]) for a, b in segs], dim=0)
        return self._out(y)


# ---- LTX


class MobileLTXResnet(nn.Module):
    def __init__(self, src: LTXResnet, opts: LoweringOptions, causal: bool) -> None:
        super().__init__()
        pad = "causal" if causal else "same"

        def low(conv: nn.Module) -> nn.Module:
            if src.kind == "depthwise":
                return SeparableTimeConv(conv.depthwise, conv.pointwise, "causal")
            if src.kind == "regular":
                return TimeConv(conv.conv, pad)
            return copy_conv2d(conv)

        self.norm1, self.conv1 = ltx_norm(src.cin, opts), low(src.conv1)
        self.norm2, self.conv2 = ltx_norm(src.cout, opts), low(src.conv2)
        self.norm3 = None if src.norm3 is None else layer_norm(src.norm3, opts)
        self.shortcut: nn.Module | None = None
        if src.conv_shortcut is not None:
            sc = src.conv_shortcut
            self.shortcut = copy_conv2d(sc) if isinstance(sc, nn.Conv2d) else conv1x1(sc.conv.weight, sc.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(silu(self.norm2(self.conv1(silu(self.norm1(x))))))
        if self.norm3 is not None:
            x = self.shortcut(self.norm3(x))
        return h + x


class MobileLTXUpsampler(nn.Module):
    """Conv to 8C with output channels permuted (t, c, h, w)-major: frames by a free reshape, drop the first frame,
    then a 2x spatial shuffle (the rank-8 LTX reshape/permute in rank 4)."""

    def __init__(self, src: LTXUpsampler, opts: LoweringOptions, causal: bool) -> None:
        super().__init__()
        self.shuffle = opts.shuffle
        self.conv = TimeConv(src.conv.conv, "causal" if causal else "same")
        c = src.conv.conv.out_channels // 8
        self.conv.permute_outputs(frame_major_perm(c, 2, 2))  # c*8 + 4t + 2h + w -> t*4C + c*4 + 2h + w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        t, c8, h, w = y.shape
        y = y.reshape(2 * t, c8 // 2, h, w)[1:]
        return spatial_shuffle(y, 2, self.shuffle)


def frame_major_perm(c: int, rt: int, rs: int) -> torch.Tensor:
    """Channel order (c, rt, rs*rs) -> (rt, c, rs*rs): the frame sub-index becomes the slow channel axis."""
    return torch.arange(c * rt * rs * rs).reshape(c, rt, rs * rs).permute(1, 0, 2).reshape(-1)


def unpatchify_perm(c: int, p: int) -> torch.Tensor:
    """Output-channel order that turns the LTX unpatchify (c*p*p + p*a + b -> (h*p + b, w*p + a)) into pixel_shuffle."""
    return torch.arange(c * p * p).reshape(c, p, p).permute(0, 2, 1).reshape(-1)


class MobileFlashLTX(_MobileBase):
    """Rank-4 Flash-VAED LTX: raw latents ``[T, 128, h, w]`` -> frames ``[8T-7, 3, 32h, 32w]`` in [-1, 1]."""

    def __init__(self, src: FlashVAEDLTX, opts: LoweringOptions) -> None:
        super().__init__(src.cfg, opts)
        dec, causal = src.decoder, src.cfg.decoder_causal
        pad = "causal" if causal else "same"
        self.register_buffer("inv_scale", _const(1.0 / src.cfg.scaling_factor))
        self.scaled = src.cfg.scaling_factor != 1.0
        self.conv_in = TimeConv(dec.conv_in.conv, pad)
        layers: list[nn.Module] = [MobileLTXResnet(r, opts, causal) for r in dec.mid_block.resnets]
        for blk in dec.up_blocks:
            if blk.conv_in is not None:
                layers.append(MobileLTXResnet(blk.conv_in, opts, causal))
            if blk.upsamplers is not None:
                layers.append(MobileLTXUpsampler(blk.upsamplers[0], opts, causal))
            layers.extend(MobileLTXResnet(r, opts, causal) for r in blk.resnets)
        self.layers = nn.Sequential(*layers)
        c_last = dec.conv_out.conv.in_channels
        self.norm_out = ltx_norm(c_last, opts)
        self.patch_size, self.shuffle = dec.patch_size, opts.shuffle
        self.conv_out = TimeConv(dec.conv_out.conv, pad)
        self.conv_out.permute_outputs(unpatchify_perm(dec.conv_out.conv.out_channels // dec.patch_size**2,
                                                      dec.patch_size))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.scaled:
            z = z * self.inv_scale
        x = self.layers(self.conv_in(z))
        x = self.conv_out(silu(self.norm_out(x)))
        return self._out(spatial_shuffle(x, self.patch_size, self.shuffle))


# ------------------------------------------------------------------------------------------------ streaming


def _time_conv(tl: Timeline, m: nn.Module, x: torch.Tensor, clk: Clock) -> tuple[torch.Tensor, Clock]:
    """Any lowered conv of this module through the timeline (per-frame convs pass straight through)."""
    if isinstance(m, SeparableTimeConv):
        if m.depthwise is None:
            return m.pointwise(x), clk
        y, clk = _time_conv(tl, m.depthwise, x, clk)
        return m.pointwise(y), clk
    if isinstance(m, TimeConv) and m.kt > 1:
        return tl.conv(m, x, clk, *m.time_pad())
    return m(x), clk


def _residual(tl: Timeline, b: nn.Module, x: torch.Tensor, clk: Clock) -> tuple[torch.Tensor, Clock]:
    """norm1 -> SiLU -> conv1 -> norm2 -> SiLU -> conv2, plus the shortcut delayed to the branch's clock."""
    h, c = _time_conv(tl, b.conv1, silu(b.norm1(x)), clk)
    h, c = _time_conv(tl, b.conv2, silu(b.norm2(h)), c)
    sc = clk
    if isinstance(b, MobileLTXResnet):
        if b.norm3 is not None:
            x = b.shortcut(b.norm3(x))  # per frame
    elif b.shortcut is not None:
        x, sc = _time_conv(tl, b.shortcut, x, clk)
    return h + tl.delay(x, sc, c), c


class FlashWanStep(ClockedStep):
    """Streaming step of :class:`MobileFlashWan`: causal zero-padded time convs carry their last kt-1 input
    frames; the temporal upsampler's first latent frame passes through as one frame (the official 'Rep' cache);
    the official decode's restart at latent frame 21 is the manifest's ``restart_at``."""

    def __init__(self, mobile: MobileFlashWan) -> None:
        super().__init__()
        self.mobile = mobile

    def resample(self, tl: Timeline, r: MobileWanResample, x: torch.Tensor, clk: Clock) -> tuple[torch.Tensor, Clock]:
        if r.time_conv is None:
            return r.up(x), clk
        t, c, h, w = x.shape
        y, _ = _time_conv(tl, r.time_conv, x, clk.tail(1))  # the time conv sees frames 1.. only
        y = y.reshape(2 * t, c, h, w)
        up = clk.up(2, 1)
        return r.up(tl.override_first(y, up, x, clk)), up

    def walk(self, z: torch.Tensor, tl: Timeline) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.mobile
        body = m.body
        x, clk = _time_conv(tl, body.conv1, m.conv2(z), Clock())
        for layer in body.layers:
            if isinstance(layer, MobileWanResBlockFast):
                x, clk = _residual(tl, layer, x, clk)
            elif isinstance(layer, MobileWanResample):
                x, clk = self.resample(tl, layer, x, clk)
            else:  # per-frame attention / 2D residual blocks
                x = layer(x)
        x, clk = _time_conv(tl, body.head_conv, silu(body.head_norm(x)), clk)
        return tl.emit(m._out(x), clk)


class FlashLTXStep(ClockedStep):
    """Streaming step of :class:`MobileFlashLTX`: causal (or 'same', then non-causal: the output lags) replicate
    time padding; each upsampler doubles the frames and drops the sequence's first."""

    def __init__(self, mobile: MobileFlashLTX) -> None:
        super().__init__()
        self.mobile = mobile

    def walk(self, z: torch.Tensor, tl: Timeline) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.mobile
        if m.scaled:
            z = z * m.inv_scale
        x, clk = _time_conv(tl, m.conv_in, z, Clock())
        for layer in m.layers:
            if isinstance(layer, MobileLTXResnet):
                x, clk = _residual(tl, layer, x, clk)
                continue
            y, clk = _time_conv(tl, layer.conv, x, clk)
            t, c8, h, w = y.shape
            y = y.reshape(2 * t, c8 // 2, h, w)
            clk = clk.up(2, 1)
            x = spatial_shuffle(y, 2, layer.shuffle)
        x, clk = _time_conv(tl, m.conv_out, silu(m.norm_out(x)), clk)
        return tl.emit(m._out(spatial_shuffle(x, m.patch_size, m.shuffle)), clk)


# ------------------------------------------------------------------------------------------------ full-size configs

# models/flash-vaed/<variant>.json: the released decoders' configs as data (what a benchmark builds with random
# weights, ``store.random_decoder("flash-vaed", d)``: speed does not depend on the weight values)
FULL_SIZE_PARAMETERS = {WAN: 5_859_995, LTX: 66_955_024}  # decode path: Wan conv2 (272) + decoder (5,859,723)


def full_size_dir() -> Path:
    """``models/flash-vaed/``: one JSON config per released checkpoint (``wan.json``, ``ltx.json``)."""
    from turbo_vaed.config import MODELS_DIR

    return MODELS_DIR / "flash-vaed"


def variant_for_family(family: str) -> str | None:
    """The Flash-VAED variant that decodes ``family``'s latents (None when none does)."""
    return next((v for v, f in FAMILY_OF.items() if f == family), None)


def full_size_config(family: str) -> dict | None:
    """JSON config of the released Flash-VAED decoder for ``family`` (``models/flash-vaed/<variant>.json``), or None.

    The file is validated here (a broken one is a one-line :class:`UserError`).
    """
    v = variant_for_family(family)
    if v is None:
        return None
    path = full_size_dir() / f"{v}.json"
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the Flash-VAED config {path} ({type(e).__name__}): reinstall turbovaed") \
            from None
    if not isinstance(d, dict):
        raise UserError(f"{path} is not a JSON object: reinstall turbovaed")
    cfg = ARCH.config_from_dict(d)
    if cfg.variant != v:
        raise UserError(f"{path} is a Flash-VAED {cfg.variant} config, expected {v} for family {family}: "
                        "reinstall turbovaed")
    return d


def full_size_families() -> tuple[str, ...]:
    """Families a released Flash-VAED checkpoint decodes (wan, ltx)."""
    return tuple(FAMILY_OF[v] for v in VARIANTS)


# ------------------------------------------------------------------------------------------------ architecture

WAN_EXTRAS = ("conv1.weight", "conv1.bias")  # the encoder-side 1x1x1 conv (WanVAE_.conv1)
LTX_EXTRAS = ("mean_of_means", "std_of_means", "latents_mean", "latents_std")
ENCODER_PREFIX = "encoder."  # an encoder in the same file (not read by decode)


def known_extra_for(variant: str, key: str) -> bool:
    """True for tensors a released ``variant`` file may carry that decode does not read."""
    if key.startswith(ENCODER_PREFIX):
        return True
    return key in (WAN_EXTRAS if variant == WAN else LTX_EXTRAS)


def _first(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


class FlashVAEDArchitecture(Architecture):
    """Flash-VAED students: ``wan`` (Flash_VAED_Wan.pth) and ``ltx`` (Flash_VAED_LTX.pth)."""

    name = "flash-vaed"
    description = ("Flash-VAED students for Wan 2.1 (normalised latents, causal depthwise-separable 3D + 2D tail) "
                   "and LTX-Video (raw latents, pruned LTX decoder)")

    # ---- config
    def config_from_dict(self, d: dict) -> FlashVAEDConfig:
        if not isinstance(d, dict):
            raise _bad(f"expected a JSON object, got {type(d).__name__}")
        variant = detect_variant(d)
        if variant is None:
            raise _bad("cannot tell the variant: add \"variant\": \"wan\" or \"ltx\"")
        return wan_config_from_dict(d) if variant == WAN else ltx_config_from_dict(d)

    def config_to_dict(self, cfg: FlashVAEDConfig) -> dict:
        return wan_config_to_dict(cfg) if cfg.variant == WAN else ltx_config_to_dict(cfg)

    def default_config(self, variant: str) -> FlashVAEDConfig:
        """The released configuration of ``variant``."""
        return FlashWanConfig() if variant == WAN else FlashLTXConfig()

    def family(self, cfg: FlashVAEDConfig) -> str:
        return FAMILY_OF[cfg.variant]

    def full_size_config(self, family: str) -> dict | None:
        """The released decoder's config for ``family`` (``models/flash-vaed/<variant>.json``), None if none."""
        return full_size_config(family)

    # ---- build / load
    def build(self, cfg: FlashVAEDConfig) -> nn.Module:
        return (FlashVAEDWan(cfg) if cfg.variant == WAN else FlashVAEDLTX(cfg)).eval()

    def known_extra(self, key: str) -> bool:
        return any(known_extra_for(v, key) for v in VARIANTS)

    def strict_state(self, cfg: FlashVAEDConfig, module: nn.Module, state: dict[str, torch.Tensor],
                     source: str) -> LoadReport:
        """Every decoder tensor present with the right shape; only this variant's known extras are ignored."""
        bad_types = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
        if bad_types:
            raise UserError(f"{source} holds {len(bad_types)} non-tensor entries ({_first(bad_types)}): "
                            "use the released Flash-VAED state-dict file")
        want = module.state_dict()
        extra = lambda k: known_extra_for(cfg.variant, k)  # noqa: E731
        ignored = tuple(sorted(k for k in state if k not in want and extra(k)))
        unexpected = sorted(k for k in state if k not in want and not extra(k))
        missing = sorted(k for k in want if k not in state)
        wrong = sorted(k for k in want if k in state and tuple(state[k].shape) != tuple(want[k].shape))
        problems = []
        if missing:
            problems.append(f"{len(missing)} missing ({_first(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected ({_first(unexpected)})")
        if wrong:
            k = wrong[0]
            problems.append(f"{len(wrong)} of the wrong shape ({k}: {list(state[k].shape)}, "
                            f"the config wants {list(want[k].shape)})")
        if problems:
            raise UserError(f"{source} does not fit this {self.name} {cfg.variant} config: {'; '.join(problems)}: "
                            "pass the config (and --variant) that matches these weights")
        return LoadReport({k: state[k] for k in want}, ignored)

    def import_release(self, weights: Path, config: Path | None, variant: str | None) -> Imported:
        """Read ``Flash_VAED_{Wan,LTX}.pth`` (or a fixture) strictly; the variant comes from ``variant``, the config
        or the file name, in that order, and must agree where several say."""
        weights = Path(weights)
        notes: list[str] = []
        cfg_dict = None
        if config is not None:
            config = Path(config)
            if not config.is_file():
                raise UserError(f"config file not found: {config}")
            try:
                cfg_dict = json.loads(config.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise UserError(f"{config} is not a JSON config ({type(e).__name__}): pass the Flash-VAED config") \
                    from None
            if not isinstance(cfg_dict, dict):
                raise UserError(f"{config} holds a JSON {type(cfg_dict).__name__}, not a config object")
        said = {"--variant": variant.lower() if variant else None,
                "the config": detect_variant(cfg_dict) if cfg_dict is not None else None,
                "the file name": variant_from_name(weights.name)}
        if said["--variant"] is not None and said["--variant"] not in VARIANTS:
            raise UserError(f"unknown Flash-VAED variant '{variant}': choose one of {', '.join(VARIANTS)}")
        if said["--variant"] and said["the config"] and said["--variant"] != said["the config"]:
            raise UserError(f"--variant {said['--variant']} contradicts the config ({config}), which is a "
                            f"{said['the config']} config: drop one of them")
        chosen = next(((v, where) for where, v in said.items() if v), None)
        if chosen is None:
            raise UserError(f"cannot tell whether {weights.name} is Flash-VAED wan or ltx: pass --variant wan|ltx "
                            "or --config")
        v, where = chosen
        cfg = self.config_from_dict({**cfg_dict, "variant": v}) if cfg_dict is not None else self.default_config(v)
        named = said["the file name"]
        notes.append(f"variant {v} (from {where})" + (f"; the file name suggests {named}" if named not in (None, v)
                                                      else ""))
        if cfg_dict is None:
            notes.append(f"config: the released Flash-VAED {v} configuration")
        state = read_weights_file(weights)
        with torch.device("meta"):
            module = self.build(cfg)
        report = self.strict_state(cfg, module, state, str(weights))
        dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in report.state.values()})
        if dtypes != ["float32"]:
            notes.append(f"weights stored as {', '.join(dtypes)}; loaded as float32")
        st = {k: t.to(torch.float32) if t.is_floating_point() else t for k, t in report.state.items()}
        return Imported(config=cfg, state=st, ignored=report.ignored, notes=tuple(notes))

    # ---- geometry and conventions
    def frames_out(self, cfg: FlashVAEDConfig, latent_frames: int) -> int:
        t = int(latent_frames)
        if t < 1:
            raise UserError(f"Flash-VAED decodes at least 1 latent frame, got {t}")
        if cfg.variant == LTX:
            return 8 * t - 7
        return sum(1 + 4 * (b - a - 1) for a, b in wan_segments(t))

    def min_latent_frames(self, cfg: FlashVAEDConfig) -> int:
        return 1

    def latent_convention(self, cfg: FlashVAEDConfig) -> str:
        return "normalised" if cfg.variant == WAN else "raw"

    def output_range(self, cfg: FlashVAEDConfig) -> tuple[float, float]:
        return (-1.0, 1.0)

    # ---- forward and lowering
    def reference(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, h, w)`` -> clamped ``(B, 3, F, H, W)`` (the official decode + wrapper clamp)."""
        return module(z)

    def lower(self, module: nn.Module, options: LoweringOptions) -> nn.Module:
        opts = options or LoweringOptions()
        with torch.no_grad():
            if isinstance(module, FlashVAEDWan):
                return MobileFlashWan(module, opts).float().eval()
            if isinstance(module, FlashVAEDLTX):
                return MobileFlashLTX(module, opts).float().eval()
        raise TypeError(f"flash-vaed lowers FlashVAEDWan / FlashVAEDLTX modules, got {type(module).__name__}")

    def stream_step(self, module: nn.Module, options: LoweringOptions, latent_frames: int, h: int, w: int):
        mobile = self.lower(module, options)
        cfg = module.cfg
        c = self.latent_channels(cfg)
        if isinstance(mobile, MobileFlashWan):
            return clocked_stream_step(FlashWanStep(mobile), (latent_frames, c, h, w),
                                       ["causal zero-padded time convs: each carries its last kt-1 input frames",
                                        f"the official decode restarts at latent frame {WAN_CACHE_RESET}"],
                                       restart_at=(WAN_CACHE_RESET,))
        kind = "causal" if cfg.decoder_causal else "non-causal ('same' replicate padding)"
        return clocked_stream_step(FlashLTXStep(mobile), (latent_frames, c, h, w),
                                   [f"{kind} time convs: each carries its last kt-1 input frames"])

    def owns(self, module: nn.Module) -> bool:
        return isinstance(module, FlashVAEDWan | FlashVAEDLTX)


ARCH = FlashVAEDArchitecture()
