"""``make_variants`` (``dnnsplit prune MODEL``); ``add_from_misses`` (``dnnsplit prune DIR --from-misses``).

Stages: measure the unpruned model (ONNX profile + whole-model time), check the budgets against what
maximum pruning could reach, run the latency-aware search once through the budgets (tightest last), and
optionally the uniform baseline per budget; fine-tune every variant by distillation, evaluate it on the
test split, export, and plan it for every network preset. Everything is written to a staging folder
and moved into place at the end (variants.yaml last), so an error or Ctrl-C leaves nothing half-written.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnnsplit.errors import UsageError
from dnnsplit.limits import check_threads
from dnnsplit.models.checkpoint import changed_attributes, channel_attributes, write_checkpoint
from dnnsplit.models.export import model_fingerprint
from dnnsplit.models.loading import LoadedModel, arch_reference
from dnnsplit.output_dir import VARIANTS, claim, staged
from dnnsplit.partition.network import LinkSpec, parse_link
from dnnsplit.profiling.profile import Profile
from dnnsplit.progress import ProgressFn, no_progress
from dnnsplit.pruning.baseline import RATIOS, uniform
from dnnsplit.pruning.context import PLANNED_NETWORKS, Context
from dnnsplit.pruning.finetune import FinetuneSettings, finetune, test_accuracy
from dnnsplit.pruning.latency_table import ConvShape, LatencyTable, channel_block
from dnnsplit.pruning.measure import Measured, export_to, measure
from dnnsplit.pruning.plans import plan_lines
from dnnsplit.pruning.predict import Predictor
from dnnsplit.pruning.search import MARGIN, max_pruned_shapes, search
from dnnsplit.pruning.select import read_misses, write_misses
from dnnsplit.pruning.structure import Prunable, conv_shapes
from dnnsplit.pruning.variants import FILE, NetworkPlan, Variant, VariantLatency, VariantsFile
from dnnsplit.training.data import DataSplits, check_classes

CALIBRATION_BATCHES = 2  # training batches the Taylor importance is taken on, per step


@dataclass(frozen=True)
class PruneSettings:
    budgets: tuple[float, ...] | None = None
    levels: int | None = None
    baseline: str | None = None  # "uniform"
    finetune: FinetuneSettings = FinetuneSettings()
    threads: int = 1
    repeat: int = 20
    force: bool = False

    def check(self) -> None:
        if (self.budgets is None) == (self.levels is None):
            raise UsageError("pass either --budgets or --levels", "e.g. --budgets 10,20,40 or --levels 4")
        if self.levels is not None and not 1 <= self.levels <= 12:
            raise UsageError(f"--levels must be 1 to 12 (got {self.levels})", "pass --levels 4, say")
        for b in self.budgets or ():
            if not (b > 0 and math.isfinite(b)):
                raise UsageError(
                    f"budgets must be positive numbers of ms (got {b:g})", "e.g. --budgets 10,20,40"
                )
        if self.baseline not in (None, "uniform"):
            raise UsageError(f"unknown --baseline '{self.baseline}'", "use --baseline uniform")
        if self.finetune.epochs < 0:
            raise UsageError(f"--epochs must be >= 0 (got {self.finetune.epochs})", "pass --epochs 5, say")
        if not self.finetune.lr > 0:
            raise UsageError(f"--lr must be > 0 (got {self.finetune.lr})", "pass --lr 0.01, say")
        if self.threads < 1 or self.repeat < 1:
            raise UsageError("--threads and --repeat must be at least 1", "pass --threads 1")
        check_threads(self.threads)


def parse_budgets(text: str) -> tuple[float, ...]:
    """``10,20,40`` -> (10.0, 20.0, 40.0); every value a positive number of ms."""
    values = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            raise UsageError(f"budget '{item}' is not a number", "write ms like --budgets 10,20,40") from None
        if not (value > 0 and math.isfinite(value)):
            raise UsageError(f"budget '{item}' is not a positive number of ms", "write --budgets 10,20,40")
        values.append(value)
    if not values:
        raise UsageError(f"no budgets in '{text}'", "write --budgets 10,20,40")
    return tuple(sorted(set(values)))


@dataclass
class _Built:
    """A pruned (or the original) model on its way to becoming a Variant."""

    name: str
    method: str
    module: nn.Module
    measured: Measured
    predicted_host_ms: float
    target: dict[str, Any] | None


class _Job:
    """What every variant of one model shares: the model, data, context, table and staging folder."""

    def __init__(
        self,
        loaded: LoadedModel,
        data: DataSplits,
        context: Context,
        settings: PruneSettings,
        staging: Path,
        note: ProgressFn,
    ) -> None:
        assert loaded.module is not None and loaded.input_shape is not None
        self.loaded, self.data, self.context, self.settings = loaded, data, context, settings
        self.staging, self.note = staging, note
        self.shape = tuple(int(v) for v in loaded.input_shape)
        self.example = torch.zeros(self.shape)
        self.teacher = loaded.module.eval()
        with torch.no_grad():
            self.num_classes = int(self.teacher(torch.zeros((2, *self.shape[1:]))).shape[1])
        check_classes(data, self.num_classes)
        self.original_attrs = channel_attributes(self.teacher)
        self.table = LatencyTable(settings.threads)
        self.batches = _batches(data, CALIBRATION_BATCHES)
        self.skipped: dict[str, str] = {}
        self.closest_ms = math.inf  # the lowest end-to-end latency measured so far
        self.scratch = 0  # models measured on the way
        # The baseline per ratio, measured once (models are rebuilt when chosen: 18 resnet50s do not fit).
        self.uniform_measured: dict[float, tuple[dict[str, ConvShape], Measured]] = {}
        self.kept: dict[Path, Path] = {}  # scratch file -> the variant file it became first

    def measure(self, module: nn.Module, name: str) -> Measured:
        return measure(
            self.loaded, module, self.staging / f"{name}.onnx", self.settings.threads, self.settings.repeat
        )

    def prunable(self) -> Prunable:
        prunable = Prunable(copy.deepcopy(self.teacher), self.example, self.num_classes)
        self.skipped = prunable.skipped
        if not prunable.groups:
            raise UsageError(
                f"torch-pruning finds no channel group of {self.loaded.source} it can prune",
                "prune a CNN with prunable convolutions",
            )
        return prunable

    def measure_scratch(
        self, module: nn.Module, network: LinkSpec | None = None, scale: float = 1.0
    ) -> Measured:
        """Measure a model on the way (it may become no variant); ``keep`` gives it its variant's name."""
        self.scratch += 1
        m = self.measure(module, f"_measured-{self.scratch}")
        self.closest_ms = min(self.closest_ms, self.context.best(m.profile, network, scale).latency_ms)
        return m

    def keep(self, m: Measured, name: str) -> Measured:
        """``m`` as the variant ``name``: its scratch file renamed, or copied when the same model already
        became a variant (one model that met two budgets)."""
        path = self.staging / f"{name}.onnx"
        if m.path in self.kept:
            shutil.copyfile(self.kept[m.path], path)
        else:
            os.replace(m.path, path)
            self.kept[m.path] = path
        profile = replace(m.profile, model={**m.profile.model, "onnx": str(path)})
        return replace(m, path=path, profile=profile)

    def latency_aware(
        self,
        original: Measured,
        budgets: Sequence[float],
        network: LinkSpec | None = None,
        scale: float = 1.0,
        names: Callable[[float], str] | None = None,
    ) -> tuple[list[_Built], list[float]]:
        prunable = self.prunable()
        predictor = Predictor(original.profile, prunable.full_shapes, self.table, original.latency_ms)
        built: list[_Built] = []
        net_name = (network or self.context.network).name

        def reached(p: Prunable, m: Measured, predicted: Profile, target: float) -> None:
            name = names(target) if names else f"lat-{target:g}ms"
            built.append(
                _Built(
                    name,
                    "latency-aware",
                    copy.deepcopy(p.model),
                    self.keep(m, name),
                    predicted.latency_ms,
                    {"budget_ms": target, "network": net_name, "device_scale": scale},
                )
            )

        result = search(
            prunable,
            predictor,
            self.context,
            budgets,
            self.batches,
            lambda p: self.measure_scratch(p.model, network, scale),
            reached,
            network,
            scale,
            self.note,
        )
        self.table.save()
        return built, result.missed

    def uniform_for(self, original: Measured, target: float) -> _Built | None:
        """The smallest global ratio whose measured latency meets ``target``; None if none does.

        Every ratio of ``RATIOS`` in order, each measured once per job (budgets share them). Not a
        bisection and not skipped by the table's prediction: latency is not monotone in the ratio. Off
        the runtime's channel block a ratio can be slower than a larger one, or than the unpruned model
        (resnet18 at 32x32: 2.73 ms at 0.05, 0.87 ms unpruned, 0.39 ms at 0.25, 1.37 ms at 0.30). The
        variant's prediction is the table's, anchored on the ratio one step less pruned (on the unpruned
        model at the first ratio).
        """
        prunable = self.prunable()
        spatial = prunable.spatial
        anchor, anchor_shapes = original, prunable.full_shapes
        for ratio in RATIOS:
            if ratio not in self.uniform_measured:
                module = uniform(self.teacher, self.example, self.num_classes, ratio)
                self.uniform_measured[ratio] = (conv_shapes(module, spatial), self.measure_scratch(module))
            shapes, m = self.uniform_measured[ratio]
            if self.context.best(m.profile).latency_ms <= target:
                module = uniform(self.teacher, self.example, self.num_classes, ratio)
                assert conv_shapes(module, spatial) == shapes  # magnitude pruning is deterministic
                predictor = Predictor(anchor.profile, anchor_shapes, self.table, anchor.latency_ms)
                predicted = predictor.host_ms(shapes)
                self.table.save()
                name = f"uni-{target:g}ms"
                network = self.context.network.name
                spec = {"budget_ms": target, "network": network, "device_scale": 1.0, "ratio": ratio}
                return _Built(name, "uniform", module, self.keep(m, name), predicted, spec)
            anchor, anchor_shapes = m, shapes
        self.table.save()
        return None

    def finish(self, built: _Built) -> Variant:
        """Fine-tune (not the original), evaluate, export, save the checkpoint and plan every network."""
        info: dict[str, Any] = {}
        if built.method != "original" and self.settings.finetune.epochs > 0:
            self.note(f"fine-tuning {built.name}", 0, 1, "")
            info = finetune(
                built.module,
                self.teacher,
                self.data,
                self.settings.finetune,
                progress=lambda stage, done, total, detail="": self.note(
                    f"{built.name} {stage}", done, total, detail
                ),
            )
            export_to(self.loaded, built.module, built.measured.path)  # same shapes: the profile still holds
        acc, val = test_accuracy(built.module, self.data)
        checkpoint = self.staging / f"{built.name}.pt"
        write_checkpoint(
            checkpoint,
            built.module,
            self.arch,
            self.num_classes,
            self.shape,
            pruned=changed_attributes(built.module, self.original_attrs),
            extra={"data": self.data.source, "test_accuracy": acc},
        )
        profile_file = self.staging / f"{built.name}.profile.json"
        built.measured.profile.save(profile_file)
        m = built.measured
        edge = self.context.edge
        latency = VariantLatency(
            host_ms=m.latency_ms,
            predicted_host_ms=built.predicted_host_ms,
            threads=self.settings.threads,
            mobile_ms=m.latency_ms * self.context.device.latency_scale,
            end_to_end_ms=self.context.best(m.profile).latency_ms,
            edge_ms=None if edge is None else m.latency_ms * edge.latency_scale,
        )
        return Variant(
            name=built.name,
            method=built.method,
            file=f"{built.name}.onnx",
            checkpoint=checkpoint.name,
            profile=profile_file.name,
            target=built.target,
            ratios=_ratios(built.module, self.original_attrs),
            macs=m.profile.total_macs,
            params=m.profile.total_params,
            size_bytes=os.path.getsize(m.path),
            accuracy=acc,
            val_accuracy=val,
            latency=latency,
            plans=network_plans(self.context, m.profile),
            finetune=info,
            unpruned=[f"{k}: {v}" for k, v in sorted(self.skipped.items())]
            if built.method != "original"
            else [],
        )

    arch: str = ""


def network_plans(context: Context, profile: Profile) -> dict[str, NetworkPlan]:
    plans = {}
    for network in PLANNED_NETWORKS:
        link = parse_link(network)
        best = context.best(profile, link, 1.0)
        plans[network] = NetworkPlan(
            latency_ms=best.latency_ms,
            energy_mj=float(best.energy_mj or 0.0),
            mobile_layers=best.layers_per_tier.get("mobile", 0),
            cut=[t.name for t in best.links[0].up_tensors] if best.links else [],
            lines=plan_lines(context, profile, link),
        )
    return plans


def _ratios(module: nn.Module, original: dict[str, dict[str, int]]) -> dict[str, float]:
    now = channel_attributes(module)
    result = {}
    for name, attrs in original.items():
        if isinstance(module.get_submodule(name), nn.Conv2d) and now[name] != attrs:
            result[name] = round(1 - now[name]["out_channels"] / attrs["out_channels"], 4)
    return result


def _batches(data: DataSplits, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    batches = []
    for images, labels in data.loader("train", 64, shuffle=True):
        batches.append((images, labels))
        if len(batches) >= count:
            break
    return batches


def _check_output(directory: Path, force: bool, fingerprint: str) -> None:
    try:
        claim(directory, VARIANTS, force)
    except UsageError:
        if force or not (directory / FILE).is_file():
            raise
        held = VariantsFile.load(directory)
        if held.model.get("fingerprint") != fingerprint:
            raise UsageError(
                f"output '{directory}' holds variants of another model ({held.model.get('source')})",
                "pick a new directory or pass --force to replace them",
            ) from None
        raise UsageError(
            f"output '{directory}' already holds variants of this model",
            "pass --force to replace them, or add variants with dnnsplit prune DIR --from-misses",
        ) from None


def make_variants(
    loaded: LoadedModel,
    data: DataSplits,
    directory: str | Path,
    context: Context,
    settings: PruneSettings,
    model_meta: dict[str, Any],
    progress: ProgressFn | None = None,
) -> VariantsFile:
    """Prune ``loaded`` for ``context``; write DIR (variants.yaml, ONNX files, checkpoints, profiles)."""
    settings.check()
    module = loaded.torch_module("pruning")
    shape = loaded.known_input_shape()
    note = progress or no_progress
    directory = Path(directory)
    fingerprint = model_fingerprint(module.eval(), shape)
    _check_output(directory, settings.force, fingerprint)
    with staged(directory, VARIANTS, settings.force) as staging:
        job = _Job(loaded, data, context, settings, staging, note)
        job.arch = arch_reference(loaded)
        note("measuring the unpruned model", 0, 1, "")
        original = job.measure(job.teacher, "original")
        full_ms = context.best(original.profile).latency_ms
        prunable = job.prunable()
        predictor = Predictor(original.profile, prunable.full_shapes, job.table)
        note("measuring the latency table at maximum pruning", 0, 1, "")
        floor_ms = context.best(predictor.predict(max_pruned_shapes(prunable))).latency_ms
        job.table.save()
        budgets = _budgets(settings, floor_ms, full_ms)
        built = [_Built("original", "original", job.teacher, original, original.latency_ms, None)]
        aware, missed = job.latency_aware(original, [b for b in budgets if b < full_ms])
        if missed and settings.levels is None:
            raise UsageError(
                f"no pruned variant meets {min(missed):g} ms when measured (the closest measured: "
                f"{job.closest_ms:.3g} ms; maximum pruning predicts {floor_ms:.3g} ms)",
                f"pass budgets of at least {job.closest_ms:.3g} ms",
            )
        built += aware
        if settings.baseline == "uniform":
            for b in aware:
                target = float((b.target or {})["budget_ms"])
                note(f"uniform baseline for {target:g} ms", 0, 1, "")
                base = job.uniform_for(original, target)
                if base is not None:
                    built.append(base)
        variants = [job.finish(b) for b in built]
        document = VariantsFile(
            model={
                **model_meta,
                "fingerprint": fingerprint,
                "input_shape": list(shape),
                "num_classes": job.num_classes,
            },
            data=str(data.source),
            context=context,
            settings={
                "threads": settings.threads,
                "repeat": settings.repeat,
                "budgets_ms": list(budgets),
                "missed_budgets_ms": list(missed),  # --levels only: measured above the level, dropped
                "max_pruning_ms": floor_ms,
                "unpruned_ms": full_ms,
                "finetune": vars(settings.finetune),
                "latency_table_entries": len(job.table.entries),
                "channel_block": channel_block(),
            },
            variants=variants,
        )
        keep = {FILE} | {name for v in variants for name in (v.file, v.checkpoint, v.profile)}
        for path in staging.iterdir():  # models measured on the way that became no variant
            if path.name not in keep:
                path.unlink()
        (staging / FILE).write_text(document.dump(), encoding="utf-8")
    return document


def _budgets(settings: PruneSettings, floor_ms: float, full_ms: float) -> list[float]:
    if settings.levels is not None:
        lo, hi = floor_ms / MARGIN * 1.15, full_ms * 0.95
        if lo >= hi:
            raise UsageError(
                f"pruning can save little here: {full_ms:.3g} ms unpruned, "
                f"{floor_ms:.3g} ms at maximum pruning",
                "pass --budgets, or a context where the phone computes (--network cat1, --edge none)",
            )
        n = settings.levels
        return (
            [round(lo * (hi / lo) ** (k / max(n - 1, 1)), 3) for k in range(n)] if n > 1 else [round(lo, 3)]
        )
    budgets = list(settings.budgets or ())
    too_tight = [b for b in budgets if b < floor_ms / MARGIN]
    if too_tight:
        raise UsageError(
            f"budget {min(too_tight):g} ms is out of reach: even maximum pruning predicts {floor_ms:.3g} ms "
            f"(unpruned {full_ms:.3g} ms)",
            f"pass budgets of at least {floor_ms / MARGIN:.3g} ms",
        )
    return budgets


@dataclass(frozen=True)
class MissOutcome:
    added: list[str]
    unreachable: list[dict[str, Any]]


def add_from_misses(
    directory: str | Path,
    load: Callable[[VariantsFile], tuple[LoadedModel, DataSplits]],
    settings: PruneSettings,
    progress: ProgressFn | None = None,
) -> MissOutcome:
    """A variant for every context recorded in DIR/misses.yaml (DeepAdapter's cache-miss loop)."""
    directory = Path(directory)
    note = progress or no_progress
    document = VariantsFile.load(directory)
    misses = read_misses(directory)
    if not misses:
        return MissOutcome([], [])
    loaded, data = load(document)
    shape = loaded.known_input_shape()
    fingerprint = model_fingerprint(loaded.torch_module("pruning").eval(), shape)
    if fingerprint != document.model.get("fingerprint"):
        raise UsageError(
            f"{directory} was pruned from another model than {loaded.source} holds now",
            "prune it again with dnnsplit prune MODEL --output NEW_DIR",
        )
    original_variant = next((v for v in document.variants if v.method == "original"), None)
    if original_variant is None:
        raise UsageError(f"{directory}/{FILE} lacks the original model", "prune again")
    original = Measured(
        directory / original_variant.file,
        Profile.load(directory / original_variant.profile),
        original_variant.latency.host_ms,
    )
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=directory))
    added: list[Variant] = []
    served: list[tuple[str, float, float]] = []
    unreachable: list[dict[str, Any]] = []
    try:
        job = _Job(loaded, data, document.context, settings, staging, note)
        job.arch = str(document.model.get("arch") or arch_reference(loaded))
        taken = document.names()
        for miss in misses:
            network, scale, budget = (
                str(miss["network"]),
                float(miss["device_scale"]),
                float(miss["budget_ms"]),
            )
            key = (network, scale, budget)
            link = parse_link(network)
            prunable = job.prunable()
            predictor = Predictor(original.profile, prunable.full_shapes, job.table)
            floor_ms = document.context.best(
                predictor.predict(max_pruned_shapes(prunable)), link, scale
            ).latency_ms
            if budget < floor_ms / MARGIN:
                unreachable.append({**miss, "unreachable": True, "closest_ms": round(floor_ms, 3)})
                continue

            def name_for(target: float, network: str = network, scale: float = scale) -> str:
                base = f"lat-{target:g}ms-{network.replace('=', '').replace(',', '-')}-x{scale:g}"
                name, k = base, 2
                while name in taken:
                    name, k = f"{base}-{k}", k + 1
                return name

            built, missed = job.latency_aware(original, [budget], link, scale, name_for)
            if missed or not built:
                unreachable.append({**miss, "unreachable": True, "closest_ms": round(floor_ms, 3)})
                continue
            variant = job.finish(built[0])
            added.append(variant)
            taken.add(variant.name)
            served.append(key)
        document.variants += added
        for v in added:
            for suffix in (v.file, v.checkpoint, v.profile):
                os.replace(staging / suffix, directory / suffix)
        (staging / FILE).write_text(document.dump(), encoding="utf-8")
        os.replace(staging / FILE, directory / FILE)  # the variants appear together, with variants.yaml
        _drop_served(directory, served, unreachable)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return MissOutcome([v.name for v in added], unreachable)


def _drop_served(
    directory: Path, served: list[tuple[str, float, float]], unreachable: list[dict[str, Any]]
) -> None:
    import fcntl

    with open(directory / ".misses.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        flagged = {(m["network"], float(m["device_scale"]), float(m["budget_ms"])): m for m in unreachable}
        remaining = []
        for m in read_misses(directory):  # read again: a selector may have added misses meanwhile
            key = (m["network"], float(m["device_scale"]), float(m["budget_ms"]))
            if key in served:
                continue
            remaining.append(
                {**m, **{k: flagged[key][k] for k in ("unreachable", "closest_ms")}} if key in flagged else m
            )
        write_misses(directory, remaining)
        fcntl.flock(lock, fcntl.LOCK_UN)
