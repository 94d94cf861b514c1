"""`dnnsplit profile`: per-layer latency, MACs, params and output bytes on a real runtime."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from dnnsplit.cli.common import (
    Group,
    ModelArg,
    Runtime,
    TableFormat,
    err,
    guarded,
    human_bytes,
    out,
    print_csv,
    print_document,
    progress_bar,
    takes_model,
)
from dnnsplit.fileio import check_writable, format_for_path

EXAMPLES = """
Examples:

  dnnsplit profile torchvision:resnet18

  dnnsplit profile torchvision:mobilenet_v3_small --group block --plot profile.png

  dnnsplit profile model.onnx --threads 2 --repeat 50 --output profile.json

  # CI: exit 1 when the per-layer sum does not add up to the whole model (a busy machine)
  dnnsplit profile torchvision:resnet18 --strict --output profile.json

  dnnsplit profile torchvision:resnet50 --runtime torch --format csv > layers.csv

  # inside headless Chromium (the system's), with onnxruntime-web's wasm backend
  dnnsplit profile torchvision:mobilenet_v3_small --runtime browser --threads 2 --output browser.json
  dnnsplit plan profile.json --profile mobile=browser.json
"""


@guarded
@takes_model
def profile(
    model: ModelArg,
    runtime: Annotated[
        Runtime,
        typer.Option(
            help="Where to measure: onnxruntime (CPU), eager torch, or browser (onnxruntime-web in "
            "headless Chromium: the system's /usr/bin/chromium, never a download)."
        ),
    ] = Runtime.onnxruntime,
    group: Annotated[
        Group, typer.Option(help="Rows per ONNX node, per module call, or per top-level block.")
    ] = Group.node,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads (default: all cores).")] = None,
    warmup: Annotated[int, typer.Option(help="Unmeasured runs first.")] = 5,
    repeat: Annotated[int, typer.Option(help="Measured runs (median and p90 over these).")] = 20,
    rounds: Annotated[
        int,
        typer.Option(
            help="Measure at most this many times until the per-layer sum is within ±15% of the whole "
            "model (later rounds interleave whole-model and per-layer runs); if it never is, the layer "
            "times are scaled to the whole model and the profile records it (calibration).",
        ),
    ] = 3,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Exit 1, writing nothing, when the per-layer sum is still outside ±15% after "
            "--rounds, instead of scaling the layers to the whole model.",
        ),
    ] = False,
    fmt: Annotated[
        TableFormat, typer.Option("--format", help="How to print the result.")
    ] = TableFormat.table,
    top: Annotated[int, typer.Option(help="Rows in the table: the slowest K.")] = 15,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the profile (.json or .yaml).")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG: latency and output size per row.")] = None,
    branch: Annotated[
        Path | None,
        typer.Option(
            help="With --runtime browser: also time this early-exit branch (a `dnnsplit branch` "
            "directory) as the browser client runs it: the stem in onnxruntime-web, the branch on the "
            "bit kernels (and in onnxruntime-web for comparison). The profile's `branch` block is what "
            "`plan --profile mobile=THIS --branch DIR` charges.",
        ),
    ] = None,
    model_opts: Any = None,  # the MODEL flags, given by @takes_model
) -> None:
    """Measure per-layer cost of MODEL: latency (median, p90), MACs, params and output bytes."""
    from dnnsplit.profiling import ProfileSettings, profile_model
    from dnnsplit.profiling.plot import plot_profile

    settings = ProfileSettings(
        runtime=runtime.value,
        threads=threads,
        warmup=warmup,
        repeat=repeat,
        group=group.value,
        rounds=rounds,
        strict=strict,
    )
    settings.check()
    if top < 1:
        from dnnsplit.errors import UsageError

        raise UsageError(f"--top must be at least 1 (got {top})", "pass --top 15, say")
    if output is not None:
        format_for_path(output)  # a bad extension fails now, not after a minute of measuring
        check_writable(output)
    if plot is not None and plot.suffix.lower() != ".png":
        from dnnsplit.errors import UsageError

        raise UsageError(f"--plot '{plot}' is not a .png file", "name it something.png")
    if plot is not None:
        check_writable(plot)
    if branch is not None:
        from dnnsplit.branching.browser_timing import check_branch_directory

        if runtime != Runtime.browser:
            from dnnsplit.errors import UsageError

            raise UsageError(
                "--branch times the branch in the browser only", "add --runtime browser (the branch's host "
                "times are in its branch.yaml already)"
            )
        check_branch_directory(branch)
    with progress_bar() as progress:
        result = profile_model(model, model_opts, settings, progress)
        if branch is not None:
            from dnnsplit.branching.browser_timing import check_branch_directory, time_branch_in_browser

            check_branch_directory(branch, result.model.get("sha256"))
            timing = time_branch_in_browser(
                branch, threads=settings.resolved_threads, warmup=warmup, repeat=repeat, progress=progress
            )
            result = dataclasses.replace(result, branch=timing)
    if output is not None:
        result.save(output)
    if plot is not None:
        plot_profile(result, plot)
    if fmt in (TableFormat.json, TableFormat.yaml):
        print_document(result.to_dict(), fmt.value)
    elif fmt == TableFormat.csv:
        header = ["name", "op", "module", "latency_ms", "latency_p90_ms", "macs", "params", "output_bytes"]
        rows = [
            [
                r.name,
                r.op,
                r.module,
                f"{r.latency_ms:.6f}",
                f"{r.latency_p90_ms:.6f}",
                r.macs,
                r.params,
                r.output_bytes,
            ]
            for r in result.layers
        ]
        print_csv(header, rows)
    else:
        _print_table(result, top)
        if result.branch is not None:
            _print_branch(result.branch)
    for note in result.notes:
        err.print(f"note: {note}", highlight=False)
    for path, what in ((output, "profile"), (plot, "plot")):
        if path is not None:
            err.print(f"wrote {what} to {path}", highlight=False)


def _print_table(result: object, top: int) -> None:
    from rich.table import Table

    from dnnsplit.profiling import Profile
    from dnnsplit.profiling.profile import SUM_TOLERANCE

    assert isinstance(result, Profile)
    total = result.latency_ms or 1.0
    ranked = sorted(range(len(result.layers)), key=lambda i: -result.layers[i].latency_ms)[: max(top, 0)]
    table = Table(
        title=(
            f"{result.model['source']}  input {'x'.join(map(str, result.input_shape))}  "
            f"{result.device['runtime']} on {result.device['cpu']} ({result.device['threads']} threads)"
        ),
        title_justify="left",
        caption=f"slowest {len(ranked)} of {len(result.layers)} {result.group}s (#: topological position)",
        caption_justify="left",
    )
    for name, justify in (
        ("#", "right"),
        ("name", "left"),
        ("op", "left"),
        ("ms", "right"),
        ("p90 ms", "right"),
        ("%", "right"),
        ("MMACs", "right"),
        ("params", "right"),
        ("output", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for i in ranked:
        r = result.layers[i]
        table.add_row(
            str(i),
            r.name,
            r.op,
            f"{r.latency_ms:.3f}",
            f"{r.latency_p90_ms:.3f}",
            f"{100 * r.latency_ms / total:.1f}",
            f"{r.macs / 1e6:.1f}",
            f"{r.params:,}",
            human_bytes(r.output_bytes),
        )
    table.add_section()
    table.add_row(
        "",
        "whole model (measured)",
        "",
        f"{result.latency_ms:.3f}",
        f"{result.latency_p90_ms:.3f}",
        "100.0",
        f"{result.total_macs / 1e6:.1f}",
        f"{result.total_params:,}",
        "",
    )
    table.add_row(
        "",
        f"sum of {len(result.layers)} {result.group}s" + (" (scaled)" if result.calibration else ""),
        "",
        f"{result.layer_sum_ms:.3f}",
        "",
        f"{100 * result.layer_sum_ratio:.1f}",
        "",
        "",
        "",
    )
    out.print(table)
    measured = result.measured_sum_ratio
    line = (
        f"per-layer sum / whole model = {measured:.3f} "
        f"({'within' if abs(measured - 1) <= SUM_TOLERANCE else 'OUTSIDE'} ±{SUM_TOLERANCE:.0%})"
    )
    if result.calibration is not None:
        line += f"; layer times scaled x{result.calibration['scale']:.2f} to the whole model (calibration)"
    out.print(line, highlight=False)


def _print_branch(timing: object) -> None:
    from dnnsplit.profiling.profile import BranchTiming

    assert isinstance(timing, BranchTiming)
    engine = "bit kernels" if timing.engine == "kernels" else "onnxruntime-web"
    line = (
        f"branch at {timing.at}: stem {timing.stem_ms:.3f} ms + branch {timing.branch_ms:.3f} ms on {engine}"
        f" (p90 {timing.branch_p90_ms:.3f}); the same branch in onnxruntime-web "
        f"{timing.onnxruntime_branch_ms:.3f} ms"
    )
    if timing.engine == "kernels" and timing.branch_ms > 0:
        line += f" ({timing.onnxruntime_branch_ms / timing.branch_ms:.1f}x)"
    out.print(line, highlight=False)
    if timing.reason:
        out.print(f"the kernels did not run: {timing.reason}", highlight=False)
