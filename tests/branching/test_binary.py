"""Binary layers: forward values, straight-through gradients, thresholds, export form, ONNX equality."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from dnnsplit.branching.binary import (
    BinaryConv2d,
    BinaryLinear,
    binarize_input,
    calibrate_thresholds,
    freeze,
)
from dnnsplit.branching.export import _export
from dnnsplit.branching.packing import binary_initializers, pack_bits, pack_model, unpack_bits


def _conv(groups: int = 1) -> BinaryConv2d:
    torch.manual_seed(0)
    return BinaryConv2d.from_conv(
        nn.Conv2d(4, 6 if groups == 1 else 4, 3, padding=1, groups=groups, bias=False)
    )


def test_inputs_are_strictly_plus_minus_one_even_at_the_threshold() -> None:
    x = torch.tensor([[-2.0, -0.0, 0.0, 0.5, 3.0]]).view(1, 5, 1, 1)
    threshold = torch.tensor([0.0, 0.0, 0.0, 0.5, 4.0])
    for training in (True, False):
        xb = binarize_input(x, threshold, training).flatten().tolist()
        assert xb == [-1.0, 1.0, 1.0, 1.0, -1.0]


@pytest.mark.parametrize("groups", [1, 4])
def test_conv_forward_is_scaled_sign_convolution(groups: int) -> None:
    layer = _conv(groups).eval()
    with torch.no_grad():
        layer.input_threshold.copy_(torch.tensor([0.1, -0.2, 0.0, 0.3]))
    x = torch.randn(2, 4, 5, 5)
    xb = torch.where(x >= layer.input_threshold.view(1, -1, 1, 1), 1.0, -1.0)
    signs = torch.where(layer.weight >= 0, 1.0, -1.0)
    alpha = layer.weight.abs().mean(dim=(1, 2, 3))
    expected = F.conv2d(xb, signs, padding=1, groups=groups) * alpha.view(1, -1, 1, 1)
    with torch.no_grad():
        assert torch.allclose(layer(x), expected, atol=1e-6)
        layer.train()
        assert torch.allclose(layer(x), expected, atol=1e-6)  # training mode: same values, other gradients


def test_linear_forward_is_scaled_sign_product() -> None:
    torch.manual_seed(1)
    layer = BinaryLinear.from_linear(nn.Linear(8, 3)).eval()
    x = torch.randn(4, 8)
    signs = torch.where(layer.weight >= 0, 1.0, -1.0)
    expected = torch.where(x >= 0, 1.0, -1.0) @ signs.t() * layer.weight.abs().mean(1) + layer.bias
    with torch.no_grad():
        assert torch.allclose(layer(x), expected, atol=1e-6)


def test_straight_through_gradients_are_clipped_to_the_unit_interval() -> None:
    x = torch.tensor([-2.0, -0.5, 0.0, 0.9, 1.5], requires_grad=True)
    binarize_input(x.view(1, 5), torch.zeros(5), training=True).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]

    layer = BinaryLinear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.5, 2.0]]))
    layer.train()
    layer(torch.tensor([[1.0, 1.0]])).sum().backward()
    # d/dW of (sign(W) . x) * alpha passes through sign where |W| <= 1 and stops where |W| > 1.
    assert layer.weight.grad[0, 0] != 0
    assert layer.weight.grad[0, 1] == 0


def test_thresholds_start_at_the_median_so_bits_are_balanced() -> None:
    model = nn.Sequential(nn.ReLU(), _conv())
    x = torch.rand(16, 4, 6, 6) + 0.5  # all positive: a zero threshold would give only +1
    calibrate_thresholds(model, x)
    layer = model[1]
    xb = binarize_input(x, layer.input_threshold, training=False)
    share = float((xb > 0).float().mean())
    assert 0.45 <= share <= 0.55


def test_thresholds_split_a_relu_channel_between_zero_and_positive() -> None:
    # Over half of a ReLU's outputs are exactly 0, so the median is 0. A threshold just below 0 would
    # make every sample +1 (the bit carries nothing); the balanced start puts it just above the zeros.
    model = nn.Sequential(nn.ReLU(), _conv())
    torch.manual_seed(0)
    x = torch.randn(32, 4, 6, 6) - 0.4  # about 66% negative: zeros after the ReLU
    calibrate_thresholds(model, x)
    relu = torch.relu(x)
    xb = binarize_input(relu, model[1].input_threshold, training=False)
    share = float((xb > 0).float().mean())
    assert abs(share - float((relu > 0).float().mean())) < 1e-6  # +1 exactly where the ReLU passed
    assert 0.25 < share < 0.45
    assert bool((model[1].input_threshold > 0).all())
    per_channel = relu.transpose(0, 1).flatten(1)
    smallest_positive = torch.where(per_channel > 0, per_channel, torch.inf).min(dim=1).values
    assert bool((model[1].input_threshold < smallest_positive).all())


def test_frozen_export_form_computes_the_same() -> None:
    model = nn.Sequential(_conv(), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), BinaryLinear(6 * 25, 5)).eval()
    x = torch.randn(3, 4, 5, 5)
    with torch.no_grad():
        assert torch.allclose(freeze(model)(x), model(x), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([-1.0, 1.0]), min_size=1, max_size=300))
def test_bit_packing_round_trip(values: list[float]) -> None:
    array = np.array(values, dtype=np.float32)
    packed = pack_bits(array)
    assert packed.dtype == np.uint8 and packed.size == (array.size + 7) // 8
    assert np.array_equal(unpack_bits(packed, array.size), array)


def test_packed_onnx_equals_torch_and_is_small(tmp_path) -> None:
    from dnnsplit.runtime.local import ort_session

    torch.manual_seed(2)
    model = nn.Sequential(
        BinaryConv2d.from_conv(nn.Conv2d(3, 32, 3, padding=1)),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        BinaryConv2d.from_conv(nn.Conv2d(32, 32, 3, padding=1, bias=False)),
        nn.ReLU(),
        nn.Flatten(),
        BinaryLinear(32 * 16, 10),
    ).eval()
    calibrate_thresholds(model, torch.randn(8, 3, 4, 4))
    path = tmp_path / "b.onnx"
    _export(freeze(model), torch.zeros(1, 3, 4, 4), path, ["input"], ["logits"])
    float_bytes = path.stat().st_size
    proto = onnx.load(str(path))
    assert len(binary_initializers(proto)) == 3
    report = pack_model(proto)
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))
    assert report.tensors == 3
    assert report.weights == 32 * 3 * 9 + 32 * 32 * 9 + 10 * 512
    assert report.float_bytes == 4 * (32 * 3 * 9 + 32 * 32 * 9 + 10 * 512)
    assert report.packed_bytes == (32 * 3 * 9 + 7) // 8 + (32 * 32 * 9) // 8 + (10 * 512) // 8
    assert path.stat().st_size < float_bytes / 5  # graph and BatchNorm overhead dominate a model this small
    x = torch.randn(5, 3, 4, 4)
    got = ort_session(path, 1).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(got, model(x).numpy(), atol=1e-4)
