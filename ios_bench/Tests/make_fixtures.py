"""Regenerate the tiny Core ML fixture the Swift tests run: `python ios_bench/Tests/make_fixtures.py`.

A shape-faithful stand-in for an exported Turbo-VAED decoder (family wan, 16x16 pixels, 2 latent frames):
input ``latents`` [T=2, C=16, h=2, w=2] -> output ``frames`` [F=5, 3, 16, 16], rank <= 4, fp16 I/O, plus its
``tiny.manifest.json`` in the turbovaed.manifest/1 layout. Runs on Linux (conversion only, no prediction).

``tiny-stream.mlpackage`` is the same kind of stand-in for a streaming step (``turbovaed export --stream``):
inputs ``latents`` [k=2, 16, 2, 2], ``first``/``trim`` [1, 1, 1, 1] and one state ``state0`` [1, 16, 2, 2] (the
previous latent frame of a causal temporal conv), outputs ``frames`` [8, 3, 16, 16] and ``state0_next``, with a
turbovaed.manifest/2 ``tiny-stream.manifest.json`` holding its ``stream`` section.

``tiny-stream-v2.mlpackage`` is a streaming step of protocol v2 (``stream.controls``, ``valid_output``,
``flush_chunks``, ``restart_at`` []): inputs ``latents`` [2, 16, 2, 2], the controls ``first``, ``start``,
``remaining`` [1, 1, 1, 1] and ``state0``; outputs ``frames`` [8, 3, 16, 16], ``valid`` [8, 1, 1, 1] and
``state0_next``. Its output lags one latent frame (row r shows latent frame start - 1 + r // 4) and ``valid``
marks the rows to keep, so a segment of L latent frames streams into 1 + 4 (L - 1) frames with its one flush chunk
(``tiny-stream-v2.manifest.json``).

``python ios_bench/Tests/make_fixtures.py v2`` rewrites only the v2 fixture; ``... v2-manifest`` only its manifest
(for the package already there: its size, sha256 and the toolchain that converted it).
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


class TinyStreamStep(torch.nn.Module):
    """A causal temporal conv (k=2) carried as state, then the same per-frame head as TinyDecoder (no trim)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(C, TEMPORAL * 3 * SPATIAL * SPATIAL, 1)

    def forward(self, z, first, trim, state0):
        prev = first * z[:1] + (1 - first) * state0  # the first chunk replicates its first frame
        x = torch.cat([prev, z])  # [1 + k, C, h, w]
        y = x[1:] + 0.5 * x[:-1]  # causal conv over time
        x = torch.nn.functional.pixel_shuffle(self.conv(y), SPATIAL)  # [k, 4*3, 16, 16]
        x = x.reshape(T * TEMPORAL, 3, H_LAT * SPATIAL, W_LAT * SPATIAL)
        return torch.tanh(x) + 1e-3 * trim, z[-1:]


def make_tiny_stream() -> None:
    import coremltools as ct

    torch.manual_seed(0)
    model = TinyStreamStep().eval()
    flag = torch.ones(1, 1, 1, 1)
    example = (torch.randn(T, C, H_LAT, W_LAT), flag, flag, torch.zeros(1, C, H_LAT, W_LAT))
    traced = torch.jit.trace(model, example)
    names = ("latents", "first", "trim", "state0")
    ml = ct.convert(
        traced,
        inputs=[ct.TensorType(name=n, shape=e.shape, dtype=np.float16) for n, e in zip(names, example, strict=True)],
        outputs=[ct.TensorType(name="frames", dtype=np.float16), ct.TensorType(name="state0_next", dtype=np.float16)],
        convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16,
    )
    out = FIXTURES / "tiny-stream.mlpackage"
    if out.exists():
        shutil.rmtree(out)
    ml.save(str(out))
    frames, state = [T * TEMPORAL, 3, H_LAT * SPATIAL, W_LAT * SPATIAL], [1, C, H_LAT, W_LAT]
    manifest = stream_manifest(
        "tiny-stream", out, {"turbovaed": "0.1.0", "torch": torch.__version__, "coremltools": ct.__version__},
        controls=("first", "trim"), valid=False, stream={
            "chunk_latent_frames": T, "frames_per_chunk": frames[0], "first_chunk_skip": TEMPORAL - 1,
            "flags": {"first": "1.0 on the first chunk of a video, else 0.0",
                      "trim": "1.0 on the first chunk when the full decode of the whole video trims, else 0.0"},
            "states": [{"name": "state0", "shape": state, "dtype": "float16", "init": "zeros",
                        "next": "state0_next"}],
            "tail": "pad the last chunk with copies of its last latent frame; keep the first n * frames_per_chunk / "
                    "chunk_latent_frames frames of its output",
            "first_chunk": f"drop the first {TEMPORAL - 1} frames of the first chunk when trim = 1",
            "coreml_states": "explicit inputs/outputs", "notes": ["test fixture"],
        })
    (FIXTURES / "tiny-stream.manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out} ({manifest['size_bytes']} bytes) and tiny-stream.manifest.json")


class TinyStreamStepV2(torch.nn.Module):
    """Protocol v2: controls first/start/remaining, a `valid` output, frames lagging one latent frame.

    Row r of `frames` shows latent frame j = start - 1 + r // 4 (the previous chunk's last latent frame comes
    from the state); `valid` is 1 where 0 <= j < L, the segment's length (j - start < remaining = L - start),
    except the first 3 rows of latent frame 0 (a wan-like trim), so a segment of L latent frames streams into
    1 + 4 (L - 1) frames when one flush chunk follows it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(C, TEMPORAL * 3 * SPATIAL * SPATIAL, 1)
        rows = torch.arange(T * TEMPORAL, dtype=torch.float32).reshape(-1, 1, 1, 1)
        self.register_buffer("lag", torch.floor(rows / TEMPORAL) - 1)  # j - start of each row
        self.register_buffer("lead", (rows - TEMPORAL * torch.floor(rows / TEMPORAL) < TEMPORAL - 1).float())

    def forward(self, z, first, start, remaining, state0):
        prev = first * z[:1] + (1 - first) * state0
        x = torch.cat([prev, z])[:T]  # latent frames start - 1 ... start + k - 2
        x = torch.nn.functional.pixel_shuffle(self.conv(x), SPATIAL)
        x = x.reshape(T * TEMPORAL, 3, H_LAT * SPATIAL, W_LAT * SPATIAL)
        j = start + self.lag  # [8, 1, 1, 1]
        valid = (j >= 0) & (self.lag < remaining) & ~((j == 0) & (self.lead > 0.5))
        return torch.tanh(x), valid.float(), z[-1:]


V2_CONTROLS = ("first", "start", "remaining")


def make_tiny_stream_v2() -> None:
    import coremltools as ct

    torch.manual_seed(0)
    model = TinyStreamStepV2().eval()
    flag = torch.ones(1, 1, 1, 1)
    example = (torch.randn(T, C, H_LAT, W_LAT), flag, 2 * flag, 3 * flag, torch.zeros(1, C, H_LAT, W_LAT))
    traced = torch.jit.trace(model, example)
    names = ("latents", *V2_CONTROLS, "state0")
    ml = ct.convert(
        traced,
        inputs=[ct.TensorType(name=n, shape=e.shape, dtype=np.float16) for n, e in zip(names, example, strict=True)],
        outputs=[ct.TensorType(name="frames", dtype=np.float16), ct.TensorType(name="valid", dtype=np.float16),
                 ct.TensorType(name="state0_next", dtype=np.float16)],
        convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16,
    )
    out = FIXTURES / "tiny-stream-v2.mlpackage"
    if out.exists():
        shutil.rmtree(out)
    ml.save(str(out))
    write_tiny_stream_v2_manifest({"turbovaed": "0.1.0", "torch": torch.__version__, "coremltools": ct.__version__})


def stream_manifest(name: str, package: Path, toolchain: dict, *, controls, valid: bool, stream: dict) -> dict:
    """The manifest of a tiny streaming fixture ``package``: the exporter's envelope, its inputs (latents, the
    ``controls``, one state) and outputs (frames, ``valid`` when ``valid``, the next state), and ``stream``."""
    frames, state = [T * TEMPORAL, 3, H_LAT * SPATIAL, W_LAT * SPATIAL], [1, C, H_LAT, W_LAT]
    flag_spec = {"shape": [1, 1, 1, 1], "dtype": "float16"}
    size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
    return {
        "schema": "turbovaed.manifest/2", "name": name, "artifact": package.name,
        "target": "coreml", "delegate": None, "preset": "16x16", "family": "wan", "width": W_LAT * SPATIAL,
        "height": H_LAT * SPATIAL, "latent_frames": T, "output_frames": frames[0], "precision": "fp16",
        "inputs": [{"name": "latents", "shape": [T, C, H_LAT, W_LAT], "dtype": "float16"},
                   *({"name": n, **flag_spec} for n in controls),
                   {"name": "state0", "shape": state, "dtype": "float16"}],
        "outputs": [{"name": "frames", "shape": frames, "dtype": "float16"},
                    *([{"name": "valid", "shape": [frames[0], 1, 1, 1], "dtype": "float16"}] if valid else []),
                    {"name": "state0_next", "shape": state, "dtype": "float16"}],
        "decoder": {"arch": "student", "config": {"note": "test fixture, not a Turbo-VAED student"},
                    "checkpoint": "random"},
        "toolchain": toolchain,
        "report": {"op_counts": {}, "max_rank": 4, "slow_path_ops": [], "partitions": None,
                   "non_delegated_ops": {}, "weights_bytes": C * TEMPORAL * 3 * SPATIAL * SPATIAL * 2,
                   "gflops_per_frame": 0.0},
        "parity": None, "size_bytes": size, "sha256": tree_sha256(package), "created": "2025-01-01T00:00:00+00:00",
        "stream": stream,
    }


def write_tiny_stream_v2_manifest(toolchain: dict | None = None) -> None:
    """``tiny-stream-v2.manifest.json`` for the package there; ``toolchain`` None: the one the manifest records."""
    out = FIXTURES / "tiny-stream-v2.mlpackage"
    path = FIXTURES / "tiny-stream-v2.manifest.json"
    if toolchain is None:
        toolchain = json.loads(path.read_text())["toolchain"]
    frames, state = [T * TEMPORAL, 3, H_LAT * SPATIAL, W_LAT * SPATIAL], [1, C, H_LAT, W_LAT]
    manifest = stream_manifest("tiny-stream-v2", out, toolchain, controls=V2_CONTROLS, valid=True, stream={
            # the keys of exporters.add_stream_section, in its order
            "chunk_latent_frames": T, "frames_per_chunk": frames[0], "first_chunk_skip": TEMPORAL - 1,
            "controls": list(V2_CONTROLS), "valid_output": "valid", "flush_chunks": 1, "restart_at": [],
            "flags": {"first": "1.0 on the first chunk of a video (or of a restart segment), else 0.0",
                      "start": "latent index of the chunk's first frame within the video (segment)",
                      "remaining": "latent frames of the video (segment) from the chunk's first one on (<= 0 on "
                                   "the flush calls)"},
            "states": [{"name": "state0", "shape": state, "dtype": "float16", "init": "zeros",
                        "next": "state0_next"}],
            "tail": "pad the last chunk with copies of its last latent frame, then call flush_chunks more times; "
                    "keep the rows of frames whose valid is > 0.5, in order",
            "first_chunk": "nothing to drop: valid says which rows are frames",
            "restart": None,
            "coreml_states": "explicit inputs/outputs", "memory_estimate": None,
            "notes": ["test fixture (protocol v2)"],
        })
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {path.name} for {out.name} ({manifest['size_bytes']} bytes)")


def main(argv: list[str] | None = None) -> None:
    import sys

    only = (sys.argv[1:] if argv is None else argv)[:1]
    if only == ["v2"]:
        make_tiny_stream_v2()
        return
    if only == ["v2-manifest"]:
        write_tiny_stream_v2_manifest()
        return
    make_tiny()
    make_tiny_stream()
    make_tiny_stream_v2()


def make_tiny() -> None:
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
