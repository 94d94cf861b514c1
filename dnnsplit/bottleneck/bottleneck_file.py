"""``bottleneck.yaml`` (schema ``dnnsplit/bottleneck@1``): what `dnnsplit bottleneck` trained and measured.

Read with :func:`load_bottleneck`, which checks the schema, every field's kind, and that each file the
document lists is there with the sha256 it records (a damaged or swapped file is one usage error).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dnnsplit.branching.branch_file import _BadField, _field, _integer, _integers, _number, _section, _text
from dnnsplit.errors import UsageError
from dnnsplit.fileio import read_document
from dnnsplit.models.export import file_sha256
from dnnsplit.partition.bottleneck_option import BottleneckCosts

SCHEMA = "dnnsplit/bottleneck@1"
FILE = "bottleneck.yaml"
FILE_KEYS = ("model", "encoder", "decoder", "checkpoint")  # the files a bottleneck directory holds


@dataclass(frozen=True)
class CodeSpec:
    """The int8 tensor that crosses the cut and how it is coded on the wire."""

    name: str
    shape: list[int]  # batch 1
    dtype: str  # int8
    coding: str  # zstd
    level: int
    scale: float  # value = scale x (code - zero_point)
    zero_point: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "code") -> CodeSpec:
        return cls(
            _field(data, "name", _text, where),
            _field(data, "shape", _integers, where),
            _field(data, "dtype", _text, where),
            _field(data, "coding", _text, where),
            _field(data, "level", _integer, where),
            _field(data, "scale", _number, where),
            _field(data, "zero_point", _integer, where),
        )


@dataclass(frozen=True)
class CodeBytes:
    """Bytes per sample at the cut, measured on the test split: the coded code, and what it replaces."""

    mean: float
    p95: float
    min: int
    max: int
    int8: int  # the code before zstd
    float32: int  # the original float32 tensor at the cut
    samples: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "bytes") -> CodeBytes:
        return cls(
            _field(data, "mean", _number, where),
            _field(data, "p95", _number, where),
            _field(data, "min", _integer, where),
            _field(data, "max", _integer, where),
            _field(data, "int8", _integer, where),
            _field(data, "float32", _integer, where),
            _field(data, "samples", _integer, where),
        )

    @property
    def reduction(self) -> float:
        """How many times fewer bytes than the float32 cut, on average."""
        return self.float32 / max(self.mean, 1e-9)


@dataclass(frozen=True)
class BottleneckAccuracy:
    """Top-1 on the test split: the original model, the bottleneck model (int8 code), and how they agree."""

    base_top1: float
    top1: float
    drop_points: float  # (base_top1 - top1) x 100
    agreement: float  # share of test samples where both predict the same class
    samples: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "accuracy") -> BottleneckAccuracy:
        return cls(
            _field(data, "base_top1", _number, where),
            _field(data, "top1", _number, where),
            _field(data, "drop_points", _number, where),
            _field(data, "agreement", _number, where),
            _field(data, "samples", _integer, where),
        )


@dataclass(frozen=True)
class BottleneckTimes:
    """Median ms per sample (batch 1) on the machine that ran `bottleneck`: onnxruntime + zstd per side."""

    encode: float  # encoder.onnx + zstd compress (the phone's side, on this host)
    decode: float  # zstd decompress + decoder.onnx (the edge's side)
    encoder_onnx: float
    decoder_onnx: float
    zstd_compress: float
    zstd_decompress: float
    threads: int | None
    cpu: str
    # The bottleneck's own layers (the encoder after the stem, the decoder before the rest): what the
    # planner charges. Optional (the schema stays @1): files written before they were measured lack them.
    encoder_layers: float | None = None
    decoder_layers: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "times_ms") -> BottleneckTimes:
        threads = data.get("threads")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)):
            raise _BadField(f"field '{where}.threads' is not an integer or null")
        optional = {
            k: _field(data, k, _number, where) for k in ("encoder_layers", "decoder_layers") if k in data
        }
        return cls(
            *(_field(data, k, _number, where) for k in ("encode", "decode", "encoder_onnx", "decoder_onnx")),
            _field(data, "zstd_compress", _number, where),
            _field(data, "zstd_decompress", _number, where),
            threads,
            _field(data, "cpu", _text, where),
            **optional,
        )


@dataclass(frozen=True)
class BottleneckFile:
    """The bottleneck.yaml document."""

    model: dict[str, Any]  # source, name, sha256 (of the original model's ONNX export)
    at: str
    channels: int
    stride: int
    data: str
    num_classes: int
    input_shape: list[int]
    cut_shape: list[int]  # the original tensor at the cut (batch 1), float32
    code: CodeSpec
    bytes: CodeBytes
    accuracy: BottleneckAccuracy
    times_ms: BottleneckTimes
    files: dict[str, str]  # model, encoder, decoder, checkpoint: file names in the directory
    sha256: dict[str, str]  # the same keys: each file's sha256
    training: dict[str, Any]
    validation: dict[str, Any]
    schema: str = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"schema": data.pop("schema"), **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BottleneckFile:
        """The document from plain data; a missing or mistyped field raises ValueError naming it."""
        files = {str(k): str(v) for k, v in _section(data, "files").items()}
        sha = {str(k): str(v) for k, v in _section(data, "sha256").items()}
        for key in FILE_KEYS:
            if key not in files:
                raise _BadField(f"missing field 'files.{key}'")
            if key not in sha:
                raise _BadField(f"missing field 'sha256.{key}'")
            if "/" in files[key] or files[key] in ("", ".", ".."):
                raise _BadField(f"field 'files.{key}' is not a file name in the directory")
        return cls(
            model=_section(data, "model"),
            at=_field(data, "at", _text),
            channels=_field(data, "channels", _integer),
            stride=_field(data, "stride", _integer),
            data=_field(data, "data", _text),
            num_classes=_field(data, "num_classes", _integer),
            input_shape=_field(data, "input_shape", _integers),
            cut_shape=_field(data, "cut_shape", _integers),
            code=CodeSpec.from_dict(_section(data, "code")),
            bytes=CodeBytes.from_dict(_section(data, "bytes")),
            accuracy=BottleneckAccuracy.from_dict(_section(data, "accuracy")),
            times_ms=BottleneckTimes.from_dict(_section(data, "times_ms")),
            files=files,
            sha256=sha,
            training=_section(data, "training"),
            validation=_section(data, "validation"),
        )

    def path(self, directory: str | Path, key: str) -> Path:
        """Where file ``key`` (model, encoder, decoder, checkpoint) of a bottleneck in ``directory`` is."""
        return Path(directory) / self.files[key]

    def costs(self, directory: str | Path) -> BottleneckCosts:
        """What the planner needs of this bottleneck (``directory``: where it was read from, for the plan).

        Without the measured times of its own layers (older files) the planner derives them from
        encoder.onnx / decoder.onnx less the profile's stem / rest (``BottleneckCosts.encoder_ms`` None)."""
        import numpy as np
        from safetensors.numpy import save

        code_shape = tuple(self.code.shape)
        message = save({self.code.name: np.zeros(code_shape, np.int8)})
        k, c = self.cut_shape[1], self.channels
        kernel = 1 if self.stride == 1 else 3
        t = self.times_ms
        return BottleneckCosts(
            directory=str(directory),
            sha256=file_sha256(Path(directory) / FILE),
            at=self.at,
            model_sha256=self.model.get("sha256"),
            model_source=self.model.get("source"),
            cut_bytes=self.bytes.float32,
            code_name=self.code.name,
            code_shape=code_shape,
            int8_bytes=self.bytes.int8,
            coded_mean=self.bytes.mean,
            coded_p95=self.bytes.p95,
            header_bytes=len(message) - self.bytes.int8,
            encoder_ms=t.encoder_layers,
            decoder_ms=t.decoder_layers,
            zstd_compress_ms=t.zstd_compress,
            zstd_decompress_ms=t.zstd_decompress,
            # float32 weights as exported (BatchNorm folded into a bias): conv K -> C; conv C -> K 3x3 + 1x1
            encoder_weight_bytes=4 * (c * k * kernel * kernel + c),
            decoder_weight_bytes=4 * (k * c * 9 + k + k * k + k),
            accuracy_drop=self.accuracy.drop_points,
            agreement=self.accuracy.agreement,
            encoder_onnx_ms=t.encoder_onnx,
            decoder_onnx_ms=t.decoder_onnx,
        )


def load_bottleneck(path: str | Path) -> BottleneckFile:
    """Read a bottleneck (its directory or its bottleneck.yaml) and check its files' sha256.

    A missing, foreign, incomplete or damaged bottleneck is a usage error (one line naming the problem).
    """
    given = Path(path)
    document_path = given / FILE if given.is_dir() else given
    if not document_path.is_file():
        raise UsageError(f"{document_path} not found", "pass a directory written by `dnnsplit bottleneck`")
    data = read_document(document_path, SCHEMA)
    try:
        document = BottleneckFile.from_dict(data)
    except _BadField as exc:
        raise UsageError(
            f"{document_path} lacks a field or has a wrong one ({exc})", "run dnnsplit bottleneck again"
        ) from None
    directory = document_path.parent
    for key in FILE_KEYS:
        file = document.path(directory, key)
        if not file.is_file():
            raise UsageError(f"{file} is missing ({FILE} lists it as {key})", "run dnnsplit bottleneck again")
        if file_sha256(file) != document.sha256[key]:
            raise UsageError(
                f"{file} does not match the sha256 {FILE} records for it (damaged or replaced)",
                "run dnnsplit bottleneck again",
            )
    return document
