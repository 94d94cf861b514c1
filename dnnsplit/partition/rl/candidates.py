"""The candidate partitions a policy chooses among, and their cost in any context without a graph walk.

Why a candidate set: the action of a partitioning policy is an assignment of every layer to a tier, far too
many to enumerate, but as the context varies only a handful of assignments are ever optimal. The set is
built from the exact solver itself: the union of the min-cut optima over contexts drawn from the context
space, grown batch by batch until a whole fresh batch adds nothing (then a fresh context's optimum is
already in the set with high probability; tests and the benchmark measure how often on held-out contexts),
plus every single-tier plan (the all-local and all-edge baselines must be actions too) and Neurosurgeon's
best single cut of each sampled context. ``extra`` adds assignments a scenario needs (the best plan that
keeps the edge idle, for load-aware decisions).

Why a signature: the cost model is linear in a few totals of an assignment: compute per tier, bytes up and
down each link, and whether each link carries anything up or down (its rtt/2). With those per candidate, a
context's latency, energy and objective for every candidate are a few numpy operations (microseconds
instead of evaluating the whole graph); ``objectives`` reproduces ``evaluate(apply_context(...))`` exactly
(tests check it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dnnsplit.partition.baselines import best_split, split_assignment
from dnnsplit.partition.evaluate import evaluate
from dnnsplit.partition.network import RADIO_MODELS
from dnnsplit.partition.planner import solve
from dnnsplit.partition.problem import Problem
from dnnsplit.partition.rl.contexts import Context, ContextSpace, apply_context


@dataclass(frozen=True)
class Costs:
    """Per candidate (one row each): latency (ms), phone energy (mJ, 0 without power figures), objective."""

    latency_ms: np.ndarray
    energy_mj: np.ndarray
    objective: np.ndarray


class CandidateSet:
    """Assignments (tier index per layer) of ``base``, with the per-link totals their cost depends on."""

    def __init__(self, base: Problem, assignments: Sequence[Sequence[int]]) -> None:
        self.base = base
        self.assignments: tuple[tuple[int, ...], ...] = tuple(tuple(int(t) for t in a) for a in assignments)
        n_tiers, n_links = len(base.tiers), len(base.links)
        count = len(self.assignments)
        self.compute = np.zeros((count, n_tiers))
        self.up_bytes = np.zeros((count, n_links))
        self.down_bytes = np.zeros((count, n_links))
        self.up_used = np.zeros((count, n_links))
        self.down_used = np.zeros((count, n_links))
        for c, assignment in enumerate(self.assignments):
            pred = evaluate(base, assignment)  # also checks the assignment is valid for ``base``
            self.compute[c] = pred.compute_ms
            for k, link in enumerate(pred.links):
                self.up_bytes[c, k] = link.up_bytes
                self.down_bytes[c, k] = link.down_bytes
                self.up_used[c, k] = link.up_rtt_ms > 0 or max(assignment, default=0) > k
                self.down_used[c, k] = bool(link.down_tensors)

    def __len__(self) -> int:
        return len(self.assignments)

    def index(self, assignment: Sequence[int]) -> int | None:
        key = tuple(int(t) for t in assignment)
        return self.assignments.index(key) if key in self.assignments else None

    def single_tier(self, tier: int) -> int:
        """Index of the all-on-``tier`` candidate (always in the set)."""
        found = self.index([tier] * self.base.n)
        assert found is not None, "candidate sets always hold every single-tier plan"
        return found

    @property
    def uses_edge(self) -> np.ndarray:
        """Candidates that compute anything on the edge (they queue there in the multi-user scenario)."""
        if "edge" not in self.base.tiers:
            return np.zeros(len(self), dtype=bool)
        return self.compute[:, self.base.tiers.index("edge")] > 0

    def costs(self, ctx: Context) -> Costs:
        """Latency, energy and objective of every candidate in ``ctx``: the cost model, vectorised."""
        scales = np.asarray(ctx.scales, dtype=float)
        compute = self.compute * scales[None, :]
        latency = compute.sum(axis=1)
        up_ms = np.zeros_like(self.up_bytes)
        down_ms = np.zeros_like(self.down_bytes)
        for k, link in enumerate(ctx.links):
            up_ms[:, k] = self.up_bytes[:, k] * 8.0 / (link.up_mbps * 1000.0)
            down_ms[:, k] = self.down_bytes[:, k] * 8.0 / (link.down_mbps * 1000.0)
            half = link.rtt_ms / 2
            latency = (
                latency + up_ms[:, k] + down_ms[:, k] + half * (self.up_used[:, k] + self.down_used[:, k])
            )
        energy = np.zeros(len(self))
        power = self.base.mobile_power
        if power is not None:
            first = ctx.links[0]
            radio = None if first.radio is None else RADIO_MODELS[first.radio]
            if radio is not None:
                radio_ms = up_ms[:, 0] + down_ms[:, 0]
                radio_mj = radio.upload_power_w(first.up_mbps) * up_ms[:, 0]
                radio_mj = radio_mj + radio.download_power_w(first.down_mbps) * down_ms[:, 0]
            else:
                radio_ms = np.zeros(len(self))
                radio_mj = np.zeros(len(self))
            waiting = np.maximum(latency - compute[:, 0] - radio_ms, 0.0)
            energy = power.compute_w * compute[:, 0] + radio_mj + power.idle_w * waiting
        objective = apply_context_objective(self.base, ctx)
        value = objective[0] * latency + (objective[1] * energy if objective[1] > 0 else 0.0)
        return Costs(latency, energy, value)

    def to_dict(self) -> dict[str, Any]:
        return {"assignments": [list(a) for a in self.assignments]}


def apply_context_objective(base: Problem, ctx: Context) -> tuple[float, float]:
    """The weights ``apply_context`` ends up with (energy dropped when the phone's power is unknown)."""
    obj = ctx.objective
    if obj.energy > 0 and (base.mobile_power is None or ctx.links[0].radio is None):
        return (obj.latency or 1.0, 0.0)
    return (obj.latency, obj.energy)


def exact_assignment(base: Problem, ctx: Context) -> tuple[tuple[int, ...], float]:
    """The exact optimum (min-cut) of the context's problem and its objective: the reference."""
    plan = solve(apply_context(base, ctx), with_baselines=False)
    return plan.prediction.assignment, plan.prediction.objective


def idle_edge_assignment(base: Problem, ctx: Context) -> tuple[int, ...] | None:
    """The exact optimum among plans that compute nothing on the edge (None without an edge tier).

    With three tiers the edge can still relay to the cloud. A prohibitive edge scale makes the min-cut avoid
    it whenever a plan without edge compute exists, which is always (all-mobile).
    """
    if "edge" not in base.tiers:
        return None
    k = base.tiers.index("edge")
    scales = tuple(1e9 if i == k else s for i, s in enumerate(ctx.scales))
    assignment, _ = exact_assignment(base, Context(ctx.links, scales, ctx.objective))
    return assignment


@dataclass(frozen=True)
class BuildReport:
    contexts: int  # contexts solved exactly while building
    batches: int
    converged: bool  # the last ``patience`` batches found no new optimum


def build_candidates(
    base: Problem,
    space: ContextSpace,
    seed: int,
    *,
    batch: int = 250,
    min_contexts: int = 1000,
    max_contexts: int = 5000,
    patience: int = 2,
    sample: Any = None,
    extra: Any = None,
    progress: Any = None,
) -> tuple[CandidateSet, BuildReport]:
    """Grow the union of exact optima over sampled contexts until ``patience`` whole batches in a row add
    nothing (and at least ``min_contexts`` were solved): rare optima need more than one quiet batch to show.

    ``sample(rng) -> Context`` overrides ``space.sample`` (the multi-user scenario draws user contexts);
    ``extra(ctx) -> assignment | None`` adds a scenario's own assignment per context.
    """
    rng = np.random.default_rng(seed)
    draw = sample or space.sample
    found: list[tuple[int, ...]] = [tuple([k] * base.n) for k in range(len(base.tiers))]
    seen = set(found)
    solved = batches = quiet = 0
    converged = False
    while solved < max_contexts:
        added = 0
        for _ in range(batch):
            ctx = draw(rng)
            problem = apply_context(base, ctx)
            options: list[tuple[int, ...]] = [exact_assignment(base, ctx)[0]]
            cut = best_split(problem)
            if cut is not None:
                options.append(split_assignment(problem.n, cut))
            if extra is not None and (more := extra(ctx)) is not None:
                options.append(tuple(more))
            for assignment in options:
                if assignment not in seen:
                    seen.add(assignment)
                    found.append(assignment)
                    added += 1
            solved += 1
            if progress is not None:
                progress("finding candidate partitions", solved, max_contexts)
        batches += 1
        quiet = quiet + 1 if added == 0 else 0
        if quiet >= patience and solved >= min_contexts:
            converged = True
            break
    return CandidateSet(base, found), BuildReport(solved, batches, converged)


def coverage(candidates: CandidateSet, contexts: Iterable[Context]) -> float:
    """Share of contexts whose exact optimum value the best candidate reaches (relative tolerance 1e-9)."""
    hits = total = 0
    for ctx in contexts:
        _, exact = exact_assignment(candidates.base, ctx)
        best = float(candidates.costs(ctx).objective.min())
        hits += best <= exact * (1 + 1e-9) + 1e-12
        total += 1
    return hits / total if total else 1.0
