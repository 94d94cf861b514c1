"""`dnnsplit cuts`: the valid single-boundary cuts of a model, in order, with what crosses them."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dnnsplit.cli.common import (
    ModelArg,
    TableFormat,
    guarded,
    human_bytes,
    out,
    print_csv,
    print_document,
    progress_bar,
    simple_table,
    takes_model,
)

EXAMPLES = """
Examples:

  dnnsplit cuts torchvision:resnet18

  dnnsplit cuts torchvision:resnet18 --single --format csv > cuts.csv

  dnnsplit split torchvision:resnet18 --cut /layer2/layer2.1/relu_1/Relu_output_0 --output segments/
"""


@guarded
@takes_model
def cuts(
    model: ModelArg,
    single: Annotated[bool, typer.Option("--single", help="Only cuts that one tensor crosses.")] = False,
    fmt: Annotated[
        TableFormat, typer.Option("--format", help="How to print the result.")
    ] = TableFormat.table,
    model_opts: Any = None,  # the MODEL flags, given by @takes_model
) -> None:
    """List where MODEL can be cut in two (after each layer, in topological order) and the bytes crossing."""
    from dnnsplit.profiling import prepare_model
    from dnnsplit.splitting.cuts import prefix_cuts

    with progress_bar() as progress:
        prepared = prepare_model(model, model_opts, progress)
    found = [c for c in prefix_cuts(prepared.graph) if not single or len(c.tensors) == 1]
    rows = [
        {"position": c.position, "after": c.after, "bytes": c.bytes, "tensors": list(c.tensors)}
        for c in found
    ]
    if fmt in (TableFormat.json, TableFormat.yaml):
        print_document({"model": prepared.model_block(), "cuts": rows}, fmt.value)
    elif fmt == TableFormat.csv:
        print_csv(
            ["position", "after", "bytes", "tensors"],
            [[r["position"], r["after"], r["bytes"], ",".join(r["tensors"])] for r in rows],
        )
    else:
        table_rows = [[c.position, c.after, human_bytes(c.bytes), ",".join(c.tensors)] for c in found]
        title = f"Cuts of {prepared.loaded.name} (pass the tensors to split --cut)"
        out.print(simple_table(title, ["after #", "after layer", "crossing", "tensors"], table_rows))
