"""Cuts (which boundaries separate a graph), segment extraction, and chained segments == the whole model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnnsplit.errors import UsageError
from dnnsplit.models import ModelOptions
from dnnsplit.onnxrt import ort_session
from dnnsplit.profiling import prepare_model
from dnnsplit.splitting.chain import SegmentChain
from dnnsplit.splitting.cuts import check_cut, prefix_cuts, segments_from_cuts, upstream_layers
from dnnsplit.splitting.extract import plan_segments
from dnnsplit.splitting.manifest import Manifest
from dnnsplit.splitting.split import SplitSettings, segments_from_cut_lists, split_model, validate_chain
from tests.fixtures.tiny_cli import MAIN, SKIP, TINY


@pytest.fixture(scope="module")
def tiny():
    return prepare_model(TINY, ModelOptions(input_shape=(1, 3, 32, 32)))


def test_prefix_cuts_of_a_residual_block(tiny) -> None:
    cuts = prefix_cuts(tiny.graph)
    # Inside the block the skip tensor crosses beside the main path; after the Add one tensor does.
    assert [c.tensors for c in cuts[2:6]] == [
        (SKIP, "/conv_a/Conv_output_0"),
        (SKIP, "/relu/Relu_output_0"),
        (SKIP, MAIN),
        ("/Add_output_0",),
    ]
    assert cuts[4].bytes == 2 * 8 * 32 * 32 * 4
    for c in cuts:  # every prefix cut separates the graph, and its upstream side is the prefix
        assert check_cut(tiny.graph, c.tensors) == {la.name for la in tiny.graph.layers[: c.position + 1]}


def test_a_cut_missing_the_skip_path_is_rejected(tiny) -> None:
    with pytest.raises(UsageError, match=f"also read {SKIP} from before it") as info:
        check_cut(tiny.graph, [MAIN])
    assert f"--cut {MAIN},{SKIP}" in info.value.hint
    with pytest.raises(UsageError, match="unknown tensor '/conv_b/Conv_out'") as info:
        check_cut(tiny.graph, ["/conv_b/Conv_out"])
    assert f"did you mean '{MAIN}'" in info.value.hint
    with pytest.raises(UsageError, match="leaves nothing after it"):
        check_cut(tiny.graph, ["logits"])
    with pytest.raises(UsageError, match="leaves nothing before it"):
        check_cut(tiny.graph, ["input"])
    with pytest.raises(UsageError, match="cut 2 does not lie after cut 1"):
        segments_from_cuts(tiny.graph, [["/Add_output_0"], [SKIP]])


def test_segments_hand_on_tensors_to_later_segments(tiny) -> None:
    # Cut 1 after the stem, cut 2 inside the block: the skip goes from segment 1 straight to segment 3.
    segment_of = segments_from_cuts(tiny.graph, [[SKIP], [SKIP, "/relu/Relu_output_0"]])
    specs = plan_segments(tiny.graph, segment_of)
    assert [len(s.layers) for s in specs] == [2, 2, 6]
    assert specs[0].targets == {SKIP: [1, 2]}
    assert specs[2].sources == {"/relu/Relu_output_0": 1, SKIP: 0}
    assert specs[2].targets == {"logits": ["result"]}
    assert upstream_layers(tiny.graph, [SKIP]) == set(specs[0].layers)


def test_split_writes_checked_segments_and_a_manifest(tiny, tmp_path: Path) -> None:
    segment_of, tiers = segments_from_cut_lists(tiny.graph, [[SKIP], [SKIP, "/relu/Relu_output_0"]])
    out = tmp_path / "segments"
    result = split_model(
        tiny.exported.path, tiny.graph, segment_of, tiers, tiny.model_block(), {"cuts": []}, out
    )
    manifest = Manifest.load(out)
    assert manifest == result.manifest
    assert [s.tier for s in manifest.segments] == ["mobile", "edge", "cloud"]
    assert [s.file for s in manifest.segments] == ["01-mobile.onnx", "02-edge.onnx", "03-cloud.onnx"]
    assert manifest.validation.passed and manifest.validation.inputs == 3
    assert manifest.validation.max_rel_diff <= 1e-6
    import onnx

    from dnnsplit.models.export import file_sha256

    params = {}
    for seg in manifest.segments:
        model = onnx.load(str(out / seg.file))
        onnx.checker.check_model(model)
        assert seg.sha256 == file_sha256(out / seg.file) and seg.bytes == (out / seg.file).stat().st_size
        assert model.opset_import[0].version == 17
        assert [i.name for i in model.graph.input] == [t.name for t in seg.inputs]
        dims = model.graph.input[0].type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch"  # the dynamic batch axis survives
        params[seg.index] = {i.name for i in model.graph.initializer}
    assert not params[0] & params[2]  # only the initializers each segment uses
    # Batches of 4 run through the chain too.
    chain = SegmentChain.load(out)
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    got, runs = chain.run(x)
    want = ort_session(tiny.exported.path).run(["logits"], {"input": x})[0]
    np.testing.assert_allclose(got["logits"], want, rtol=1e-5, atol=1e-6)
    assert [r.sent_bytes for r in runs] == [4 * 8 * 32 * 32 * 4, 4 * 8 * 32 * 32 * 4, 0]


def test_validation_catches_a_wrong_segment(tiny, tmp_path: Path) -> None:
    import dataclasses
    import hashlib

    import onnx
    from onnx import numpy_helper

    segment_of, tiers = segments_from_cut_lists(tiny.graph, [["/Add_output_0"]])
    out = tmp_path / "segments"
    split_model(tiny.exported.path, tiny.graph, segment_of, tiers, {}, {"cuts": []}, out)
    path = out / "02-edge.onnx"
    model = onnx.load(str(path))
    weight = next(i for i in model.graph.initializer if len(i.dims) == 2)  # the classifier's weight
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.01, weight.name))
    onnx.save(model, str(path))
    # The manifest vouches for the changed file (else loading it is refused before validation runs).
    manifest = Manifest.load(out)
    edge = dataclasses.replace(
        manifest.segments[1], sha256=hashlib.sha256(path.read_bytes()).hexdigest(), bytes=path.stat().st_size
    )
    dataclasses.replace(manifest, segments=(manifest.segments[0], edge)).save(out)
    validation = validate_chain(tiny.exported.path, out, SplitSettings())
    assert not validation.passed and validation.max_rel_diff > 1e-3


def test_output_directory_rules(tiny, tmp_path: Path) -> None:
    segment_of, tiers = segments_from_cut_lists(tiny.graph, [["/Add_output_0"]])
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="exists and is not empty"):
        split_model(tiny.exported.path, tiny.graph, segment_of, tiers, {}, {}, out)
    with pytest.raises(UsageError, match="is not a split"):  # --force replaces only a split
        split_model(tiny.exported.path, tiny.graph, segment_of, tiers, {}, {}, out, SplitSettings(force=True))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    (out / "keep.txt").unlink()
    split_model(tiny.exported.path, tiny.graph, segment_of, tiers, {}, {}, out)
    split_model(tiny.exported.path, tiny.graph, segment_of, tiers, {}, {}, out, SplitSettings(force=True))
    assert sorted(p.name for p in out.iterdir()) == ["01-mobile.onnx", "02-edge.onnx", "manifest.yaml"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".busy")]  # no staging left


MODELS = ["resnet18", "mobilenet_v3_small", "densenet121", "googlenet"]


@pytest.fixture(scope="module")
def zoo():
    return {name: prepare_model(f"torchvision:{name}") for name in MODELS}


def check_random_cuts(prepared, data: st.DataObject, out: Path) -> None:
    """Split at 1 or 2 random prefix cuts: the chain equals the whole model, and exactly the cut crosses."""
    cuts = prefix_cuts(prepared.graph)
    count = data.draw(st.integers(1, 2), label="boundaries")
    picked = sorted(
        data.draw(st.lists(st.sampled_from(range(len(cuts))), min_size=count, max_size=count, unique=True))
    )
    boundaries = [list(cuts[i].tensors) for i in picked]
    segment_of, tiers = segments_from_cut_lists(prepared.graph, boundaries)
    result = split_model(
        prepared.exported.path,
        prepared.graph,
        segment_of,
        tiers,
        prepared.model_block(),
        {"cuts": boundaries},
        out,
        SplitSettings(validate=1, simplify=data.draw(st.booleans(), label="simplify")),
    )
    v = result.manifest.validation
    assert v.passed and v.max_rel_diff <= 1e-5, (prepared.loaded.name, picked, v)
    assert len(result.manifest.segments) == count + 1
    for k, boundary in enumerate(boundaries):
        crossing = {
            t.name
            for s in result.manifest.segments[: k + 1]
            for t in s.outputs
            if any(x != "result" and x > k for x in s.targets[t.name])
        }
        assert crossing == set(boundary), (prepared.loaded.name, k)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_cuts_chain_to_the_whole_model(zoo, tmp_path_factory, data) -> None:
    name = data.draw(st.sampled_from(MODELS), label="model")
    check_random_cuts(zoo[name], data, tmp_path_factory.mktemp("split") / name)


def test_large_segments_use_external_data(tiny, tmp_path: Path, monkeypatch) -> None:
    """Segments over protobuf's 2 GB limit go through ONNX external data (the threshold lowered to test it)."""
    from dnnsplit.splitting import split as split_module

    monkeypatch.setattr(split_module, "EXTERNAL_DATA_BYTES", 1_000)
    segment_of, tiers = segments_from_cut_lists(tiny.graph, [["/Add_output_0"]])
    out = tmp_path / "big"
    result = split_model(tiny.exported.path, tiny.graph, segment_of, tiers, {}, {"cuts": []}, out)
    first = result.manifest.segments[0]
    data = out / f"{first.file}.data"
    assert data.is_file() and first.bytes == (out / first.file).stat().st_size + data.stat().st_size
    assert any("over 2 GB" in note for note in first.notes)  # onnxsim cannot take it: kept as is
    assert result.manifest.validation.passed  # onnxruntime reads the external data


@pytest.mark.slow
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_cuts_of_vit_chain_to_the_whole_model(tmp_path_factory, data) -> None:
    check_random_cuts(_vit(), data, tmp_path_factory.mktemp("vit") / "split")


_VIT: list = []


def _vit():
    if not _VIT:
        _VIT.append(prepare_model("torchvision:vit_b_16"))
    return _VIT[0]
