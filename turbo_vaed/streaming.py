"""Streaming decode: a video of any length, chunk by chunk, in constant memory, with exact results.

One driver for every runtime: it feeds a streaming step (PyTorch, or an exported artifact through its
runner) the latents of each chunk, the ``first``/``trim`` flags and the state tensors the previous call
returned, drops the duplicate leading frames of a trimming first chunk, and pads the last chunk with its last
latent frame (causal steps: later frames never change earlier ones). The manifest's ``stream`` section holds
everything an app needs to do the same.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch

from turbo_vaed.decoders import Decoder
from turbo_vaed.errors import UserError

Call = Callable[[dict[str, np.ndarray]], list[np.ndarray]]


def stream_spec(step) -> dict:
    """The manifest-style ``stream`` section of a :class:`~turbo_vaed.decoders.base.StreamStep`."""
    return {"chunk_latent_frames": step.latent_frames, "frames_per_chunk": step.frames_per_chunk,
            "first_chunk_skip": step.first_chunk_skip,
            "states": [{"name": n, "shape": list(s), "init": "zeros", "next": f"{n}_next"} for n, s in step.states]}


def run_stream(call: Call, spec: dict, latents: np.ndarray, trims: bool) -> Iterator[np.ndarray]:
    """Yield frame chunks ``[n, 3, H, W]`` for latents ``[T, C, h, w]``; ``trims``: the full decode trims."""
    k = int(spec["chunk_latent_frames"])
    per = int(spec["frames_per_chunk"]) // k
    states = {s["name"]: np.zeros(s["shape"], np.float32) for s in spec["states"]}
    total = latents.shape[0]
    for i in range(0, total, k):
        part = latents[i : i + k]
        n = part.shape[0]
        if n < k:
            part = np.concatenate([part, np.repeat(part[-1:], k - n, axis=0)])
        first = np.full((1, 1, 1, 1), 1.0 if i == 0 else 0.0, np.float32)
        trim = first * (1.0 if trims else 0.0)
        outs = call({"latents": np.ascontiguousarray(part, np.float32), "first": first, "trim": trim, **states})
        frames = outs[0][: n * per]
        if i == 0 and trims:
            frames = frames[int(spec["first_chunk_skip"]):]
        states = {s["name"]: o for s, o in zip(spec["states"], outs[1:], strict=True)}
        yield frames


def torch_call(step_module: torch.nn.Module, spec: dict) -> Call:
    """A :data:`Call` running a PyTorch streaming step."""
    names = ["latents", "first", "trim", *(s["name"] for s in spec["states"])]

    def call(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            outs = step_module(*(torch.from_numpy(feeds[n]) for n in names))
        return [o.float().numpy() for o in outs]

    return call


def stream_decoder(decoder: Decoder, z: torch.Tensor, chunk: int = 2) -> Iterator[np.ndarray]:
    """Stream ``z`` (1, C, T, h, w) through ``decoder``'s PyTorch streaming step."""
    from turbo_vaed.lowering import LoweringOptions

    if chunk < 1:
        raise UserError(f"--chunk must be >= 1, got {chunk}")
    step = decoder.arch.stream_step(decoder.module, LoweringOptions(), chunk, z.shape[3], z.shape[4])
    spec = stream_spec(step)
    x = z[0].transpose(0, 1).contiguous().float().numpy()
    yield from run_stream(torch_call(step.module, spec), spec, x, decoder.arch.trims(decoder.config, x.shape[0]))


def stream_artifact(runner, z: torch.Tensor, trims: bool) -> Iterator[np.ndarray]:
    """Stream ``z`` (1, C, T, h, w) through an exported streaming artifact (its runner)."""
    spec = runner.manifest.get("stream")
    if not spec:
        raise UserError(f"{runner.artifact.name} is a whole-chunk artifact: export it with --stream to decode "
                        "a video chunk by chunk")
    want = runner.manifest["inputs"][0]["shape"]
    if list(z.shape[1:2]) + list(z.shape[3:]) != [want[1], want[2], want[3]]:
        raise UserError(f"latents {list(z.shape)} do not fit {runner.artifact.name} (chunk [T, C, h, w] = "
                        f"{want}): pass latents of that size or export for it")
    x = z[0].transpose(0, 1).contiguous().float().numpy()
    yield from run_stream(runner.run_all, spec, x, trims)
