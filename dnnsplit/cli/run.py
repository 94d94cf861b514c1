"""`dnnsplit run`: run a split model's segments in order on one input; top-5 classes and per-segment cost."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dnnsplit.cli.common import (
    Format,
    check_top,
    classes_table,
    guarded,
    human_bytes,
    out,
    print_document,
    simple_table,
)
from dnnsplit.runtime.labels import top_classes

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
