"""``DIR/variants.yaml`` (``dnnsplit/variants@1``): the pruned variants of one model and how to choose them.

Per variant: its ONNX file (and a PyTorch checkpoint), what it was pruned for, the pruning ratio per
layer, MACs, params, size, test accuracy, latency measured on the host per tier, and per network preset
its best plan at device scale 1 with the candidate plans (``lines``) that `select` scales to any device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.fileio import dump_document, read_document
from dnnsplit.pruning.context import Context
from dnnsplit.pruning.plans import PlanLine

SCHEMA = "dnnsplit/variants@1"
FILE = "variants.yaml"
METHODS = ("original", "latency-aware", "uniform")


@dataclass
class NetworkPlan:
    latency_ms: float  # the best plan at device scale 1
    energy_mj: float
    mobile_layers: int
    cut: list[str]
    lines: list[PlanLine]

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms": self.latency_ms,
            "energy_mj": self.energy_mj,
            "mobile_layers": self.mobile_layers,
            "cut": list(self.cut),
            "lines": [line.to_dict() for line in self.lines],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NetworkPlan:
        return cls(
            float(data["latency_ms"]),
            float(data["energy_mj"]),
            int(data["mobile_layers"]),
            [str(c) for c in data.get("cut", [])],
            [PlanLine.from_dict(line) for line in data["lines"]],
        )


@dataclass(frozen=True)
class VariantLatency:
    """A variant's latency: measured on the host, as predicted before measuring, per tier, end to end."""

    host_ms: float  # measured
    predicted_host_ms: float
    threads: int  # onnxruntime threads it was measured with
    mobile_ms: float  # host_ms scaled by the phone
    end_to_end_ms: float  # the best partition over the context's network
    edge_ms: float | None = None  # host_ms scaled by the edge, when the context has one

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "host_ms": self.host_ms,
            "predicted_host_ms": self.predicted_host_ms,
            "threads": self.threads,
            "mobile_ms": self.mobile_ms,
        }
        if self.edge_ms is not None:
            data["edge_ms"] = self.edge_ms
        data["end_to_end_ms"] = self.end_to_end_ms
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantLatency:
        edge = data.get("edge_ms")
        return cls(
            host_ms=float(data["host_ms"]),
            predicted_host_ms=float(data["predicted_host_ms"]),
            threads=int(data["threads"]),
            mobile_ms=float(data["mobile_ms"]),
            end_to_end_ms=float(data["end_to_end_ms"]),
            edge_ms=None if edge is None else float(edge),
        )


@dataclass
class Variant:
    name: str
    method: str  # original | latency-aware | uniform
    file: str  # ONNX, relative to DIR
    checkpoint: str  # PyTorch (torch-pruning state), relative to DIR
    profile: str  # the measured profile, relative to DIR
    target: dict[str, Any] | None  # {budget_ms, network, device_scale} it was pruned for
    ratios: dict[str, float]  # conv -> fraction of output channels removed
    macs: int
    params: int
    size_bytes: int
    accuracy: float  # test split
    val_accuracy: float
    latency: VariantLatency
    plans: dict[str, NetworkPlan]
    finetune: dict[str, Any] = field(default_factory=dict)
    unpruned: list[str] = field(default_factory=list)  # groups torch-pruning could not prune, with why

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": self.method,
            "file": self.file,
            "checkpoint": self.checkpoint,
            "profile": self.profile,
            "target": self.target,
            "accuracy": self.accuracy,
            "val_accuracy": self.val_accuracy,
            "macs": self.macs,
            "params": self.params,
            "size_bytes": self.size_bytes,
            "latency": self.latency.to_dict(),
            "ratios": dict(self.ratios),
            "unpruned": list(self.unpruned),
            "finetune": self.finetune,
            "plans": {name: plan.to_dict() for name, plan in self.plans.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Variant:
        return cls(
            name=str(data["name"]),
            method=str(data["method"]),
            file=str(data["file"]),
            checkpoint=str(data["checkpoint"]),
            profile=str(data["profile"]),
            target=data.get("target"),
            ratios={str(k): float(v) for k, v in (data.get("ratios") or {}).items()},
            macs=int(data["macs"]),
            params=int(data["params"]),
            size_bytes=int(data["size_bytes"]),
            accuracy=float(data["accuracy"]),
            val_accuracy=float(data.get("val_accuracy", data["accuracy"])),
            latency=VariantLatency.from_dict(dict(data["latency"])),
            plans={str(k): NetworkPlan.from_dict(v) for k, v in data["plans"].items()},
            finetune=dict(data.get("finetune") or {}),
            unpruned=[str(u) for u in data.get("unpruned", [])],
        )


    @property
    def budget_ms(self) -> float | None:
        """The latency target it was pruned for (None: the unpruned original)."""
        return None if not self.target else float(self.target["budget_ms"])


@dataclass
class VariantsFile:
    model: dict[str, Any]  # source, name, arch, sha256 (of the unpruned model's ONNX), input_shape, classes
    data: str
    context: Context
    settings: dict[str, Any]  # threads, epochs, ... as pruned
    variants: list[Variant]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "model": self.model,
            "data": self.data,
            "context": self.context.to_dict(),
            "settings": self.settings,
            "variants": [v.to_dict() for v in self.variants],
        }

    def dump(self) -> str:
        return dump_document(self.to_dict(), "yaml")

    def names(self) -> set[str]:
        return {v.name for v in self.variants}

    @classmethod
    def load(cls, directory: str | Path) -> VariantsFile:
        directory = Path(directory)
        path = directory / FILE
        if not directory.is_dir():
            raise UsageError(f"'{directory}' is not a directory", "pass the --output DIR of dnnsplit prune")
        if not path.is_file():
            raise UsageError(f"{directory} holds no {FILE}", "run dnnsplit prune MODEL --output DIR first")
        data = read_document(path, SCHEMA)
        try:
            return cls(
                model=dict(data["model"]),
                data=str(data["data"]),
                context=Context.from_dict(dict(data["context"])),
                settings=dict(data.get("settings") or {}),
                variants=[Variant.from_dict(v) for v in data["variants"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(
                f"{path} is not a complete variants file (bad field: {exc})", "prune again"
            ) from exc
