"""`dnnsplit bench`: measured p50/p95 of a split over emulated links against the planner's prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from dnnsplit.cli.common import Format, err, guarded, out, print_document, progress_bar, simple_table

EXAMPLES = """
Examples:

  dnnsplit bench segments/ --networks cat1,3g,4g,wifi --requests 50

  dnnsplit bench segments/ --networks 4g --link up=5.85,down=20,rtt=40 --plot bench.png --format json

  dnnsplit bench segments/ --configs plan,all-edge --host-speed      # no device emulation

Servers run on free loopback ports in this process; the link is emulated in-process (token bucket + RTT).
The prediction is the plan's cost model on the same link; a device slower than this machine (the phone) is
emulated by stretching its compute, a faster one (edge, cloud presets) runs and is predicted at 1x.
"""


@guarded
def bench(
    directory: Annotated[
        Path, typer.Argument(help="A directory written by `dnnsplit split` (from a plan, to predict).")
    ],
    networks: Annotated[
        str, typer.Option(help="Network presets, comma separated (cat1, 3g, 4g, 5g, wifi).")
    ] = "cat1,3g,4g,wifi",
    link: Annotated[
        list[str] | None,
        typer.Option(help="A custom link up=MBPS,down=MBPS,rtt=MS (repeat for more); added to --networks."),
    ] = None,
    requests: Annotated[int, typer.Option(help="Timed requests per network and configuration.")] = 50,
    warmup: Annotated[int, typer.Option(help="Untimed requests first (no link emulation).")] = 3,
    budget_s: Annotated[
        float,
        typer.Option(help="Stop a network/configuration after this many seconds (3 requests at least)."),
    ] = 60.0,
    configs: Annotated[
        str, typer.Option(help="Which of plan, all-local, all-edge.")
    ] = "plan,all-local,all-edge",
    plan: Annotated[
        Path | None, typer.Option(help="The plan to predict from (default: the one the manifest names).")
    ] = None,
    host_speed: Annotated[
        bool,
        typer.Option(
            "--host-speed", help="Run every tier at this machine's speed and predict with host times."
        ),
    ] = False,
    threads: Annotated[
        int | None, typer.Option(help="onnxruntime threads per segment (default: the profile's).")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG: measured vs predicted.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
) -> None:
    """Measure DIRECTORY's split, all-local and all-edge end to end over emulated links, against the plan."""
    from dnnsplit.limits import check_threads

    check_threads(threads)
    from dnnsplit.partition.network import parse_link
    from dnnsplit.runtime.bench import BenchSettings, plot_bench
    from dnnsplit.runtime.bench import bench as run_bench

    specs = [parse_link(n) for n in networks.split(",") if n.strip()] + [parse_link(t) for t in link or []]
    settings = BenchSettings(
        networks=tuple(specs),
        requests=requests,
        warmup=warmup,
        budget_s=budget_s,
        configs=tuple(c.strip() for c in configs.split(",") if c.strip()),
        emulate_devices=not host_speed,
        threads=threads,
        plan=str(plan) if plan else None,
    )
    with progress_bar() as progress:
        result = run_bench(directory, settings, progress)
    if plot is not None:
        plot_bench(result, plot)
        err.print(f"wrote plot to {plot}", highlight=False)
    if fmt != Format.table:
        print_document(result.to_dict(), fmt.value)
        return
    rows = []
    for r in result.rows:
        rows.append(
            [
                r.network,
                r.config,
                r.requests,
                f"{r.p50_ms:.1f}",
                f"{r.p95_ms:.1f}",
                _ms(r.predicted_ms),
                _pct(r.error),
                _ms(r.calibrated_ms),
                _pct(r.calibrated_error),
                _ms(r.overhead_per_hop_ms, 2),
            ]
        )
    out.print(
        simple_table(
            f"{result.model.get('name', directory)}: measured vs predicted "
            "(ms; error = measured / predicted - 1)",
            [
                "network",
                "config",
                "n",
                "p50",
                "p95",
                "predicted",
                "error",
                "calibrated",
                "error",
                "overhead/hop",
            ],
            rows,
        )
    )
    basis = ", ".join(f"{t}: {d['predicted_with']}" for t, d in result.devices.items())
    if basis:
        err.print(
            f"compute basis: {basis}; calibrated: the same link model with this run's compute",
            highlight=False,
        )
    for note in result.notes:
        err.print(f"note: {note}", highlight=False)
    fallbacks = sum(r.fallbacks for r in result.rows)
    if fallbacks:
        warning = f" {fallbacks} request(s) fell back to local execution"
        err.print(Text.assemble(("warning:", "yellow"), warning), highlight=False)


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:+.1f}%"
