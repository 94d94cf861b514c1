"""Checkpoints of pruned models that every command takes as a MODEL (``torch.load(weights_only=True)``).

A pruned model is its architecture with fewer channels. The checkpoint is a dnnsplit checkpoint (arch +
state_dict) plus ``pruned``: the channel attributes of every module that changed; loading rebuilds the
architecture, resizes those modules, then applies the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnnsplit.training.checkpoint import save_checkpoint

# Attributes torch-pruning changes, per module type.
_ATTRS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Conv2d: ("in_channels", "out_channels", "groups"),
    nn.BatchNorm2d: ("num_features",),
    nn.Linear: ("in_features", "out_features"),
}


def channel_attributes(model: nn.Module) -> dict[str, dict[str, int]]:
    """Channel attributes of every module of a type torch-pruning resizes."""
    result = {}
    for name, module in model.named_modules():
        attrs = next((a for t, a in _ATTRS.items() if isinstance(module, t)), None)
        if attrs:
            result[name] = {a: int(getattr(module, a)) for a in attrs}
    return result


def changed_attributes(pruned: nn.Module, original: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    now = channel_attributes(pruned)
    return {name: attrs for name, attrs in now.items() if original.get(name) != attrs}


def resize_modules(model: nn.Module, changed: dict[str, dict[str, int]], state_dict: dict[str, Any]) -> None:
    """Give ``model``'s modules the channel counts in ``changed`` and parameters of the saved shapes."""
    for name, attrs in changed.items():
        module = model.get_submodule(name)
        for attr, value in attrs.items():
            setattr(module, attr, int(value))
        prefix = f"{name}." if name else ""
        for key in list(module._parameters):
            saved = state_dict.get(prefix + key)
            if saved is not None and module._parameters[key] is not None:
                module._parameters[key] = nn.Parameter(torch.empty_like(saved))
        for key in list(module._buffers):
            saved = state_dict.get(prefix + key)
            if saved is not None and module._buffers[key] is not None:
                module._buffers[key] = torch.empty_like(saved)


def save_pruned(
    path: str | Path,
    module: nn.Module,
    arch: str,
    num_classes: int,
    input_shape: Sequence[int],
    original: dict[str, dict[str, int]],
    extra: dict[str, Any] | None = None,
) -> None:
    save_checkpoint(
        path,
        module,
        arch,
        num_classes,
        input_shape,
        {"pruned": changed_attributes(module, original), **(extra or {})},
    )
