"""Every torchvision classification model up to 150M params splits at its plan's cuts (2 and 3 tiers)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnnsplit.models.torchvision_zoo import classification_model_names, default_meta
from dnnsplit.partition import Constraints, problem_from_profile, solve
from dnnsplit.partition.plan_file import PlanContext, load_plan, save_plan
from dnnsplit.profiling import ProfileSettings, prepare_model, profile_prepared
from dnnsplit.profiling.devices import DeviceSpec
from dnnsplit.splitting.split import SplitSettings, segments_from_plan, split_model

SMALL_ENOUGH = [n for n in classification_model_names() if default_meta(n)["num_params"] <= 150_000_000]
# A phone 200x slower than the host on a fast link, the raw input kept private: plans that really cut.
SLOW_PHONE = DeviceSpec(name="slow-phone", latency_scale=200.0, compute_power_w=3.0, idle_power_w=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL_ENOUGH)
def test_every_model_splits_at_its_plan(name: str, tmp_path: Path) -> None:
    prepared = prepare_model(f"torchvision:{name}")
    profile = profile_prepared(prepared, ProfileSettings(threads=2, warmup=1, repeat=2))
    for tiers in (("mobile", "edge"), ("mobile", "edge", "cloud")):
        problem = problem_from_profile(
            profile,
            tiers=tiers,
            devices={"mobile": SLOW_PHONE},
            links={f"mobile-{tiers[1]}": "up=200,down=200,rtt=1,radio=wifi"},
            constraints=Constraints(private_input=True),
        )
        plan_path = tmp_path / f"plan{len(tiers)}.yaml"
        save_plan(plan_path, solve(problem, with_baselines=False), PlanContext(model=profile.model))
        plan = load_plan(plan_path)
        segment_of, names = segments_from_plan(prepared.graph, plan, prepared.exported.sha256)
        result = split_model(
            prepared.exported.path,
            prepared.graph,
            segment_of,
            names,
            prepared.model_block(),
            {"plan": str(plan_path)},
            tmp_path / f"split{len(tiers)}",
            SplitSettings(validate=1, simplify=False),
        )
        assert result.manifest.validation.passed, (name, tiers, result.manifest.validation)
        assert names[0] == "mobile" and len(result.manifest.segments) >= 2, (name, tiers, names)
