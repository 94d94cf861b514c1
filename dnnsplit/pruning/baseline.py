"""The uniform baseline: torch-pruning's MagnitudePruner with one global ratio for every layer.

This is how torch-pruning is usually driven (a channel ratio, no latency in the loop). For a latency
target the baseline takes the smallest ratio (in steps of 0.05) whose measured latency meets it, trying
them in order, so the two methods are compared at the same target with the same fine-tuning.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from dnnsplit.pruning.structure import classifier_layers

RATIOS = tuple(round(0.05 * k, 2) for k in range(1, 19))  # 0.05 ... 0.90


def uniform(model: nn.Module, example: torch.Tensor, num_classes: int, ratio: float) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of the channels of every prunable layer removed (L2 magnitude)."""
    import torch_pruning as tp

    pruned = copy.deepcopy(model).eval()
    pruner = tp.pruner.MagnitudePruner(
        pruned,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=classifier_layers(pruned, num_classes),
    )
    pruner.step()
    return pruned.eval()

