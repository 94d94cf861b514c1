"""Test helpers: random problems (a hypothesis strategy) and a brute-force reference.

The reference enumerates every monotone assignment and prices them all with numpy, written from the
formulas in docs/cost-model.md without using the library's evaluate / terms / solvers, so agreeing with
it is evidence that both are right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from dnnsplit.partition import (
    SUPPORTED_TIERS,
    Constraints,
    LayerCost,
    LinkSpec,
    MobilePower,
    Objective,
    Problem,
    Tensor,
)

OBJECTIVES = {"latency": Objective(1.0, 0.0), "energy": Objective(0.0, 1.0)}


@st.composite
def problems(draw: st.DrawFn, max_layers: int = 12, tiers: tuple[str, ...] | None = None) -> Problem:
    """A random DAG: each layer reads 1-3 earlier tensors (shared tensors arise when several pick the same one)
    and writes 1-2 tensors; model outputs are the unread tensors of sink layers, sometimes plus a read one."""
    tiers = tiers or draw(st.sampled_from(SUPPORTED_TIERS))
    n = draw(st.integers(1, max_layers))
    small = st.floats(0.0, 20.0, allow_nan=False)
    pool = [("input", None)]  # (tensor name, producer)
    reads: list[list[int]] = []
    writes: list[list[int]] = []
    for i in range(n):
        # Any earlier tensor, the raw input included: long skips and wide fan-outs both occur.
        picks = draw(st.lists(st.integers(0, len(pool) - 1), min_size=1, max_size=3, unique=True))
        reads.append(picks)
        first = len(pool)
        for j in range(draw(st.integers(1, 2))):
            pool.append((f"t{i}_{j}", i))
        writes.append(list(range(first, len(pool))))
    sizes = [draw(st.integers(0, 200_000)) for _ in pool]
    consumers: dict[int, set[int]] = {k: set() for k in range(len(pool))}
    for i, picks in enumerate(reads):
        for k in picks:
            consumers[k].add(i)
    has_child = {pool[k][1] for k, cs in consumers.items() if cs and pool[k][1] is not None}
    outputs = [w for i in range(n) if i not in has_child for w in writes[i] if not consumers[w]]
    if draw(st.booleans()):
        read = [k for k in range(1, len(pool)) if consumers[k]]
        if read:
            outputs.append(draw(st.sampled_from(read)))
    outputs = sorted(set(outputs))
    kept = [k for k in range(len(pool)) if consumers[k] or k in outputs]
    tensors = tuple(Tensor(pool[k][0], sizes[k], pool[k][1], tuple(sorted(consumers[k]))) for k in kept)
    layers = tuple(
        LayerCost(
            f"layer{i}",
            tuple(draw(small) for _ in tiers),
            draw(st.integers(0, 1_000_000)),
        )
        for i in range(n)
    )
    rate = st.floats(0.1, 100.0, allow_nan=False)
    rtt = st.floats(0.0, 100.0, allow_nan=False)
    links = [LinkSpec(draw(rate), draw(rate), draw(rtt), radio=draw(st.sampled_from(["lte", "3g", "wifi"])))]
    if len(tiers) == 3:
        links.append(LinkSpec(draw(rate), draw(rate), draw(rtt), radio=None))
    power = MobilePower(draw(st.floats(0.1, 5.0)), draw(st.floats(0.0, 1.0)))
    kind = draw(st.sampled_from(["latency", "energy", "weighted"]))
    objective = OBJECTIVES.get(kind) or Objective(draw(st.floats(0.01, 2.0)), draw(st.floats(0.01, 2.0)))
    return Problem(
        tiers=tiers,
        layers=layers,
        tensors=tensors,
        outputs=tuple(kept.index(k) for k in outputs),
        links=tuple(links),
        mobile_power=power,
        objective=objective,
    )


@dataclass
class Enumeration:
    rows: np.ndarray  # (assignments, layers) tier indices
    latency: np.ndarray
    energy: np.ndarray
    mobile_bytes: np.ndarray
    reads_input_off_mobile: np.ndarray  # breaks private_input


def monotone_assignments(problem: Problem) -> np.ndarray:
    """Every assignment with tier(u) <= tier(v) on every edge, grown layer by layer in topological order."""
    parents: list[list[int]] = [[] for _ in range(problem.n)]
    for x in problem.tensors:
        if x.producer is not None:
            for c in x.consumers:
                parents[c].append(x.producer)
    rows = np.zeros((1, 0), dtype=np.int8)
    for v in range(problem.n):
        floor = rows[:, parents[v]].max(axis=1) if parents[v] else np.zeros(len(rows), dtype=np.int8)
        grown = [
            np.hstack([rows[floor <= t], np.full((int((floor <= t).sum()), 1), t, dtype=np.int8)])
            for t in range(len(problem.tiers))
        ]
        rows = np.vstack(grown)
    return rows


def enumerate_all(problem: Problem) -> Enumeration:
    rows = monotone_assignments(problem)
    return price(problem, rows)


def price(problem: Problem, rows: np.ndarray) -> Enumeration:
    """Latency, energy and mobile weight of each row, straight from the documented formulas."""
    count, n_tiers = len(rows), len(problem.tiers)
    compute = np.array([la.compute_ms for la in problem.layers]).reshape(problem.n, n_tiers)
    per_tier = np.stack([((rows == t) * compute[:, t]).sum(axis=1) for t in range(n_tiers)], axis=1)
    up_ms = np.zeros((count, n_tiers - 1))
    down_ms = np.zeros((count, n_tiers - 1))
    down_used = np.zeros((count, n_tiers - 1), dtype=bool)
    for x in problem.tensors:
        if not x.consumers:
            continue
        src = np.zeros(count) if x.producer is None else rows[:, x.producer]
        far = rows[:, list(x.consumers)].max(axis=1)
        for k, link in enumerate(problem.links):
            up_ms[:, k] += ((src <= k) & (far > k)) * x.bytes * 8 / (link.up_mbps * 1e3)
    for o in problem.outputs:
        x = problem.tensors[o]
        src = np.zeros(count) if x.producer is None else rows[:, x.producer]
        for k, link in enumerate(problem.links):
            down_ms[:, k] += (src > k) * x.bytes * 8 / (link.down_mbps * 1e3)
            down_used[:, k] |= src > k
    top = rows.max(axis=1) if problem.n else np.zeros(count)
    latency = per_tier.sum(axis=1) + up_ms.sum(axis=1) + down_ms.sum(axis=1)
    for k, link in enumerate(problem.links):
        latency += (top > k) * link.rtt_ms / 2 + down_used[:, k] * link.rtt_ms / 2
    energy = np.full(count, np.nan)
    if problem.mobile_power is not None and problem.links[0].radio is not None:
        p, first = problem.mobile_power, problem.links[0]
        model = {
            "lte": (438.39, 51.97, 1288.04),
            "3g": (868.98, 122.12, 817.88),
            "wifi": (283.17, 137.01, 132.86),
        }
        a_up, a_down, base = model[first.radio]
        p_up, p_down = (a_up * first.up_mbps + base) / 1e3, (a_down * first.down_mbps + base) / 1e3
        radio_ms = up_ms[:, 0] + down_ms[:, 0]
        energy = (
            p.compute_w * per_tier[:, 0]
            + p_up * up_ms[:, 0]
            + p_down * down_ms[:, 0]
            + p.idle_w * (latency - per_tier[:, 0] - radio_ms)
        )
    weights = np.array([la.weight_bytes for la in problem.layers], dtype=np.int64)
    mobile_bytes = ((rows == 0) * weights).sum(axis=1)
    readers = sorted({c for x in problem.tensors if x.producer is None for c in x.consumers})
    off = (rows[:, readers] > 0).any(axis=1) if readers else np.zeros(count, dtype=bool)
    return Enumeration(rows, latency, energy, mobile_bytes, off)


def objective_of(problem: Problem, e: Enumeration) -> np.ndarray:
    o = problem.objective
    return o.latency * e.latency + (o.energy * e.energy if o.energy else 0.0)


def hard_ok(problem: Problem, e: Enumeration) -> np.ndarray:
    c: Constraints = problem.constraints
    ok = np.ones(len(e.rows), dtype=bool)
    if c.private_input:
        ok &= ~e.reads_input_off_mobile
    if c.max_mobile_mb is not None:
        ok &= e.mobile_bytes <= math.floor(c.max_mobile_mb * 1e6 + 1e-6)  # whole bytes, as documented
    return ok


def close(a: float, b: float, rel: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))
