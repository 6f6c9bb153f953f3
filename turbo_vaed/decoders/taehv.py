"""TAEHV (madebyollin's Tiny AutoEncoder for Hunyuan Video and its variants) as a decoder architecture ``taehv``.

Written from the fixture descriptions (``shared/fixtures/decoders/taehv/*/meta.json``), not from the MIT
original. The decoder is 2-D per frame; time is mixed only by

- memory blocks: ``MemBlock(x, past) = relu(conv(relu(conv(relu(conv(cat[x, past]))))) + x)`` where ``past``
  is the block's own input one latent step earlier (zeros at t=0), and
- TGrow: a 1x1 conv C -> s*C whose channel group j becomes output frame t*s + j (frame-major already).

Around them: ``tanh(x/3)*3`` on the input, nearest x2 upsampling, ``pixel_shuffle(patch_size)``, a clamp to
[0, 1] and the first ``t_up - 1`` frames dropped (taecvx keeps every frame for even T in ``decode_video`` and
never trims in ``StreamingTAEHV``). Layout of the official code is N T C H W; :meth:`reference` takes and
returns the project's (B, C, T, h, w) / (B, 3, F, H, W).

Variants (settings chosen from the checkpoint's FILE NAME, as the original does, or ``variant``):

======== =========== ======= ===== ============ ==========
variant  family      latents patch time upscale convention
======== =========== ======= ===== ============ ==========
taehv    hunyuan     16      1     x4           normalised
taew2_1  wan         16      1     x4           normalised
taecvx   cogvideox   16      1     x4           raw
taeltx_2 ltx2        128     4     x8           normalised
======== =========== ======= ===== ============ ==========

LTX-2 has the geometry of LTX-Video 0.9 (128 channels, x32, x8, F = 8T-7) but another latent space
(``AutoencoderKLLTX2Video``), so it has its own family ``ltx2`` (turbo_vaed.families); geometry comes from the config.

Lowering (frames in the batch axis, rank 4, Conv2d only): ``past`` is a concat of a zero frame and a slice;
upsample + TGrow become one low-resolution 1x1 conv whose output rows are repeated 4x (exact: the 1x1 conv
commutes with nearest upsampling), a free reshape to frames and a depth_to_space; the trim happens right
after the last TGrow (nothing later mixes frames), so the full-resolution convs skip the dropped frames.
The final clamp to [0, 1] is a ReLU6 clip of an output conv scaled by 6, then a division by 6 (NNAPI only takes
relu1/relu6 clips; 6 / 6 is exactly 1, in fp16 too).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from turbo_vaed.decoders.base import Architecture, Imported, check_tail_frames, read_weights_file
from turbo_vaed.decoders.timeline import Clock, ClockedStep, Timeline, clocked_stream_step
from turbo_vaed.errors import UserError
from turbo_vaed.lowering import LoweringOptions, spatial_shuffle

IMAGE_CHANNELS = 3
DEFAULT_WIDTHS = (256, 128, 64, 64)
ENCODER_WIDTH = 64

# settings TAEHV derives from the checkpoint name, per supported variant
VARIANTS: dict[str, dict[str, Any]] = {
    "taehv": {"family": "hunyuan", "latent_channels": 16, "patch_size": 1, "is_cogvideox": False,
              "encoder_time_downscale": (True, True, False), "decoder_time_upscale": (False, True, True),
              "latent_convention": "normalised"},
    "taew2_1": {"family": "wan", "latent_channels": 16, "patch_size": 1, "is_cogvideox": False,
                "encoder_time_downscale": (True, True, False), "decoder_time_upscale": (False, True, True),
                "latent_convention": "normalised"},
    "taecvx": {"family": "cogvideox", "latent_channels": 16, "patch_size": 1, "is_cogvideox": True,
               "encoder_time_downscale": (True, True, False), "decoder_time_upscale": (False, True, True),
               "latent_convention": "raw"},
    "taeltx_2": {"family": "ltx2", "latent_channels": 128, "patch_size": 4, "is_cogvideox": False,
                 "encoder_time_downscale": (True, True, True), "decoder_time_upscale": (True, True, True),
                 "latent_convention": "normalised"},
}
# names the original knows but this importer does not (no family for their latents here)
UNSUPPORTED_NAMES = ("taew2_2", "taehv1_5", "taeos1_3", "taeltx2_3", "taeh3")

# decoder Sequential indices (they are the state-dict key prefixes)
MEMBLOCKS = ((3, 4, 5), (9, 10, 11), (15, 16, 17))
UPSAMPLES = (6, 12, 18)
TGROWS = (7, 13, 19)
PROJS = (8, 14, 20)
CONV_IN, CONV_OUT = 1, 22
RELU6 = 6.0


def _encoder_keys() -> frozenset[str]:
    """State-dict names of the TAEHV encoder (the same for every variant; shapes vary)."""
    keys = {"encoder.0.weight", "encoder.0.bias", "encoder.17.weight", "encoder.17.bias"}
    for pool, conv, blocks in ((2, 3, (4, 5, 6)), (7, 8, (9, 10, 11)), (12, 13, (14, 15, 16))):
        keys |= {f"encoder.{pool}.conv.weight", f"encoder.{conv}.weight"}
        keys |= {f"encoder.{b}.conv.{i}.{p}" for b in blocks for i in (0, 2, 4) for p in ("weight", "bias")}
    return frozenset(keys)


ENCODER_KEYS = _encoder_keys()


# ---------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class TAEHVConfig:
    """Constructor settings of one TAEHV decoder (the official ones are derived from the file name)."""

    variant: str = "taehv"
    name: str = "taehv"
    family: str = "hunyuan"
    checkpoint_name: str = "taehv.pth"
    patch_size: int = 1
    latent_channels: int = 16
    encoder_time_downscale: tuple[bool, bool, bool] = (True, True, False)
    decoder_time_upscale: tuple[bool, bool, bool] = (False, True, True)
    decoder_space_upscale: tuple[bool, bool, bool] = (True, True, True)
    is_cogvideox: bool = False
    decoder_widths: tuple[int, int, int, int] = DEFAULT_WIDTHS
    encoder_width: int = ENCODER_WIDTH
    latent_convention: str = "normalised"

    @property
    def t_upscale(self) -> int:
        return 2 ** sum(self.decoder_time_upscale)

    @property
    def t_downscale(self) -> int:
        return 2 ** sum(self.encoder_time_downscale)

    @property
    def frames_to_trim(self) -> int:
        return self.t_upscale - 1

    @property
    def spatial_factor(self) -> int:
        return self.patch_size * 2 ** sum(self.decoder_space_upscale)

    def frames_out(self, latent_frames: int, streaming: bool = False) -> int:
        """Frames ``decode_video`` (or, with ``streaming``, ``StreamingTAEHV``) returns for T latent frames."""
        full = self.t_upscale * latent_frames
        if self.is_cogvideox and (streaming or latent_frames % 2 == 0):
            return full
        return full - self.frames_to_trim


def variant_settings(variant: str) -> TAEHVConfig:
    """The official settings of ``variant`` (one of :data:`VARIANTS`)."""
    if variant not in VARIANTS:
        raise UserError(f"unknown TAEHV variant '{variant}': choose one of {', '.join(VARIANTS)}")
    s = VARIANTS[variant]
    return TAEHVConfig(variant=variant, name=variant, checkpoint_name=f"{variant}.pth", **s)


def variant_from_filename(path: str | Path) -> tuple[str, str]:
    """(variant, why) from a checkpoint's file name, with the original's substring tests."""
    name = Path(path).name
    low = name.lower()
    for bad in UNSUPPORTED_NAMES:
        if bad in low:
            raise UserError(f"{name} looks like a '{bad}' checkpoint, which this importer does not support "
                            f"(supported: {', '.join(VARIANTS)}): pass --variant to load it with one of those "
                            "settings anyway")
    for key, variant in (("taeltx", "taeltx_2"), ("taecvx", "taecvx"), ("taew2_1", "taew2_1"), ("taehv", "taehv")):
        if key in low:
            return variant, f"from the file name {name} (contains '{key}')"
    return "taehv", (f"the file name {name} names no variant, so the original's default taehv settings "
                     "(pass --variant to choose)")


def variant_for_family(family: str) -> str | None:
    """The TAEHV variant that decodes ``family``'s latents (None when no variant does, e.g. ltx or dcae)."""
    return next((v for v, s in VARIANTS.items() if s["family"] == family), None)


def full_size_dir() -> Path:
    """``models/taehv/``: one JSON config per variant, the full-size settings of the released checkpoints."""
    from turbo_vaed.config import MODELS_DIR

    return MODELS_DIR / "taehv"


def full_size_config(family: str) -> dict | None:
    """JSON config of the full-size TAEHV decoder for ``family`` (``models/taehv/<variant>.json``), or None.

    What a benchmark needs to build the decoder with random weights (``store.random_decoder("taehv", d)``):
    speed does not depend on the weights. The file is validated here, so a broken one is a one-line error.
    """
    v = variant_for_family(family)
    if v is None:
        return None
    path = full_size_dir() / f"{v}.json"
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"cannot read the TAEHV config {path} ({type(e).__name__}): reinstall turbovaed") from None
    cfg = config_from_dict(d)
    if cfg.family != family or cfg.variant != v:
        raise UserError(f"{path} is a {cfg.variant} config for family {cfg.family}, expected {v} for {family}: "
                        "reinstall turbovaed")
    return d


def full_size_families() -> tuple[str, ...]:
    """Families that a released TAEHV checkpoint decodes (hunyuan, wan, cogvideox, ltx2)."""
    return tuple(s["family"] for s in VARIANTS.values())


_LIST_KEYS = ("encoder_time_downscale", "decoder_time_upscale", "decoder_space_upscale")
_DERIVED = {"t_upscale": "t_upscale", "t_downscale": "t_downscale", "frames_to_trim": "frames_to_trim"}
_IGNORED_KEYS = ("_note", "class", "arch_variant")


def _bools(key: str, v: Any) -> tuple[bool, bool, bool]:
    if not isinstance(v, list | tuple) or len(v) not in (2, 3) or not all(isinstance(b, bool) for b in v):
        raise UserError(f"TAEHV config '{key}' must be a list of 3 booleans, got {v!r}")
    if len(v) == 2:  # the original prepends False to a 2-entry decoder_time_upscale
        if key != "decoder_time_upscale":
            raise UserError(f"TAEHV config '{key}' must be a list of 3 booleans, got {v!r}")
        v = (False, *v)
    return tuple(v)  # type: ignore[return-value]


def _positive_int(key: str, v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        raise UserError(f"TAEHV config '{key}' must be a positive integer, got {v!r}")
    return v


def config_from_dict(d: dict) -> TAEHVConfig:
    """Typed config from its JSON form (the fixtures' derived ``config.json`` or :func:`config_to_dict`)."""
    if not isinstance(d, dict):
        raise UserError(f"a TAEHV config must be a JSON object, got {type(d).__name__}")
    known = {f.name for f in fields(TAEHVConfig)} | set(_DERIVED) | set(_IGNORED_KEYS)
    unknown = sorted(k for k in d if k not in known)
    if unknown:
        raise UserError(f"TAEHV config has unknown keys {', '.join(unknown)}: "
                        f"known keys are {', '.join(sorted(known))}")
    if d.get("class", "TAEHV") != "TAEHV":
        raise UserError(f"TAEHV config names class {d['class']!r}: this architecture reads TAEHV configs")
    if d.get("arch_variant") is not None:
        raise UserError(f"TAEHV arch_variant {d['arch_variant']!r} is not supported (only the standard decoder)")
    variant = d.get("variant")
    if variant is None and d.get("checkpoint_name"):
        variant, _ = variant_from_filename(str(d["checkpoint_name"]))
    if variant is None:
        variant = d.get("name") if d.get("name") in VARIANTS else None
    if variant is None:
        raise UserError("TAEHV config names no variant: add \"variant\" (one of " + ", ".join(VARIANTS) + ")")
    cfg = variant_settings(str(variant))
    upd: dict[str, Any] = {}
    for k in ("name", "family", "checkpoint_name", "latent_convention"):
        if k in d:
            if not isinstance(d[k], str) or not d[k]:
                raise UserError(f"TAEHV config '{k}' must be a non-empty string, got {d[k]!r}")
            upd[k] = d[k]
    for k in ("patch_size", "latent_channels", "encoder_width"):
        if k in d:
            upd[k] = _positive_int(k, d[k])
    for k in _LIST_KEYS:
        if k in d:
            upd[k] = _bools(k, d[k])
    if "is_cogvideox" in d:
        if not isinstance(d["is_cogvideox"], bool):
            raise UserError(f"TAEHV config 'is_cogvideox' must be a boolean, got {d['is_cogvideox']!r}")
        upd["is_cogvideox"] = d["is_cogvideox"]
    if "decoder_widths" in d:
        w = d["decoder_widths"]
        if not isinstance(w, list | tuple) or len(w) != 4:
            raise UserError(f"TAEHV config 'decoder_widths' must be a list of 4 positive integers, got {w!r}")
        upd["decoder_widths"] = tuple(_positive_int("decoder_widths", v) for v in w)
    if "name" not in d:
        upd["name"] = str(variant)
    cfg = replace(cfg, **upd)
    if cfg.latent_convention not in ("normalised", "raw"):
        raise UserError(f"TAEHV config 'latent_convention' must be normalised or raw, got {cfg.latent_convention!r}")
    if cfg.patch_size & (cfg.patch_size - 1):
        raise UserError(f"TAEHV config 'patch_size' must be a power of 2, got {cfg.patch_size}")
    for k, attr in _DERIVED.items():
        if k in d and d[k] != getattr(cfg, attr):
            raise UserError(f"TAEHV config '{k}' is {d[k]!r} but its settings give {getattr(cfg, attr)}: "
                            "fix the config")
    _check_family(cfg)
    return cfg


def _check_family(cfg: TAEHVConfig) -> None:
    """A known family must have the config's latent channel count (a family not in families.py is not checked)."""
    from turbo_vaed.families import FAMILIES

    fam = FAMILIES.get(cfg.family)
    if fam is not None and fam.latent_channels != cfg.latent_channels:
        raise UserError(f"TAEHV config has {cfg.latent_channels} latent channels but family {cfg.family} has "
                        f"{fam.latent_channels}: fix 'family' or 'latent_channels'")


def config_to_dict(cfg: TAEHVConfig) -> dict:
    """JSON form (official setting names, plus variant/family/convention); round-trips."""
    return {
        "class": "TAEHV",
        "variant": cfg.variant,
        "name": cfg.name,
        "family": cfg.family,
        "checkpoint_name": cfg.checkpoint_name,
        "patch_size": cfg.patch_size,
        "latent_channels": cfg.latent_channels,
        "encoder_time_downscale": list(cfg.encoder_time_downscale),
        "decoder_time_upscale": list(cfg.decoder_time_upscale),
        "decoder_space_upscale": list(cfg.decoder_space_upscale),
        "is_cogvideox": cfg.is_cogvideox,
        "decoder_widths": list(cfg.decoder_widths),
        "encoder_width": cfg.encoder_width,
        "t_downscale": cfg.t_downscale,
        "t_upscale": cfg.t_upscale,
        "frames_to_trim": cfg.frames_to_trim,
        "latent_convention": cfg.latent_convention,
    }


# ---------------------------------------------------------------------------------------------- reference
def _conv3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class TanhClamp(nn.Module):
    """``tanh(x / 3) * 3`` (decoder index 0)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemoryBlock(nn.Module):
    """Causal memory block: ``relu(body(cat[x, past]) + x)``; keys ``conv.{0,2,4}``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(_conv3(2 * c, c), nn.ReLU(), _conv3(c, c), nn.ReLU(), _conv3(c, c))

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(torch.cat([x, past], 1)) + x)


class TimeGrow(nn.Module):
    """1x1 conv C -> s*C, then ``(NT, s*C, H, W) -> (NT*s, C, H, W)``: channel group j is frame t*s + j."""

    def __init__(self, c: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(c, c * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nt, c, h, w = x.shape
        return self.conv(x).reshape(nt * self.stride, c, h, w)


class TAEHVDecoder(nn.Module):
    """5-D reference: latents ``(B, C, T, h, w)`` -> frames ``(B, 3, F, H, W)`` in [0, 1].

    ``self.decoder`` is an ``nn.Sequential`` with the official indices, so its state dict has the release's
    ``decoder.*`` names.
    """

    def __init__(self, cfg: TAEHVConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n = cfg.decoder_widths
        layers: list[nn.Module] = [TanhClamp(), _conv3(cfg.latent_channels, n[0]), nn.ReLU()]
        for i in range(3):
            layers += [MemoryBlock(n[i]) for _ in range(3)]
            layers.append(nn.Upsample(scale_factor=2 if cfg.decoder_space_upscale[i] else 1, mode="nearest"))
            layers.append(TimeGrow(n[i], 2 if cfg.decoder_time_upscale[i] else 1))
            layers.append(_conv3(n[i], n[i + 1], bias=False))
        layers += [nn.ReLU(), _conv3(n[3], IMAGE_CHANNELS * cfg.patch_size**2)]
        self.decoder = nn.Sequential(*layers)

    def _check(self, z: torch.Tensor) -> None:
        if z.dim() != 5 or z.shape[1] != self.cfg.latent_channels:
            raise ValueError(f"expected latents (B, {self.cfg.latent_channels}, T, h, w), got {tuple(z.shape)}")

    def raw_frames(self, z: torch.Tensor) -> torch.Tensor:
        """Every decoded frame, nothing trimmed: ``(B, C, T, h, w) -> (B, t_up*T, 3, H, W)`` (N T C H W)."""
        self._check(z)
        b, _, t = z.shape[:3]
        x = z.transpose(1, 2).reshape(b * t, *z.shape[1:2], *z.shape[3:])
        for layer in self.decoder:
            if isinstance(layer, MemoryBlock):
                nt, c, h, w = x.shape
                xs = x.reshape(b, nt // b, c, h, w)
                past = torch.cat([torch.zeros_like(xs[:, :1]), xs[:, :-1]], 1).reshape(nt, c, h, w)
                x = layer(x, past)
            else:
                x = layer(x)
        nt = x.shape[0]
        x = x.reshape(b, nt // b, *x.shape[1:])
        if self.cfg.patch_size > 1:
            x = F.pixel_shuffle(x, self.cfg.patch_size)
        return x.clamp(0.0, 1.0)

    def forward(self, z: torch.Tensor, streaming: bool = False) -> torch.Tensor:
        """``decode_video`` frames (or, with ``streaming``, ``StreamingTAEHV``'s) as ``(B, 3, F, H, W)``."""
        x = self.raw_frames(z)
        t = z.shape[2]
        x = x[:, x.shape[1] - self.cfg.frames_out(t, streaming):]
        return x.transpose(1, 2)


class TAEHVStream:
    """Frame-by-frame decode with carried memory (the sequential / streaming paths, in causal order).

    ``push(z_t)`` takes one latent frame ``(B, C, h, w)`` and returns the ``t_up`` frames it produces,
    ``(B, t_up, 3, H, W)``, untrimmed; each memory block keeps its previous input.
    """

    def __init__(self, module: TAEHVDecoder) -> None:
        self.module = module
        self.memory: dict[int, torch.Tensor] = {}

    def reset(self) -> None:
        self.memory = {}

    def _run(self, x: torch.Tensor, start: int) -> list[torch.Tensor]:
        layers = self.module.decoder
        for i in range(start, len(layers)):
            layer = layers[i]
            if isinstance(layer, MemoryBlock):
                past = self.memory.get(i)
                self.memory[i] = x
                x = layer(x, torch.zeros_like(x) if past is None else past)
            elif isinstance(layer, TimeGrow):
                b = x.shape[0]
                y = layer(x)  # (b*s, C, H, W): frame-major per batch element
                y = y.reshape(b, layer.stride, *y.shape[1:])
                out: list[torch.Tensor] = []
                for j in range(layer.stride):
                    out += self._run(y[:, j], i + 1)
                return out
            else:
                x = layer(x)
        p = self.module.cfg.patch_size
        if p > 1:
            x = F.pixel_shuffle(x, p)
        return [x.clamp(0.0, 1.0)]

    @torch.no_grad()
    def push(self, z_t: torch.Tensor) -> torch.Tensor:
        return torch.stack(self._run(z_t, 0), 1)


@torch.no_grad()
def decode_sequential(module: TAEHVDecoder, z: torch.Tensor, streaming: bool = False) -> torch.Tensor:
    """``decode_video(parallel=False)`` (or ``StreamingTAEHV`` with ``streaming``): ``(B,C,T,h,w) -> (B,3,F,H,W)``."""
    module._check(z)
    s = TAEHVStream(module)
    x = torch.cat([s.push(z[:, :, t]) for t in range(z.shape[2])], 1)
    x = x[:, x.shape[1] - module.cfg.frames_out(z.shape[2], streaming):]
    return x.transpose(1, 2)


# ---------------------------------------------------------------------------------------------- lowering
def _copy_conv(src: nn.Conv2d, weight: torch.Tensor | None = None) -> nn.Conv2d:
    w = (src.weight if weight is None else weight).detach()
    out = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], padding=src.padding, bias=src.bias is not None)
    out.weight.data.copy_(w)
    if src.bias is not None:
        out.bias.data.copy_(src.bias.detach())
    return out


class MobileMemoryBlock(nn.Module):
    """Rank-4 memory block: ``past = cat([0, x], batch)[:T]`` (previous frame, zeros at frame 0)."""

    def __init__(self, src: MemoryBlock) -> None:
        super().__init__()
        self.conv0, self.conv1, self.conv2 = (_copy_conv(src.conv[i]) for i in (0, 2, 4))
        # a [1,1,1,1] buffer, not a python 0: an fp16 graph would cast a fp32 scalar constant at run time
        self.register_buffer("zero", torch.zeros(1, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        past = torch.cat([x[:1] * self.zero, x], 0)[:t]
        h = torch.relu(self.conv0(torch.cat([x, past], 1)))
        h = torch.relu(self.conv1(h))
        return torch.relu(self.conv2(h) + x)


class MobileGrow(nn.Module):
    """Nearest x2 upsample + TGrow as one low-resolution 1x1 conv (rows repeated 4x when upsampling),
    a free reshape to frames, an optional frame trim, then depth_to_space (= nearest upsampling)."""

    def __init__(self, up: nn.Upsample, grow: TimeGrow, shuffle: str, per_frame: bool = False) -> None:
        super().__init__()
        self.stride, self.shuffle = grow.stride, shuffle
        self.r = int(up.scale_factor or 1)
        if up.mode != "nearest" or self.r not in (1, 2):
            raise NotImplementedError(f"cannot lower Upsample(mode={up.mode}, scale={up.scale_factor})")
        w = grow.conv.weight.detach()  # [s*C, C, 1, 1], rows frame-major (j*C + c)
        # pixel_shuffle reads input channel c*r*r + k as sub-pixel k of channel c: repeat every row r*r times
        self.conv = _copy_conv(grow.conv, w.repeat_interleave(self.r * self.r, dim=0))
        if per_frame:  # the same rows, one conv per output frame (frame-major), for a step run frame by frame
            if grow.conv.bias is not None:
                raise NotImplementedError("TGrow convs have no bias in TAEHV")
            c = self.conv.weight.shape[0] // self.stride
            self.frames = nn.ModuleList(_copy_conv(self.conv, self.conv.weight.detach()[j * c:(j + 1) * c])
                                        for j in range(self.stride))

    def frame(self, x: torch.Tensor, j: int) -> torch.Tensor:
        """Output frame ``j`` (of ``stride``) of one input frame ``x`` [1, C, h, w]: the conv's rows for that frame,
        then depth_to_space; the same numbers as row ``j`` of :meth:`forward`."""
        return spatial_shuffle(self.frames[j](x), self.r, self.shuffle)

    def forward(self, x: torch.Tensor, drop: int = 0) -> torch.Tensor:
        y = self.conv(x)
        t, c, h, w = y.shape
        if self.stride > 1:
            y = y.reshape(t * self.stride, c // self.stride, h, w)
        if drop:
            y = y[drop:]
        return spatial_shuffle(y, self.r, self.shuffle)


class MobileTAEHV(nn.Module):
    """Rank-4 TAEHV decoder: latents ``[T, C, h, w]`` -> frames ``[F(T), 3, H, W]`` in [0, 1].

    TAEHV has no normalisation layers, so ``fp16_safe`` changes nothing; ``rsqrt`` is unused.
    """

    def __init__(self, src: TAEHVDecoder, opts: LoweringOptions) -> None:
        super().__init__()
        self.cfg = src.cfg
        self.options = opts
        d = src.decoder
        self.register_buffer("three", torch.full((1, 1, 1, 1), 3.0))
        self.conv_in = _copy_conv(d[CONV_IN])
        self.blocks = nn.ModuleList(nn.Sequential(*(MobileMemoryBlock(d[i]) for i in idx)) for idx in MEMBLOCKS)
        # the last one also per output frame where the streaming step runs its tail frame by frame
        self.grows = nn.ModuleList(MobileGrow(d[u], d[g], opts.shuffle, per_frame=bool(opts.stream_tail_frames)
                                              and i == len(UPSAMPLES) - 1)
                                   for i, (u, g) in enumerate(zip(UPSAMPLES, TGROWS, strict=True)))
        self.projs = nn.ModuleList(_copy_conv(d[i]) for i in PROJS)
        # clamp(y, 0, 1) = clamp(6y, 0, 6) / 6: the output conv is scaled by 6 at lowering time, so the graph
        # ends in a ReLU6 clip (NNAPI takes only relu1/relu6 clips) and a division that maps 6 to exactly 1
        src_out = d[CONV_OUT]
        self.conv_out = _copy_conv(src_out, src_out.weight.detach() * RELU6)
        self.conv_out.bias.data.mul_(RELU6)
        self.register_buffer("six", torch.full((1, 1, 1, 1), RELU6))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        t = z.shape[0]  # static at export time
        drop = self.cfg.t_upscale * t - self.cfg.frames_out(t)
        x = torch.tanh(z / self.three) * self.three
        x = torch.relu(self.conv_in(x))
        last = len(self.grows) - 1
        for i in range(len(self.grows)):
            x = self.blocks[i](x)
            x = self.grows[i](x, drop if i == last else 0)  # no memory block after the last TGrow
            x = self.projs[i](x)
        x = self.conv_out(torch.relu(x))
        x = spatial_shuffle(x, self.cfg.patch_size, self.options.shuffle)
        return torch.clamp(x, 0.0, RELU6) / self.six


class TAEHVStep(ClockedStep):
    """Streaming step of :class:`MobileTAEHV`: each memory block carries the previous input frame (zeros before
    the first), TGrow reshapes rows into frames; ``trim`` (1.0 on the first chunk of a trimming decode) marks the
    first ``frames_to_trim`` frames as not kept. Causal: no output lag."""

    controls = ("start", "remaining", "trim")

    def __init__(self, mobile: MobileTAEHV) -> None:
        super().__init__()
        self.mobile = mobile
        self.register_buffer("trim_frames", torch.full((1, 1, 1, 1), float(mobile.cfg.frames_to_trim)))

    @staticmethod
    def memory(tl: Timeline, b: MobileMemoryBlock, x: torch.Tensor, clk: Clock) -> torch.Tensor:
        xp, _ = tl.pad(x, clk, 1, 0, "zeros")
        h = torch.relu(b.conv0(torch.cat([x, xp[: x.shape[0]]], 1)))
        h = torch.relu(b.conv1(h))
        return torch.relu(b.conv2(h) + x)

    def walk(self, z: torch.Tensor, tl: Timeline) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.mobile
        x = torch.tanh(z / m.three) * m.three
        x = torch.relu(m.conv_in(x))
        clk = Clock()
        last = len(m.grows) - 1
        for i, (blocks, grow, proj) in enumerate(zip(m.blocks, m.grows, m.projs, strict=True)):
            for b in blocks:
                x = self.memory(tl, b, x, clk)
            clk = clk.up(grow.stride)
            if i == last and m.options.stream_tail_frames:
                return tl.emit(self._grouped_tail(x), clk, tl.trim * self.trim_frames)
            x = proj(grow(x))
        return tl.emit(self._out(x), clk, tl.trim * self.trim_frames)

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        m = self.mobile
        x = m.conv_out(torch.relu(x))
        x = spatial_shuffle(x, m.cfg.patch_size, m.options.shuffle)
        return torch.clamp(x, 0.0, RELU6) / m.six

    def _grouped_tail(self, x: torch.Tensor) -> torch.Tensor:
        """The last TGrow, its projection and the output conv, ``stream_tail_frames`` output frames at a time.

        Nothing after the last memory block mixes frames, so each output frame is the last TGrow's rows for it
        (its frame-major slice of the 1x1 conv, :meth:`MobileGrow.frame`) through the full-resolution convs: the
        same numbers as the whole tail, with its activations cut to that many frames. In the ONNX preset
        (``stream_band_order``) each group's input takes a zero-weighted edge from the previous group's frames, so
        ONNX Runtime finishes one group before it starts the next.
        """
        m = self.mobile
        grow, proj = m.grows[-1], m.projs[-1]
        n = x.shape[0] * grow.stride
        g = m.options.stream_tail_frames
        outs, edge = [], None
        for a in range(0, n, g):
            rows = []
            for f in range(a, min(n, a + g)):
                xin = x[f // grow.stride:f // grow.stride + 1]
                rows.append(grow.frame(xin if edge is None else xin + edge, f % grow.stride))
            y = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
            outs.append(self._out(proj(y)))
            if m.options.stream_band_order:
                edge = outs[-1][:1, :1, :1, :1] * 0.0
        return torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]


# ---------------------------------------------------------------------------------------------- architecture
def _collapse_encoder(keys: tuple[str, ...]) -> tuple[str, ...]:
    enc = [k for k in keys if k.startswith("encoder.")]
    rest = tuple(k for k in keys if not k.startswith("encoder."))
    return ((f"encoder.* ({len(enc)} tensors)",) if enc else ()) + rest


class TAEHVArchitecture(Architecture):
    """TAEHV decoders: taehv (Hunyuan), taew2_1 (Wan 2.1), taecvx (CogVideoX), taeltx_2 (LTX-2)."""

    name = "taehv"
    stream_tail_frames = True  # the full-resolution tail frame by frame (TAEHVStep._grouped_tail)
    description = "madebyollin's Tiny AutoEncoder for Hunyuan Video (and Wan 2.1, CogVideoX, LTX-2)"

    def config_from_dict(self, d: dict) -> TAEHVConfig:
        return config_from_dict(d)

    def config_to_dict(self, cfg: TAEHVConfig) -> dict:
        return config_to_dict(cfg)

    def family(self, cfg: TAEHVConfig) -> str:
        return cfg.family

    def build(self, cfg: TAEHVConfig) -> nn.Module:
        return TAEHVDecoder(cfg).eval()

    def owns(self, module: nn.Module) -> bool:
        return isinstance(module, TAEHVDecoder)

    # geometry from the config, not families.py (upscaling can be switched off; families.py has ltx2 too)
    def latent_channels(self, cfg: TAEHVConfig) -> int:
        return cfg.latent_channels

    def spatial_factor(self, cfg: TAEHVConfig) -> int:
        return cfg.spatial_factor

    def temporal_factor(self, cfg: TAEHVConfig) -> int:
        return cfg.t_upscale

    def frames_out(self, cfg: TAEHVConfig, latent_frames: int) -> int:
        return cfg.frames_out(latent_frames)

    def frames_out_streaming(self, cfg: TAEHVConfig, latent_frames: int) -> int:
        """Frames ``StreamingTAEHV`` yields (taecvx never trims there)."""
        return cfg.frames_out(latent_frames, streaming=True)

    def min_latent_frames(self, cfg: TAEHVConfig) -> int:
        return 1

    def latent_convention(self, cfg: TAEHVConfig) -> str:
        return cfg.latent_convention

    def output_range(self, cfg: TAEHVConfig) -> tuple[float, float]:
        return (0.0, 1.0)

    def reference(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        return module(z)

    def known_extra(self, key: str) -> bool:
        return key in ENCODER_KEYS

    def full_size_config(self, family: str) -> dict | None:
        """The released decoder's config for ``family`` (``models/taehv/<variant>.json``), None if none."""
        return full_size_config(family)

    def lower(self, module: nn.Module, options: LoweringOptions) -> nn.Module:
        if not isinstance(module, TAEHVDecoder):
            raise TypeError(f"the taehv architecture lowers a TAEHVDecoder, got {type(module).__name__}")
        with torch.no_grad():
            return MobileTAEHV(module, options or LoweringOptions()).float().eval()

    def stream_step(self, module: nn.Module, options: Any, latent_frames: int, h: int, w: int):
        cfg = module.cfg
        notes = ["memory blocks: each carries its previous input frame (zeros before the first)"]
        g = getattr(options, "stream_tail_frames", 0)
        if g:
            check_tail_frames(g, latent_frames, latent_frames * cfg.t_upscale)
            notes.append(f"full-resolution tail (the last TGrow, its projection and the output conv) {g} frame(s) "
                         "at a time; nothing there mixes frames, so nothing is carried or recomputed")
        return clocked_stream_step(TAEHVStep(self.lower(module, options)),
                                   (latent_frames, cfg.latent_channels, h, w), notes)

    # ---- import
    def _config(self, weights: Path, config: Path | None, variant: str | None) -> tuple[TAEHVConfig, str]:
        if config is not None:
            try:
                d = json.loads(Path(config).read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise UserError(f"cannot read TAEHV config {config} ({type(e).__name__}): pass a JSON file") from None
            cfg = config_from_dict(d)
            if variant is not None and variant != cfg.variant:
                raise UserError(f"--variant {variant} contradicts the config {config} (variant {cfg.variant}): "
                                "pass one of them")
            return cfg, f"from the config {Path(config).name}"
        if variant is not None:
            return variant_settings(variant), "from --variant"
        v, why = variant_from_filename(weights)
        return variant_settings(v), why

    def import_release(self, weights: Path, config: Path | None, variant: str | None) -> Imported:
        """Read a released TAEHV file (the whole encoder+decoder state dict, fp16 or fp32) strictly."""
        weights = Path(weights)
        cfg, why = self._config(weights, config, variant)
        raw = read_weights_file(weights)
        bad = [k for k, v in raw.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
        if bad:
            k = bad[0]
            raise UserError(f"{weights} holds {len(bad)} entries that are not tensors (first: {k!r}, "
                            f"{type(raw[k]).__name__}): use the released TAEHV state-dict file")
        dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in raw.values()})
        state = {k: v.float() for k, v in raw.items()}
        with torch.device("meta"):
            module = TAEHVDecoder(cfg)
        want = module.state_dict()
        notes = [f"variant {cfg.variant}, {why}; family {cfg.family}, {cfg.latent_convention} latents"]
        for i in TGROWS:  # the original's patch_tgrow_layers: keep the LAST rows of a wider TGrow
            k = f"decoder.{i}.conv.weight"
            if k in state and k in want and state[k].shape[0] > want[k].shape[0] and \
                    tuple(state[k].shape[1:]) == tuple(want[k].shape[1:]):
                n = want[k].shape[0]
                notes.append(f"{k}: kept the last {n} of {state[k].shape[0]} rows (time upscale disabled)")
                state[k] = state[k][-n:].clone()
        try:
            report = self.strict_state(cfg, module, state, str(weights))
        except UserError as e:
            raise UserError(f"{e} (TAEHV variant {cfg.variant}, {why})") from None
        notes.append(f"weights {'/'.join(dtypes)}, loaded as float32")
        return Imported(cfg, report.state, _collapse_encoder(report.ignored), tuple(notes))


ARCH = TAEHVArchitecture()
