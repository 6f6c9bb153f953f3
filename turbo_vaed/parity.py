"""Reference parity: run an artifact in its runtime and compare with the PyTorch (5-D, fp32) reference.

Figures: max abs error and PSNR (dB, frames in [-1, 1] mapped to [0, 1]) between the two outputs; they are
written into the artifact's manifest (``parity``). Targets: fp32 artifacts max abs error <= 1e-3; fp16
artifacts PSNR >= 45 dB against the fp32 reference.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from turbo_vaed.errors import UserError
from turbo_vaed.exporters.manifest import now_iso, update_manifest, weights_sha256
from turbo_vaed.lowering import from_mobile_layout
from turbo_vaed.metrics import max_abs_error, psnr
from turbo_vaed.student import TurboVAEDDecoder

FP32_MAX_ABS = 1e-3
FP16_MIN_PSNR = 45.0
PSNR_CAP = 300.0  # identical outputs give inf; JSON has no inf


def reference_decoder(manifest: dict, checkpoint: str | Path | None = None) -> TurboVAEDDecoder:
    """The PyTorch reference the artifact was exported from, checked against the manifest's weights hash.

    ``checkpoint`` (or the manifest's) is loaded if given; otherwise the student is rebuilt from its config
    with seed 0 (how ``turbovaed`` builds random students).
    """
    from turbo_vaed.checkpoint import load_student
    from turbo_vaed.config import StudentConfig

    st = manifest["student"]
    ck = checkpoint or st.get("checkpoint")
    if ck is not None and Path(ck).is_file():
        dec = load_student(ck, manifest["family"])
    elif checkpoint is not None:
        raise UserError(f"checkpoint not found: {checkpoint}; pass --checkpoint PATH to the exported student")
    else:
        torch.manual_seed(0)
        dec = TurboVAEDDecoder(StudentConfig.from_dict(st["config"])).eval()
    want = st.get("weights_sha256")
    if want and weights_sha256(dec) != want:
        where = f"checkpoint {ck}" if ck else "a seed-0 random student"
        raise UserError(f"cannot rebuild the reference: {where} does not match the weights the artifact was "
                        "exported from; pass --checkpoint PATH to that student")
    return dec.eval()


def fit_latents(z: torch.Tensor, shape: tuple[int, int, int, int]) -> tuple[torch.Tensor, str]:
    """Latents ``(1, C, T', h', w')`` cut (or tiled) to ``(1, C, T, h, w)``, with a note on what was done."""
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
    note = f"first {t} of {src[0]} frames, {h}x{w} of {src[1]}x{src[2]}{tiled}"
    return z.float(), note


def parity_latents(shape: tuple[int, int, int, int], latents: str | Path | torch.Tensor | None = None,
                   layout: str = "ncthw", seed: int = 0) -> tuple[torch.Tensor, str]:
    """``(1, C, T, h, w)`` reference latents for an artifact input ``shape`` and a label for the manifest."""
    if latents is None:
        t, c, h, w = shape
        g = torch.Generator().manual_seed(seed)
        return torch.randn(1, c, t, h, w, generator=g), f"random normal (seed {seed})"
    if isinstance(latents, torch.Tensor):
        z, note = fit_latents(latents.float(), shape)
        return z, f"given tensor: {note}"
    from turbo_vaed.latents_io import load_latents

    z, _meta = load_latents(latents, layout)
    z, note = fit_latents(z, shape)
    return z, f"{Path(latents).name}: {note}"


def compare(out: np.ndarray, ref: torch.Tensor) -> tuple[float, float]:
    """(max abs error, PSNR dB) between artifact frames ``[F, 3, H, W]`` and the reference ``(1, 3, F, H, W)``."""
    got = from_mobile_layout(torch.from_numpy(np.asarray(out, dtype=np.float32)))
    if tuple(got.shape) != tuple(ref.shape):
        raise UserError(f"artifact output {tuple(got.shape)} does not match the reference {tuple(ref.shape)}: "
                        "re-export it")
    return max_abs_error(got, ref), min(psnr(got, ref), PSNR_CAP)


def run_parity(artifact: str | Path, *, latents: str | Path | torch.Tensor | None = None, layout: str = "ncthw",
               reference: TurboVAEDDecoder | None = None, checkpoint: str | Path | None = None,
               threads: int | None = None, compute_units: str = "all", seed: int = 0, write: bool = True) -> dict:
    """Run ``artifact`` and the reference on the same latents; returns (and stores) the parity record."""
    from turbo_vaed.runtimes import load_runner

    runner = load_runner(artifact, threads, compute_units=compute_units)
    m = runner.manifest
    ref_dec = reference if reference is not None else reference_decoder(m, checkpoint)
    shape = tuple(m["inputs"][0]["shape"])
    z, label = parity_latents(shape, latents, layout, seed)
    x = z[0].transpose(0, 1).contiguous().numpy()
    t0 = time.perf_counter()
    out = runner.run(x)
    run_ms = (time.perf_counter() - t0) * 1e3
    with torch.no_grad():
        ref = ref_dec.float().eval()(z)
    mae, db = compare(out, ref)
    fp16 = m["precision"] == "fp16"
    passed = db >= FP16_MIN_PSNR if fp16 else mae <= FP32_MAX_ABS
    record = {
        "runtime": runner.name, "runtime_version": str(runner.version), "latents": label,
        "max_abs_error": float(mae), "psnr_db": round(float(db), 3), "passed": bool(passed),
        "criterion": f"psnr_db >= {FP16_MIN_PSNR}" if fp16 else f"max_abs_error <= {FP32_MAX_ABS}",
        "reference": "PyTorch TurboVAEDDecoder (5-D, fp32)", "reference_range": [float(ref.min()), float(ref.max())],
        "threads": threads, "compute_units": compute_units if runner.name == "coreml" else None,
        "load_ms": round(runner.load_ms, 1), "run_ms": round(run_ms, 1), "created": now_iso(),
    }
    if write:
        update_manifest(artifact, parity=record)
    return record
