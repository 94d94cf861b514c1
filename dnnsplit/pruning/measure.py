"""A pruned model on the target runtime: exported to ONNX, profiled per layer, timed whole."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dnnsplit.models.export import ExportedModel, file_sha256, write_onnx
from dnnsplit.models.loading import LoadedModel
from dnnsplit.profiling.graph import load_layer_graph
from dnnsplit.profiling.profile import Profile
from dnnsplit.profiling.run import PreparedModel, ProfileSettings, profile_prepared

SETTLE_S = 0.3


@dataclass(frozen=True)
class Measured:
    path: Path
    profile: Profile
    latency_ms: float  # whole model, median of ``repeat`` runs


def export_to(loaded: LoadedModel, module: nn.Module, path: Path) -> ExportedModel:
    """Write ``module`` (pruned from ``loaded``) as ONNX at ``path``."""
    assert loaded.input_shape is not None
    module = copy.deepcopy(module).eval()
    with torch.no_grad():
        out = module(torch.zeros(tuple(loaded.input_shape)))
    write_onnx(loaded, module, out, path)
    return ExportedModel(path, file_sha256(path), tuple(loaded.input_shape), cached=False)


def whole_ms(path: Path, shape: tuple[int, ...], threads: int, repeat: int, warmup: int = 10) -> float:
    """Median ms of one run of the whole ONNX model at ``threads`` onnxruntime threads."""
    from dnnsplit.onnxrt import median_run_ms

    return median_run_ms(path, shape, threads, repeat, warmup)


def measure(loaded: LoadedModel, module: nn.Module, path: Path, threads: int, repeat: int = 20) -> Measured:
    """Export, profile per layer (what plans are built from) and time the whole model."""
    exported = export_to(loaded, module, path)
    # torch's worker threads spin for a while after the export's last parallel region and take a core
    # from the single-threaded measurement: resnet18 at 32x32 timed 6-15% slower right after torch work
    # than a moment later.
    time.sleep(SETTLE_S)
    graph = load_layer_graph(exported.path, exported.input_shape)
    prepared = PreparedModel(loaded, exported, graph)
    settings = ProfileSettings(threads=threads, warmup=5, repeat=repeat)
    profile = Profile.from_dict(profile_prepared(prepared, settings).to_dict())
    return Measured(path, profile, whole_ms(path, exported.input_shape, threads, max(repeat * 5, 50)))
