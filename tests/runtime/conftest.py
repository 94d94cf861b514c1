"""Small split directories of the tiny CNN (two and three tiers) and a whole-model reference, built once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.tiny_cli import RELU, SKIP, TINY


@pytest.fixture(scope="session")
def tiny_model():
    from dnnsplit.models import ModelOptions
    from dnnsplit.profiling import prepare_model

    return prepare_model(TINY, ModelOptions(input_shape=(1, 3, 32, 32)))


def _split(tiny_model, cuts: list[list[str]], directory: Path) -> Path:
    from dnnsplit.splitting.split import SplitSettings, segments_from_cut_lists, split_model

    segment_of, tiers = segments_from_cut_lists(tiny_model.graph, cuts)
    settings = SplitSettings(simplify=False, validate=0)
    split_model(
        tiny_model.exported.path,
        tiny_model.graph,
        segment_of,
        tiers,
        tiny_model.model_block(),
        {"cuts": cuts},
        directory,
        settings,
    )
    return directory


@pytest.fixture(scope="session")
def two_tier(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mobile (stem) -> edge (the rest)."""
    return _split(tiny_model, [[SKIP]], tmp_path_factory.mktemp("rt") / "two")


@pytest.fixture(scope="session")
def three_tier(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mobile -> edge -> cloud; the skip tensor goes from the mobile segment straight to the cloud's."""
    return _split(tiny_model, [[SKIP], [SKIP, RELU]], tmp_path_factory.mktemp("rt") / "three")


@pytest.fixture(scope="session")
def whole(tiny_model):
    """The whole model in onnxruntime: x -> logits."""
    from dnnsplit.onnxrt import ort_session

    session = ort_session(tiny_model.exported.path)
    return lambda x: session.run(["logits"], {"input": x})[0]


@pytest.fixture()
def sample() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((1, 3, 32, 32)).astype(np.float32)


@pytest.fixture(scope="session")
def edge_only(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What an all-edge plan splits into: one segment, on the edge, reading the raw input."""
    import dataclasses

    from dnnsplit.splitting.manifest import Manifest

    directory = _split(tiny_model, [], tmp_path_factory.mktemp("rt") / "edge-only")
    manifest = Manifest.load(directory)
    segment = dataclasses.replace(manifest.segments[0], tier="edge")
    dataclasses.replace(manifest, segments=(segment,)).save(directory)
    return directory
