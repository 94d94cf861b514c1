"""Measuring a trained policy against the exact solver and the baselines, on contexts and seeds it never saw.

Context scenario: per held-out context, the policy's partition and every baseline's are costed with the cost
model (``evaluate`` on the context's problem) and compared with the exact optimum (the min-cut ``solve``).
``gap`` is the mean over contexts of objective / exact objective - 1; ``optimal`` the share of contexts where
the policy's objective equals the optimum (relative 1e-9). Baselines: the exact plan of the nominal context
applied everywhere (a plan made once, offline), all-local, all-edge (all-cloud) and a uniformly random
candidate.

Multi-user scenario: every rule runs the same simulated traces (same seeds) at each offered load; figures
are per request (mean and p95 latency, mean energy) after the system drains. ``gap`` there is the policy's
mean latency relative to load-aware exact, averaged over the loads (negative: the policy is faster).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from dnnsplit.partition.evaluate import evaluate
from dnnsplit.partition.rl import rules
from dnnsplit.partition.rl.candidates import exact_assignment
from dnnsplit.partition.rl.contexts import apply_context, sample_contexts
from dnnsplit.partition.rl.multiuser import SimState, Simulator
from dnnsplit.partition.rl.multiuser_env import observe
from dnnsplit.partition.rl.policy_file import PolicyFile
from dnnsplit.progress import ProgressFn

EVAL_SEED = 10_007  # held out: training draws from seeds < 2**31 via the policy's own seed


def evaluate_context(
    policy: PolicyFile, contexts: int = 1000, seed: int = EVAL_SEED, progress: ProgressFn | None = None
) -> dict[str, Any]:
    base, cands, space = policy.base, policy.candidates, policy.space
    held_out = sample_contexts(space, contexts, seed)
    nominal_plan, _ = exact_assignment(base, space.nominal())
    rng = np.random.default_rng(seed + 1)
    names = ["rl", "nominal-exact"] + [f"all-{t}" for t in base.tiers] + ["random"]
    gaps: dict[str, list[float]] = {n: [] for n in names}
    objectives: dict[str, list[float]] = {n: [] for n in names + ["exact"]}
    decision_us: list[float] = []
    actor = policy.actor
    actor.act(space.features(held_out[0]))  # first call allocates
    for i, ctx in enumerate(held_out):
        if progress is not None:
            progress("evaluating contexts", i, len(held_out))
        start = time.perf_counter()
        action = actor.act(space.features(ctx))
        decision_us.append((time.perf_counter() - start) * 1e6)
        problem = apply_context(base, ctx)
        _, exact = exact_assignment(base, ctx)
        chosen = {
            "rl": cands.assignments[action],
            "nominal-exact": nominal_plan,
            **{f"all-{t}": (k,) * base.n for k, t in enumerate(base.tiers)},
            "random": cands.assignments[int(rng.integers(len(cands)))],
        }
        objectives["exact"].append(exact)
        for name, assignment in chosen.items():
            value = evaluate(problem, assignment).objective
            objectives[name].append(value)
            gaps[name].append(value / exact - 1.0 if exact > 0 else 0.0)
    exact_mean = float(np.mean(objectives["exact"]))
    rows = {
        name: {
            "gap": float(np.mean(gaps[name])),
            "gap_p99": float(np.quantile(gaps[name], 0.99)),
            "optimal": float(np.mean(np.asarray(gaps[name]) <= 1e-9)),
            "mean_objective_ratio": float(np.mean(objectives[name]) / exact_mean),
        }
        for name in names
    }
    return {
        "scenario": "context",
        "contexts": contexts,
        "seed": seed,
        "candidates": len(cands),
        "gap": rows["rl"]["gap"],
        "optimal": rows["rl"]["optimal"],
        "mean_objective_ratio": rows["rl"]["mean_objective_ratio"],
        "decision_us": {
            "median": float(np.median(decision_us)),
            "p99": float(np.quantile(decision_us, 0.99)),
        },
        "exact_mean_objective": exact_mean,
        "policies": rows,
    }


Rule = Callable[[SimState], int]


def multiuser_rules(policy: PolicyFile) -> dict[str, Rule]:
    cands, config = policy.candidates, policy.config
    edge = policy.base.tiers.index("edge")
    edge_ms = float(cands.compute[cands.single_tier(edge), edge])
    actor = policy.actor
    return {
        "rl": lambda s: actor.act(observe(s, config, edge_ms, cands)),
        "myopic-exact": lambda s: rules.exact(cands, s.context),
        "load-aware-exact": lambda s: rules.load_aware(cands, s.context, s.edge_wait_ms),
        "all-local": lambda s: cands.single_tier(0),
        "all-edge": lambda s: cands.single_tier(edge),
    }


def run_rule(policy: PolicyFile, rule: Rule, load: float, seed: int, requests: int) -> dict[str, Any]:
    """One simulated episode of ``requests`` arrivals under ``rule``, drained; per-request figures."""
    sim = Simulator(policy.candidates, policy.config, load, seed)
    decision_us = []
    for _ in range(requests):
        request, state = sim.next_request()
        start = time.perf_counter()
        action = rule(state)
        decision_us.append((time.perf_counter() - start) * 1e6)
        sim.dispatch(request, state, action)
    sim.drain()
    done = sim.requests[:requests]
    latency = np.array([r.latency for r in done])
    edge = policy.base.tiers.index("edge")
    uses_edge = policy.candidates.uses_edge
    return {
        "latency": latency,
        "energy": np.array([r.energy_mj for r in done]),
        "edge_share": float(np.mean([uses_edge[r.action] for r in done])),
        "edge_wait": float(
            np.mean([r.edge_wait for r in done if policy.candidates.compute[r.action, edge] > 0] or [0])
        ),
        "decision_us": float(np.median(decision_us)),
    }


def evaluate_multiuser(
    policy: PolicyFile,
    loads: Sequence[float] = (0.3, 1.5),
    seeds: int = 3,
    requests: int = 3000,
    seed: int = EVAL_SEED,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    rule_set = multiuser_rules(policy)
    results: list[dict[str, Any]] = []
    total, done = len(loads) * len(rule_set) * seeds, 0
    for load in loads:
        row: dict[str, Any] = {"load": load, "policies": {}}
        for name, rule in rule_set.items():
            runs = []
            for s in range(seeds):
                if progress is not None:
                    progress(f"simulating load {load:g}", done, total)
                runs.append(run_rule(policy, rule, load, seed + s, requests))
                done += 1
            latency = np.concatenate([r["latency"] for r in runs])
            row["policies"][name] = {
                "mean_latency_ms": float(latency.mean()),
                "p95_latency_ms": float(np.quantile(latency, 0.95)),
                "mean_energy_mj": float(np.mean(np.concatenate([r["energy"] for r in runs]))),
                "edge_share": float(np.mean([r["edge_share"] for r in runs])),
                "mean_edge_wait_ms": float(np.mean([r["edge_wait"] for r in runs])),
                "decision_us": float(np.median([r["decision_us"] for r in runs])),
            }
        p = row["policies"]
        row["rl_vs_myopic"] = p["rl"]["mean_latency_ms"] / p["myopic-exact"]["mean_latency_ms"] - 1.0
        row["rl_vs_load_aware"] = p["rl"]["mean_latency_ms"] / p["load-aware-exact"]["mean_latency_ms"] - 1.0
        results.append(row)
    return {
        "scenario": "multiuser",
        "users": policy.config.users,
        "seeds": seeds,
        "requests": requests,
        "seed": seed,
        "candidates": len(policy.candidates),
        "gap": float(np.mean([r["rl_vs_load_aware"] for r in results])),
        "loads": results,
    }
