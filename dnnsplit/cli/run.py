"""`dnnsplit run`: run a split model's segments in order on one input; top-5 classes and per-segment cost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dnnsplit.cli.common import Format, guarded, human_bytes, out, print_document, simple_table
from dnnsplit.errors import UsageError

EXAMPLES = """
Examples:

  dnnsplit run segments/ --input cat.jpg

  dnnsplit run segments/ --input frame.npy --format json
"""


@guarded
def run(
    directory: Annotated[
        Path, typer.Argument(help="A directory written by `dnnsplit split`.", show_default=False)
    ],
    input_file: Annotated[
        Path,
        typer.Option("--input", help="An image (resized and normalised as ImageNet models expect) or .npy."),
    ],
    top: Annotated[int, typer.Option(help="How many classes to show.")] = 5,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads per segment.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
) -> None:
    """Run the segments of DIRECTORY one after another in onnxruntime on one input (the reference chain)."""
    from dnnsplit.limits import check_threads

    check_top(top)
    check_threads(threads)
    from dnnsplit.images import load_inputs
    from dnnsplit.splitting.chain import SegmentChain

    chain = SegmentChain.load(directory, threads)
    x = load_inputs(input_file, chain.manifest.input.shape)[:1]
    results, runs = chain.run(x)
    classes = top_classes(chain.manifest, results, top)
    segments = [{"index": r.index, "tier": r.tier, "ms": r.ms, "sent_bytes": r.sent_bytes} for r in runs]
    early = chain.manifest.early_exit is not None and len(runs) < len(chain.manifest.segments)
    if fmt != Format.table:
        document = {"input": str(input_file), "top": classes, "segments": segments, "early_exit": early}
        print_document(document, fmt.value)
        return
    out.print(classes_table(f"Top {len(classes)} for {input_file}", classes))
    if early:
        out.print("the branch was confident: answered on the first segment (early exit)")
    out.print(
        simple_table(
            "Segments (one process, onnxruntime CPU)",
            ["#", "tier", "ms", "sends on"],
            [
                [r.index + 1, r.tier, f"{r.ms:.2f}", human_bytes(r.sent_bytes) if r.sent_bytes else "-"]
                for r in runs
            ],
        )
    )


def check_top(top: int) -> None:
    if top < 1:
        raise UsageError(f"--top must be at least 1 (got {top})", "pass --top 5, say")


def top_classes(manifest: Any, results: dict[str, Any], top: int) -> list[dict[str, Any]]:
    """The ``top`` classes of the model's first output (softmax over its logits), with ImageNet names."""
    import numpy as np

    first = manifest.outputs[0].name
    logits = np.asarray(results[first], dtype=np.float64).reshape(-1)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)[: max(top, 1)]
    from dnnsplit.runtime.labels import class_names

    names = class_names(manifest.model, len(logits))
    return [
        {
            "class": int(i),
            "name": names[i] if names else None,
            "probability": float(probs[i]),
            "logit": float(logits[i]),
        }
        for i in order
    ]


def classes_table(title: str, classes: list[dict[str, Any]]) -> Any:
    return simple_table(
        title,
        ["class", "name", "probability"],
        [[c["class"], c["name"] or "-", f"{c['probability']:.4f}"] for c in classes],
    )
