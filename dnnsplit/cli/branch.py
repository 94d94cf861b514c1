"""`dnnsplit branch`: a binarized early-exit branch for a trained model, calibrated and exported to ONNX."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dnnsplit.cli.common import (
    Format,
    ModelArg,
    err,
    guarded,
    human_bytes,
    out,
    print_document,
    progress_bar,
    simple_table,
    takes_model,
)
from dnnsplit.errors import UsageError

EXAMPLES = """
Examples:

  dnnsplit train torchvision:resnet18 --num-classes 10 --input-shape 1x3x32x32 --data digits -o r18.pt
  dnnsplit branch r18.pt --data digits --output r18-branch/ --plot r18-branch/exits.png

  dnnsplit branch r18.pt --list-points              # where a branch can be attached

  dnnsplit branch mnv2.pt --data imagefolder:photos/ --at features.2 --max-accuracy-drop 0.005 -o b/

  dnnsplit branch mnv2.pt --data digits --activations real -o b/   # binary weights, real inputs

  dnnsplit plan profile.json --branch r18-branch/   # expected latency with the measured exit rate
"""


@guarded
@takes_model
def branch(
    model: ModelArg,
    data: Annotated[
        str | None, typer.Option("--data", help="digits (bundled with scikit-learn) or imagefolder:PATH.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Directory for mobile.onnx, edge.onnx and branch.yaml."),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at", help="Module path after which the branch starts (default: end of the first conv stage)."
        ),
    ] = None,
    activations: Annotated[
        str,
        typer.Option(
            help="binary: +/-1 inputs and weights (XNOR-Net); real: +/-1 weights over real inputs "
            "(BinaryConnect; as small a file, and what mobilenet_v2 needs to learn).",
        ),
    ] = "binary",
    list_points: Annotated[
        bool, typer.Option("--list-points", help="List the valid branch points and exit.")
    ] = False,
    epochs: Annotated[int, typer.Option(help="Branch training epochs.")] = 30,
    lr: Annotated[float, typer.Option(help="Branch learning rate (AdamW, cosine schedule).")] = 2e-3,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 64,
    temperature: Annotated[float, typer.Option(help="Distillation temperature T.")] = 4.0,
    distil_weight: Annotated[
        float, typer.Option(help="Weight of the distillation term; 1 - it weighs cross-entropy on labels.")
    ] = 0.7,
    joint: Annotated[
        bool, typer.Option("--joint", help="Fine-tune the backbone with the branch (BranchyNet-style).")
    ] = False,
    max_accuracy_drop: Annotated[
        float, typer.Option(help="Allowed drop of overall accuracy below the backbone's (0.01 = one point).")
    ] = 0.01,
    threads: Annotated[
        int | None, typer.Option(help="onnxruntime threads for validation and timing.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="PNG of the exit curve (threshold -> exit rate, accuracy).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier branch in the output (its own files only).")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
    model_opts: Any = None,  # the MODEL flags, given by @takes_model
) -> None:
    """Attach a binarized copy of MODEL's remaining layers after an early point, train it to mimic MODEL,
    and calibrate when a sample may exit there.

    Writes DIR/mobile.onnx (input -> stem output, branch logits, entropy, exit flag; binary weights
    stored as bits), DIR/edge.onnx (stem output -> logits) and DIR/branch.yaml with the figures
    measured on the test split. An interrupted run resumes from DIR with the same command.
    Exit 1 when onnxruntime and PyTorch disagree on an exit decision.
    """
    from dnnsplit.branching.points import default_point, trace
    from dnnsplit.branching.points import list_points as all_points
    from dnnsplit.branching.policy import check_max_drop
    from dnnsplit.models import load_model

    check_max_drop(max_accuracy_drop)
    if list_points:
        loaded = load_model(model, model_opts)
        gm = trace(loaded.torch_module("branching").eval())
        points = all_points(gm)
        default = default_point(gm, points)
        rows = [{"point": p.name, "aliases": list(p.aliases), "default": p == default} for p in points]
        if fmt != Format.table:
            print_document({"model": model, "points": rows}, fmt.value)
            return
        out.print(
            simple_table(
                f"branch points of {model}",
                ["point", "also", "default"],
                [(r["point"], ", ".join(r["aliases"]), "*" if r["default"] else "") for r in rows],
            )
        )
        return
    if data is None or output is None:
        raise UsageError("--data and --output are required", "e.g. --data digits --output branch/")
    from dnnsplit.branching.run import BranchSettings, make_branch
    from dnnsplit.branching.train import BranchTrainSettings
    from dnnsplit.training.run import load_for_training

    settings = BranchSettings(
        at=at,
        activations=activations,
        max_accuracy_drop=max_accuracy_drop,
        train=BranchTrainSettings(
            epochs=epochs,
            lr=lr,
            batch_size=batch_size,
            temperature=temperature,
            distil_weight=distil_weight,
            joint=joint,
            seed=model_opts.seed,
        ),
        force=force,
        threads=threads,
    )
    settings.check()
    from dnnsplit.output_dir import BRANCH, claim

    claim(output, BRANCH, force=True, into=True)  # a directory holding anything but a branch: refused now
    if (
        plot is not None
        and not (plot.parent if str(plot.parent) else Path(".")).is_dir()
        and plot.parent != output
    ):
        raise UsageError(f"the directory of '{plot}' does not exist", "create it first")
    loaded, splits = load_for_training(model, data, model_opts)
    with progress_bar() as update:
        result = make_branch(
            loaded,
            splits,
            output,
            settings,
            progress=update,
        )
    doc = result.document
    if plot is not None:
        from dnnsplit.branching.plot import plot_exit_curve

        plot_exit_curve(doc, plot)
    if fmt != Format.table:
        print_document(doc.to_dict(), fmt.value)
        return
    rows = [
        (
            f"{c['threshold']:.4g}",
            f"{c['exit_rate']:.3f}",
            "-" if c["branch_exited_accuracy"] is None else f"{c['branch_exited_accuracy']:.4f}",
            f"{c['overall_accuracy']:.4f}",
            "*" if c["threshold"] == doc.threshold else "",
        )
        for c in doc.curve
    ]
    out.print(
        simple_table(
            f"exit curve on the test split ({doc.data}, branch after {doc.at})",
            ["threshold", "exit rate", "acc exited", "overall acc", "chosen"],
            rows,
        )
    )
    s, lat = doc.sizes, doc.latency
    out.print(
        f"threshold {doc.threshold:.4g}: exit rate {doc.exit_rate:.1%}, overall accuracy "
        f"{doc.accuracy.overall:.4f} (backbone {doc.accuracy.backbone:.4f})"
    )
    out.print(
        f"mobile.onnx {human_bytes(s.mobile_onnx_bytes)}: "
        f"{s.full_model_bytes / s.mobile_onnx_bytes:.1f}x smaller than the whole model "
        f"({human_bytes(s.full_model_bytes)}); branch weights {human_bytes(s.branch_packed_bytes)} packed vs "
        f"{human_bytes(s.branch_float_bytes)} as float32 "
        f"({s.branch_float_bytes / max(s.branch_packed_bytes, 1):.1f}x)"
    )
    out.print(
        f"latency here (onnxruntime): stem {lat.stem_ms:.2f} ms, branch {lat.branch_ms:.2f} ms, "
        f"rest {lat.rest_ms:.2f} ms"
    )
    err.print(f"wrote {output}/mobile.onnx, edge.onnx, branch.yaml")
