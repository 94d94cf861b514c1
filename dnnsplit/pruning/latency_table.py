"""Per-layer latency on the target runtime by channel count: one convolution, measured in onnxruntime.

A channel count is only worth removing if the runtime gets faster: onnxruntime's x86 kernels work on
blocks of channels, so 60 channels can cost what 64 do. The table measures the real kernel: a one-node
ONNX model (Conv with the layer's kernel, stride, padding, groups and input size) at the channel counts
the search asks for, median of ``repeat`` runs at a fixed thread count. Entries are cached on disk per
CPU, onnxruntime version and thread count, so a second prune of the same architecture measures nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dnnsplit.models.export import cache_dir


@dataclass(frozen=True)
class ConvShape:
    """One convolution as the runtime sees it (batch 1)."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int
    height: int
    width: int

    def key(self) -> str:
        k, s, p, d = self.kernel, self.stride, self.padding, self.dilation
        return (
            f"c{self.in_channels}-o{self.out_channels}-k{k[0]}x{k[1]}-s{s[0]}x{s[1]}-p{p[0]}x{p[1]}"
            f"-d{d[0]}x{d[1]}-g{self.groups}-{self.height}x{self.width}"
        )


def conv_model_bytes(shape: ConvShape) -> bytes:
    """A one-node ONNX model: input (1, C, H, W) -> Conv (random weights, with bias) -> output."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    kh, kw = shape.kernel
    weight = rng.standard_normal((shape.out_channels, shape.in_channels // shape.groups, kh, kw))
    bias = rng.standard_normal(shape.out_channels)
    node = helper.make_node(
        "Conv",
        ["x", "w", "b"],
        ["y"],
        kernel_shape=[kh, kw],
        strides=list(shape.stride),
        pads=[shape.padding[0], shape.padding[1], shape.padding[0], shape.padding[1]],
        dilations=list(shape.dilation),
        group=shape.groups,
    )
    graph = helper.make_graph(
        [node],
        "conv",
        [
            helper.make_tensor_value_info(
                "x", TensorProto.FLOAT, [1, shape.in_channels, shape.height, shape.width]
            )
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            numpy_helper.from_array(weight.astype(np.float32), "w"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def measure_conv(shape: ConvShape, threads: int = 1, repeat: int = 30, warmup: int = 5) -> float:
    """Median milliseconds of one run of ``shape`` in onnxruntime (CPU, ``threads`` intra-op threads)."""
    from dnnsplit.onnxrt import ort_session

    session = ort_session(conv_model_bytes(shape), threads)
    x = np.random.default_rng(1).standard_normal((1, shape.in_channels, shape.height, shape.width))
    feed = {"x": x.astype(np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))


def channel_block() -> int:
    """The channel block of onnxruntime's NCHWc convolutions on this CPU: 16 with AVX-512, else 8 (AVX2;
    an 8-aligned count costs nothing elsewhere). ``DNNSPLIT_CHANNEL_BLOCK`` overrides it (1: no alignment)."""
    override = os.environ.get("DNNSPLIT_CHANNEL_BLOCK", "").strip()
    if override:
        if not override.isdigit() or int(override) < 1:
            from dnnsplit.errors import UsageError

            raise UsageError(
                f"DNNSPLIT_CHANNEL_BLOCK must be a whole number >= 1 (got '{override}')",
                "set it to 16, 8 or 1 (no alignment), or unset it",
            )
        return int(override)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 8
    return 16 if " avx512f" in flags else 8


def _table_path(threads: int) -> Path:
    import onnxruntime

    from dnnsplit.profiling.sysinfo import cpu_model

    host = hashlib.sha256(f"{cpu_model()}|{onnxruntime.__version__}".encode()).hexdigest()[:12]
    return cache_dir() / "prune-latency" / f"{host}-t{threads}.json"


class LatencyTable:
    """Convolution latency by shape, measured on first use and kept on disk (``cache=False``: memory only)."""

    def __init__(self, threads: int = 1, repeat: int = 30, cache: bool = True) -> None:
        self.threads = threads
        self.repeat = repeat
        self.path = _table_path(threads) if cache else None
        self.entries: dict[str, float] = {}
        self.measured = 0  # shapes measured by this table (not read from the cache)
        if self.path is not None and self.path.is_file():
            try:
                self.entries = {str(k): float(v) for k, v in json.loads(self.path.read_text()).items()}
            except (ValueError, AttributeError):
                self.entries = {}  # a damaged cache is measured again

    def conv_ms(self, shape: ConvShape) -> float:
        """The conv's own time: the measured run less the runtime's fixed cost of a run (``overhead_ms``)."""
        return max(self._measured(shape) - self.overhead_ms(), 0.0)

    def overhead_ms(self) -> float:
        """What a run of a model that does (almost) nothing costs: a 1x1 conv on one 1x1 channel."""
        return self._measured(ConvShape(1, 1, (1, 1), (1, 1), (0, 0), (1, 1), 1, 1, 1))

    def _measured(self, shape: ConvShape) -> float:
        key = shape.key()
        if key not in self.entries:
            self.entries[key] = measure_conv(shape, self.threads, self.repeat)
            self.measured += 1
        return self.entries[key]

    def save(self) -> None:
        """Merge this table's entries into the cache file (another prune may have added some meanwhile)."""
        if self.path is None or not self.measured:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            merged: dict[str, float] = {}
            if self.path.is_file():
                try:
                    merged = json.loads(self.path.read_text())
                except ValueError:
                    merged = {}
            merged.update(self.entries)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(merged, sort_keys=True))
            os.replace(tmp, self.path)
            fcntl.flock(lock, fcntl.LOCK_UN)
