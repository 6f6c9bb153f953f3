"""Regenerate the tiny Core ML fixture the Swift tests run: `python ios_bench/Tests/make_fixtures.py`.

A shape-faithful stand-in for an exported Turbo-VAED decoder (family wan, 16x16 pixels, 2 latent frames):
input ``latents`` [T=2, C=16, h=2, w=2] -> output ``frames`` [F=5, 3, 16, 16], rank <= 4, fp16 I/O, plus its
``tiny.manifest.json`` in the turbovaed.manifest/1 layout. Runs on Linux (conversion only, no prediction).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parent / "TurboVAEDBenchTests" / "Fixtures"
T, C, H_LAT, W_LAT, SPATIAL, TEMPORAL = 2, 16, 2, 2, 8, 4
F = 1 + TEMPORAL * (T - 1)


class TinyDecoder(torch.nn.Module):
    """1x1 conv to (t, rgb, 8x8) channels, pixel shuffle, frames to the batch axis, trim, tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(C, TEMPORAL * 3 * SPATIAL * SPATIAL, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.pixel_shuffle(self.conv(z), SPATIAL)  # [T, 4*3, 16, 16]
        x = x.reshape(T * TEMPORAL, 3, H_LAT * SPATIAL, W_LAT * SPATIAL)
        return torch.tanh(x[TEMPORAL - 1:])


def tree_sha256(path: Path) -> str:
    """sha256 over the sorted relative paths and contents of a directory."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def main() -> None:
    import coremltools as ct

    torch.manual_seed(0)
    model = TinyDecoder().eval()
    z = torch.randn(T, C, H_LAT, W_LAT)
    traced = torch.jit.trace(model, z)
    ml = ct.convert(
        traced,
        inputs=[ct.TensorType(name="latents", shape=z.shape, dtype=np.float16)],
        outputs=[ct.TensorType(name="frames", dtype=np.float16)],
        convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16,
    )
    out = FIXTURES / "tiny.mlpackage"
    if out.exists():
        shutil.rmtree(out)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    ml.save(str(out))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    manifest = {
        "schema": "turbovaed.manifest/1", "name": "tiny", "artifact": "tiny.mlpackage", "target": "coreml",
        "delegate": None, "preset": "16x16", "family": "wan", "width": W_LAT * SPATIAL, "height": H_LAT * SPATIAL,
        "latent_frames": T, "output_frames": F, "precision": "fp16",
        "inputs": [{"name": "latents", "shape": [T, C, H_LAT, W_LAT], "dtype": "float16"}],
        "outputs": [{"name": "frames", "shape": [F, 3, H_LAT * SPATIAL, W_LAT * SPATIAL], "dtype": "float16"}],
        "student": {"config": {"note": "test fixture, not a Turbo-VAED student"}, "config_sha256": "0" * 64,
                    "checkpoint": None, "checkpoint_sha256": None},
        "toolchain": {"turbovaed": "0.1.0", "torch": torch.__version__, "coremltools": ct.__version__},
        "report": {"op_counts": {}, "max_rank": 4, "slow_path_ops": [], "partitions": None,
                   "non_delegated_ops": {}, "weights_bytes": C * TEMPORAL * 3 * SPATIAL * SPATIAL * 2,
                   "gflops_per_frame": 0.0},
        "parity": None, "size_bytes": size, "sha256": tree_sha256(out), "created": "2025-01-01T00:00:00+00:00",
    }
    (FIXTURES / "tiny.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out} ({size} bytes) and tiny.manifest.json")


if __name__ == "__main__":
    main()
