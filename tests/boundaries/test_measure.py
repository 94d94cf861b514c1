"""`dnnsplit boundaries` on the tiny CNN and real digits: what it measures obeys what each codec is, and the
file round-trips into what the planner reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dnnsplit.boundaries.measure import MeasureSettings, coded_model, measure_boundaries, split_images
from dnnsplit.partition.boundary_costs import BoundaryCosts
from tests.fixtures.tiny_cli import RELU, TINY


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[BoundaryCosts, Path]:
    from dnnsplit.models import ModelOptions
    from dnnsplit.profiling import prepare_model

    prepared = prepare_model(TINY, ModelOptions(input_shape=(1, 3, 32, 32)))
    images, labels = split_images("digits", (1, 3, 32, 32), 30)
    assert images.shape == (30, 3, 32, 32) and labels.shape == (30,)
    costs = measure_boundaries(prepared, images, labels, MeasureSettings(samples=3, accuracy_samples=30), "digits")
    path = tmp_path_factory.mktemp("boundaries") / "boundaries.json"
    costs.save(path)
    return costs, path


def test_each_codec_shrinks_what_it_should(measured) -> None:
    costs, _ = measured
    relu = costs.tensors[RELU]  # 8x32x32 float32 after a ReLU: 32,768 bytes, half of them zeros
    assert relu.float32_bytes == 32768
    size = {o.label: o.bytes_mean for o in relu.options}
    header = size["none"] - 32768
    assert 0 < header < 200  # the safetensors message: the tensor plus its JSON header
    assert size["fp16"] == pytest.approx(16384 + header, abs=16) and size["int8"] == pytest.approx(8192 + header, abs=16)
    for codec in ("none", "fp16", "int8"):  # zeros code well: lossless coding pays after a ReLU
        assert size[f"{codec}+zstd"] < 0.9 * size[codec] and size[f"{codec}+deflate"] < 0.9 * size[codec]
    assert all(o.bytes_p95 >= o.bytes_mean * 0.99 and o.encode_ms >= 0 and o.decode_ms >= 0 for o in relu.options)
    none = relu.option("none", "identity")
    assert none.accuracy_drop == 0.0 and none.agreement == 1.0
    assert costs.base_top1 is not None and 0 <= costs.base_top1 <= 100
    assert costs.input is not None and costs.input.raw_bytes == 3 * 32 * 32 * 4
    assert 200 < costs.input.jpeg_mean < costs.input.raw_bytes and costs.input.frames == 30
    assert costs.accuracy_scope == "all-boundaries" and len(costs.codecs) == 9


def test_the_file_round_trips(measured) -> None:
    costs, path = measured
    again = BoundaryCosts.load(path)
    assert again == costs
    assert again.model["sha256"] and again.samples["bytes_and_times"] == 3


def test_a_coded_model_is_the_model_with_each_tensor_through_the_codec(measured) -> None:
    from dnnsplit.models import ModelOptions
    from dnnsplit.onnxrt import ort_session
    from dnnsplit.profiling import prepare_model
    from dnnsplit.splitting.compress import calibrate

    prepared = prepare_model(TINY, ModelOptions(input_shape=(1, 3, 32, 32)))
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    path = prepared.exported.path
    codes = calibrate(path, [RELU], [x])
    plain = ort_session(path).run(None, {"input": x})[0]
    int8 = ort_session(coded_model(path, [RELU], "int8", codes)).run(None, {"input": x})[0]
    fp16 = ort_session(coded_model(path, [RELU], "fp16", {})).run(None, {"input": x})[0]
    assert not np.array_equal(int8, plain)  # quantised: close, not equal
    np.testing.assert_allclose(int8, plain, atol=0.05 * np.abs(plain).max())
    np.testing.assert_allclose(fp16, plain, rtol=1e-2, atol=1e-3)
