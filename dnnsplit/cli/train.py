"""`dnnsplit train` and `dnnsplit eval`: train a backbone on digits or an ImageFolder; test accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dnnsplit.cli.common import (
    Format,
    ModelArg,
    err,
    guarded,
    out,
    print_document,
    progress_bar,
    simple_table,
    takes_model,
)
from dnnsplit.errors import UsageError
from dnnsplit.fileio import check_writable

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


@guarded
@takes_model
def train(
    model: ModelArg,
    data: DataOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Checkpoint to write (.pt).")],
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 15,
    lr: Annotated[float, typer.Option(help="Peak SGD learning rate (cosine schedule).")] = 0.05,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 64,
    workers: Annotated[int, typer.Option(help="Data-loading worker processes (0: in the main process).")] = 0,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
    model_opts: Any = None,  # the MODEL flags, given by @takes_model
) -> None:
    """Train MODEL on --data and write a checkpoint that every command takes as a MODEL.

    The checkpoint holds the best validation epoch and is rewritten after every epoch, so Ctrl-C leaves
    the last good one behind.
    """
    from dnnsplit.training.run import load_for_training, train_to_checkpoint
    from dnnsplit.training.train import TrainSettings

    if epochs < 1:
        raise UsageError(f"--epochs must be at least 1 (got {epochs})", "pass --epochs 15, say")
    if not lr > 0 or batch_size < 1 or workers < 0:
        raise UsageError("--lr must be > 0, --batch-size >= 1 and --workers >= 0", "check the numbers")
    check_writable(output)  # before minutes of training
    loaded, splits = load_for_training(model, data, model_opts)
    seed = model_opts.seed
    settings = TrainSettings(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, workers=workers)
    with progress_bar() as update:
        outcome = train_to_checkpoint(
            loaded,
            splits,
            settings,
            output,
            progress=update,
        )
    result, reference, test_acc = outcome.result, outcome.arch, outcome.test_accuracy
    report = outcome.to_dict(splits)
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
@takes_model
def eval(  # noqa: A001 - the command is called eval
    model: ModelArg,
    data: DataOpt,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
    model_opts: Any = None,  # the MODEL flags, given by @takes_model
) -> None:
    """Print MODEL's top-1 accuracy on a split of --data (default: the test split)."""
    from dnnsplit.training.run import load_for_training, split_accuracy

    if split not in ("train", "val", "test"):
        raise UsageError(f"unknown split '{split}'", "use train, val or test")
    loaded, splits = load_for_training(model, data, model_opts, augment=False)
    acc = split_accuracy(loaded, splits, split)
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
