"""Command-line interface: ``turbovaed``."""

from turbo_vaed.cli import (  # noqa: F401  (register commands)
    bench_cmd,
    codec_cmd,
    demo_cmd,
    distill_cmd,
    export_cmd,
    import_cmd,
    info_cmd,
)
from turbo_vaed.cli.app import app, main, run

__all__ = ["app", "main", "run"]
