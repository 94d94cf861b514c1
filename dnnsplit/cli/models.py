"""`dnnsplit models`: the torchvision classification models a MODEL can name."""

from __future__ import annotations

from typing import Annotated

import typer

from dnnsplit.cli.common import Format, guarded, out, print_document, simple_table

EXAMPLES = """
Examples:

  dnnsplit models

  dnnsplit models --filter resnet --format json
"""


@guarded
def models(
    filter_: Annotated[str | None, typer.Option("--filter", help="Only names containing this text.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
) -> None:
    """List torchvision classification models (use as torchvision:NAME) with published params and GFLOPS."""
    from dnnsplit.models.torchvision_zoo import classification_model_names, default_input_shape, default_meta

    rows = []
    for name in classification_model_names():
        if filter_ and filter_ not in name:
            continue
        meta = default_meta(name)
        rows.append(
            {
                "model": f"torchvision:{name}",
                "params": int(meta.get("num_params", 0)),
                "gflops": float(meta.get("_ops", 0.0)),
                "input_shape": "x".join(map(str, default_input_shape(name))),
            }
        )
    if fmt != Format.table:
        print_document({"models": rows}, fmt.value)
        return
    table_rows = [
        [r["model"], f"{r['params'] / 1e6:.1f}M", f"{r['gflops']:.2f}", r["input_shape"]] for r in rows
    ]
    out.print(
        simple_table("torchvision classification models", ["MODEL", "params", "GFLOPS", "input"], table_rows)
    )
