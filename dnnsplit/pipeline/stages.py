"""The pipeline's stages, train -> profile -> branch -> prune -> bottleneck -> plan -> split, each calling
the library.

A stage's input hash covers the files it reads (content), the config it depends on and the package
version; it is recorded in ``OUT/.stages.yaml`` with the stage's result figures. A stage whose hash is
unchanged and whose outputs are all present is skipped, and its recorded figures are reused, so a
second run costs seconds. Downstream stages hash upstream outputs, so rerunning one stage reruns
whatever its new outputs feed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from dnnsplit import __version__
from dnnsplit.errors import UsageError
from dnnsplit.fileio import write_text_atomic
from dnnsplit.models.export import file_sha256
from dnnsplit.models.loading import ModelOptions
from dnnsplit.pipeline.config import PipelineConfig
from dnnsplit.pipeline.layout import Layout

STATE_SCHEMA = "dnnsplit/stages@1"
STAGES = ("train", "profile", "branch", "prune", "bottleneck", "plan", "split")

# (message, done, total): what the current stage is doing, for the one progress display


class Reporter:
    """Told about every stage; the CLI draws a rich display from it, tests and --format json stay silent."""

    def stage_started(self, name: str, index: int, total: int) -> None:  # noqa: B027 - a silent default
        pass

    def progress(self, message: str, done: int, total: int, detail: str = "") -> None:  # noqa: B027
        pass

    def stage_finished(self, outcome: StageOutcome) -> None:  # noqa: B027
        pass


@dataclass
class StageOutcome:
    name: str
    status: str  # ran | skipped | off
    seconds: float
    result: dict[str, Any] = field(default_factory=dict)
    why: str = ""  # why it ran (forced, inputs changed, first run) or why it is off


def _folder_digest(path: Path) -> str:
    """An ImageFolder by its listing (names, sizes, mtimes): hashing every image costs more than a stage."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def input_hash(stage: str, config: Any, files: list[Path]) -> str:
    """The hash of what a stage reads: its config, the files' contents and the package version."""
    h = hashlib.sha256()
    h.update(
        json.dumps(
            {"stage": stage, "version": __version__, "config": config}, sort_keys=True, default=str
        ).encode()
    )
    for path in files:
        h.update(str(path.name).encode())
        h.update((_folder_digest(path) if path.is_dir() else file_sha256(path)).encode())
    return h.hexdigest()


class State:
    """OUT/.stages.yaml: per stage its input hash, when it ran, how long, and its result figures."""

    def __init__(self, layout: Layout) -> None:
        self.path = layout.state
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            try:
                data = yaml.safe_load(self.path.read_text(encoding="utf-8")) or {}
            except yaml.YAMLError:
                data = {}  # a damaged state file only costs a full rerun
            if isinstance(data, dict) and data.get("schema") == STATE_SCHEMA:
                self.stages = dict(data.get("stages") or {})

    def save(self) -> None:
        doc = {"schema": STATE_SCHEMA, "version": __version__, "stages": self.stages}
        write_text_atomic(self.path, yaml.safe_dump(doc, sort_keys=False))


@dataclass
class Pipeline:
    config: PipelineConfig
    reporter: Reporter = field(default_factory=Reporter)
    force: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        unknown = self.force - {*STAGES, "all"}
        if unknown:
            raise UsageError(
                f"--force names unknown stage '{sorted(unknown)[0]}'",
                f"use one of {', '.join(STAGES)} or all",
            )
        self.layout = Layout(self.config.output)

    # -- the model every stage after train reads -------------------------------------------------------------

    def model_ref(self) -> tuple[str, ModelOptions]:
        from dnnsplit.models import parse_input_shape

        m = self.config.model
        if not m.trained:  # the checkpoint records arch, classes, shape; its arch is the config's model
            trusted = tuple(a for a in (m.source, m.arch) if a)
            return str(self.layout.model), ModelOptions(trusted_archs=trusted)
        return m.source, ModelOptions(
            seed=m.seed,
            weights=m.weights,
            num_classes=m.num_classes,
            arch=m.arch,
            input_shape=parse_input_shape(m.input_shape) if m.input_shape else None,
        )

    def _model_files(self) -> list[Path]:
        m = self.config.model
        if not m.trained:
            return [self.layout.model]
        return [Path(p) for p in (m.weights, m.source) if p and Path(p).is_file()]

    def _data_files(self) -> list[Path]:
        data = self.config.data
        return [Path(data.split(":", 1)[1])] if data.startswith("imagefolder:") else []

    def _device_files(self, tiers: list[str]) -> list[Path]:
        refs = [self.config.tiers[t] for t in tiers if t in self.config.tiers]
        refs += [self.config.tier_profiles[t] for t in tiers if t in self.config.tier_profiles]
        return [Path(r) for r in refs if Path(r).is_file()]

    # -- running ---------------------------------------------------------------------------------------------

    def run(self) -> list[StageOutcome]:
        from dnnsplit.output_dir import PIPELINE, claim

        # OUT is written into, never replaced: empty, or holding an earlier run (its .stages.yaml)
        claim(self.layout.root, PIPELINE, force=True, into=True)
        self.layout.root.mkdir(exist_ok=True)
        state = State(self.layout)
        plan: list[
            tuple[str, Callable[[], tuple[Any, list[Path]]], Callable[[], dict[str, Any]], list[Path]]
        ] = [
            (
                "train",
                self._train_inputs,
                self._train,
                [self.layout.model] if not self.config.model.trained else [],
            ),
            ("profile", self._profile_inputs, self._profile, [self.layout.profile]),
            ("branch", self._branch_inputs, self._branch, [self.layout.branch / "branch.yaml"]),
            ("prune", self._prune_inputs, self._prune, [self.layout.variants / "variants.yaml"]),
            (
                "bottleneck",
                self._bottleneck_inputs,
                self._bottleneck,
                [self.layout.bottleneck / "bottleneck.yaml"]
                if self.config.bottleneck.directory is None
                else [],
            ),
            ("plan", self._plan_inputs, self._plan, [self.layout.plan]),
            ("split", self._split_inputs, self._split, [self.layout.segments / "manifest.yaml"]),
        ]
        outcomes = []
        for index, (name, inputs, body, outputs) in enumerate(plan):
            self.reporter.stage_started(name, index, len(plan))
            if (
                (name == "branch" and not self.config.branch.enabled)
                or (name == "prune" and not self.config.prune.enabled)
                or (name == "bottleneck" and not self.config.bottleneck.enabled)
            ):
                state.stages.pop(name, None)
                outcome = StageOutcome(name, "off", 0.0, why=f"{name}.enabled is false")
            else:
                outcome = self._run_one(name, inputs, body, outputs, state)
            outcomes.append(outcome)
            self.reporter.stage_finished(outcome)
        return outcomes

    def _run_one(
        self,
        name: str,
        inputs: Callable[[], tuple[Any, list[Path]]],
        body: Callable[[], dict[str, Any]],
        outputs: list[Path],
        state: State,
    ) -> StageOutcome:
        config, files = inputs()
        digest = input_hash(name, config, files)
        recorded = state.stages.get(name) or {}
        forced = "all" in self.force or name in self.force
        if not forced and recorded.get("input_sha256") == digest and all(p.exists() for p in outputs):
            return StageOutcome(name, "skipped", 0.0, dict(recorded.get("result") or {}), "inputs unchanged")
        why = "forced" if forced else ("inputs changed" if recorded else "first run")
        start = time.perf_counter()
        state.stages.pop(name, None)  # a stage that fails half-way is not recorded as done
        state.save()
        result = body()
        seconds = time.perf_counter() - start
        state.stages[name] = {
            "input_sha256": digest,
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "result": result,
        }
        state.save()
        return StageOutcome(name, "ran", seconds, result, why)

    # -- train: a checkpoint (or, with weights given, the test accuracy of the given model) ---------------

    def _train_inputs(self) -> tuple[Any, list[Path]]:
        c = self.config
        resolved = c.raw["resolved"]
        files = self._model_files() if c.model.trained else []
        files += self._data_files()
        return {"model": resolved["model"], "data": resolved["data"], "train": c.section("train")}, files

    def _train(self) -> dict[str, Any]:
        from dnnsplit.training.run import load_for_training, split_accuracy, train_to_checkpoint
        from dnnsplit.training.train import TrainSettings

        c = self.config
        if c.model.trained:
            spec, options = self.model_ref()
            self.reporter.progress("testing the given model", 0, 1)
            loaded, splits = load_for_training(spec, c.data, options, augment=False)
            return {"trained": False, "test_accuracy": split_accuracy(loaded, splits), "data": splits.source}
        from dnnsplit.models import parse_input_shape

        m = c.model
        options = ModelOptions(
            seed=m.seed,
            num_classes=m.num_classes,
            arch=m.arch,
            input_shape=parse_input_shape(m.input_shape) if m.input_shape else None,
        )
        loaded, splits = load_for_training(m.source, c.data, options)
        t = c.train
        settings = TrainSettings(epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, seed=m.seed)
        outcome = train_to_checkpoint(loaded, splits, settings, self.layout.model, self.reporter.progress)
        return {
            "trained": True,
            "test_accuracy": outcome.test_accuracy,
            "val_accuracy": outcome.result.best_val_accuracy,
            "best_epoch": outcome.result.best_epoch,
            "epochs": t.epochs,
            "data": splits.source,
            "sizes": splits.sizes(),
            "train_seconds": round(sum(r.seconds for r in outcome.result.history), 2),
        }

    # -- profile ---------------------------------------------------------------------------------------------

    def _profile_inputs(self) -> tuple[Any, list[Path]]:
        return {"model": self.config.raw["resolved"]["model"], "profile": self.config.section("profile")}, (
            self._model_files()
        )

    def _profile(self) -> dict[str, Any]:
        from dnnsplit.profiling import ProfileSettings, profile_model

        p = self.config.profile
        settings = ProfileSettings(
            threads=p.threads, warmup=p.warmup, repeat=p.repeat, rounds=p.rounds, strict=p.strict
        )
        settings.check()
        spec, options = self.model_ref()
        profile = profile_model(spec, options, settings, self.reporter.progress)
        profile.save(self.layout.profile)
        return {
            "latency_ms": profile.latency_ms,
            "layer_sum_ratio": profile.measured_sum_ratio,
            "calibration_scale": None if profile.calibration is None else profile.calibration["scale"],
            "layers": len(profile.layers),
            "macs": profile.total_macs,
            "params": profile.total_params,
            "threads": profile.device.get("threads"),
        }

    # -- branch ----------------------------------------------------------------------------------------------

    def _branch_inputs(self) -> tuple[Any, list[Path]]:
        c = self.config
        return {"branch": c.section("branch"), "data": c.raw["resolved"]["data"]}, (
            self._model_files() + self._data_files()
        )

    def _branch(self) -> dict[str, Any]:
        from dnnsplit.branching.run import BranchSettings, BranchValidationError, make_branch
        from dnnsplit.branching.train import BranchTrainSettings
        from dnnsplit.training.run import load_for_training

        b = self.config.branch
        settings = BranchSettings(
            at=b.at,
            activations=b.activations,
            max_accuracy_drop=b.max_accuracy_drop,
            train=BranchTrainSettings(epochs=b.epochs, seed=self.config.model.seed),
            force=True,  # the pipeline owns OUT/branch
            threads=self.config.profile.threads,
        )
        settings.check()
        spec, options = self.model_ref()
        loaded, splits = load_for_training(spec, self.config.data, options)
        try:
            doc = make_branch(loaded, splits, self.layout.branch, settings, self.reporter.progress).document
        except BranchValidationError as exc:
            # The branch is written and reported, but it is not in the shipped segments: a mismatch
            # between onnxruntime and PyTorch is flagged in the report, not a failed build.
            doc = exc.result.document
        v = doc.validation
        return {
            "at": doc.at,
            "threshold": doc.threshold,
            "exit_rate": doc.exit_rate,
            "accuracy": doc.accuracy.overall,
            "backbone_accuracy": doc.accuracy.backbone,
            "mobile_onnx_bytes": doc.sizes.mobile_onnx_bytes,
            "validation": {
                k: v.get(k) for k in ("passed", "exit_mismatches", "answer_mismatches", "samples")
            },
        }

    # -- prune: variants for the phone over the first link ---------------------------------------------------

    def _prune_inputs(self) -> tuple[Any, list[Path]]:
        c = self.config
        link = c.links[c.first_link].to_dict()
        context = {"mobile": c.tiers["mobile"], "edge": c.tiers.get("edge"), "link": link}
        files = self._model_files() + self._data_files() + self._device_files(["mobile", "edge"])
        return {"prune": c.section("prune"), "data": c.raw["resolved"]["data"], "context": context}, files

    def _prune(self) -> dict[str, Any]:
        from dnnsplit.pruning.context import Context
        from dnnsplit.pruning.finetune import FinetuneSettings
        from dnnsplit.pruning.run import PruneSettings, make_variants
        from dnnsplit.training.run import load_for_training

        c = self.config
        p = c.prune
        settings = PruneSettings(
            budgets=p.budgets_ms,
            levels=p.levels,
            finetune=FinetuneSettings(epochs=p.epochs, seed=c.model.seed),
            threads=p.threads,
            repeat=p.repeat,
            force=True,
        )
        settings.check()
        context = Context.parse(c.tiers["mobile"], c.links[c.first_link], c.tiers.get("edge", "none"))
        spec, options = self.model_ref()
        loaded, splits = load_for_training(spec, c.data, options)
        meta = {
            "source": str(Path(spec).resolve()) if Path(spec).is_file() else spec,
            "name": loaded.name,
            "weights": options.weights,
            "arch": options.arch,
        }
        progress = self.reporter.progress
        doc = make_variants(loaded, splits, self.layout.variants, context, settings, meta, progress)
        return {
            "variants": [
                {
                    "name": v.name,
                    "method": v.method,
                    "accuracy": v.accuracy,
                    "latency_ms": v.plans[next(iter(v.plans))].latency_ms if v.plans else None,
                    "size_bytes": v.size_bytes,
                }
                for v in doc.variants
            ],
        }

    # -- bottleneck: trained at a cut (or the one the config names, loaded), for the plan to weigh ---------

    def _bottleneck_inputs(self) -> tuple[Any, list[Path]]:
        c = self.config
        config = {"bottleneck": c.section("bottleneck"), "data": c.raw["resolved"]["data"]}
        if c.bottleneck.directory is not None:
            return config, [Path(c.bottleneck.directory) / "bottleneck.yaml"]
        return config, self._model_files() + self._data_files()

    def _bottleneck(self) -> dict[str, Any]:
        from dnnsplit.bottleneck.bottleneck_file import load_bottleneck
        from dnnsplit.pipeline.planning import bottleneck_directory

        b = self.config.bottleneck
        if b.directory is not None:
            doc = load_bottleneck(b.directory)  # checked (schema, files, sha256); the plan stage weighs it
        else:
            doc = self._train_bottleneck()
        directory = bottleneck_directory(self.config, self.layout)
        return {
            "directory": str(directory),
            "trained": b.directory is None,
            "at": doc.at,
            "channels": doc.channels,
            "bytes_mean": doc.bytes.mean,
            "float32_bytes": doc.bytes.float32,
            "drop_points": doc.accuracy.drop_points,
            "agreement": doc.accuracy.agreement,
        }

    def _train_bottleneck(self) -> Any:
        from dnnsplit.bottleneck.run import BottleneckSettings, make_bottleneck
        from dnnsplit.bottleneck.train import BottleneckTrainSettings
        from dnnsplit.training.run import load_for_training

        b = self.config.bottleneck
        assert b.at is not None and b.channels is not None  # the config requires them without a directory
        settings = BottleneckSettings(
            at=b.at,
            channels=b.channels,
            stride=b.stride,
            train=BottleneckTrainSettings(
                epochs=b.epochs,
                lr=b.lr,
                rate_lambda=b.rate_lambda,
                fine_tune=b.fine_tune,
                seed=self.config.model.seed,
            ),
            zstd_level=b.zstd_level,
            force=True,  # the pipeline owns OUT/bottleneck
            threads=self.config.profile.threads,
        )
        settings.check()
        spec, options = self.model_ref()
        loaded, splits = load_for_training(spec, self.config.data, options)
        # onnxruntime disagreeing with PyTorch is a BudgetError (exit 1): the plan must not weigh that code
        return make_bottleneck(
            loaded, splits, self.layout.bottleneck, settings, self.reporter.progress
        ).document

    # -- plan: the shipped plan on the first link, and one per network for the report ----------------------

    def _plan_inputs(self) -> tuple[Any, list[Path]]:
        c = self.config
        files = [self.layout.profile] + self._device_files(list(c.tiers))
        if c.branch.enabled:
            files.append(self.layout.branch / "branch.yaml")
        if c.bottleneck.enabled:
            from dnnsplit.pipeline.planning import bottleneck_directory

            directory = bottleneck_directory(c, self.layout)
            assert directory is not None
            files.append(directory / "bottleneck.yaml")
        resolved = c.raw["resolved"]
        config = {
            "tiers": resolved["tiers"],
            "links": resolved["links"],
            "objective": c.objective.describe(),
            "plan": c.section("plan"),
            "compress": c.split.compress,
            "branch": c.branch.enabled,
            "bottleneck": c.bottleneck.enabled,
        }
        return config, files

    def _plan(self) -> dict[str, Any]:
        from dnnsplit.pipeline.planning import plan_networks

        return plan_networks(self.config, self.layout, self.reporter.progress)

    # -- split with validation -------------------------------------------------------------------------------

    def _split_inputs(self) -> tuple[Any, list[Path]]:
        return {"split": self.config.section("split")}, self._model_files() + [self.layout.plan]

    def _split(self) -> dict[str, Any]:
        from dnnsplit.bottleneck.split_plan import split_with_bottleneck, uses_bottleneck
        from dnnsplit.partition.plan_file import load_plan
        from dnnsplit.profiling import prepare_model
        from dnnsplit.splitting.split import SplitSettings, split_prepared

        s = self.config.split
        settings = SplitSettings(
            compress=s.compress, validate=s.validate, seed=self.config.model.seed, force=True
        )
        settings.check()
        plan_file = load_plan(self.layout.plan)
        spec, options = self.model_ref()
        prepared = prepare_model(spec, options, self.reporter.progress)
        if uses_bottleneck(plan_file):  # the plan chose the bottleneck: its model.onnx cut at the code
            result = split_with_bottleneck(
                prepared, self.layout.segments, settings, self.layout.plan, plan_file, self.reporter.progress
            )
        else:
            result = split_prepared(
                prepared, self.layout.segments, settings, self.reporter.progress, self.layout.plan, plan_file
            )
        manifest = result.manifest
        v = manifest.validation
        return {
            "segments": [
                {"tier": seg.tier, "file": seg.file, "bytes": seg.bytes, "layers": seg.layers}
                for seg in manifest.segments
            ],
            "mobile_bytes": sum(seg.bytes for seg in manifest.segments if seg.tier == "mobile"),
            "validation": None
            if v is None
            else {
                "passed": bool(v.passed),
                "inputs": v.inputs,
                "max_rel_diff": float(v.max_rel_diff),
                "criterion": v.criterion,
            },
        }
