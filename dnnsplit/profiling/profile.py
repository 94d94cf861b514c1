"""The profile: per-layer cost of a model on a runtime, and its file format ``dnnsplit/profile@1``."""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.errors import UsageError
from dnnsplit.fileio import read_document, write_document
from dnnsplit.profiling.graph import LayerGraph, TensorSpec
from dnnsplit.profiling.measure import Measurement

SCHEMA = "dnnsplit/profile@1"
GROUPS = ("node", "module", "block")
RUNTIMES = ("onnxruntime", "torch", "browser")
# How far the per-layer sum may be from the measured whole model before the layers are not believed.
SUM_TOLERANCE = 0.15


@dataclass
class LayerProfile:
    """One row of a profile: a node, a module call or a block, in topological order."""

    name: str
    op: str
    module: str
    latency_ms: float
    latency_p90_ms: float
    macs: int
    params: int
    outputs: list[TensorSpec]
    inputs: list[str]
    nodes: int = 1

    @property
    def output_bytes(self) -> int:
        return sum(t.bytes for t in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "module": self.module,
            "latency_ms": round(self.latency_ms, 6),
            "latency_p90_ms": round(self.latency_p90_ms, 6),
            "macs": self.macs,
            "params": self.params,
            "output_bytes": self.output_bytes,
            "outputs": [t.to_dict() for t in self.outputs],
            "inputs": list(self.inputs),
            "nodes": self.nodes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerProfile:
        return cls(
            name=str(data["name"]),
            op=str(data["op"]),
            module=str(data.get("module", "")),
            latency_ms=float(data["latency_ms"]),
            latency_p90_ms=float(data.get("latency_p90_ms", data["latency_ms"])),
            macs=int(data.get("macs", 0)),
            params=int(data.get("params", 0)),
            outputs=[TensorSpec.from_dict(t) for t in data.get("outputs", [])],
            inputs=[str(i) for i in data.get("inputs", [])],
            nodes=int(data.get("nodes", 1)),
        )


@dataclass(frozen=True)
class BranchTiming:
    """The early-exit branch timed where this profile was measured (``profile --runtime browser --branch``):
    the stem in onnxruntime-web, the branch on the bit kernels when they run there (``engine``), and the
    same branch in onnxruntime-web for comparison. ``mobile_sha256`` names the branch's ``mobile.onnx``, so
    a plan uses these times only for the branch they were measured on."""

    directory: str
    at: str
    mobile_sha256: str
    engine: str  # "kernels" or "onnxruntime-web": what the page runs the branch on
    stem_ms: float
    stem_p90_ms: float
    branch_ms: float  # on ``engine``, with the exit decision
    branch_p90_ms: float
    onnxruntime_branch_ms: float  # the same branch in onnxruntime-web
    binary_layers: int
    repeat: int
    reason: str = ""  # why the kernels did not run, when they did not

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("stem_ms", "stem_p90_ms", "branch_ms", "branch_p90_ms", "onnxruntime_branch_ms"):
            data[key] = round(data[key], 6)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> BranchTiming:
        if not isinstance(data, dict):
            raise ValueError(f"branch must be a mapping, got {data!r}")
        return cls(
            directory=str(data["directory"]),
            at=str(data["at"]),
            mobile_sha256=str(data["mobile_sha256"]),
            engine=str(data["engine"]),
            stem_ms=float(data["stem_ms"]),
            stem_p90_ms=float(data["stem_p90_ms"]),
            branch_ms=float(data["branch_ms"]),
            branch_p90_ms=float(data["branch_p90_ms"]),
            onnxruntime_branch_ms=float(data["onnxruntime_branch_ms"]),
            binary_layers=int(data["binary_layers"]),
            repeat=int(data["repeat"]),
            reason=str(data.get("reason", "")),
        )


@dataclass
class Profile:
    """Everything ``dnnsplit profile`` measured; what ``plan`` reads."""

    model: dict[str, Any]
    device: dict[str, Any]
    input: TensorSpec
    input_shape: tuple[int, ...]
    outputs: list[TensorSpec]
    group: str
    settings: dict[str, Any]
    latency_ms: float
    latency_p90_ms: float
    layers: list[LayerProfile]
    notes: list[str] = field(default_factory=list)
    # Set when the layer times were scaled to the whole model: {scale, measured_layer_sum_ms, measured_ratio,
    # rounds, reason}. The layers (and total.layer_sum_ms) are then the scaled times.
    calibration: dict[str, Any] | None = None
    branch: BranchTiming | None = None  # the early-exit branch timed on the same runtime (browser only)

    @property
    def total_macs(self) -> int:
        return sum(la.macs for la in self.layers)

    @property
    def total_params(self) -> int:
        return sum(la.params for la in self.layers)

    @property
    def layer_sum_ms(self) -> float:
        return float(sum(la.latency_ms for la in self.layers))

    @property
    def layer_sum_ratio(self) -> float:
        return self.layer_sum_ms / self.latency_ms if self.latency_ms > 0 else float("nan")

    @property
    def sum_agrees(self) -> bool:
        """The per-layer sum is within ``SUM_TOLERANCE`` of the measured whole model."""
        return abs(self.layer_sum_ratio - 1) <= SUM_TOLERANCE

    @property
    def measured_sum_ratio(self) -> float:
        """The per-layer sum over the whole model as measured, before any calibration."""
        if self.calibration is not None:
            return float(self.calibration["measured_ratio"])
        return self.layer_sum_ratio

    def calibrated(self, rounds: int | None = None) -> Profile:
        """This profile, with every layer's time scaled so that they add up to the measured whole model when
        their sum is outside ``SUM_TOLERANCE`` of it (``self`` when it agrees). ``rounds``: how many
        measurements were tried (None: a profile read from a file)."""
        measured, whole = self.layer_sum_ms, self.latency_ms
        if self.sum_agrees or not (measured > 0 and whole > 0 and math.isfinite(measured / whole)):
            return self
        # A profile scaled before and edited since: keep what was measured first.
        raw = float((self.calibration or {}).get("measured_layer_sum_ms", measured))
        scale, factor = whole / raw, whole / measured
        how = f"after {rounds} measurement round(s)" if rounds else "in the profile as read"
        reason = (
            f"the per-layer sum was {raw / whole:.2f}x the measured whole model {how}, outside "
            f"±{SUM_TOLERANCE:.0%} (a busy machine, or kernels that matched no layer); layer times are "
            f"scaled x{scale:.2f} so that they add up to the whole model"
        )
        layers = [
            replace(la, latency_ms=la.latency_ms * factor, latency_p90_ms=la.latency_p90_ms * factor)
            for la in self.layers
        ]
        calibration = {
            "scale": scale,
            "measured_layer_sum_ms": raw,
            "measured_ratio": raw / whole,
            "rounds": rounds,
            "reason": reason,
        }
        return replace(self, layers=layers, calibration=calibration, notes=[*self.notes, reason])

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "device": self.device,
            "input": {
                "name": self.input.name,
                "shape": list(self.input_shape),
                "dtype": self.input.dtype,
                "bytes": self.input.bytes,
            },
            "outputs": [t.to_dict() for t in self.outputs],
            "group": self.group,
            "settings": self.settings,
            "total": {
                "latency_ms": round(self.latency_ms, 6),
                "latency_p90_ms": round(self.latency_p90_ms, 6),
                "layer_sum_ms": round(self.layer_sum_ms, 6),
                "layer_sum_ratio": round(self.layer_sum_ratio, 6),
                "macs": self.total_macs,
                "params": self.total_params,
                "layers": len(self.layers),
            },
            "notes": list(self.notes),
            "calibration": None
            if self.calibration is None
            else {
                **self.calibration,
                "scale": round(float(self.calibration["scale"]), 6),
                "measured_layer_sum_ms": round(float(self.calibration["measured_layer_sum_ms"]), 6),
                "measured_ratio": round(float(self.calibration["measured_ratio"]), 6),
            },
            "layers": [la.to_dict() for la in self.layers],
            # Written only when measured, so a profile without a branch is what it was before the block.
            **({} if self.branch is None else {"branch": self.branch.to_dict()}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        inp = data["input"]
        shape = tuple(int(d) for d in inp["shape"])
        total = data["total"]
        return cls(
            model=dict(data["model"]),
            device=dict(data["device"]),
            input=TensorSpec(str(inp["name"]), (1, *shape[1:]), str(inp.get("dtype", "float32"))),
            input_shape=shape,
            outputs=[TensorSpec.from_dict(t) for t in data.get("outputs", [])],
            group=str(data.get("group", "node")),
            settings=dict(data.get("settings", {})),
            latency_ms=float(total["latency_ms"]),
            latency_p90_ms=float(total.get("latency_p90_ms", total["latency_ms"])),
            layers=[LayerProfile.from_dict(la) for la in data["layers"]],
            notes=list(data.get("notes", [])),
            calibration=_calibration(data.get("calibration")),
            branch=None if data.get("branch") is None else BranchTiming.from_dict(data["branch"]),
        )

    def save(self, path: str | Path) -> None:
        write_document(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        data = read_document(path, SCHEMA)
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(
                f"{path} is not a complete profile (missing or bad field: {exc})", "re-run profile"
            ) from exc


def _calibration(data: Any) -> dict[str, Any] | None:
    """A file's ``calibration`` block (absent in profiles written before it existed), checked."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ValueError(f"calibration must be a mapping, got {data!r}")
    return {**data, "scale": float(data["scale"]), "measured_ratio": float(data["measured_ratio"])}


def group_key(graph: LayerGraph, index: int, group: str) -> str:
    layer = graph.layers[index]
    if group == "node":
        return layer.name
    key = layer.scope if group == "module" else layer.block
    return key or layer.name  # root-level ops (e.g. /Flatten) stand alone


def build_rows(graph: LayerGraph, measurement: Measurement, group: str) -> list[LayerProfile]:
    """Aggregate per-layer runs into rows of the chosen grouping (medians/p90 of per-run sums)."""
    if group not in GROUPS:
        raise UsageError(f"unknown --group '{group}'", f"use one of {', '.join(GROUPS)}")
    members: OrderedDict[str, list[int]] = OrderedDict()
    for i in range(len(graph.layers)):
        members.setdefault(group_key(graph, i, group), []).append(i)
    graph_outputs = {t.name for t in graph.outputs}
    rows = []
    for key, idx in members.items():
        runs = measurement.layer_ms[:, idx].sum(axis=1)
        layers = [graph.layers[i] for i in idx]
        produced = {t.name for la in layers for t in la.outputs}
        names = {la.name for la in layers}
        outputs = [
            t
            for la in layers
            for t in la.outputs
            if t.name in graph_outputs or any(c not in names for c in graph.consumers.get(t.name, []))
        ]
        inputs: list[str] = []
        for la in layers:
            for name in la.inputs:
                if name not in produced and name not in inputs:
                    inputs.append(name)
        if group == "node":
            op, module = layers[0].op, layers[0].module
        else:
            module = layers[0].module if group == "module" else (layers[0].block or layers[0].module)
            op = graph.module_types.get(module) or max(layers, key=lambda la: la.macs).op
        rows.append(
            LayerProfile(
                name=key,
                op=op,
                module=module,
                latency_ms=float(np.median(runs)),
                latency_p90_ms=float(np.percentile(runs, 90)),
                macs=sum(la.macs for la in layers),
                params=sum(la.params for la in layers),
                outputs=outputs,
                inputs=inputs,
                nodes=len(layers),
            )
        )
    return rows
