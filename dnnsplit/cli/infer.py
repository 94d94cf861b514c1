"""`dnnsplit infer`: run the mobile segment here and the rest on the edge; top-5 and the time per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from dnnsplit.cli.common import (
    Format,
    check_top,
    classes_table,
    err,
    guarded,
    human_bytes,
    out,
    print_document,
    simple_table,
)
from dnnsplit.runtime.labels import top_classes

EXAMPLES = """
Examples:

  dnnsplit infer segments/ --edge http://127.0.0.1:8080 --input cat.jpg

  dnnsplit infer segments/ --edge http://edge.local:8080 --token s3cret --input frame.npy --format json

  dnnsplit infer segments/ --edge http://127.0.0.1:8080 --input cat.jpg --link 4g
  dnnsplit infer segments/ --edge http://127.0.0.1:8080 --input cat.jpg --link up=5.85,down=20,rtt=40
  dnnsplit infer segments/ --edge http://127.0.0.1:8080 --input cat.jpg --link 3g --coding zstd

The result is the one `dnnsplit run DIR` gives; when the edge is down, slow (no full answer within
--timeout), failing, or answers tensors other than the split's outputs, the client runs the rest itself
and says so (exit 0). Every segment file is checked against the manifest (path, size, sha256) first.
"""


@guarded
def infer(
    directory: Annotated[
        Path, typer.Argument(help="A directory written by `dnnsplit split`.", show_default=False)
    ],
    edge: Annotated[str, typer.Option(help="URL of the edge tier's `dnnsplit serve`.")],
    input_file: Annotated[
        Path,
        typer.Option("--input", help="An image (resized and normalised as ImageNet models expect) or .npy."),
    ],
    token: Annotated[
        str | None, typer.Option(envvar="DNNSPLIT_TOKEN", help="Bearer token the edge requires.")
    ] = None,
    link: Annotated[
        str | None,
        typer.Option(
            help="Emulate the phone's link: a preset (cat1, 3g, 4g, 5g, wifi) or up=MBPS,down=MBPS,rtt=MS."
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(
            help="Deadline in seconds for the whole request to the edge (connect, upload, the full answer);"
            " past it, or on a wrong answer, the rest runs here."
        ),
    ] = 10.0,
    top: Annotated[int, typer.Option(help="How many classes to show.")] = 5,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads per segment.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
    coding: Annotated[
        str | None,
        typer.Option(
            help="Lossless coding of the upload: identity, zstd or deflate (Content-Encoding); default: the "
            "one the split's plan chose (`plan --boundaries`), else identity."
        ),
    ] = None,
) -> None:
    """Run DIRECTORY's first-tier segments here, the rest on the EDGE (and the tiers behind it)."""
    from dnnsplit.limits import check_threads
    from dnnsplit.runtime.options import check_positive, check_token

    check_top(top)
    check_threads(threads)
    check_positive(timeout, "--timeout", "pass 10, say")
    check_token(token)
    from dnnsplit.images import load_inputs
    from dnnsplit.partition.network import parse_link
    from dnnsplit.runtime.client import CollaborativeClient

    spec = parse_link(link) if link else None
    with CollaborativeClient(
        directory, edge, token=token, link=spec, timeout_s=timeout, threads=threads, coding=coding
    ) as client:
        x = load_inputs(input_file, client.manifest.input.shape)[:1]
        result = client.infer(x)
    classes = top_classes(client.manifest, result.outputs, top)
    s = result.stages
    remote = ", ".join(f"{t} {ms:.2f} ms" for t, ms in s.remote_compute_ms.items())
    stages = [
        ("mobile compute", s.mobile_ms, ", ".join(client.manifest.segments[i].file for i in client.local)),
        ("upload", s.upload_ms, human_bytes(s.up_bytes) if s.up_bytes else "-"),
        ("edge/cloud", s.remote_ms, f"compute: {remote}" if remote else "-"),
        ("return", s.return_ms, human_bytes(s.down_bytes) if s.down_bytes else "-"),
    ]
    if result.fallback:
        stages.append(("local fallback", s.fallback_ms, "remaining segments run here"))
    if result.fallback:
        err.print(Text.assemble(("fallback:", "yellow"), " ", result.fallback), highlight=False)
    if fmt != Format.table:
        print_document(
            {
                "input": str(input_file),
                "edge": edge,
                "link": None if spec is None else spec.to_dict(),
                "top": classes,
                "stages": s.to_dict(),
                "fallback": result.fallback,
                "early_exit": result.early_exit,
                "segments": [{"index": r.index, "tier": r.tier, "ms": r.ms} for r in result.local],
            },
            fmt.value,
        )
        return
    out.print(classes_table(f"Top {len(classes)} for {input_file}", classes))
    if result.early_exit:
        out.print("the branch was confident: answered on the phone, nothing sent (early exit)")
    title = f"Stages ({'link ' + spec.name if spec else 'no link emulation'}; total {s.total_ms:.2f} ms)"
    out.print(simple_table(title, ["stage", "ms", "detail"], [[n, f"{ms:.2f}", d] for n, ms, d in stages]))
