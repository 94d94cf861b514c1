"""`dnnsplit boundaries`: measure every candidate boundary's bytes, codec times and accuracy on real data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dnnsplit.cli.common import (
    Format,
    ModelArg,
    err,
    guarded,
    out,
    print_document,
    progress_bar,
    simple_table,
    takes_model,
)
from dnnsplit.errors import UsageError
from dnnsplit.fileio import check_writable, format_for_path

EXAMPLES = """
Examples:

  dnnsplit boundaries r18.pt --data digits --output boundaries.json
  dnnsplit plan profile.json --boundaries boundaries.json --network 3g     # charges what was measured

  dnnsplit boundaries mnv2.pt --data imagefolder:photos/ --samples 32 --accuracy-samples 500 -o b.json

Per candidate boundary tensor and codec (none, fp16, int8; each raw, zstd- and deflate-coded): the bytes
of the message the runtime sends (mean, p95 over --samples test images), the host's encode and decode time,
and the test top-1 change with the codec applied; and the JPEG size of the frames (the phone's input).
"""


@guarded
@takes_model
def boundaries(
    model: ModelArg,
    data: Annotated[
        str, typer.Option("--data", help="digits (bundled with scikit-learn) or imagefolder:PATH.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="The dnnsplit/boundaries@1 file to write (.json/.yaml).")
    ],
    samples: Annotated[int, typer.Option(help="Test images the bytes and times are measured on.")] = 16,
    accuracy_samples: Annotated[
        int, typer.Option(help="Test images the accuracy change (and the JPEG input) is measured on.")
    ] = 200,
    jpeg_quality: Annotated[int, typer.Option(help="JPEG quality of the phone's frames (Pillow).")] = 90,
    threads: Annotated[int | None, typer.Option(help="onnxruntime threads.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
    model_opts: Any = None,  # the MODEL flags, given by @takes_model
) -> None:
    """Measure MODEL's candidate boundaries under every codec on --data's test split."""
    from dnnsplit.boundaries.measure import MeasureSettings, measure_boundaries, split_images
    from dnnsplit.limits import check_threads
    from dnnsplit.profiling import prepare_model

    if samples < 1 or accuracy_samples < 1:
        raise UsageError("--samples and --accuracy-samples must be at least 1", "pass 16 and 200, say")
    if not 1 <= jpeg_quality <= 95:
        raise UsageError(f"--jpeg-quality must be 1..95 (got {jpeg_quality})", "pass 90, say")
    check_threads(threads)
    format_for_path(output)
    check_writable(output)
    settings = MeasureSettings(
        samples=samples, accuracy_samples=accuracy_samples, jpeg_quality=jpeg_quality, threads=threads
    )
    with progress_bar() as progress:
        prepared = prepare_model(model, model_opts, progress)
        images, labels = split_images(data, prepared.exported.input_shape, max(samples, accuracy_samples))
        costs = measure_boundaries(prepared, images, labels, settings, data, progress)
    costs.save(output)
    document = costs.to_dict()
    if fmt != Format.table:
        print_document(document, fmt.value)
    else:
        _table(costs)
    err.print(f"wrote {output}", highlight=False)


def _table(costs: Any) -> None:
    first = next(iter(costs.tensors.values()), None)
    if first is None:
        out.print("no boundary tensors: the model has one layer")
        return
    labels = [o.label for o in first.options]
    rows = []
    for t in costs.tensors.values():
        by = {o.label: o for o in t.options}
        rows.append((t.name, f"{t.float32_bytes:,}", *[f"{by[k].bytes_mean:,.0f}" for k in labels]))
    out.print(simple_table("Boundary bytes per sample (mean)", ["tensor", "float32", *labels], rows))
    codecs = {o.name: o for o in first.options if o.lossless == "identity"}
    out.print(
        simple_table(
            f"Accuracy with the codec at every boundary (base top-1 {costs.base_top1:.1f}%)",
            ["codec", "drop (points)", "agreement"],
            [(k, f"{o.accuracy_drop:+.2f}", f"{(o.agreement or 0) * 100:.1f}%") for k, o in codecs.items()],
        )
    )
    if costs.input is not None:
        i = costs.input
        out.print(
            f"input: {i.raw_bytes:,} bytes as a tensor; JPEG q{i.quality} frames {i.jpeg_mean:,.0f} bytes "
            f"mean, {i.jpeg_p95:,.0f} p95 ({i.frames} frames)"
        )
