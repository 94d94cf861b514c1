"""``solve``: the optimal plan for a problem, with baselines; ``Plan`` is what plan.yaml is written from.

Order of work: the min-cut gives the exact optimum under private_input. If it also meets max_mobile_mb (and,
for a non-latency objective, the latency budget), it is the answer; otherwise the exact MILP takes over.
With a pure latency objective the budget cannot change the answer (the optimum is the fastest plan), so a
missed budget is only flagged; with another objective a budget nothing can meet also yields the fastest
plan, flagged. Hard constraints nothing can meet raise UsageError (exit 2 in the CLI).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dnnsplit.partition.baselines import baselines as compute_baselines
from dnnsplit.partition.evaluate import Prediction, evaluate
from dnnsplit.partition.feasibility import check_feasible, hard_violations, violations
from dnnsplit.partition.milp import solve_milp
from dnnsplit.partition.mincut import solve_mincut
from dnnsplit.partition.objective import Objective, within_budget
from dnnsplit.partition.problem import Problem
from dnnsplit.partition.terms import cost_terms


@dataclass(frozen=True)
class Plan:
    problem: Problem
    assignment: dict[str, str]  # layer name -> tier name
    prediction: Prediction
    baselines: dict[str, Prediction]
    solver: str  # "min-cut", "milp", or "given" for an assignment evaluated as is
    proven_optimal: bool
    feasible: bool  # meets private_input and max_mobile_mb
    meets_budget: bool  # True when there is no budget
    notes: tuple[str, ...] = ()

    @property
    def over_budget_ms(self) -> float:
        budget = self.problem.constraints.budget_ms
        return 0.0 if budget is None or self.meets_budget else self.prediction.latency_ms - budget

    def where_time_goes(self) -> str:
        """The latency split into compute per tier, uploads and returns per link, largest first."""
        pred = self.prediction
        parts = [(f"compute on {tier}", ms) for tier, ms in zip(pred.tiers, pred.compute_ms, strict=True)]
        for link in pred.links:
            parts.append((f"upload over {link.name}", link.transfer_ms))
            parts.append((f"return over {link.name}", link.return_ms))
        share = f"the phone's download (1/{pred.session_requests} per request)"
        parts.append((share, pred.download_share_ms))
        shown = sorted((part for part in parts if part[1] > 0), key=lambda part: -part[1])
        return ", ".join(f"{what} {ms:.3g} ms" for what, ms in shown)

    def to_dict(self) -> dict[str, Any]:
        p = self.problem
        c = p.constraints
        return {
            "tiers": list(p.tiers),
            "objective": p.objective.describe(),
            "constraints": {
                "budget_ms": c.budget_ms,
                "private_input": c.private_input,
                "max_mobile_mb": c.max_mobile_mb,
            },
            "links": {name: link.to_dict() for name, link in zip(p.link_names, p.links, strict=True)},
            "solver": self.solver,
            "proven_optimal": self.proven_optimal,
            "feasible": self.feasible,
            "meets_budget": self.meets_budget,
            "over_budget_ms": self.over_budget_ms,
            "violations": violations(p, self.prediction),
            "prediction": self.prediction.to_dict(),
            "baselines": {
                name: {**pred.to_dict(), "violations": violations(p, pred)}
                for name, pred in self.baselines.items()
            },
            "assignment": dict(self.assignment),
            "notes": list(self.notes),
        }


def solve(problem: Problem, *, with_baselines: bool = True) -> Plan:
    """The exact optimal plan of ``problem`` (see the module doc for how constraints are handled)."""
    check_feasible(problem)
    tiers, solver, optimal, reference = _minimise(problem, problem.objective)
    notes: list[str] = []
    if not problem.objective.is_latency and not _fast_enough(problem, tiers):
        # A hard budget: the optimum under it, unless even the fastest plan misses it.
        fastest, f_solver, f_optimal, _ = _minimise(problem, Objective(1.0, 0.0))
        if _fast_enough(problem, fastest):
            # None only when solver tolerances reject a plan sitting on the budget: keep the fastest then.
            tiers, solver, optimal = _with_budget(problem, reference) or (fastest, f_solver, False)
        else:
            tiers, solver, optimal = fastest, f_solver, f_optimal
            notes.append("no plan meets the latency budget; this is the fastest plan")
    return plan_for(
        problem, tiers, solver=solver, proven_optimal=optimal, notes=notes, with_baselines=with_baselines
    )


def _fast_enough(problem: Problem, tiers: tuple[int, ...]) -> bool:
    return within_budget(evaluate(problem, tiers).latency_ms, problem.constraints.budget_ms)


def plan_for(
    problem: Problem,
    assignment: Mapping[str, str] | Sequence[int],
    *,
    solver: str = "given",
    proven_optimal: bool = False,
    notes: Sequence[str] = (),
    with_baselines: bool = True,
) -> Plan:
    """A Plan for a given assignment (e.g. one read back from plan.yaml), with its flags and baselines."""
    prediction = evaluate(problem, assignment)
    return Plan(
        problem=problem,
        assignment={
            la.name: problem.tiers[t] for la, t in zip(problem.layers, prediction.assignment, strict=True)
        },
        prediction=prediction,
        baselines=compute_baselines(problem) if with_baselines else {},
        solver=solver,
        proven_optimal=proven_optimal,
        feasible=not hard_violations(problem, prediction),
        meets_budget=within_budget(prediction.latency_ms, problem.constraints.budget_ms),
        notes=tuple(notes),
    )


def _minimise(problem: Problem, objective: Objective) -> tuple[tuple[int, ...], str, bool, float]:
    """Best assignment for ``objective`` under the hard constraints; also the cut optimum (a lower bound)."""
    terms = cost_terms(problem, objective)
    tiers, value = solve_mincut(problem, terms)
    limit = problem.constraints.max_mobile_bytes
    if limit is None or evaluate(problem, tiers).mobile_weight_bytes <= limit:
        return tiers, "min-cut", True, value
    result = solve_milp(problem, terms, max_mobile_bytes=limit, reference=value)
    if result is None:  # check_feasible said a plan exists, so this is a solver failure, not the user's
        raise RuntimeError("the MILP found no plan although one meets the constraints")
    return result.tiers, "milp", result.proven_optimal, value


def _with_budget(problem: Problem, reference: float) -> tuple[tuple[int, ...], str, bool] | None:
    result = solve_milp(
        problem,
        cost_terms(problem),
        latency_terms=cost_terms(problem, Objective(1.0, 0.0)),
        budget_ms=problem.constraints.budget_ms,
        max_mobile_bytes=problem.constraints.max_mobile_bytes,
        reference=reference,
    )
    return None if result is None else (result.tiers, "milp", result.proven_optimal)
