"""Load a model with its data, and train it into a dnnsplit checkpoint: shared by `dnnsplit train`,
`branch`, `prune` and `pipeline`, so each stage loads and checks a model the same way."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dnnsplit.errors import UsageError
from dnnsplit.models.loading import LoadedModel, ModelOptions
from dnnsplit.progress import ProgressFn
from dnnsplit.training.data import DataSplits
from dnnsplit.training.train import TrainResult, TrainSettings


def load_for_training(
    model: str, data: str, options: ModelOptions, augment: bool = True
) -> tuple[LoadedModel, DataSplits]:
    """Load MODEL and the data it trains or is tested on (a PyTorch model with a known input shape)."""
    from dnnsplit.models import load_model
    from dnnsplit.training.data import DataSpec, load_data

    spec = DataSpec.parse(data)  # before loading a model: a bad data source fails at once
    loaded = load_model(model, options)
    loaded.torch_module("training")
    # The split is fixed (seed 0) whatever the model seed: eval never tests on another run's training data.
    splits = load_data(spec, loaded.known_input_shape(), seed=0, augment=augment)
    return loaded, splits


def output_classes(loaded: LoadedModel) -> int:
    """How many logits the model puts out (one dry run on a batch of two)."""
    assert loaded.module is not None and loaded.input_shape is not None
    with torch.no_grad():
        return int(loaded.module.eval()(torch.zeros((2, *loaded.input_shape[1:]))).shape[1])


@dataclass(frozen=True)
class TrainOutcome:
    checkpoint: Path
    arch: str
    result: TrainResult
    test_accuracy: float

    def to_dict(self, splits: DataSplits) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "arch": self.arch,
            "data": splits.source,
            "sizes": splits.sizes(),
            "best_epoch": self.result.best_epoch,
            "val_accuracy": self.result.best_val_accuracy,
            "test_accuracy": self.test_accuracy,
            "seconds": sum(r.seconds for r in self.result.history),
            "history": [vars(r) for r in self.result.history],
        }


def train_to_checkpoint(
    loaded: LoadedModel,
    splits: DataSplits,
    settings: TrainSettings,
    output: Path,
    progress: ProgressFn | None = None,
) -> TrainOutcome:
    """Train ``loaded`` on ``splits`` and write the checkpoint of its best validation epoch to ``output``.

    The checkpoint is rewritten after every epoch, so an interruption leaves the last good one behind.
    """
    from dnnsplit.models.checkpoint import write_checkpoint
    from dnnsplit.models.loading import arch_reference
    from dnnsplit.training.data import check_classes
    from dnnsplit.training.train import accuracy, train_classifier

    module = loaded.module
    assert module is not None and loaded.input_shape is not None
    if not output.parent.is_dir():
        raise UsageError(f"the directory of '{output}' does not exist", "create it first")
    classes = output_classes(loaded)
    check_classes(splits, classes)
    reference = arch_reference(loaded)
    shape = loaded.input_shape

    def checkpoint(best, record) -> None:  # noqa: ANN001
        done = {"data": splits.source, "epochs_done": record.epoch}
        write_checkpoint(output, best, reference, classes, shape, extra=done)

    result = train_classifier(module, splits, settings, progress=progress, on_epoch=checkpoint)
    test_acc = accuracy(module, splits.loader("test", 256))
    write_checkpoint(
        output,
        module,
        reference,
        classes,
        shape,
        extra={"data": splits.source, "epochs_done": settings.epochs, "test_accuracy": test_acc},
    )
    return TrainOutcome(output, reference, result, test_acc)


def split_accuracy(loaded: LoadedModel, splits: DataSplits, split: str = "test") -> float:
    """Top-1 accuracy of ``loaded`` on a split of its data (the class counts must agree)."""
    from dnnsplit.training.data import check_classes
    from dnnsplit.training.train import accuracy

    assert loaded.module is not None
    check_classes(splits, output_classes(loaded))
    return accuracy(loaded.module, splits.loader(split, 256))
