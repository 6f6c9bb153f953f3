"""The ``turbovaed`` typer application and its error handling (one line, exit 2)."""

from __future__ import annotations

import logging
import os
import sys
import warnings

import typer
from rich.console import Console

from turbo_vaed.errors import UserError

app = typer.Typer(
    name="turbovaed",
    help="Turbo-VAED: distil, lower, export and benchmark mobile video VAE decoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def quiet_third_party() -> None:
    """Silence import-time chatter from torchao/diffusers that users cannot act on."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    for name in ("torchao", "torch.utils._pytree", "diffusers", "coremltools", "executorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="torchao")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*TripleDES.*")


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {' '.join(message.split())}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv``; returns the exit code (used by ``main`` and the tests)."""
    import click

    quiet_third_party()
    try:
        rv = app(args=argv, prog_name="turbovaed", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return e.exit_code
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.exceptions.ClickException as e:
        e.show(file=sys.stderr)
        return e.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2


def main() -> None:
    sys.exit(run(sys.argv[1:]))
