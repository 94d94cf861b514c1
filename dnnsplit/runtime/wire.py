"""Tensor payloads on the wire: safetensors (a JSON header and raw little-endian bytes, no pickle), checked
against the manifest.

One message carries every tensor that crosses a cut (a skip connection crosses beside the main path), batch
first. ``__metadata__`` (strings only, as safetensors allows) carries the split's digest, so a server can
tell a client of another split from a malformed one. Anything that does not fit raises ``WireError`` with
the HTTP status it deserves and a message naming the problem.

A body may be losslessly coded (``codecs.LOSSLESS``): the request says so in ``Content-Encoding`` (``zstd``
or ``deflate``, the zlib format; none or ``identity``: raw) and may declare the decoded size in
``X-Decoded-Length``. The server refuses a coding it does not know with 415 (and an ``Accept-Encoding``
header listing those it does), a body that decodes past its size limit, past the declared size or past
``MAX_RATIO`` times its coded size with 413 (a decompression bomb: decoding stops there), a corrupt stream
or a short one with 400. Answers go back uncoded.

A request that starts at the model's input may instead carry the camera frame itself (``Content-Type:
image/jpeg``, or image/png), its ``__metadata__`` as a JSON object in ``X-Dnnsplit-Metadata``; the server
makes the model input from it as ``images.load_image`` does (400 when it is not an image, 415 when the
request does not start at an image-shaped model input).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dnnsplit.codecs import LOSSLESS, CodingRefused, check_coding, pack, unpack
from dnnsplit.profiling.graph import TensorSpec

CONTENT_TYPE = "application/vnd.safetensors"
JSON_TYPE = "application/json"
JPEG_TYPE = "image/jpeg"
IMAGE_TYPES = (JPEG_TYPE, "image/png")
METADATA_HEADER = "x-dnnsplit-metadata"  # an image body's __metadata__, as a JSON object of strings
HEADER_SLACK = 64 * 1024  # room for the JSON header over the tensors' own bytes
CODING_HEADER = "content-encoding"
DECODED_LENGTH_HEADER = "x-decoded-length"
# int8 activations after a ReLU are mostly zeros: zstd codes them ~50-200x; past this (and past
# HEADER_SLACK of output) a body is a bomb, whatever the size limit leaves room for.
MAX_RATIO = 1024


@dataclass
class WireError(Exception):
    """A request the server refuses: ``status`` (4xx), a short ``code`` and a message naming the problem."""

    status: int
    code: str
    message: str
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, **self.extra}


def encode(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> bytes:
    """Tensors (any shapes, numeric dtypes) as one safetensors message."""
    from safetensors.numpy import save

    arrays = {name: np.ascontiguousarray(value) for name, value in tensors.items()}
    return save(arrays, metadata=dict(metadata) if metadata else None)


def decode(data: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors and metadata of a safetensors message; ``WireError`` 400 for anything malformed."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if len(data) < 8:
        raise WireError(400, "bad_payload", f"malformed safetensors payload: {len(data)} bytes, no header")
    try:
        tensors = load(data)
    except (SafetensorError, ValueError, TypeError) as exc:  # the library's checks: header, offsets, dtypes
        raise WireError(400, "bad_payload", f"malformed safetensors payload: {exc}") from None
    # The library accepted the header, so its length and JSON are sound; it does not return the metadata.
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    metadata = header.get("__metadata__") or {}
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def check(
    tensors: Mapping[str, np.ndarray], expected: Sequence[TensorSpec], max_batch: int | None = None
) -> int:
    """Check names, per-sample shapes, dtypes and one batch size against the manifest; returns the batch.

    Unknown and missing names are reported by name (several at once), so a client of a different cut sees
    at a glance which tensors differ.
    """
    wanted = {t.name: t for t in expected}
    unknown = sorted(set(tensors) - set(wanted))
    if unknown:
        raise WireError(
            422,
            "unknown_tensor",
            f"unknown tensor(s) {', '.join(repr(n) for n in unknown)}; this tier takes "
            f"{', '.join(repr(n) for n in wanted)}",
            {"tensors": unknown},
        )
    missing = [name for name in wanted if name not in tensors]
    if missing:
        raise WireError(
            422,
            "missing_tensor",
            f"missing tensor(s) {', '.join(repr(n) for n in missing)}",
            {"tensors": missing},
        )
    batch = None
    for name, spec in wanted.items():
        value = tensors[name]
        if value.dtype != np.dtype(spec.dtype):
            raise WireError(
                422,
                "wrong_dtype",
                f"tensor '{name}' is {value.dtype}, the manifest says {spec.dtype}",
                {"tensor": name},
            )
        if value.ndim != len(spec.shape) or tuple(value.shape[1:]) != tuple(spec.shape[1:]):
            want = "x".join(str(d) for d in ("N", *spec.shape[1:]))
            got = "x".join(str(d) for d in value.shape)
            raise WireError(
                422,
                "wrong_shape",
                f"tensor '{name}' has shape {got}, the manifest says {want}",
                {"tensor": name},
            )
        if batch is None:
            batch = int(value.shape[0])
        elif value.shape[0] != batch:
            raise WireError(
                422,
                "batch_mismatch",
                f"tensor '{name}' has batch {value.shape[0]}, others {batch}",
                {"tensor": name},
            )
    batch = batch or 0
    if batch < 1:
        raise WireError(422, "empty_batch", "the batch is empty")
    if max_batch is not None and batch > max_batch:
        raise WireError(413, "batch_too_large", f"batch {batch} is over this server's maximum of {max_batch}")
    return batch


def is_image_body(headers: Mapping[str, str]) -> bool:
    """Whether a request body is an image (``Content-Type: image/jpeg`` or ``image/png``)."""
    return headers.get("content-type", "").split(";")[0].strip().lower() in IMAGE_TYPES


def image_headers(metadata: Mapping[str, str]) -> dict[str, str]:
    """The headers of an image body carrying ``metadata`` (a tensor message's ``__metadata__``)."""
    return {"content-type": JPEG_TYPE, METADATA_HEADER: json.dumps(dict(metadata), separators=(",", ":"))}


def image_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """An image body's metadata from ``X-Dnnsplit-Metadata``; 400 when it is not a JSON object."""
    raw = headers.get(METADATA_HEADER)
    if raw is None:
        return {}
    try:
        found = json.loads(raw)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise WireError(400, "bad_metadata", f"{METADATA_HEADER} is not a JSON object")
    return {str(k): str(v) for k, v in found.items()}


def message_bytes(specs: Sequence[TensorSpec], batch: int = 1) -> int:
    """The tensors' own bytes in a message of ``batch`` samples (the header comes on top)."""
    return sum(t.bytes for t in specs) * batch


def check_finite(tensors: Mapping[str, np.ndarray]) -> None:
    """NaN or inf in a floating-point tensor: 422 naming it (a model fed them answers garbage, silently)."""
    for name, value in tensors.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            bad = int(value.size - np.count_nonzero(np.isfinite(value)))
            raise WireError(
                422,
                "non_finite",
                f"tensor '{name}' holds {bad} NaN or infinite value(s) (serve --allow-non-finite takes them)",
                {"tensor": name},
            )


def coded_body(body: bytes, coding: str = "identity") -> tuple[bytes, dict[str, str]]:
    """``body`` coded with ``coding`` and the headers that say so (none for identity)."""
    check_coding(coding)
    if coding == "identity":
        return body, {}
    return pack(body, coding), {CODING_HEADER: coding, DECODED_LENGTH_HEADER: str(len(body))}


def decoded_body(body: bytes, headers: Mapping[str, str], limit: int) -> bytes:
    """The raw message of a request body coded as its headers say; at most ``limit`` decoded bytes."""
    coding = headers.get(CODING_HEADER, "identity").strip().lower() or "identity"
    if coding not in LOSSLESS:
        raise WireError(
            415,
            "unknown_coding",
            f"Content-Encoding '{coding}' is not one this server decodes ({', '.join(LOSSLESS)})",
            {"accept_encoding": ", ".join(LOSSLESS)},
        )
    if coding == "identity":
        return body
    bound = min(limit, MAX_RATIO * len(body) + HEADER_SLACK)
    declared = headers.get(DECODED_LENGTH_HEADER)
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise WireError(
                400, "bad_length", f"{DECODED_LENGTH_HEADER} '{declared}' is not a number"
            ) from None
        if size > limit:
            raise WireError(
                413,
                "body_too_large",
                f"the body declares {size} decoded bytes, over this server's limit of {limit} "
                "(--max-body-mb)",
            )
        bound = min(bound, size)
    try:
        raw = unpack(body, coding, bound)
    except CodingRefused as exc:
        if exc.reason == "too_large":
            raise WireError(
                413,
                "decoded_too_large",
                f"the {coding} body {exc} (its declared size, {MAX_RATIO}x its {len(body)} coded bytes, "
                f"or this server's limit of {limit})",
            ) from None
        raise WireError(400, "bad_coding", f"the {coding} body is malformed: {exc}") from None
    if declared is not None and len(raw) != int(declared):
        raise WireError(
            400, "bad_length", f"the body decodes to {len(raw)} bytes, it declares {declared}"
        )
    return raw
