"""problem_from_profile on a Profile built by hand (no model export or measurement needed)."""

from __future__ import annotations

import pytest
import yaml

from dnnsplit.errors import UsageError
from dnnsplit.partition import (
    BACKHAUL,
    NETWORK_PRESETS,
    Constraints,
    Objective,
    parse_link,
    problem_from_profile,
    solve,
)
from dnnsplit.profiling.devices import DeviceSpec
from tests.fixtures.profiles import residual_profile


def test_builds_costs_tensors_and_defaults() -> None:
    problem = problem_from_profile(residual_profile())
    assert problem.tiers == ("mobile", "edge")
    # Host times scaled by the presets: mobile-web 6x, edge 0.4x.
    assert [la.compute_ms for la in problem.layers] == [
        pytest.approx((12.0, 0.8)),
        pytest.approx((18.0, 1.2)),
        pytest.approx((3.0, 0.2)),
        pytest.approx((6.0, 0.4)),
    ]
    assert [la.weight_bytes for la in problem.layers] == [4000, 8000, 0, 40_000]
    tensors = {x.name: x for x in problem.tensors}
    assert tensors["input"].producer is None and tensors["input"].bytes == 3 * 16 * 16 * 4
    assert tensors["a"].consumers == (1, 2)  # shared by conv2 and the skip connection
    assert [problem.tensors[o].name for o in problem.outputs] == ["logits"]
    assert problem.links == (NETWORK_PRESETS["wifi"],)
    assert problem.mobile_power is not None and problem.mobile_power.compute_w == 2.5


def test_tier_profiles_devices_links_and_three_tiers() -> None:
    fast_edge = DeviceSpec(name="big-edge", latency_scale=0.25)
    problem = problem_from_profile(
        residual_profile(),
        tiers=("mobile", "edge", "cloud"),
        devices={"edge": fast_edge},
        tier_profiles={"mobile": residual_profile(scale=5.0)},  # measured on the phone itself
        links={"mobile-edge": "up=8,down=40,rtt=30", "edge-cloud": "up=500,down=500,rtt=15,radio=none"},
        objective="latency=1,energy=0.5",
        constraints=Constraints(private_input=True),
    )
    assert problem.layers[0].compute_ms == pytest.approx((10.0, 0.5, 0.2))  # measured 10, 2 x 0.25, 2 x 0.1
    assert problem.links[0] == parse_link("up=8,down=40,rtt=30")
    assert problem.links[1].up_mbps == 500 and problem.links[1].radio is None
    assert problem.objective == Objective(1.0, 0.5)
    plan = solve(problem)
    assert plan.assignment["conv1"] == "mobile"
    data = plan.to_dict()
    assert yaml.safe_load(yaml.safe_dump(data)) == data  # plan.yaml-ready
    assert set(data["baselines"]) == {"all-mobile", "all-edge", "all-cloud", "best-single-cut"}
    default = problem_from_profile(residual_profile(), tiers=("mobile", "edge", "cloud"))
    assert default.links[1] == BACKHAUL


def test_mobile_cloud_uses_the_network_preset() -> None:
    problem = problem_from_profile(
        residual_profile(), tiers=("mobile", "cloud"), links={"mobile-cloud": "4g"}
    )
    assert problem.links == (NETWORK_PRESETS["4g"],)
    assert problem.layers[1].compute_ms == pytest.approx((18.0, 0.3))  # cloud preset: 0.1x


def test_profile_errors() -> None:
    with pytest.raises(UsageError, match="unknown 'mobile-cloud'"):
        problem_from_profile(residual_profile(), links={"mobile-cloud": "4g"})
    with pytest.raises(UsageError, match="unknown 'fog'"):
        problem_from_profile(residual_profile(), devices={"fog": DeviceSpec(name="x")})
    partial = residual_profile()
    partial.layers = partial.layers[:2]
    with pytest.raises(UsageError, match="lacks 2 of the model's 4 layers"):
        problem_from_profile(residual_profile(), tier_profiles={"edge": partial})
    broken = residual_profile()
    broken.layers = [broken.layers[1], broken.layers[0], *broken.layers[2:]]
    with pytest.raises(UsageError, match="later layer"):
        problem_from_profile(broken)
    with pytest.raises(UsageError, match="unsupported tiers"):
        problem_from_profile(residual_profile(), tiers=("edge", "cloud"))
    with pytest.raises(UsageError, match="compute_power_w"):
        problem_from_profile(
            residual_profile(), devices={"mobile": DeviceSpec(name="phone")}, objective="energy"
        )


def test_infeasible_memory_cap_from_profile() -> None:
    problem = problem_from_profile(
        residual_profile(), constraints=Constraints(private_input=True, max_mobile_mb=0)
    )
    with pytest.raises(UsageError, match="max_mobile_mb"):
        solve(problem)
