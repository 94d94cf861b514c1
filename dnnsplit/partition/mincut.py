"""Exact minimisation of CostTerms over monotone assignments by one s-t minimum cut.

Encoding (Ishikawa's construction for ordered labels): for each level l = 1..T-1 and layer v a binary
y_l(v) = [tier(v) >= l], on the sink side of the cut when 1. Then tier(v) = sum_l y_l(v), and

* chain: y_{l+1}(v) <= y_l(v)  -> infinite edge y_l(v) -> y_{l+1}(v);
* data flows forward: y_l(p) <= y_l(c) for each edge p -> c  -> infinite edge y_l(c) -> y_l(p);
* unary costs: cost(tier) = u_0 + sum_l y_l (u_l - u_{l-1}), one source or sink edge per difference;
* a tensor crosses link l-1 iff y_l(producer) = 0 and some consumer has y_l = 1. A virtual node w per tensor
  and level, with producer -> w (capacity = crossing price) and infinite w -> consumer, charges it once
  however many consumers sit beyond the link (a single consumer needs no virtual node);
* an output returns over link l-1 iff y_l(producer) = 1: a unary source edge;
* the fixed rtt/2 of a link is charged iff any layer (resp. any output) lies beyond it: an OR, which is a
  virtual node too: source -> a (capacity rtt/2 price), infinite a -> each target. For the upward direction
  the targets are the sinks of the DAG: tiers only grow along edges, so some layer is beyond the link iff
  some sink is.
* private_input: infinite source edges pin the forced-mobile layers to y_1 = 0.

Every price is >= 0, so the construction is exact and needs no enumeration of which links are used.
"""

from __future__ import annotations

import numpy as np

from dnnsplit.partition.maxflow import min_cut
from dnnsplit.partition.problem import Problem
from dnnsplit.partition.terms import CostTerms

SOURCE, SINK = 0, 1


class _EdgeList:
    """Edges collected as numpy chunks; duplicates are summed by the max-flow (inf absorbs the rest)."""

    def __init__(self, first_free: int) -> None:
        self.tails: list[np.ndarray] = []
        self.heads: list[np.ndarray] = []
        self.caps: list[np.ndarray] = []
        self.n_nodes = first_free
        self.constant = 0.0

    def add(self, tails: np.ndarray | int, heads: np.ndarray | int, caps: np.ndarray | float) -> None:
        t, h = (
            np.atleast_1d(np.asarray(tails, dtype=np.int64)),
            np.atleast_1d(np.asarray(heads, dtype=np.int64)),
        )
        c = np.broadcast_to(np.asarray(caps, dtype=float), np.broadcast_shapes(t.shape, h.shape))
        t, h = np.broadcast_to(t, c.shape), np.broadcast_to(h, c.shape)
        keep = c > 0
        self.tails.append(t[keep])
        self.heads.append(h[keep])
        self.caps.append(c[keep])

    def forbid(self, tails: np.ndarray | int, heads: np.ndarray | int) -> None:
        """Forbid tail on the source side with head on the sink side (y_tail = 0 and y_head = 1)."""
        self.add(tails, heads, np.inf)

    def unary(self, nodes: np.ndarray, cost_if_one: np.ndarray) -> None:
        self.add(SOURCE, nodes, np.maximum(cost_if_one, 0.0))
        # c * y with c < 0 is c + |c| * (1 - y): pay |c| when the node stays on the source side.
        negative = np.minimum(cost_if_one, 0.0)
        self.constant += float(negative.sum())
        self.add(nodes, SINK, -negative)

    def hubs(self, count: int) -> np.ndarray:
        first = self.n_nodes
        self.n_nodes += count
        return np.arange(first, first + count, dtype=np.int64)

    def any_of(self, tail: int, targets: np.ndarray, cap: float) -> None:
        """Charge ``cap`` once when any target is 1 while ``tail`` is 0."""
        if cap <= 0 or len(targets) == 0:
            return
        if len(targets) == 1:
            self.add(tail, targets, cap)
            return
        hub = self.hubs(1)
        self.add(tail, hub, cap)
        self.forbid(hub, targets)

    def solve(self) -> tuple[float, np.ndarray]:
        value, source_side = min_cut(
            self.n_nodes,
            np.concatenate(self.tails),
            np.concatenate(self.heads),
            np.concatenate(self.caps),
            SOURCE,
            SINK,
        )
        return value + self.constant, source_side


class _Structure:
    """The problem's DAG as flat arrays, so building each level is a handful of numpy operations."""

    def __init__(self, problem: Problem) -> None:
        edges = np.array(problem.edges, dtype=np.int64).reshape(-1, 2)
        self.parents, self.children = edges[:, 0], edges[:, 1]
        used = [i for i, x in enumerate(problem.tensors) if x.consumers]
        counts = np.array([len(problem.tensors[i].consumers) for i in used], dtype=np.int64)
        self.tensor_rows = np.array(used, dtype=np.int64)
        self.producers = np.array([_or_minus_one(problem.tensors[i].producer) for i in used], dtype=np.int64)
        self.counts = counts
        self.consumers = np.array([c for i in used for c in problem.tensors[i].consumers], dtype=np.int64)
        self.first_consumer = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        out_producers = [_or_minus_one(problem.tensors[o].producer) for o in problem.outputs]
        self.output_rows = np.array([j for j, p in enumerate(out_producers) if p >= 0], dtype=np.int64)
        self.output_producers = np.array([p for p in out_producers if p >= 0], dtype=np.int64)
        self.sinks = np.array(problem.sinks, dtype=np.int64)
        self.distinct_output_producers = np.array(problem.output_producers, dtype=np.int64)
        self.forced = np.array(problem.forced_mobile, dtype=np.int64)


def _or_minus_one(value: int | None) -> int:
    return -1 if value is None else value


def solve_mincut(problem: Problem, terms: CostTerms) -> tuple[tuple[int, ...], float]:
    """The optimal assignment under the cut-representable constraints (private_input), and its value."""
    n, levels = problem.n, len(problem.tiers) - 1
    s = _Structure(problem)
    g = _EdgeList(first_free=2 + levels * n)
    g.constant += float(terms.unary[:, 0].sum())
    layer_ids = np.arange(n, dtype=np.int64)
    for level in range(1, levels + 1):
        k = level - 1
        base = 2 + k * n  # node id of y_level(0)
        g.unary(base + layer_ids, terms.unary[:, level] - terms.unary[:, level - 1])
        if level < levels:
            g.forbid(base + layer_ids, base + n + layer_ids)
        g.forbid(base + s.children, base + s.parents)
        _add_crossings(g, s, base, terms.crossing[s.tensor_rows, k])
        if len(s.output_rows):
            g.add(SOURCE, base + s.output_producers, terms.returning[s.output_rows, k])
        g.any_of(SOURCE, base + s.sinks, float(terms.fixed_up[k]))
        g.any_of(SOURCE, base + s.distinct_output_producers, float(terms.fixed_down[k]))
    if len(s.forced):
        g.forbid(SOURCE, 2 + s.forced)
    value, source_side = g.solve()
    beyond = ~source_side[2 : 2 + levels * n].reshape(levels, n)
    return tuple(int(t) for t in beyond.sum(axis=0)), value


def _add_crossings(g: _EdgeList, s: _Structure, base: int, caps: np.ndarray) -> None:
    tails = np.where(s.producers < 0, SOURCE, base + s.producers)
    priced = caps > 0
    single = priced & (s.counts == 1)
    g.add(tails[single], base + s.consumers[s.first_consumer[single]], caps[single])
    multi = np.flatnonzero(priced & (s.counts > 1))
    if len(multi) == 0:
        return
    hubs = g.hubs(len(multi))
    g.add(tails[multi], hubs, caps[multi])
    counts = s.counts[multi]
    starts = np.repeat(s.first_consumer[multi], counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    g.forbid(np.repeat(hubs, counts), base + s.consumers[starts + offsets])
