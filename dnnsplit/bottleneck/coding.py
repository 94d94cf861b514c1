"""The code on the wire: an int8 tensor's bytes entropy-coded with zstd, and their size per sample."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

ZSTD_LEVEL = 3  # zstd's default: at this size level 19 saves a few percent for ~20x the encode time


def _zstd():  # noqa: ANN202 - the zstandard module
    import zstandard

    return zstandard


def encode_code(code: np.ndarray, level: int = ZSTD_LEVEL) -> bytes:
    """One sample's int8 code (C-order bytes) compressed with zstd (the frame records the size)."""
    return _zstd().ZstdCompressor(level=level).compress(np.ascontiguousarray(code, dtype=np.int8).tobytes())


def decode_code(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """The int8 code of ``shape`` from its zstd bytes; a frame of another size is a ValueError."""
    raw = _zstd().ZstdDecompressor().decompress(data, max_output_size=int(np.prod(shape)))
    if len(raw) != int(np.prod(shape)):
        raise ValueError(f"the code holds {len(raw)} bytes, not {int(np.prod(shape))} for shape {shape}")
    return np.frombuffer(raw, dtype=np.int8).reshape(shape)


@dataclass(frozen=True)
class CodedBytes:
    """Bytes per sample of the coded code over a data split, and zstd's time per sample (ms)."""

    mean: float
    p95: float
    minimum: int
    maximum: int
    samples: int
    compress_ms: float  # median per sample
    decompress_ms: float


def measure_coded(codes: Iterable[np.ndarray], level: int = ZSTD_LEVEL) -> CodedBytes:
    """Code every sample of ``codes`` (each one sample's int8 code) on its own and measure the bytes."""
    sizes, enc_ms, dec_ms = [], [], []
    for code in codes:
        start = time.perf_counter()
        data = encode_code(code, level)
        enc_ms.append((time.perf_counter() - start) * 1000.0)
        start = time.perf_counter()
        back = decode_code(data, tuple(code.shape))
        dec_ms.append((time.perf_counter() - start) * 1000.0)
        if not np.array_equal(back, code):  # lossless, or the figures are not worth reporting
            raise AssertionError("zstd did not give the code back")
        sizes.append(len(data))
    if not sizes:
        raise ValueError("no samples to measure")
    arr = np.asarray(sizes)
    return CodedBytes(
        mean=float(arr.mean()),
        p95=float(np.percentile(arr, 95)),
        minimum=int(arr.min()),
        maximum=int(arr.max()),
        samples=len(sizes),
        compress_ms=float(np.median(enc_ms)),
        decompress_ms=float(np.median(dec_ms)),
    )
