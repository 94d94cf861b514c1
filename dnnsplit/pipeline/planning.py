"""The plan stage: the optimal split on every configured network (the first is the one shipped).

Each plan is written as a ``dnnsplit/plan@1`` file under ``OUT/plans/``, the shipped one also as
``OUT/plan.yaml`` for the split stage; with a branch, the shipped plan gains the expected latency with
the branch's measured exit rate. Every plan comes from ``partition.request.make_plan``, as
``dnnsplit plan``'s do: the same document, the same checks (a branch built for another model is refused).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from dnnsplit.fileio import write_document
from dnnsplit.partition.network import LinkSpec
from dnnsplit.partition.request import PlanRequest, TierProfile, make_plan
from dnnsplit.pipeline.config import PipelineConfig
from dnnsplit.pipeline.layout import Layout
from dnnsplit.progress import ProgressFn


def network_label(link: LinkSpec, index: int) -> str:
    """``4g`` stays ``4g``; a custom link (``up_mbps: 8, ...``) becomes ``custom-<index>``."""
    return link.name if link.is_preset else f"custom-{index}"


def bottleneck_directory(config: PipelineConfig, layout: Layout) -> Path | None:
    """The bottleneck the plan weighs: the one the config names (``bottleneck.directory``), else the one
    the bottleneck stage trained (``OUT/bottleneck``); None without a bottleneck section."""
    b = config.bottleneck
    if not b.enabled:
        return None
    return Path(b.directory) if b.directory is not None else layout.bottleneck


def plan_request(config: PipelineConfig, layout: Layout) -> PlanRequest:
    """The shipped plan's request: the profile stage's profile, the config's tiers, links and objective."""
    from dnnsplit.bottleneck.bottleneck_file import load_bottleneck
    from dnnsplit.branching.branch_file import load_branch
    from dnnsplit.partition.boundary_costs import BoundaryCosts
    from dnnsplit.partition.objective import Constraints
    from dnnsplit.profiling.devices import load_device
    from dnnsplit.profiling.profile import Profile

    directory = bottleneck_directory(config, layout)
    return PlanRequest(
        profile=Profile.load(layout.profile),
        profile_path=str(layout.profile),
        tiers=config.tier_names,
        devices={t: load_device(ref) for t, ref in config.tiers.items()},
        tier_profiles={t: TierProfile(Profile.load(path), path) for t, path in config.tier_profiles.items()},
        links=dict(config.links),  # the mobile link's is plan.networks[0], the shipped plan's
        objective=config.objective,
        constraints=Constraints(
            private_input=config.plan.private_input, max_mobile_mb=config.plan.max_mobile_mb
        ),
        compress=config.split.compress,
        branch=load_branch(layout.branch).costs(layout.branch) if config.branch.enabled else None,
        session_requests=config.plan.session_requests or None,
        boundaries=None if config.plan.boundaries is None else BoundaryCosts.load(config.plan.boundaries),
        max_accuracy_drop=config.plan.max_accuracy_drop,
        bottleneck=None if directory is None else load_bottleneck(directory).costs(directory),
    )


def plan_networks(config: PipelineConfig, layout: Layout, progress: ProgressFn) -> dict[str, Any]:
    shipped = plan_request(config, layout)
    layout.plans.mkdir(exist_ok=True)
    summary: dict[str, Any] = {"networks": {}}
    for index, network in enumerate(config.plan.networks):
        label = network_label(network, index)
        progress(f"planning for {label}", index, len(config.plan.networks))
        # The branch is measured against the shipped plan only; the other networks are for the report.
        request = (
            shipped
            if index == 0
            else replace(shipped, links={**shipped.links, config.first_link: network}, branch=None)
        )
        planned = make_plan(request)
        document = planned.to_dict()
        write_document(layout.plans / f"{label}.yaml", document)
        if index == 0:
            write_document(layout.plan, document)
        pred = planned.plan.prediction
        summary["networks"][label] = {
            "link": network.describe(),
            "latency_ms": pred.latency_ms,
            "energy_mj": pred.energy_mj,
            "layers": pred.layers_per_tier,
            "baselines": {k: v.latency_ms for k, v in planned.plan.baselines.items()},
            "branch_latency_ms": None if planned.branch is None else planned.branch.latency_ms,
        }
    summary["shipped"] = network_label(config.plan.networks[0], 0)
    return summary
