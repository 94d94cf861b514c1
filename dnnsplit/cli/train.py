"""`dnnsplit train` and `dnnsplit eval`: train a backbone on digits or an ImageFolder; test accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dnnsplit.cli.common import (
    ArchOpt,
    Format,
    InputShapeOpt,
    ModelArg,
    NumClassesOpt,
    SeedOpt,
    TrustPickleOpt,
    WeightsOpt,
    err,
    guarded,
    model_options,
    out,
    print_document,
    progress_bar,
    simple_table,
)
from dnnsplit.errors import UsageError

TRAIN_EXAMPLES = """
Examples:

  dnnsplit train torchvision:resnet18 --num-classes 10 --input-shape 1x3x32x32 --data digits --output r18.pt

  dnnsplit train torchvision:mobilenet_v2 --num-classes 5 --input-shape 1x3x64x64 \\
      --data imagefolder:flowers/ --epochs 30 --output mnv2.pt

  dnnsplit eval r18.pt --data digits       # the checkpoint knows its architecture and input shape
"""

EVAL_EXAMPLES = """
Examples:

  dnnsplit eval r18.pt --data digits

  dnnsplit eval r18.pt --data imagefolder:photos/ --split val --format json
"""

DataOpt = Annotated[
    str,
    typer.Option("--data", help="digits (bundled with scikit-learn) or imagefolder:PATH."),
]


def load_for_training(
    model: str,
    data: str,
    input_shape: str | None,
    seed: int,
    weights: str | None,
    num_classes: int | None,
    arch: str | None,
    trust_pickle: bool,
    augment: bool = True,
):  # noqa: ANN201 - (LoadedModel, DataSplits); typed where they are defined
    """Load MODEL and the data it trains or is tested on; the class counts must agree."""
    from dnnsplit.models import load_model
    from dnnsplit.training.data import DataSpec, load_data

    spec = DataSpec.parse(data)  # before loading a model: a bad --data fails at once
    options = model_options(input_shape, seed, weights, num_classes, arch, trust_pickle)
    loaded = load_model(model, options)
    if loaded.module is None:
        raise UsageError(
            f"{model} is an ONNX file; training needs a PyTorch model",
            "pass torchvision:NAME, package.module:factory or a .pt checkpoint",
        )
    if loaded.input_shape is None:
        raise UsageError(f"no input shape is known for {model}", "pass --input-shape, e.g. 1x3x32x32")
    # The split is fixed (seed 0) whatever --seed says: eval must never test on another run's training data.
    splits = load_data(spec, loaded.input_shape, seed=0, augment=augment)
    return loaded, splits


@guarded
def train(
    model: ModelArg,
    data: DataOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write (.pt).")],
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 15,
    lr: Annotated[float, typer.Option(help="Peak SGD learning rate (cosine schedule).")] = 0.05,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 64,
    workers: Annotated[int, typer.Option(help="Data-loading worker processes (0: in the main process).")] = 0,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
    input_shape: InputShapeOpt = None,
    seed: SeedOpt = 0,
    weights: WeightsOpt = None,
    num_classes: NumClassesOpt = None,
    arch: ArchOpt = None,
    trust_pickle: TrustPickleOpt = False,
) -> None:
    """Train MODEL on --data and write a checkpoint that every command takes as a MODEL.

    The checkpoint holds the best validation epoch and is rewritten after every epoch, so Ctrl-C leaves
    the last good one behind.
    """
    from dnnsplit.training.checkpoint import arch_reference, save_checkpoint
    from dnnsplit.training.data import check_classes
    from dnnsplit.training.train import TrainSettings, accuracy, train_classifier

    if epochs < 1:
        raise UsageError(f"--epochs must be at least 1 (got {epochs})", "pass --epochs 15, say")
    if not lr > 0 or batch_size < 1 or workers < 0:
        raise UsageError("--lr must be > 0, --batch-size >= 1 and --workers >= 0", "check the numbers")
    if not output.parent.is_dir():
        raise UsageError(f"the directory of '{output}' does not exist", "create it first")
    loaded, splits = load_for_training(
        model, data, input_shape, seed, weights, num_classes, arch, trust_pickle
    )
    module = loaded.module
    assert module is not None and loaded.input_shape is not None
    import torch

    with torch.no_grad():
        classes = int(module.eval()(torch.zeros((2, *loaded.input_shape[1:]))).shape[1])
    check_classes(splits, classes)
    reference = arch_reference(loaded)
    settings = TrainSettings(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, workers=workers)

    def checkpoint(best, record) -> None:  # noqa: ANN001
        save_checkpoint(
            output,
            best,
            reference,
            classes,
            loaded.input_shape,
            {"data": splits.source, "epochs_done": record.epoch},
        )

    with progress_bar() as update:
        result = train_classifier(
            module,
            splits,
            settings,
            progress=lambda stage, done, total, msg: update(f"{stage} {msg}", done, total),
            on_epoch=checkpoint,
        )
        test_acc = accuracy(module, splits.loader("test", 256))
    save_checkpoint(
        output,
        module,
        reference,
        classes,
        loaded.input_shape,
        {"data": splits.source, "epochs_done": epochs, "test_accuracy": test_acc},
    )
    report = {
        "checkpoint": str(output),
        "arch": reference,
        "data": splits.source,
        "sizes": splits.sizes(),
        "best_epoch": result.best_epoch,
        "val_accuracy": result.best_val_accuracy,
        "test_accuracy": test_acc,
        "seconds": sum(r.seconds for r in result.history),
        "history": [vars(r) for r in result.history],
    }
    if fmt != Format.table:
        print_document(report, fmt.value)
        return
    rows = [
        (
            r.epoch,
            f"{r.train_loss:.3f}",
            f"{r.train_accuracy:.3f}",
            f"{r.val_accuracy:.3f}",
            f"{r.seconds:.1f}",
        )
        for r in result.history
    ]
    out.print(
        simple_table(
            f"training {reference} on {splits.source}", ["epoch", "loss", "train acc", "val acc", "s"], rows
        )
    )
    out.print(f"best epoch {result.best_epoch}: val {result.best_val_accuracy:.4f}, test {test_acc:.4f}")
    err.print(f"wrote {output}")


@guarded
def eval(  # noqa: A001 - the command is called eval
    model: ModelArg,
    data: DataOpt,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
    input_shape: InputShapeOpt = None,
    seed: SeedOpt = 0,
    weights: WeightsOpt = None,
    num_classes: NumClassesOpt = None,
    arch: ArchOpt = None,
    trust_pickle: TrustPickleOpt = False,
) -> None:
    """Print MODEL's top-1 accuracy on a split of --data (default: the test split)."""
    import torch

    from dnnsplit.training.data import check_classes
    from dnnsplit.training.train import accuracy

    if split not in ("train", "val", "test"):
        raise UsageError(f"unknown split '{split}'", "use train, val or test")
    loaded, splits = load_for_training(
        model, data, input_shape, seed, weights, num_classes, arch, trust_pickle, augment=False
    )
    module = loaded.module
    assert module is not None and loaded.input_shape is not None
    with torch.no_grad():
        check_classes(splits, int(module.eval()(torch.zeros((2, *loaded.input_shape[1:]))).shape[1]))
    acc = accuracy(module, splits.loader(split, 256))
    report = {
        "model": model,
        "data": splits.source,
        "split": split,
        "samples": splits.sizes()[split],
        "accuracy": acc,
    }
    if fmt != Format.table:
        print_document(report, fmt.value)
        return
    out.print(
        simple_table(
            "accuracy",
            ["model", "data", "split", "samples", "top-1"],
            [(model, splits.source, split, report["samples"], f"{acc:.4f}")],
        )
    )
