"""``branch.yaml`` (schema ``dnnsplit/branch@1``): what `dnnsplit branch` measured, for plan and runtime."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dnnsplit.errors import UsageError
from dnnsplit.fileio import read_document
from dnnsplit.partition.early_exit import BranchCosts

SCHEMA = "dnnsplit/branch@1"
FILE = "branch.yaml"

# What ``--activations`` accepts. "binary": +/-1 inputs and weights (XNOR-Net), the default. "real": +/-1
# weights over real-valued inputs (BinaryConnect): the file is as small (it holds weights, not
# activations) and without a threshold per input channel smaller still; what it gives up is XNOR/popcount
# compute, which onnxruntime does not have anyway. mobilenet_v2 needs it: its binary-activation branch
# stayed at chance on digits (see docs/benchmarks/branch.md).
BINARY_ACTIVATIONS = ("binary", "real")

T = TypeVar("T")


class _BadField(ValueError):
    """A field of branch.yaml that is missing or of the wrong kind; its text names the field."""


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError
    return dict(value)


def _integers(value: Any) -> list[int]:
    if not isinstance(value, list):
        raise TypeError
    return [_integer(v) for v in value]


def _optional(kind: Callable[[Any], T]) -> Callable[[Any], T | None]:
    return lambda value: None if value is None else kind(value)


_KINDS: dict[Callable[[Any], Any], str] = {
    _number: "a number",
    _integer: "an integer",
    _text: "a string",
    _mapping: "a mapping",
    _integers: "a list of integers",
}


def _field(data: Mapping[str, Any], key: str, kind: Callable[[Any], T], where: str = "", what: str = "") -> T:
    name = f"{where}.{key}" if where else key
    if key not in data:
        raise _BadField(f"missing field '{name}'")
    try:
        return kind(data[key])
    except (TypeError, ValueError):
        raise _BadField(f"field '{name}' is not {what or _KINDS.get(kind, 'valid')}") from None


def _section(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    return _field(data, key, _mapping)


@dataclass(frozen=True)
class BranchAccuracy:
    backbone: float
    branch_exited: float | None
    overall: float

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "accuracy") -> BranchAccuracy:
        return cls(
            _field(data, "backbone", _number, where),
            _field(data, "branch_exited", _optional(_number), where, "a number or null"),
            _field(data, "overall", _number, where),
        )


@dataclass(frozen=True)
class BranchSizes:
    mobile_onnx_bytes: int
    edge_onnx_bytes: int
    branch_float_bytes: int  # the branch's binary weights as float32
    branch_packed_bytes: int  # the same weights as bits, plus their per-channel float scales
    full_model_bytes: int  # the whole float model as ONNX

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "sizes") -> BranchSizes:
        return cls(
            _field(data, "mobile_onnx_bytes", _integer, where),
            _field(data, "edge_onnx_bytes", _integer, where),
            _field(data, "branch_float_bytes", _integer, where),
            _field(data, "branch_packed_bytes", _integer, where),
            _field(data, "full_model_bytes", _integer, where),
        )


@dataclass(frozen=True)
class BranchLatency:
    """Median onnxruntime latency on the machine that ran ``branch`` (batch 1), in ms."""

    stem_ms: float
    branch_ms: float
    rest_ms: float
    threads: int | None
    cpu: str

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "latency") -> BranchLatency:
        return cls(
            _field(data, "stem_ms", _number, where),
            _field(data, "branch_ms", _number, where),
            _field(data, "rest_ms", _number, where),
            _field(data, "threads", _optional(_integer), where, "an integer or null"),
            _field(data, "cpu", _text, where),
        )


@dataclass(frozen=True)
class BoundaryTensor:
    name: str
    shape: list[int]
    bytes_per_sample: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "boundary") -> BoundaryTensor:
        return cls(
            _field(data, "name", _text, where),
            _field(data, "shape", _integers, where),
            _field(data, "bytes_per_sample", _integer, where),
        )


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BranchFile:
        """The document from plain data; a missing or mistyped field raises ValueError naming it."""
        curve = data.get("curve") or []
        if not isinstance(curve, list) or not all(isinstance(c, dict) for c in curve):
            raise _BadField("field 'curve' is not a list of mappings")
        return cls(
            model=_section(data, "model"),
            at=_field(data, "at", _text),
            data=_field(data, "data", _text),
            num_classes=_field(data, "num_classes", _integer),
            input_shape=_field(data, "input_shape", _integers),
            boundary=BoundaryTensor.from_dict(_section(data, "boundary")),
            output_bytes_per_sample=_field(data, "output_bytes_per_sample", _integer),
            threshold=_field(data, "threshold", _number),
            exit_rate=_field(data, "exit_rate", _number),
            accuracy=BranchAccuracy.from_dict(_section(data, "accuracy")),
            sizes=BranchSizes.from_dict(_section(data, "sizes")),
            latency=BranchLatency.from_dict(_section(data, "latency")),
            files={str(k): str(v) for k, v in _section(data, "files").items()},
            calibration=_section(data, "calibration"),
            validation=_section(data, "validation"),
            training=_section(data, "training"),
            curve=[dict(c) for c in curve],
        )

    def costs(self, directory: str | Path) -> BranchCosts:
        """What the planner needs of this branch (``directory``: where it was read from, for the plan)."""
        return BranchCosts(
            directory=str(directory),
            at=self.at,
            exit_rate=self.exit_rate,
            stem_ms=self.latency.stem_ms,
            branch_ms=self.latency.branch_ms,
            rest_ms=self.latency.rest_ms,
            boundary_bytes=self.boundary.bytes_per_sample,
            output_bytes=self.output_bytes_per_sample,
            model_sha256=self.model.get("sha256"),
            model_source=self.model.get("source"),
            mobile_sha256=self.files.get("mobile_sha256"),
            mobile_bytes=self.sizes.mobile_onnx_bytes,
        )


def load_branch(directory: str | Path) -> BranchFile:
    """Read ``DIR/branch.yaml``; a missing, foreign or incomplete file is a usage error (one line)."""
    path = Path(directory) / FILE
    if not path.is_file():
        raise UsageError(f"{path} not found", "pass a directory written by `dnnsplit branch`")
    data = read_document(path, SCHEMA)
    try:
        return BranchFile.from_dict(data)
    except _BadField as exc:
        raise UsageError(
            f"{path} lacks a field or has a wrong one ({exc})", "re-run dnnsplit branch"
        ) from None
