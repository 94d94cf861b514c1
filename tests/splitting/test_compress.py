"""Boundary compression: fp16 casts and int8 quantisation at each boundary, in the segments and the plan."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from dnnsplit.codecs import compressed_bytes
from dnnsplit.errors import UsageError
from dnnsplit.models import ModelOptions
from dnnsplit.onnxrt import ort_session
from dnnsplit.partition import problem_from_profile
from dnnsplit.profiling import prepare_model
from dnnsplit.profiling.graph import TensorSpec
from dnnsplit.splitting.chain import SegmentChain
from dnnsplit.splitting.split import SplitSettings, segments_from_cut_lists, split_model
from tests.fixtures.profiles import chain_profile
from tests.fixtures.tiny_cli import SKIP


@pytest.fixture(scope="module")
def tiny():
    return prepare_model("tests.fixtures.tiny_models:tiny_cnn", ModelOptions(input_shape=(1, 3, 32, 32)))


@pytest.mark.parametrize(("mode", "dtype", "shrink"), [("fp16", "float16", 2), ("int8", "uint8", 4)])
def test_compressed_boundaries(tiny, tmp_path: Path, mode: str, dtype: str, shrink: int) -> None:
    segment_of, tiers = segments_from_cut_lists(tiny.graph, [[SKIP], [SKIP, "/relu/Relu_output_0"]])
    out = tmp_path / mode
    result = split_model(
        tiny.exported.path,
        tiny.graph,
        segment_of,
        tiers,
        {},
        {"cuts": []},
        out,
        SplitSettings(compress=mode, validate=8),
    )
    m = result.manifest
    assert m.origin["compress"] == mode
    sent = m.segments[0].outputs
    assert [(t.name, t.dtype) for t in sent] == [(f"{SKIP}__{mode}", dtype)]
    assert sent[0].bytes == 8 * 32 * 32 * 4 // shrink and m.segments[0].targets[sent[0].name] == [1, 2]
    assert {t.name for t in m.segments[2].inputs} == {f"{SKIP}__{mode}", f"/relu/Relu_output_0__{mode}"}
    assert [t.name for t in m.segments[2].outputs] == ["logits"]  # model outputs are never encoded
    for seg in m.segments:
        onnx.checker.check_model(str(out / seg.file))
    v = m.validation
    assert v.criterion == "top1_agreement" and v.top1_agreement == 1.0 and v.passed
    # Not exact, but close: fp16 keeps ~3 digits, 8 bits ~2.
    assert 0 < v.max_rel_diff < (1e-3 if mode == "fp16" else 3e-2)
    x = np.random.default_rng(5).standard_normal((2, 3, 32, 32)).astype(np.float32)
    got, runs = SegmentChain.load(out).run(x)
    want = ort_session(tiny.exported.path).run(["logits"], {"input": x})[0]
    np.testing.assert_array_equal(got["logits"].argmax(1), want.argmax(1))
    assert runs[0].sent_bytes == 2 * 8 * 32 * 32 * 4 // shrink


def test_int8_codes_cover_the_calibrated_range(tiny) -> None:
    from dnnsplit.splitting.compress import calibrate

    x = [np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32) for i in range(3)]
    ((scale, zero),) = calibrate(tiny.exported.path, [SKIP], x).values()
    model = onnx.load(str(tiny.exported.path))
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(SKIP))
    session = ort_session(model.SerializeToString())
    top = max(float(session.run([SKIP], {"input": s})[0].max()) for s in x)
    # A ReLU output: its range starts at 0, so 0 is coded exactly (zero point 0) and code 255 is the max.
    assert zero == 0 and scale * 255 == pytest.approx(top, rel=1e-6)


def test_plan_counts_compressed_bytes() -> None:
    raw = problem_from_profile(chain_profile())
    packed = problem_from_profile(chain_profile(), compress="int8")
    sizes = {t.name: t.bytes for t in raw.tensors}
    for t in packed.tensors:
        expected = sizes[t.name] if t.name == "input" else sizes[t.name] // 4
        assert t.bytes == expected, t.name
    assert compressed_bytes(TensorSpec("shape", (4,), "int64"), "int8") == 32
    with pytest.raises(UsageError, match="unknown --compress 'zip'"):
        problem_from_profile(chain_profile(), compress="zip")


def test_compressing_a_single_segment_changes_nothing(tiny, tmp_path: Path) -> None:
    segment_of = {la.name: 0 for la in tiny.graph.layers}  # a plan that keeps everything on the phone
    result = split_model(
        tiny.exported.path,
        tiny.graph,
        segment_of,
        ["mobile"],
        {},
        {},
        tmp_path / "one",
        SplitSettings(compress="int8"),
    )
    (only,) = result.manifest.segments
    assert [t.name for t in only.outputs] == ["logits"] and result.manifest.validation.top1_agreement == 1.0
    assert result.manifest.validation.max_rel_diff == 0.0
