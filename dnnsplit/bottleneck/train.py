"""Train the bottleneck by distillation from the original model (head network distillation, sc2bench).

The original model is the teacher. The stem (the phone's layers before the cut) stays frozen, so the
mobile side computes what it did; the rest is frozen too unless ``fine_tune``. The loss is Hinton
distillation on the logits (with a share of cross-entropy on the labels), plus the mean squared error of
the decoded features against the original ones (normalised by their mean square), which gives the
decoder a target long before the logits agree, plus ``rate_lambda`` x the rate model's estimated bits per
code element when there is one. The stem and rest run in eval mode throughout: their BatchNorm statistics
are the original model's. The weights of the epoch with the best validation agreement with the teacher
are kept.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from dnnsplit.bottleneck.layers import BottleneckModel, round_code
from dnnsplit.bottleneck.rate import bits_per_element
from dnnsplit.progress import ProgressFn, no_progress
from dnnsplit.training.data import DataSplits
from dnnsplit.training.train import cosine_lr, distillation_loss


@dataclass(frozen=True)
class BottleneckTrainSettings:
    epochs: int = 10
    lr: float = 3e-3
    batch_size: int = 64
    temperature: float = 4.0
    distil_weight: float = 0.7  # 1 - it weighs cross-entropy on the labels
    feature_weight: float = 1.0
    rate_lambda: float = 0.0
    fine_tune: bool = False
    tail_lr_factor: float = 0.1  # with fine_tune: the rest learns this much slower than the bottleneck
    seed: int = 0


@dataclass
class BottleneckEpoch:
    epoch: int
    loss: float
    bits_per_element: float | None  # the rate model's estimate over the epoch (None: no rate term)
    val_agreement: float
    val_accuracy: float
    seconds: float


@dataclass
class BottleneckTrainResult:
    best_epoch: int
    best_val_agreement: float
    history: list[BottleneckEpoch] = field(default_factory=list)


def trainable(model: BottleneckModel, rate: nn.Module | None, fine_tune: bool) -> list[nn.Module]:
    """The modules training changes: encoder, decoder, the rate model, and with ``fine_tune`` the rest."""
    parts: list[nn.Module] = [model.encoder, model.decoder]
    if rate is not None:
        parts.append(rate)
    if fine_tune:
        parts.append(model.rest)
    return parts


def _set_mode(model: BottleneckModel, training: bool) -> None:
    model.train(training)
    model.stem.eval()  # frozen statistics: the original model's
    model.rest.eval()


@torch.no_grad()
def agreement(
    model: BottleneckModel, teacher: nn.Module, loader: torch.utils.data.DataLoader
) -> tuple[float, float]:
    """(top-1 agreement with ``teacher``, top-1 accuracy) of the int8 model over ``loader``."""
    _set_mode(model, False)
    same, correct, seen = 0, 0, 0
    for images, labels in loader:
        predicted = model(images).argmax(1)
        same += int((predicted == teacher(images).argmax(1)).sum())
        correct += int((predicted == labels).sum())
        seen += len(labels)
    return same / max(seen, 1), correct / max(seen, 1)


def train_bottleneck(
    model: BottleneckModel,
    teacher: nn.Module,
    data: DataSplits,
    settings: BottleneckTrainSettings,
    rate: nn.Module | None = None,
    progress: ProgressFn | None = None,
) -> BottleneckTrainResult:
    """Train ``model``'s bottleneck (and ``rate``) in place; on return it holds the best validation epoch."""
    note = progress or no_progress
    torch.manual_seed(settings.seed)
    teacher.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    parts = trainable(model, rate, settings.fine_tune)
    groups = []
    for part in parts:
        for p in part.parameters():
            p.requires_grad_(True)
        factor = settings.tail_lr_factor if part is model.rest else 1.0
        groups.append({"params": list(part.parameters()), "lr": settings.lr * factor})
    optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)
    train_loader = data.loader("train", settings.batch_size, shuffle=True)
    val_loader = data.loader("val", 256)
    scheduler = cosine_lr(optimizer, settings.epochs * len(train_loader))
    result = BottleneckTrainResult(best_epoch=0, best_val_agreement=-1.0)
    best = [copy.deepcopy(p.state_dict()) for p in parts]
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        _set_mode(model, True)
        if rate is not None:
            rate.train()
        loss_sum, bits_sum, seen = 0.0, 0.0, 0
        for step, (images, labels) in enumerate(train_loader, 1):
            with torch.no_grad():
                features = model.stem(images)
                target_logits = model.rest(features) if not settings.fine_tune else teacher(images)
            latent = model.encoder(features) / model.step
            code = round_code(latent)
            decoded = model.decoder(code * model.step)
            logits = model.rest(decoded)
            loss = distillation_loss(
                logits, target_logits, labels, settings.temperature, settings.distil_weight
            )
            if settings.feature_weight > 0:
                scale = features.pow(2).mean().clamp_min(1e-8)
                loss = loss + settings.feature_weight * F.mse_loss(decoded, features) / scale
            if rate is not None:
                bits = bits_per_element(rate, latent)
                loss = loss + settings.rate_lambda * bits
                bits_sum += float(bits.detach()) * len(labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(labels)
            seen += len(labels)
            bits_note = f" {bits_sum / seen:.2f} bit/elem" if rate is not None else ""
            note(
                f"epoch {epoch}/{settings.epochs}",
                step,
                len(train_loader),
                f"loss {loss_sum / seen:.3f}{bits_note}",
            )
        val_agreement, val_accuracy = agreement(model, teacher, val_loader)
        result.history.append(
            BottleneckEpoch(
                epoch,
                loss_sum / max(seen, 1),
                None if rate is None else bits_sum / max(seen, 1),
                val_agreement,
                val_accuracy,
                time.perf_counter() - start,
            )
        )
        if val_agreement > result.best_val_agreement:
            result.best_epoch, result.best_val_agreement = epoch, val_agreement
            best = [copy.deepcopy(p.state_dict()) for p in parts]
    for part, state in zip(parts, best, strict=True):
        part.load_state_dict(state)
    for p in model.parameters():
        p.requires_grad_(False)
    _set_mode(model, False)
    return result
