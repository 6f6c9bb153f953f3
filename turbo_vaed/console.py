"""One console for the whole toolchain: tables and progress on stdout, warnings and errors on stderr.

Tables are built to fit 80 columns (units in headers, long text folded); wider terminals get more room.
Nothing below the CLI imports the CLI: modules print through here.
"""

from __future__ import annotations

import logging
import os
import warnings

from rich.console import Console
from rich.table import Table as _RichTable

console = Console()
err_console = Console(stderr=True)


def warn(message: str) -> None:
    """One ``warning:`` line on stderr."""
    err_console.print(f"[yellow]warning:[/] {' '.join(str(message).split())}", highlight=False, soft_wrap=True)


def error(message: str) -> None:
    """One ``error:`` line on stderr."""
    err_console.print(f"[bold red]error:[/] {' '.join(str(message).split())}", highlight=False, soft_wrap=True)


class Table(_RichTable):
    """A rich table whose cells fold onto more lines instead of being cut to ``...`` in narrow terminals
    (80 columns, log files); titles are left-aligned."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("title_justify", "left")
        kwargs.setdefault("pad_edge", False)
        kwargs.setdefault("collapse_padding", True)
        super().__init__(*args, **kwargs)

    def add_column(self, *args, **kwargs) -> None:
        kwargs.setdefault("overflow", "fold")
        super().add_column(*args, **kwargs)


class ShownWarnings(warnings.catch_warnings):
    """``with ShownWarnings(Cat1, Cat2): ...`` prints each warning of those categories once, as one line."""

    def __init__(self, *categories: type[Warning]) -> None:
        super().__init__(record=True)
        self.categories = categories or (UserWarning,)

    def __enter__(self):
        caught = super().__enter__()
        warnings.simplefilter("ignore")
        for c in self.categories:
            warnings.simplefilter("always", c)
        self._caught = caught
        return caught

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        seen = set()
        for w in self._caught:
            msg = str(w.message)
            if issubclass(w.category, self.categories) and msg not in seen:
                seen.add(msg)
                warn(msg)


def quiet_third_party() -> None:
    """Silence import-time chatter from torchao/diffusers/ExecuTorch that users cannot act on."""
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    # diffusers configures its own logger from this at import ("Unable to import `torchao` Tensor objects...")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    for name in ("torchao", "torch.utils._pytree", "diffusers", "coremltools", "executorch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="torchao")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*TripleDES.*")
