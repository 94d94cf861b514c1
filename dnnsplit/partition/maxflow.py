"""Minimum s-t cut with real capacities, on scipy's compiled max-flow (Dinic), to float precision.

scipy's ``maximum_flow`` takes 32-bit integer capacities only. So:

1. capacities are scaled so that the cut {everything but the sink} is 2**29 units, and rounded down (a
   flow on rounded-down capacities is a valid flow on the real ones). The cut read from the residual is
   then within ``gap`` of the minimum, ``gap`` being its residual capacity (under one unit per cut edge,
   ~2e-9 of the total each);
2. a second pass solves the remaining flow (at most ``gap``) on the real residual network in units of
   gap / 2**29. No minimum cut can cut an edge with residual above the gap, so the nodes such edges tie
   together are contracted first and the pass runs on the small uncertain part of the graph.

The cut returned is minimal to ~1e-15 (relative): exact for our purposes, and far faster than a
pure-Python max-flow (networkx took ~100x longer and misreads saturation with float capacities).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components, maximum_flow

_HALF_RANGE = float(2**29)  # largest flow we let a pass carry, so sums of 32-bit flows cannot overflow
_NEGLIGIBLE = 1e-200  # in units of the largest capacity


def min_cut(
    n_nodes: int, tails: np.ndarray, heads: np.ndarray, caps: np.ndarray, source: int, sink: int
) -> tuple[float, np.ndarray]:
    """Minimum cut of the graph with edges tails[i] -> heads[i] of capacity caps[i] (>= 0, may be inf).

    Returns the cut's capacity and a boolean mask of the nodes on the source side. The graph must have a
    finite cut: every edge into ``sink`` is finite.
    """
    real = sp.csr_matrix((caps.astype(float), (tails, heads)), shape=(n_nodes, n_nodes))  # sums duplicates
    real.sum_duplicates()
    everything_but_sink = np.ones(n_nodes, dtype=bool)
    everything_but_sink[sink] = False
    finite = real.data[np.isfinite(real.data)]
    top = float(finite.max(initial=0.0))
    if top <= 0:
        return 0.0, _source_side(real, source)
    # Work in units of the largest finite capacity, so that scaling by 2**29 / bound cannot overflow.
    work = real.copy()
    work.data = work.data / top
    # The cut {everything but the sink} is finite (edges into the sink are) and bounds the minimum.
    bound = float(work[:, [sink]].sum())
    if not math.isfinite(bound):
        raise ValueError("an infinite edge enters the sink: no finite cut")
    if bound <= _NEGLIGIBLE:  # everything on the source side already costs (next to) nothing
        return _crossing(real, everything_but_sink), everything_but_sink
    flow = _scaled_max_flow(work, source, sink, bound)
    residual = _residual(work, flow)
    side = _source_side(residual, source, tolerance=_unit(bound))
    if side[sink]:  # cannot happen in exact arithmetic: then the sink side is a sound (if coarse) answer
        side = everything_but_sink
    # The cut found is within ``gap`` (its residual capacity) of the minimum; a second pass closes it.
    gap = _crossing(residual, side)
    if gap > _NEGLIGIBLE:
        side = _refine(residual, source, sink, gap, side)
    return _crossing(real, side), side


def _refine(residual: sp.csr_matrix, source: int, sink: int, gap: float, side: np.ndarray) -> np.ndarray:
    """Second pass: the remaining max flow (at most ``gap``) on the residual network, in units of gap / 2**29.

    No minimum cut of the remaining problem cuts an edge with residual >= 2 * gap, so the nodes such edges
    tie together (strongly connected, or tied to the source or the sink) are contracted first: the pass
    then runs on the small uncertain part of the graph only.
    """
    labels, condensed = _contract(residual, source, sink, 2 * gap)
    flow = _scaled_max_flow(condensed, labels[source], labels[sink], gap)
    rest = _residual(condensed, flow)
    refined = _source_side(rest, labels[source], tolerance=_unit(gap))
    if refined[labels[sink]]:  # as above: keep the first pass's cut
        return side
    return refined[labels]


def _contract(
    residual: sp.csr_matrix, source: int, sink: int, big: float
) -> tuple[np.ndarray, sp.csr_matrix]:
    """Node -> group labels, and the graph between groups (summed residuals)."""
    strong = residual.copy()
    strong.data = (strong.data >= big).astype(np.int8)
    strong.eliminate_zeros()
    _, labels = connected_components(strong, directed=True, connection="strong")
    # Whatever the source reaches (or reaches the sink) through such edges sits on its side in every min cut.
    labels[breadth_first_order(strong, source, directed=True, return_predecessors=False)] = labels[source]
    to_sink = breadth_first_order(strong.T.tocsr(), sink, directed=True, return_predecessors=False)
    labels[to_sink] = labels[sink]
    _, labels = np.unique(labels, return_inverse=True)
    count = int(labels.max()) + 1
    coo = residual.tocoo()
    tails, heads = labels[coo.row], labels[coo.col]
    keep = tails != heads
    condensed = sp.csr_matrix((coo.data[keep], (tails[keep], heads[keep])), shape=(count, count))
    condensed.sum_duplicates()
    return labels, condensed


def _unit(bound: float) -> float:
    return bound / _HALF_RANGE


def _scaled_max_flow(capacity: sp.csr_matrix, source: int, sink: int, bound: float) -> sp.csr_matrix:
    """A max flow on capacities rounded down to units of bound / 2**29, returned in real units."""
    scale = _HALF_RANGE / bound
    # Clipped (and infinite) edges get 2**30 units: never saturated, as the flow left is at most ``bound``.
    ints = np.floor(np.minimum(capacity.data, 2 * bound) * scale).astype(np.int32)
    scaled = sp.csr_matrix((ints, capacity.indices, capacity.indptr), shape=capacity.shape)
    result = maximum_flow(scaled, source, sink)
    return result.flow.astype(float) / scale


def _residual(capacity: sp.csr_matrix, flow: sp.csr_matrix) -> sp.csr_matrix:
    """Residual capacities (capacity - flow, with flow antisymmetric), shaved by their rounding noise.

    ``capacity - flow`` carries float noise of ~1e-16 of the operands; left in, the finer second pass
    would read that noise as real capacity (and could even reach the sink through it). Shaving 1e-14 of
    the operands' size only ever under-states capacity, so flows stay feasible.
    """
    finite = capacity.copy()
    finite.data = np.where(np.isfinite(finite.data), np.abs(finite.data), 0.0)
    residual = (capacity - flow - 1e-14 * (finite + abs(flow))).tocsr()
    residual.data = np.maximum(residual.data, 0.0)
    residual.eliminate_zeros()
    return residual


def _source_side(residual: sp.csr_matrix, source: int, tolerance: float = 0.0) -> np.ndarray:
    """Nodes reachable from the source through edges with more than ``tolerance`` residual capacity."""
    usable = residual.copy()
    usable.data = (usable.data > tolerance).astype(np.int8)
    usable.eliminate_zeros()
    order = breadth_first_order(usable, source, directed=True, return_predecessors=False)
    side = np.zeros(residual.shape[0], dtype=bool)
    side[order] = True
    return side


def _crossing(capacity: sp.csr_matrix, side: np.ndarray) -> float:
    """Total capacity of the edges from the source side to the sink side."""
    coo = capacity.tocoo()
    mask = side[coo.row] & ~side[coo.col]
    return float(coo.data[mask].sum())
