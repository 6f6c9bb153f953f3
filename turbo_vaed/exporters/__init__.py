"""Export: lowered decoder -> target artifact + manifest (``artifact.export_artifact``), presets, phone reports.

The package imports nothing heavy itself: ``export_artifact`` and its helpers load (with torch) on first use, so a
runner that only reads manifests (ONNX Runtime) runs without torch.
"""

from __future__ import annotations

_ARTIFACT = ("ExportResult", "add_stream_section", "default_name", "export_artifact", "stream_memory_estimate")

__all__ = list(_ARTIFACT)


def __getattr__(name: str):
    if name in _ARTIFACT:
        from turbo_vaed.exporters import artifact

        return getattr(artifact, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
