"""``<name>.manifest.json`` next to every artifact (schema ``turbovaed.manifest/2``): build, read, write atomically.

The one manifest reader/validator of the toolchain (the iOS and Android drivers use it too). Version 2 names the
decoder (``decoder``: architecture, config, checkpoint label and hashes, latent convention, output range);
version-1 manifests (``student`` section) are read as architecture ``student``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from turbo_vaed.errors import UserError
from turbo_vaed.fileio import tree_sha256, tree_size
from turbo_vaed.jsonio import write_json

if TYPE_CHECKING:  # writing a manifest needs torch; reading one (a runner) does not
    import torch

__all__ = ["SCHEMA", "manifest_path", "tree_sha256", "tree_size", "weights_sha256", "toolchain", "now_iso",
           "build_manifest", "validate_manifest", "read_manifest", "write_manifest", "update_manifest"]

SCHEMA = "turbovaed.manifest/2"
LEGACY_SCHEMA = "turbovaed.manifest/1"
REQUIRED = ("schema", "name", "artifact", "target", "delegate", "preset", "family", "width", "height",
            "latent_frames", "output_frames", "precision", "inputs", "outputs", "decoder", "toolchain",
            "report", "parity", "size_bytes", "sha256", "created")
REPORT_KEYS = ("op_counts", "max_rank", "slow_path_ops", "partitions", "non_delegated_ops", "weights_bytes",
               "gflops_per_frame")


def manifest_path(artifact: str | Path) -> Path:
    """``dir/name.ext`` -> ``dir/name.manifest.json``."""
    p = Path(artifact)
    return p.with_name(f"{p.stem}.manifest.json")


def weights_sha256(module: torch.nn.Module) -> str:
    """Hash of a module's state dict (see :func:`turbo_vaed.decoders.base.weights_sha256`)."""
    from turbo_vaed.decoders.base import weights_sha256 as _w

    return _w(module)


def toolchain(target: str) -> dict:
    """turbovaed, torch and the target's own converter/runtime versions."""
    import torch

    from turbo_vaed import __version__
    from turbo_vaed.targets import get_target

    return {"turbovaed": __version__, "torch": torch.__version__, **get_target(target).toolchain()}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def build_manifest(*, name: str, artifact: Path, target: str, delegate: str | None, preset: str, family: str,
                   width: int, height: int, input_shape: list[int], output_shape: list[int], precision: str,
                   io_dtype: str, decoder: dict, report: dict, extra: dict | None = None) -> dict:
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
        "decoder": decoder,
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
    """One-line :class:`UserError` unless ``doc`` looks like a turbovaed.manifest/2 document (/1 is upgraded)."""
    if isinstance(doc, dict) and doc.get("schema") == LEGACY_SCHEMA and isinstance(doc.get("student"), dict):
        doc = {**doc, "schema": SCHEMA, "decoder": {"arch": "student", **doc["student"]}}
        doc.pop("student")
        if doc["decoder"].get("checkpoint") is None:
            doc["decoder"]["checkpoint"] = "random"
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
        assert isinstance(doc["decoder"], dict) and isinstance(doc["decoder"].get("arch"), str)
        assert isinstance(doc["decoder"].get("config"), dict)
    except (AssertionError, KeyError, IndexError, TypeError):
        raise UserError(f"{source}: inputs/outputs/report do not follow {SCHEMA}: re-export the artifact") from None
    return doc


def read_manifest(artifact: str | Path) -> dict:
    """The validated manifest next to ``artifact`` (or ``artifact`` itself if it is a manifest)."""
    p = Path(artifact)
    mp = p if p.name.endswith(".manifest.json") else manifest_path(p)
    if not mp.is_file():
        raise UserError(f"no manifest next to {p} (expected {mp.name}): re-export it with `turbovaed export`")
    from turbo_vaed.guards import read_json

    try:  # strict JSON: no NaN/Infinity, bounded size and nesting
        doc = read_json(mp, "manifest", max_bytes=16 * 2**20, expect=None)
    except UserError as e:
        raise UserError(f"{mp} is not a turbovaed manifest ({e}): re-export the artifact") from None
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
