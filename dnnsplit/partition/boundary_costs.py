"""What each candidate boundary tensor costs under each codec, measured on real data: the
``dnnsplit/boundaries@1`` file (``dnnsplit boundaries``) the planner charges instead of assumed sizes.

A codec is a lossy step (``none``: float32 as it is, ``fp16``, ``int8``; a trained ``bottleneck`` is one more
option at its own boundary) followed by a lossless coding of the message (``identity``, ``zstd``,
``deflate``). Per tensor and option the file records the bytes per sample of the coded message (mean and
p95 over the samples), the encode and decode time on the host that measured them (the planner scales them
per tier like compute: ``latency_scale``), and the accuracy change with the codec applied (points of test
top-1 and top-1 agreement with the float32 model). The phone's input, when it is an image, is the measured
JPEG of the frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.fileio import read_document, write_document

SCHEMA = "dnnsplit/boundaries@1"
LOSSY = ("none", "fp16", "int8")
LOSSLESS_CODINGS = ("identity", "zstd", "deflate")


@dataclass(frozen=True)
class BoundaryCodec:
    """One way to send one boundary tensor, and what it was measured to cost."""

    name: str  # none | fp16 | int8 | bottleneck
    lossless: str  # identity | zstd | deflate
    bytes_mean: float  # per sample, the coded message (header included)
    bytes_p95: float
    encode_ms: float  # host time: the lossy step, the message, the lossless coding
    decode_ms: float
    accuracy_drop: float  # points of test top-1 lost with this codec (negative: gained)
    agreement: float | None = None  # top-1 agreement with the float32 model, 0..1

    @property
    def label(self) -> str:
        return self.name if self.lossless == "identity" else f"{self.name}+{self.lossless}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "codec": self.name,
            "lossless": self.lossless,
            "bytes": {"mean": self.bytes_mean, "p95": self.bytes_p95},
            "times_ms": {"encode": self.encode_ms, "decode": self.decode_ms},
            "accuracy": {"drop_points": self.accuracy_drop, "agreement": self.agreement},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BoundaryCodec:
        accuracy = data.get("accuracy") or {}
        return cls(
            name=str(data["codec"]),
            lossless=str(data.get("lossless", "identity")),
            bytes_mean=float(data["bytes"]["mean"]),
            bytes_p95=float(data["bytes"]["p95"]),
            encode_ms=float(data["times_ms"]["encode"]),
            decode_ms=float(data["times_ms"]["decode"]),
            accuracy_drop=float(accuracy.get("drop_points", 0.0)),
            agreement=None if accuracy.get("agreement") is None else float(accuracy["agreement"]),
        )


@dataclass(frozen=True)
class TensorCosts:
    """Every measured option of one boundary tensor."""

    name: str
    float32_bytes: int
    options: tuple[BoundaryCodec, ...]

    def option(self, codec: str, lossless: str) -> BoundaryCodec | None:
        return next((o for o in self.options if o.name == codec and o.lossless == lossless), None)


@dataclass(frozen=True)
class InputCosts:
    """The phone's input on the wire when it is an image: the measured JPEG of the frames."""

    raw_bytes: int  # the input tensor
    jpeg_mean: float
    jpeg_p95: float
    quality: int
    frames: int


@dataclass(frozen=True)
class BoundaryCosts:
    model: dict[str, Any]  # source, sha256 (of the ONNX the tensors are named in)
    host: dict[str, Any]
    samples: dict[str, Any]  # data, split, bytes (samples the sizes and times are over), accuracy
    base_top1: float | None  # the float32 model's test top-1 on the accuracy samples, percent
    accuracy_scope: str  # how the accuracy change was measured (see dnnsplit/boundaries/measure.py)
    tensors: dict[str, TensorCosts]
    input: InputCosts | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def codecs(self) -> tuple[tuple[str, str], ...]:
        """(codec, lossless) pairs measured for every tensor, in the file's order (a model with no
        boundary: only sending nothing, ``none`` + ``identity``)."""
        if not self.tensors:
            return (("none", "identity"),)
        pairs: list[tuple[str, str]] = []
        for t in self.tensors.values():
            for o in t.options:
                if (o.name, o.lossless) not in pairs:
                    pairs.append((o.name, o.lossless))
        return tuple(p for p in pairs if all(t.option(*p) is not None for t in self.tensors.values()))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "schema": SCHEMA,
            "model": dict(self.model),
            "host": dict(self.host),
            "samples": dict(self.samples),
            "base_top1": self.base_top1,
            "accuracy_scope": self.accuracy_scope,
            "input": None
            if self.input is None
            else {
                "raw_bytes": self.input.raw_bytes,
                "jpeg": {
                    "mean": self.input.jpeg_mean,
                    "p95": self.input.jpeg_p95,
                    "quality": self.input.quality,
                    "frames": self.input.frames,
                },
            },
            "tensors": [
                {
                    "name": t.name,
                    "float32_bytes": t.float32_bytes,
                    "options": [o.to_dict() for o in t.options],
                }
                for t in self.tensors.values()
            ],
            "notes": list(self.notes),
        }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BoundaryCosts:
        raw_input = data.get("input")
        costs_input = None
        if raw_input:
            jpeg = raw_input["jpeg"]
            costs_input = InputCosts(
                int(raw_input["raw_bytes"]),
                float(jpeg["mean"]),
                float(jpeg["p95"]),
                int(jpeg["quality"]),
                int(jpeg["frames"]),
            )
        tensors = {
            str(t["name"]): TensorCosts(
                str(t["name"]),
                int(t["float32_bytes"]),
                tuple(BoundaryCodec.from_dict(o) for o in t["options"]),
            )
            for t in data["tensors"]
        }
        return cls(
            model=dict(data.get("model") or {}),
            host=dict(data.get("host") or {}),
            samples=dict(data.get("samples") or {}),
            base_top1=None if data.get("base_top1") is None else float(data["base_top1"]),
            accuracy_scope=str(data.get("accuracy_scope", "")),
            tensors=tensors,
            input=costs_input,
            notes=tuple(data.get("notes") or ()),
        )

    def save(self, path: str | Path) -> None:
        write_document(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> BoundaryCosts:
        data = read_document(path, SCHEMA)
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(
                f"{path} is not a complete boundaries file (missing or bad field: {exc})",
                "re-run `dnnsplit boundaries`",
            ) from exc
