"""Random CNN-like partitioning problems of any size: for the solvers' scale tests and benchmarks."""

from __future__ import annotations

import random

from dnnsplit.partition.network import LinkSpec
from dnnsplit.partition.problem import LayerCost, MobilePower, Problem, Tensor


def random_dag(
    n: int, tiers: tuple[str, ...], seed: int, rtt_ms: float = 10.0, total_host_ms: float | None = None
) -> Problem:
    """A CNN-like DAG: mostly local edges with skips and fan-outs, sizes spanning four orders of magnitude.

    Host compute per layer is uniform in [0, 2] ms, or scaled so the whole graph takes ``total_host_ms``
    (a real CNN's few tens of ms): then compute and transfers are of a size and plans cut inside the graph.
    """
    rng = random.Random(seed)
    scales = {"mobile": 6.0, "edge": 0.4, "cloud": 0.1}
    consumers: list[set[int]] = [set() for _ in range(n + 1)]  # tensor 0 is the input, tensor i + 1 layer i's
    for i in range(n):
        for _ in range(rng.randint(1, 2)):
            consumers[max(0, i - int(rng.expovariate(1 / 3)))].add(i)
    drawn = [(rng.uniform(0.0, 2.0), rng.randint(0, 500_000)) for _ in range(n)]
    factor = 1.0 if total_host_ms is None else total_host_ms / max(sum(b for b, _ in drawn), 1e-12)
    layers = tuple(
        LayerCost(f"l{i}", tuple(base * factor * scales[t] for t in tiers), weight)
        for i, (base, weight) in enumerate(drawn)
    )
    tensors = (Tensor("input", 150_528, None, tuple(sorted(consumers[0]))),) + tuple(
        Tensor(f"t{i}", int(rng.lognormvariate(9, 2)), i, tuple(sorted(consumers[i + 1]))) for i in range(n)
    )
    outputs = tuple(j for j in range(1, n + 1) if not consumers[j])
    links = (LinkSpec(18.88, 50, rtt_ms, radio="wifi"),)
    if len(tiers) == 3:
        links += (LinkSpec(1000, 1000, 20, radio=None),)
    return Problem(tiers, layers, tensors, outputs, links, MobilePower(2.5, 0.3))
