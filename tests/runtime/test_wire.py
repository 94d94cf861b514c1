"""safetensors messages: round trips, interop with the reference library, and every check naming its problem."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load, save

from dnnsplit.profiling.graph import TensorSpec
from dnnsplit.runtime.wire import WireError, check, decode, encode

SPECS = [TensorSpec("a", (1, 8, 4, 4), "float32"), TensorSpec("b", (1, 10), "float16")]


def tensors(batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "a": rng.standard_normal((batch, 8, 4, 4)).astype(np.float32),
        "b": rng.standard_normal((batch, 10)).astype(np.float16),
    }


def test_round_trip_and_interop_with_the_reference_library() -> None:
    sent = {**tensors(), "q": np.arange(12, dtype=np.uint8).reshape(3, 4)}
    body = encode(sent, {"manifest": "abc"})
    got, metadata = decode(body)
    assert metadata == {"manifest": "abc"}
    for name, value in sent.items():
        assert got[name].dtype == value.dtype and np.array_equal(got[name], value)
    assert set(load(body)) == set(sent)  # what we send, the reference reader reads
    assert np.array_equal(decode(save(sent))[0]["a"], sent["a"])  # and the other way round
    # Non-contiguous arrays (a transposed view) go out as their values.
    view = np.arange(6, dtype=np.float32).reshape(2, 3).T
    assert np.array_equal(decode(encode({"v": view}))[0]["v"], view)


@pytest.mark.parametrize(
    "payload",
    [b"", b"garbage", b"\xff" * 64, (200).to_bytes(8, "little") + b"{not json}", encode(tensors())[:-10]],
)
def test_malformed_payloads_are_400(payload: bytes) -> None:
    with pytest.raises(WireError) as info:
        decode(payload)
    assert info.value.status == 400 and info.value.code == "bad_payload"
    assert "malformed safetensors payload" in info.value.message


def test_check_accepts_a_batch_and_names_each_problem() -> None:
    assert check(tensors(3), SPECS) == 3
    cases = [
        ({**tensors(), "c": np.zeros((2, 1), np.float32)}, 422, "unknown_tensor", "'c'"),
        ({"a": tensors()["a"]}, 422, "missing_tensor", "'b'"),
        (
            {**tensors(), "a": np.zeros((2, 8, 4, 5), np.float32)},
            422,
            "wrong_shape",
            "2x8x4x5, the manifest says Nx8x4x4",
        ),
        ({**tensors(), "a": np.zeros((2, 8, 16), np.float32)}, 422, "wrong_shape", "'a'"),
        (
            {**tensors(), "b": np.zeros((2, 10), np.float32)},
            422,
            "wrong_dtype",
            "'b' is float32, the manifest says float16",
        ),
        ({**tensors(), "b": np.zeros((3, 10), np.float16)}, 422, "batch_mismatch", "'b'"),
        (tensors(0), 422, "empty_batch", "empty"),
        (tensors(9), 413, "batch_too_large", "batch 9"),
    ]
    for sent, status, code, needle in cases:
        with pytest.raises(WireError) as info:
            check(sent, SPECS, max_batch=8)
        assert (info.value.status, info.value.code) == (status, code), sent.keys()
        assert needle in info.value.message, info.value.message
