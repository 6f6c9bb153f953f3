"""Rank-4 lowering primitives shared by every decoder architecture (ANE, XNNPACK, ONNX Runtime Mobile).

Each architecture's own ``lower`` (in ``turbo_vaed/decoders/<arch>.py``) builds its mobile module from these;
:func:`lower` dispatches to it. What the project's student does with them:

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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from turbo_vaed.decoders.student_model import CausalConv3d, RMSNorm, SeparableConv3d

SHUFFLE_MODES = ("pixel_shuffle", "transpose")
RSQRT_MODES = ("rsqrt", "div_sqrt")
D_MIN = 2.0**-14  # smallest normal fp16: lower bound of the fp16-safe RMSNorm's per-position scale


@dataclass(frozen=True)
class LoweringOptions:
    """Per-target graph flavour; every choice gives the same numbers in exact arithmetic.

    ``fp16_safe``: overflow-free RMSNorm for half precision. ``shuffle``: ``pixel_shuffle`` (one depth_to_space op:
    Core ML) or ``transpose`` (rank-4 reshape/permute: XNNPACK, NNAPI). ``rsqrt``: ``rsqrt`` or ``div_sqrt``
    (1/sqrt, for runtimes without Reciprocal, e.g. the NNAPI EP). ``stream_bands``: a streaming step runs its
    high-resolution tail in this many bands of rows, one after the other (exact: each band reads its neighbours'
    rows as context), so its largest activations shrink by about that factor (see
    :class:`turbo_vaed.decoders.student.StudentStep`); ``stream_band_stages``: how many of the highest-resolution
    stages (counted by spatial upsamples from the last) that tail spans. ``stream_tail_frames``: a streaming step
    runs that tail this many frames at a time (0: all of the chunk's frames at once), carrying each temporal conv's
    state from one group of frames to the next as it does from chunk to chunk (exact, nothing recomputed), so the
    tail's activations shrink by the chunk's frames over this. ``stream_state_taps``: a streaming step
    reads each temporal conv's last tap from its next-state tensor, so ONNX Runtime (which orders nodes by what the
    outputs need) cuts the states before the conv and frees its input early; off elsewhere (the extra concatenation
    is not delegated to XNNPACK). ``stream_band_order``: each band's (and each group of frames') input carries a
    zero-weighted edge from the previous one's outputs (its frames and next states), so a runtime that orders nodes
    only by data (ONNX Runtime) finishes one band before it starts the next and keeps one band's activations alive,
    not all of them; off where execution follows the program's order anyway. ``stream_partial_sums``: a streaming
    step's dense temporal convs with fewer output than input channels (the output conv: 3 from 24 channels in the
    default student) keep the partial sums of their next k-1 outputs as state, not their last k-1 input frames:
    a state that many times smaller and no concatenation of the full-resolution input (see
    :meth:`TemporalConv.partial_sum_taps`); off by default, on for fp32 exports through the presets (``"auto"``):
    in fp16 each tap's contribution rounds on its own.
    """

    fp16_safe: bool = True
    shuffle: str = "pixel_shuffle"
    rsqrt: str = "rsqrt"
    stream_bands: int = 1
    stream_band_stages: int = 1
    stream_tail_frames: int = 0
    stream_state_taps: bool = False
    stream_band_order: bool = False
    stream_partial_sums: bool = False

    def __post_init__(self) -> None:
        if self.shuffle not in SHUFFLE_MODES:
            raise ValueError(f"shuffle must be one of {SHUFFLE_MODES}, got {self.shuffle!r}")
        if self.rsqrt not in RSQRT_MODES:
            raise ValueError(f"rsqrt must be one of {RSQRT_MODES}, got {self.rsqrt!r}")
        if self.stream_bands < 1:
            raise ValueError(f"stream_bands must be >= 1, got {self.stream_bands}")
        if self.stream_band_stages < 1:
            raise ValueError(f"stream_band_stages must be >= 1, got {self.stream_band_stages}")
        if self.stream_tail_frames < 0:
            raise ValueError(f"stream_tail_frames must be >= 0, got {self.stream_tail_frames}")


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
        return self.padded(x, t)

    def partial_sum_taps(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """This dense conv's taps stacked along the output channels, ``[k*Cout, Cin, kh, kw]`` (tap j in rows
        ``[j*Cout, (j+1)*Cout)``), and a bias on the last tap only; None where that state would not be smaller than
        the input history (depthwise, one tap, or at least as many outputs as inputs).

        One conv of a chunk's frames with these gives every tap's contribution of every frame; output t is the sum
        of tap j's contribution of frame t+j-(k-1) over the taps whose frame is in the chunk, plus the partial sum the
        previous chunk left for it (``turbo_vaed.decoders.student.StreamState``).
        """
        if self.taps is not None or self.k == 1:
            return None
        cout, kc = self.weight.shape[:2]
        cin = kc // self.k
        if cout >= cin:
            return None
        w = torch.cat([self.weight.detach()[:, j * cin:(j + 1) * cin] for j in range(self.k)], dim=0)
        b = None
        if self.bias is not None:
            b = torch.cat([self.bias.detach().new_zeros((self.k - 1) * cout), self.bias.detach()])
        return w.clone(), b

    def padded(self, x: torch.Tensor, t: int, tail: torch.Tensor | None = None) -> torch.Tensor:
        """The conv on ``x`` that already carries its k-1 frames of history in front (``t`` outputs).

        ``tail``: ``x``'s last k-1 frames as a tensor of their own (a streaming step's next state); the last tap
        is then read from it, so a runtime that orders nodes by what the outputs need computes the state before
        the conv and frees ``x`` early (ONNX Runtime otherwise keeps every ``x`` alive until the states are cut).
        """
        taps = [x[j : j + t] for j in range(self.k)]
        if tail is not None and self.k > 1:
            k1 = self.k - 1
            taps[-1] = tail[k1 - t :] if t <= k1 else torch.cat([x[k1:t], tail], dim=0)
        if self.taps is None:
            if self.k > 1:
                x = torch.cat(taps, dim=1)
            return F.conv2d(x, self.weight, self.bias, padding=self.pad)
        y = F.conv2d(taps[0], self.taps[0], self.bias, padding=self.pad, groups=self.groups)
        for j in range(1, self.k):
            y = y + F.conv2d(taps[j], self.taps[j], None, padding=self.pad, groups=self.groups)
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


def lower(decoder, options: LoweringOptions | None = None, **kwargs) -> nn.Module:
    """The rank-4 phone graph of ``decoder`` (a :class:`~turbo_vaed.decoders.Decoder` or a module of a
    registered architecture) with the same numbers. ``kwargs`` are :class:`LoweringOptions` fields."""
    from turbo_vaed.decoders import as_decoder

    opts = options if options is not None else LoweringOptions(**kwargs)
    return as_decoder(decoder).lower(opts)


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
