"""Reference parity: run an artifact in its runtime and compare with the PyTorch (5-D, fp32) reference.

The reference is rebuilt from the manifest alone (architecture, config, checkpoint label, weights hash), for
any decoder architecture. Figures: max abs error and PSNR (dB, frames mapped from the decoder's output range
to [0, 1]) between the two outputs; they are
written into the artifact's manifest (``parity``). Targets: fp32 artifacts max abs error <= 1e-3; fp16
artifacts PSNR >= 45 dB against the fp32 reference.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from turbo_vaed.decoders import Decoder, as_decoder
from turbo_vaed.errors import UserError
from turbo_vaed.exporters.manifest import now_iso, update_manifest
from turbo_vaed.lowering import from_mobile_layout
from turbo_vaed.metrics import max_abs_error, psnr

FP32_MAX_ABS = 1e-3
FP16_MIN_PSNR = 45.0
PSNR_CAP = 300.0  # identical outputs give inf; JSON has no inf


def reference_decoder(manifest: dict, checkpoint: str | Path | None = None) -> Decoder:
    """The PyTorch reference the artifact was exported from, checked against the manifest's weights hash.

    ``checkpoint`` overrides the manifest's recorded one (``builtin:<name>``, ``random`` or a path).
    """
    from turbo_vaed.decoders.store import rebuild
    from turbo_vaed.guards import check_decoder_finite

    if checkpoint is not None and not str(checkpoint).startswith("builtin:") and str(checkpoint) != "random" \
            and not Path(checkpoint).exists():
        raise UserError(f"checkpoint not found: {checkpoint}; pass --checkpoint PATH to the exported decoder")
    dec = rebuild(manifest["decoder"], checkpoint)
    check_decoder_finite(dec, "the reference cannot be computed: pass --checkpoint PATH to the decoder the "
                         "artifact was exported from")
    return dec


def fit_latents(z: torch.Tensor, shape: tuple[int, int, int, int], source: tuple[int, ...] | None = None
                ) -> tuple[torch.Tensor, str]:
    """Latents ``(1, C, T', h', w')`` cut (or tiled) to ``(1, C, T, h, w)``, with a note on what was done.

    ``source``: the (T, h, w) of the whole file when ``z`` is the part of it that was read.
    """
    t, c, h, w = shape
    if z.dim() != 5 or z.shape[0] != 1:
        raise UserError(f"latents must be (1, C, T, h, w), got {tuple(z.shape)}: use --layout ntchw for N T C H W")
    if z.shape[1] != c:
        raise UserError(f"latents have {z.shape[1]} channels, the artifact takes {c}: use latents of its family "
                        "(or --layout ntchw for N T C H W files)")
    src = tuple(z.shape[2:])
    reps = [math.ceil(n / s) for n, s in zip((t, h, w), src, strict=True)]
    if any(r > 1 for r in reps):
        z = z.repeat(1, 1, *reps)
    z = z[:, :, :t, :h, :w].contiguous()
    tiled = " (tiled)" if any(r > 1 for r in reps) else ""
    full = source or src
    note = f"first {t} of {full[0]} frames, {h}x{w} of {full[1]}x{full[2]}{tiled}"
    return z.float(), note


def parity_latents(shape: tuple[int, int, int, int], latents: str | Path | torch.Tensor | None = None,
                   layout: str = "ncthw", seed: int = 0) -> tuple[torch.Tensor, str]:
    """``(1, C, T, h, w)`` reference latents for an artifact input ``shape`` and a label for the manifest."""
    if latents is None:
        t, c, h, w = shape
        g = torch.Generator().manual_seed(seed)
        return torch.randn(1, c, t, h, w, generator=g), f"random normal (seed {seed})"
    from turbo_vaed.guards import check_finite

    if isinstance(latents, torch.Tensor):
        check_finite(latents, "the parity latents", "pass finite latents")
        z, note = fit_latents(latents.float(), shape)
        return z, f"given tensor: {note}"
    from turbo_vaed.latents_io import load_latents, peek_latents

    full, _meta = peek_latents(latents, layout)
    if len(full) == 5 and full[0] != 1:
        raise UserError(f"latents must be (1, C, T, h, w), got {full}: use --layout ntchw for N T C H W, or one "
                        "video per file")
    t, _c, h, w = shape
    # only the chunk the artifact takes is read; NaN/Inf in it are refused: the artifact is never blamed for its input
    z, _meta = load_latents(latents, layout, first=(t, h, w))
    z, note = fit_latents(z, shape, source=tuple(full[2:]) if len(full) == 5 else None)
    return z, f"{Path(latents).name}: {note}"


def to_signed(x: torch.Tensor, output_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """Frames in ``output_range`` mapped to [-1, 1] (the range :func:`turbo_vaed.metrics.psnr` reads)."""
    lo, hi = output_range
    return x if (lo, hi) == (-1.0, 1.0) else (x - lo) * (2.0 / (hi - lo)) - 1.0


def compare(out: np.ndarray, ref: torch.Tensor, output_range: tuple[float, float] = (-1.0, 1.0)
            ) -> tuple[float, float]:
    """(max abs error, PSNR dB) between artifact frames ``[F, 3, H, W]`` and the reference ``(1, 3, F, H, W)``."""
    got = from_mobile_layout(torch.from_numpy(np.asarray(out, dtype=np.float32)))
    if tuple(got.shape) != tuple(ref.shape):
        raise UserError(f"artifact output {tuple(got.shape)} does not match the reference {tuple(ref.shape)}: "
                        "re-export it")
    if not torch.isfinite(got).all():
        raise UserError("the artifact produced non-finite frames (NaN/Inf) from finite latents: it is broken; "
                        "re-export it (fp16 overflow? try --precision fp32)")
    return max_abs_error(got, ref), min(psnr(to_signed(got, output_range), to_signed(ref, output_range)), PSNR_CAP)


def run_parity(artifact: str | Path, *, latents: str | Path | torch.Tensor | None = None, layout: str = "ncthw",
               reference: Decoder | torch.nn.Module | None = None, checkpoint: str | Path | None = None,
               threads: int | None = None, compute_units: str = "all", seed: int = 0, write: bool = True) -> dict:
    """Run ``artifact`` and the reference on the same latents; returns (and stores) the parity record."""
    from turbo_vaed.exporters.manifest import read_manifest
    from turbo_vaed.guards import check_finite, manifest_shapes, require_artifact_memory, require_decode_memory
    from turbo_vaed.targets import load_runner, target_of_artifact

    target_of_artifact(artifact)
    if not Path(artifact).exists():
        raise UserError(f"artifact not found: {artifact}; export one with `turbovaed export`")
    m = read_manifest(artifact)
    shape, _out_shape = manifest_shapes(m, str(artifact))
    require_artifact_memory(m, "parity of")
    t_, c_, h_, w_ = (int(v) for v in shape)
    z, label = parity_latents(shape, latents, layout, seed)  # inputs checked before the artifact runs
    runner = load_runner(artifact, threads, compute_units=compute_units)
    ref_dec = as_decoder(reference) if reference is not None else reference_decoder(m, checkpoint)
    require_decode_memory(ref_dec, (1, c_, t_, h_, w_), job="parity (artifact and reference) of",
                          fix="re-export the artifact at a smaller --res or fewer --latent-frames")
    x = z[0].transpose(0, 1).contiguous().numpy()
    t0 = time.perf_counter()
    out = runner.run(x)
    run_ms = (time.perf_counter() - t0) * 1e3
    ref_dec.module.float().eval()
    with torch.no_grad():
        ref = ref_dec(z)
    check_finite(ref, "the PyTorch reference output", "the reference decoder is broken (its weights?), not the "
                 "artifact: pass --checkpoint PATH to the decoder it was exported from")
    mae, db = compare(out, ref, ref_dec.output_range)
    fp16 = m["precision"] == "fp16"
    passed = db >= FP16_MIN_PSNR if fp16 else mae <= FP32_MAX_ABS
    record = {
        "runtime": runner.name, "runtime_version": str(runner.version), "latents": label,
        "evaluator": getattr(runner, "evaluator", runner.name),
        "max_abs_error": float(mae), "psnr_db": round(float(db), 3), "passed": bool(passed),
        "criterion": f"psnr_db >= {FP16_MIN_PSNR}" if fp16 else f"max_abs_error <= {FP32_MAX_ABS}",
        "reference": f"PyTorch {ref_dec.arch.name} decoder (5-D, fp32)",
        "reference_range": [float(ref.min()), float(ref.max())],
        "threads": threads,
        "compute_units": compute_units if getattr(runner, "evaluator", "") == "coreml" else None,
        "load_ms": round(runner.load_ms, 1), "run_ms": round(run_ms, 1), "created": now_iso(),
    }
    if write:
        update_manifest(artifact, parity=record)
    return record
