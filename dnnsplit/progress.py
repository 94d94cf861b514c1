"""The one progress callback every long-running library function takes, and the one that reports nothing.

``progress(stage, done, total)`` says what runs and how far it is (``total`` <= 1: no known end);
``detail`` adds a changing note to the stage (an epoch's loss, the variant being measured). The CLI draws
it as a rich progress bar, the pipeline as its stage display; a library caller may pass any function of
this shape, or nothing.
"""

from __future__ import annotations

from typing import Protocol


class ProgressFn(Protocol):
    def __call__(self, stage: str, done: int, total: int, detail: str = "") -> None: ...


def no_progress(stage: str, done: int, total: int, detail: str = "") -> None:
    """Report nothing: the default of every function that takes a ProgressFn."""


def describe(stage: str, detail: str = "") -> str:
    """One line for a display: the stage and its detail."""
    return f"{stage} {detail}".strip()
