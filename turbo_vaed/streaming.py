"""Streaming decode: a video of any length, chunk by chunk, in constant memory, with exact results.

One driver for every runtime: it feeds a streaming step (PyTorch, or an exported artifact through its
runner) the latents of each chunk, its control inputs and the state tensors the previous call returned, and
pads the last chunk with its last latent frame. Two protocols (see ``StreamStep``): the student's
``first``/``trim`` flags (drop the duplicate leading frames of a trimming first chunk; causal, so later
frames never change earlier ones), and ``start``/``remaining`` steps that say which rows are frames (a
``valid`` output), need flush calls after the end when their output lags (non-causal decoders) and may
restart at given latent frames (``restart_at``). The manifest's ``stream`` section holds everything an app needs
to do the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from turbo_vaed.errors import UserError

if TYPE_CHECKING:  # the PyTorch stream only: an exported artifact streams with numpy and its runtime
    import torch

    from turbo_vaed.decoders import Decoder

Call = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


# the control inputs a streaming step may take, by name, with what an app feeds (the manifest's ``flags``)
CONTROL_DOCS = {
    "first": "1.0 on the first chunk of a video (or of a restart segment), whose states must be their init (zeros); "
             "else 0.0",
    "trim": "1.0 on the first chunk when the full decode of the whole video (segment) trims (turbovaed decode: the "
            "family's frame rule at the video's latent length), else 0.0",
    "start": "latent index of the chunk's first frame within the video (segment): chunk index * "
             "chunk_latent_frames",
    "remaining": "latent frames of the video (segment) from the chunk's first one on: total - start (<= 0 on the "
                 "flush calls)",
}
CONTROLS = tuple(CONTROL_DOCS)


def stream_spec(step, io_dtype: str | None = None) -> dict:
    """The loop fields of the manifest's ``stream`` section for a :class:`~turbo_vaed.decoders.base.StreamStep`
    (``io_dtype``: also each state's dtype, as an exported artifact's manifest gives it)."""
    dtype = {"dtype": io_dtype} if io_dtype else {}
    return {"chunk_latent_frames": step.latent_frames, "frames_per_chunk": step.frames_per_chunk,
            "first_chunk_skip": step.first_chunk_skip, "controls": list(step.controls),
            "valid_output": "valid" if step.valid_output else None, "flush_chunks": step.flush_chunks,
            "restart_at": list(step.restart_at),
            "states": [{"name": n, "shape": list(s), **dtype, "init": "zeros", "next": f"{n}_next"}
                       for n, s in step.states]}


def banded_options(options, decoder: Decoder, bands: int, stages: int | None = None, tail_frames: int = 0):
    """``options`` with ``stream_bands=bands`` (and ``stream_band_stages=stages``, ``stream_tail_frames=
    tail_frames``), for an architecture whose streaming step can split its high-resolution tail."""
    from dataclasses import replace

    if bands < 1:
        raise UserError(f"--bands must be >= 1, got {bands}")
    if tail_frames < 0:
        raise UserError(f"--tail-frames must be >= 0 (0: the whole tail at once), got {tail_frames}: fix "
                        "--tail-frames")
    arch = decoder.arch
    if (bands > 1 or tail_frames) and not (arch.stream_bands or arch.stream_tail_frames):
        raise UserError(f"the {arch.name} streaming step runs whole frames only: drop --bands and --tail-frames "
                        "(the project's student splits its high-resolution tail in bands, TAEHV frame by frame)")
    if (bands > 1 or stages is not None) and not arch.stream_bands:
        raise UserError(f"the {arch.name} streaming step has no bands of rows: drop --bands and --band-stages and "
                        "split its full-resolution tail with --tail-frames N instead")
    if tail_frames and not arch.stream_tail_frames:
        raise UserError(f"the {arch.name} streaming step cannot run its tail a few frames at a time: drop "
                        "--tail-frames")
    if stages is not None and stages < 1:
        raise UserError(f"--band-stages must be >= 1, got {stages}")
    return replace(options, stream_bands=bands, stream_tail_frames=tail_frames,
                   stream_band_stages=options.stream_band_stages if stages is None else stages)


def _controls(spec: dict) -> list[str]:
    names = list(spec.get("controls") or ("first", "trim"))
    bad = [n for n in names if n not in CONTROLS]
    if bad:
        raise UserError(f"stream control input '{bad[0]}' is unknown (known: {', '.join(CONTROLS)}): re-export "
                        "the artifact with this turbovaed")
    return names


def segments(total: int, restart_at) -> list[tuple[int, int]]:
    """Latent-frame ranges decoded as independent videos: cut at each index of ``restart_at`` below ``total``."""
    cuts = [0, *sorted(int(i) for i in (restart_at or ()) if 0 < int(i) < total), total]
    return [(a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def run_stream(call: Call, spec: dict, latents: np.ndarray,
               trims: bool | Callable[[int], bool]) -> Iterator[np.ndarray]:
    """Yield frame chunks ``[n, 3, H, W]`` for latents ``[T, C, h, w]``.

    ``trims``: whether the full decode of a video of that many latent frames trims its first frames (a bool for
    the whole video, or a function of a segment's latent length).
    """
    k = int(spec["chunk_latent_frames"])
    names = _controls(spec)
    valid = spec.get("valid_output")
    flush = int(spec.get("flush_chunks") or 0)
    if flush and not valid:
        raise UserError("stream.flush_chunks needs a valid_output (which rows of a flush call are frames): "
                        "re-export the artifact with this turbovaed")
    per = int(spec["frames_per_chunk"]) // k
    trims_of = trims if callable(trims) else (lambda _t: bool(trims))
    for a, b in segments(latents.shape[0], spec.get("restart_at")):
        seg = latents[a:b]
        total = seg.shape[0]
        seg_trims = trims_of(total)
        states = {s["name"]: np.zeros(s["shape"], np.float32) for s in spec["states"]}
        n_real = -(-total // k)
        part = seg[:k]
        for c in range(n_real + flush):
            i = c * k
            if c < n_real:
                part = seg[i : i + k]
                n = part.shape[0]
                if n < k:
                    part = np.concatenate([part, np.repeat(part[-1:], k - n, axis=0)])
            else:
                n = 0  # a flush call: the last chunk again; only its valid rows count
            first = 1.0 if c == 0 else 0.0
            values = {"first": first, "trim": first * (1.0 if seg_trims else 0.0), "start": float(i),
                      "remaining": float(total - i)}
            feeds = {nm: np.full((1, 1, 1, 1), values[nm], np.float32) for nm in names}
            outs = call({"latents": np.ascontiguousarray(part, np.float32), **feeds, **states})
            if valid:
                frames = outs[0][outs[1].reshape(-1) > 0.5]
                rest = outs[2:]
            else:
                frames = outs[0][: n * per]
                if c == 0 and seg_trims:
                    frames = frames[int(spec["first_chunk_skip"]):]
                rest = outs[1:]
            states = {s["name"]: o for s, o in zip(spec["states"], rest, strict=True)}
            if frames.shape[0]:
                yield frames


def torch_call(step_module: torch.nn.Module, spec: dict) -> Call:
    """A :data:`Call` running a PyTorch streaming step."""
    import torch

    names = ["latents", *_controls(spec), *(s["name"] for s in spec["states"])]

    def call(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            outs = step_module(*(torch.from_numpy(feeds[n]) for n in names))
        return [o.float().numpy() for o in outs]

    return call


def stream_decoder(decoder: Decoder, z: torch.Tensor, chunk: int = 2, bands: int = 1,
                   tail_frames: int = 0) -> Iterator[np.ndarray]:
    """Stream ``z`` (1, C, T, h, w) through ``decoder``'s PyTorch streaming step (``bands``, ``tail_frames``: see
    :class:`~turbo_vaed.lowering.LoweringOptions`)."""
    from turbo_vaed.lowering import LoweringOptions

    if chunk < 1:
        raise UserError(f"--chunk must be >= 1, got {chunk}")
    opts = banded_options(LoweringOptions(), decoder, bands, tail_frames=tail_frames)
    step = decoder.arch.stream_step(decoder.module, opts, chunk, z.shape[3], z.shape[4])
    spec = stream_spec(step)
    x = z[0].transpose(0, 1).contiguous().float().numpy()
    yield from run_stream(torch_call(step.module, spec), spec, x,
                          lambda t: decoder.arch.trims(decoder.config, t))


def stream_artifact(runner, z: torch.Tensor | np.ndarray,
                    trims: bool | Callable[[int], bool]) -> Iterator[np.ndarray]:
    """Stream ``z`` (1, C, T, h, w; a tensor or an array) through an exported streaming artifact (its runner)."""
    spec = runner.manifest.get("stream")
    if not spec:
        raise UserError(f"{runner.artifact.name} is a whole-chunk artifact: export it with --stream to decode "
                        "a video chunk by chunk")
    want = runner.manifest["inputs"][0]["shape"]
    if list(z.shape[1:2]) + list(z.shape[3:]) != [want[1], want[2], want[3]]:
        raise UserError(f"latents {list(z.shape)} do not fit {runner.artifact.name} (chunk [T, C, h, w] = "
                        f"{want}): pass latents of that size or export for it")
    z0 = z[0].float().numpy() if hasattr(z, "detach") else np.asarray(z[0], dtype=np.float32)
    x = np.ascontiguousarray(z0.swapaxes(0, 1))
    yield from run_stream(runner.run_all, spec, x, trims)
