"""Text for people that a library composes and the CLI only draws: byte sizes, tables, summaries.

A summary chooses every word and figure it shows from typed results (never from a file's dicts), so a
table and the file it sits beside cannot disagree; the CLI turns it into rich tables. Light on purpose:
every command imports it.
"""

from __future__ import annotations

from dataclasses import dataclass


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000.0
    return f"{n:.1f} GB"


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@dataclass(frozen=True)
class TextTable:
    """A table of text cells; ``align`` has one letter per column, ``l`` (left) or ``r`` (right); columns
    past it are left-aligned if first, else right-aligned."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    align: str = ""

    def justify(self, column: int) -> str:
        letter = self.align[column] if column < len(self.align) else ("l" if column == 0 else "r")
        return "left" if letter == "l" else "right"


@dataclass(frozen=True)
class Summary:
    """``name`` (shown bold) then ``headline`` on the first line; then each block, a table or a line."""

    name: str
    headline: str
    blocks: tuple[TextTable | str, ...]
