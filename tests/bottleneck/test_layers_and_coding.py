"""The bottleneck's pieces without training: rounding, the int8 code, zstd, the rate term, the ONNX export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from dnnsplit.bottleneck.coding import decode_code, encode_code, measure_coded
from dnnsplit.bottleneck.export import check_chain, export_bottleneck
from dnnsplit.bottleneck.layers import (
    CODE_MAX,
    CODE_MIN,
    CODE_NAME,
    BottleneckModel,
    Decoder,
    Encoder,
    round_code,
)
from dnnsplit.branching.points import resolve_point, split_at, trace
from dnnsplit.models import ModelOptions, load_model
from dnnsplit.onnxrt import ort_session


def test_rounding_passes_the_gradient_straight_through_and_clips_to_int8() -> None:
    latent = torch.tensor([-300.0, -2.6, -0.4, 0.5, 1.5, 2.4, 125.7, 400.0], requires_grad=True)
    code = round_code(latent)
    # Round half to even (torch and ONNX agree), clipped to the symmetric int8 range.
    assert code.tolist() == [CODE_MIN, -3.0, -0.0, 0.0, 2.0, 2.0, 126.0, CODE_MAX]
    code.sum().backward()
    assert latent.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # none through the clip


def test_decoder_restores_the_cut_shape_also_for_an_odd_size_with_a_stride() -> None:
    encoder, decoder = Encoder(16, 4, stride=2), Decoder(4, 16, size=(7, 7))
    code = encoder(torch.randn(2, 16, 7, 7))
    assert tuple(code.shape) == (2, 4, 4, 4)
    assert tuple(decoder(code).shape) == (2, 16, 7, 7)


def _tiny_bottleneck(channels: int = 3) -> tuple[object, BottleneckModel]:
    loaded = load_model("tests.fixtures.tiny_models:digits_net", ModelOptions(input_shape=(1, 3, 16, 16)))
    gm = trace(loaded.module.eval())
    stem, rest = split_at(gm, resolve_point(gm, "block1"))
    torch.manual_seed(0)
    model = BottleneckModel(stem, Encoder(32, channels), Decoder(channels, 32), rest).eval()
    return loaded, model


def test_eval_code_is_int8_and_the_forward_is_decode_of_code() -> None:
    _, model = _tiny_bottleneck()
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        code = model.code(x)
        assert code.dtype == torch.int8 and tuple(code.shape) == (5, 3, 8, 8)
        assert torch.equal(model(x), model.decode(code))
        # The code is the encoder's output in steps of model.step, rounded.
        expected = torch.clamp(torch.round(model.encoder(model.stem(x)) / model.step), -127, 127)
        assert torch.equal(code.to(torch.float32), expected)


def test_export_names_the_code_and_the_onnx_chain_equals_torch(tmp_path: Path) -> None:
    loaded, model = _tiny_bottleneck()
    files = export_bottleneck(loaded, model, tmp_path)
    whole = onnx.load(str(files.model))
    assert [i.name for i in whole.graph.input] == ["input"] and [o.name for o in whole.graph.output] == [
        "logits"
    ]
    encoder, decoder = onnx.load(str(files.encoder)), onnx.load(str(files.decoder))
    assert [o.name for o in encoder.graph.output] == [CODE_NAME]
    assert encoder.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT8
    assert [i.name for i in decoder.graph.input] == [CODE_NAME]
    x = np.random.default_rng(0).standard_normal((6, 3, 16, 16)).astype(np.float32)
    code = ort_session(files.encoder, 1).run(None, {"input": x})[0]
    logits = ort_session(files.decoder, 1).run(None, {CODE_NAME: code})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
        assert np.array_equal(code, model.code(torch.from_numpy(x)).numpy())
    assert np.allclose(logits, expected, atol=1e-4)
    # The whole file gives the same logits as the chain of its two halves (batch axis dynamic in all).
    assert np.allclose(ort_session(files.model, 1).run(None, {"input": x})[0], logits, atol=1e-5)
    check = check_chain(files, model, x, threads=1)
    assert check.passed and check.top1_mismatches == 0 and check.code_elements == code.size


def test_zstd_round_trips_exactly_and_measures_what_it_sends() -> None:
    rng = np.random.default_rng(0)
    code = rng.integers(-5, 6, size=(1, 8, 8, 8), dtype=np.int8)
    data = encode_code(code)
    assert np.array_equal(decode_code(data, code.shape), code)
    with pytest.raises(ValueError, match="bytes"):
        decode_code(data, (1, 8, 8, 4))  # a frame that holds more than the declared shape
    zeros = [np.zeros((1, 4, 8, 8), dtype=np.int8)] * 3
    noise = [rng.integers(-127, 128, size=(1, 4, 8, 8), dtype=np.int8) for _ in range(3)]
    few = measure_coded(zeros)
    many = measure_coded(noise)
    assert few.samples == 3 and few.mean == few.p95 == len(encode_code(zeros[0])) < 32  # 256 zeros: tiny
    assert many.minimum >= 256  # uniform bytes do not compress: the frame is at least the raw code
    sizes = [len(encode_code(c)) for c in noise]
    assert many.mean == pytest.approx(np.mean(sizes)) and many.maximum == max(sizes)


@pytest.mark.slow  # importing compressai alone takes ~10 s of CPU (it pulls in torch_geometric)
def test_rate_term_counts_more_bits_for_a_wider_code() -> None:
    pytest.importorskip("compressai")
    from dnnsplit.bottleneck.rate import bits_per_element, rate_model

    torch.manual_seed(0)
    rate = rate_model(4)
    optimizer = torch.optim.Adam(rate.parameters(), lr=0.05)
    narrow = torch.randn(16, 4, 4, 4)
    for _ in range(100):  # fit the factorised density to a unit-spread code
        optimizer.zero_grad()
        bits_per_element(rate, narrow).backward()
        optimizer.step()
    latent = narrow.clone().requires_grad_(True)
    bits = bits_per_element(rate, latent)
    bits.backward()
    assert latent.grad is not None and float(latent.grad.abs().sum()) > 0  # it trains the encoder
    # A unit Gaussian rounded to integers has about 2.1 bits of entropy; ten times wider, far more.
    assert 1.5 < float(bits.detach()) < 3.0
    assert float(bits_per_element(rate, narrow * 10)) > float(bits.detach()) + 2


def test_rate_model_without_compressai_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from dnnsplit.bottleneck.rate import rate_model
    from dnnsplit.errors import UsageError

    monkeypatch.setitem(sys.modules, "compressai", None)
    monkeypatch.setitem(sys.modules, "compressai.entropy_models", None)
    with pytest.raises(UsageError, match="compressai") as info:
        rate_model(4)
    assert "--lambda 0" in info.value.one_line()


def test_modules_are_small_next_to_the_cut() -> None:
    # A 1x1 encoder and a 3x3 + 1x1 decoder: what the phone gains is the encoder's few weights.
    encoder, decoder = Encoder(64, 8), Decoder(8, 64)
    assert sum(p.numel() for p in encoder.parameters()) == 64 * 8 + 2 * 8
    assert isinstance(decoder.up, nn.Identity)
