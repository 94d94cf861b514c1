"""Train the branch: distillation from the frozen backbone (default), or joint fine-tuning (BranchyNet).

Frozen: the stem and the backbone's rest run without gradients; the branch learns from the backbone's
logits at temperature T plus cross-entropy on the labels. Joint: the stem and rest train too, with
``main_weight`` x CE(backbone) + ``branch_weight`` x the branch's loss, so the shared stem learns
features both exits can use.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from dnnsplit.progress import ProgressFn
from dnnsplit.training.data import DataSplits
from dnnsplit.training.train import cosine_lr, distillation_loss


@dataclass(frozen=True)
class BranchTrainSettings:
    """Defaults reach >= 60% exits at <= 1 point accuracy drop on digits (resnet18, mobilenet_v2)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    temperature: float = 4.0
    distil_weight: float = 0.7
    joint: bool = False
    main_weight: float = 1.0
    branch_weight: float = 1.0
    joint_lr: float = 1e-3
    seed: int = 0
    workers: int = 0


@dataclass
class BranchEpoch:
    epoch: int
    loss: float
    branch_val_accuracy: float
    backbone_val_accuracy: float
    seconds: float


@dataclass
class BranchTrainState:
    """Everything needed to resume: weights and optimiser state after ``epoch`` epochs."""

    epoch: int = 0
    history: list[BranchEpoch] = field(default_factory=list)
    best_val_accuracy: float = -1.0
    best_branch: dict[str, torch.Tensor] | None = None


def _accuracies(
    stem: nn.Module, rest: nn.Module, branch: nn.Module, loader: torch.utils.data.DataLoader
) -> tuple[float, float]:
    correct_b = correct_m = total = 0
    for m in (stem, rest, branch):
        m.eval()
    with torch.no_grad():
        for images, labels in loader:
            f = stem(images)
            correct_b += int((branch(f).argmax(1) == labels).sum())
            correct_m += int((rest(f).argmax(1) == labels).sum())
            total += len(labels)
    return correct_b / max(total, 1), correct_m / max(total, 1)


def train_branch(
    stem: nn.Module,
    rest: nn.Module,
    branch: nn.Module,
    data: DataSplits,
    settings: BranchTrainSettings,
    progress: ProgressFn | None = None,
    state: BranchTrainState | None = None,
    on_epoch: Callable[[BranchTrainState, dict[str, Any]], None] | None = None,
    optimizer_state: dict[str, Any] | None = None,
) -> BranchTrainState:
    """Train ``branch`` (and in joint mode ``stem`` and ``rest``) in place; returns the final state.

    ``on_epoch`` receives the state and the optimiser's state_dict after every epoch (for resuming).
    On return the branch holds its best-validation weights.
    """
    state = state or BranchTrainState()
    torch.manual_seed(settings.seed + state.epoch)
    loader = data.loader("train", settings.batch_size, shuffle=True, workers=settings.workers)
    val_loader = data.loader("val", 256, workers=settings.workers)
    groups: list[dict[str, Any]] = [{"params": list(branch.parameters()), "lr": settings.lr}]
    if settings.joint:
        groups.append({"params": list(stem.parameters()) + list(rest.parameters()), "lr": settings.joint_lr})
    else:
        for p in list(stem.parameters()) + list(rest.parameters()):
            p.requires_grad_(False)
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    if optimizer_state:
        optimizer.load_state_dict(optimizer_state)
    scheduler = cosine_lr(optimizer, settings.epochs * len(loader))
    with warnings.catch_warnings():  # stepping before any optimiser step is the point here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(state.epoch * len(loader)):  # resume the schedule where it stopped
            scheduler.step()
    for epoch in range(state.epoch + 1, settings.epochs + 1):
        start = time.perf_counter()
        branch.train()
        stem.train(settings.joint)
        rest.train(settings.joint)
        loss_sum, seen = 0.0, 0
        for step, (images, labels) in enumerate(loader, 1):
            if settings.joint:
                features = stem(images)
                main_logits = rest(features)
                teacher = main_logits.detach()
                loss = settings.main_weight * F.cross_entropy(main_logits, labels)
            else:
                with torch.no_grad():
                    features = stem(images)
                    teacher = rest(features)
                loss = torch.zeros(())
            branch_logits = branch(features)
            loss = loss + settings.branch_weight * distillation_loss(
                branch_logits, teacher, labels, settings.temperature, settings.distil_weight
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(labels)
            seen += len(labels)
            if progress:
                progress(
                    f"branch epoch {epoch}/{settings.epochs}",
                    step,
                    len(loader),
                    f"loss {loss_sum / seen:.3f}",
                )
        branch_acc, main_acc = _accuracies(stem, rest, branch, val_loader)
        state.epoch = epoch
        state.history.append(
            BranchEpoch(epoch, loss_sum / max(seen, 1), branch_acc, main_acc, time.perf_counter() - start)
        )
        if branch_acc > state.best_val_accuracy:
            state.best_val_accuracy = branch_acc
            state.best_branch = copy.deepcopy(branch.state_dict())
        if on_epoch:
            on_epoch(state, optimizer.state_dict())
    if state.best_branch is not None:
        branch.load_state_dict(state.best_branch)
    for m in (stem, rest, branch):
        m.eval()
    return state
