"""`dnnsplit plan`: the optimal split of a model across mobile / edge / cloud, with baselines and a sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from dnnsplit.cli.common import (
    Format,
    Group,
    Runtime,
    err,
    guarded,
    human_bytes,
    out,
    print_document,
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
"""

_MAX_STRETCHES = 20
_MAX_CUT_ROWS = 12


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
    from dnnsplit.partition import Constraints, link_names, parse_link, parse_objective, parse_tiers, solve
    from dnnsplit.partition.from_profile import problem_from_profile, tier_devices
    from dnnsplit.partition.plan_file import PlanContext, device_block, plan_document
    from dnnsplit.partition.sweep import parse_sweep
    from dnnsplit.partition.sweep import sweep_bandwidth as run_sweep
    from dnnsplit.profiling import ProfileSettings
    from dnnsplit.profiling.devices import load_device
    from dnnsplit.profiling.profile import Profile
    from dnnsplit.profiling.run import is_profile_path, load_or_profile

    # Everything the user typed is checked before a minute of profiling.
    tier_list = parse_tiers(tiers)
    links: dict[str, Any] = {link_names(tier_list)[0]: parse_link(network)}
    if backhaul is not None:
        if "edge-cloud" not in link_names(tier_list):
            raise UsageError("--backhaul needs the edge and cloud tiers", "add --tiers mobile,edge,cloud")
        links["edge-cloud"] = parse_link(backhaul)
    devices = {t: load_device(ref) for t, ref in _pairs(device, "--device", tier_list).items()}
    profile_paths = _pairs(tier_profile, "--profile", tier_list)
    tier_profiles = {t: Profile.load(path) for t, path in profile_paths.items()}
    constraints = Constraints(budget_ms=budget_ms, private_input=private_input, max_mobile_mb=max_mobile_mb)
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
    branch_file = None
    if branch is not None:
        from dnnsplit.branching.branch_file import load_branch

        branch_file = load_branch(branch)
    rl_policy = _rl_policy(solver, policy, bandwidths, private_input, max_mobile_mb, model_opts.trust_pickle)
    from_file = is_profile_path(model)
    if from_file and save_profile is not None:
        raise UsageError("--save-profile needs a MODEL to profile, not a profile file", "drop --save-profile")

    settings = ProfileSettings(
        runtime=runtime.value, threads=threads, warmup=warmup, repeat=repeat, group=group.value
    )
    settings.check()
    options = None if from_file else model_opts
    with progress_bar() as progress:
        # A profile whose layers do not add up to its whole model is priced scaled to it (and says so)
        profile = load_or_profile(model, options, settings, progress).calibrated()
        problem = problem_from_profile(
            profile,
            tiers=tier_list,
            devices=devices,
            tier_profiles=tier_profiles,
            links=links,
            objective=goal,
            constraints=constraints,
            input_bytes=input_bytes,
            compress=compress,
        )
        progress("solving", 0, 1)
        rl_info = None
        if rl_policy is None:
            result = solve(problem)
        else:
            from dnnsplit.partition.rl.decide import plan_with_policy

            result, rl_info = plan_with_policy(rl_policy, problem)
        points = None
        if bandwidths is not None:
            points = []
            for i, b in enumerate(bandwidths):
                progress("sweeping bandwidth", i, len(bandwidths))
                points.extend(run_sweep(problem, [b]))
    context = PlanContext(
        compress=compress,
        model={k: profile.model.get(k) for k in ("source", "name", "onnx", "sha256")},
        profile={
            "path": model if from_file else (str(save_profile) if save_profile else None),
            "input_bytes_on_wire": input_bytes or profile.input.bytes,
            "device": profile.device,
            "group": profile.group,
            "latency_ms": profile.latency_ms,
            "calibration": profile.calibration,
        },
        devices={
            t: device_block(spec, profile_paths.get(t))
            for t, spec in tier_devices(tier_list, devices).items()
        },
    )
    document = plan_document(result, context)
    estimate = None
    if branch_file is not None:
        estimate = _branch_estimate(problem, branch_file, profile, tier_devices(tier_list, devices), branch)
        document["branch"] = {
            "directory": str(branch),
            "at": branch_file.at,
            **estimate.to_dict(),
            "saves_latency_ms": result.prediction.latency_ms - estimate.best.latency_ms,
        }
    if rl_info is not None:
        # Which solver made the plan, and how far it is from the exact optimum in this very context.
        document["solver"].update(
            policy=str(policy), gap=rl_info["gap"], exact_objective=rl_info["exact_objective"]
        )
    if save_profile is not None:
        profile.save(save_profile)
    if output is not None:
        from dnnsplit.fileio import write_document

        write_document(output, document)
    if plot is not None and points is not None:
        from dnnsplit.partition.plot import plot_sweep

        plot_sweep(points, plot, title=f"{profile.model.get('name', model)}: optimal split vs bandwidth")

    if fmt == Format.table:
        _print_plan(result, document, profile.model.get("name") or model)
        if estimate is not None:
            _print_branch(result, estimate)
        if points is not None:
            _print_sweep(points)
    elif points is None:
        print_document(document, fmt.value)
    else:
        print_document({"plan": document, "sweep": _sweep_rows(points)}, fmt.value)
    for note in result.notes:
        err.print(f"note: {note}", highlight=False)
    for label, scaled in (("profile", profile), *((f"{t} profile", p) for t, p in tier_profiles.items())):
        calibration = scaled.calibrated().calibration
        if calibration is not None:
            err.print(f"note: {label}: {calibration['reason']}", highlight=False)
    for path, what in ((output, "plan"), (save_profile, "profile"), (plot, "plot")):
        if path is not None:
            err.print(f"wrote {what} to {path}", highlight=False)
    if not result.meets_budget:
        raise BudgetError(
            f"the best plan takes {result.prediction.latency_ms:.3f} ms, {result.over_budget_ms:.3f} ms over "
            f"the {budget_ms:g} ms budget; time goes to: {result.where_time_goes()}",
            "raise --budget-ms, use a faster --network or devices, or prune the model",
        )


def _branch_estimate(
    problem: Any, branch_file: Any, profile: Any, devices: dict[str, Any], where: Path
) -> Any:
    from dnnsplit.partition.early_exit import estimate_with_branch

    profiled = profile.model.get("sha256")
    if profiled and branch_file.model.get("sha256") != profiled:
        raise UsageError(
            f"the branch in {where} was built for another model ({branch_file.model.get('source')}) "
            "than the profile's",
            "profile the same checkpoint and input shape that `dnnsplit branch` used",
        )
    costs = branch_file.costs(where)
    return estimate_with_branch(problem, costs, devices[problem.tiers[0]], devices[problem.tiers[1]])


def _print_branch(result: Any, estimate: Any) -> None:
    from dnnsplit.cli.common import simple_table

    plain = result.prediction
    rows = [("best plan, no branch", _ms(plain.latency_ms), _ms(plain.energy_mj), "")]
    for mode in (estimate.sequential, estimate.speculative):
        rows.append(
            (
                f"branch, {mode.mode}",
                _ms(mode.latency_ms),
                _ms(mode.energy_mj),
                "*" if mode.mode == estimate.chosen else "",
            )
        )
    c = estimate.compute_ms
    out.print(
        simple_table(
            f"Early exit (exit rate {estimate.sequential.exit_rate:.1%}; stem {c['stem']:.2f} ms + branch "
            f"{c['branch']:.2f} ms on mobile, rest {c['rest']:.2f} ms on {result.problem.tiers[1]})",
            ["", "expected latency ms", "expected energy mJ", "chosen"],
            rows,
        )
    )
    best = estimate.best
    if best.latency_ms < plain.latency_ms:
        out.print(
            f"the branch ({best.mode}) saves {plain.latency_ms - best.latency_ms:.2f} ms per request "
            "on average"
        )
    else:
        out.print(
            "the branch does not pay off here: the best plan without it is "
            f"{best.latency_ms - plain.latency_ms:.2f} ms faster "
            "(onnxruntime runs the binary layers as float convolutions)"
        )


def _rl_policy(
    solver: str,
    policy: Path | None,
    sweep: Any,
    private_input: bool,
    max_mobile_mb: float | None,
    trust_pickle: bool = False,
) -> Any:
    """The policy for --solver rl (loaded before any profiling), or None for the exact solver."""
    if solver not in ("exact", "rl"):
        raise UsageError(f"unknown --solver '{solver}'", "use exact or rl")
    if solver == "exact":
        if policy is not None:
            raise UsageError("--policy needs --solver rl", "add --solver rl")
        return None
    if policy is None:
        raise UsageError("--solver rl needs --policy", "pass --policy policy.zip from `dnnsplit rl train`")
    if sweep is not None:
        raise UsageError("--solver rl plans one context; it has no bandwidth sweep or plot", "drop them")
    if private_input or max_mobile_mb is not None:
        raise UsageError(
            "--solver rl does not handle --private-input or --max-mobile-mb", "use the exact solver for those"
        )
    from dnnsplit.partition.rl.policy_file import load_policy

    return load_policy(policy, trust_pickle)


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


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _print_plan(result: Any, document: dict[str, Any], name: str) -> None:
    from rich.table import Table

    p = result.problem
    links = ", ".join(
        f"{k} {v['up_mbps']:g}/{v['down_mbps']:g} Mbit/s rtt {v['rtt_ms']:g} ms"
        for k, v in document["links"].items()
    )
    cons = document["constraints"]
    shown = [f"budget {cons['budget_ms']:g} ms" if cons["budget_ms"] is not None else ""]
    shown += ["private input" if cons["private_input"] else ""]
    shown += [f"<= {cons['max_mobile_mb']:g} MB on mobile" if cons["max_mobile_mb"] is not None else ""]
    constraint_text = ", ".join(s for s in shown if s) or "none"
    out.print(
        Text.assemble(
            (str(name), "bold"),
            f": {p.n} layers over {' -> '.join(p.tiers)}; {links}; "
            f"objective {document['objective']}; constraints: {constraint_text}",
        ),
        highlight=False,
    )

    stretch_rows = document["stretches"]
    table = Table(title="Assignment (contiguous stretches in topological order)", title_justify="left")
    for col, justify in (
        ("tier", "left"),
        ("layers", "right"),
        ("count", "right"),
        ("from", "left"),
        ("to", "left"),
    ):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in stretch_rows[:_MAX_STRETCHES]:
        table.add_row(s["tier"], f"#{s['first']}-#{s['last']}", str(s["layers"]), s["from"], s["to"])
    if len(stretch_rows) > _MAX_STRETCHES:
        table.add_row("...", f"{len(stretch_rows) - _MAX_STRETCHES} more", "", "", "")
    out.print(table)

    cuts = Table(title="Cut tensors (sent once per link)", title_justify="left")
    for col, justify in (("link", "left"), ("dir", "left"), ("tensor", "left"), ("size", "right")):
        cuts.add_column(col, justify=justify)  # type: ignore[arg-type]
    rows = 0
    for link in result.prediction.links:
        for direction, tensors in (("up", link.up_tensors), ("down", link.down_tensors)):
            for t in tensors:
                if rows < _MAX_CUT_ROWS:
                    cuts.add_row(link.name, direction, t.name, human_bytes(t.bytes))
                rows += 1
    if rows > _MAX_CUT_ROWS:
        cuts.add_row("...", "", f"{rows - _MAX_CUT_ROWS} more", "")
    if rows == 0:
        cuts.add_row("-", "", "nothing crosses a link: the plan runs on the phone alone", "")
    out.print(cuts)

    figures = Table(title="Predicted, one request (ms; energy of the phone in mJ)", title_justify="left")
    figures.add_column("plan", justify="left")
    for col in (
        ["latency", "energy"]
        + [f"compute {t}" for t in p.tiers]
        + [f"{k} up+down" for k in p.link_names]
        + ["speed-up", "violates"]
    ):
        figures.add_column(col, justify="right")
    plan_latency = result.prediction.latency_ms
    solver = document["solver"]
    own = "dnnsplit (rl)" if solver["name"] == "rl" else "dnnsplit (optimal)"
    rows_data = [(own, document["predicted"])] + list(document["baselines"].items())
    for label, fig in rows_data:
        br = fig["breakdown"]
        ratio = fig["latency_ms"] / plan_latency if plan_latency > 0 else float("inf")
        figures.add_row(
            label,
            _ms(fig["latency_ms"]),
            _ms(fig["energy_mj"]),
            *[_ms(br["compute_ms"][t]) for t in p.tiers],
            *[_ms(br["transfer_ms"][k] + br["return_ms"][k]) for k in p.link_names],
            "" if label.startswith("dnnsplit") else f"{ratio:.2f}x",
            ", ".join(v.split(":")[0] for v in fig["violations"]) or "-",
        )
    out.print(figures)
    gain = document["speedup"]
    proof = "proven optimal" if solver["proven_optimal"] else "not proven optimal"
    if "gap" in solver:
        proof += f"; {solver['gap']:.2%} above the exact optimum"
    if gain is not None:
        energy = "" if gain["energy"] is None else f", {gain['energy']:.2f}x less energy"
        out.print(
            f"speed-up over the best baseline ({gain['vs']}): {gain['latency']:.2f}x{energy}; "
            f"solver {solver['name']} ({proof})",
            highlight=False,
        )
    status = document["status"]
    if cons["budget_ms"] is not None:
        verdict = "meets" if status["meets_budget"] else f"MISSES by {status['over_budget_ms']:.3f} ms"
        out.print(f"budget {cons['budget_ms']:g} ms: {verdict}", highlight=False)


def _sweep_rows(points: list[Any]) -> list[dict[str, Any]]:
    from dnnsplit.partition.sweep import describe_cut

    return [
        {
            "up_mbps": pt.up_mbps,
            "latency_ms": pt.plan.prediction.latency_ms,
            "energy_mj": pt.plan.prediction.energy_mj,
            "layers": pt.plan.prediction.layers_per_tier,
            "cut": describe_cut(pt.plan),
            "cut_tensors": [list(names) for names in pt.cut],
            "baselines": {name: b.latency_ms for name, b in pt.plan.baselines.items()},
        }
        for pt in points
    ]


def _print_sweep(points: list[Any]) -> None:
    from rich.table import Table

    from dnnsplit.partition.sweep import cut_changes

    rows = _sweep_rows(points)
    changes = set(cut_changes(points))
    first = points[0].plan.problem
    table = Table(
        title=f"Bandwidth sweep on the {first.link_names[0]} uplink (latency in ms; * = the cut moved)",
        title_justify="left",
    )
    table.add_column("up Mbit/s", justify="right")
    table.add_column("plan", justify="right")
    table.add_column("layers per tier", justify="right")
    table.add_column("where the cut falls", justify="left")
    baseline_names = list(rows[0]["baselines"])
    for name in baseline_names:
        table.add_column(name, justify="right")
    for i, row in enumerate(rows):
        table.add_row(
            f"{row['up_mbps']:.3g}",
            _ms(row["latency_ms"]),
            "/".join(str(v) for v in row["layers"].values()),
            ("* " if i in changes else "") + row["cut"],
            *[_ms(row["baselines"].get(name)) for name in baseline_names],
        )
    out.print(table)
