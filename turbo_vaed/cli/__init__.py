"""Command-line interface: ``turbovaed``."""

from turbo_vaed.cli import bench_cmd, codec_cmd, demo_cmd, distill_cmd, export_cmd, info_cmd  # noqa: F401  (register commands)
from turbo_vaed.cli.app import app, main, run

__all__ = ["app", "main", "run"]
