"""Lower the 5-D Turbo-VAED reference to a rank-4 graph for phones (ANE, XNNPACK, ONNX Runtime Mobile).

Frames ride in the batch axis: latents ``[T, C, h, w]`` -> frames ``[F, 3, H, W]``, F = 1 + t(T-1).

- CausalConv3d (k taps in time): the first frame is replicated k-1 times along the batch axis; a dense conv
  stacks the k temporal taps on channels for one Conv2d (weight ``[Cout, k*Cin, kh, kw]``), a depthwise conv
  runs one depthwise Conv2d per tap and sums them; 1x1x1 convs become 1x1 Conv2d.
- Temporal pixel shuffle: the upsampling conv's output channels are permuted once, here, so the frame
  sub-index is the slow channel axis; ``[T, rt*C', h, w] -> [T*rt, C', h, w]`` is then a free reshape,
  followed by dropping the first rt-1 frames.
- Spatial pixel shuffle: ``F.pixel_shuffle`` (depth_to_space, rank 4; export with
  ``ep.run_decompositions({})`` so it stays one op) or, for runtimes without depth_to_space (XNNPACK),
  two rank-4 reshape/permute pairs.
- RMSNorm: the channel mean is a 1x1 conv (delegable everywhere); the fp16-safe form rescales each position
  by its mean |x| * sqrt(C) first, so no square exceeds C (<= 256) in half precision. Identical in exact math.
- SiLU is written as ``x * sigmoid(x)``; no interpolate, Conv3d, dynamic shape or tensor of rank > 4.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from turbo_vaed.student import CausalConv3d, RMSNorm, SeparableConv3d, TurboVAEDDecoder

SHUFFLE_MODES = ("pixel_shuffle", "transpose")
RSQRT_MODES = ("rsqrt", "div_sqrt")
D_MIN = 2.0**-14  # smallest normal fp16: lower bound of the fp16-safe RMSNorm's per-position scale


@dataclass(frozen=True)
class LoweringOptions:
    """Per-target graph flavour; every choice gives the same numbers in exact arithmetic.

    ``fp16_safe``: overflow-free RMSNorm for half precision. ``shuffle``: ``pixel_shuffle`` (one
    depth_to_space op: Core ML) or ``transpose`` (rank-4 reshape/permute: XNNPACK, NNAPI). ``rsqrt``:
    ``rsqrt`` or ``div_sqrt`` (1/sqrt, for runtimes without Reciprocal, e.g. the NNAPI EP).
    """

    fp16_safe: bool = True
    shuffle: str = "pixel_shuffle"
    rsqrt: str = "rsqrt"

    def __post_init__(self) -> None:
        if self.shuffle not in SHUFFLE_MODES:
            raise ValueError(f"shuffle must be one of {SHUFFLE_MODES}, got {self.shuffle!r}")
        if self.rsqrt not in RSQRT_MODES:
            raise ValueError(f"rsqrt must be one of {RSQRT_MODES}, got {self.rsqrt!r}")


def spatial_shuffle(x: torch.Tensor, r: int, mode: str) -> torch.Tensor:
    """``[N, C*r*r, H, W] -> [N, C, H*r, W*r]`` (PyTorch/ONNX CRD layout) with rank <= 4 tensors."""
    if r == 1:
        return x
    if mode == "pixel_shuffle":
        return F.pixel_shuffle(x, r)
    n, crr, h, w = x.shape
    c = crr // (r * r)
    x = x.reshape(n * c * r, r, h, w).permute(0, 2, 3, 1).reshape(n * c, r, h, w * r)  # interleave columns
    return x.permute(0, 2, 1, 3).reshape(n, c, h * r, w * r)  # interleave rows


class TemporalConv(nn.Module):
    """A lowered :class:`CausalConv3d`: rank-4 input ``[T, Cin, H, W]``, frames in the batch axis."""

    def __init__(self, src: CausalConv3d) -> None:
        super().__init__()
        conv = src.conv
        w = conv.weight.detach()  # [Cout, Cin/groups, kt, kh, kw]
        cout, cin_g, kt, kh, kw = w.shape
        self.k = kt
        self.groups = conv.groups
        self.pad = (kh // 2, kw // 2)
        bias = conv.bias.detach().clone() if conv.bias is not None else None
        if self.groups == 1:
            # tap j of frame t reads padded frame t+j; channel index j*Cin + c
            self.weight = nn.Parameter(w.permute(0, 2, 1, 3, 4).reshape(cout, kt * cin_g, kh, kw).clone())
            self.taps = None
        elif self.groups == cout == cin_g * self.groups and cin_g == 1:
            self.weight = None
            self.taps = nn.ParameterList(nn.Parameter(w[:, :, j].clone()) for j in range(kt))
        else:
            raise NotImplementedError(f"grouped conv with groups={self.groups} is not lowered")
        self.bias = nn.Parameter(bias) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        if self.k > 1:
            x = torch.cat([x[:1]] * (self.k - 1) + [x], dim=0)
        if self.taps is None:
            if self.k > 1:
                x = torch.cat([x[j : j + t] for j in range(self.k)], dim=1)
            return F.conv2d(x, self.weight, self.bias, padding=self.pad)
        y = F.conv2d(x[0:t], self.taps[0], self.bias, padding=self.pad, groups=self.groups)
        for j in range(1, self.k):
            y = y + F.conv2d(x[j : j + t], self.taps[j], None, padding=self.pad, groups=self.groups)
        return y


def pointwise(conv: nn.Conv3d) -> nn.Conv2d:
    """A 1x1x1 Conv3d as a 1x1 Conv2d with the same numbers."""
    out = nn.Conv2d(conv.in_channels, conv.out_channels, 1, bias=conv.bias is not None)
    out.weight.data.copy_(conv.weight.detach().reshape(conv.out_channels, conv.in_channels, 1, 1))
    if conv.bias is not None:
        out.bias.data.copy_(conv.bias.detach())
    return out


class MobileSeparable(nn.Module):
    """Lowered :class:`SeparableConv3d`: per-tap depthwise Conv2d sum, then 1x1 Conv2d."""

    def __init__(self, src: SeparableConv3d) -> None:
        super().__init__()
        self.depthwise = TemporalConv(src.depthwise)
        self.pointwise = pointwise(src.pointwise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def lower_conv(src: nn.Module) -> nn.Module:
    if isinstance(src, SeparableConv3d):
        return MobileSeparable(src)
    if isinstance(src, CausalConv3d):
        return TemporalConv(src)
    raise TypeError(f"cannot lower {type(src).__name__}")


def permute_out_channels(conv: nn.Module, perm: torch.Tensor) -> None:
    """Reorder a lowered conv's output channels in place (``out_new[i] = out_old[perm[i]]``)."""
    last = conv.pointwise if isinstance(conv, MobileSeparable) else conv
    with torch.no_grad():
        last.weight.data = last.weight.data[perm].clone()
        if last.bias is not None:
            last.bias.data = last.bias.data[perm].clone()


class MobileRMSNorm(nn.Module):
    """RMSNorm over channels of ``[N, C, H, W]``; the mean over channels is a fixed 1x1 conv."""

    def __init__(self, src: RMSNorm, fp16_safe: bool, rsqrt: str = "rsqrt") -> None:
        super().__init__()
        c = src.weight.numel()
        self.fp16_safe, self.rsqrt = fp16_safe, rsqrt
        # scalar constants live in [1,1,1,1] buffers: python scalars become fp32 0-d constants that an fp16
        # graph must cast at run time (a non-delegated _to_copy in ExecuTorch)
        self.register_buffer("eps", torch.full((1, 1, 1, 1), float(src.eps)))
        self.register_buffer("sqrt_eps", torch.full((1, 1, 1, 1), math.sqrt(src.eps)))
        self.weight = nn.Parameter(src.weight.detach().clone().view(1, c, 1, 1))
        self.register_buffer("mean_w", torch.full((1, c, 1, 1), 1.0 / c))
        self.register_buffer("scale_w", torch.full((1, c, 1, 1), 1.0 / math.sqrt(c)))  # sqrt(C) * mean|x|
        self.register_buffer("one", torch.ones(1, 1, 1, 1))  # 1/d as a tensor division (delegable)
        self.register_buffer("d_min", torch.full((1, 1, 1, 1), D_MIN))  # max(), not clip(min): delegable

    def _rsqrt(self, v: torch.Tensor) -> torch.Tensor:
        return torch.rsqrt(v) if self.rsqrt == "rsqrt" else self.one / torch.sqrt(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fp16_safe:
            ms = F.conv2d(x * x, self.mean_w)
            return x * self._rsqrt(ms + self.eps) * self.weight
        # d = sqrt(C) * mean|x| >= max|x| / sqrt(C): y = x / d has |y| <= sqrt(C), mean(y^2) in [1/C, 1].
        # x * rsqrt(mean(x^2) + eps) == y * rsqrt(mean(y^2) + (sqrt(eps)/d)^2) for any d > 0; d >= D_MIN keeps
        # 1/d <= 2^14 and (sqrt(eps)/d)^2 small in half precision (all-zero positions stay finite).
        inv_d = self.one / torch.maximum(F.conv2d(torch.abs(x), self.scale_w), self.d_min)
        y = x * inv_d
        e = inv_d * self.sqrt_eps
        return y * self._rsqrt(F.conv2d(y * y, self.mean_w) + e * e) * self.weight


def silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class MobileResBlock(nn.Module):
    def __init__(self, src, opts: LoweringOptions) -> None:
        super().__init__()
        self.norm1 = MobileRMSNorm(src.norm1, opts.fp16_safe, opts.rsqrt)
        self.conv1 = lower_conv(src.conv1)
        self.norm2 = MobileRMSNorm(src.norm2, opts.fp16_safe, opts.rsqrt)
        self.conv2 = lower_conv(src.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(silu(self.norm1(x)))
        h = self.conv2(silu(self.norm2(h)))
        return x + h


def frame_major_perm(cout: int, rt: int, rs: int) -> torch.Tensor:
    """Channel permutation (C, rt, rs, rs) -> (rt, C, rs, rs): new index i*C*rs^2 + c*rs^2 + p."""
    return torch.arange(cout * rt * rs * rs).reshape(cout, rt, rs * rs).permute(1, 0, 2).reshape(-1)


class MobileUpsample(nn.Module):
    """Conv with frame-major output channels, free reshape to frames, drop rt-1 frames, spatial shuffle."""

    def __init__(self, src, shuffle: str) -> None:
        super().__init__()
        self.rt, self.rs, self.shuffle = src.rt, src.rs, shuffle
        self.conv = lower_conv(src.conv)
        last = self.conv.pointwise if isinstance(self.conv, MobileSeparable) else self.conv
        cup = last.weight.shape[0]
        self.cout = cup // (self.rt * self.rs * self.rs)
        permute_out_channels(self.conv, frame_major_perm(self.cout, self.rt, self.rs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        t, c, h, w = y.shape
        if self.rt > 1:
            y = y.reshape(t * self.rt, c // self.rt, h, w)[self.rt - 1 :]
        return spatial_shuffle(y, self.rs, self.shuffle)


class MobileDecoder(nn.Module):
    """Rank-4 Turbo-VAED decoder: latents ``[T, C, h, w]`` -> frames ``[1 + t(T-1), 3, H, W]`` in [-1, 1]."""

    def __init__(self, src: TurboVAEDDecoder, opts: LoweringOptions | None = None) -> None:
        super().__init__()
        self.cfg = src.cfg
        self.options = opts = opts or LoweringOptions()
        self.shuffle = opts.shuffle
        self.conv_in = TemporalConv(src.conv_in)
        layers: list[nn.Module] = []
        for stage in src.stages:
            layers.extend(MobileResBlock(b, opts) for b in stage.blocks)
            if stage.upsample is not None:
                layers.append(MobileUpsample(stage.upsample, opts.shuffle))
        self.layers = nn.Sequential(*layers)
        self.norm_out = MobileRMSNorm(src.norm_out, opts.fp16_safe, opts.rsqrt)
        self.conv_out = TemporalConv(src.conv_out)
        self.patch_size = src.cfg.patch_size

    @property
    def family(self):
        return self.cfg.fam

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.conv_in(z))
        x = self.conv_out(silu(self.norm_out(x)))
        x = spatial_shuffle(x, self.patch_size, self.shuffle)
        return torch.clamp(x, -1.0, 1.0)


    def input_shape(self, latent_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``[T, C, h, w]`` for a chunk of ``latent_frames`` decoding to ``width`` x ``height`` pixels."""
        f = self.family.spatial_factor
        return (latent_frames, self.family.latent_channels, height // f, width // f)

    def describe(self) -> dict:
        return asdict(self.options)


@torch.no_grad()
def lower(decoder: TurboVAEDDecoder, options: LoweringOptions | None = None, **kwargs) -> MobileDecoder:
    """The rank-4 phone graph of ``decoder`` with the same numbers (see the module docstring).

    ``kwargs`` are :class:`LoweringOptions` fields (``fp16_safe``, ``shuffle``, ``rsqrt``).
    """
    if not isinstance(decoder, TurboVAEDDecoder):
        raise TypeError(f"lower() takes a TurboVAEDDecoder, got {type(decoder).__name__}")
    opts = options if options is not None else LoweringOptions(**kwargs)
    return MobileDecoder(decoder, opts).float().eval()


def to_mobile_layout(z: torch.Tensor) -> torch.Tensor:
    """Reference latents ``(1, C, T, h, w)`` -> mobile ``[T, C, h, w]``."""
    if z.dim() == 4:
        return z
    if z.dim() != 5 or z.shape[0] != 1:
        raise ValueError(f"expected latents (1, C, T, h, w), got {tuple(z.shape)}")
    return z[0].transpose(0, 1).contiguous()


def from_mobile_layout(x: torch.Tensor) -> torch.Tensor:
    """Mobile frames ``[F, 3, H, W]`` -> reference video ``(1, 3, F, H, W)``."""
    return x.transpose(0, 1).unsqueeze(0)
