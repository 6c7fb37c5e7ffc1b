"""Errors that the CLI turns into one clear line and exit code 2.

Raise :class:`UserError` for anything the *user* can fix (a bad path, a bad option, a
malformed file). Everything else is a bug and may surface as a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix. ``str(err)`` is the one-line message; ``hint`` says how."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"


class ModelFitError(Exception):
    """A model could not be fitted (non-convergence, degenerate data). The champion is kept."""
