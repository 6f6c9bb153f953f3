"""The project's own Turbo-VAED student as a decoder architecture (``student``): config, build, load, lowering.

The model itself is :mod:`turbo_vaed.decoders.student_model`; this module is what the rest of the toolchain
sees: its config type (``models/<family>.json``), strict loading, frame rule (the teacher family's own),
latent convention (``normalised``: diffusion-space latents) and the rank-4 lowering:

- Conv3d -> Conv2d with frames in the batch axis (:class:`turbo_vaed.lowering.TemporalConv`);
- temporal pixel shuffle -> a free reshape, the upsampling conv's output channels permuted frame-major once;
- spatial shuffle -> depth_to_space or rank-4 reshape/permute; RMSNorm -> fp16-safe 1x1-conv form.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from turbo_vaed.config import StudentConfig
from turbo_vaed.decoders.base import Architecture
from turbo_vaed.decoders.student_model import TurboVAEDDecoder, trims
from turbo_vaed.errors import UserError
from turbo_vaed.lowering import (
    LoweringOptions,
    MobileRMSNorm,
    MobileSeparable,
    TemporalConv,
    lower_conv,
    silu,
    spatial_shuffle,
)


def permute_out_channels(conv: nn.Module, perm: torch.Tensor) -> None:
    """Reorder a lowered conv's output channels in place (``out_new[i] = out_old[perm[i]]``)."""
    last = conv.pointwise if isinstance(conv, MobileSeparable) else conv
    with torch.no_grad():
        last.weight.data = last.weight.data[perm].clone()
        if last.bias is not None:
            last.bias.data = last.bias.data[perm].clone()


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
        self.rt, self.rs, self.shuffle, self.frame_rule = src.rt, src.rs, shuffle, src.frame_rule
        self.conv = lower_conv(src.conv)
        last = self.conv.pointwise if isinstance(self.conv, MobileSeparable) else self.conv
        cup = last.weight.shape[0]
        self.cout = cup // (self.rt * self.rs * self.rs)
        permute_out_channels(self.conv, frame_major_perm(self.cout, self.rt, self.rs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        t, c, h, w = y.shape
        if self.rt > 1:
            drop = self.rt - 1 if trims(self.frame_rule, t) else 0
            y = y.reshape(t * self.rt, c // self.rt, h, w)[drop:]
        return spatial_shuffle(y, self.rs, self.shuffle)


class MobileDecoder(nn.Module):
    """Rank-4 Turbo-VAED decoder: latents ``[T, C, h, w]`` -> frames ``[F(T), 3, H, W]`` in [-1, 1]."""

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



class StudentArchitecture(Architecture):
    """The Turbo-VAED student of this project (``models/<family>.json`` configs)."""

    name = "student"
    stream_bands = True
    stream_tail_frames = True
    description = "turbovaed's Turbo-VAED student (3D depthwise-separable convs, decoupled 3D pixel shuffle)"

    def config_from_dict(self, d: dict) -> StudentConfig:
        return StudentConfig.from_dict(d)

    def config_to_dict(self, cfg: StudentConfig) -> dict:
        return cfg.to_dict()

    def family(self, cfg: StudentConfig) -> str:
        return cfg.family

    def build(self, cfg: StudentConfig) -> nn.Module:
        return TurboVAEDDecoder(cfg).eval()

    def frames_out(self, cfg: StudentConfig, latent_frames: int) -> int:
        return cfg.fam.frames_out(latent_frames)

    def latent_convention(self, cfg: Any) -> str:
        return "normalised"

    def lower(self, module: nn.Module, options: LoweringOptions) -> nn.Module:
        if not isinstance(module, TurboVAEDDecoder):
            raise TypeError(f"the student architecture lowers a TurboVAEDDecoder, got {type(module).__name__}")
        return MobileDecoder(module, options)

    def owns(self, module: nn.Module) -> bool:
        return isinstance(module, TurboVAEDDecoder)

    def stream_step(self, module: nn.Module, options: LoweringOptions, latent_frames: int, h: int, w: int):
        from turbo_vaed.decoders.base import StreamStep, check_tail_frames

        frames = latent_frames * module.cfg.fam.temporal_factor
        check_tail_frames(options.stream_tail_frames, latent_frames, frames)
        mobile = MobileDecoder(module, options).float().eval()
        step = StudentStep(mobile, latent_frames, options.stream_bands, options.stream_band_stages,
                           options.stream_tail_frames).eval()
        rows = step.tail_rows(h)
        if options.stream_bands > rows:
            raise UserError(f"--bands {options.stream_bands} is more than the {rows} rows the high-resolution tail "
                            f"starts from at this size: use at most {rows} bands")
        names, shapes = zip(*state_layout(step, latent_frames, h, w), strict=True)
        notes = ["causal temporal convs: each keeps its last k-1 input frames"]
        summed = [m for m in step.mobile.modules() if keeps_partial_sums(m)]
        if summed:
            notes.append(f"{len(summed)} dense temporal conv(s) with fewer outputs than inputs keep the partial sums "
                         "of their next k-1 outputs instead (smaller state; exact)")
        if options.stream_bands > 1:
            notes.append(f"high-resolution tail ({step.stages} stage(s)) in {options.stream_bands} bands of rows "
                         f"({step.reach} rows of context each side; exact); its states are held band by band "
                         "(stateN_bandJ)")
        if options.stream_tail_frames:
            notes.append(f"high-resolution tail ({step.stages} stage(s), after the last temporal upsample) "
                         f"{options.stream_tail_frames} frame(s) at a time, its states carried from group to group "
                         "(exact; nothing recomputed)")
        return StreamStep(step, latent_frames, frames, list(zip(names, shapes, strict=True)),
                          step.first_chunk_skip(latent_frames), notes)


ARCH = StudentArchitecture()


# ---------------------------------------------------------------- streaming (chunk by chunk, exact)


def keeps_partial_sums(m: nn.Module) -> bool:
    """Whether ``m`` is a temporal conv whose streaming state is the partial sums of its next outputs (its stacked
    taps registered by :class:`StudentStep` under ``stream_partial_sums``)."""
    return isinstance(m, TemporalConv) and hasattr(m, "sum_weight")


class StreamState:
    """Threads the temporal state of one step through a forward pass, in a fixed traversal order.

    Every causal temporal conv with k taps keeps its last k-1 input frames (or the partial sums of its next k-1
    outputs, :meth:`partial`). ``first`` (a [1, 1, 1, 1] tensor,
    1.0 on the first chunk, else 0.0) makes the padding replicate the chunk's first frame, as the full decode
    does, given the states are their initial value (zeros, the manifest's ``init``) on that chunk; ``trim`` (1.0 on
    a first chunk whose decode trims) overwrites each temporal upsample's leading frames with the first kept one, so
    that the kept frames are exactly the full decode's (the app drops the manifest's ``first_chunk_skip`` frames of
    the first chunk).
    """

    def __init__(self, states: list[torch.Tensor], first: torch.Tensor | None, trim: torch.Tensor,
                 state_taps: bool = False) -> None:
        self.inp, self.out, self.first, self.trim = list(states), [], first, trim
        self.state_taps = state_taps  # read each conv's last tap from its next state (LoweringOptions)
        self.skip = 0  # leading duplicate frames so far (first chunk)

    @staticmethod
    def state_shape(tc: TemporalConv, x: torch.Tensor) -> tuple[int, ...]:
        """Shape of ``tc``'s state for input ``x``: its last k-1 input frames, or the partial sums of its next k-1
        outputs where the step keeps those (:meth:`partial`)."""
        if keeps_partial_sums(tc):
            return (tc.k - 1, tc.sum_weight.shape[0] // tc.k, *x.shape[2:])
        return (tc.k - 1, *x.shape[1:])

    def conv(self, tc: TemporalConv, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[0]
        if tc.k == 1:
            return tc.padded(x, t)
        if keeps_partial_sums(tc):
            return self.partial(tc, x)
        s = self.inp.pop(0)
        # first chunk: every history frame is the first frame. The state is its initial value (zeros) then, so
        # ``s + first * x[:1]`` is that frame broadcast (not a cat of one tensor with itself, which XNNPACK does not
        # take), one frame's multiply and one add instead of a blend over every history frame (720p: about 8% of
        # a call); ``first`` None: a later group of frames of the same call, real history
        xp = torch.cat([s if self.first is None else s + self.first * x[:1], x], dim=0)
        nxt = xp[xp.shape[0] - (tc.k - 1):]
        self.out.append(nxt)
        return tc.padded(xp, t, tail=nxt if self.state_taps else None)

    def partial(self, tc: TemporalConv, x: torch.Tensor) -> torch.Tensor:
        """``tc`` over a chunk with a partial-sum state (``StudentStep`` registers ``sum_weight``/``sum_bias``, see
        :meth:`TemporalConv.partial_sum_taps`).

        ``a[j][f]`` is tap j's contribution of frame f. Position u of the chunk's outputs followed by the next
        state's k-1 entries sums ``a[j][u + j - (k-1)]`` over the taps whose frame is in the chunk, plus entry u of
        the state for u < k-1; the bias rides on the last tap, which only feeds outputs. On the first chunk the state
        is zeros and the history is the first frame repeated: entry m gets ``sum(a[j][0] for j <= k-2-m)``.
        """
        k, k1, t = tc.k, tc.k - 1, x.shape[0]
        c = tc.sum_weight.shape[0] // k
        y = F.conv2d(x, tc.sum_weight, tc.sum_bias, padding=tc.pad)
        a = [y[:, j * c:(j + 1) * c] for j in range(k)]
        p = self.inp.pop(0)
        if self.first is not None:
            rep = [sum((a[j][:1] for j in range(1, k1 - m)), a[0][:1]) for m in range(k1)]
            p = p + self.first * (torch.cat(rep, dim=0) if k1 > 1 else rep[0])

        def at(u: int) -> torch.Tensor:  # position u, one frame
            terms = [a[j][u + j - k1:u + j - k1 + 1] for j in range(k) if 0 <= u + j - k1 < t]
            if u < k1:
                terms.append(p[u:u + 1])
            return sum(terms[1:], terms[0])

        def span(u0: int, u1: int) -> list[torch.Tensor]:  # positions [u0, u1); every tap inside: one slice each
            mid0, mid1 = max(u0, k1), min(u1, t)
            if mid1 - mid0 < 2:
                return [at(u) for u in range(u0, u1)]
            mid = sum((a[j][mid0 + j - k1:mid1 + j - k1] for j in range(1, k)), a[0][mid0 - k1:mid1 - k1])
            return [*(at(u) for u in range(u0, mid0)), mid, *(at(u) for u in range(mid1, u1))]

        # outputs and next state cut from one concatenation: the next state then depends on every read of the old
        # one, so a runtime that writes it over the state input (ONNX Runtime, bound in place) reads first
        e = torch.cat(span(0, t + k1), dim=0)
        self.out.append(e[t:])
        return e[:t]

    def any_conv(self, m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if isinstance(m, MobileSeparable):
            return m.pointwise(self.conv(m.depthwise, x))
        return self.conv(m, x)


def state_shapes(mobile: MobileDecoder, latent_frames: int, h: int, w: int,
                 tail_from: int) -> tuple[list[tuple[int, ...]], int]:
    """Shapes of the state tensors of a chunk of ``latent_frames`` latents of ``h`` x ``w``, traversal order, and
    how many of them come before a tail that starts at layer ``tail_from`` (:attr:`StudentStep.tail_from`)."""
    shapes: list[tuple[int, int, int, int]] = []
    head: list[int] = []

    class _Probe(StreamState):
        def conv(self, tc, x):
            if tc.k > 1:
                shapes.append(self.state_shape(tc, x))
                self.inp.insert(0, torch.zeros(shapes[-1], device=x.device))
            return super().conv(tc, x)

    class _ProbeStep(StudentStep):
        def _tail(self, x, st):
            head.append(len(shapes))
            return super()._tail(x, st)

    import copy

    c = mobile.cfg.fam.latent_channels
    meta = copy.deepcopy(mobile).to("meta")
    with torch.no_grad():
        one = torch.ones(1, 1, 1, 1, device="meta")
        probe = _ProbeStep(meta)
        probe.tail_from = tail_from  # the step's tail, run whole: the same states in the same order
        probe.run(torch.zeros(latent_frames, c, h, w, device="meta"), _Probe([], one, one))
    return shapes, head[0]


def state_layout(step: StudentStep, latent_frames: int, h: int, w: int) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of a step's state inputs, in its input order.

    Whole-frame states are ``stateN``; a banded step holds each tail state as one tensor per band of rows,
    ``stateN_bandJ`` (state-major), as :meth:`StudentStep._banded_tail` reads them.
    """
    shapes, n_head = state_shapes(step.mobile, latent_frames, h, w, step.tail_from)
    if step.bands == 1:
        return [(f"state{i}", s) for i, s in enumerate(shapes)]
    rows = step.tail_rows(h)
    cuts = step.band_cuts(rows)
    out = [(f"state{i}", s) for i, s in enumerate(shapes[:n_head])]
    for i, (k1, c, r, ww) in enumerate(shapes[n_head:], start=n_head):
        out += [(f"state{i}_band{j}", (k1, c, (b - a) * (r // rows), ww))
                for j, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False))]
    return out


def _pad_rows(conv: nn.Module) -> int:
    return (conv.depthwise if isinstance(conv, MobileSeparable) else conv).pad[0]


def tail_reach(mobile: MobileDecoder, start: int) -> int:
    """Rows of context (at the resolution of ``mobile.layers[start]``'s input) one output row of the layers from
    ``start`` on, ``norm_out`` and ``conv_out`` depends on, each side."""
    r = _pad_rows(mobile.conv_out)
    for layer in reversed(list(mobile.layers)[start:]):
        if isinstance(layer, MobileResBlock):
            r += _pad_rows(layer.conv1) + _pad_rows(layer.conv2)
        else:
            r = -(-r // layer.rs) + _pad_rows(layer.conv)
    return r


class StudentStep(nn.Module):
    """One streaming step of the lowered student: ``(latents [k, C, h, w], first, trim, *states)`` ->
    ``(frames [rt*k, 3, H, W], *next states)``. Same numbers as the full decode (see :class:`StreamState`).

    ``bands`` > 1 runs the high-resolution tail (the ``stages`` highest-resolution stages, from the stages-th
    last spatial upsample on, where activations are largest) in that many bands of rows, one after the other, each
    with :func:`tail_reach` rows of context: the same numbers, with the tail's activations about ``bands`` times
    smaller. ``tail_frames`` > 0 runs the tail that many frames at a time (each group in bands, if ``bands`` > 1),
    each temporal conv's state carried from group to group; the tail then starts after the last temporal upsample
    at the latest.
    """

    def __init__(self, mobile: MobileDecoder, latent_frames: int | None = None, bands: int = 1,
                 stages: int = LoweringOptions.stream_band_stages, tail_frames: int = 0) -> None:
        super().__init__()
        self.mobile = mobile
        self.bands, self.stages, self.tail_frames = bands, stages, tail_frames
        ups = [i for i, layer in enumerate(mobile.layers) if isinstance(layer, MobileUpsample) and layer.rs > 1]
        # the tail: the ``stages`` highest-resolution stages (from the stages-th last spatial upsample on), which
        # hold most of the activations (README "Streaming" measures 1 and 2 stages at 720p)
        self.tail_from = ups[-stages] if len(ups) >= stages else (ups[0] if ups else len(mobile.layers))
        if tail_frames:  # groups of frames: only where frames map one to one (no temporal upsample in the tail)
            temporal = [i for i, layer in enumerate(mobile.layers) if isinstance(layer, MobileUpsample)
                        and layer.rt > 1]
            self.tail_from = max([self.tail_from, *(i + 1 for i in temporal[-1:])])
        self.reach = tail_reach(mobile, self.tail_from)
        if mobile.options.stream_partial_sums:  # states as partial sums where smaller (LoweringOptions)
            for m in mobile.modules():
                taps = m.partial_sum_taps() if isinstance(m, TemporalConv) and not keeps_partial_sums(m) else None
                if taps is not None:
                    m.register_buffer("sum_weight", taps[0])
                    m.register_buffer("sum_bias", taps[1])
        self._masks: dict[int, str] = {}
        if latent_frames is not None:  # constant masks for export (no zeros/full/index_put op in the graph)
            t, skip = latent_frames, 0
            for i, layer in enumerate(mobile.layers):
                if isinstance(layer, MobileUpsample) and layer.rt > 1:
                    t, skip = t * layer.rt, skip * layer.rt + layer.rt - 1
                    mask = torch.zeros(t, 1, 1, 1)
                    mask[:skip] = 1.0
                    self.register_buffer(f"mask{i}", mask)
                    self._masks[i] = f"mask{i}"

    def tail_rows(self, h: int) -> int:
        """Rows of the activation the (banded) tail starts from, for latents of ``h`` rows."""
        for layer in list(self.mobile.layers)[:self.tail_from]:
            h *= layer.rs if isinstance(layer, MobileUpsample) else 1
        return h

    def _mask(self, i: int, n: int, p: int, like: torch.Tensor) -> torch.Tensor:
        if i in self._masks and getattr(self, self._masks[i]).shape[0] == n:
            return getattr(self, self._masks[i])
        mask = torch.zeros(n, 1, 1, 1, device=like.device, dtype=like.dtype)
        mask[:p] = 1.0
        return mask

    def _layer(self, i: int, layer: nn.Module, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        if isinstance(layer, MobileResBlock):
            h = st.any_conv(layer.conv1, silu(layer.norm1(x)))
            h = st.any_conv(layer.conv2, silu(layer.norm2(h)))
            return x + h
        # MobileUpsample: all rt*t frames, the leading ones overwritten on a trimming first chunk
        y = st.any_conv(layer.conv, x)
        t, c, hh, ww = y.shape
        if layer.rt > 1:
            y = y.reshape(t * layer.rt, c // layer.rt, hh, ww)
            p = st.skip * layer.rt + layer.rt - 1
            if p > 0:
                keep = y[p : p + 1]
                y = y + (st.trim * self._mask(i, y.shape[0], p, y)) * (keep - y)
            st.skip = p
        return spatial_shuffle(y, layer.rs, layer.shuffle)

    def _tail(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        m = self.mobile
        for i in range(self.tail_from, len(m.layers)):
            x = self._layer(i, m.layers[i], x, st)
        x = st.conv(m.conv_out, silu(m.norm_out(x)))
        return torch.clamp(spatial_shuffle(x, m.patch_size, m.shuffle), -1.0, 1.0)

    def band_cuts(self, rows: int) -> list[int]:
        """Row boundaries of the bands of an activation of ``rows`` rows (the tail's input)."""
        return [round(j * rows / self.bands) for j in range(self.bands + 1)]

    def _banded_tail(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        """The tail band by band: rows ``[a, b)`` read ``reach`` rows of context each side.

        Every tail state is held as one tensor per band (its rows ``[a, b)``, state-major: state i of band j is
        ``st.inp[i * bands + j]``), so each band's next states are outputs of their own, bound in place with no
        stitching copy. A band's history with context is a concatenation: the rows above come from the previous
        band's history (a copy: so every read of a band's state happens before that band's next state is
        written, which makes binding outputs over inputs safe), its own state, and the rows below from the next
        bands' states. Frames are cropped to the band and stitched; all equals the whole-frame tail.
        """
        n = len(st.inp) // self.bands
        states = [st.inp[i * self.bands:(i + 1) * self.bands] for i in range(n)]
        st.inp = []
        rows = x.shape[2]
        cuts = self.band_cuts(rows)
        scale = [sum(t.shape[2] for t in band) // rows for band in states]
        frames: list[torch.Tensor] = []
        nxt: list[list[torch.Tensor]] = [[] for _ in range(n)]
        skip, sub = st.skip, st
        prev: list[torch.Tensor] = []
        p0, edge = 0, None
        for j, (a, b) in enumerate(zip(cuts, cuts[1:], strict=False)):
            s0, s1 = max(0, a - self.reach), min(rows, b + self.reach)
            hist = []
            for i, k in enumerate(scale):
                parts = [prev[i][:, :, (s0 - p0) * k:(a - p0) * k]] if a > s0 else []
                parts.append(states[i][j])
                for jj in range(j + 1, self.bands):  # rows below: from the next bands' states
                    lo, hi = max(b, cuts[jj]), min(s1, cuts[jj + 1])
                    if lo >= hi:
                        break
                    parts.append(states[i][jj][:, :, (lo - cuts[jj]) * k:(hi - cuts[jj]) * k])
                hist.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
            sub = StreamState(hist, st.first, st.trim, st.state_taps)
            sub.skip = skip
            xin = x[:, :, s0:s1]
            if edge is not None:  # this band after the previous one's outputs
                xin = xin + edge
            y = self._tail(xin, sub)
            f = y.shape[2] // (s1 - s0)
            frames.append(y[:, :, (a - s0) * f:(b - s0) * f])
            for i, (o, k) in enumerate(zip(sub.out, scale, strict=True)):
                nxt[i].append(o[:, :, (a - s0) * k:(b - s0) * k])
            if self.mobile.options.stream_band_order:  # zero-weighted: one element of each of the band's outputs
                edge = sum(t[:1, :1, :1, :1] for t in [frames[-1], *(per_state[-1] for per_state in nxt)]) * 0.0
            prev, p0 = hist, s0
        st.skip = sub.skip
        st.out.extend(t for per_state in nxt for t in per_state)
        return torch.cat(frames, dim=2)

    def _grouped_tail(self, x: torch.Tensor, st: StreamState) -> torch.Tensor:
        """The (banded) tail ``tail_frames`` frames at a time: each group reads the states the previous group
        wrote, as a chunk reads the previous chunk's, so all equals the tail over every frame at once."""
        tail = self._banded_tail if self.bands > 1 else self._tail
        states, outs, edge = st.inp, [], None
        st.inp = []
        for a in range(0, x.shape[0], self.tail_frames):
            sub = StreamState(states, st.first if a == 0 else None, st.trim, st.state_taps)
            sub.skip = st.skip
            xin = x[a:a + self.tail_frames]
            outs.append(tail(xin if edge is None else xin + edge, sub))
            states = sub.out
            if self.mobile.options.stream_band_order:  # zero-weighted: this group after the previous one
                edge = sum(t[:1, :1, :1, :1] for t in [outs[-1], *states]) * 0.0
        st.out.extend(states)
        return torch.cat(outs, dim=0) if len(outs) > 1 else outs[0]

    def run(self, z: torch.Tensor, st: StreamState) -> torch.Tensor:
        m = self.mobile
        x = st.conv(m.conv_in, z)
        for i in range(self.tail_from):
            x = self._layer(i, m.layers[i], x, st)
        if self.tail_frames:
            return self._grouped_tail(x, st)
        if self.bands > 1:
            return self._banded_tail(x, st)
        return self._tail(x, st)

    def forward(self, z: torch.Tensor, first: torch.Tensor, trim: torch.Tensor, *states: torch.Tensor):
        st = StreamState(list(states), first, trim, self.mobile.options.stream_state_taps)
        frames = self.run(z, st)
        return (frames, *st.out)

    def first_chunk_skip(self, latent_frames: int) -> int:
        """Leading frames of the first (trimming) chunk that duplicate the first kept frame."""
        skip = 0
        for layer in self.mobile.layers:
            if isinstance(layer, MobileUpsample) and layer.rt > 1:
                skip = skip * layer.rt + layer.rt - 1
        return skip
