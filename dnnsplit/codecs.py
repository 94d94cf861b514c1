"""Boundary codecs: how a float32 tensor sent between tiers may be encoded, and what it then costs.

Shared by the cost model (``plan --compress``: transfer bytes) and the splitter (``split --compress``:
the Cast / QuantizeLinear nodes at each boundary), so the two always agree.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dnnsplit.errors import UsageError

if TYPE_CHECKING:  # profiling.graph imports torch: the cost model must not pay for it to price bytes
    from dnnsplit.profiling.graph import TensorSpec

BYTES_PER_ELEMENT = {"fp16": 2, "int8": 1}
MODES = tuple(BYTES_PER_ELEMENT)


def check_mode(mode: str | None) -> str | None:
    if mode is not None and mode not in MODES:
        raise UsageError(f"unknown --compress '{mode}'", f"use one of {', '.join(MODES)}")
    return mode


def compressed_bytes(spec: TensorSpec, mode: str | None) -> int:
    """Bytes of a tensor sent with ``mode``: float32 tensors shrink, others (shape vectors) go as they are."""
    if mode is None or spec.dtype != "float32":
        return spec.bytes
    return spec.bytes // 4 * BYTES_PER_ELEMENT[mode]


# -- lossless coding of a whole message (on top of a codec, or of float32 as it is) ------------------------
# zstd is the fast, tight one for Python peers; the browser's CompressionStream has no zstd (Chromium 150:
# gzip, deflate, deflate-raw), so the web client sends deflate (the zlib format, RFC 1950: HTTP's
# "deflate" content coding). "identity" is no coding at all.
LOSSLESS = ("identity", "zstd", "deflate")
ZSTD_LEVEL = 3
DEFLATE_LEVEL = 6
_CHUNK = 1 << 16


class CodingRefused(ValueError):
    """A coded body that cannot be decoded: ``reason`` is "unknown", "too_large" or "corrupt"."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_coding(coding: str) -> str:
    if coding not in LOSSLESS:
        raise UsageError(f"unknown lossless coding '{coding}'", f"use one of {', '.join(LOSSLESS)}")
    return coding


def pack(data: bytes, coding: str) -> bytes:
    """``data`` losslessly coded with ``coding`` (one of ``LOSSLESS``)."""
    if coding == "identity":
        return data
    if coding == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    if coding == "deflate":
        import zlib

        return zlib.compress(data, DEFLATE_LEVEL)
    raise CodingRefused("unknown", f"unknown coding '{coding}'")


def unpack(data: bytes, coding: str, limit: int) -> bytes:
    """``data`` decoded, never holding more than ``limit`` decoded bytes: past it ``CodingRefused``
    ("too_large") is raised after at most ``limit`` + 64 kB of output, so a bomb costs nothing."""
    if coding == "identity":
        if len(data) > limit:
            raise CodingRefused("too_large", f"{len(data)} bytes, over the limit of {limit}")
        return data
    if coding == "zstd":
        return _unzstd(data, limit)
    if coding == "deflate":
        return _inflate(data, limit)
    raise CodingRefused("unknown", f"unknown coding '{coding}'")


def _too_large(limit: int) -> CodingRefused:
    return CodingRefused("too_large", f"decodes to more than the limit of {limit} bytes")


def _unzstd(data: bytes, limit: int) -> bytes:
    import io

    import zstandard

    try:
        declared = zstandard.frame_content_size(data)  # -1: the frame does not say
    except zstandard.ZstdError as exc:
        raise CodingRefused("corrupt", f"not a valid zstd stream ({exc})") from None
    if declared > limit:
        raise _too_large(limit)
    parts, total = [], 0
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as reader:
            while chunk := reader.read(_CHUNK):
                total += len(chunk)
                if total > limit:
                    raise _too_large(limit)
                parts.append(chunk)
    except zstandard.ZstdError as exc:
        raise CodingRefused("corrupt", f"not a valid zstd stream ({exc})") from None
    if declared >= 0 and total != declared:  # a truncated frame reads as a short one
        raise CodingRefused("corrupt", f"the zstd frame says {declared} bytes and holds {total}")
    return b"".join(parts)


def _inflate(data: bytes, limit: int) -> bytes:
    import zlib

    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise CodingRefused("corrupt", f"not a valid deflate (zlib) stream ({exc})") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise _too_large(limit)
    if not inflater.eof:
        raise CodingRefused("corrupt", "the deflate (zlib) stream is truncated")
    return out
