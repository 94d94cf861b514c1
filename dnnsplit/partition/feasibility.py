"""Which constraints an assignment breaks, and whether any assignment can meet the hard ones at all."""

from __future__ import annotations

from dnnsplit.errors import UsageError
from dnnsplit.partition.evaluate import Prediction
from dnnsplit.partition.objective import within_budget
from dnnsplit.partition.problem import Problem


def min_mobile_bytes(problem: Problem) -> int:
    """Fewest weight bytes any valid assignment keeps on mobile: those of the layers private_input pins there.

    Every other layer can move off mobile together with everything downstream of it, so this is exact.
    """
    return sum(problem.layers[v].weight_bytes for v in problem.forced_mobile)


def check_feasible(problem: Problem) -> None:
    """Raise UsageError when no assignment meets private_input and max_mobile_mb together."""
    limit = problem.constraints.max_mobile_bytes
    if limit is None:
        return
    needed = min_mobile_bytes(problem)
    if needed > limit:
        raise UsageError(
            f"no plan fits max_mobile_mb={problem.constraints.max_mobile_mb:g}: private_input keeps "
            f"{len(problem.forced_mobile)} layer(s) with {needed / 1e6:.6g} MB of weights on mobile",
            f"raise max_mobile_mb to at least {needed / 1e6:.6g} or drop private_input",
        )


def hard_violations(problem: Problem, prediction: Prediction) -> list[str]:
    """Broken private_input / max_mobile_mb (constraints a plan must meet; the budget is reported apart)."""
    found = []
    tiers = prediction.assignment
    off_mobile = [problem.layers[v].name for v in problem.forced_mobile if tiers[v] != 0]
    if off_mobile:
        found.append(f"private_input: '{off_mobile[0]}' reads the raw input off mobile")
    limit = problem.constraints.max_mobile_bytes
    if limit is not None and prediction.mobile_weight_bytes > limit:
        found.append(
            f"max_mobile_mb: {prediction.mobile_weight_bytes / 1e6:.6g} MB of weights on mobile "
            f"> {problem.constraints.max_mobile_mb:g} MB"
        )
    return found


def violations(problem: Problem, prediction: Prediction) -> list[str]:
    """Every constraint the prediction's assignment breaks, budget included."""
    found = hard_violations(problem, prediction)
    budget = problem.constraints.budget_ms
    if not within_budget(prediction.latency_ms, budget):
        found.append(f"budget_ms: {prediction.latency_ms:.6g} ms > {budget:g} ms")
    return found
