"""Elastic partitioning: the cuts worth shipping, and which of them is fastest in a given context.

A *context* is what the phone sees at run time: its uplink and downlink, the round trip, its own speed
against the profile (``phone_speed`` 2: twice as fast) and the edge's load (``edge_load`` 4: every edge
layer takes four times its profiled time, as with three requests queued ahead). ``sweep_candidates``
solves the exact planner (``planner.solve``, latency objective, the plan's hard constraints) at every
context of a ``ContextGrid`` and keeps the distinct optima, plus all-local and all-edge when they meet
the constraints. Two tiers only: the phone and the tier behind its link.

The optima must nest (each one's phone layers contain the previous one's) so that the model can be cut at
every candidate boundary into consecutive *pieces*: a candidate is then "pieces ``0..boundary-1`` on the
phone, the rest beyond", no layer is stored twice, and the edge can start at any boundary. An optimum that
does not nest with the others (rare: a DAG whose best cuts cross) is dropped, and the sweep says which
and by how much the nearest kept candidate is slower there.

``ElasticSpec`` is the ``elastic`` block of a split's manifest (``dnnsplit/elastic@1``): per piece its
compute on the phone and on the edge, per candidate the bytes it sends up and back. ``predict_ms`` prices
a candidate in a context with the cost model's latency formula (``evaluate``: compute, rtt/2 each way,
bytes over the bandwidth), so ``decide`` is the exact optimum over the candidates in microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from dnnsplit.errors import UsageError
from dnnsplit.partition.evaluate import evaluate
from dnnsplit.partition.feasibility import hard_violations
from dnnsplit.partition.objective import Objective
from dnnsplit.partition.planner import solve
from dnnsplit.partition.problem import Problem
from dnnsplit.progress import ProgressFn, no_progress

SCHEMA = "dnnsplit/elastic@1"
ALL_EDGE = "all-edge"
ALL_LOCAL = "all-local"


@dataclass(frozen=True)
class Context:
    """What one request is cut for. Rates in Mbit/s, rtt in ms; speed and load are factors (1: the plan's)."""

    up_mbps: float
    down_mbps: float
    rtt_ms: float
    phone_speed: float = 1.0
    edge_load: float = 1.0

    def __post_init__(self) -> None:
        for key in ("up_mbps", "down_mbps", "phone_speed", "edge_load"):
            value = getattr(self, key)
            if not (value > 0 and math.isfinite(value)):
                raise UsageError(f"context {key} must be > 0 (got {value})", "use a positive number")
        if not (self.rtt_ms >= 0 and math.isfinite(self.rtt_ms)):
            raise UsageError(f"context rtt_ms must be >= 0 (got {self.rtt_ms})", "use a non-negative number")

    def to_dict(self) -> dict[str, float]:
        return {
            "up_mbps": self.up_mbps,
            "down_mbps": self.down_mbps,
            "rtt_ms": self.rtt_ms,
            "phone_speed": self.phone_speed,
            "edge_load": self.edge_load,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Context:
        return cls(
            **{k: float(data[k]) for k in ("up_mbps", "down_mbps", "rtt_ms", "phone_speed", "edge_load")}
        )


@dataclass(frozen=True)
class ContextGrid:
    """The contexts the candidates are solved at: every combination of the values below.

    The downlink follows the uplink in the plan's own ratio (a link that slows down slows both ways).
    """

    up_mbps: tuple[float, ...] = tuple(float(x) for x in np.geomspace(0.1, 200.0, 16))
    rtt_ms: tuple[float, ...] = (2.0, 10.0, 40.0, 150.0)
    phone_speed: tuple[float, ...] = (0.5, 1.0, 2.0)
    edge_load: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)

    @property
    def size(self) -> int:
        return len(self.up_mbps) * len(self.rtt_ms) * len(self.phone_speed) * len(self.edge_load)

    def contexts(self, down_per_up: float) -> Iterable[Context]:
        for up in self.up_mbps:
            for rtt in self.rtt_ms:
                for speed in self.phone_speed:
                    for load in self.edge_load:
                        yield Context(up, up * down_per_up, rtt, speed, load)

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "up_mbps": [round(x, 6) for x in self.up_mbps],
            "rtt_ms": list(self.rtt_ms),
            "phone_speed": list(self.phone_speed),
            "edge_load": list(self.edge_load),
        }


def in_context(problem: Problem, context: Context) -> Problem:
    """``problem`` as it is in ``context``: the phone's link replaced, phone and edge compute rescaled."""
    first = replace(
        problem.links[0], up_mbps=context.up_mbps, down_mbps=context.down_mbps, rtt_ms=context.rtt_ms
    )
    layers = tuple(
        replace(la, compute_ms=(la.compute_ms[0] / context.phone_speed, la.compute_ms[1] * context.edge_load))
        for la in problem.layers
    )
    return replace(problem, layers=layers, links=(first, *problem.links[1:]))


def reference_context(problem: Problem) -> Context:
    """The plan's own context: its link, the profile's speeds."""
    link = problem.links[0]
    return Context(link.up_mbps, link.down_mbps, link.rtt_ms)


@dataclass(frozen=True)
class Piece:
    """Consecutive layers between two candidate boundaries: their compute on the phone and on the edge."""

    layers: tuple[str, ...]
    mobile_ms: float
    edge_ms: float


@dataclass(frozen=True)
class Candidate:
    """Pieces ``0..boundary-1`` on the phone, the rest beyond its link; what crosses the link each way."""

    name: str
    boundary: int
    up_bytes: int
    down_bytes: int
    optimal_in: int = 0  # how many sweep contexts this is the exact optimum of
    returns: bool = True  # some model output is made beyond the link (and comes back over it)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "boundary": self.boundary,
            "up_bytes": self.up_bytes,
            "down_bytes": self.down_bytes,
            "returns": self.returns,
            "optimal_in": self.optimal_in,
        }


@dataclass(frozen=True)
class ElasticSpec:
    """The candidates of an elastic split and what prices them (the manifest's ``elastic`` block)."""

    tiers: tuple[str, str]
    pieces: tuple[Piece, ...]
    candidates: tuple[Candidate, ...]
    reference: Context
    default: int  # index into ``candidates``: the cut the segments' tier labels follow
    grid: dict[str, Any] = field(default_factory=dict)
    dropped: tuple[dict[str, Any], ...] = ()  # optima that did not nest, and what that costs
    codec: str | None = None

    def __post_init__(self) -> None:
        if not self.candidates:
            raise UsageError("an elastic split needs at least one candidate", "split the model again")
        for c in self.candidates:
            if not 0 <= c.boundary <= len(self.pieces):
                raise UsageError(
                    f"candidate {c.name} has boundary {c.boundary} outside the pieces", "split again"
                )

    @property
    def boundaries(self) -> tuple[int, ...]:
        return tuple(c.boundary for c in self.candidates)

    def candidate_at(self, boundary: int) -> Candidate:
        for c in self.candidates:
            if c.boundary == boundary:
                return c
        raise KeyError(boundary)

    def phone_ms(self, boundary: int) -> float:
        return sum(p.mobile_ms for p in self.pieces[:boundary])

    def edge_ms(self, boundary: int) -> float:
        return sum(p.edge_ms for p in self.pieces[boundary:])

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "tiers": list(self.tiers),
            "codec": self.codec,
            "reference": self.reference.to_dict(),
            "default": self.default,
            "grid": dict(self.grid),
            "pieces": [
                {"mobile_ms": p.mobile_ms, "edge_ms": p.edge_ms, "layers": list(p.layers)}
                for p in self.pieces
            ],
            "candidates": [c.to_dict() for c in self.candidates],
            "dropped": [dict(d) for d in self.dropped],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ElasticSpec:
        if data.get("schema") != SCHEMA:
            raise UsageError(
                f"the manifest's elastic block is '{data.get('schema')}', not {SCHEMA}",
                "split the model again with this dnnsplit (split --elastic)",
            )
        try:
            pieces = tuple(
                Piece(tuple(str(n) for n in p["layers"]), float(p["mobile_ms"]), float(p["edge_ms"]))
                for p in data["pieces"]
            )
            candidates = tuple(
                Candidate(
                    str(c["name"]),
                    int(c["boundary"]),
                    int(c["up_bytes"]),
                    int(c["down_bytes"]),
                    int(c.get("optimal_in", 0)),
                    bool(c.get("returns", True)),
                )
                for c in data["candidates"]
            )
            return cls(
                tiers=(str(data["tiers"][0]), str(data["tiers"][1])),
                pieces=pieces,
                candidates=candidates,
                reference=Context.from_dict(data["reference"]),
                default=int(data["default"]),
                grid=dict(data.get("grid") or {}),
                dropped=tuple(data.get("dropped") or ()),
                codec=data.get("codec"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UsageError(
                f"the manifest's elastic block is incomplete ({exc})", "split the model again"
            ) from exc


def predict_ms(spec: ElasticSpec, candidate: Candidate, context: Context) -> float:
    """Latency of ``candidate`` in ``context``: ``evaluate``'s formula on the candidate's parts."""
    k = candidate.boundary
    total = spec.phone_ms(k) / context.phone_speed
    if k < len(spec.pieces):  # something runs beyond the link: the request crosses it and the answer returns
        total += spec.edge_ms(k) * context.edge_load + context.rtt_ms / 2
        total += candidate.up_bytes * 8.0 / (context.up_mbps * 1000.0)
        if candidate.returns:  # model outputs made beyond the link come back over it
            total += context.rtt_ms / 2 + candidate.down_bytes * 8.0 / (context.down_mbps * 1000.0)
    return total


@dataclass(frozen=True)
class Decision:
    """The candidate chosen for one request, what it is predicted to take, and what the others would."""

    candidate: Candidate
    predicted_ms: float
    context: Context
    costs: dict[str, float]  # candidate name -> predicted ms
    kept: bool = False  # hysteresis held the previous cut although another was predicted a little faster
    by: str = "exact"  # who chose: the exact optimum over the candidates, or "rl" (rl/elastic_policy.py)
    policy_layers: int | None = None  # "rl": the layers the policy's own action keeps on the phone

    def to_dict(self) -> dict[str, Any]:
        out = {
            "cut": self.candidate.name,
            "boundary": self.candidate.boundary,
            "predicted_ms": self.predicted_ms,
            "estimate": self.context.to_dict(),
            "kept_by_hysteresis": self.kept,
            "chosen_by": self.by,
        }
        if self.by == "rl":
            out["policy_layers_on_phone"] = self.policy_layers
        return out


def decide(
    spec: ElasticSpec,
    context: Context,
    allowed: Sequence[int] | None = None,
    current: int | None = None,
    hysteresis: float = 0.0,
) -> Decision:
    """The fastest candidate in ``context`` among the boundaries ``allowed`` (default: all).

    With ``current`` (the boundary the last request used) and ``hysteresis`` h > 0, the current cut is
    kept unless the best one is predicted more than h (a fraction) faster: noise in the estimate does not
    flip the cut back and forth between two that cost about the same.
    """
    pool = [c for c in spec.candidates if allowed is None or c.boundary in allowed]
    if not pool:
        raise UsageError(
            "no candidate cut is available", "serve the elastic split on the edge, or run locally"
        )
    costs = {c.name: predict_ms(spec, c, context) for c in pool}
    best = min(pool, key=lambda c: (costs[c.name], c.boundary))
    if current is not None and hysteresis > 0:
        held = next((c for c in pool if c.boundary == current), None)
        if held is not None and held is not best and costs[held.name] <= costs[best.name] * (1 + hysteresis):
            return Decision(held, costs[held.name], context, costs, kept=True)
    return Decision(best, costs[best.name], context, costs)


# --- the sweep ---------------------------------------------------------------------------------------------


def _phone_set(assignment: Sequence[int]) -> frozenset[int]:
    return frozenset(i for i, t in enumerate(assignment) if t == 0)


def sweep_candidates(
    problem: Problem,
    grid: ContextGrid | None = None,
    progress: ProgressFn = no_progress,
    default_assignment: Sequence[int] | None = None,
) -> ElasticSpec:
    """The candidates of ``problem`` (a two-tier plan's) over ``grid``; see the module doc."""
    if len(problem.tiers) != 2:
        raise UsageError(
            f"--elastic cuts between the phone and one tier; this plan has {len(problem.tiers)} tiers",
            "plan with --tiers mobile,edge (or mobile,cloud)",
        )
    grid = grid or ContextGrid()
    problem = problem.with_objective(Objective(1.0, 0.0))  # the runtime minimises each request's latency
    ref = problem.links[0]
    counts: dict[frozenset[int], int] = {}
    where: dict[frozenset[int], Context] = {}
    n = problem.n
    for i, context in enumerate(grid.contexts(ref.down_mbps / ref.up_mbps)):
        if i % 32 == 0:
            progress("solving the context sweep", i, grid.size)
        plan = solve(in_context(problem, context), with_baselines=False)
        phone = _phone_set(plan.prediction.assignment)
        counts[phone] = counts.get(phone, 0) + 1
        where.setdefault(phone, context)
    progress("solving the context sweep", grid.size, grid.size)
    everything = frozenset(range(n))
    for extreme in (frozenset(), everything):
        tiers = [0 if i in extreme else 1 for i in range(n)]
        if not hard_violations(problem, evaluate(problem, tiers)):
            counts.setdefault(extreme, 0)
    chain: list[frozenset[int]] = []
    dropped: list[dict[str, Any]] = []
    # Extremes first (they nest with everything), then the optima by how often they are optimal.
    order = sorted(counts, key=lambda s: (s not in (frozenset(), everything), -counts[s], len(s)))
    for phone in order:
        if all(phone <= kept or kept <= phone for kept in chain):
            chain.append(phone)
        else:
            dropped.append({"phone": phone, "count": counts[phone]})
    chain.sort(key=len)
    pieces_sets = [s for s in chain if s] + ([] if everything in chain else [everything])
    pieces = []
    previous: frozenset[int] = frozenset()
    for s in pieces_sets:
        layers = sorted(s - previous)
        pieces.append(
            Piece(
                tuple(problem.layers[i].name for i in layers),
                sum(problem.layers[i].compute_ms[0] for i in layers),
                sum(problem.layers[i].compute_ms[1] for i in layers),
            )
        )
        previous = s
    candidates = []
    for phone in chain:
        boundary = sum(1 for s in pieces_sets if s <= phone)
        tiers = [0 if i in phone else 1 for i in range(n)]
        traffic = evaluate(problem, tiers).links[0]
        name = ALL_EDGE if not phone else ALL_LOCAL if phone == everything else f"cut-{boundary}"
        returns = bool(traffic.down_tensors)
        candidates.append(
            Candidate(name, boundary, traffic.up_bytes, traffic.down_bytes, counts[phone], returns)
        )
    spec = ElasticSpec(
        tiers=(problem.tiers[0], problem.tiers[1]),
        pieces=tuple(pieces),
        candidates=tuple(candidates),
        reference=reference_context(problem),
        default=0,
        grid={**grid.to_dict(), "down_per_up": ref.down_mbps / ref.up_mbps, "contexts": grid.size},
    )
    notes = []
    for d in dropped:
        context = where[d["phone"]]
        tiers = [0 if i in d["phone"] else 1 for i in range(n)]
        lost = evaluate(in_context(problem, context), tiers).latency_ms
        nearest = decide(spec, context)
        notes.append(
            {
                "optimal_in": d["count"],
                "phone_layers": len(d["phone"]),
                "at": context.to_dict(),
                "optimum_ms": lost,
                "best_kept_ms": nearest.predicted_ms,
                "best_kept": nearest.candidate.name,
            }
        )
    # The plan's own cut labels the segments when it is a candidate; else the best one in the plan's context.
    default = candidates.index(decide(spec, spec.reference).candidate)
    if default_assignment is not None:
        wanted = _phone_set(problem.tiers_of(default_assignment))
        default = next((k for k, s in enumerate(chain) if s == wanted), default)
    return replace(spec, default=default, dropped=tuple(notes))


def piece_of_layer(problem: Problem, spec: ElasticSpec) -> dict[str, int]:
    """Piece index of every layer (row) of ``problem``."""
    found = {name: k for k, piece in enumerate(spec.pieces) for name in piece.layers}
    missing = [la.name for la in problem.layers if la.name not in found]
    if missing:
        raise UsageError(f"layer '{missing[0]}' is in no piece", "sweep the same plan that you split")
    return found
