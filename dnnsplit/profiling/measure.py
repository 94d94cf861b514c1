"""Shared pieces of the runtimes: the measurement result and how a fused kernel's time is shared."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dnnsplit.profiling.graph import Layer

# Called with (what is being done, runs done, runs in all).



@dataclass
class Measurement:
    """Per-run times: ``layer_ms[run, i]`` is the time of graph layer ``i`` in measured run ``run``."""

    layer_ms: np.ndarray  # (repeat, n_layers)
    whole_ms: np.ndarray  # (repeat,) whole-model runs, measured without the per-layer instrumentation
    notes: list[str]


def layer_weight(layer: Layer) -> float:
    """How to share a fused kernel's time among the layers it covers: compute plus memory traffic."""
    elements = sum(int(np.prod(t.shape, dtype=np.int64)) for t in layer.outputs)
    return float(layer.macs + elements) or 1.0


def share(total: float, layers: list[Layer]) -> list[float]:
    weights = np.array([layer_weight(la) for la in layers])
    return list(total * weights / weights.sum())
