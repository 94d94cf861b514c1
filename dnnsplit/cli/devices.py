"""`dnnsplit devices`: the built-in device presets and any device files given."""

from __future__ import annotations

from typing import Annotated

import typer

from dnnsplit.cli.common import Format, guarded, out, print_document, simple_table

EXAMPLES = """
Examples:

  dnnsplit devices

  dnnsplit devices my-phone.yaml --format yaml
"""


@guarded
def devices(
    files: Annotated[list[str] | None, typer.Argument(help="Device YAML files to check and show.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
) -> None:
    """List device presets (host, mobile-web, edge, cloud) and device files, with their latency scales."""
    from dnnsplit.profiling.devices import all_presets, load_device

    specs = all_presets() + [load_device(f) for f in files or []]
    if fmt != Format.table:
        print_document({"devices": [s.to_dict() for s in specs]}, fmt.value)
        return
    rows = [
        [
            s.name,
            s.runtime,
            s.threads,
            f"{s.latency_scale:g}x",
            "-" if s.compute_power_w is None else f"{s.compute_power_w:g} W",
            "-" if s.idle_power_w is None else f"{s.idle_power_w:g} W",
            s.description,
        ]
        for s in specs
    ]
    header = ["name", "runtime", "threads", "latency vs host", "compute power", "idle power", "description"]
    out.print(simple_table("Devices (latency_scale multiplies the host's measured latency)", header, rows))
