"""The max-flow against networkx, and the solvers on DAGs far too large to enumerate."""

from __future__ import annotations

import random

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnnsplit.partition import (
    Constraints,
    Objective,
    evaluate,
    solve,
)
from dnnsplit.partition.maxflow import min_cut
from dnnsplit.partition.synthetic import random_dag


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_min_cut_matches_networkx(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 12), label="nodes")
    pairs = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(
        lambda e: e[0] != e[1] and e[1] != 0
    )
    edges = data.draw(st.lists(pairs, max_size=40, unique=True), label="edges")
    edges = [(u, v) for u, v in edges if u != 1]  # nothing leaves the sink
    caps = [
        data.draw(st.one_of(st.floats(0, 100), st.just(np.inf)), label="cap") if v != 1 else 1.0
        for _, v in edges
    ]
    caps = [
        c if v != 1 else data.draw(st.floats(0, 100), label="sink cap")
        for c, (_, v) in zip(caps, edges, strict=True)
    ]
    graph = nx.DiGraph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from((u, v, {"capacity": c}) for (u, v), c in zip(edges, caps, strict=True))
    expected = nx.minimum_cut_value(graph, 0, 1)
    tails = np.array([u for u, _ in edges], dtype=np.int64)
    heads = np.array([v for _, v in edges], dtype=np.int64)
    value, side = min_cut(n, tails, heads, np.array(caps, dtype=float), 0, 1)
    assert side[0] and not side[1]
    assert value == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # The value is the capacity of the returned side.
    crossing = sum(c for (u, v), c in zip(edges, caps, strict=True) if side[u] and not side[v])
    assert crossing == pytest.approx(value, rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("tiers", [("mobile", "edge"), ("mobile", "edge", "cloud")])
def test_large_dag_is_solved_fast_and_beats_baselines(tiers: tuple[str, ...]) -> None:
    problem = random_dag(3000, tiers, seed=len(tiers))
    plan = solve(problem)  # its speed is measured in benchmarks/plan_solver.py, not asserted here
    assert plan.solver == "min-cut"
    assert plan.prediction.objective <= min(b.objective for b in plan.baselines.values()) * (1 + 1e-12)
    # Moving any one layer to a neighbouring tier (when still valid) never helps.
    rng = random.Random(0)
    tiers_of = list(plan.prediction.assignment)
    for v in rng.sample(range(problem.n), 200):
        for t in (tiers_of[v] - 1, tiers_of[v] + 1):
            if 0 <= t < len(tiers):
                moved = tiers_of[:v] + [t] + tiers_of[v + 1 :]
                if all(moved[p] <= moved[c] for p, c in problem.edges):
                    assert evaluate(problem, moved).objective >= plan.prediction.objective * (1 - 1e-12)


def test_large_dag_with_memory_cap_and_energy_budget() -> None:
    # A long round trip makes the energy optimum (the phone idles cheaply while waiting) slower than the fastest.
    problem = random_dag(300, ("mobile", "edge", "cloud"), seed=0, rtt_ms=100).with_objective(
        Objective(0.0, 1.0)
    )
    cap = solve(problem, with_baselines=False).prediction.mobile_weight_bytes / 2e6
    capped = problem.with_constraints(Constraints(max_mobile_mb=cap))
    frugal = solve(capped, with_baselines=False)
    fastest = solve(capped.with_objective(Objective()), with_baselines=False)
    assert frugal.solver == "milp" and frugal.prediction.mobile_weight_bytes <= cap * 1e6
    assert frugal.prediction.latency_ms > fastest.prediction.latency_ms
    budget = (frugal.prediction.latency_ms + fastest.prediction.latency_ms) / 2
    plan = solve(problem.with_constraints(Constraints(budget_ms=budget, max_mobile_mb=cap)))
    assert plan.meets_budget and plan.feasible and plan.proven_optimal and plan.solver == "milp"
    assert frugal.prediction.energy_mj <= plan.prediction.energy_mj <= fastest.prediction.energy_mj
