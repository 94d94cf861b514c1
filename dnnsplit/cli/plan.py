"""`dnnsplit plan`: the optimal split of a model across mobile / edge / cloud, with baselines and a sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dnnsplit.cli.common import (
    Format,
    Group,
    Runtime,
    err,
    guarded,
    print_document,
    print_summary,
    progress_bar,
    takes_model,
)
from dnnsplit.errors import BudgetError, UsageError
from dnnsplit.fileio import check_writable, format_for_path

EXAMPLES = """
Examples:

  dnnsplit plan torchvision:resnet18                              # mobile + edge over Wi-Fi

  dnnsplit plan profile.json --tiers mobile,edge,cloud --network 4g --output plan.yaml

  dnnsplit plan profile.json --network up=8,down=40,rtt=30 --objective latency=1,energy=0.5

  dnnsplit plan profile.json --private-input --max-mobile-mb 5 --budget-ms 80   # exit 1 if missed

  dnnsplit plan profile.json --profile edge=edge-profile.json --device mobile=my-phone.yaml

  dnnsplit plan profile.json --sweep-bandwidth 0.1:100:40 --plot sweep.png

  dnnsplit plan profile.json --solver rl --policy policy.zip --network 4g   # a trained policy decides

  dnnsplit plan profile.json --boundaries boundaries.json --network 3g --max-accuracy-drop 1 \
      --session-requests 500        # measured bytes; the codec is chosen with the cut

  dnnsplit plan profile.json --bottleneck r18-bn/ --boundaries boundaries.json --network 4g \
      --output plan.yaml            # the trained bottleneck is one more codec, at its own cut
"""


@guarded
@takes_model
def plan(
    model: Annotated[
        str,
        typer.Argument(
            help="A profile file from `dnnsplit profile` (.json/.yaml), or a MODEL to profile first: "
            "torchvision:NAME, model.onnx, checkpoint.pt or package.module:factory.",
            show_default=False,
        ),
    ],
    tiers: Annotated[
        str, typer.Option(help="mobile,edge | mobile,edge,cloud | mobile,cloud (in that order).")
    ] = "mobile,edge",
    network: Annotated[
        str,
        typer.Option(
            help="The phone's link (mobile-edge, or mobile-cloud): cat1, 3g, 4g, 5g, wifi, or "
            "up=MBPS,down=MBPS,rtt=MS[,radio=lte|3g|wifi].",
        ),
    ] = "wifi",
    backhaul: Annotated[
        str | None,
        typer.Option(help="The edge-cloud link, same syntax (default: wired, 1000/1000 Mbit/s, 20 ms)."),
    ] = None,
    device: Annotated[
        list[str] | None,
        typer.Option(
            help="TIER=PRESET|FILE, repeatable: the device of a tier "
            "(defaults: mobile=mobile-web, edge=edge, cloud=cloud).",
        ),
    ] = None,
    tier_profile: Annotated[
        list[str] | None,
        typer.Option(
            "--profile",
            help="TIER=FILE, repeatable: a profile measured on that tier (instead of scaling the host's).",
        ),
    ] = None,
    objective: Annotated[
        str, typer.Option(help="latency, energy, or weights per ms and per mJ: latency=1,energy=0.5.")
    ] = "latency",
    budget_ms: Annotated[
        float | None, typer.Option(help="Latency budget: exit 1 when the best plan misses it.")
    ] = None,
    private_input: Annotated[
        bool, typer.Option("--private-input", help="The raw input never leaves the phone.")
    ] = False,
    max_mobile_mb: Annotated[
        float | None, typer.Option(help="At most this many MB of weights on the phone.")
    ] = None,
    input_bytes: Annotated[
        int | None,
        typer.Option(
            help="Bytes the raw input takes on the wire when sent as is (e.g. a JPEG frame); "
            "default: the input tensor's size.",
        ),
    ] = None,
    compress: Annotated[
        str | None,
        typer.Option(
            help="fp16 or int8: tensors sent between tiers are compressed (as split --compress does)."
        ),
    ] = None,
    boundaries: Annotated[
        Path | None,
        typer.Option(
            help="A `dnnsplit boundaries` file: charge each boundary's measured bytes, codec times and JPEG "
            "input, and choose the codec (none/fp16/int8 x identity/zstd/deflate) with the plan.",
        ),
    ] = None,
    max_accuracy_drop: Annotated[
        float,
        typer.Option(
            help="With --boundaries: points of test top-1 a codec may cost at a boundary; past it that "
            "boundary goes uncoded.",
        ),
    ] = 1.0,
    coding: Annotated[
        str | None,
        typer.Option(
            help="With --boundaries or --bottleneck: fix the lossless coding (identity, zstd, deflate); "
            "default: chosen."
        ),
    ] = None,
    bottleneck: Annotated[
        Path | None,
        typer.Option(
            help="A directory from `dnnsplit bottleneck`: its cut becomes a candidate with the measured code "
            "bytes, encoder/decoder times and accuracy drop (refused over --max-accuracy-drop); chosen when "
            "it pays, `split --plan` then cuts its model.onnx at the code.",
        ),
    ] = None,
    session_requests: Annotated[
        int,
        typer.Option(
            help="Requests per phone session: each is charged 1/N of downloading the mobile segments over "
            "the downlink (0: not charged). The table shows first-request and steady-state latency.",
        ),
    ] = 100,
    sweep_bandwidth: Annotated[
        str | None,
        typer.Option(help="LOW:HIGH:COUNT Mbit/s, log-spaced, on the phone's uplink: a table per bandwidth."),
    ] = None,
    plot: Annotated[
        Path | None,
        typer.Option(help="Write a PNG of latency vs bandwidth (sweeps 0.1:100:40 if no sweep is given)."),
    ] = None,
    branch: Annotated[
        Path | None,
        typer.Option(
            "--branch",
            help="A directory from `dnnsplit branch`: add the expected latency and energy with its measured "
            "exit rate (sequential and speculative offload) to the plan.",
        ),
    ] = None,
    solver: Annotated[
        str,
        typer.Option(
            help="exact (min-cut/MILP) or rl (a policy from `dnnsplit rl train`, given by --policy)."
        ),
    ] = "exact",
    policy: Annotated[
        Path | None, typer.Option(help="With --solver rl: the policy file (.zip) that makes the plan.")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the result.")] = Format.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the plan (.yaml or .json, dnnsplit/plan@1).")
    ] = None,
    save_profile: Annotated[
        Path | None, typer.Option(help="When MODEL is profiled first, also write that profile here.")
    ] = None,
    runtime: Annotated[Runtime, typer.Option(help="Runtime to profile MODEL on.")] = Runtime.onnxruntime,
    group: Annotated[Group, typer.Option(help="Profile rows: node, module or block.")] = Group.node,
    threads: Annotated[int | None, typer.Option(help="Threads when profiling MODEL.")] = None,
    warmup: Annotated[int, typer.Option(help="Unmeasured runs when profiling MODEL.")] = 5,
    repeat: Annotated[int, typer.Option(help="Measured runs when profiling MODEL.")] = 20,
    model_opts: Any = None,  # the MODEL flags, given by @takes_model
) -> None:
    """Find the optimal split of MODEL across mobile, edge and cloud (exact), and compare with baselines.

    Exit 1 when --budget-ms is given and even the best plan misses it; exit 2 on bad input or
    constraints nothing can meet.
    """
    from dnnsplit.partition import Constraints, link_names, parse_link, parse_objective, parse_tiers
    from dnnsplit.partition.request import PlanRequest, TierProfile, check_policy_options, make_plan
    from dnnsplit.partition.summary import plan_summary
    from dnnsplit.partition.sweep import parse_sweep
    from dnnsplit.profiling import ProfileSettings
    from dnnsplit.profiling.devices import load_device
    from dnnsplit.profiling.profile import Profile
    from dnnsplit.profiling.run import is_profile_path, load_or_profile

    # Everything the user typed is checked before a minute of profiling.
    tier_list = parse_tiers(tiers)
    links = {link_names(tier_list)[0]: parse_link(network)}
    if backhaul is not None:
        if "edge-cloud" not in link_names(tier_list):
            raise UsageError("--backhaul needs the edge and cloud tiers", "add --tiers mobile,edge,cloud")
        links["edge-cloud"] = parse_link(backhaul)
    devices = {t: load_device(ref) for t, ref in _pairs(device, "--device", tier_list).items()}
    tier_profiles = {
        t: TierProfile(Profile.load(path), path)
        for t, path in _pairs(tier_profile, "--profile", tier_list).items()
    }
    constraints = Constraints(budget_ms=budget_ms, private_input=private_input, max_mobile_mb=max_mobile_mb)
    boundary_costs = None
    if boundaries is not None:
        from dnnsplit.partition.boundary_costs import BoundaryCosts

        boundary_costs = BoundaryCosts.load(boundaries)
    elif coding is not None and bottleneck is None:
        raise UsageError(
            "--coding chooses among measured codings", "add --boundaries FILE or --bottleneck DIR"
        )
    bottleneck_costs = None
    if bottleneck is not None:
        from dnnsplit.bottleneck.bottleneck_file import load_bottleneck

        bottleneck_costs = load_bottleneck(bottleneck).costs(bottleneck)
    if coding is not None:
        from dnnsplit.codecs import check_coding

        check_coding(coding)
    if not max_accuracy_drop >= 0:
        raise UsageError(f"--max-accuracy-drop must be 0 or more (got {max_accuracy_drop})", "pass 1, say")
    if session_requests < 0:
        raise UsageError(f"--session-requests must be 0 or more (got {session_requests})", "pass 100, say")
    goal = parse_objective(objective)
    bandwidths = parse_sweep(sweep_bandwidth) if sweep_bandwidth else None
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise UsageError(f"--plot '{plot}' is not a .png file", "name it something.png")
        bandwidths = bandwidths or parse_sweep("0.1:100:40")
    for path in (output, save_profile):
        if path is not None:
            format_for_path(path)
    for path in (output, save_profile, plot):
        if path is not None:
            check_writable(path)  # /proc/x or a read-only directory fails now, not after profiling
    branch_costs = None
    if branch is not None:
        from dnnsplit.branching.branch_file import load_branch

        branch_costs = load_branch(branch).costs(branch)
    rl_policy = None
    if _uses_policy(solver, policy):
        from dnnsplit.partition.rl.policy_file import load_policy

        check_policy_options(bandwidths, constraints)
        rl_policy = load_policy(policy, model_opts.trust_pickle)  # type: ignore[arg-type]
    from_file = is_profile_path(model)
    if from_file and save_profile is not None:
        raise UsageError("--save-profile needs a MODEL to profile, not a profile file", "drop --save-profile")

    settings = ProfileSettings(
        runtime=runtime.value, threads=threads, warmup=warmup, repeat=repeat, group=group.value
    )
    settings.check()
    with progress_bar() as progress:
        # A profile whose layers do not add up to its whole model is priced (and saved) scaled to it
        profile = load_or_profile(model, None if from_file else model_opts, settings, progress).calibrated()
        request = PlanRequest(
            profile=profile,
            profile_path=model if from_file else (str(save_profile) if save_profile else None),
            tiers=tier_list,
            devices=devices,
            tier_profiles=tier_profiles,
            links=links,
            objective=goal,
            constraints=constraints,
            input_bytes=input_bytes,
            compress=compress,
            branch=branch_costs,
            policy=rl_policy,
            bandwidths=bandwidths,
            boundaries=boundary_costs,
            bottleneck=bottleneck_costs,
            lossless=coding,
            max_accuracy_drop=max_accuracy_drop,
            session_requests=session_requests or None,
        )
        planned = make_plan(request, progress)
    result, document = planned.plan, planned.to_dict()
    if save_profile is not None:
        profile.save(save_profile)
    if output is not None:
        from dnnsplit.fileio import write_document

        write_document(output, document)
    if plot is not None and planned.sweep is not None:
        from dnnsplit.partition.plot import plot_sweep

        title = f"{profile.model.get('name', model)}: optimal split vs bandwidth"
        plot_sweep(list(planned.sweep), plot, title=title)

    if fmt == Format.table:
        print_summary(plan_summary(planned, profile.model.get("name") or model))
    elif planned.sweep is None:
        print_document(document, fmt.value)
    else:
        print_document({"plan": document, "sweep": [p.to_dict() for p in planned.sweep]}, fmt.value)
    for note in (*result.notes, *planned.calibration_notes):
        err.print(f"note: {note}", highlight=False)
    for path, what in ((output, "plan"), (save_profile, "profile"), (plot, "plot")):
        if path is not None:
            err.print(f"wrote {what} to {path}", highlight=False)
    if not result.meets_budget:
        raise BudgetError(
            f"the best plan takes {result.prediction.latency_ms:.3f} ms, {result.over_budget_ms:.3f} ms over "
            f"the {budget_ms:g} ms budget; time goes to: {result.where_time_goes()}",
            "raise --budget-ms, use a faster --network or devices, or prune the model",
        )


def _uses_policy(solver: str, policy: Path | None) -> bool:
    """Whether a policy makes the plan (--solver rl, which needs --policy) rather than the exact solver."""
    if solver not in ("exact", "rl"):
        raise UsageError(f"unknown --solver '{solver}'", "use exact or rl")
    if solver == "exact" and policy is not None:
        raise UsageError("--policy needs --solver rl", "add --solver rl")
    if solver == "rl" and policy is None:
        raise UsageError("--solver rl needs --policy", "pass --policy policy.zip from `dnnsplit rl train`")
    return solver == "rl"


def _pairs(items: list[str] | None, option: str, tiers: tuple[str, ...]) -> dict[str, str]:
    """TIER=VALUE items into a mapping, each tier once and one of ``tiers``."""
    result: dict[str, str] = {}
    for item in items or []:
        tier, sep, value = item.partition("=")
        tier = tier.strip().lower()
        if not sep or not value.strip():
            raise UsageError(f"{option} '{item}' is not TIER=VALUE", f"write e.g. {option} edge=FILE")
        if tier not in tiers:
            raise UsageError(
                f"{option} names tier '{tier}', which is not among --tiers {','.join(tiers)}",
                f"use one of {', '.join(tiers)}",
            )
        if tier in result:
            raise UsageError(f"{option} gives tier '{tier}' twice", "give each tier once")
        result[tier] = value.strip()
    return result
