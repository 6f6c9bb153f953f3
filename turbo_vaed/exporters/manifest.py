"""``<name>.manifest.json`` next to every artifact (schema ``turbovaed.manifest/1``): build, read, write atomically."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path

import torch

from turbo_vaed.errors import UserError
from turbo_vaed.jsonio import write_json

SCHEMA = "turbovaed.manifest/1"
REQUIRED = ("schema", "name", "artifact", "target", "delegate", "preset", "family", "width", "height",
            "latent_frames", "output_frames", "precision", "inputs", "outputs", "student", "toolchain",
            "report", "parity", "size_bytes", "sha256", "created")
REPORT_KEYS = ("op_counts", "max_rank", "slow_path_ops", "partitions", "non_delegated_ops", "weights_bytes",
               "gflops_per_frame")


def manifest_path(artifact: str | Path) -> Path:
    """``dir/name.ext`` -> ``dir/name.manifest.json``."""
    p = Path(artifact)
    return p.with_name(f"{p.stem}.manifest.json")


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder (relative paths and contents of its files, sorted)."""
    h = hashlib.sha256()
    if path.is_file():
        files = [path]
        base = path.parent
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file())
        base = path
    for f in files:
        if path.is_dir():
            h.update(f.relative_to(base).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def weights_sha256(module: torch.nn.Module) -> str:
    """Hash of a state dict (sorted keys, fp32 bytes): identifies the reference weights an artifact came from."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode() + b"\0")
        h.update(v.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def student_section(decoder, checkpoint: str | Path | None) -> dict:
    """Config, hashes and checkpoint of the reference student."""
    from turbo_vaed.checkpoint import file_sha256

    cfg_json = json.dumps(decoder.cfg.to_dict(), sort_keys=True)
    ck = Path(checkpoint) if checkpoint is not None else None
    return {
        "config": decoder.cfg.to_dict(),
        "config_sha256": hashlib.sha256(cfg_json.encode()).hexdigest(),
        "checkpoint": str(ck) if ck is not None else None,
        "checkpoint_sha256": file_sha256(ck) if ck is not None and ck.is_file() else None,
        "weights_sha256": weights_sha256(decoder),
    }


def toolchain(target: str) -> dict:
    from turbo_vaed import __version__

    tc = {"turbovaed": __version__, "torch": torch.__version__}
    if target == "coreml":
        import coremltools

        tc["coremltools"] = coremltools.__version__
    elif target == "executorch":
        from importlib.metadata import version

        tc["executorch"] = version("executorch")
        import coremltools

        tc["coremltools"] = coremltools.__version__
    elif target == "onnx":
        import onnx
        import onnxruntime

        tc["onnx"], tc["onnxruntime"] = onnx.__version__, onnxruntime.__version__
    return tc


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_manifest(*, name: str, artifact: Path, target: str, delegate: str | None, preset: str, family: str,
                   width: int, height: int, input_shape: list[int], output_shape: list[int], precision: str,
                   io_dtype: str, student: dict, report: dict, extra: dict | None = None) -> dict:
    """The manifest of a finished artifact (``artifact`` is where it lies now; only its name is recorded)."""
    doc = {
        "schema": SCHEMA,
        "name": name,
        "artifact": artifact.name,
        "target": target,
        "delegate": delegate,
        "preset": preset,
        "family": family,
        "width": int(width),
        "height": int(height),
        "latent_frames": int(input_shape[0]),
        "output_frames": int(output_shape[0]),
        "precision": precision,
        "inputs": [{"name": "latents", "shape": [int(s) for s in input_shape], "dtype": io_dtype}],
        "outputs": [{"name": "frames", "shape": [int(s) for s in output_shape], "dtype": io_dtype}],
        "student": student,
        "toolchain": toolchain(target),
        "report": report,
        "parity": None,
        "size_bytes": tree_size(artifact),
        "sha256": tree_sha256(artifact),
        "created": now_iso(),
    }
    if extra:
        doc.update(extra)
    return doc


def validate_manifest(doc: object, source: str | Path = "manifest") -> dict:
    """One-line :class:`UserError` unless ``doc`` looks like a turbovaed.manifest/1 document."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise UserError(f"{source} is not a {SCHEMA} manifest: re-export the artifact with `turbovaed export`")
    missing = [k for k in REQUIRED if k not in doc]
    if missing:
        raise UserError(f"{source} lacks {', '.join(missing)}: re-export the artifact with `turbovaed export`")
    try:
        shape = doc["inputs"][0]["shape"]
        assert doc["inputs"][0]["name"] == "latents" and len(shape) == 4
        assert doc["outputs"][0]["name"] == "frames" and len(doc["outputs"][0]["shape"]) == 4
        assert all(k in doc["report"] for k in REPORT_KEYS)
    except (AssertionError, KeyError, IndexError, TypeError):
        raise UserError(f"{source}: inputs/outputs/report do not follow {SCHEMA}: re-export the artifact") from None
    return doc


def read_manifest(artifact: str | Path) -> dict:
    """The validated manifest next to ``artifact`` (or ``artifact`` itself if it is a manifest)."""
    p = Path(artifact)
    mp = p if p.name.endswith(".manifest.json") else manifest_path(p)
    if not mp.is_file():
        raise UserError(f"no manifest next to {p} (expected {mp.name}): re-export it with `turbovaed export`")
    try:
        doc = json.loads(mp.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"manifest {mp} is not JSON: re-export the artifact") from None
    return validate_manifest(doc, mp)


def write_manifest(path: str | Path, doc: dict) -> Path:
    """Atomic write (temp file, then rename)."""
    return write_json(path, doc)


def update_manifest(artifact: str | Path, **fields) -> dict:
    """Read, update top-level ``fields`` (e.g. ``parity``), write back atomically."""
    doc = read_manifest(artifact)
    doc.update(fields)
    write_manifest(manifest_path(artifact) if not str(artifact).endswith(".manifest.json") else artifact, doc)
    return doc
