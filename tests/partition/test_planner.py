"""solve(): constraints, infeasibility, budget flags, baselines and the plan's plain-data form."""

from __future__ import annotations

import json

import pytest

from dnnsplit.errors import UsageError
from dnnsplit.partition import (
    BEST_CUT,
    Constraints,
    LayerCost,
    LinkSpec,
    MobilePower,
    Objective,
    Problem,
    Tensor,
    evaluate,
    plan_for,
    solve,
    violations,
)


def convnet(**changes: object) -> Problem:
    """A heavy stem that shrinks a big input, a heavy body with large weights, a light head."""
    problem = Problem(
        tiers=("mobile", "edge"),
        layers=(
            LayerCost("stem", (60.0, 4.0), 40_000),
            LayerCost("body", (60.0, 4.0), 8_000_000),
            LayerCost("head", (3.0, 0.2), 2_000_000),
        ),
        tensors=(
            Tensor("image", 600_000, None, (0,)),
            Tensor("s", 100_000, 0, (1,)),
            Tensor("f", 20_000, 1, (2,)),
            Tensor("logits", 4_000, 2, ()),
        ),
        outputs=(3,),
        links=(LinkSpec(up_mbps=100, down_mbps=100, rtt_ms=10, radio="wifi"),),
        mobile_power=MobilePower(2.5, 0.3),
    )
    return problem.with_constraints(Constraints(**changes))  # type: ignore[arg-type]


def test_private_input_keeps_the_stem_on_mobile() -> None:
    # Free: upload the image (48 ms) rather than run the stem on the phone (60 ms, then 8 ms for 's').
    free = solve(convnet())
    assert free.assignment == {"stem": "edge", "body": "edge", "head": "edge"}
    private = solve(convnet(private_input=True))
    assert private.assignment == {"stem": "mobile", "body": "edge", "head": "edge"}
    assert private.feasible and private.solver == "min-cut"
    assert [t.name for t in private.prediction.links[0].up_tensors] == ["s"]


def test_infeasible_memory_with_private_input_raises() -> None:
    with pytest.raises(UsageError, match="max_mobile_mb=0") as info:
        solve(convnet(private_input=True, max_mobile_mb=0))
    assert "0.04 MB" in info.value.message and info.value.hint
    # Without private_input everything can leave the phone, so a zero cap is fine.
    assert solve(convnet(max_mobile_mb=0)).prediction.mobile_weight_bytes == 0


def test_memory_cap_uses_the_exact_milp() -> None:
    # Under an energy objective with a slow link, keeping the body on mobile would be cheapest ...
    slow = convnet(private_input=True).with_objective(Objective(0, 1))
    slow = Problem(
        **{**slow.__dict__, "links": (LinkSpec(up_mbps=0.5, down_mbps=1, rtt_ms=100, radio="lte"),)}
    )
    assert solve(slow).assignment["body"] == "mobile"
    # ... but it does not fit in 5 MB: the body must go, the head may stay only with the body.
    capped = slow.with_constraints(Constraints(private_input=True, max_mobile_mb=5))
    plan = solve(capped)
    assert plan.solver == "milp" and plan.proven_optimal and plan.feasible
    assert plan.prediction.mobile_weight_bytes <= 5_000_000
    best = min(
        (
            evaluate(capped, a)
            for a in ([0, 1, 1], [0, 0, 1])
            if evaluate(capped, a).mobile_weight_bytes <= 5e6
        ),
        key=lambda p: p.objective,
    )
    assert plan.prediction.objective == pytest.approx(best.objective)


def test_missed_latency_budget_is_flagged_not_raised() -> None:
    plan = solve(convnet(budget_ms=1.0))
    assert plan.feasible and not plan.meets_budget
    assert plan.over_budget_ms == pytest.approx(plan.prediction.latency_ms - 1.0)
    data = plan.to_dict()
    assert data["meets_budget"] is False and data["violations"][0].startswith("budget_ms")
    assert solve(convnet(budget_ms=1000.0)).meets_budget


def test_hard_budget_for_energy_objective() -> None:
    # A long round trip: offloading the body saves the phone's energy (it idles at 0.3 W while waiting)
    # but not time, so the energy optimum is slower than the fastest plan.
    problem = Problem(
        tiers=("mobile", "edge"),
        layers=(
            LayerCost("stem", (10.0, 1.0)),
            LayerCost("body", (100.0, 5.0)),
            LayerCost("head", (2.0, 0.2)),
        ),
        tensors=(
            Tensor("image", 600_000, None, (0,)),
            Tensor("s", 10_000, 0, (1,)),
            Tensor("f", 20_000, 1, (2,)),
            Tensor("logits", 4_000, 2, ()),
        ),
        outputs=(3,),
        links=(LinkSpec(up_mbps=10, down_mbps=20, rtt_ms=100, radio="wifi"),),
        mobile_power=MobilePower(2.5, 0.3),
        objective=Objective(0, 1),
    )
    frugal = solve(problem)
    fastest = solve(problem.with_objective(Objective(1, 0)))
    assert frugal.assignment == {"stem": "mobile", "body": "edge", "head": "edge"}
    assert fastest.assignment == {"stem": "mobile", "body": "mobile", "head": "mobile"}
    assert frugal.prediction.latency_ms == pytest.approx(10 + 5.2 + 8 + 50 + 1.6 + 50)
    assert fastest.prediction.latency_ms == pytest.approx(112.0)
    # A budget between the two forces the faster, costlier plan, solved exactly by the MILP.
    mid = solve(problem.with_constraints(Constraints(budget_ms=118)))
    assert mid.solver == "milp" and mid.meets_budget and mid.assignment == fastest.assignment
    assert mid.prediction.energy_mj == pytest.approx(2.5 * 112)
    # Below the fastest plan nothing fits: the fastest plan comes back, flagged.
    tight = solve(problem.with_constraints(Constraints(budget_ms=56)))
    assert not tight.meets_budget and tight.notes and tight.over_budget_ms == pytest.approx(56.0)
    assert tight.assignment == fastest.assignment


def test_energy_objective_needs_power_and_radio() -> None:
    with pytest.raises(UsageError, match="compute_power_w"):
        Problem(**{**convnet().__dict__, "mobile_power": None, "objective": Objective(0, 1)})
    with pytest.raises(UsageError, match="radio"):
        Problem(
            **{**convnet().__dict__, "links": (LinkSpec(1, 1, 1, radio=None),), "objective": Objective(0, 1)}
        )


def test_baselines_and_plain_data() -> None:
    problem = convnet(private_input=True)
    plan = solve(problem)
    assert set(plan.baselines) == {"all-mobile", "all-edge", BEST_CUT}
    assert plan.baselines["all-mobile"].latency_ms == pytest.approx(123.0)
    # all-edge still uploads the raw image and breaks private_input: reported with its violation.
    data = plan.to_dict()
    assert data["baselines"]["all-edge"]["violations"] == [
        "private_input: 'stem' reads the raw input off mobile"
    ]
    allowed = [b.objective for b in plan.baselines.values() if not violations(problem, b)]
    assert plan.prediction.objective <= min(allowed) and len(allowed) == 2
    assert json.loads(json.dumps(data)) == data  # plain data only: YAML/JSON-ready
    assert data["assignment"] == {"stem": "mobile", "body": "edge", "head": "edge"}
    assert data["prediction"]["links"][0]["up_tensors"] == [{"name": "s", "bytes": 100_000}]


def test_plan_for_a_given_assignment() -> None:
    plan = plan_for(convnet(private_input=True), {"stem": "edge", "body": "edge", "head": "edge"})
    assert plan.solver == "given" and not plan.feasible and not plan.proven_optimal


def test_three_tiers_best_cut_pair() -> None:
    problem = Problem(
        tiers=("mobile", "edge", "cloud"),
        layers=tuple(LayerCost(f"l{i}", (100.0, 3.0, 1.0)) for i in range(4)),
        tensors=(Tensor("in", 1_000_000, None, (0,)),)
        + tuple(Tensor(f"t{i}", 1000 * (4 - i), i, (i + 1,) if i < 3 else ()) for i in range(4)),
        outputs=(4,),
        links=(LinkSpec(10, 10, 20), LinkSpec(1000, 1000, 20, radio=None)),
    )
    plan = solve(problem)
    assert set(plan.baselines) == {"all-mobile", "all-edge", "all-cloud", BEST_CUT}
    # A chain: the optimum is a topological split, so the best pair of cuts matches it.
    assert plan.baselines[BEST_CUT].objective == pytest.approx(plan.prediction.objective)
    # The edge's 3 ms a layer beat a second round trip to the cloud for 1 ms a layer.
    assert plan.assignment == {"l0": "mobile", "l1": "edge", "l2": "edge", "l3": "edge"}
