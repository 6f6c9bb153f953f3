"""The official Turbo-VAED decoder (hustvl/Turbo-VAED, arXiv 2508.09136): ``AutoencoderKLTurboVAED.decoder``.

Written from the fixture descriptions (``shared/fixtures/decoders/turbo_vaed/*/meta.json``) and the paper:

- the config lists (widths, layers, depthwise flags, spatial-only flags, scaling) are in encoder order and
  reversed for the decoder: ``conv_in`` (3x3x3, latents -> widest), a mid block of resnets, one up block per
  width (``conv_in`` resnet when the width changes, then the upsampler, then resnets), the head;
- every regular 3D conv is non-causal in time (``decoder_causal=false``): the edge frames are replicated
  ``(k-1)//2`` times on each side, H/W are zero padded; the depthwise 5x5x5 convs of the ``decoder_is_dw_conv``
  blocks always use that symmetric time padding;
- resnets: weight-less RMSNorm (eps 1e-8) -> act -> conv1 -> RMSNorm -> SiLU -> conv2, plus a LayerNorm
  (eps ``resnet_norm_eps``) + 1x1x1 shortcut when the width changes; the resnets after an upsampler use ReLU
  as their first activation;
- upsampler: conv C -> C*s_t*4, conv channel ``(c*4 + 2i + k)*s_t + j`` goes to frame ``t*s_t + j`` and pixel
  ``(2h+i, 2w+k)``, then the first ``s_t - 1`` frames are dropped (not for Video DC-AE);
- head: RMSNorm, SiLU, [patch 4: (Conv2d 3x3 + pixel_shuffle(2), RMSNorm, SiLU) x 2], conv_out 3x3x3.
  The output is not clamped (the official ``decode`` does not clamp; its validation script does).

The lowering (:meth:`TurboVAEDArchitecture.lower`) maps latents ``[T, C, h, w]`` to frames ``[F, 3, H, W]``
with rank-4 tensors and Conv2d only: dense temporal taps stacked on channels, depthwise taps summed, the
temporal shuffle as a free reshape (upsampler output channels permuted frame-major once), fp16-safe norms.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from turbo_vaed.decoders.base import Architecture, Imported, read_weights_file
from turbo_vaed.decoders.timeline import Clock, ClockedStep, Timeline, clocked_stream_step
from turbo_vaed.errors import UserError
from turbo_vaed.families import FAMILIES
from turbo_vaed.lowering import LoweringOptions, spatial_shuffle

CLASS_NAME = "AutoencoderKLTurboVAED"
RMS_EPS = 1e-8  # the official weight-less RMSNorm
D_MIN = 2.0**-14  # smallest normal fp16: lower bound of the fp16-safe norms' per-position scale

# config keys that do not change the decoder (encoder side, heads, bookkeeping): kept verbatim, not read
_PASSIVE_KEYS = frozenset({
    "in_channels", "scaling_factor", "spatio_temporal_scaling", "block_out_channels", "layers_per_block",
    "encoder_causal", "downsample_type", "aligned_feature_projection_mode", "aligned_feature_projection_dim",
    "aligned_blks_indices", "spatial_compression_ratio", "temporal_compression_ratio",
})
# config keys of the LTX-style parent class that the official students leave at their defaults: kept only then
_DEFAULT_ONLY = {
    "timestep_conditioning": lambda v: not v,
    "decoder_inject_noise": lambda v: not any(v),
    "upsample_residual": lambda v: not any(v),
    "upsample_factor": lambda v: all(int(f) == 1 for f in v),
}
_DECODER_KEYS = (
    "latent_channels", "out_channels", "decoder_block_out_channels", "decoder_layers_per_block",
    "decoder_spatio_temporal_scaling", "decoder_spatio_only", "decoder_is_dw_conv", "decoder_dw_kernel_size",
    "decoder_causal", "patch_size", "patch_size_t", "resnet_norm_eps", "is_video_dc_ae",
)
# released checkpoints (Turbo-VAED-{Hunyuan,Cog,LTX,DC}) -> family; family names map to themselves
_VARIANTS = {"hunyuan": "hunyuan", "cog": "cogvideox", "cogvideox": "cogvideox", "ltx": "ltx", "dc": "dcae",
             "dcae": "dcae"}
_OFFICIAL_FAMILIES = ("hunyuan", "cogvideox", "ltx", "dcae")
_EXTRA_PREFIXES = ("aligned_feature_projection_heads.",)
_EXTRA_KEYS = frozenset({"latents_mean", "latents_std"})


# ---------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TurboVAEDConfig:
    """The decoder part of an official ``AutoencoderKLTurboVAED`` config (official key names, encoder order)."""

    latent_channels: int
    decoder_block_out_channels: tuple[int, ...]
    decoder_layers_per_block: tuple[int, ...]
    family: str
    out_channels: int = 3
    decoder_spatio_temporal_scaling: tuple[bool, ...] = (True, True, True, False)
    decoder_spatio_only: tuple[bool, ...] = ()  # () -> all False
    decoder_is_dw_conv: tuple[bool, ...] = ()  # () -> all False
    decoder_dw_kernel_size: int = 3
    decoder_causal: bool = False
    patch_size: int = 4
    patch_size_t: int = 1
    resnet_norm_eps: float = 1e-6
    is_video_dc_ae: bool = False
    name: str = ""
    extra: dict = field(default_factory=dict, compare=False)  # passive official keys, kept for the round trip

    # decoder order (reversed lists)
    @property
    def widths(self) -> list[int]:
        return list(reversed(self.decoder_block_out_channels))

    @property
    def layers(self) -> list[int]:
        return list(reversed(self.decoder_layers_per_block))

    @property
    def dw(self) -> list[bool]:
        n = len(self.decoder_layers_per_block)
        return list(reversed(self.decoder_is_dw_conv or (False,) * n))

    @property
    def upsample(self) -> list[bool]:
        return list(reversed(self.decoder_spatio_temporal_scaling))

    @property
    def spatial_only(self) -> list[bool]:
        n = len(self.decoder_block_out_channels)
        return list(reversed(self.decoder_spatio_only or (False,) * n))

    def temporal_strides(self) -> list[int]:
        """s_t of each up block's upsampler (0: no upsampler), in decoder order."""
        return [0 if not up else (1 if so else 2) for up, so in zip(self.upsample, self.spatial_only, strict=True)]

    @property
    def spatial_factor(self) -> int:
        return self.patch_size * 2 ** sum(self.upsample)

    @property
    def temporal_factor(self) -> int:
        return math.prod(s for s in self.temporal_strides() if s)

    @property
    def head_channels(self) -> int:
        return self.widths[-1] // (self.patch_size * self.patch_size)


def _bools(v: Any, key: str) -> tuple[bool, ...]:
    if not isinstance(v, list | tuple) or not all(isinstance(b, bool) for b in v):
        raise UserError(f"Turbo-VAED config: {key} must be a list of true/false, got {v!r}")
    return tuple(v)


def _ints(v: Any, key: str) -> tuple[int, ...]:
    if not isinstance(v, list | tuple) or not v or not all(isinstance(i, int) and i > 0 for i in v):
        raise UserError(f"Turbo-VAED config: {key} must be a list of positive integers, got {v!r}")
    return tuple(v)


def _geometry_families(cfg: TurboVAEDConfig) -> list[str]:
    """Families whose latent geometry and frame rule this config reproduces."""
    out = []
    for f in FAMILIES.values():
        if (f.latent_channels, f.spatial_factor, f.temporal_factor) != (
                cfg.latent_channels, cfg.spatial_factor, cfg.temporal_factor):
            continue
        if (f.frame_rule == "full") != cfg.is_video_dc_ae:
            continue
        out.append(f.name)
    return out


def _infer_family(cfg: TurboVAEDConfig) -> str | None:
    """The official student family for this geometry (hunyuan for the 16-channel x8/x4 decoder, shared with Cog)."""
    fams = [f for f in _geometry_families(cfg) if f in _OFFICIAL_FAMILIES] or _geometry_families(cfg)
    return fams[0] if fams else None


def _parse_config(d: dict) -> TurboVAEDConfig:
    if not isinstance(d, dict):
        raise UserError(f"Turbo-VAED config must be a JSON object, got {type(d).__name__}")
    cls = d.get("_class_name", CLASS_NAME)
    if cls != CLASS_NAME:
        raise UserError(f"config is for {cls}, not {CLASS_NAME}: pass an official Turbo-VAED config "
                        "(configs/Turbo-VAED-*.json)")
    extra: dict = {}
    for k, v in d.items():
        if k in _DECODER_KEYS or k in ("turbovaed", "name"):
            continue
        if k.startswith(("_", "encoder_")) or k in _PASSIVE_KEYS:
            extra[k] = v
        elif k in _DEFAULT_ONLY:
            try:
                ok = _DEFAULT_ONLY[k](v)
            except TypeError:
                ok = False
            if not ok:
                raise UserError(f"Turbo-VAED config: {k}={v!r} is not supported (the released students leave it "
                                "at its default)")
            extra[k] = v
        else:
            raise UserError(f"Turbo-VAED config: unknown key '{k}': this importer reads the official "
                            "AutoencoderKLTurboVAED configs")
    for k in ("latent_channels", "decoder_block_out_channels", "decoder_layers_per_block"):
        if k not in d:
            raise UserError(f"Turbo-VAED config has no '{k}': pass the official config JSON")
    widths = _ints(d["decoder_block_out_channels"], "decoder_block_out_channels")
    n = len(widths)
    layers = tuple(d["decoder_layers_per_block"]) if isinstance(d["decoder_layers_per_block"], list) else ()
    if len(layers) != n + 1 or not all(isinstance(i, int) and i >= 0 for i in layers):
        raise UserError(f"Turbo-VAED config: decoder_layers_per_block must list {n + 1} counts (mid block + one "
                        f"per width), got {d['decoder_layers_per_block']!r}")
    sts = _bools(d.get("decoder_spatio_temporal_scaling", [True, True, True, False][:n]),
                 "decoder_spatio_temporal_scaling")
    so = _bools(d.get("decoder_spatio_only", [False] * n), "decoder_spatio_only")
    dw = _bools(d.get("decoder_is_dw_conv", [False] * (n + 1)), "decoder_is_dw_conv")
    if len(sts) != n or len(so) != n or len(dw) != n + 1:
        raise UserError(f"Turbo-VAED config: decoder_spatio_temporal_scaling and decoder_spatio_only need {n} "
                        f"entries, decoder_is_dw_conv {n + 1}")
    tv = d.get("turbovaed", {})
    if not isinstance(tv, dict) or set(tv) - {"family"}:
        raise UserError("Turbo-VAED config: the 'turbovaed' section takes only {\"family\": NAME}")
    try:
        cfg = TurboVAEDConfig(
            latent_channels=int(d["latent_channels"]),
            decoder_block_out_channels=widths,
            decoder_layers_per_block=layers,
            family=str(tv.get("family", "")),
            out_channels=int(d.get("out_channels", 3)),
            decoder_spatio_temporal_scaling=sts,
            decoder_spatio_only=so,
            decoder_is_dw_conv=dw,
            decoder_dw_kernel_size=int(d.get("decoder_dw_kernel_size", 3)),
            decoder_causal=bool(d.get("decoder_causal", False)),
            patch_size=int(d.get("patch_size", 4)),
            patch_size_t=int(d.get("patch_size_t", 1)),
            resnet_norm_eps=float(d.get("resnet_norm_eps", 1e-6)),
            is_video_dc_ae=bool(d.get("is_video_dc_ae", False)),
            name=str(d.get("name", "")),
            extra=extra,
        )
    except (TypeError, ValueError) as e:
        raise UserError(f"invalid Turbo-VAED config: {e}") from None
    if cfg.patch_size not in (1, 4) or cfg.patch_size_t != 1:
        raise UserError(f"Turbo-VAED config: patch_size {cfg.patch_size} / patch_size_t {cfg.patch_size_t} is not "
                        "supported (the released students use 1 or 4, and 1)")
    if cfg.widths[-1] % (cfg.patch_size**2):
        raise UserError(f"Turbo-VAED config: the last decoder width {cfg.widths[-1]} must be divisible by "
                        f"{cfg.patch_size**2} for patch_size {cfg.patch_size}")
    if cfg.decoder_dw_kernel_size % 2 == 0 or cfg.latent_channels <= 0 or cfg.out_channels <= 0:
        raise UserError("Turbo-VAED config: decoder_dw_kernel_size must be odd, channel counts positive")
    fam = cfg.family or _infer_family(cfg)
    if fam is None:
        raise UserError(f"Turbo-VAED config decodes {cfg.latent_channels} latent channels x{cfg.spatial_factor} "
                        f"spatially, x{cfg.temporal_factor} in time: no family has that geometry")
    if fam not in FAMILIES:
        raise UserError(f"unknown family '{fam}': choose one of {', '.join(FAMILIES)}")
    if fam not in _geometry_families(cfg):
        f = FAMILIES[fam]
        raise UserError(f"family {fam} ({f.latent_channels} latent channels, x{f.spatial_factor}, "
                        f"x{f.temporal_factor}) does not fit this config ({cfg.latent_channels} channels, "
                        f"x{cfg.spatial_factor}, x{cfg.temporal_factor}"
                        f"{', no frame trim' if cfg.is_video_dc_ae else ''})")
    return TurboVAEDConfig(**{**cfg.__dict__, "family": fam})


def _config_dict(cfg: TurboVAEDConfig) -> dict:
    d: dict = {"_class_name": CLASS_NAME}
    d.update({k: v for k, v in cfg.extra.items() if k.startswith("_")})
    d.update({
        "latent_channels": cfg.latent_channels,
        "out_channels": cfg.out_channels,
        "decoder_block_out_channels": list(cfg.decoder_block_out_channels),
        "decoder_layers_per_block": list(cfg.decoder_layers_per_block),
        "decoder_spatio_temporal_scaling": list(cfg.decoder_spatio_temporal_scaling),
        "decoder_spatio_only": list(cfg.decoder_spatio_only or (False,) * len(cfg.decoder_block_out_channels)),
        "decoder_is_dw_conv": list(cfg.decoder_is_dw_conv or (False,) * len(cfg.decoder_layers_per_block)),
        "decoder_dw_kernel_size": cfg.decoder_dw_kernel_size,
        "decoder_causal": cfg.decoder_causal,
        "patch_size": cfg.patch_size,
        "patch_size_t": cfg.patch_size_t,
        "resnet_norm_eps": cfg.resnet_norm_eps,
        "is_video_dc_ae": cfg.is_video_dc_ae,
    })
    d.update({k: v for k, v in cfg.extra.items() if not k.startswith("_")})
    if cfg.name:
        d["name"] = cfg.name
    d["turbovaed"] = {"family": cfg.family}
    return d


# ---------------------------------------------------------------------------------------------- reference (5-D)


def rms_norm(x: torch.Tensor, eps: float = RMS_EPS) -> torch.Tensor:
    """Weight-less RMSNorm over channels (dim 1), computed in (at least) fp32 like the official one."""
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    return (xf * torch.rsqrt(xf.pow(2).mean(1, keepdim=True) + eps)).to(x.dtype)


def _time_pad(k: int, causal: bool) -> tuple[int, int]:
    return (k - 1, 0) if causal else ((k - 1) // 2, (k - 1) // 2)


def _replicate_time(x: torch.Tensor, front: int, back: int, dim: int) -> torch.Tensor:
    if front == 0 and back == 0:
        return x
    first, last = x.narrow(dim, 0, 1), x.narrow(dim, x.shape[dim] - 1, 1)
    return torch.cat([first] * front + [x] + [last] * back, dim=dim)


class TimeConv3d(nn.Module):
    """Conv3d, edge frames replicated in time (symmetric, or k-1 in front when causal), zero padded in H/W."""

    def __init__(self, cin: int, cout: int, k: int, causal: bool) -> None:
        super().__init__()
        self.pad_t = _time_pad(k, causal)
        self.conv = nn.Conv3d(cin, cout, k, padding=(0, k // 2, k // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_replicate_time(x, *self.pad_t, dim=2))


class SeparableConv3d(nn.Module):
    """Depthwise k^3 (symmetric replicate time padding, always) + pointwise 1x1x1, both with bias."""

    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__()
        self.pad_t = _time_pad(k, False)
        self.depthwise_conv = nn.Conv3d(cin, cin, k, padding=(0, k // 2, k // 2), groups=cin)
        self.pointwise_conv = nn.Conv3d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(_replicate_time(x, *self.pad_t, dim=2)))


class ResBlock(nn.Module):
    """RMSNorm -> act -> conv1 -> RMSNorm -> SiLU -> conv2, plus (LayerNorm + 1x1x1) shortcut when in != out."""

    def __init__(self, cin: int, cout: int, cfg: TurboVAEDConfig, dw: bool, first_act: str) -> None:
        super().__init__()
        self.first_act = first_act
        if dw:
            k = cfg.decoder_dw_kernel_size
            self.conv1: nn.Module = SeparableConv3d(cin, cout, k)
            self.conv2: nn.Module = SeparableConv3d(cout, cout, k)
        else:
            self.conv1 = TimeConv3d(cin, cout, 3, cfg.decoder_causal)
            self.conv2 = TimeConv3d(cout, cout, 3, cfg.decoder_causal)
        self.norm3 = nn.LayerNorm(cin, eps=cfg.resnet_norm_eps) if cin != cout else None
        self.conv_shortcut = TimeConv3d(cin, cout, 1, cfg.decoder_causal) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = rms_norm(x)
        h = F.relu(h) if self.first_act == "relu" else F.silu(h)
        h = self.conv1(h)
        h = self.conv2(F.silu(rms_norm(h)))
        if self.norm3 is not None:
            x = self.norm3(x.movedim(1, -1)).movedim(-1, 1)
            x = self.conv_shortcut(x)
        return h + x


class Upsampler3d(nn.Module):
    """Decoupled 3D pixel shuffle: conv to C*s_t*4, channels (C*4, s_t) -> frames, per-frame pixel_shuffle(2)."""

    def __init__(self, channels: int, s_t: int, cfg: TurboVAEDConfig) -> None:
        super().__init__()
        self.s_t, self.drop = s_t, not cfg.is_video_dc_ae
        self.conv = TimeConv3d(channels, channels * s_t * 4, 3, cfg.decoder_causal)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        b, c, t, h, w = y.shape
        st = self.s_t
        y = y.reshape(b, c // st, st, t, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, c // st, t * st, h, w)
        y = F.pixel_shuffle(y.transpose(1, 2).reshape(b * t * st, c // st, h, w), 2)
        y = y.reshape(b, t * st, c // st // 4, 2 * h, 2 * w).transpose(1, 2)
        if self.drop and st > 1:
            y = y[:, :, st - 1:]
        return y


class MidBlock(nn.Module):
    def __init__(self, channels: int, n: int, cfg: TurboVAEDConfig, dw: bool) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(ResBlock(channels, channels, cfg, dw, "silu") for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for r in self.resnets:
            x = r(x)
        return x


class UpBlock(nn.Module):
    """conv_in resnet (when the width changes) -> upsampler -> resnets (ReLU first after an upsampler)."""

    def __init__(self, cin: int, cout: int, n: int, s_t: int, cfg: TurboVAEDConfig, dw: bool) -> None:
        super().__init__()
        self.conv_in = ResBlock(cin, cout, cfg, dw, "silu") if cin != cout else None
        self.upsamplers = nn.ModuleList([Upsampler3d(cout, s_t, cfg)]) if s_t else None
        act = "relu" if s_t else "silu"
        self.resnets = nn.ModuleList(ResBlock(cout, cout, cfg, dw, act) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv_in is not None:
            x = self.conv_in(x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        for r in self.resnets:
            x = r(x)
        return x


class Upsampler2d(nn.Module):
    """Conv2d 3x3 (C -> C) then pixel_shuffle(2), frames in the batch axis."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.conv(x), 2)


class TurboVAEDDecoder(nn.Module):
    """5-D reference of the official ``TurboVAEDDecoder3d``: raw latents (B, C, T, h, w) -> frames (B, 3, F, H, W)."""

    def __init__(self, cfg: TurboVAEDConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ch = cfg.widths
        self.conv_in = TimeConv3d(cfg.latent_channels, ch[0], 3, cfg.decoder_causal)
        self.mid_block = MidBlock(ch[0], cfg.layers[0], cfg, cfg.dw[0])
        strides = cfg.temporal_strides()
        self.up_blocks = nn.ModuleList(
            UpBlock(ch[max(i - 1, 0)], ch[i], cfg.layers[i + 1], strides[i], cfg, cfg.dw[i + 1]) for i in range(len(ch))
        )
        if cfg.patch_size == 4:
            self.upsampler2d_1 = Upsampler2d(ch[-1])
            self.upsampler2d_2 = Upsampler2d(ch[-1] // 4)
        self.conv_out = TimeConv3d(cfg.head_channels, cfg.out_channels, 3, cfg.decoder_causal)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid_block(self.conv_in(z))
        for blk in self.up_blocks:
            x = blk(x)
        x = F.silu(rms_norm(x))
        if self.cfg.patch_size == 4:
            b, c, t, h, w = x.shape
            # frame by frame, like the official head (a batched Conv2d rounds differently: the 2-4 channel
            # RMS norm at the end amplifies that above 1e-5)
            x = torch.stack([self.upsampler2d_1(x[:, :, i]) for i in range(t)], dim=1)
            x = F.silu(rms_norm(x.reshape(b * t, c // 4, 2 * h, 2 * w)))
            x = F.silu(rms_norm(self.upsampler2d_2(x)))
            x = x.reshape(b, t, c // 16, 4 * h, 4 * w).transpose(1, 2)
        return self.conv_out(x)


# ---------------------------------------------------------------------------------------------- lowering (rank 4)


class _Const(nn.Module):
    """Scalar constants as [1,1,1,1] buffers (an fp16 graph then needs no run-time cast of fp32 scalars)."""

    def __init__(self, **values: float) -> None:
        super().__init__()
        for k, v in values.items():
            self.register_buffer(k, torch.full((1, 1, 1, 1), float(v)))


class MobileNorm(nn.Module):
    """Channel norm of ``[N, C, H, W]``: weight-less RMSNorm, or LayerNorm (``center`` + affine).

    Channel means are fixed 1x1 convs. ``fp16_safe`` rescales each position by d = sqrt(C) * mean|x| (>= D_MIN)
    first: y = x / d has mean(y^2) in [1/C, 1], and x * rsqrt(mean(x^2) + eps) == y * rsqrt(mean(y^2) + eps/d^2),
    so no square overflows (or underflows to a zero denominator) in half precision; eps itself (1e-8 underflows
    in fp16) only enters as sqrt(eps)/d.
    """

    def __init__(self, channels: int, eps: float, fp16_safe: bool, rsqrt: str, center: bool = False,
                 weight: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        self.fp16_safe, self.use_rsqrt, self.center = fp16_safe, rsqrt == "rsqrt", center
        self.register_buffer("mean_w", torch.full((1, channels, 1, 1), 1.0 / channels))
        self.register_buffer("scale_w", torch.full((1, channels, 1, 1), 1.0 / math.sqrt(channels)))
        self.k = _Const(eps=eps, sqrt_eps=math.sqrt(eps), one=1.0, d_min=D_MIN)
        self.weight = None if weight is None else nn.Parameter(weight.detach().clone().view(1, channels, 1, 1))
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone().view(1, channels, 1, 1))

    def _rsqrt(self, v: torch.Tensor) -> torch.Tensor:
        return torch.rsqrt(v) if self.use_rsqrt else self.k.one / torch.sqrt(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.center:
            x = x - F.conv2d(x, self.mean_w)
        if self.fp16_safe:
            inv_d = self.k.one / torch.maximum(F.conv2d(torch.abs(x), self.scale_w), self.k.d_min)
            y = x * inv_d
            e = inv_d * self.k.sqrt_eps
            y = y * self._rsqrt(F.conv2d(y * y, self.mean_w) + e * e)
        else:
            y = x * self._rsqrt(F.conv2d(x * x, self.mean_w) + self.k.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


def _silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _pad_frames(x: torch.Tensor, front: int, back: int) -> torch.Tensor:
    """Replicate the first/last frame along the batch (frame) axis of ``[T, C, H, W]``."""
    if front == 0 and back == 0:
        return x
    return torch.cat([x[:1]] * front + [x] + [x[-1:]] * back, dim=0)


class MobileConv(nn.Module):
    """A lowered :class:`TimeConv3d`: the k temporal taps stacked on channels, one Conv2d ``[Cout, k*Cin, kh, kw]``."""

    def __init__(self, src: TimeConv3d) -> None:
        super().__init__()
        w = src.conv.weight.detach()  # [Cout, Cin, kt, kh, kw]
        cout, cin, kt, kh, kw = w.shape
        self.k, self.pad_t, self.pad = kt, src.pad_t, (kh // 2, kw // 2)
        # channel j*Cin + c of the stacked input is channel c of padded frame t + j
        self.weight = nn.Parameter(w.permute(0, 2, 1, 3, 4).reshape(cout, kt * cin, kh, kw).clone())
        self.bias = nn.Parameter(src.conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_padded(_pad_frames(x, *self.pad_t), x.shape[0])

    def from_padded(self, xp: torch.Tensor, t: int) -> torch.Tensor:
        """The ``t`` output frames of time-padded input frames ``xp`` (``t + k - 1`` of them)."""
        if self.k > 1:
            xp = torch.cat([xp[j:j + t] for j in range(self.k)], dim=1)
        return F.conv2d(xp, self.weight, self.bias, padding=self.pad)

    def permute_out(self, perm: torch.Tensor) -> None:
        """Reorder the output channels (``out_new[i] = out_old[perm[i]]``)."""
        with torch.no_grad():
            self.weight.data = self.weight.data[perm].clone()
            self.bias.data = self.bias.data[perm].clone()


class MobileSeparable(nn.Module):
    """A lowered :class:`SeparableConv3d`: one depthwise Conv2d per temporal tap, summed, then a 1x1 Conv2d."""

    def __init__(self, src: SeparableConv3d) -> None:
        super().__init__()
        w = src.depthwise_conv.weight.detach()  # [C, 1, kt, kh, kw]
        self.k, self.pad_t, self.groups = w.shape[2], src.pad_t, w.shape[0]
        self.pad = (w.shape[3] // 2, w.shape[4] // 2)
        self.taps = nn.ParameterList(nn.Parameter(w[:, :, j].clone()) for j in range(self.k))
        self.dw_bias = nn.Parameter(src.depthwise_conv.bias.detach().clone())
        pw = src.pointwise_conv
        self.pw_weight = nn.Parameter(pw.weight.detach().reshape(pw.out_channels, pw.in_channels, 1, 1).clone())
        self.pw_bias = nn.Parameter(pw.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_padded(_pad_frames(x, *self.pad_t), x.shape[0])

    def from_padded(self, xp: torch.Tensor, t: int) -> torch.Tensor:
        """The ``t`` output frames of time-padded input frames ``xp`` (``t + k - 1`` of them)."""
        y = F.conv2d(xp[0:t], self.taps[0], self.dw_bias, padding=self.pad, groups=self.groups)
        for j in range(1, self.k):
            y = y + F.conv2d(xp[j:j + t], self.taps[j], None, padding=self.pad, groups=self.groups)
        return F.conv2d(y, self.pw_weight, self.pw_bias)


def _lower_conv(src: nn.Module) -> nn.Module:
    return MobileSeparable(src) if isinstance(src, SeparableConv3d) else MobileConv(src)


class MobileResBlock(nn.Module):
    def __init__(self, src: ResBlock, opts: LoweringOptions) -> None:
        super().__init__()
        cin = src.conv1.pointwise_conv.in_channels if isinstance(src.conv1, SeparableConv3d) else \
            src.conv1.conv.in_channels
        cout = src.conv2.pointwise_conv.out_channels if isinstance(src.conv2, SeparableConv3d) else \
            src.conv2.conv.out_channels
        self.relu = src.first_act == "relu"
        self.norm1 = MobileNorm(cin, RMS_EPS, opts.fp16_safe, opts.rsqrt)
        self.conv1 = _lower_conv(src.conv1)
        self.norm2 = MobileNorm(cout, RMS_EPS, opts.fp16_safe, opts.rsqrt)
        self.conv2 = _lower_conv(src.conv2)
        if src.norm3 is not None:
            self.norm3: nn.Module | None = MobileNorm(cin, src.norm3.eps, opts.fp16_safe, opts.rsqrt, center=True,
                                                      weight=src.norm3.weight, bias=src.norm3.bias)
            self.shortcut: nn.Module | None = MobileConv(src.conv_shortcut)
        else:
            self.norm3 = self.shortcut = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        h = torch.relu(h) if self.relu else _silu(h)
        h = self.conv2(_silu(self.norm2(self.conv1(h))))
        if self.norm3 is not None:
            x = self.shortcut(self.norm3(x))
        return h + x


def temporal_frame_major_perm(channels4: int, s_t: int) -> torch.Tensor:
    """Upsampler conv channels ``q*s_t + j`` (q < 4C) -> ``j*4C + q``: frame sub-index j becomes the slow axis."""
    return torch.arange(channels4 * s_t).reshape(channels4, s_t).t().reshape(-1)


class MobileUpsampler(nn.Module):
    """Conv with frame-major output channels, free reshape to frames, drop s_t-1 frames, spatial shuffle x2."""

    def __init__(self, src: Upsampler3d, shuffle: str) -> None:
        super().__init__()
        self.s_t, self.drop, self.shuffle = src.s_t, src.drop, shuffle
        self.conv = MobileConv(src.conv)
        self.conv.permute_out(temporal_frame_major_perm(self.conv.weight.shape[0] // self.s_t, self.s_t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        t, c, h, w = y.shape
        if self.s_t > 1:
            y = y.reshape(t * self.s_t, c // self.s_t, h, w)
            if self.drop:
                y = y[self.s_t - 1:]
        return spatial_shuffle(y, 2, self.shuffle)


class MobileUpsampler2d(nn.Module):
    def __init__(self, src: Upsampler2d, shuffle: str) -> None:
        super().__init__()
        self.shuffle = shuffle
        self.weight = nn.Parameter(src.conv.weight.detach().clone())
        self.bias = nn.Parameter(src.conv.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spatial_shuffle(F.conv2d(x, self.weight, self.bias, padding=1), 2, self.shuffle)


class MobileTurboVAED(nn.Module):
    """Rank-4 official Turbo-VAED decoder: raw latents ``[T, C, h, w]`` -> frames ``[F, 3, H, W]`` (not clamped)."""

    def __init__(self, src: TurboVAEDDecoder, opts: LoweringOptions) -> None:
        super().__init__()
        cfg = src.cfg
        self.options = opts
        self.conv_in = MobileConv(src.conv_in)
        layers: list[nn.Module] = [MobileResBlock(r, opts) for r in src.mid_block.resnets]
        for blk in src.up_blocks:
            if blk.conv_in is not None:
                layers.append(MobileResBlock(blk.conv_in, opts))
            if blk.upsamplers is not None:
                layers.append(MobileUpsampler(blk.upsamplers[0], opts.shuffle))
            layers.extend(MobileResBlock(r, opts) for r in blk.resnets)
        self.layers = nn.Sequential(*layers)
        c = cfg.widths[-1]
        head: list[nn.Module] = [MobileNorm(c, RMS_EPS, opts.fp16_safe, opts.rsqrt)]
        if cfg.patch_size == 4:
            head += [MobileUpsampler2d(src.upsampler2d_1, opts.shuffle),
                     MobileNorm(c // 4, RMS_EPS, opts.fp16_safe, opts.rsqrt),
                     MobileUpsampler2d(src.upsampler2d_2, opts.shuffle),
                     MobileNorm(c // 16, RMS_EPS, opts.fp16_safe, opts.rsqrt)]
        self.head = nn.ModuleList(head)
        self.conv_out = MobileConv(src.conv_out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.conv_in(z))
        for m in self.head:
            x = m(x)
            if isinstance(m, MobileNorm):
                x = _silu(x)
        return self.conv_out(x)


# ---------------------------------------------------------------------------------------------- streaming


class TurboVAEDStep(ClockedStep):
    """Streaming step of :class:`MobileTurboVAED`: every temporal conv pads through the timeline (replicate
    edges, non-causal convs look one frame ahead, so the output lags and residuals are delayed to match)."""

    def __init__(self, mobile: MobileTurboVAED) -> None:
        super().__init__()
        self.mobile = mobile

    @staticmethod
    def conv(tl: Timeline, m: nn.Module, x: torch.Tensor, clk: Clock) -> tuple[torch.Tensor, Clock]:
        if m.k == 1:
            return m(x), clk
        return tl.conv(m, x, clk, *m.pad_t, "replicate")

    def resblock(self, tl: Timeline, b: MobileResBlock, x: torch.Tensor, clk: Clock) -> tuple[torch.Tensor, Clock]:
        h = b.norm1(x)
        h = torch.relu(h) if b.relu else _silu(h)
        h, c = self.conv(tl, b.conv1, h, clk)
        h, c = self.conv(tl, b.conv2, _silu(b.norm2(h)), c)
        if b.norm3 is not None:
            x = b.shortcut(b.norm3(x))  # 1x1x1: no time padding
        return h + tl.delay(x, clk, c), c

    def walk(self, z: torch.Tensor, tl: Timeline) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.mobile
        x, clk = self.conv(tl, m.conv_in, z, Clock())
        for layer in m.layers:
            if isinstance(layer, MobileResBlock):
                x, clk = self.resblock(tl, layer, x, clk)
                continue
            y, clk = self.conv(tl, layer.conv, x, clk)
            t, c, h, w = y.shape
            if layer.s_t > 1:
                y = y.reshape(t * layer.s_t, c // layer.s_t, h, w)
                clk = clk.up(layer.s_t, layer.s_t - 1 if layer.drop else 0)
            x = spatial_shuffle(y, 2, layer.shuffle)
        for h in m.head:
            x = h(x)
            if isinstance(h, MobileNorm):
                x = _silu(x)
        x, clk = self.conv(tl, m.conv_out, x, clk)
        return tl.emit(x, clk)


# ---------------------------------------------------------------------------------------------- import


def _is_extra(key: str) -> bool:
    return key in _EXTRA_KEYS or key.startswith(_EXTRA_PREFIXES)


def _tensor_dict(d: dict, where: str, source: str) -> dict[str, torch.Tensor]:
    bad = [k for k, v in d.items() if not isinstance(v, torch.Tensor)]
    if bad:
        first = ", ".join(map(str, bad[:3])) + (", ..." if len(bad) > 3 else "")
        raise UserError(f"{source}: {where} holds {len(bad)} entries that are not tensors ({first}): "
                        "pass the released decoder weights")
    return {str(k): v for k, v in d.items()}


def _unnest(raw: dict, source: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Decoder state (unprefixed keys) + known extras from a release file, a model state dict or a training run."""
    notes: list[str] = []
    if "state_dict" in raw or "ema_state_dict" in raw:
        sd, ema = raw.get("state_dict"), raw.get("ema_state_dict")
        if isinstance(sd, dict) and isinstance(sd.get("gen_model"), dict):
            state = _tensor_dict(sd["gen_model"], "state_dict['gen_model']", source)
            notes.append("training checkpoint: took state_dict['gen_model'] (the generator train_vae.py resumes "
                         f"from){'; ema_state_dict present, not used' if isinstance(ema, dict) else ''}")
        elif isinstance(ema, dict):
            state = _tensor_dict(ema, "ema_state_dict", source)
            notes.append("training checkpoint: took ema_state_dict (the EMA weights; no state_dict['gen_model'])")
        elif isinstance(sd, dict) and sd and all(isinstance(v, torch.Tensor) for v in sd.values()):
            state = _tensor_dict(sd, "state_dict", source)
            notes.append("checkpoint: took state_dict")
        else:
            raise UserError(f"{source} has no state_dict['gen_model'] or ema_state_dict: pass the released "
                            "decoder weights or a train_vae.py checkpoint")
    else:
        state = _tensor_dict(raw, "the file", source)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
        notes.append("stripped the DDP 'module.' prefix")
    if any(k.startswith("decoder.") for k in state):
        out: dict[str, torch.Tensor] = {k[len("decoder."):]: v for k, v in state.items() if k.startswith("decoder.")}
        for k, v in state.items():
            if not k.startswith("decoder."):
                if k in out:
                    raise UserError(f"{source} holds both '{k}' and 'decoder.{k}': pass one decoder layout")
                out[k] = v
        notes.append("layout: full-model keys ('decoder.' prefix stripped)")
        state = out
    else:
        notes.append("layout: release (decoder keys, no prefix)")
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()}
                    - {"float32"})
    if dtypes:
        state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
        notes.append(f"converted {', '.join(dtypes)} tensors to float32")
    return state, notes


def _name_hint(paths: list[Path], candidates: list[str]) -> str | None:
    """A family named in the file or folder names (``Turbo-VAED-Cog.pth``, ``.../Hunyuan/config.json``)."""
    for p in paths:
        for part in (p.stem, p.parent.name):
            tokens = [t for t in re.split(r"[^a-z0-9]+", part.lower()) if t]
            found = {fam for t in tokens for key, fam in _VARIANTS.items()
                     if fam in candidates and (t == key or (len(key) > 2 and t.startswith(key)))}
            if len(found) == 1:
                return found.pop()
    return None


def variant_family(variant: str) -> str:
    """Family of a ``variant`` (``hunyuan``, ``cog``/``cogvideox``, ``ltx``, ``dc``/``dcae``, ``Turbo-VAED-Cog``)."""
    v = variant.strip().lower().removeprefix("turbo-vaed-").removeprefix("turbo_vaed_")
    if v in _VARIANTS:
        return _VARIANTS[v]
    if v in FAMILIES:
        return v
    raise UserError(f"unknown Turbo-VAED variant '{variant}': choose one of hunyuan, cogvideox, ltx, dcae")


# ---------------------------------------------------------------------------------------------- full-size configs

# the released checkpoints Turbo-VAED-<NAME>.pth and the family each decodes; models/turbo-vaed/<NAME>.json holds
# the official full-size config of each (copied verbatim from configs/Turbo-VAED-<NAME>.json)
RELEASES = {"Hunyuan": "hunyuan", "Cog": "cogvideox", "LTX": "ltx", "DC": "dcae"}
FULL_SIZE_PARAMETERS = {"hunyuan": 40_687_811, "cogvideox": 40_687_811, "ltx": 41_896_023, "dcae": 45_831_383}


def full_size_dir() -> Path:
    """``models/turbo-vaed/``: the official full-size configs, one per released checkpoint."""
    from turbo_vaed.config import MODELS_DIR

    return MODELS_DIR / "turbo-vaed"


def release_of(family: str) -> str | None:
    """The released checkpoint name (``Hunyuan``, ``Cog``, ``LTX``, ``DC``) for ``family``, None if there is none."""
    return next((r for r, f in RELEASES.items() if f == family), None)


def full_size_config(family: str) -> dict | None:
    """The official full-size config for ``family`` with the family recorded (``turbovaed.family``), or None.

    ``models/turbo-vaed/<release>.json`` as released; Hunyuan and Cog configs build the same decoder, so the family
    is set from the release name. What a benchmark needs: ``store.random_decoder("turbo-vaed", d)``.
    """
    rel = release_of(family)
    if rel is None:
        return None
    path = full_size_dir() / f"{rel}.json"
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the official Turbo-VAED config {path} ({type(e).__name__}): "
                        "reinstall turbovaed") from None
    if not isinstance(d, dict):
        raise UserError(f"{path} is not a JSON object: reinstall turbovaed")
    d = {**d, "name": d.get("name") or f"turbo-vaed-{family}", "turbovaed": {"family": family}}
    _parse_config(d)  # a broken file is a one-line error here
    return d


def full_size_families() -> tuple[str, ...]:
    """Families a released Turbo-VAED checkpoint decodes (hunyuan, cogvideox, ltx, dcae)."""
    return tuple(RELEASES.values())


# ---------------------------------------------------------------------------------------------- architecture


class TurboVAEDArchitecture(Architecture):
    """The official Turbo-VAED decoder (``AutoencoderKLTurboVAED``), built from the official config JSON."""

    name = "turbo-vaed"
    description = "official Turbo-VAED decoder (hustvl, arXiv 2508.09136): raw latents, non-causal, 5x5x5 depthwise"

    def config_from_dict(self, d: dict) -> TurboVAEDConfig:
        return _parse_config(d)

    def config_to_dict(self, cfg: TurboVAEDConfig) -> dict:
        return _config_dict(cfg)

    def family(self, cfg: TurboVAEDConfig) -> str:
        return cfg.family

    def build(self, cfg: TurboVAEDConfig) -> nn.Module:
        return TurboVAEDDecoder(cfg)

    def known_extra(self, key: str) -> bool:
        return _is_extra(key)

    def import_release(self, weights: Path, config: Path | None, variant: str | None) -> Imported:
        """Official config JSON + weights (release ``.pth``, ``decoder.``-prefixed, train_vae.py checkpoint).

        The family comes from ``variant``, else the config's ``turbovaed`` section, else its geometry, else (Hunyuan
        vs Cog: identical decoders) the file and folder names; hunyuan is assumed, with a note, when none tells.
        """
        weights = Path(weights)
        if config is None:
            raise UserError("importing turbo-vaed needs the official config JSON (configs/Turbo-VAED-*.json): "
                            "pass --config PATH")
        config = Path(config)
        try:
            d = json.loads(config.read_text())
        except FileNotFoundError:
            raise UserError(f"config not found: {config}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"{config} is not a readable JSON config ({type(e).__name__})") from None
        if not isinstance(d, dict):
            raise UserError(f"{config} is not a JSON object: pass the official Turbo-VAED config")
        notes: list[str] = []
        base = _parse_config({k: v for k, v in d.items() if k != "turbovaed"})  # geometry only
        candidates = [f for f in _geometry_families(base) if f in _OFFICIAL_FAMILIES] or _geometry_families(base)
        if variant:
            fam = variant_family(variant)
            notes.append(f"family {fam} (from variant '{variant}')")
        elif isinstance(d.get("turbovaed"), dict) and d["turbovaed"].get("family"):
            fam = str(d["turbovaed"]["family"])
            notes.append(f"family {fam} (from the config)")
        elif len(candidates) == 1:
            fam = candidates[0]
            notes.append(f"family {fam} (from the config: {base.latent_channels} latent channels, "
                         f"x{base.spatial_factor}, x{base.temporal_factor})")
        else:
            hint = _name_hint([weights, config], candidates)
            fam = hint or (candidates[0] if candidates else base.family)
            notes.append(f"family {fam} (from the file names)" if hint else
                         f"family {fam} assumed: the config fits {' and '.join(candidates)} (identical decoders); "
                         "pass the variant to choose")
        cfg = _parse_config({**d, "turbovaed": {"family": fam}, "name": d.get("name") or f"turbo-vaed-{fam}"})
        if fam == "cogvideox":
            notes.append("frames: 4T-3 for every T, as the official student decodes (the CogVideoX teacher keeps 4T "
                         "frames for even T)")
        state, more = _unnest(read_weights_file(weights), weights.name)
        notes.extend(more)
        with torch.device("meta"):
            module = self.build(cfg)
        rep = self.strict_state(cfg, module, state, weights.name)
        return Imported(cfg, rep.state, rep.ignored, tuple(notes))

    # geometry and conventions
    def frames_out(self, cfg: TurboVAEDConfig, latent_frames: int) -> int:
        """The official student's rule: each temporal upsampler maps T -> 2T-1 (Video DC-AE: 2T)."""
        t = latent_frames
        for s in cfg.temporal_strides():
            if s:
                t = s * t if cfg.is_video_dc_ae else s * t - (s - 1)
        return t

    def min_latent_frames(self, cfg: TurboVAEDConfig) -> int:
        return 1

    def full_size_config(self, family: str) -> dict | None:
        """The released decoder's full-size config for ``family`` (``models/turbo-vaed/<release>.json``), or None."""
        return full_size_config(family)

    def latent_convention(self, cfg: TurboVAEDConfig) -> str:
        return "raw"

    def output_range(self, cfg: TurboVAEDConfig) -> tuple[float, float]:
        """Nominal range: the decode is not clamped (values slightly outside [-1, 1] occur)."""
        return (-1.0, 1.0)

    def latent_channels(self, cfg: TurboVAEDConfig) -> int:
        return cfg.latent_channels

    def spatial_factor(self, cfg: TurboVAEDConfig) -> int:
        return cfg.spatial_factor

    def temporal_factor(self, cfg: TurboVAEDConfig) -> int:
        return cfg.temporal_factor

    def reference(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        return module(z)

    def lower(self, module: nn.Module, options: Any = None) -> nn.Module:
        if not isinstance(module, TurboVAEDDecoder):
            raise TypeError(f"turbo-vaed lower() takes a TurboVAEDDecoder, got {type(module).__name__}")
        with torch.no_grad():
            return MobileTurboVAED(module, options or LoweringOptions()).float().eval()

    def stream_step(self, module: nn.Module, options: Any, latent_frames: int, h: int, w: int):
        step = TurboVAEDStep(self.lower(module, options))
        cfg = module.cfg
        kind = "causal" if cfg.decoder_causal else "non-causal (one frame of look-ahead per temporal conv)"
        return clocked_stream_step(step, (latent_frames, cfg.latent_channels, h, w),
                                   [f"{kind} replicate-padded temporal convs: each carries its last k-1 input frames"])


ARCH = TurboVAEDArchitecture()
