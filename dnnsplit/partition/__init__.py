"""Split a DNN across mobile, edge and cloud: the cost model, exact solvers and baselines.

Typical use::

    problem = problem_from_profile(profile, tiers=("mobile", "edge"), links={"mobile-edge": "4g"})
    plan = solve(problem)
    plan.prediction.latency_ms, plan.assignment, plan.baselines["all-mobile"]

docs/cost-model.md documents every formula, default and source.
"""

from dnnsplit.partition.baselines import BEST_CUT, baselines, best_split, split_assignment
from dnnsplit.partition.evaluate import CutTensor, EnergyParts, LinkTraffic, Prediction, evaluate
from dnnsplit.partition.feasibility import check_feasible, hard_violations, min_mobile_bytes, violations
from dnnsplit.partition.from_profile import DEFAULT_DEVICES, default_links, problem_from_profile
from dnnsplit.partition.network import (
    BACKHAUL,
    DEFAULT_NETWORK,
    NETWORK_PRESETS,
    RADIO_MODELS,
    LinkSpec,
    RadioModel,
    parse_link,
)
from dnnsplit.partition.objective import Constraints, Objective, parse_objective, within_budget
from dnnsplit.partition.planner import Plan, plan_for, solve
from dnnsplit.partition.problem import (
    DEFAULT_TIERS,
    SUPPORTED_TIERS,
    TIER_ORDER,
    LayerCost,
    MobilePower,
    Problem,
    Tensor,
    link_names,
    parse_tiers,
)

__all__ = [
    "BACKHAUL",
    "BEST_CUT",
    "DEFAULT_DEVICES",
    "DEFAULT_NETWORK",
    "DEFAULT_TIERS",
    "NETWORK_PRESETS",
    "RADIO_MODELS",
    "SUPPORTED_TIERS",
    "TIER_ORDER",
    "Constraints",
    "CutTensor",
    "EnergyParts",
    "LayerCost",
    "LinkSpec",
    "LinkTraffic",
    "MobilePower",
    "Objective",
    "Plan",
    "Prediction",
    "Problem",
    "RadioModel",
    "Tensor",
    "baselines",
    "best_split",
    "check_feasible",
    "default_links",
    "evaluate",
    "hard_violations",
    "link_names",
    "min_mobile_bytes",
    "parse_link",
    "parse_objective",
    "parse_tiers",
    "plan_for",
    "problem_from_profile",
    "solve",
    "split_assignment",
    "violations",
    "within_budget",
]
