"""Errors a user can fix. The CLI prints them as one line and maps them to exit codes."""

from __future__ import annotations


class DnnsplitError(Exception):
    """A problem the user can fix: bad input, a missing file, an impossible request.

    ``hint`` says how to fix it; the CLI prints ``error: <message>; <hint>`` and exits with ``exit_code``.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message}; {self.hint}"
        return " ".join(text.split())


class UsageError(DnnsplitError):
    """Bad usage or bad input: exit code 2."""

    exit_code = 2


class BudgetError(DnnsplitError):
    """A budget or validation check failed (for CI gating): exit code 1."""

    exit_code = 1
