"""dnnsplit checkpoints: a state_dict plus the architecture reference, loadable with weights_only=True.

Only tensors, strings, numbers and lists are stored, so ``torch.load(..., weights_only=True)`` reads it
and every command takes the file as a MODEL (the loader rebuilds ``arch`` and applies the weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnnsplit.errors import UsageError
from dnnsplit.fileio import atomic_path
from dnnsplit.models.loading import LoadedModel

SCHEMA = "dnnsplit/checkpoint@1"


def arch_reference(loaded: LoadedModel) -> str:
    """The MODEL string that rebuilds ``loaded``'s architecture (random weights)."""
    if loaded.kind in ("torchvision", "import"):
        return loaded.source
    if loaded.kind == "checkpoint":
        arch = _checkpoint_arch(Path(loaded.source))
        if arch:
            return arch
    raise UsageError(
        f"cannot record the architecture of {loaded.source} ({loaded.kind})",
        "train from torchvision:NAME, package.module:factory or a dnnsplit checkpoint",
    )


def _checkpoint_arch(path: Path) -> str | None:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a dnnsplit checkpoint
        return None
    return str(obj["arch"]) if isinstance(obj, dict) and obj.get("arch") else None


def save_checkpoint(
    path: str | Path,
    module: nn.Module,
    arch: str,
    num_classes: int,
    input_shape: Sequence[int],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write ``module``'s weights with what is needed to rebuild it, atomically."""
    payload: dict[str, Any] = {
        "schema": SCHEMA,
        "arch": arch,
        "num_classes": int(num_classes),
        "input_shape": [int(v) for v in input_shape],
        "state_dict": {k: v.detach().cpu().clone() for k, v in module.state_dict().items()},
    }
    payload.update(extra or {})
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
