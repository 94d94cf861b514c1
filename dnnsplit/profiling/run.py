"""``profile_model``: load, export, build the layer graph and measure it on a runtime."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.errors import BudgetError, UsageError
from dnnsplit.limits import check_threads
from dnnsplit.models import ExportedModel, ModelOptions, export_model, load_model
from dnnsplit.models.loading import LoadedModel
from dnnsplit.profiling.graph import LayerGraph, TensorSpec, load_layer_graph
from dnnsplit.profiling.measure import Measurement
from dnnsplit.profiling.profile import GROUPS, RUNTIMES, SUM_TOLERANCE, Profile, build_rows
from dnnsplit.profiling.sysinfo import host_info
from dnnsplit.progress import ProgressFn, no_progress


@dataclass(frozen=True)
class ProfileSettings:
    runtime: str = "onnxruntime"
    threads: int | None = None
    warmup: int = 5
    repeat: int = 20
    group: str = "node"
    # Measure at most this many times until the per-layer sum agrees with the whole model; if it never
    # does, the layer times are scaled to the whole (Profile.calibrated), or with ``strict`` it is an error.
    rounds: int = 3
    strict: bool = False

    def check(self) -> None:
        if self.runtime not in RUNTIMES:
            raise UsageError(f"unknown --runtime '{self.runtime}'", f"use one of {', '.join(RUNTIMES)}")
        if self.group not in GROUPS:
            raise UsageError(f"unknown --group '{self.group}'", f"use one of {', '.join(GROUPS)}")
        if self.repeat < 1:
            raise UsageError(f"--repeat must be at least 1 (got {self.repeat})", "pass --repeat 20, say")
        if self.warmup < 0:
            raise UsageError(f"--warmup must not be negative (got {self.warmup})", "pass --warmup 5, say")
        if self.rounds < 1:
            raise UsageError(f"--rounds must be at least 1 (got {self.rounds})", "pass --rounds 3, say")
        check_threads(self.threads)

    @property
    def resolved_threads(self) -> int:
        return self.threads or os.cpu_count() or 1


@dataclass
class PreparedModel:
    """A loaded and exported model with its layer graph: the input every later stage starts from."""

    loaded: LoadedModel
    exported: ExportedModel
    graph: LayerGraph

    def model_block(self) -> dict[str, object]:
        return {
            "source": self.loaded.source,
            "name": self.loaded.name,
            "kind": self.loaded.kind,
            "onnx": str(self.exported.path),
            "sha256": self.exported.sha256,
        }


def prepare_model(
    spec: str, options: ModelOptions | None = None, on_stage: ProgressFn = no_progress
) -> PreparedModel:
    on_stage("loading the model", 0, 1)
    loaded = load_model(spec, options)
    exported = export_model(loaded, on_stage=lambda s: on_stage(s, 0, 1))
    on_stage("building the layer graph", 0, 1)
    graph = load_layer_graph(exported.path, exported.input_shape)
    return PreparedModel(loaded, exported, graph)


def profile_prepared(
    prepared: PreparedModel, settings: ProfileSettings, progress: ProgressFn = no_progress
) -> Profile:
    """Measure ``prepared`` until its per-layer sum agrees with the whole model (``settings.rounds`` at most).

    A round whose sum is off is measured again with whole-model and per-layer runs interleaved, so that a
    change in the machine's load hits both alike. If no round agrees, the closest is kept and its layers
    are scaled to its whole model (recorded in ``Profile.calibration``), or with ``settings.strict`` that
    is a BudgetError: a plan priced from layers that do not add up would be off by as much.
    """
    settings.check()
    best: Profile | None = None
    retried: list[str] = []
    done = 0
    for done in range(1, settings.rounds + 1):
        measurement, device = measure_once(prepared, settings, progress, interleaved=done > 1)
        profile = _raw_profile(prepared, measurement, device, settings)
        if best is None or _miss(profile) < _miss(best):
            best = profile
        if profile.sum_agrees:
            break
        if done < settings.rounds:
            retried.append(
                f"round {done}: the per-layer sum was {profile.layer_sum_ratio:.2f}x the whole model; "
                "measured again with whole-model and per-layer runs interleaved"
            )
    assert best is not None  # rounds >= 1
    result = replace(best, notes=[*retried, *best.notes]).calibrated(rounds=done)
    if settings.strict and result.calibration is not None:
        raise BudgetError(
            f"the per-layer sum is {result.measured_sum_ratio:.2f}x the measured whole model after {done} "
            f"round(s), outside ±{SUM_TOLERANCE:.0%}, and strict profiling is on",
            "profile on a quiet machine or with fewer --threads, raise --repeat, or turn strict off "
            "(no --strict; profile.strict: false) to scale the layer times to the whole model",
        )
    return result


def _miss(profile: Profile) -> float:
    ratio = profile.layer_sum_ratio
    return abs(ratio - 1) if math.isfinite(ratio) else math.inf


def measure_once(
    prepared: PreparedModel, settings: ProfileSettings, progress: ProgressFn, interleaved: bool = False
) -> tuple[Measurement, dict[str, Any]]:
    """One measurement of ``prepared`` on the settings' runtime, and the device block it ran on.

    ``interleaved``: alternate whole-model and per-layer runs (torch and the browser always do).
    """
    threads = settings.resolved_threads
    shape = prepared.exported.input_shape
    if settings.runtime == "torch":
        prepared.loaded.torch_module("--runtime torch")
        from dnnsplit.profiling.torch_runtime import measure_torch

        measurement = measure_torch(
            prepared.graph,
            prepared.loaded.module,
            shape,
            threads=threads,
            warmup=settings.warmup,
            repeat=settings.repeat,
            progress=progress,
        )
    elif settings.runtime == "browser":
        from dnnsplit.profiling.browser_runtime import (
            browser_device,
            measurement_from_browser,
            run_in_browser,
        )
        from dnnsplit.profiling.sysinfo import cpu_model

        result = run_in_browser(
            prepared.exported.path,
            shape,
            threads=threads,
            warmup=settings.warmup,
            repeat=settings.repeat,
            progress=progress,
        )
        return measurement_from_browser(prepared.graph, result), browser_device(result, cpu_model())
    else:
        from dnnsplit.profiling.ort_runtime import measure_onnxruntime

        measurement = measure_onnxruntime(
            prepared.graph,
            prepared.exported.path,
            shape,
            threads=threads,
            warmup=settings.warmup,
            repeat=settings.repeat,
            progress=progress,
            interleaved=interleaved,
        )
    return measurement, host_info(settings.runtime, threads)


def build_profile(
    prepared: PreparedModel, measurement: Measurement, device: dict[str, Any], settings: ProfileSettings
) -> Profile:
    """The profile of ``prepared`` from one measurement on ``device`` (any runtime, or a phone's browser
    that cannot be asked again), its layers scaled to the whole model if their sum is off."""
    return _raw_profile(prepared, measurement, device, settings).calibrated(rounds=1)


def _raw_profile(
    prepared: PreparedModel, measurement: Measurement, device: dict[str, Any], settings: ProfileSettings
) -> Profile:
    graph = prepared.graph
    first = graph.inputs[0]
    shape = prepared.exported.input_shape
    threads = int(device.get("threads") or settings.resolved_threads)
    return Profile(
        model=prepared.model_block(),
        device=device,
        input=TensorSpec(first.name, first.shape, first.dtype),
        input_shape=tuple(shape),
        outputs=list(graph.outputs),
        group=settings.group,
        settings={
            "runtime": settings.runtime,
            "threads": threads,
            "warmup": settings.warmup,
            "repeat": settings.repeat,
        },
        latency_ms=float(np.median(measurement.whole_ms)),
        latency_p90_ms=float(np.percentile(measurement.whole_ms, 90)),
        layers=build_rows(graph, measurement, settings.group),
        notes=measurement.notes,
    )


def profile_model(
    spec: str,
    options: ModelOptions | None = None,
    settings: ProfileSettings | None = None,
    progress: ProgressFn = no_progress,
) -> Profile:
    """Measure ``spec`` layer by layer (see ``ProfileSettings``)."""
    settings = settings or ProfileSettings()
    settings.check()
    return profile_prepared(prepare_model(spec, options, progress), settings, progress)


PROFILE_SUFFIXES = (".json", ".yaml", ".yml")


def is_profile_path(ref: str) -> bool:
    """A MODEL argument naming a profile file (``plan`` and later stages accept one instead of a model)."""
    return Path(ref).suffix.lower() in PROFILE_SUFFIXES


def load_or_profile(
    ref: str,
    options: ModelOptions | None = None,
    settings: ProfileSettings | None = None,
    progress: ProgressFn = no_progress,
) -> Profile:
    """The profile in ``ref`` when it is a profile file (.json/.yaml), else a new measurement of it."""
    if is_profile_path(ref):
        return Profile.load(ref)
    measured = profile_model(ref, options, settings, progress)
    # As it reads back from its file (times rounded to 1e-6 ms): planning from a model and from its saved
    # profile then gives the same numbers to the last digit.
    return Profile.from_dict(measured.to_dict())
