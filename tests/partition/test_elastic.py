"""Elastic candidates: the sweep's optima, their pieces, and the per-request decision against brute force."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnnsplit.errors import UsageError
from dnnsplit.partition import Problem, evaluate, solve
from dnnsplit.partition.elastic import (
    ALL_EDGE,
    ALL_LOCAL,
    Context,
    ContextGrid,
    ElasticSpec,
    decide,
    in_context,
    piece_of_layer,
    predict_ms,
    sweep_candidates,
)
from tests.fixtures.elastic import two_piece_spec

from .reference import problems

SMALL_GRID = ContextGrid(up_mbps=(0.1, 1.0, 10.0, 200.0), rtt_ms=(2.0, 150.0), phone_speed=(0.5, 2.0), edge_load=(1.0, 8.0))
TINY_GRID = ContextGrid(up_mbps=(0.1, 200.0), rtt_ms=(2.0, 150.0), phone_speed=(0.5, 2.0), edge_load=(1.0,))
PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
contexts = st.builds(
    Context,
    st.floats(0.05, 500.0),
    st.floats(0.05, 500.0),
    st.floats(0.0, 300.0),
    st.floats(0.25, 4.0),
    st.floats(1.0, 16.0),
)


def _assignment(problem: Problem, spec: ElasticSpec, boundary: int) -> list[int]:
    piece = piece_of_layer(problem, spec)
    return [0 if piece[la.name] < boundary else 1 for la in problem.layers]


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


@PROPERTY
@given(problems(max_layers=8, tiers=("mobile", "edge")), contexts)
def test_a_candidate_costs_what_evaluate_says_and_the_decision_is_the_brute_force_best(
    problem: Problem, context: Context
) -> None:
    spec = sweep_candidates(problem, TINY_GRID)
    # Pieces are consecutive: every layer in one, and data never flows from a later piece to an earlier one.
    piece = piece_of_layer(problem, spec)
    assert set(piece.values()) == set(range(len(spec.pieces)))
    for p, c in problem.edges:
        assert piece[problem.layers[p].name] <= piece[problem.layers[c].name]
    there = in_context(problem, context)
    brute = {}
    for c in spec.candidates:
        exact = evaluate(there, _assignment(problem, spec, c.boundary)).latency_ms
        assert _close(predict_ms(spec, c, context), exact), (c, exact)
        brute[c.name] = exact
    chosen = decide(spec, context)
    assert _close(chosen.predicted_ms, min(brute.values()))
    assert brute[chosen.candidate.name] == min(brute.values())
    # Round trip through the manifest block changes nothing.
    again = ElasticSpec.from_dict(spec.to_dict())
    assert decide(again, context).candidate == chosen.candidate


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems(max_layers=8, tiers=("mobile", "edge")))
def test_in_every_swept_context_a_candidate_is_the_exact_optimum(problem: Problem) -> None:
    problem = problem.with_constraints(problem.constraints.__class__())
    spec = sweep_candidates(problem, TINY_GRID)
    names = {c.name for c in spec.candidates}
    assert {ALL_EDGE, ALL_LOCAL} <= names
    assert sum(c.optimal_in for c in spec.candidates) + sum(d["optimal_in"] for d in spec.dropped) == TINY_GRID.size
    ref = problem.links[0]
    for context in TINY_GRID.contexts(ref.down_mbps / ref.up_mbps):
        there = in_context(problem, context).with_objective(problem.objective.__class__(1.0, 0.0))
        best = solve(there, with_baselines=False).prediction.latency_ms
        got = decide(spec, context).predicted_ms
        if not spec.dropped:
            assert _close(got, best), (context, got, best)
        else:
            assert got >= best - 1e-9


def test_hysteresis_keeps_the_current_cut_unless_the_best_is_clearly_faster() -> None:
    spec = two_piece_spec()
    fast = Context(200, 200, 2)
    assert decide(spec, fast).candidate.name == "all-edge"  # 2 + 1 + 4 ms against 20 ms locally
    slow = Context(0.1, 0.1, 100)
    assert decide(spec, slow).candidate.name == "all-local"
    # At 10.5 Mbit/s cut-1 costs 10 + 1 + 7.65 ms, all-local 20 ms: 7% apart.
    near = Context(10.5, 10.5, 0.0)
    costs = decide(spec, near).costs
    assert costs["cut-1"] < costs["all-local"] < costs["cut-1"] * 1.2
    assert decide(spec, near, current=2, hysteresis=0.2).candidate.name == "all-local"
    assert decide(spec, near, current=2, hysteresis=0.2).kept
    assert decide(spec, near, current=2, hysteresis=0.01).candidate.name == "cut-1"
    assert decide(spec, near, allowed=[0, 2]).candidate.name in {"all-edge", "all-local"}
    with pytest.raises(UsageError, match="no candidate"):
        decide(spec, near, allowed=[5])


def test_three_tier_plans_are_refused() -> None:
    from dnnsplit.partition import LayerCost, LinkSpec, Tensor

    problem = Problem(
        tiers=("mobile", "edge", "cloud"),
        layers=(LayerCost("a", (1.0, 1.0, 1.0)),),
        tensors=(Tensor("input", 10, None, (0,)), Tensor("out", 10, 0, ())),
        outputs=(1,),
        links=(LinkSpec(1, 1, 1), LinkSpec(1, 1, 1, radio=None)),
    )
    with pytest.raises(UsageError, match="--tiers mobile,edge"):
        sweep_candidates(problem, SMALL_GRID)
