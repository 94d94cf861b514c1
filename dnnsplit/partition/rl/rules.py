"""The decision rules an RL policy is measured against, for one request at a time.

* ``exact``: the exact optimum of the request's own context. Over a candidate set that holds every
  context's optimum (see candidates.py) the cheapest candidate is that optimum; in the multi-user scenario
  it is "myopic exact": it ignores the queue.
* ``load_aware``: the same with the edge's current queue wait W added to every plan that computes on the
  edge. This is still exact over all assignments: W is one fixed price for "uses the edge", so the optimum
  is either the plain optimum (if it leaves the edge idle, or if paying W still beats the rest) or the best
  plan that leaves the edge idle, and candidate sets for the multi-user scenario hold both.
* ``single_tier``: all-local (tier 0) or all-edge.
"""

from __future__ import annotations

import numpy as np

from dnnsplit.partition.rl.candidates import CandidateSet
from dnnsplit.partition.rl.contexts import Context


def exact(candidates: CandidateSet, ctx: Context) -> int:
    return int(np.argmin(candidates.costs(ctx).objective))


def load_aware(candidates: CandidateSet, ctx: Context, edge_wait_ms: float) -> int:
    # The wait is latency: it costs its latency weight, plus the phone's idle power while it waits.
    weights = ctx.objective
    price = weights.latency
    power = candidates.base.mobile_power
    if weights.energy > 0 and power is not None:
        price += weights.energy * power.idle_w
    value = candidates.costs(ctx).objective + price * edge_wait_ms * candidates.uses_edge
    return int(np.argmin(value))
