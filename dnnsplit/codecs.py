"""Boundary codecs: how a float32 tensor sent between tiers may be encoded, and what it then costs.

Shared by the cost model (``plan --compress``: transfer bytes) and the splitter (``split --compress``:
the Cast / QuantizeLinear nodes at each boundary), so the two always agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnnsplit.errors import UsageError

if TYPE_CHECKING:  # profiling.graph imports torch: the cost model must not pay for it to price bytes
    from dnnsplit.profiling.graph import TensorSpec

BYTES_PER_ELEMENT = {"fp16": 2, "int8": 1}
MODES = tuple(BYTES_PER_ELEMENT)


def check_mode(mode: str | None) -> str | None:
    if mode is not None and mode not in MODES:
        raise UsageError(f"unknown --compress '{mode}'", f"use one of {', '.join(MODES)}")
    return mode


def compressed_bytes(spec: TensorSpec, mode: str | None) -> int:
    """Bytes of a tensor sent with ``mode``: float32 tensors shrink, others (shape vectors) go as they are."""
    if mode is None or spec.dtype != "float32":
        return spec.bytes
    return spec.bytes // 4 * BYTES_PER_ELEMENT[mode]
