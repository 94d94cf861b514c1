"""`dnnsplit infer`: run the mobile segment here and the rest on the edge; top-5 and the time per stage."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    progress_bar,
    simple_table,
)
from dnnsplit.errors import UsageError
from dnnsplit.runtime.labels import top_classes

EXAMPLES = """
Examples:

  dnnsplit infer segments/ --edge http://127.0.0.1:8080 --input cat.jpg

  dnnsplit infer segments/ --edge http://edge.local:8080 --token s3cret --input frame.npy --format json

  dnnsplit infer segments/ --edge http://127.0.0.1:8080 --input cat.jpg --link 4g
  dnnsplit infer segments/ --edge http://127.0.0.1:8080 --input cat.jpg --link up=5.85,down=20,rtt=40
  dnnsplit infer segments/ --edge http://127.0.0.1:8080 --input cat.jpg --link 3g --coding zstd

  dnnsplit infer elastic/ --edge http://127.0.0.1:8080 --frames frames/ --stream 100 --link 4g
  dnnsplit infer elastic/ --edge http://127.0.0.1:8080 --frames frames/ --input-coding tensor
  dnnsplit infer elastic/ --edge http://127.0.0.1:8080 --frames frames/ --stream 100 --policy policy.zip

A split written by `split --elastic` is re-cut for every frame: the client estimates its uplink, round
trip, its own speed and the edge's load, and runs the cut that is fastest for that estimate; each frame
says which cut ran and the estimate that chose it (--format json), the edge's /metrics counts them.
With --policy a trained context policy (`dnnsplit rl train --scenario context` on the plan's profile)
chooses the cut from the same estimate instead.

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
        Path | None,
        typer.Option("--input", help="An image (resized and normalised as ImageNet models expect) or .npy."),
    ] = None,
    frames: Annotated[
        Path | None,
        typer.Option(help="A folder of images (or a .npy batch): one frame each, in name order."),
    ] = None,
    stream: Annotated[
        int | None,
        typer.Option(help="Run this many frames one after another (the input, or --frames looped)."),
    ] = None,
    hysteresis: Annotated[
        float,
        typer.Option(
            help="Elastic splits: keep the current cut unless another is predicted this much faster."
        ),
    ] = 0.1,
    policy: Annotated[
        Path | None,
        typer.Option(
            help="Elastic splits: a context policy from `dnnsplit rl train` (.zip) chooses each frame's cut"
            " instead of the exact optimum over the split's cuts."
        ),
    ] = None,
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
    input_coding: Annotated[
        str,
        typer.Option(
            help="How an image frame goes up when the edge starts at the model's input: jpeg (the file's own "
            "JPEG, else encoded at quality 90; the edge preprocesses it as here) or tensor (float32)."
        ),
    ] = "jpeg",
) -> None:
    """Run DIRECTORY's first-tier segments here, the rest on the EDGE (and the tiers behind it)."""
    from dnnsplit.limits import check_threads
    from dnnsplit.runtime.options import check_positive, check_token

    check_top(top)
    check_threads(threads)
    check_positive(timeout, "--timeout", "pass 10, say")
    check_token(token)
    if (input_file is None) == (frames is None):
        raise UsageError("give either --input or --frames", "pass one image or .npy, or a folder of frames")
    if stream is not None and stream < 1:
        raise UsageError(f"--stream must be at least 1 (got {stream})", "pass --stream 100, say")
    from dnnsplit.images import load_frames
    from dnnsplit.partition.network import parse_link
    from dnnsplit.runtime.client import CollaborativeClient
    from dnnsplit.runtime.elastic import check_input_coding
    from dnnsplit.splitting.manifest import Manifest

    check_input_coding(input_coding)

    spec = parse_link(link) if link else None
    manifest = Manifest.load(directory)
    if policy is not None and not manifest.elastic:
        raise UsageError(
            f"--policy chooses among an elastic split's cuts; {directory} has one cut",
            "split it with `dnnsplit split MODEL --plan plan.yaml --elastic`, or drop --policy",
        )
    if manifest.elastic or frames is not None or stream is not None:
        options = {"hysteresis": hysteresis, "coding": coding, "input_coding": input_coding, "policy": policy}
        source = input_file or frames
        _stream(directory, edge, token, spec, timeout, threads, source, stream, top, fmt, options)
        return
    assert input_file is not None
    with CollaborativeClient(
        directory, edge, token=token, link=spec, timeout_s=timeout, threads=threads, coding=coding
    ) as client:
        loaded = load_frames(input_file, client.manifest.input.shape)
        image = loaded.jpegs[0] if loaded.jpegs and input_coding == "jpeg" else None
        result = client.infer(loaded.tensors[:1], image=image)
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


def _stream(
    directory: Path,
    edge: str,
    token: str | None,
    spec: Any,
    timeout: float,
    threads: int | None,
    source: Path | None,
    count: int | None,
    top: int,
    fmt: Format,
    options: dict[str, Any],
) -> None:
    """Frames one after another: an elastic split re-cut per frame, a plain one at its cut."""
    from dnnsplit.runtime.elastic import ElasticSettings, StreamRequest, run_stream

    assert source is not None
    request = StreamRequest(
        directory,
        edge,
        source,
        count,
        token=token,
        link=spec,
        timeout_s=timeout,
        threads=threads,
        top=top,
        settings=ElasticSettings(
            hysteresis=options["hysteresis"], policy=str(options["policy"]) if options["policy"] else None
        ),
        input_coding=options["input_coding"],
        coding=options["coding"],
    )
    with progress_bar() as progress:
        rows, summary, notes = run_stream(request, progress)
    for note in notes:
        err.print(Text.assemble(("note:", "yellow"), " ", note), highlight=False)
    if fmt != Format.table:
        print_document(
            {
                "edge": edge,
                "link": None if spec is None else spec.to_dict(),
                "frames": rows,
                "summary": summary.to_dict(),
            },
            fmt.value,
        )
        return
    shown = rows if len(rows) <= 30 else rows[:10] + rows[-10:]
    table = []
    for row in shown:
        est = row.get("estimate") or {}
        st = row["stages"]
        table.append(
            [
                row["frame"],
                row["cut"],
                f"{row['latency_ms']:.1f}",
                f"{st['mobile_ms']:.1f}",
                f"{st['upload_ms']:.1f}",
                f"{st['remote_ms']:.1f}",
                f"{est['up_mbps']:.3g}" if est else "-",
                f"{est['rtt_ms']:.3g}" if est else "-",
                f"{est['phone_speed']:.3g}" if est else "-",
                f"{est['edge_load']:.3g}" if est else "-",
                row.get("note") or row.get("fallback") or "",
            ]
        )
    header = [
        "frame",
        "cut",
        "ms",
        "phone ms",
        "upload ms",
        "edge ms",
        "est. up Mbit/s",
        "est. rtt ms",
        "est. phone x",
        "est. edge load",
        "note",
    ]
    title = f"{len(rows)} frames ({'link ' + spec.name if spec else 'no link emulation'})"
    if len(rows) > len(shown):
        title += "; first and last 10 shown"
    out.print(simple_table(title, header, table))
    per_cut = ", ".join(f"{c} {n}" for c, n in summary.cuts.items())
    out.print(
        f"p50 {summary.p50_ms:.1f} ms, p95 {summary.p95_ms:.1f} ms, mean {summary.mean_ms:.1f} ms; "
        f"cuts: {per_cut}; {summary.switches} switch(es), {summary.fallbacks} fallback(s)",
        highlight=False,
    )
