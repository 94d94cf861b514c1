"""plan.yaml (dnnsplit/plan@1): written, read back, and recomputed by hand from the file alone; the sweep."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dnnsplit.errors import UsageError
from dnnsplit.partition import Constraints, evaluate, parse_link, plan_for, problem_from_profile, solve
from dnnsplit.partition.plan_file import (
    SCHEMA,
    PlanContext,
    load_plan,
    plan_document,
    save_plan,
    speedup,
    stretches,
)
from dnnsplit.partition.sweep import (
    cut_changes,
    describe_cut,
    parse_sweep,
    sweep_bandwidth,
    with_uplink,
)
from tests.fixtures.cost_model import recompute_by_hand
from tests.fixtures.profiles import chain_profile, residual_profile


@pytest.mark.parametrize("tiers", [("mobile", "edge"), ("mobile", "edge", "cloud"), ("mobile", "cloud")])
@pytest.mark.parametrize("network", ["4g", "up=2,down=10,rtt=30,radio=3g", "wifi"])
def test_plan_file_recomputes_by_hand(tmp_path: Path, tiers: tuple[str, ...], network: str) -> None:
    problem = problem_from_profile(
        residual_profile(),
        tiers=tiers,
        links={f"mobile-{tiers[1]}": network},
        objective="latency=1,energy=0.2",
    )
    plan = solve(problem)
    path = tmp_path / "plan.yaml"
    save_plan(path, plan, PlanContext(model={"name": "residual", "sha256": "ab" * 32}))
    doc = yaml.safe_load(path.read_text())
    assert doc["schema"] == SCHEMA and doc["model"]["sha256"] == "ab" * 32
    latency, energy = recompute_by_hand(doc)
    assert doc["predicted"]["latency_ms"] == pytest.approx(latency, rel=1e-12)
    assert doc["predicted"]["energy_mj"] == pytest.approx(energy, rel=1e-12)
    # Every baseline too: the file says which layers each runs where only through its name, so rebuild it.
    for name, figures in doc["baselines"].items():
        if name.startswith("all-"):
            tier = name.removeprefix("all-")
            as_if = {**doc, "layers": [{**la, "tier": tier} for la in doc["layers"]]}
            assert figures["latency_ms"] == pytest.approx(recompute_by_hand(as_if)[0], rel=1e-12)
    # The breakdown adds up to the total.
    br = doc["predicted"]["breakdown"]
    parts = sum(br["compute_ms"].values()) + sum(br["transfer_ms"].values()) + sum(br["return_ms"].values())
    assert parts == pytest.approx(latency, rel=1e-12)


def test_load_plan_rebuilds_the_problem(tmp_path: Path) -> None:
    problem = problem_from_profile(
        chain_profile(),
        tiers=("mobile", "edge", "cloud"),
        links={"mobile-edge": "up=40,down=80,rtt=5,radio=wifi"},
        constraints=Constraints(private_input=True, budget_ms=500),
    )
    plan = solve(problem)
    path = tmp_path / "plan.json"
    save_plan(path, plan)
    back = load_plan(path)
    assert back.problem == problem
    assert back.assignment == plan.assignment
    assert evaluate(back.problem, back.assignment) == plan.prediction
    assert back.document["cut_tensors"]["mobile-edge"]["up"] == [
        {"name": t.name, "bytes": t.bytes} for t in plan.prediction.links[0].up_tensors
    ]


def test_load_plan_errors(tmp_path: Path) -> None:
    plan = solve(problem_from_profile(chain_profile()))
    doc = plan_document(plan)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**doc, "layers": [{"name": "conv1"}]}))
    with pytest.raises(UsageError, match="not a complete plan"):
        load_plan(bad)
    backwards = [{**la, "tier": "edge" if la["name"] == "conv1" else "mobile"} for la in doc["layers"]]
    bad.write_text(yaml.safe_dump({**doc, "layers": backwards}))
    with pytest.raises(UsageError, match="sends data backwards"):
        load_plan(bad)
    bad.write_text(yaml.safe_dump({**doc, "schema": "dnnsplit/profile@1"}))
    with pytest.raises(UsageError, match="not a dnnsplit/plan file"):
        load_plan(bad)


def test_stretches_of_a_dag() -> None:
    problem = problem_from_profile(residual_profile())
    # conv1 on mobile, conv2, the skip add and fc on edge: two stretches.
    assert [(s.tier, s.first, s.last) for s in stretches(problem, (0, 1, 1, 1))] == [
        ("mobile", 0, 0),
        ("edge", 1, 3),
    ]
    assert [(s.tier, s.count) for s in stretches(problem, (0, 0, 0, 0))] == [("mobile", 4)]
    # Three tiers, a stretch each.
    three = problem_from_profile(residual_profile(), tiers=("mobile", "edge", "cloud"))
    assert [(s.tier, s.count) for s in stretches(three, (0, 1, 1, 2))] == [
        ("mobile", 1),
        ("edge", 2),
        ("cloud", 1),
    ]


def test_speedup_uses_the_best_allowed_baseline() -> None:
    problem = problem_from_profile(
        chain_profile(), links={"mobile-edge": "up=2,down=10,rtt=1,radio=wifi"}, constraints=Constraints()
    )
    plan = solve(problem)
    gain = speedup(plan)
    assert gain is not None
    best = min(plan.baselines.values(), key=lambda b: b.objective)
    assert gain.latency == pytest.approx(best.latency_ms / plan.prediction.latency_ms)
    assert gain.latency >= 1.0
    # all-edge breaks private_input, so it cannot be the reference then.
    private = solve(problem.with_constraints(Constraints(private_input=True)))
    assert speedup(private).baseline != "all-edge"


def test_parse_sweep() -> None:
    points = parse_sweep("0.1:100:4")
    assert points == pytest.approx((0.1, 1.0, 10.0, 100.0))
    for text in ("0.1:100", "a:b:c", "0:100:10", "10:1:5", "1:10:1", "1:inf:3"):
        with pytest.raises(UsageError, match="sweep"):
            parse_sweep(text)


def test_sweep_moves_the_cut_where_the_formula_says() -> None:
    # On the phone (6x host) the chain takes 12 + 18 + 1.2 + 3 = 34.2 ms. Over a b Mbit/s uplink with 1 ms rtt
    # and the logits back (40 B at 50 Mbit/s, 0.0064 ms):
    #   cut after pool: 31.2 + 0.2 (edge fc) + 4096 B up + 1 + 0.0064 = 32.4064 + 32.768 / b
    #   all on edge:    2.28 (edge)         + 150528 B up + 1 + 0.0064 =  3.2864 + 1204.224 / b
    # (cuts after conv1 or conv2 never win: their tensors are too big for the compute they save).
    problem = problem_from_profile(chain_profile(), links={"mobile-edge": "up=1,down=50,rtt=1,radio=wifi"})
    to_pool = 32.768 / (34.2 - 32.4064)
    to_edge = (1204.224 - 32.768) / (32.4064 - 3.2864)
    points = sweep_bandwidth(problem, parse_sweep("1:1000:31"))
    changes = cut_changes(points)
    assert len(changes) == 2
    first, second = changes
    assert points[first - 1].up_mbps < to_pool < points[first].up_mbps
    assert points[second - 1].up_mbps < to_edge < points[second].up_mbps
    assert describe_cut(points[first - 1].plan) == "all on mobile"
    assert describe_cut(points[first].plan) == "mobile-edge: after pool"
    assert describe_cut(points[second].plan) == "mobile-edge: raw input"
    assert points[first].cut == (("c",),) and points[second].cut == (("input",),)
    for pt in points:  # each point is the exact optimum at its own bandwidth
        b = pt.up_mbps
        assert pt.plan.prediction.latency_ms == pytest.approx(
            min(34.2, 32.4064 + 32.768 / b, 3.2864 + 1204.224 / b), rel=1e-9
        )
        assert pt.plan.problem.links[0].up_mbps == b and pt.plan.problem.links[0].down_mbps == 50


def test_with_uplink_changes_only_the_uplink() -> None:
    problem = problem_from_profile(
        chain_profile(), tiers=("mobile", "edge", "cloud"), links={"mobile-edge": "4g"}
    )
    changed = with_uplink(problem, 42.0)
    assert changed.links[0].up_mbps == 42.0 and problem.links[0] == parse_link("4g")
    assert changed.links[0].down_mbps == problem.links[0].down_mbps
    assert changed.links[1] == problem.links[1]
    assert changed.layers == problem.layers


def test_describe_cut_names_the_last_layer_before_each_link() -> None:
    problem = problem_from_profile(chain_profile(), tiers=("mobile", "edge", "cloud"))
    plan = plan_for(problem, (0, 0, 1, 2))
    assert describe_cut(plan) == "mobile-edge: after conv2; edge-cloud: after pool"


@pytest.mark.parametrize("compress", ["fp16", "int8"])
def test_compressed_plan_recomputes_by_hand(tmp_path: Path, compress: str) -> None:
    # With a codec the logits still come back as float32 (return_bytes): the file alone must say so.
    problem = problem_from_profile(
        residual_profile(), tiers=("mobile", "edge"), links={"mobile-edge": "3g"}, compress=compress
    )
    path = tmp_path / "plan.yaml"
    save_plan(path, solve(problem), PlanContext(model={"name": "residual", "sha256": "ab" * 32}))
    doc = yaml.safe_load(path.read_text())
    logits = next(t for t in doc["tensors"] if t["name"] == "logits")
    assert logits["return_bytes"] == 40 and logits["bytes"] < 40
    latency, _ = recompute_by_hand(doc)
    assert doc["predicted"]["latency_ms"] == pytest.approx(latency, rel=1e-12)
    edge = {**doc, "layers": [{**la, "tier": "edge"} for la in doc["layers"]]}  # logits come back down
    assert doc["baselines"]["all-edge"]["latency_ms"] == pytest.approx(recompute_by_hand(edge)[0], rel=1e-12)
