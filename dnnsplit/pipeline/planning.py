"""The plan stage: the optimal split on every configured network (the first is the one shipped).

Each plan is written as a ``dnnsplit/plan@1`` file under ``OUT/plans/``, the shipped one also as
``OUT/plan.yaml`` for the split stage; with a branch, the shipped plan gains the expected latency with
the branch's measured exit rate, as ``dnnsplit plan --branch`` adds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dnnsplit.fileio import write_document
from dnnsplit.progress import ProgressFn

if TYPE_CHECKING:

    from dnnsplit.pipeline.config import PipelineConfig
    from dnnsplit.pipeline.stages import Layout


def network_label(text: str, index: int) -> str:
    """``4g`` stays ``4g``; a custom link ``up=8,down=40,rtt=30`` becomes ``custom-<index>``."""
    return text if "=" not in text else f"custom-{index}"


def plan_networks(
    config: PipelineConfig, layout: Layout, progress: ProgressFn
) -> dict[str, Any]:
    from dnnsplit.partition import Constraints, parse_link, parse_objective, solve
    from dnnsplit.partition.from_profile import problem_from_profile, tier_devices
    from dnnsplit.partition.plan_file import PlanContext, device_block, plan_document
    from dnnsplit.profiling.devices import load_device
    from dnnsplit.profiling.profile import Profile

    profile = Profile.load(layout.profile).calibrated()
    tiers = config.tier_names
    devices = {t: load_device(ref) for t, ref in config.tiers.items()}
    tier_profiles = {t: Profile.load(path) for t, path in config.tier_profiles.items()}
    constraints = Constraints(
        private_input=config.plan.private_input, max_mobile_mb=config.plan.max_mobile_mb
    )
    context = PlanContext(
        compress=config.split.compress,
        model={k: profile.model.get(k) for k in ("source", "name", "onnx", "sha256")},
        profile={
            "path": str(layout.profile),
            "input_bytes_on_wire": profile.input.bytes,
            "device": profile.device,
            "group": profile.group,
            "latency_ms": profile.latency_ms,
            "calibration": profile.calibration,
        },
        devices={
            t: device_block(spec, config.tier_profiles.get(t))
            for t, spec in tier_devices(tiers, devices).items()
        },
    )
    layout.plans.mkdir(exist_ok=True)
    summary: dict[str, Any] = {"networks": {}}
    for index, network in enumerate(config.plan.networks):
        label = network_label(network, index)
        progress(f"planning for {label}", index, len(config.plan.networks))
        links: dict[str, Any] = {config.first_link: parse_link(network)}
        for name, text in config.links.items():
            if name != config.first_link:
                links[name] = parse_link(text)
        problem = problem_from_profile(
            profile,
            tiers=tiers,
            devices=devices,
            tier_profiles=tier_profiles,
            links=links,
            objective=parse_objective(config.objective),
            constraints=constraints,
            compress=config.split.compress,
        )
        result = solve(problem)
        document = plan_document(result, context)
        if index == 0 and config.branch.enabled:
            document["branch"] = _branch_block(problem, result, layout, tier_devices(tiers, devices))
        write_document(layout.plans / f"{label}.yaml", document)
        if index == 0:
            write_document(layout.plan, document)
        pred = document["predicted"]
        summary["networks"][label] = {
            "link": network,
            "latency_ms": pred["latency_ms"],
            "energy_mj": pred["energy_mj"],
            "layers": result.prediction.layers_per_tier,
            "baselines": {k: v["latency_ms"] for k, v in document["baselines"].items()},
            "branch_latency_ms": document.get("branch", {}).get("latency_ms"),
        }
    summary["shipped"] = network_label(config.plan.networks[0], 0)
    return summary


def _branch_block(problem: Any, result: Any, layout: Layout, devices: dict[str, Any]) -> dict[str, Any]:
    from dnnsplit.branching.branch_file import load_branch
    from dnnsplit.partition.early_exit import estimate_with_branch

    branch = load_branch(layout.branch)
    costs = branch.costs(layout.branch)
    estimate = estimate_with_branch(problem, costs, devices[problem.tiers[0]], devices[problem.tiers[1]])
    return {
        "directory": str(layout.branch),
        "at": branch.at,
        **estimate.to_dict(),
        "latency_ms": estimate.best.latency_ms,
        "saves_latency_ms": result.prediction.latency_ms - estimate.best.latency_ms,
    }
