"""Property tests: the exact solvers, evaluate and the split baseline against brute-force enumeration."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dnnsplit.errors import UsageError
from dnnsplit.partition import BEST_CUT, Constraints, Problem, baselines, evaluate, solve, split_assignment
from dnnsplit.partition.mincut import solve_mincut
from dnnsplit.partition.terms import cost_terms, terms_value

from .reference import close, enumerate_all, hard_ok, objective_of, price, problems

# DNNSPLIT_PROPERTY_EXAMPLES=5000 for a soak run; the default keeps the folder fast.
EXAMPLES = int(os.environ.get("DNNSPLIT_PROPERTY_EXAMPLES", "150"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BUDGET_SLACK = 1 + 1e-9  # the documented tolerance on "latency <= budget"


def _draw_constraints(data: st.DataObject, problem: Problem, latency: np.ndarray) -> Constraints:
    """Random constraints that are often binding: memory caps within the model's weight range, budgets
    between the fastest and the slowest assignment (and a little outside)."""
    private = data.draw(st.booleans(), label="private_input")
    total = sum(la.weight_bytes for la in problem.layers)
    max_mb = None
    if data.draw(st.booleans(), label="use memory cap"):
        max_mb = data.draw(st.integers(0, total), label="max mobile bytes") / 1e6
    budget = None
    if data.draw(st.booleans(), label="use budget"):
        lo, hi = float(latency.min()), float(latency.max())
        budget = max(lo + data.draw(st.floats(-0.5, 1.2), label="budget fraction") * (hi - lo), 1e-3)
    return Constraints(budget_ms=budget, private_input=private, max_mobile_mb=max_mb)


@PROPERTY
@given(problems())
def test_min_cut_is_optimal_without_constraints(problem: Problem) -> None:
    e = enumerate_all(problem)
    best = float(objective_of(problem, e).min())
    plan = solve(problem, with_baselines=False)
    assert plan.solver == "min-cut" and plan.proven_optimal
    assert close(plan.prediction.objective, best), (plan.prediction.objective, best)
    # The cut's own value (construction constant included) is the same number.
    _, value = solve_mincut(problem, cost_terms(problem))
    assert close(value, best)


@PROPERTY
@given(problems(), st.data())
def test_constrained_optimum_matches_brute_force(problem: Problem, data: st.DataObject) -> None:
    e = enumerate_all(problem)
    problem = problem.with_constraints(_draw_constraints(data, problem, e.latency))
    budget = problem.constraints.budget_ms
    ok = hard_ok(problem, e)
    if not ok.any():
        event("infeasible")
        with pytest.raises(UsageError):
            solve(problem, with_baselines=False)
        return
    plan = solve(problem, with_baselines=False)
    event(f"solver: {plan.solver}")
    event(f"{len(problem.tiers)} tiers, {'<=6' if problem.n <= 6 else '7-12'} layers")
    got = plan.prediction
    assert plan.feasible and ok[_row(e.rows, got.assignment)]
    value = objective_of(problem, e)
    fastest = float(e.latency[ok].min())
    within = ok & (e.latency <= (budget or np.inf) * BUDGET_SLACK)
    if budget is None or problem.objective.is_latency:
        # Latency objective: the budget is only reported.
        event("budget reported" if budget else "no budget")
        assert close(got.objective, float(value[ok].min())), (got.objective, float(value[ok].min()))
        assert plan.meets_budget == bool(within.any())
    elif within.any():
        event("hard budget met")
        assert close(got.objective, float(value[within].min())), (got.objective, float(value[within].min()))
        assert plan.meets_budget
    else:
        # Nothing meets the budget: the fastest plan, flagged.
        event("hard budget missed")
        assert not plan.meets_budget and plan.over_budget_ms > 0
        assert close(got.latency_ms, fastest)


@PROPERTY
@given(problems(), st.data())
def test_evaluate_and_terms_match_the_formulas(problem: Problem, data: st.DataObject) -> None:
    e = enumerate_all(problem)
    terms = cost_terms(problem)
    picks = data.draw(st.lists(st.integers(0, len(e.rows) - 1), min_size=1, max_size=4), label="rows")
    for i in picks:
        pred = evaluate(problem, e.rows[i])
        assert close(pred.latency_ms, float(e.latency[i]), 1e-9)
        assert close(pred.energy_mj, float(e.energy[i]), 1e-9)
        assert pred.mobile_weight_bytes == int(e.mobile_bytes[i])
        assert close(terms_value(problem, terms, e.rows[i]), pred.objective, 1e-9)
        # The breakdown adds up to the totals.
        parts = sum(pred.compute_ms) + pred.transfer_ms + pred.return_ms
        assert close(parts, pred.latency_ms, 1e-12)
        assert pred.energy is not None and close(pred.energy.total_mj, pred.energy_mj, 1e-12)


@PROPERTY
@given(problems(), st.data())
def test_best_single_cut_matches_enumeration_of_cuts(problem: Problem, data: st.DataObject) -> None:
    e = enumerate_all(problem)
    problem = problem.with_constraints(_draw_constraints(data, problem, e.latency))
    n, links = problem.n, len(problem.links)
    cuts = (
        [(b,) for b in range(n + 1)] if links == 1 else [(a, b) for b in range(n + 1) for a in range(b + 1)]
    )
    splits = price(
        problem, np.array([split_assignment(n, c) for c in cuts], dtype=np.int8).reshape(len(cuts), n)
    )
    ok = hard_ok(problem, splits)
    got = baselines(problem).get(BEST_CUT)
    if not ok.any():
        assert got is None
        return
    assert got is not None
    value = objective_of(problem, splits)
    budget = problem.constraints.budget_ms
    within = ok & (splits.latency <= (budget or np.inf) * BUDGET_SLACK)
    if budget is None or problem.objective.is_latency:
        assert close(got.objective, float(value[ok].min()))
    elif within.any():
        assert close(got.objective, float(value[within].min()))
    else:
        assert close(got.latency_ms, float(splits.latency[ok].min()))
    # The optimum over all DAG assignments is never worse than the best topological split.
    if budget is None:
        assert solve(problem, with_baselines=False).prediction.objective <= got.objective * (1 + 1e-9) + 1e-9


def _row(rows: np.ndarray, assignment: tuple[int, ...]) -> int:
    return int(np.flatnonzero((rows == np.array(assignment, dtype=np.int8)).all(axis=1))[0])
