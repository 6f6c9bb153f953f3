"""User-facing errors: one line, exit code 2, no traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input; the CLI prints it on one line and exits 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
