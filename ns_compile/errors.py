"""The one exception type that the CLI turns into a one-line message and exit code 2."""
from __future__ import annotations

import os


class UserError(Exception):
    """Bad input from the user: a file, a flag, a budget. Printed as one line, exit code 2.

    `path` names the offending file when there is one, so every message says where.
    """

    exit_code = 2

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.message = message
        super().__init__(self.format())

    def format(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ToleranceExceeded(Exception):
    """A verification tolerance given by the user was exceeded (exit code 1)."""

    exit_code = 1
