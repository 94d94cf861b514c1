"""Contexts: the conditions one request meets (links, device speeds, objective weights), sampled and encoded.

A ``Context`` turns the base ``Problem`` (built once from a profile with the tier presets) into the problem of
one request: every link replaced, each tier's compute times multiplied by its scale (the phone's speed, the
edge's load factor), and the objective's weights set. ``ContextSpace`` says where contexts are drawn from and
encodes one as the observation a policy sees: the quantities the exact solver's answer depends on, as
log-scaled numbers in [-1, 1], so one network covers bandwidths spanning three orders of magnitude.

The issue's optional branch exit rate is left out: the project has no early-exit branches yet.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from dnnsplit.errors import UsageError
from dnnsplit.partition.network import LinkSpec
from dnnsplit.partition.objective import Objective
from dnnsplit.partition.problem import LayerCost, Problem


@dataclass(frozen=True)
class Context:
    """One request's conditions: ``links`` in tier order, ``scales`` per tier (x base compute), weights."""

    links: tuple[LinkSpec, ...]
    scales: tuple[float, ...]
    objective: Objective = field(default_factory=Objective)

    def to_dict(self) -> dict[str, Any]:
        return {
            "links": [link.to_dict() for link in self.links],
            "scales": list(self.scales),
            "objective": self.objective.describe(),
        }


def apply_context(base: Problem, ctx: Context) -> Problem:
    """The base problem as this context sees it (the cost model then applies unchanged)."""
    if len(ctx.scales) != len(base.tiers) or len(ctx.links) != len(base.links):
        raise UsageError(
            f"context for {len(ctx.scales)} tiers does not fit a {len(base.tiers)}-tier problem",
            "use a policy trained for these tiers",
        )
    layers = tuple(
        LayerCost(
            la.name, tuple(ms * s for ms, s in zip(la.compute_ms, ctx.scales, strict=True)), la.weight_bytes
        )
        for la in base.layers
    )
    objective = ctx.objective
    if objective.energy > 0 and (base.mobile_power is None or ctx.links[0].radio is None):
        objective = Objective(objective.latency or 1.0, 0.0)  # no power figures: energy cannot be priced
    return replace(base, layers=layers, links=ctx.links, objective=objective)


def context_of(base: Problem, problem: Problem) -> Context:
    """The context that turns ``base`` into ``problem`` (same model and tiers): scales from total compute.

    Used when a concrete problem (from `plan`'s options) is handed to a policy: a uniformly faster phone is
    exactly a scale; measured per-tier profiles are approximated by the ratio of their totals.
    """
    scales = []
    for k in range(len(base.tiers)):
        before = sum(la.compute_ms[k] for la in base.layers)
        after = sum(la.compute_ms[k] for la in problem.layers)
        scales.append(after / before if before > 0 else 1.0)
    return Context(links=problem.links, scales=tuple(scales), objective=problem.objective)


@dataclass(frozen=True)
class Range:
    """A log-uniform range ``[low, high]`` (``low == high``: a constant)."""

    low: float
    high: float

    def sample(self, rng: np.random.Generator) -> float:
        if self.low == self.high:
            return self.low
        return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))

    @property
    def middle(self) -> float:
        return math.sqrt(self.low * self.high)

    def encode(self, value: float) -> float:
        """``value`` mapped to [-1, 1] on a log scale, clipped outside the range."""
        if self.low == self.high:
            return 0.0
        x = (math.log(max(value, 1e-12)) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return float(min(max(2.0 * x - 1.0, -1.0), 1.0))


# Default ranges. Phone uplinks from CAT1 (0.13 Mbit/s) to beyond 5G (200); downlinks 1-8x the uplink; RTTs
# from a nearby Wi-Fi AP to a congested 3G cell. The edge-cloud backhaul is a wired metro/regional link.
# Phone speed 0.5-2x the preset (a phone generation either way); the edge slowed 1-8x by its other tenants.
@dataclass(frozen=True)
class ContextSpace:
    """Where contexts are drawn from; ``radio`` is the phone link's radio model (energy prices it)."""

    tiers: tuple[str, ...]
    mobile_up_mbps: Range = Range(0.1, 200.0)
    mobile_down_ratio: Range = Range(1.0, 8.0)
    mobile_rtt_ms: Range = Range(2.0, 150.0)
    backhaul_mbps: Range = Range(50.0, 2000.0)
    backhaul_rtt_ms: Range = Range(4.0, 80.0)
    mobile_scale: Range = Range(0.5, 2.0)
    edge_load: Range = Range(1.0, 8.0)
    cloud_scale: Range = Range(1.0, 1.0)
    energy_weight: Range = Range(0.05, 5.0)
    energy_share: float = 0.5  # fraction of contexts that weigh energy at all (the rest: pure latency)
    radio: str | None = "lte"

    def sample(self, rng: np.random.Generator) -> Context:
        up = self.mobile_up_mbps.sample(rng)
        first = LinkSpec(
            up_mbps=up,
            down_mbps=up * self.mobile_down_ratio.sample(rng),
            rtt_ms=self.mobile_rtt_ms.sample(rng),
            radio=self.radio,
            name="sampled",
        )
        links = [first]
        if len(self.tiers) == 3:
            bw = self.backhaul_mbps.sample(rng)
            links.append(LinkSpec(bw, bw, self.backhaul_rtt_ms.sample(rng), radio=None, name="sampled"))
        energy = self.energy_weight.sample(rng) if rng.uniform() < self.energy_share else 0.0
        return Context(tuple(links), self.sample_scales(rng), Objective(1.0, energy))

    def nominal(self) -> Context:
        """The middle of every range (geometric means), latency only: what an offline plan assumes."""
        up = self.mobile_up_mbps.middle
        links = [
            LinkSpec(up, up * self.mobile_down_ratio.middle, self.mobile_rtt_ms.middle, self.radio, "nominal")
        ]
        if len(self.tiers) == 3:
            bw = self.backhaul_mbps.middle
            links.append(LinkSpec(bw, bw, self.backhaul_rtt_ms.middle, radio=None, name="nominal"))
        ranges = {"mobile": self.mobile_scale, "edge": self.edge_load, "cloud": self.cloud_scale}
        return Context(tuple(links), tuple(ranges[t].middle for t in self.tiers), Objective(1.0, 0.0))

    def sample_scales(self, rng: np.random.Generator) -> tuple[float, ...]:
        ranges = {"mobile": self.mobile_scale, "edge": self.edge_load, "cloud": self.cloud_scale}
        return tuple(ranges[t].sample(rng) for t in self.tiers)

    @property
    def n_features(self) -> int:
        return 3 + 2 * (len(self.tiers) == 3) + len(self.tiers) + 2

    def features(self, ctx: Context) -> np.ndarray:
        """The observation: phone link (up, down/up, rtt), backhaul (bandwidth, rtt), scales, energy."""
        first = ctx.links[0]
        values = [
            self.mobile_up_mbps.encode(first.up_mbps),
            self.mobile_down_ratio.encode(first.down_mbps / first.up_mbps),
            self.mobile_rtt_ms.encode(max(first.rtt_ms, 1e-3)),
        ]
        if len(self.tiers) == 3:
            values += [
                self.backhaul_mbps.encode(ctx.links[1].up_mbps),
                self.backhaul_rtt_ms.encode(ctx.links[1].rtt_ms),
            ]
        ranges = {"mobile": self.mobile_scale, "edge": self.edge_load, "cloud": self.cloud_scale}
        values += [ranges[t].encode(s) for t, s in zip(self.tiers, ctx.scales, strict=True)]
        # Energy per unit of latency; 0 is its own flag because log(0) has no place on the scale.
        w = (
            ctx.objective.energy / ctx.objective.latency
            if ctx.objective.latency > 0
            else self.energy_weight.high
        )
        values += [1.0 if w > 0 else -1.0, self.energy_weight.encode(w) if w > 0 else -1.0]
        return np.asarray(values, dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tiers"] = list(self.tiers)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContextSpace:
        values: dict[str, Any] = {}
        for key, value in data.items():
            if isinstance(value, dict):
                values[key] = Range(float(value["low"]), float(value["high"]))
            else:
                values[key] = value
        values["tiers"] = tuple(values["tiers"])
        return cls(**values)


def sample_contexts(space: ContextSpace, count: int, seed: int) -> list[Context]:
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(count)]


def feature_matrix(space: ContextSpace, contexts: Sequence[Context]) -> np.ndarray:
    return np.stack([space.features(c) for c in contexts]) if contexts else np.zeros((0, space.n_features))
