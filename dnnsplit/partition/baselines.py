"""Baselines every plan is compared with: all layers on one tier, and the best split in topological order.

The split baseline is Neurosurgeon's (Kang et al., ASPLOS 2017): the first b_0 layers (in topological order)
on mobile, the rest on the next tier; with three tiers, two cut indices b_0 <= b_1. Its cost separates into
one function per cut index (layer q is beyond link k iff q >= b_k, and every term of the model depends on
one link at a time), so all n + 1 (or (n + 1)(n + 2) / 2) splits are scored with prefix sums.
"""

from __future__ import annotations

import numpy as np

from dnnsplit.partition.evaluate import Prediction, evaluate
from dnnsplit.partition.objective import BUDGET_RTOL, Objective
from dnnsplit.partition.problem import Problem
from dnnsplit.partition.terms import CostTerms, cost_terms

BEST_CUT = "best-single-cut"
_CHUNK = 2048  # rows of the (b_0, b_1) table scored at once with a budget: bounds memory at ~4M floats


def baselines(problem: Problem) -> dict[str, Prediction]:
    """``all-<tier>`` for every tier (the input still starts on mobile) and ``best-single-cut`` when one meets
    the hard constraints (private_input, max_mobile_mb)."""
    result = {f"all-{tier}": evaluate(problem, [k] * problem.n) for k, tier in enumerate(problem.tiers)}
    cut = best_split(problem)
    if cut is not None:
        result[BEST_CUT] = evaluate(problem, split_assignment(problem.n, cut))
    return result


def split_assignment(n: int, cuts: tuple[int, ...]) -> tuple[int, ...]:
    """Tier of each layer when layers at positions >= cuts[k] lie beyond link k."""
    return tuple(sum(1 for b in cuts if q >= b) for q in range(n))


def best_split(problem: Problem) -> tuple[int, ...] | None:
    """Cut indices (one per link, non-decreasing) of the best topological split meeting the hard constraints.

    With a budget and a non-latency objective, the best split meeting the budget; if none does, the fastest.
    """
    n = problem.n
    obj = _per_cut(problem, cost_terms(problem))
    lat = _per_cut(problem, cost_terms(problem, Objective(1.0, 0.0)))
    valid0 = np.ones(n + 1, dtype=bool)
    if problem.forced_mobile:
        # Ancestors precede their consumers, so "all pinned layers before b_0" is one bound.
        valid0[: max(problem.forced_mobile) + 1] = False
    limit = problem.constraints.max_mobile_bytes
    if limit is not None:
        weights = np.concatenate([[0], np.cumsum([la.weight_bytes for la in problem.layers])])
        valid0 &= weights <= limit
    if not valid0.any():
        return None
    budget = problem.constraints.budget_ms
    if budget is not None and not problem.objective.is_latency:
        # As for the plan: the best split meeting the budget, else the fastest split.
        return _best_pair(obj, lat, valid0, budget) or _best_pair(lat, lat, valid0, None)
    return _best_pair(obj, lat, valid0, None)


def _per_cut(problem: Problem, terms: CostTerms) -> list[np.ndarray]:
    """Per link k, the cost of the terms tied to link k as a function of b_k in 0..n (the base is in [0])."""
    n = problem.n
    positions = np.arange(n + 1)
    tables = []
    for k in range(len(problem.links)):
        diff = terms.unary[:, k + 1] - terms.unary[:, k]
        table = np.concatenate([np.cumsum(diff[::-1])[::-1], [0.0]])  # sum over layers q >= b
        crossing = np.zeros(n + 2)
        for i, x in enumerate(problem.tensors):
            if x.consumers:
                start = (
                    0 if x.producer is None else x.producer + 1
                )  # producer before b, far consumer at or after
                crossing[start] += terms.crossing[i, k]
                crossing[max(x.consumers) + 1] -= terms.crossing[i, k]
        table += np.cumsum(crossing)[: n + 1]
        back = np.zeros(n + 1)
        last_output = -1
        for j, o in enumerate(problem.outputs):
            producer = problem.tensors[o].producer
            if producer is not None:
                back[producer] += terms.returning[j, k]
                last_output = max(last_output, producer)
        table += np.cumsum(back[::-1])[::-1]  # outputs produced at q >= b come back over link k
        table += terms.fixed_up[k] * (positions < n) + terms.fixed_down[k] * (positions <= last_output)
        tables.append(table)
    tables[0] = tables[0] + float(terms.unary[:, 0].sum())
    return tables


def _best_pair(
    obj: list[np.ndarray], lat: list[np.ndarray], valid0: np.ndarray, budget: float | None
) -> tuple[int, ...] | None:
    """Cut indices minimising sum_k obj[k][b_k] over b_0 <= b_1, valid0[b_0] and (if given) the budget."""
    slack = None if budget is None else budget * (1 + BUDGET_RTOL)
    first = np.where(valid0, obj[0], np.inf)
    if len(obj) == 1:
        if slack is not None:
            first = np.where(lat[0] <= slack, first, np.inf)
        return (int(np.argmin(first)),) if np.isfinite(first).any() else None
    if slack is None:
        # For each b_1 the best b_0 <= b_1 is a running minimum over b_0.
        total = np.minimum.accumulate(first) + obj[1]
        if not np.isfinite(total).any():
            return None
        b1 = int(np.argmin(total))
        return (int(np.argmin(first[: b1 + 1])), b1)
    # With a budget the two indices interact: score the (b_0, b_1) table a block of rows at a time.
    size = len(first)
    best, pair = np.inf, None
    for start in range(0, size, _CHUNK):
        b1 = np.arange(start, min(size, start + _CHUNK))
        allowed = (np.arange(size)[None, :] <= b1[:, None]) & (lat[0][None, :] + lat[1][b1, None] <= slack)
        value = np.where(allowed, first[None, :] + obj[1][b1, None], np.inf)
        flat = int(np.argmin(value))
        if value.flat[flat] < best:
            best, pair = float(value.flat[flat]), (flat % size, int(b1[flat // size]))
    return pair
