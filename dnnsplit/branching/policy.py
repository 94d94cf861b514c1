"""The exit policy: a sample exits at the branch when its normalised entropy H(p)/log(C) is below a threshold.

The threshold is calibrated on the validation split to maximise the exit rate subject to
overall accuracy (exited samples answered by the branch, the rest by the backbone) >= backbone
accuracy - ``max_accuracy_drop``. The chosen threshold sits half-way between two observed entropies,
so a sample is never decided by a rounding difference between PyTorch and onnxruntime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from dnnsplit.errors import UsageError

CURVE_THRESHOLDS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0)


def normalised_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H(softmax(logits)) / log(C) per row, in [0, 1]."""
    log_p = F.log_softmax(logits.float(), dim=1)
    return -(log_p.exp() * log_p).sum(dim=1) / math.log(logits.shape[1])


@dataclass(frozen=True)
class ExitFigures:
    """What a threshold gives on one split."""

    threshold: float
    exit_rate: float
    branch_exited_accuracy: float | None  # None when nothing exits
    overall_accuracy: float
    backbone_accuracy: float

    def as_dict(self) -> dict[str, float | None]:
        return {
            "threshold": self.threshold,
            "exit_rate": self.exit_rate,
            "branch_exited_accuracy": self.branch_exited_accuracy,
            "overall_accuracy": self.overall_accuracy,
            "backbone_accuracy": self.backbone_accuracy,
        }


def exit_figures(
    threshold: float, branch_logits: torch.Tensor, backbone_logits: torch.Tensor, labels: torch.Tensor
) -> ExitFigures:
    """Exit rate and accuracies of ``threshold`` on one split."""
    exits = normalised_entropy(branch_logits) < threshold
    branch_pred, main_pred = branch_logits.argmax(1), backbone_logits.argmax(1)
    answer = torch.where(exits, branch_pred, main_pred)
    n = max(len(labels), 1)
    exited = int(exits.sum())
    return ExitFigures(
        threshold=float(threshold),
        exit_rate=exited / n,
        branch_exited_accuracy=float((branch_pred[exits] == labels[exits]).float().mean())
        if exited
        else None,
        overall_accuracy=float((answer == labels).float().mean()),
        backbone_accuracy=float((main_pred == labels).float().mean()),
    )


def check_max_drop(max_drop: float) -> None:
    if not (0.0 <= max_drop <= 1.0) or math.isnan(max_drop):
        raise UsageError(
            f"--max-accuracy-drop must be within [0, 1] (got {max_drop})", "e.g. 0.01 for one point"
        )


def calibrate_threshold(
    branch_logits: torch.Tensor, backbone_logits: torch.Tensor, labels: torch.Tensor, max_drop: float
) -> float:
    """The threshold with the highest exit rate whose overall accuracy stays within ``max_drop``."""
    check_max_drop(max_drop)
    entropy = normalised_entropy(branch_logits)
    order = torch.argsort(entropy, stable=True)
    h = entropy[order]
    branch_ok = (branch_logits.argmax(1) == labels)[order].float()
    main_ok = (backbone_logits.argmax(1) == labels)[order].float()
    n = len(labels)
    floor = float(main_ok.mean()) - max_drop
    # Exiting the k lowest-entropy samples: branch answers the first k, the backbone the rest.
    branch_prefix = torch.cat([torch.zeros(1), torch.cumsum(branch_ok, 0)])
    main_suffix = torch.cat([torch.cumsum(main_ok.flip(0), 0).flip(0), torch.zeros(1)])
    overall = (branch_prefix + main_suffix) / n
    best = 0
    for k in range(n, 0, -1):
        # A threshold can only separate k from k+1 where their entropies differ.
        if k < n and h[k] <= h[k - 1]:
            continue
        if float(overall[k]) >= floor - 1e-12:
            best = k
            break
    if best == 0:
        return 0.0  # nothing exits: entropy is never below 0
    if best == n:
        return float(min(1.0 + 1e-6, (float(h[-1]) + 1.0) / 2 + 1e-6))
    return (float(h[best - 1]) + float(h[best])) / 2
