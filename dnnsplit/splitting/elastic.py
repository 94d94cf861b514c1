"""``split --elastic``: one deployment that supports every candidate cut of a plan's context sweep.

The plan's problem is solved over a sweep of contexts (``partition.elastic.sweep_candidates``); the model
is cut at every candidate boundary into consecutive pieces, written as the split's segments, each layer in
exactly one of them. A candidate runs pieces ``0..boundary-1`` on the phone and the rest on the edge, which
holds every piece and so can start at any candidate boundary. The pieces' tiers in the manifest follow
the default candidate (the plan's own cut when it is one), so ``run``, ``serve`` and ``infer`` without the
elastic client read the directory as an ordinary split at that cut. Validation runs every candidate's
chain, from the tensors that cross its boundary alone, against the whole model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.partition.elastic import ContextGrid, ElasticSpec, piece_of_layer, sweep_candidates
from dnnsplit.partition.plan_file import PlanFile
from dnnsplit.progress import ProgressFn, no_progress
from dnnsplit.splitting.cuts import segments_from_tiers
from dnnsplit.splitting.split import (
    SplitResult,
    SplitSettings,
    check_plan_model,
    layer_labels,
    plan_origin,
    split_model,
)


def elastic_candidates(
    plan_file: PlanFile,
    grid: ContextGrid | None = None,
    progress: ProgressFn = no_progress,
    codec: str | None = None,
) -> ElasticSpec:
    """The candidates of the plan's problem over ``grid``, the plan's own cut as the default."""
    spec = sweep_candidates(plan_file.problem, grid, progress, default_assignment=plan_file.assignment)
    return replace(spec, codec=codec)


def split_elastic(
    prepared: Any,
    output: Path,
    settings: SplitSettings,
    plan: Path,
    plan_file: PlanFile,
    grid: ContextGrid | None = None,
    progress: ProgressFn = no_progress,
) -> SplitResult:
    """Split a PreparedModel into the pieces of the plan's candidate cuts (see the module doc)."""
    check_plan_model(plan_file, prepared.exported.sha256)
    spec = elastic_candidates(plan_file, grid, progress, settings.compress)
    piece_of = layer_labels(prepared.graph, plan_file, piece_of_layer(plan_file.problem, spec))
    segment_of = segments_from_tiers(prepared.graph, piece_of)
    if len(set(segment_of.values())) != len(spec.pieces):
        raise UsageError(
            f"the plan's layers make {len(spec.pieces)} pieces but the model's graph "
            f"{len(set(segment_of.values()))}",
            "plan the same model (and --group) that you split",
        )
    default = spec.candidates[spec.default].boundary
    phone, beyond = spec.tiers
    tiers = [phone if k < default else beyond for k in range(len(spec.pieces))]
    origin = plan_origin(plan, plan_file)  # the plan's coding too: every piece boundary is sent with it
    return split_model(
        prepared.exported.path,
        prepared.graph,
        segment_of,
        tiers,
        prepared.model_block(),
        origin,
        output,
        settings,
        progress,
        elastic=spec.to_dict(),
    )
