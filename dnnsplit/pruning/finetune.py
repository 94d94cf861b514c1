"""Fine-tuning a pruned variant by distillation from the unpruned model (training/train.py's loop)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from dnnsplit.progress import ProgressFn
from dnnsplit.training.data import DataSplits
from dnnsplit.training.train import TrainSettings, accuracy, train_classifier


@dataclass(frozen=True)
class FinetuneSettings:
    epochs: int = 5
    lr: float = 0.01  # a fifth of training's: the pruned weights are a good start
    batch_size: int = 64
    temperature: float = 4.0
    distil_weight: float = 0.7
    seed: int = 0


def finetune(
    student: nn.Module,
    teacher: nn.Module,
    data: DataSplits,
    settings: FinetuneSettings,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Distil ``teacher`` into ``student`` in place; returns the figures variants.yaml records."""
    result = train_classifier(
        student,
        data,
        TrainSettings(
            epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size, seed=settings.seed
        ),
        progress=progress,
        teacher=teacher,
        temperature=settings.temperature,
        distil_weight=settings.distil_weight,
    )
    return {
        **asdict(settings),
        "best_epoch": result.best_epoch,
        "val_accuracy": result.best_val_accuracy,
        "seconds": round(sum(r.seconds for r in result.history), 2),
    }


def test_accuracy(module: nn.Module, data: DataSplits) -> tuple[float, float]:
    """(test, val) top-1 accuracy."""
    return accuracy(module, data.loader("test", 256)), accuracy(module, data.loader("val", 256))
