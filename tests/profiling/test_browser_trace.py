"""onnxruntime-web's profiler trace mapped to layers (no browser needed: a trace as the page returns it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dnnsplit.errors import UsageError
from dnnsplit.profiling.browser_runtime import browser_device, browser_name, measurement_from_browser


@pytest.fixture(scope="module")
def graph():
    from dnnsplit.models import ModelOptions
    from dnnsplit.profiling import prepare_model

    return prepare_model(
        "tests.fixtures.tiny_models:tiny_cnn", ModelOptions(input_shape=(1, 3, 32, 32))
    ).graph


# One run as onnxruntime-web executes the tiny CNN: fused convolutions named after their Conv, and a node
# it made up (``Identity_7``) that no layer is named after. (node, op, start us, duration us)
KERNELS = [
    ("/stem/stem.0/Conv", "FusedConv", 2, 30),
    ("/conv_a/Conv", "FusedConv", 32, 40),
    ("Identity_7", "Identity", 72, 8),
    ("/conv_b/Conv", "FusedConv", 80, 40),
    ("/pool/GlobalAveragePool", "GlobalAveragePool", 120, 10),
    ("/Flatten", "Flatten", 130, 2),
    ("/fc/Gemm", "Gemm", 132, 8),
]


def _trace(runs: int, run_us: int = 150) -> list[dict[str, Any]]:
    events = []
    for r in range(runs):
        t0 = 1000 * (r + 1)
        events.append({"cat": "Session", "name": "model_run", "ts": t0, "dur": run_us})
        for name, op, start, dur in KERNELS:
            events.append(
                {
                    "cat": "Node",
                    "name": f"{name}_kernel_time",
                    "ts": t0 + start,
                    "dur": dur,
                    "args": {"op_name": op},
                }
            )
    return events


def _result(runs: int = 4, warmup: int = 1, whole_ms: float = 0.15) -> dict[str, Any]:
    return {
        "events": _trace(runs),
        "whole_ms": [whole_ms] * (runs - warmup),
        "warmup": warmup,
        "repeat": runs - warmup,
        "device": {
            "backend": "wasm",
            "threads": 1,
            "onnxruntime_web": "1.30.0",
            "user_agent": "x Chrome/156.0.0.0",
        },
    }


def test_every_microsecond_of_a_run_lands_on_a_layer(graph) -> None:
    measurement = measurement_from_browser(graph, _result())
    assert measurement.layer_ms.shape == (3, len(graph.layers))
    # Spans from the run's start to its end (150 us) are all charged: the sum is the whole run.
    np.testing.assert_allclose(measurement.layer_ms.sum(axis=1), 0.150, atol=1e-9)
    names = [la.name for la in graph.layers]
    per_layer = dict(zip(names, measurement.layer_ms[0], strict=True))
    # The made-up node is charged to its neighbour's group (conv_a + relu, or conv_b + add + relu), never lost.
    fused = (
        per_layer["/conv_a/Conv"]
        + per_layer["/relu/Relu"]
        + per_layer["/conv_b/Conv"]
        + per_layer["/Add"]
        + per_layer["/relu_1/Relu"]
    )
    assert fused == pytest.approx((40 + 8 + 40) / 1000, abs=1e-9)
    assert per_layer["/stem/stem.0/Conv"] + per_layer["/stem/stem.2/Relu"] == pytest.approx(0.032, abs=1e-9)
    assert per_layer["/fc/Gemm"] == pytest.approx(0.018, abs=1e-9)  # the run's tail after the last kernel
    assert measurement.notes == []


def test_profiler_slowdown_is_scaled_back(graph) -> None:
    measurement = measurement_from_browser(graph, _result(whole_ms=0.075))
    np.testing.assert_allclose(measurement.layer_ms.sum(axis=1), 0.075, atol=1e-9)
    assert "x2.00" in measurement.notes[0]


def test_a_posted_result_is_checked(graph) -> None:
    with pytest.raises(UsageError, match="whole_ms"):
        measurement_from_browser(graph, {"events": []})
    with pytest.raises(UsageError, match="no measured run"):
        measurement_from_browser(graph, _result(runs=1, warmup=1) | {"whole_ms": [0.1]})


def test_device_block_names_the_browser_and_backend() -> None:
    device = browser_device(_result(), cpu="AMD EPYC")
    assert device["runtime"] == "browser" and device["backend"] == "wasm" and device["cpu"] == "AMD EPYC"
    assert device["browser"] == "Chromium 156.0.0.0" and device["versions"]["onnxruntime-web"] == "1.30.0"
    assert browser_name("Mozilla/5.0 (X11) Gecko/20100101 Firefox/133.0") == "Firefox 133.0"
