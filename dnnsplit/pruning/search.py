"""Latency-aware channel pruning: NetAdapt/HALP-style greedy steps against an end-to-end latency target.

Every step scores each channel group by *predicted latency saved per unit of importance lost* and
removes one to four units (a unit is 1/8 of its channels) from the best group:

* latency saved: the end-to-end latency of the current plan minus that of the same plan with the group
  one unit smaller, both from the predicted profile (measured profile x latency-table ratios). A layer
  the plan runs on the edge saves its edge time only, one on the phone its phone time (x its latency
  scale), so with an edge tier the search prunes where the phone computes: the partition is in the score;
* importance lost: first-order Taylor importance (|w * dL/dw| summed over the coupled weights) of the
  channels that would go, on a few training batches of the current model.

After a step the plan is solved again (pruning moves the best cut). When the predicted latency meets a
target, the model is measured; a target is only reached once the *measured* figure meets it, otherwise
the search goes on pruning.

Predictions are anchored on the latest measurement, not only on the unpruned model's (NetAdapt measures
every candidate; this measures every ``REANCHOR`` of predicted progress). The table times each conv alone,
with its weights hot in cache; inside a model they compete with every other layer's, and a model that
shrinks into the L3 cache speeds up in layers that were never pruned (resnet18 at 32x32: 45 MB of weights
unpruned, 8 MB at a third of the latency; its unpruned layer1 convs ran 24% faster). Anchored on the
unpruned model alone the prediction was 30-40% pessimistic midway; re-anchored, the table only has to be
right about the last step's difference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from dnnsplit.partition.evaluate import evaluate
from dnnsplit.partition.network import LinkSpec
from dnnsplit.profiling.profile import Profile
from dnnsplit.progress import ProgressFn, no_progress
from dnnsplit.pruning.context import Context
from dnnsplit.pruning.latency_table import ConvShape
from dnnsplit.pruning.measure import Measured
from dnnsplit.pruning.predict import Predictor
from dnnsplit.pruning.structure import ChannelGroup, Prunable

# Predicted latency must sit this far under a target before measuring: the measurement has noise.
MARGIN = 0.97
# Measure again (and predict from there) once the predicted latency has fallen this far below the last
# measured one.
REANCHOR = 0.85
REANCHOR_PARAMS = 0.9  # ... or once the weights have shrunk this far: the L3 cache effect follows bytes
MAX_UNITS = 4  # largest step tried per group, in units

# (prunable model) -> the model as it is now, exported and measured on the target runtime
MeasureFn = Callable[[Prunable], Measured]
# (prunable model, its measurement, the profile predicted before measuring, target_ms): a target reached
ReachedFn = Callable[[Prunable, Measured, Profile, float], None]


@dataclass
class SearchStep:
    group: str
    removed: int
    kept: int
    saved_ms: float
    importance: float
    latency_ms: float  # predicted end to end after the step


@dataclass
class SearchResult:
    reached: list[float] = field(default_factory=list)
    missed: list[float] = field(default_factory=list)
    steps: list[SearchStep] = field(default_factory=list)
    final_ms: float = float("nan")
    measurements: int = 0  # models exported and measured on the way


def max_pruned_shapes(prunable: Prunable) -> dict[str, ConvShape]:
    """Every group at its smallest level, predicted without touching the model."""
    shapes = prunable.conv_shapes()
    for g in prunable.groups:
        remove = g.kept - g.unit
        if remove > 0:
            shapes = prunable.shapes_after(g, remove, shapes)
    return shapes


def taylor_scores(
    prunable: Prunable, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]
) -> dict[str, torch.Tensor]:
    """First-order Taylor importance of every channel of every group, on ``batches``."""
    tp = prunable.tp
    model = prunable.model
    model.eval()  # batch-norm running statistics stay as trained
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        for images, labels in batches:
            F.cross_entropy(model(images), labels).backward()
    scorer = tp.importance.GroupTaylorImportance(group_reduction="sum", normalizer=None)
    scores = {g.root: prunable.importance(g, scorer) for g in prunable.groups if g.can_shrink}
    model.zero_grad(set_to_none=True)
    return scores


def search(
    prunable: Prunable,
    predictor: Predictor,
    context: Context,
    targets: Sequence[float],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    measure: MeasureFn,
    reached: ReachedFn,
    network: LinkSpec | None = None,
    scale: float = 1.0,
    progress: ProgressFn | None = None,
) -> SearchResult:
    """Prune ``prunable`` step by step until every target (ms, end to end) is met, tightest last.

    ``predictor`` is anchored on a measurement of ``prunable`` as it is now (the unpruned model's).
    """
    note = progress or no_progress
    pending = sorted(set(float(t) for t in targets), reverse=True)
    result = SearchResult()
    shapes = prunable.conv_shapes()
    profile = predictor.predict(shapes)
    plan = context.best(profile, network, scale)
    anchor_ms = plan.latency_ms
    anchor_params = _params(prunable)
    measured: Measured | None = None  # of the model as it is now, once taken
    total_steps = sum(g.channels // g.unit - 1 for g in prunable.groups)
    while pending:
        due = (
            plan.latency_ms <= pending[0] * MARGIN
            or plan.latency_ms < anchor_ms * REANCHOR
            or _params(prunable) < anchor_params * REANCHOR_PARAMS
        )
        if due and measured is None:
            predicted = profile  # what the table said before measuring: the variant's prediction
            measured = measure(prunable)
            result.measurements += 1
            predictor = predictor.rebased(measured, shapes)
            profile = measured.profile
            plan = context.best(profile, network, scale)
            anchor_ms = plan.latency_ms
            anchor_params = _params(prunable)
        if measured is not None:
            if plan.latency_ms <= pending[0]:
                reached(prunable, measured, predicted, pending[0])
                result.reached.append(pending.pop(0))
                continue
            if due:
                note(f"measured {plan.latency_ms:.2f} ms > {pending[0]:g} ms: pruning on", 0, 1, "")
        scores = taylor_scores(prunable, batches)
        best: tuple[float, ChannelGroup, list[int], float, float] | None = None
        for g in prunable.groups:
            channel_scores = scores.get(g.root)
            if channel_scores is None:
                continue
            ranked = torch.argsort(channel_scores)
            # Several step sizes: one unit can land on a channel count the runtime handles worse (60 of
            # 64 is often slower than 64); the table sees that, and a bigger step reaches a faster count.
            for k in range(1, MAX_UNITS + 1):
                remove = k * g.unit
                if g.kept - remove < g.unit:
                    break
                order = ranked[:remove]
                lost = float(channel_scores[order].sum())
                trial = predictor.predict(prunable.shapes_after(g, remove, shapes))
                saved = (
                    plan.latency_ms
                    - evaluate(context.problem(trial, network, scale), plan.assignment).latency_ms
                )
                if saved <= 0:
                    continue
                # Importance is >= 0; the floor keeps a free step (zero importance) from dividing by zero.
                score = saved / (lost + 1e-12)
                if best is None or score > best[0]:
                    best = (score, g, sorted(int(i) for i in order), saved, lost)
        if best is None:
            break  # every group at its smallest level, or nothing left that saves time
        _, g, idxs, saved, lost = best
        prunable.prune(g, idxs)
        measured = None
        shapes = prunable.conv_shapes()
        profile = predictor.predict(shapes)
        plan = context.best(profile, network, scale)
        result.steps.append(SearchStep(g.root, len(idxs), g.kept, saved, lost, plan.latency_ms))
        note(
            f"pruning: {plan.latency_ms:.2f} ms predicted, next target {pending[0]:g} ms",
            len(result.steps),
            total_steps,
            "",
        )
    result.missed = pending
    result.final_ms = plan.latency_ms
    return result


def _params(prunable: Prunable) -> int:
    return sum(p.numel() for p in prunable.model.parameters())
