"""Bandwidth sweep: the optimal plan and the baselines as the phone's uplink varies (Neurosurgeon's figure).

Only the uplink of the phone's own link (``mobile-edge``, or ``mobile-cloud``) changes; its downlink, RTT
and every other setting stay. Each point is solved exactly, so where the cut moves is where it really moves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from dnnsplit.errors import UsageError
from dnnsplit.partition.planner import Plan, solve
from dnnsplit.partition.problem import Problem

_SWEEP_SYNTAX = "write LOW:HIGH:COUNT in Mbit/s, e.g. 0.1:100:40 (log-spaced, LOW > 0, COUNT >= 2)"


def parse_sweep(text: str) -> tuple[float, ...]:
    """``LOW:HIGH:COUNT`` -> COUNT log-spaced bandwidths from LOW to HIGH Mbit/s, both included."""
    parts = text.split(":")
    if len(parts) != 3:
        raise UsageError(f"malformed bandwidth sweep '{text}'", _SWEEP_SYNTAX)
    try:
        low, high, count = float(parts[0]), float(parts[1]), int(parts[2])
    except ValueError:
        raise UsageError(f"malformed bandwidth sweep '{text}'", _SWEEP_SYNTAX) from None
    if not (0 < low < high and math.isfinite(high)) or not 2 <= count <= 10_000:
        raise UsageError(f"bad bandwidth sweep '{text}'", _SWEEP_SYNTAX)
    return tuple(float(x) for x in np.geomspace(low, high, count))


@dataclass(frozen=True)
class SweepPoint:
    up_mbps: float
    plan: Plan

    @property
    def cut(self) -> tuple[tuple[str, ...], ...]:
        """Per link, the tensors sent up it: what identifies where the cut falls."""
        return tuple(tuple(t.name for t in link.up_tensors) for link in self.plan.prediction.links)

    def to_dict(self) -> dict[str, Any]:
        """The point as `plan --sweep-bandwidth --format json` prints it."""
        pred = self.plan.prediction
        return {
            "up_mbps": self.up_mbps,
            "latency_ms": pred.latency_ms,
            "energy_mj": pred.energy_mj,
            "layers": pred.layers_per_tier,
            "cut": describe_cut(self.plan),
            "cut_tensors": [list(names) for names in self.cut],
            "baselines": {name: b.latency_ms for name, b in self.plan.baselines.items()},
        }


def with_uplink(problem: Problem, up_mbps: float) -> Problem:
    """The same problem with the phone's link uplink set to ``up_mbps``."""
    first = replace(problem.links[0], up_mbps=float(up_mbps))
    return replace(problem, links=(first, *problem.links[1:]))


def sweep_bandwidth(problem: Problem, bandwidths: Sequence[float]) -> list[SweepPoint]:
    """The optimal plan (with baselines) at each uplink bandwidth, in the order given."""
    return [SweepPoint(float(b), solve(with_uplink(problem, b))) for b in bandwidths]


def cut_changes(points: Sequence[SweepPoint]) -> list[int]:
    """Indices of the points whose assignment differs from the previous point's (the cut moved)."""
    return [
        i
        for i in range(1, len(points))
        if points[i].plan.prediction.assignment != points[i - 1].plan.prediction.assignment
    ]


def describe_cut(plan: Plan) -> str:
    """Where the cut falls, short: ``all on mobile``, ``raw input``, or the last layer before each link."""
    p, pred = plan.problem, plan.prediction
    if all(t == 0 for t in pred.assignment):
        return f"all on {p.tiers[0]}"
    producer_of = {x.name: x.producer for x in p.tensors}
    parts = []
    for link, traffic in zip(p.link_names, pred.links, strict=True):
        if not traffic.up_tensors:
            continue
        producers = [producer_of[t.name] for t in traffic.up_tensors]
        first = "raw input" if producers[0] is None else f"after {p.layers[producers[0]].name}"
        more = f" +{len(producers) - 1} more" if len(producers) > 1 else ""
        parts.append(f"{link}: {first}{more}")
    return "; ".join(parts)
