"""Exact streaming of temporal layers, causal or not: a chunk's place in time, its carried frames, its padding.

A streaming step decodes chunk ``i`` of ``k`` latent frames in one static rank-4 graph. It gets two control
inputs, ``start`` (the latent index of the chunk's first frame, ``i*k``) and ``remaining`` (latent frames of
the video from there on, ``T - i*k``; <= 0 for the flush calls after the end), both ``[1, 1, 1, 1]``.
``remaining`` rather than ``T`` keeps the arithmetic exact in fp16 for videos of any length: only small
numbers decide anything near either end.

Every tensor of the walk has a :class:`Clock` (static, Python ints): its row ``p`` is frame
``start*rate - off + p`` of a sequence of ``T*rate - drop`` frames. A temporal conv concatenates the frames it
carried from the last call with the chunk, then replaces the rows that lie before the first frame or after the
last one exactly as the full decode pads there (a copy of the edge frame, or zeros). A non-causal conv
(``back`` > 0 frames of look-ahead) so emits its output ``back`` frames late: its clock's ``off`` grows, a
residual branch is delayed to match (:meth:`Timeline.delay`), and the app calls a few flush chunks after the
end. Which output rows are real frames is the step's ``valid`` output (:meth:`Timeline.valid`), so an app
needs no frame rule of its own.

Temporal upsampling (``s`` frames per input frame, the sequence's first ``d`` frames dropped) is
:meth:`Clock.up`. All masks are built from a ``ramp`` buffer ``[N, 1, 1, 1]`` = 0..N-1 with clamp/mul/add
only, so the graph exports to ONNX, ExecuTorch and Core ML alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Clock:
    """Where a chunk tensor's rows lie in time: row ``p`` is frame ``start*rate - off + p`` of ``T*rate - drop``."""

    rate: int = 1
    off: int = 0
    drop: int = 0

    def up(self, s: int, drop: int = 0) -> Clock:
        """After a temporal upsampling by ``s`` (row-major in time) whose sequence drops its first ``drop`` frames."""
        return Clock(self.rate * s, self.off * s + drop, self.drop * s + drop)

    def lagged(self, frames: int) -> Clock:
        """The same sequence, emitted ``frames`` rows later (a conv with ``frames`` of look-ahead)."""
        return Clock(self.rate, self.off + frames, self.drop)

    def tail(self, first: int) -> Clock:
        """The sub-sequence that starts at frame ``first`` of this one (its frame 0 is this one's ``first``)."""
        return Clock(self.rate, self.off + first, self.drop + first)


class Timeline:
    """The controls and carried state of one streaming call, threaded through a walk of the lowered decoder.

    ``states``: the carried tensors in walk order (each op that carries frames pops one and appends its next
    value to ``out``). With ``probe`` set, no state is popped: zeros of the right shape are made and their
    shapes recorded in ``probe`` (call the walk once on meta tensors to learn the state shapes).
    """

    def __init__(self, start: torch.Tensor, remaining: torch.Tensor, states: list[torch.Tensor], ramp: torch.Tensor,
                 one: torch.Tensor, probe: list[tuple[int, ...]] | None = None) -> None:
        self.start, self.remaining, self.ramp, self.one = start, remaining, ramp, one
        self.inp, self.out, self.probe = list(states), [], probe
        self.rows = 0  # most rows any mask needed (the ramp's length)
        self.lag = 0  # the output clock's ``off``: rows emitted before the video's first frame
        self.trim: torch.Tensor | None = None

    # ---- time of each row
    def times(self, clk: Clock, n: int, lead: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tau, tau - length)`` of ``n`` rows that begin ``lead`` frames before the clock's first row."""
        self.rows = max(self.rows, n)
        if n > self.ramp.shape[0]:
            raise ValueError(f"streaming ramp too short: {n} rows > {self.ramp.shape[0]}")
        p = self.ramp[:n] - float(clk.off + lead)
        tau = self.start * float(clk.rate) + p
        past_end = p + float(clk.drop) - self.remaining * float(clk.rate)
        return tau, past_end

    def valid(self, clk: Clock, n: int, skip: torch.Tensor | None = None) -> torch.Tensor:
        """``[n, 1, 1, 1]``: 1.0 for rows that are frames of the video, 0.0 before its start or after its end.

        ``skip`` (``[1, 1, 1, 1]``): the sequence's first ``skip`` frames are not kept either (a frame rule that
        trims depending on the video's length).
        """
        tau, past = self.times(clk, n)
        if skip is not None:
            tau = tau - skip
        return torch.clamp(tau + self.one, 0.0, 1.0) * torch.clamp(-past, 0.0, 1.0)

    def first_frame(self, clk: Clock, n: int) -> torch.Tensor:
        """``[n, 1, 1, 1]`` one-hot of the row holding the sequence's frame 0 (all zeros when none does)."""
        tau, _ = self.times(clk, n)
        return torch.clamp(self.one - tau * tau, 0.0, 1.0)

    # ---- carried frames
    def _state(self, like: torch.Tensor, frames: int) -> torch.Tensor:
        if self.probe is not None:
            self.probe.append((frames, *like.shape[1:]))
            return torch.zeros(frames, *like.shape[1:], dtype=like.dtype, device=like.device)
        return self.inp.pop(0)

    def history(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """``cat([the last `frames` rows carried from the previous call, x])``; carries the new last rows on."""
        xc = torch.cat([self._state(x, frames), x], dim=0)
        self.out.append(xc[xc.shape[0] - frames:])
        return xc

    def delay(self, x: torch.Tensor, clk: Clock, to: Clock) -> torch.Tensor:
        """``x`` emitted on clock ``to`` (later by ``to.off - clk.off`` rows): a residual meeting a lagged branch."""
        if (to.rate, to.drop) != (clk.rate, clk.drop) or to.off < clk.off:
            raise ValueError(f"cannot delay {clk} to {to}")
        d = to.off - clk.off
        if d == 0:
            return x
        return self.history(x, d)[: x.shape[0]]

    def pad(self, x: torch.Tensor, clk: Clock, front: int, back: int, mode: str) -> tuple[torch.Tensor, Clock]:
        """The rows a temporal conv with ``front``/``back`` frames of padding reads for this chunk, and the clock
        of its ``x.shape[0]`` output rows (later by ``back``).

        ``mode``: ``replicate`` (edge frames copied, as a causal/'same' replicate pad) or ``zeros``.
        """
        k1 = front + back
        if k1 == 0:
            return x, clk
        n = x.shape[0] + k1
        xc = self.history(x, k1)
        tau, past = self.times(clk, n, lead=k1)
        before = torch.clamp(-tau, 0.0, 1.0)
        if mode == "zeros":
            xf = xc * (self.one - before)
            if back:
                xf = xf * (self.one - torch.clamp(past + self.one, 0.0, 1.0))
        elif mode == "replicate":
            e0 = torch.clamp(self.one - tau * tau, 0.0, 1.0)
            xf = xc + before * (pick(xc, e0) - xc)
            if back:
                end = past + self.one  # 0 at the last frame
                e1 = torch.clamp(self.one - end * end, 0.0, 1.0)
                xf = xf + torch.clamp(end, 0.0, 1.0) * (pick(xc, e1) - xf)
        else:
            raise ValueError(f"unknown time padding mode {mode!r}")
        return xf, clk.lagged(back)

    def conv(self, m: nn.Module, x: torch.Tensor, clk: Clock, front: int, back: int,
             mode: str) -> tuple[torch.Tensor, Clock]:
        """A lowered temporal conv ``m`` (its ``from_padded(xp, t)``) on this chunk, padded as :meth:`pad` pads."""
        xp, out = self.pad(x, clk, front, back, mode)
        return m.from_padded(xp, x.shape[0]), out

    def emit(self, y: torch.Tensor, clk: Clock, skip: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The walk's result: the output rows and their ``valid`` mask (see :meth:`valid`); records the lag."""
        self.lag = clk.off
        return y, self.valid(clk, y.shape[0], skip)

    def override_first(self, y: torch.Tensor, clk: Clock, x: torch.Tensor, xclk: Clock) -> torch.Tensor:
        """``y`` with the row holding its sequence's frame 0 replaced by ``x``'s frame 0 (a first frame passed
        through unchanged while later ones are upsampled, as Wan's temporal upsampler does)."""
        x0 = pick(x, self.first_frame(xclk, x.shape[0]))
        return y + self.first_frame(clk, y.shape[0]) * (x0 - y)


def pick(x: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """``sum_p onehot[p] * x[p]`` as ``[1, C, H, W]``: one rank-3 ``bmm`` (XNNPACK delegates it; a reduction over
    the frame axis would fall back to ExecuTorch's portable kernels)."""
    n, c, h, w = x.shape
    return torch.bmm(onehot.reshape(1, 1, n), x.reshape(1, n, c * h * w)).reshape(1, c, h, w)


def ramp_for(rows: int) -> torch.Tensor:
    """The ``[rows, 1, 1, 1]`` buffer 0..rows-1 a streaming step builds its masks from."""
    return torch.arange(rows, dtype=torch.float32).reshape(rows, 1, 1, 1)


class ClockedStep(nn.Module):
    """Base of the streaming steps built on :class:`Timeline`:
    ``(latents [k, C, h, w], *controls, *states) -> (frames, valid, *next states)``.

    Subclasses implement :meth:`walk` (the lowered decoder's forward, with every temporal op through the
    timeline) and may add ``"trim"`` to :attr:`controls` (1.0 on a first chunk whose full decode trims; the walk
    reads it as ``tl.trim``).
    """

    controls: tuple[str, ...] = ("start", "remaining")

    def __init__(self, rows: int = 4096) -> None:
        super().__init__()
        self.register_buffer("ramp", ramp_for(rows))
        self.register_buffer("one", torch.ones(1, 1, 1, 1))

    def walk(self, z: torch.Tensor, tl: Timeline) -> tuple[torch.Tensor, torch.Tensor]:
        """``(frames [n, 3, H, W], valid [n, 1, 1, 1])`` of this chunk."""
        raise NotImplementedError

    def timeline(self, args: tuple[torch.Tensor, ...], probe: list | None = None) -> Timeline:
        ctl = dict(zip(self.controls, args, strict=False))
        tl = Timeline(ctl["start"], ctl["remaining"], list(args[len(self.controls):]), self.ramp, self.one, probe)
        tl.trim = ctl.get("trim")
        return tl

    def forward(self, z: torch.Tensor, *args: torch.Tensor):
        tl = self.timeline(args)
        frames, valid = self.walk(z, tl)
        return (frames, valid, *tl.out)


def clocked_stream_step(step: ClockedStep, z_shape: tuple[int, int, int, int], notes: list[str],
                        restart_at: tuple[int, ...] = ()):
    """The :class:`~turbo_vaed.decoders.base.StreamStep` of ``step`` for chunks ``z_shape`` = [k, C, h, w]:
    state shapes and output rows from one walk on meta tensors, the ramp cut to the rows it needs, and the
    flush calls the output's lag asks for."""
    import copy

    from turbo_vaed.decoders.base import StreamStep

    shapes: list[tuple[int, ...]] = []
    meta = copy.deepcopy(step).to("meta")
    one = torch.ones(1, 1, 1, 1, device="meta")
    tl = meta.timeline((one,) * len(step.controls), probe=shapes)
    with torch.no_grad():
        frames, _ = meta.walk(torch.zeros(*z_shape, device="meta"), tl)
    step.ramp = step.ramp[: max(tl.rows, 1)].clone()
    per_chunk = frames.shape[0]
    lag = tl.lag
    flush = -(-lag // per_chunk)
    notes = [*notes, f"output lags {lag} frames: {flush} flush call(s) after the last chunk" if lag else
             "causal: no output lag, no flush call"]
    return StreamStep(step.eval(), z_shape[0], per_chunk, [(f"state{i}", s) for i, s in enumerate(shapes)], 0,
                      notes, controls=step.controls, valid_output=True, flush_chunks=flush,
                      restart_at=tuple(restart_at))
