"""Binary layers: forward values, straight-through gradients, thresholds, export form, ONNX equality."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import fx, nn
from torch.nn import functional as F

from dnnsplit.branching.binary import (
    BinaryConv2d,
    BinaryLinear,
    FrozenBinaryConv2d,
    binarize_input,
    calibrate_thresholds,
    freeze,
)
from dnnsplit.branching.export import _export
from dnnsplit.branching.packing import (
    binary_initializers,
    compact_names,
    pack_bits,
    pack_model,
    unpack_bits,
)


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


def test_frozen_export_form_computes_the_same() -> None:
    model = nn.Sequential(_conv(), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), BinaryLinear(6 * 25, 5)).eval()
    x = torch.randn(3, 4, 5, 5)
    with torch.no_grad():
        assert torch.allclose(freeze(model)(x), model(x), atol=1e-6)


def _traced_with_binary_convs(model: nn.Module) -> fx.GraphModule:
    # As the branch builder does: trace the float model (Conv2d is a leaf), then swap binary layers in.
    traced = fx.symbolic_trace(model)
    for path, layer in list(traced.named_modules()):
        if type(layer) is nn.Conv2d:
            parent, _, name = path.rpartition(".")
            setattr(traced.get_submodule(parent) if parent else traced, name, BinaryConv2d.from_conv(layer))
    traced.recompile()
    return traced


def test_freeze_folds_batchnorms_after_binary_convolutions_into_their_scale() -> None:
    torch.manual_seed(3)
    model = _traced_with_binary_convs(
        nn.Sequential(
            nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(),
            nn.Conv2d(6, 6, 3, padding=1, bias=True), nn.BatchNorm2d(6),
            nn.Flatten(), nn.Linear(6 * 25, 3),
        )
    )
    model.train()
    with torch.no_grad():
        for _ in range(5):  # non-trivial running statistics
            model(torch.randn(16, 4, 5, 5) * 3 + 1)
        for bn in (model.get_submodule("1"), model.get_submodule("4")):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    model.eval()
    frozen = freeze(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    assert sum(isinstance(m, FrozenBinaryConv2d) for m in frozen.modules()) == 2
    x = torch.randn(8, 4, 5, 5)
    with torch.no_grad():
        assert torch.allclose(frozen(x), model(x), rtol=1e-5, atol=1e-5)


class _TwoUses(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_a_batchnorm_whose_convolution_feeds_something_else_too_is_kept() -> None:
    model = _traced_with_binary_convs(_TwoUses()).eval()
    frozen = freeze(model)
    assert any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())
    x = torch.randn(2, 4, 5, 5)
    with torch.no_grad():
        assert torch.allclose(frozen(x), model(x), atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([-1.0, 1.0]), min_size=1, max_size=300))
def test_bit_packing_round_trip(values: list[float]) -> None:
    array = np.array(values, dtype=np.float32)
    packed = pack_bits(array)
    assert packed.dtype == np.uint8 and packed.size == (array.size + 7) // 8
    assert np.array_equal(unpack_bits(packed, array.size), array)


def test_packed_onnx_equals_torch_and_is_small(tmp_path) -> None:
    from dnnsplit.onnxrt import ort_session

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


def test_compact_names_keeps_the_interface_and_the_outputs(tmp_path) -> None:
    from dnnsplit.onnxrt import ort_session

    model = nn.Sequential(_conv(), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 25, 5)).eval()
    path = tmp_path / "m.onnx"
    _export(freeze(model), torch.zeros(1, 4, 5, 5), path, ["input"], ["logits"])
    proto = onnx.load(str(path))
    pack_model(proto)
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 5)).astype(np.float32)
    onnx.save(proto, str(path))
    expected = ort_session(path).run(None, {"input": x})[0]
    saved = compact_names(proto)
    onnx.checker.check_model(proto)
    assert saved > 0
    assert [v.name for v in proto.graph.input] == ["input"] and [v.name for v in proto.graph.output] == ["logits"]
    assert all(len(n.name) <= 4 for n in proto.graph.node)
    onnx.save(proto, str(path))
    np.testing.assert_array_equal(ort_session(path).run(None, {"input": x})[0], expected)


def test_real_input_layers_binarize_weights_only_and_export_without_thresholds(tmp_path) -> None:
    torch.manual_seed(4)
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=False)
    layer = BinaryConv2d.from_conv(conv, binary_input=False).eval()
    x = torch.randn(2, 4, 5, 5)
    signs = torch.where(conv.weight >= 0, 1.0, -1.0)
    scale = conv.weight.abs().flatten(1).mean(dim=1)
    with torch.no_grad():
        expected = F.conv2d(x, signs, padding=1) * scale.view(1, -1, 1, 1)
        assert torch.allclose(layer(x), expected, atol=1e-5)
    model = nn.Sequential(layer, nn.ReLU(), nn.Flatten(), BinaryLinear.from_linear(nn.Linear(150, 3), False))
    assert calibrate_thresholds(model, x) == 0  # nothing to calibrate: no layer thresholds its input
    path = tmp_path / "real.onnx"
    _export(freeze(model), torch.zeros(1, 4, 5, 5), path, ["input"], ["logits"])
    proto = onnx.load(str(path))
    assert not any(n.op_type in ("GreaterOrEqual", "Where") for n in proto.graph.node)
    assert len(binary_initializers(proto)) == 2
    with torch.no_grad():
        assert torch.allclose(freeze(model)(x), model.eval()(x), atol=1e-6)
