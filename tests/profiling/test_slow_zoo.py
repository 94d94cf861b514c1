"""Every torchvision classification model up to 150M params: MACs/params agree, it exports and profiles."""

from __future__ import annotations

import pytest

from dnnsplit.models.torchvision_zoo import classification_model_names, default_meta

SMALL_ENOUGH = [n for n in classification_model_names() if default_meta(n)["num_params"] <= 150_000_000]


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL_ENOUGH)
def test_every_model_counts_exports_and_profiles(name: str) -> None:
    from dnnsplit.profiling import ProfileSettings, profile_model

    profile = profile_model(f"torchvision:{name}", settings=ProfileSettings(threads=2, warmup=1, repeat=3))
    meta = default_meta(name)
    assert profile.total_params == meta["num_params"]
    assert profile.total_macs == pytest.approx(meta["_ops"] * 1e9, rel=0.02)
    assert profile.latency_ms > 0
    assert all(layer.latency_ms >= 0 for layer in profile.layers)
    heavy = [la for la in profile.layers if la.macs > 0.01 * profile.total_macs]
    assert all(la.latency_ms > 0 for la in heavy), "a layer doing >1% of the MACs got no time"
