"""Where a layer graph can be cut: boundaries (sets of crossing tensors), their checks, and segments.

A boundary is the set of tensors that cross it. Its *upstream* side is every layer needed to compute those
tensors from the model input; the rest is downstream. It separates the graph when every tensor that a
downstream layer reads from the upstream side (or from the model input) is one of the crossing tensors:
then the downstream side runs on the crossing tensors alone. A cut inside a residual block that names the
main path but not the skip path does not separate the graph; the error names the skip tensor.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dnnsplit.errors import UsageError
from dnnsplit.profiling.graph import LayerGraph


@dataclass(frozen=True)
class Cut:
    """A boundary after layer ``position`` (topological order): the tensors crossing it and their bytes."""

    position: int
    after: str  # the last layer before the boundary
    tensors: tuple[str, ...]
    bytes: int  # per sample


def prefix_cuts(graph: LayerGraph) -> list[Cut]:
    """Every cut after a prefix of the layers (topological order), each distinct set of tensors once.

    A topological prefix always separates the graph, so these are all valid; a cut that reads the same
    tensors as an earlier one (e.g. after a Shape op) is listed once, at its first position.
    """
    last_use: dict[str, int] = {}
    for i, layer in enumerate(graph.layers):
        for name in layer.inputs:
            last_use[name] = i
    live = [t.name for t in graph.inputs if t.name in last_use]
    cuts: list[Cut] = []
    seen: set[tuple[str, ...]] = set()
    for i, layer in enumerate(graph.layers[:-1]):
        live.extend(t.name for t in layer.outputs)
        # A tensor crosses while a later layer reads it (a model output made before the cut is a result
        # of the first segment, not something sent on).
        live = [name for name in live if last_use.get(name, -1) > i]
        key = tuple(live)
        if key in seen or not key:
            continue
        seen.add(key)
        cuts.append(Cut(i, layer.name, key, sum(graph.tensors[name].bytes for name in key)))
    return cuts


def upstream_layers(graph: LayerGraph, tensors: Sequence[str]) -> set[str]:
    """Names of the layers needed to compute ``tensors`` from the model inputs."""
    producer = graph.producer
    seen: set[str] = set()
    stack = [producer[t] for t in tensors if t in producer]
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        stack.extend(producer[i] for i in graph.by_name[name].inputs if i in producer)
    return seen


def check_cut(graph: LayerGraph, tensors: Sequence[str], label: str = "the cut") -> set[str]:
    """The upstream layers of a boundary, after checking that it separates the graph (else UsageError)."""
    if not tensors:
        raise UsageError(f"{label} names no tensor", "give comma-separated tensor names; see `dnnsplit cuts`")
    known = graph.tensors
    for name in tensors:
        if name not in known:
            close = difflib.get_close_matches(name, list(known), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise UsageError(
                f"{label} names unknown tensor '{name}'",
                f"{hint}`dnnsplit cuts MODEL` lists the valid cuts and their tensors",
            )
    upstream = upstream_layers(graph, tensors)
    if not upstream:
        raise UsageError(f"{label} leaves nothing before it", "cut after at least one layer")
    downstream = [layer for layer in graph.layers if layer.name not in upstream]
    if not downstream:
        raise UsageError(f"{label} leaves nothing after it", "cut before the last layer")
    crossing = set(tensors)
    inputs = {t.name for t in graph.inputs}
    missing: list[str] = []
    for layer in downstream:
        for name in layer.inputs:
            from_before = name in inputs or graph.producer.get(name) in upstream
            if from_before and name not in crossing and name not in missing:
                missing.append(name)
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise UsageError(
            f"{label} does not separate the graph: layers after it also read {shown} from before it",
            f"add them to the cut (--cut {','.join([*tensors, *missing])}) or pick one from `dnnsplit cuts`",
        )
    return upstream


def segments_from_cuts(graph: LayerGraph, cuts: Sequence[Sequence[str]]) -> dict[str, int]:
    """Segment index (0-based) of every layer for boundaries given in order; each must lie after the last."""
    sides = [check_cut(graph, c, label=f"cut {k + 1} ({','.join(c)})") for k, c in enumerate(cuts)]
    for k in range(1, len(sides)):
        if not sides[k - 1] < sides[k]:
            raise UsageError(
                f"cut {k + 1} does not lie after cut {k}: each --cut must leave more layers before it",
                "give the cuts in the order the data flows",
            )
    segment = {}
    for layer in graph.layers:
        segment[layer.name] = next((k for k, side in enumerate(sides) if layer.name in side), len(sides))
    return segment


def segments_from_tiers(graph: LayerGraph, tier_of_layer: Mapping[str, int]) -> dict[str, int]:
    """Segment index of every layer from tier indices (0 = mobile): one segment per used tier, in order."""
    missing = [layer.name for layer in graph.layers if layer.name not in tier_of_layer]
    if missing:
        raise UsageError(
            f"the plan assigns no tier to layer '{missing[0]}' ({len(missing)} layers missing)",
            "plan the same model (and --group) that you split",
        )
    used = sorted({tier_of_layer[layer.name] for layer in graph.layers})
    rank = {t: k for k, t in enumerate(used)}
    return {layer.name: rank[tier_of_layer[layer.name]] for layer in graph.layers}
