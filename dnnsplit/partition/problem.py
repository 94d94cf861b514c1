"""The partitioning problem: a DAG of layers with per-tier compute times, tensors, links and an objective.

Layers are indexed in topological order; a tensor knows its producer (None for the model input, which
starts on mobile) and the layers that consume it. Every layer gets one tier; tiers are ordered
(mobile = 0) and data only flows forward: for every edge u -> v, tier(u) <= tier(v).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property

from dnnsplit.errors import UsageError
from dnnsplit.partition.network import LinkSpec
from dnnsplit.partition.objective import Constraints, Objective

TIER_ORDER = ("mobile", "edge", "cloud")
SUPPORTED_TIERS: tuple[tuple[str, ...], ...] = (
    ("mobile", "edge"),
    ("mobile", "edge", "cloud"),
    ("mobile", "cloud"),
)
DEFAULT_TIERS = ("mobile", "edge")


def check_tiers(tiers: Sequence[str]) -> tuple[str, ...]:
    result = tuple(t.strip().lower() for t in tiers)
    if result not in SUPPORTED_TIERS:
        options = "; ".join(",".join(t) for t in SUPPORTED_TIERS)
        raise UsageError(f"unsupported tiers '{','.join(tiers)}'", f"use one of: {options}")
    return result


def parse_tiers(text: str) -> tuple[str, ...]:
    """``mobile,edge`` | ``mobile,edge,cloud`` | ``mobile,cloud``."""
    return check_tiers([t for t in text.split(",") if t.strip()])


def link_names(tiers: Sequence[str]) -> tuple[str, ...]:
    """Links join consecutive tiers: ``mobile-edge``, ``edge-cloud``; (mobile, cloud) has ``mobile-cloud``."""
    return tuple(f"{a}-{b}" for a, b in zip(tiers, tiers[1:], strict=False))


@dataclass(frozen=True)
class LayerCost:
    name: str
    compute_ms: tuple[float, ...]  # one per tier, in tier order
    weight_bytes: int = 0


@dataclass(frozen=True)
class Tensor:
    name: str
    bytes: int
    producer: int | None  # layer index; None for the model input (on mobile from the start)
    consumers: tuple[int, ...]  # layer indices, sorted, no repeats
    # What a model output costs on its way back, when that differs from ``bytes`` (what it costs going up):
    # a boundary codec shrinks the tensors sent between segments, but outputs return as float32.
    return_bytes: int | None = None
    # The boundary codec's time (encode on the sending tier + decode on the receiving one), per link it
    # crosses, charged with its transfer; () when nothing is coded.
    codec_ms: tuple[float, ...] = ()

    def codec_ms_on(self, link: int) -> float:
        return self.codec_ms[link] if link < len(self.codec_ms) else 0.0

    @property
    def returned_bytes(self) -> int:
        return self.bytes if self.return_bytes is None else self.return_bytes


@dataclass(frozen=True)
class MobilePower:
    """The phone's power (W) while computing and while idle (waiting on the network or on other tiers)."""

    compute_w: float
    idle_w: float


@dataclass(frozen=True)
class Problem:
    tiers: tuple[str, ...]
    layers: tuple[LayerCost, ...]
    tensors: tuple[Tensor, ...]
    outputs: tuple[int, ...]  # indices into ``tensors``: the model outputs that must return to mobile
    links: tuple[LinkSpec, ...]  # links[k] joins tiers[k] and tiers[k + 1]
    mobile_power: MobilePower | None = None
    objective: Objective = field(default_factory=Objective)
    constraints: Constraints = field(default_factory=Constraints)
    # The phone downloads its segments (the mobile layers' weights) over the first link's downlink once
    # per session of this many requests: each request is charged 1/N of it. None: not charged.
    session_requests: int | None = None

    def __post_init__(self) -> None:
        check_tiers(self.tiers)
        if self.session_requests is not None and self.session_requests < 1:
            raise UsageError(
                f"--session-requests must be at least 1 (got {self.session_requests})", "pass 100, say"
            )
        n, t = len(self.layers), len(self.tiers)
        if len(self.links) != t - 1:
            raise UsageError(
                f"{t} tiers need {t - 1} links, got {len(self.links)}", "give one link per tier pair"
            )
        names = [la.name for la in self.layers]
        if len(set(names)) != n:
            raise UsageError("layer names are not unique", "every layer needs its own name")
        for la in self.layers:
            if len(la.compute_ms) != t or not all(c >= 0 and math.isfinite(c) for c in la.compute_ms):
                raise UsageError(f"layer '{la.name}' needs {t} finite compute times >= 0", "fix the profile")
            if la.weight_bytes < 0:
                raise UsageError(f"layer '{la.name}' has negative weight bytes", "fix the profile")
        for x in self.tensors:
            if x.bytes < 0 or x.returned_bytes < 0 or any(ms < 0 for ms in x.codec_ms):
                raise UsageError(f"tensor '{x.name}' has negative size", "fix the profile")
            if any(c < 0 or c >= n for c in x.consumers) or list(x.consumers) != sorted(set(x.consumers)):
                raise UsageError(f"tensor '{x.name}' has bad consumer indices", "fix the problem")
            if x.producer is not None and not (
                0 <= x.producer < n and all(c > x.producer for c in x.consumers)
            ):
                # Topological order is what lets a single cut index mean "the first k layers".
                raise UsageError(f"tensor '{x.name}': layers are not in topological order", "sort the layers")
        if any(not 0 <= o < len(self.tensors) for o in self.outputs):
            raise UsageError("output index out of range", "fix the problem")
        if self.objective.energy > 0 and self.mobile_power is None:
            raise UsageError(
                "the energy objective needs the mobile device's compute_power_w and idle_power_w",
                "add them to the mobile device file",
            )
        if self.objective.energy > 0 and self.links[0].radio is None:
            raise UsageError(
                "the energy objective needs a radio model on the mobile link", "add radio=lte|3g|wifi"
            )

    # --- derived structure (cached: the problem is immutable) ---

    @property
    def n(self) -> int:
        return len(self.layers)

    @cached_property
    def index(self) -> dict[str, int]:
        return {la.name: i for i, la in enumerate(self.layers)}

    @cached_property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """Distinct (producer, consumer) layer pairs: the DAG's edges."""
        pairs = {(x.producer, c) for x in self.tensors if x.producer is not None for c in x.consumers}
        return tuple(sorted(pairs))  # type: ignore[arg-type]

    @cached_property
    def sinks(self) -> tuple[int, ...]:
        """Layers no other layer consumes. Tiers only grow along edges, so max tier = max over sinks."""
        has_consumer = {p for p, _ in self.edges}
        return tuple(i for i in range(self.n) if i not in has_consumer)

    @cached_property
    def input_consumers(self) -> tuple[int, ...]:
        return tuple(sorted({c for x in self.tensors if x.producer is None for c in x.consumers}))

    @cached_property
    def output_producers(self) -> tuple[int, ...]:
        return tuple(sorted({p for o in self.outputs if (p := self.tensors[o].producer) is not None}))

    @cached_property
    def forced_mobile(self) -> tuple[int, ...]:
        """Layers private_input pins to mobile: the input's consumers and all their ancestors."""
        if not self.constraints.private_input:
            return ()
        parents: list[list[int]] = [[] for _ in range(self.n)]
        for p, c in self.edges:
            parents[c].append(p)
        seen = set(self.input_consumers)
        stack = list(seen)
        while stack:
            for p in parents[stack.pop()]:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return tuple(sorted(seen))

    @property
    def link_names(self) -> tuple[str, ...]:
        return link_names(self.tiers)

    def with_objective(self, objective: Objective) -> Problem:
        return replace(self, objective=objective)

    def with_constraints(self, constraints: Constraints) -> Problem:
        return replace(self, constraints=constraints)

    def tiers_of(self, assignment: Mapping[str, str] | Sequence[int]) -> tuple[int, ...]:
        """Tier index per layer from a name -> tier mapping or a sequence of tier indices, checked."""
        if isinstance(assignment, Mapping):
            unknown = sorted(set(assignment) - set(self.index))
            if unknown:
                raise UsageError(
                    f"assignment names unknown layer '{unknown[0]}'", "use the profile's layer names"
                )
            missing = [la.name for la in self.layers if la.name not in assignment]
            if missing:
                raise UsageError(f"assignment lacks layer '{missing[0]}'", "assign every layer a tier")
            tier_index = {t: i for i, t in enumerate(self.tiers)}
            bad = [t for t in assignment.values() if t not in tier_index]
            if bad:
                raise UsageError(f"assignment uses unknown tier '{bad[0]}'", f"use {', '.join(self.tiers)}")
            tiers = tuple(tier_index[assignment[la.name]] for la in self.layers)
        else:
            tiers = tuple(int(t) for t in assignment)
            if len(tiers) != self.n or any(not 0 <= t < len(self.tiers) for t in tiers):
                raise UsageError(
                    "assignment must give a valid tier index for every layer", "fix the assignment"
                )
        for p, c in self.edges:
            if tiers[p] > tiers[c]:
                src, dst = self.layers[p].name, self.layers[c].name
                raise UsageError(
                    f"assignment sends data backwards: '{src}' on {self.tiers[tiers[p]]} feeds "
                    f"'{dst}' on {self.tiers[tiers[c]]}",
                    "data only flows mobile -> edge -> cloud",
                )
        return tiers
