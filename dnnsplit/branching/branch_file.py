"""``branch.yaml`` (schema ``dnnsplit/branch@1``): what `dnnsplit branch` measured, for plan and runtime."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dnnsplit.errors import UsageError
from dnnsplit.fileio import parse_yaml, read_text

SCHEMA = "dnnsplit/branch@1"
FILE = "branch.yaml"

# What ``--activations`` accepts. "binary": +/-1 inputs and weights (XNOR-Net), the default. "real": +/-1
# weights over real-valued inputs (BinaryConnect): the file is as small (it holds weights, not
# activations) and without a threshold per input channel smaller still; what it gives up is XNOR/popcount
# compute, which onnxruntime does not have anyway. mobilenet_v2 needs it: its binary-activation branch
# stayed at chance on digits (see docs/benchmarks/branch.md).
BINARY_ACTIVATIONS = ("binary", "real")


@dataclass(frozen=True)
class BranchAccuracy:
    backbone: float
    branch_exited: float | None
    overall: float


@dataclass(frozen=True)
class BranchSizes:
    mobile_onnx_bytes: int
    edge_onnx_bytes: int
    branch_float_bytes: int  # the branch's binary weights as float32
    branch_packed_bytes: int  # the same weights as bits, plus their per-channel float scales
    full_model_bytes: int  # the whole float model as ONNX


@dataclass(frozen=True)
class BranchLatency:
    """Median onnxruntime latency on the machine that ran ``branch`` (batch 1), in ms."""

    stem_ms: float
    branch_ms: float
    rest_ms: float
    threads: int | None
    cpu: str


@dataclass(frozen=True)
class BoundaryTensor:
    name: str
    shape: list[int]
    bytes_per_sample: int


@dataclass(frozen=True)
class BranchFile:
    """The branch.yaml document."""

    model: dict[str, Any]
    at: str
    data: str
    num_classes: int
    input_shape: list[int]
    boundary: BoundaryTensor
    output_bytes_per_sample: int
    threshold: float
    exit_rate: float
    accuracy: BranchAccuracy
    sizes: BranchSizes
    latency: BranchLatency
    files: dict[str, str]
    calibration: dict[str, Any]
    validation: dict[str, Any]
    training: dict[str, Any]
    curve: list[dict[str, Any]] = field(default_factory=list)
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"schema": data.pop("schema"), **data}


def load_branch(directory: str | Path) -> BranchFile:
    """Read ``DIR/branch.yaml``; a missing or foreign file is a usage error."""
    path = Path(directory) / FILE
    if not path.is_file():
        raise UsageError(f"{path} not found", "pass a directory written by `dnnsplit branch`")
    try:
        data = parse_yaml(read_text(path))
    except yaml.YAMLError as exc:
        raise UsageError(
            f"{path} is not valid YAML ({str(exc).splitlines()[0]})", "re-run dnnsplit branch"
        ) from exc
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UsageError(f"{path} is not a {SCHEMA} document", "re-run dnnsplit branch")
    try:
        return BranchFile(
            model=data["model"],
            at=data["at"],
            data=data["data"],
            num_classes=int(data["num_classes"]),
            input_shape=list(data["input_shape"]),
            boundary=BoundaryTensor(**data["boundary"]),
            output_bytes_per_sample=int(data["output_bytes_per_sample"]),
            threshold=float(data["threshold"]),
            exit_rate=float(data["exit_rate"]),
            accuracy=BranchAccuracy(**data["accuracy"]),
            sizes=BranchSizes(**data["sizes"]),
            latency=BranchLatency(**data["latency"]),
            files=dict(data["files"]),
            calibration=dict(data["calibration"]),
            validation=dict(data["validation"]),
            training=dict(data["training"]),
            curve=list(data.get("curve") or []),
        )
    except (KeyError, TypeError) as exc:
        raise UsageError(
            f"{path} lacks a field or has a wrong one ({exc})", "re-run dnnsplit branch"
        ) from exc
