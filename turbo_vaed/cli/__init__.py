"""Command-line interface: ``turbovaed``.

The command modules (and with them torch) load when the CLI runs, not when this package is imported: a process
that only needs the package, such as a bench measurement spawned from ``turbovaed`` (multiprocessing re-imports
the entry script), stays free of them.
"""

from __future__ import annotations

import importlib

from turbo_vaed.cli.app import app
from turbo_vaed.cli.app import main as _main
from turbo_vaed.cli.app import run as _run

COMMAND_MODULES = ("bench_cmd", "codec_cmd", "demo_cmd", "distill_cmd", "export_cmd", "import_cmd", "info_cmd")

__all__ = ["app", "main", "run"]


def register_commands() -> None:
    """Import every command module (each registers its commands on ``app``)."""
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}")


def run(argv: list[str] | None = None) -> int:
    """Run ``turbovaed ARGV``; the exit code."""
    register_commands()
    return _run(argv)


def main() -> None:
    register_commands()
    _main()
