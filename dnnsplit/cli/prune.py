"""`dnnsplit prune`: variants pruned for measured latency in a context; `dnnsplit select`: one per request."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from dnnsplit.cli.common import (
    Format,
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

if TYPE_CHECKING:  # the command imports the pruning stack (torch) only when it runs
    from dnnsplit.pruning.variants import VariantsFile

PRUNE_EXAMPLES = """
Examples:

  dnnsplit train torchvision:resnet18 --num-classes 10 --input-shape 1x3x32x32 --data digits -o r18.pt
  dnnsplit prune r18.pt --data digits --network 4g --budgets 10,20,40 --output r18-variants/

  dnnsplit prune r18.pt --data digits --network cat1 --edge none --levels 4 --baseline uniform -o v/

  dnnsplit select r18-variants/ --network 3g --device-scale 2 --budget-ms 30     # exit 1: best effort

  dnnsplit prune r18-variants/ --from-misses      # add variants for the contexts select could not serve
"""

SELECT_EXAMPLES = """
Examples:

  dnnsplit select r18-variants/ --network wifi --device-scale 1 --budget-ms 20

  dnnsplit select r18-variants/ --network up=2,down=10,rtt=40 --device-scale 0.5 --budget-ms 15 --format json
"""


@guarded
@takes_model
def prune(
    target: Annotated[
        str,
        typer.Argument(
            help="MODEL to prune (torchvision:NAME, checkpoint.pt, package.module:factory), or with "
            "--from-misses the DIR of an earlier prune.",
            show_default=False,
        ),
    ],
    data: Annotated[
        str | None, typer.Option("--data", help="digits (bundled with scikit-learn) or imagefolder:PATH.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Directory for variants.yaml and the variants.")
    ] = None,
    device: Annotated[
        str, typer.Option(help="The phone: a device preset (mobile-web, host, ...) or a device YAML file.")
    ] = "mobile-web",
    network: Annotated[
        str,
        typer.Option(help="The phone's link: cat1, 3g, 4g, 5g, wifi or up=MBPS,down=MBPS,rtt=MS[,radio=..]."),
    ] = "wifi",
    edge: Annotated[
        str,
        typer.Option(help="The edge tier's device (preset or YAML file), or none: everything on the phone."),
    ] = "edge",
    budgets: Annotated[
        str | None,
        typer.Option(help="End-to-end latency targets in ms, as the planner computes them: 10,20,40."),
    ] = None,
    levels: Annotated[
        int | None, typer.Option(help="Instead of --budgets: N targets spanning unpruned to maximum pruning.")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="uniform: also prune with one global ratio per budget, for comparison.")
    ] = None,
    from_misses: Annotated[
        bool, typer.Option("--from-misses", help="Add variants for the contexts in DIR/misses.yaml.")
    ] = False,
    epochs: Annotated[int, typer.Option(help="Distillation fine-tuning epochs per variant (0: none).")] = 5,
    lr: Annotated[float, typer.Option(help="Fine-tuning peak learning rate.")] = 0.01,
    threads: Annotated[int, typer.Option(help="onnxruntime threads for every latency measurement.")] = 1,
    repeat: Annotated[int, typer.Option(help="Measured runs per profile.")] = 20,
    force: Annotated[
        bool, typer.Option("--force", help="Replace earlier variants in the output directory (nothing else).")
    ] = False,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
    model_opts: Any = None,  # the MODEL flags, given by @takes_model
) -> None:
    """Prune MODEL's channels for measured end-to-end latency in a context (phone, network, optional edge),
    fine-tune every variant by distillation, and write DIR/variants.yaml for `dnnsplit select`.

    Exit 2 on bad input, including budgets that even maximum pruning cannot reach.
    """
    from dnnsplit.pruning.context import Context
    from dnnsplit.pruning.finetune import FinetuneSettings
    from dnnsplit.pruning.run import PruneSettings, parse_budgets

    settings = PruneSettings(
        budgets=parse_budgets(budgets) if budgets is not None else None,
        levels=levels,
        baseline=baseline,
        finetune=FinetuneSettings(epochs=epochs, lr=lr, seed=model_opts.seed),
        threads=threads,
        repeat=repeat,
        force=force,
    )
    if from_misses:
        _from_misses(Path(target), settings, fmt, model_opts.trust_pickle, model_opts.arch)
        return
    settings.check()
    if data is None or output is None:
        raise UsageError("--data and --output are required", "e.g. --data digits --output variants/")
    context = Context.parse(device, network, edge)
    if force:  # a directory holding anything but variants is refused now, not after loading the model
        from dnnsplit.output_dir import VARIANTS, claim

        claim(output, VARIANTS, force)
    from dnnsplit.pruning.run import make_variants
    from dnnsplit.training.run import load_for_training

    loaded, splits = load_for_training(target, data, model_opts)
    meta = {
        "source": _absolute(target),
        "name": loaded.name,
        "weights": None if model_opts.weights is None else str(Path(model_opts.weights).resolve()),
        "arch": model_opts.arch,
    }
    with progress_bar() as update:
        document = make_variants(
            loaded,
            splits,
            output,
            context,
            settings,
            meta,
            progress=update,
        )
    _report(document, fmt, f"wrote {output}/variants.yaml and {len(document.variants)} variants")


def _absolute(model: str) -> str:
    path = Path(model)
    return str(path.resolve()) if path.is_file() else model


def _from_misses(
    directory: Path, settings: Any, fmt: Format, trust_pickle: bool, arch: str | None = None
) -> None:
    from dataclasses import replace

    from dnnsplit.cli.common import model_options
    from dnnsplit.models.loading import check_recorded
    from dnnsplit.pruning.run import add_from_misses
    from dnnsplit.pruning.variants import VariantsFile
    from dnnsplit.training.run import load_for_training

    VariantsFile.load(directory)  # a bad DIR fails before anything else

    def load(document: VariantsFile):  # noqa: ANN202 - (LoadedModel, DataSplits)
        # variants.yaml is a file like any other: the model it names is built only if it is torchvision:NAME,
        # a file (whose own arch the loader checks), the user's --arch here, or with --trust-pickle.
        model = document.model
        shape = "x".join(str(v) for v in model["input_shape"])
        options = model_options(
            input_shape=shape,
            seed=int(document.settings.get("finetune", {}).get("seed", 0)),
            weights=model.get("weights"),
            num_classes=int(model["num_classes"]),
            trust_pickle=trust_pickle,
        )
        options = replace(options, trusted_archs=(arch,) if arch else ())
        where, hint = f"{directory}/variants.yaml", "if you trust it, pass that --arch or --trust-pickle"
        source = str(model["source"])
        if not Path(source).is_file():
            check_recorded(source, where, options, hint)
        recorded = model.get("arch")
        options = replace(options, arch=check_recorded(recorded, where, options, hint) if recorded else None)
        return load_for_training(source, document.data, options)

    with progress_bar() as update:
        outcome = add_from_misses(
            directory,
            load,
            settings,
            progress=update,
        )
    report = {"added": outcome.added, "unreachable": outcome.unreachable}
    if fmt != Format.table:
        print_document(report, fmt.value)
    else:
        if not outcome.added and not outcome.unreachable:
            out.print(f"no misses recorded in {directory}/misses.yaml: nothing to add")
        for name in outcome.added:
            out.print(f"added {name}")
        for miss in outcome.unreachable:
            out.print(
                f"unreachable: {miss['budget_ms']:g} ms on {miss['network']} at device scale "
                f"{miss['device_scale']:g} (maximum pruning: {miss['closest_ms']:g} ms)"
            )
    if outcome.unreachable:
        raise BudgetError(
            f"{len(outcome.unreachable)} recorded miss(es) are out of reach even at maximum pruning",
            f"they stay in {directory}/misses.yaml, flagged unreachable",
        )


def _report(document: VariantsFile, fmt: Format, done: str) -> None:
    """The variants of a ``VariantsFile``: as the file (json/yaml) or as a table."""
    if fmt != Format.table:
        print_document(document.to_dict(), fmt.value)
        return
    ctx = document.context
    rows = [
        (
            v.name,
            v.method,
            "-" if v.budget_ms is None else f"{v.budget_ms:g}",
            f"{v.latency.end_to_end_ms:.2f}",
            f"{v.latency.host_ms:.3f}",
            f"{v.latency.predicted_host_ms:.3f}",
            f"{v.accuracy:.4f}",
            f"{v.macs / 1e6:.1f}",
            human_bytes(v.size_bytes),
        )
        for v in document.variants
    ]
    edge = ctx.edge.name if ctx.edge else "none"
    header = ["variant", "method", "budget ms", "end-to-end ms", "host ms", "predicted", "test acc", "MMACs"]
    title = f"variants for {ctx.device.name} over {ctx.network.name} (edge: {edge})"
    out.print(simple_table(title, [*header, "size"], rows))
    err.print(done)


@guarded
def select(
    directory: Annotated[
        Path, typer.Argument(help="A directory written by dnnsplit prune.", show_default=False)
    ],
    network: Annotated[
        str, typer.Option(help="The phone's link now: cat1, 3g, 4g, 5g, wifi or up=MBPS,down=MBPS,rtt=MS.")
    ] = "wifi",
    device_scale: Annotated[
        float, typer.Option(help="The phone's slowness relative to the device pruned for (2: twice as slow).")
    ] = 1.0,
    budget_ms: Annotated[float | None, typer.Option(help="End-to-end latency budget in ms.")] = None,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
) -> None:
    """Choose the variant and partition that maximise accuracy within --budget-ms (ties: lower mobile energy).

    Exit 1 when no variant meets the budget: the fastest choice is printed, flagged best effort, and the
    context is recorded in DIR/misses.yaml for `dnnsplit prune DIR --from-misses`.
    """
    from dnnsplit.pruning.select import Request, Selector

    if budget_ms is None:
        raise UsageError("--budget-ms is required", "e.g. --budget-ms 40")
    request = Request(network=network, device_scale=device_scale, budget_ms=budget_ms)
    request.check()
    selector = Selector(directory)
    choice = selector.choose(request)
    selector.flush()
    if fmt != Format.table:
        print_document(choice.to_dict(), fmt.value)
    else:
        line = choice.plan
        where = (
            f"{line.mobile_layers} layers on the phone, then offload ({', '.join(line.cut)})"
            if line.cut
            else "everything on the phone"
        )
        out.print(
            f"{'BEST EFFORT ' if choice.best_effort else ''}{choice.variant} ({choice.file}): accuracy "
            f"{choice.accuracy:.4f}, {choice.latency_ms:.2f} ms (budget {budget_ms:g}), "
            f"{choice.energy_mj:.1f} mJ on the phone"
        )
        out.print(
            f"partition: {where}; phone compute {choice.mobile_compute_ms:.2f} ms, edge + network "
            f"{line.rest_ms:.2f} ms"
        )
    if choice.best_effort:
        raise BudgetError(
            f"no variant meets {budget_ms:g} ms on {network} at device scale {device_scale:g} "
            f"(fastest: {choice.variant} at {choice.latency_ms:.2f} ms)",
            f"recorded in {directory}/misses.yaml; dnnsplit prune {directory} --from-misses adds a variant",
        )
