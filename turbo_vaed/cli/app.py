"""The ``turbovaed`` typer application and its error handling (one line, exit 2)."""

from __future__ import annotations

import sys

import typer

from turbo_vaed.console import console, err_console, quiet_third_party
from turbo_vaed.errors import UserError

app = typer.Typer(
    name="turbovaed",
    help="Turbo-VAED: distil, lower, export and benchmark mobile video VAE decoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
__all__ = ["app", "console", "err_console", "quiet_third_party", "fail", "run", "main"]


def fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {' '.join(message.split())}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def _click_families() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(Exit, NoArgsIsHelp, ClickException/UsageError, Abort) classes of click and of typer's vendored copy."""
    import click

    exits, helps, errors, aborts = [click.exceptions.Exit], [], [click.exceptions.ClickException], \
        [click.exceptions.Abort]
    try:
        import typer._click.exceptions as tce

        helps.append(tce.NoArgsIsHelpError)
        errors.append(tce.ClickException)
        aborts.append(getattr(tce, "Abort", click.exceptions.Abort))
        exits.append(getattr(tce, "Exit", click.exceptions.Exit))
    except ImportError:
        pass
    try:
        import typer

        exits.append(typer.Exit)
    except AttributeError:
        pass
    return tuple(exits), tuple(helps), tuple(errors), tuple(aborts)


def run(argv: list[str] | None = None) -> int:
    """Run the CLI with ``argv``; returns the exit code (used by ``main`` and the tests).

    User errors and usage errors (unknown command or option, bad value, missing argument): one ``error:``
    line and exit 2. Ctrl-C: ``interrupted`` and 130.
    """
    quiet_third_party()
    exits, helps, errors, aborts = _click_families()
    restore = _note_sigint()
    try:
        rv = app(args=argv, prog_name="turbovaed", standalone_mode=False)
        if rv == 130 and _SIGINT_SEEN:  # typer turns Ctrl-C into a silent Exit(130)
            err_console.print("interrupted")
        return rv if isinstance(rv, int) else 0
    except UserError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return e.exit_code
    except exits as e:
        return int(getattr(e, "exit_code", 0) or 0)
    except helps as e:
        e.show(file=sys.stderr)  # bare `turbovaed CMD` with no arguments: its help
        return 2
    except errors as e:
        msg = " ".join(str(e.format_message()).split())
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else " (see `turbovaed --help`)"
        err_console.print(f"[bold red]error:[/] {msg}{hint}", highlight=False, soft_wrap=True)
        return 2
    except aborts:
        err_console.print("interrupted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    finally:
        restore()


_SIGINT_SEEN: list[int] = []


def _note_sigint():
    """While the CLI runs, Ctrl-C is noted (then raised as usual); returns the function that restores the handler."""
    import signal

    _SIGINT_SEEN.clear()

    def on_sigint(signum, frame):
        _SIGINT_SEEN.append(signum)
        raise KeyboardInterrupt

    try:
        prev = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread
        return lambda: None
    return lambda: signal.signal(signal.SIGINT, prev)


def main() -> None:
    sys.exit(run(sys.argv[1:]))
