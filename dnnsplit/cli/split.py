"""`dnnsplit split`: one validated ONNX file per tier, with manifest.yaml, from a plan or hand-given cuts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dnnsplit.cli.common import (
    Format,
    ModelArg,
    err,
    guarded,
    human_bytes,
    out,
    print_document,
    progress_bar,
    simple_table,
    takes_model,
)
from dnnsplit.errors import BudgetError, UsageError

EXAMPLES = """
Examples:

  dnnsplit split torchvision:resnet18 --plan plan.yaml --output segments/

  dnnsplit split model.onnx --cut /layer2/layer2.1/relu_1/Relu_output_0 --output segments/

  dnnsplit split torchvision:resnet18 --cut A --cut B,C --output three/ --validate 10 --inputs frames/

  dnnsplit split torchvision:resnet18 --plan plan.yaml --elastic --output elastic/   # every candidate cut

  dnnsplit split r18.pt --plan plan.yaml --output segments/   # a plan that chose --bottleneck DIR:
                                        # DIR/model.onnx cut at its int8 code

  dnnsplit cuts torchvision:resnet18        # lists the valid cuts and their tensors
"""


@guarded
@takes_model
def split(
    model: ModelArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Directory for the segments and manifest.yaml.")
    ],
    plan: Annotated[
        Path | None, typer.Option(help="A plan.yaml from `dnnsplit plan` for this model.")
    ] = None,
    cut: Annotated[
        list[str] | None,
        typer.Option(help="Tensors crossing one boundary, comma separated; repeat for more boundaries."),
    ] = None,
    simplify: Annotated[bool, typer.Option(help="Simplify each segment with onnxsim.")] = True,
    validate: Annotated[
        int, typer.Option(help="Inputs to compare the chain with the whole model on (0: skip).")
    ] = 3,
    inputs: Annotated[
        Path | None,
        typer.Option(help="Validation inputs: a .npy tensor or a folder of images (default: random)."),
    ] = None,
    tolerance: Annotated[float, typer.Option(help="Max difference, relative to the output's scale.")] = 1e-4,
    compress: Annotated[
        str | None,
        typer.Option(help="fp16 or int8: compress the tensors sent between segments (default: the plan's)."),
    ] = None,
    min_agreement: Annotated[
        float, typer.Option(help="With --compress: share of validation inputs whose top-1 class must match.")
    ] = 1.0,
    force: Annotated[
        bool, typer.Option("--force", help="Replace an earlier split in the output directory (nothing else).")
    ] = False,
    elastic: Annotated[
        bool,
        typer.Option(
            "--elastic",
            help="With --plan: cut at every boundary the exact planner picks over a sweep of contexts "
            "(uplink 0.1-200 Mbit/s, rtt 2-150 ms, phone 0.5-2x, edge load 1-8x) plus all-local and "
            "all-edge, so the client can re-cut every request (docs/elastic.md).",
        ),
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
    model_opts: Any = None,  # the MODEL flags, given by @takes_model
) -> None:
    """Split MODEL into one self-contained ONNX segment per tier and check that they compute the whole model.

    Exit 1 when the chained segments differ from the whole model by more than --tolerance.
    """
    from dnnsplit.bottleneck.split_plan import split_with_bottleneck, uses_bottleneck
    from dnnsplit.partition.plan_file import load_plan
    from dnnsplit.profiling import prepare_model
    from dnnsplit.splitting.split import SplitSettings, prepare_output, split_prepared

    if (plan is None) == (not cut):
        raise UsageError(
            "give either --plan or --cut", "split by a plan.yaml, or name the cut tensors by hand"
        )
    if elastic and plan is None:
        raise UsageError("--elastic finds its cuts from a plan", "pass --plan plan.yaml instead of --cut")
    plan_file = load_plan(plan) if plan is not None else None
    bottleneck = uses_bottleneck(plan_file)
    if bottleneck and elastic:
        raise UsageError(
            "--elastic re-cuts the original model, and this plan chose a bottleneck at one cut",
            "plan without --bottleneck for an elastic split",
        )
    if compress is None and plan_file is not None:
        compress = plan_file.document.get("compress")
    settings = SplitSettings(
        compress=compress,
        min_agreement=min_agreement,
        simplify=simplify,
        validate=validate,
        inputs=None if inputs is None else str(inputs),
        seed=model_opts.seed,
        tolerance=tolerance,
        force=force,
    )
    settings.check()
    prepare_output(output, force)  # before a minute of export
    cut_lists = [[t.strip() for t in c.split(",") if t.strip()] for c in cut or []]
    with progress_bar() as progress:
        prepared = prepare_model(model, model_opts, progress)
        if elastic:
            from dnnsplit.splitting.elastic import split_elastic

            assert plan is not None and plan_file is not None
            result = split_elastic(prepared, output, settings, plan, plan_file, progress=progress)
        elif bottleneck:
            assert plan is not None and plan_file is not None
            result = split_with_bottleneck(prepared, output, settings, plan, plan_file, progress)
        else:
            result = split_prepared(prepared, output, settings, progress, plan, plan_file, cut_lists)
    manifest = result.manifest
    if fmt != Format.table:
        print_document(manifest.to_dict(), fmt.value)
    else:
        rows = []
        for s in manifest.segments:
            sent = sum(t.bytes for t in s.outputs if any(x != "result" for x in s.targets[t.name]))
            rows.append(
                [
                    s.index + 1,
                    s.tier,
                    s.file,
                    s.layers,
                    human_bytes(s.bytes),
                    ", ".join(t.name for t in s.inputs) if len(s.inputs) <= 2 else f"{len(s.inputs)} tensors",
                    human_bytes(sent) if sent else "-",
                ]
            )
        header = ["#", "tier", "file", "layers", "size", "inputs", "sends on"]
        out.print(simple_table(f"Segments of {manifest.model.get('name')} in {output}", header, rows))
    if manifest.elastic is not None:
        _print_candidates(manifest)
    for s in manifest.segments:
        for note in s.notes:
            err.print(f"note: segment {s.index + 1}: {note}", highlight=False)
    v = manifest.validation
    if v is not None:
        verdict = "OK" if v.passed else "MISMATCH"
        rule = (
            f"top-1 agreement {v.top1_agreement:.0%} (at least {min_agreement:.0%})"
            if v.criterion == "top1_agreement"
            else f"tolerance {v.tolerance:g}"
        )
        err.print(
            f"validation on {v.inputs} inputs ({v.source}): max abs diff {v.max_abs_diff:.3g}, "
            f"max rel diff {v.max_rel_diff:.3g}; {rule}: {verdict}",
            highlight=False,
        )
        if v.reference_top1_agreement is not None:
            err.print(
                f"top-1 agreement with the original model ({v.reference}): {v.reference_top1_agreement:.0%} "
                f"of the {v.inputs} inputs",
                highlight=False,
            )
    note = (manifest.origin.get("bottleneck") or {}).get("note")
    if note:
        err.print(f"note: {note}", highlight=False)
    err.print(f"wrote {len(manifest.segments)} segments and manifest.yaml to {output}", highlight=False)
    if v is not None and not v.passed and v.criterion == "top1_agreement":
        raise BudgetError(
            f"with --compress {compress} the chain picks the whole model's top-1 class on only "
            f"{v.top1_agreement:.0%} of the inputs (at least {min_agreement:.0%} asked)",
            "use --compress fp16, real --inputs for calibration, or a lower --min-agreement",
        )
    if v is not None and not v.passed:
        raise BudgetError(
            f"the chained segments differ from the whole model by {v.max_rel_diff:.3g} (relative), "
            f"over the tolerance {v.tolerance:g}",
            "look at the segments in the output directory; report it if the model is deterministic",
        )


def _print_candidates(manifest: Any) -> None:
    """The candidate cuts of an elastic split, on stderr (stdout keeps the manifest or the segment table)."""
    block = manifest.elastic
    per_cut = (manifest.validation.per_cut or {}) if manifest.validation is not None else {}
    default = block["candidates"][block["default"]]["name"]
    rows = [
        [
            c["name"] + (" (default)" if c["name"] == default else ""),
            c["boundary"],
            human_bytes(c["up_bytes"]) if c["boundary"] < len(block["pieces"]) else "-",
            c["optimal_in"],
            f"{per_cut[c['name']]:.3g}" if c["name"] in per_cut else "-",
        ]
        for c in block["candidates"]
    ]
    title = (
        f"Candidate cuts: {len(block['candidates'])} over {block['grid'].get('contexts')} contexts, "
        f"{len(block['pieces'])} pieces"
    )
    header = ["cut", "pieces on phone", "sends up", "optimal in", "max rel diff"]
    err.print(simple_table(title, header, rows))
    for d in block.get("dropped", []):
        err.print(
            f"note: an optimum of {d['optimal_in']} context(s) does not nest with the others (dropped); "
            f"{d['best_kept']} costs {d['best_kept_ms']:.4g} ms there instead of {d['optimum_ms']:.4g} ms",
            highlight=False,
        )
