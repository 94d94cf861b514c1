"""`split --elastic`: pieces at every candidate boundary, each layer once, every candidate chain = the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from dnnsplit.partition.elastic import ElasticSpec
from dnnsplit.splitting.chain import SegmentChain
from dnnsplit.splitting.manifest import Manifest
from tests.fixtures.assertions import assert_usage_error
from tests.fixtures.elastic import elastic_split, tiny_plan
from tests.fixtures.tiny_cli import SHAPE, TINY


@pytest.fixture(scope="module")
def prepared():
    from dnnsplit.models import ModelOptions
    from dnnsplit.profiling import prepare_model

    return prepare_model(TINY, ModelOptions(input_shape=(1, 3, 32, 32)))


def test_the_pieces_hold_every_layer_once_and_every_candidate_chain_is_the_model(
    prepared, tmp_path: Path
) -> None:
    directory = elastic_split(prepared, tmp_path / "elastic")
    manifest = Manifest.load(directory)
    spec = ElasticSpec.from_dict(manifest.elastic)
    assert [c.name for c in spec.candidates] == ["all-edge", "cut-1", "all-local"]
    assert [c.boundary for c in spec.candidates] == [0, 1, 2]
    assert sum(c.optimal_in for c in spec.candidates) == spec.grid["contexts"] == 768
    assert all(c.optimal_in > 0 for c in spec.candidates)  # each is the optimum somewhere in the sweep
    # One segment per piece, and no layer in two of them.
    assert len(manifest.segments) == len(spec.pieces) == 2
    assert sum(s.layers for s in manifest.segments) == len(prepared.graph.layers)
    assert [len(p.layers) for p in spec.pieces] == [s.layers for s in manifest.segments]
    # The 4g plan keeps everything on the phone: the tiers follow that default cut.
    assert spec.candidates[spec.default].name == "all-local"
    assert [s.tier for s in manifest.segments] == ["mobile", "mobile"]
    # cut-1 sends what crosses after piece 1: the pooled features (32 bytes), all-edge the input.
    assert spec.candidates[1].up_bytes == 32 and spec.candidates[0].up_bytes == 3 * 32 * 32 * 4
    v = manifest.validation
    assert v is not None and v.passed and set(v.per_cut) == {"all-edge", "cut-1", "all-local"}
    assert max(v.per_cut.values()) <= 1e-5
    chain = SegmentChain.load(directory)
    from dnnsplit.onnxrt import ort_session

    whole = ort_session(prepared.exported.path)
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    want = whole.run(["logits"], {"input": x})[0]
    for c in spec.candidates:
        np.testing.assert_allclose(chain.run_cut(x, c.boundary)["logits"], want, rtol=1e-5, atol=1e-6)
    block = yaml.safe_load((directory / "manifest.yaml").read_text())["elastic"]
    assert block["schema"] == "dnnsplit/elastic@1" and block["reference"]["up_mbps"] == 5.85


def test_split_elastic_from_the_cli_and_its_bad_usage(cli, prepared, tmp_path: Path) -> None:
    plan = tiny_plan(prepared, tmp_path / "plan.yaml", network="wifi")
    out = tmp_path / "cli"
    code, stdout, stderr = cli(
        "split", TINY, *SHAPE, "--plan", plan, "--elastic", "--output", out, "--no-simplify", "--format", "json"
    )
    assert code == 0, stderr
    assert "Candidate cuts: 3 over 768 contexts, 2 pieces" in stderr
    document = yaml.safe_load(stdout)
    assert [c["name"] for c in document["elastic"]["candidates"]] == ["all-edge", "cut-1", "all-local"]
    # Over wifi the plan sends the input: the default is all-edge, so the one segment set is the edge's.
    assert document["elastic"]["candidates"][document["elastic"]["default"]]["name"] == "all-edge"
    assert [s["tier"] for s in document["segments"]] == ["edge", "edge"]
    assert_usage_error(
        cli("split", TINY, *SHAPE, "--cut", "/relu/Relu_output_0", "--elastic", "--output", tmp_path / "x"),
        "--elastic finds its cuts from a plan",
    )
