"""Exact solver for the constraints a cut cannot express: max_mobile_mb and a hard latency budget.

The same level encoding as the min-cut (binary y_l(v) = [tier(v) >= l]) becomes a mixed-integer linear
program solved to optimality by HiGHS (scipy.optimize.milp). Crossing and OR terms use continuous helper
variables h >= y(consumer); since every price is >= 0 the optimum pushes h down to max(consumers), so the
program's value equals the cost model's. Without the two side constraints the LP relaxation is integral
(it is a cut problem); with them HiGHS's branch and bound closes the gap, proven to a 1e-9 relative gap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.optimize import Bounds, LinearConstraint, milp

from dnnsplit.partition.objective import BUDGET_RTOL
from dnnsplit.partition.problem import Problem
from dnnsplit.partition.terms import CostTerms, terms_value

_TIME_LIMIT_S = 300.0


@dataclass(frozen=True)
class MilpResult:
    tiers: tuple[int, ...]
    proven_optimal: bool  # False when HiGHS stopped at its time limit with a feasible, unproven plan


class _Layout:
    """Column indices: y per level and layer, then helpers (hubs of multi-consumer tensors, ORs)."""

    def __init__(self, problem: Problem) -> None:
        self.n, self.levels = problem.n, len(problem.tiers) - 1
        self.size = self.levels * self.n
        # Order constraints x[small] - x[big] <= 0, one row each.
        self.small: list[int] = []
        self.big: list[int] = []
        # Tensors read by several layers get a helper per level: h >= y(consumer) for every consumer.
        self.hub: dict[tuple[int, int], int] = {}
        for level in range(1, self.levels + 1):
            for i, x in enumerate(problem.tensors):
                if len(x.consumers) > 1:
                    self.hub[(level, i)] = self._new()
                    for c in x.consumers:
                        self.le(self.y(level, c), self.hub[(level, i)])
        self.any_up = {level: self._any(level, problem.sinks) for level in range(1, self.levels + 1)}
        self.any_down = {
            level: self._any(level, problem.output_producers) for level in range(1, self.levels + 1)
        }
        for level in range(1, self.levels + 1):
            for v in range(self.n):
                if level < self.levels:
                    self.le(self.y(level + 1, v), self.y(level, v))
            for p, c in problem.edges:
                self.le(self.y(level, p), self.y(level, c))

    def y(self, level: int, v: int) -> int:
        return (level - 1) * self.n + v

    def _new(self) -> int:
        self.size += 1
        return self.size - 1

    def _any(self, level: int, targets: tuple[int, ...]) -> int | None:
        if not targets:
            return None
        if len(targets) == 1:
            return self.y(level, targets[0])
        column = self._new()
        for t in targets:
            self.le(self.y(level, t), column)
        return column

    def le(self, small: int, big: int) -> None:
        """Record the constraint x[small] - x[big] <= 0."""
        self.small.append(small)
        self.big.append(big)

    def order_matrix(self) -> sp.csr_matrix:
        m = len(self.small)
        data = np.concatenate([np.ones(m), -np.ones(m)])
        rows = np.concatenate([np.arange(m), np.arange(m)])
        cols = np.concatenate([self.small, self.big])
        return sp.csr_matrix((data, (rows, cols)), shape=(m, self.size))


def _linear(problem: Problem, layout: _Layout, terms: CostTerms) -> tuple[np.ndarray, float]:
    """Coefficients and constant of ``terms`` as a linear function of the layout's columns."""
    c = np.zeros(layout.size)
    constant = float(terms.unary[:, 0].sum())
    for level in range(1, layout.levels + 1):
        k = level - 1
        for v in range(layout.n):
            c[layout.y(level, v)] += terms.unary[v, level] - terms.unary[v, level - 1]
        for i, x in enumerate(problem.tensors):
            price = float(terms.crossing[i, k])
            if not x.consumers or price == 0:
                continue
            # Crossing = max(consumers) - y(producer), which is 0 or 1 because data flows forward.
            far = layout.hub[(level, i)] if len(x.consumers) > 1 else layout.y(level, x.consumers[0])
            c[far] += price
            if x.producer is not None:
                c[layout.y(level, x.producer)] -= price
        for j, o in enumerate(problem.outputs):
            producer = problem.tensors[o].producer
            if producer is not None:
                c[layout.y(level, producer)] += terms.returning[j, k]
        if layout.any_up[level] is not None:
            c[layout.any_up[level]] += terms.fixed_up[k]
        if layout.any_down[level] is not None:
            c[layout.any_down[level]] += terms.fixed_down[k]
    return c, constant


def solve_milp(
    problem: Problem,
    terms: CostTerms,
    latency_terms: CostTerms | None = None,
    budget_ms: float | None = None,
    max_mobile_bytes: int | None = None,
    reference: float = 1.0,
) -> MilpResult | None:
    """Minimise ``terms`` under private_input, ``max_mobile_bytes`` and latency <= ``budget_ms``.

    ``reference`` is a typical objective magnitude (the unconstrained optimum): the objective is scaled by
    it so HiGHS's absolute gap tolerance (1e-6) is negligible. Returns None when nothing is feasible.
    """
    layout = _Layout(problem)
    objective, _ = _linear(problem, layout, terms)
    # Floor the reference so a zero optimum does not blow the coefficients up.
    objective *= 1e3 / max(abs(reference), 1e-6 * float(np.abs(objective).max(initial=0.0)), 1e-12)
    integrality = np.zeros(layout.size)
    integrality[: layout.levels * layout.n] = 1
    upper = np.ones(layout.size)
    for v in problem.forced_mobile:
        upper[layout.y(1, v)] = 0
    order = layout.order_matrix()
    weights = np.array([la.weight_bytes for la in problem.layers], dtype=float)
    unit = max(float(weights.max(initial=0.0)), 1.0)  # memory row in units of the largest weight
    if budget_ms is not None:
        assert latency_terms is not None
        latency, latency_constant = _linear(problem, layout, latency_terms)
    margin_mem, margin_lat = 0.0, 0.0
    for _attempt in range(4):
        rows, lo, hi = [order], [np.full(order.shape[0], -np.inf)], [np.zeros(order.shape[0])]
        if max_mobile_bytes is not None:
            # Weights on mobile = total - sum_v w_v y_1(v) <= limit.
            row = np.zeros(layout.size)
            row[: layout.n] = -weights / unit
            rows.append(sp.csr_matrix(row))
            lo.append(np.array([-np.inf]))
            hi.append(np.array([(max_mobile_bytes - weights.sum() - margin_mem) / unit]))
        if budget_ms is not None:
            # Latency / budget <= 1, so HiGHS's absolute feasibility tolerance acts as a relative one.
            rows.append(sp.csr_matrix(latency / budget_ms))
            lo.append(np.array([-np.inf]))
            hi.append(np.array([(budget_ms - latency_constant) / budget_ms - margin_lat]))
        result = milp(
            objective,
            integrality=integrality,
            bounds=Bounds(np.zeros(layout.size), upper),
            constraints=LinearConstraint(sp.vstack(rows).tocsr(), np.concatenate(lo), np.concatenate(hi)),
            options={"mip_rel_gap": 1e-9, "time_limit": _TIME_LIMIT_S},
        )
        if result.status == 2:
            return None
        if result.x is None:
            raise RuntimeError(f"the MILP solver stopped without a plan: {result.message}")
        y = np.round(result.x[: layout.levels * layout.n]).reshape(layout.levels, layout.n)
        tiers = tuple(int(t) for t in y.sum(axis=0))
        # HiGHS meets constraints to ~1e-7; re-check exactly and tighten on the rare miss.
        mem_excess, lat_excess = _excess(problem, tiers, latency_terms, budget_ms, max_mobile_bytes)
        if mem_excess <= 0 and lat_excess <= 0:
            return MilpResult(tiers, proven_optimal=result.status == 0)
        margin_mem += max(mem_excess, 0) + 1
        margin_lat += max(lat_excess, 0) + 1e-9
    return None


def _excess(
    problem: Problem,
    tiers: tuple[int, ...],
    latency_terms: CostTerms | None,
    budget_ms: float | None,
    max_mobile_bytes: int | None,
) -> tuple[float, float]:
    mem = 0.0
    if max_mobile_bytes is not None:
        mem = (
            sum(la.weight_bytes for la, t in zip(problem.layers, tiers, strict=True) if t == 0)
            - max_mobile_bytes
        )
    lat = 0.0
    if budget_ms is not None and latency_terms is not None:
        lat = terms_value(problem, latency_terms, tiers) / budget_ms - (1 + BUDGET_RTOL)
    return float(mem), float(lat)
