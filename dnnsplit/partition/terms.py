"""The objective as a sum of terms the exact solvers can optimise: unary, per-link crossing, fixed per link.

Latency, energy and their weighted sum are all linear in the same elementary times (each layer's compute,
each tensor's transfer on each link, each output's return on each link, each link's rtt/2 up and down);
only the price of a millisecond differs: 1 for latency, and for energy the phone's power during that time
(compute power while it computes, radio power while its own link moves data, idle power otherwise).
So one structure serves every objective, and every price is >= 0, which keeps the min-cut exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dnnsplit.partition.objective import Objective
from dnnsplit.partition.problem import Problem


@dataclass(frozen=True)
class CostTerms:
    """value(a) = sum_v unary[v, a_v] + sum_x sum_{k: x crosses k} crossing[x, k]
    + sum_o sum_{k < tier(o)} returning[o, k]
    + sum_k (fixed_up[k] [some layer beyond k] + fixed_down[k] [some output beyond k]).

    Rows of ``crossing`` follow ``problem.tensors``; rows of ``returning`` follow ``problem.outputs``.
    """

    unary: np.ndarray  # (layers, tiers)
    crossing: np.ndarray  # (tensors, links)
    returning: np.ndarray  # (outputs, links)
    fixed_up: np.ndarray  # (links,)
    fixed_down: np.ndarray  # (links,)


def cost_terms(problem: Problem, objective: Objective | None = None) -> CostTerms:
    """Prices every elementary time of ``problem`` under ``objective`` (default: the problem's own)."""
    obj = objective or problem.objective
    power = problem.mobile_power
    n_links = len(problem.links)
    first = problem.links[0]
    radio = first.radio_model
    if obj.energy > 0:
        assert power is not None and radio is not None  # Problem's own checks guarantee both
        p_compute, p_idle = power.compute_w, power.idle_w
        p_up, p_down = radio.upload_power_w(first.up_mbps), radio.download_power_w(first.down_mbps)
    else:
        p_compute = p_idle = p_up = p_down = 0.0
    # Price per ms on each link: the phone's radio works only on its own (first) link.
    up_price = np.full(n_links, obj.latency + obj.energy * p_idle)
    down_price = up_price.copy()
    up_price[0] = obj.latency + obj.energy * p_up
    down_price[0] = obj.latency + obj.energy * p_down
    idle_price = obj.latency + obj.energy * p_idle

    compute = np.array([la.compute_ms for la in problem.layers], dtype=float).reshape(
        problem.n, len(problem.tiers)
    )
    unary = compute * idle_price
    unary[:, 0] = compute[:, 0] * (obj.latency + obj.energy * p_compute)
    if problem.session_requests is not None:  # the phone's share of downloading its layers' weights
        weights = np.array([la.weight_bytes for la in problem.layers], dtype=float)
        per_request = 8.0 / (first.down_mbps * 1000.0) / problem.session_requests
        unary[:, 0] += weights * per_request * down_price[0]

    up_ms_per_byte = np.array([8.0 / (link.up_mbps * 1000.0) for link in problem.links])
    down_ms_per_byte = np.array([8.0 / (link.down_mbps * 1000.0) for link in problem.links])
    sizes = np.array([x.bytes for x in problem.tensors], dtype=float)
    crossing = sizes[:, None] * (up_ms_per_byte * up_price)[None, :]
    codec = np.array([[x.codec_ms_on(k) for k in range(n_links)] for x in problem.tensors], dtype=float)
    crossing = crossing + codec.reshape(len(problem.tensors), n_links) * idle_price
    out_sizes = np.array([problem.tensors[o].returned_bytes for o in problem.outputs], dtype=float)
    returning = out_sizes[:, None] * (down_ms_per_byte * down_price)[None, :]
    half_rtt = np.array([link.rtt_ms / 2 for link in problem.links])
    return CostTerms(
        unary=unary,
        crossing=crossing.reshape(len(problem.tensors), n_links),
        returning=returning.reshape(len(problem.outputs), n_links),
        fixed_up=half_rtt * idle_price,
        fixed_down=half_rtt * idle_price,
    )


def terms_value(problem: Problem, terms: CostTerms, tiers: Sequence[int]) -> float:
    """The objective of one assignment computed from the terms (tests check it equals ``evaluate``)."""
    a = list(tiers)
    total = float(sum(terms.unary[v, t] for v, t in enumerate(a)))
    for i, x in enumerate(problem.tensors):
        if x.consumers:
            src = 0 if x.producer is None else a[x.producer]
            far = max(a[c] for c in x.consumers)
            total += float(terms.crossing[i, src:far].sum())
    top_out = 0
    for j, o in enumerate(problem.outputs):
        producer = problem.tensors[o].producer
        src = 0 if producer is None else a[producer]
        total += float(terms.returning[j, :src].sum())
        top_out = max(top_out, src)
    top = max(a, default=0)
    total += float(terms.fixed_up[:top].sum() + terms.fixed_down[:top_out].sum())
    return total
