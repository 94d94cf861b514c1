"""onnxruntime sessions the way every part of dnnsplit opens them, and the median time of one run.

Below every package that runs ONNX files (splitting's validation, branching, pruning, runtime), so none of
them reaches up into another for a session.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


def ort_session(model: str | Path | bytes, threads: int | None = None) -> Any:
    """An onnxruntime CPU session on a model file or a serialised model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    # Intra-op threads spin between ops (waking sleeping threads costs mobilenet_v3_small 1.78 ms instead
    # of 1.12 ms, and the profiler measures with spinning), but stop when a run ends: with one session per
    # segment in one process, threads still spinning after their segment fight the running one for the
    # cores (a chain of 3 resnet18 segments took 3x the whole model on 2 cores).
    options.add_session_config_entry("session.force_spinning_stop", "1")
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def median_run_ms(
    model: str | Path,
    shape: tuple[int, ...],
    threads: int | None,
    repeat: int,
    warmup: int = 10,
    feed: np.ndarray | None = None,
) -> float:
    """Median ms of one batch-1 run of ``model`` (its first input fed random values of ``shape``, or
    ``feed``: an input of another type, such as an int8 code)."""
    session = ort_session(model, threads)
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((1, *shape[1:])).astype(np.float32) if feed is None else feed
    for _ in range(warmup):
        session.run(None, {name: x})
    times = []
    for _ in range(max(repeat, 1)):
        start = time.perf_counter()
        session.run(None, {name: x})
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.median(times))
