"""``plan_with_policy``: a plan made by a trained context policy for one concrete problem, with its gap.

The problem (from `plan`'s options) must be the policy's own model over the same tiers with the same tensor
sizes (same --input-bytes and --compress): the policy's actions are partitions of that graph. Its links,
device speeds and objective become the context the policy sees (``context_of``).
"""

from __future__ import annotations

from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.partition.planner import Plan, plan_for, solve
from dnnsplit.partition.problem import Problem
from dnnsplit.partition.rl.contexts import context_of
from dnnsplit.partition.rl.policy_file import PolicyFile


def check_policy_fits(policy: PolicyFile, problem: Problem) -> None:
    where = policy.path or "the policy"
    base = policy.base
    if policy.scenario != "context":
        raise UsageError(
            f"{where} was trained for the {policy.scenario} scenario; "
            "plan --solver rl needs a context policy",
            "train one with `dnnsplit rl train ... --scenario context`",
        )
    if problem.tiers != base.tiers:
        raise UsageError(
            f"{where} was trained for tiers {','.join(base.tiers)}, not {','.join(problem.tiers)}",
            f"pass --tiers {','.join(base.tiers)} or train a policy for these tiers",
        )
    if [la.name for la in problem.layers] != [la.name for la in base.layers]:
        raise UsageError(
            f"{where} was trained for another model or profile ({policy.model_name}, {base.n} layers; "
            f"this one has {problem.n})",
            "train a policy on this profile with `dnnsplit rl train`",
        )
    if [(x.name, x.bytes) for x in problem.tensors] != [(x.name, x.bytes) for x in base.tensors]:
        raise UsageError(
            f"{where} was trained with other tensor sizes (--input-bytes or --compress differ)",
            "use the same --input-bytes and --compress as `rl train`",
        )


def plan_with_policy(policy: PolicyFile, problem: Problem) -> tuple[Plan, dict[str, Any]]:
    """The policy's plan for ``problem`` and how far it is from the exact optimum (``gap``, relative)."""
    check_policy_fits(policy, problem)
    ctx = context_of(policy.base, problem)
    action = policy.act(policy.space.features(ctx))
    plan = plan_for(problem, policy.candidates.assignments[action], solver="rl")
    exact = solve(problem, with_baselines=False).prediction.objective
    value = plan.prediction.objective
    info = {
        "policy": policy.path,
        "scenario": policy.scenario,
        "candidate": action,
        "exact_objective": exact,
        "gap": value / exact - 1.0 if exact > 0 else 0.0,
    }
    return plan, info
