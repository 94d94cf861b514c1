"""Input shapes written as ``1x3x224x224``."""

from __future__ import annotations

import re

from dnnsplit.errors import UsageError
from dnnsplit.limits import check_input_size

_SHAPE = re.compile(r"^\s*\d+(\s*[xX×,]\s*\d+)*\s*$")


def parse_input_shape(text: str) -> tuple[int, ...]:
    """Parse ``1x3x224x224`` into ``(1, 3, 224, 224)``; 4 positive dims (N, C, H, W)."""
    if not _SHAPE.match(text or ""):
        raise UsageError(
            f"malformed --input-shape '{text}'",
            "write it as NxCxHxW with positive integers, e.g. 1x3x224x224",
        )
    dims = tuple(int(d) for d in re.split(r"[xX×,]", text.replace(" ", "")))
    if len(dims) != 4 or any(d <= 0 for d in dims):
        raise UsageError(
            f"malformed --input-shape '{text}'",
            "write it as NxCxHxW with 4 positive integers, e.g. 1x3x224x224",
        )
    check_input_size(dims)
    return dims


def format_shape(shape: tuple[int | str, ...] | list[int | str]) -> str:
    return "x".join(str(d) for d in shape)
