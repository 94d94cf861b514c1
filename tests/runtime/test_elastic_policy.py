"""A trained context policy (`dnnsplit rl train`) choosing an elastic split's cut per frame (`infer --policy`):
the client's estimate becomes the policy's context, its action one of the split's cuts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dnnsplit.errors import UsageError
from dnnsplit.partition.elastic import Context, ElasticSpec, decide, predict_ms
from dnnsplit.partition.rl.contexts import apply_context
from dnnsplit.partition.rl.elastic_policy import ElasticPolicy
from dnnsplit.splitting.manifest import Manifest
from tests.fixtures.elastic import elastic_split, tiny_devices, tiny_profile

SMALL_SEARCH = {"batch": 100, "min_contexts": 200, "max_contexts": 1000}


@pytest.fixture(scope="module")
def elastic(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return elastic_split(tiny_model, tmp_path_factory.mktemp("elastic-policy") / "split")


def _train(profile, path: Path, timesteps: int = 4096) -> Path:
    from dnnsplit.partition import problem_from_profile
    from dnnsplit.partition.rl.policy_file import save_policy
    from dnnsplit.partition.rl.train import Scenario, default_space, train_policy

    base = problem_from_profile(profile, tiers=("mobile", "edge"), devices=tiny_devices(), links={"mobile-edge": "4g"})
    policy = train_policy(
        base,
        Scenario("context", default_space(base)),
        timesteps=timesteps,
        seed=3,
        model={"name": "tiny", "sha256": "0" * 64},
        candidate_options=SMALL_SEARCH,
    )
    save_policy(path, policy.meta, policy.weights)
    return path


@pytest.fixture(scope="module")
def policy_zip(tiny_model, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short PPO training on the plan's own problem (the tiny CNN's made-up profile, its devices, 4g)."""
    return _train(tiny_profile(tiny_model), tmp_path_factory.mktemp("rl") / "policy.zip")


def _contexts(n: int, seed: int = 0) -> list[Context]:
    rng = np.random.default_rng(seed)
    return [
        Context(
            up_mbps=float(np.exp(rng.uniform(np.log(0.1), np.log(200)))),
            down_mbps=float(np.exp(rng.uniform(np.log(0.5), np.log(400)))),
            rtt_ms=float(rng.uniform(2, 150)),
            phone_speed=float(np.exp(rng.uniform(np.log(0.5), np.log(2)))),
            edge_load=float(np.exp(rng.uniform(0, np.log(8)))),
        )
        for _ in range(n)
    ]


def test_the_estimate_becomes_the_policys_context(elastic: Path, policy_zip: Path) -> None:
    from dnnsplit.partition.rl.policy_file import load_policy

    spec = ElasticSpec.from_dict(Manifest.load(elastic).elastic)
    chooser = ElasticPolicy.fit(load_policy(policy_zip), spec)
    for context in _contexts(20):
        seen = apply_context(chooser.policy.base, chooser.policy_context(context))
        # the problem the policy sees prices the phone and the edge as the split's profile at this speed/load
        assert sum(la.compute_ms[0] for la in seen.layers) == pytest.approx(
            spec.phone_ms(len(spec.pieces)) / context.phone_speed
        )
        assert sum(la.compute_ms[1] for la in seen.layers) == pytest.approx(spec.edge_ms(0) * context.edge_load)
        link = seen.links[0]
        assert (link.up_mbps, link.down_mbps, link.rtt_ms) == (context.up_mbps, context.down_mbps, context.rtt_ms)


def test_the_policy_picks_the_cut_nearest_its_action_and_mostly_the_optimum(
    elastic: Path, policy_zip: Path
) -> None:
    from dnnsplit.partition.rl.policy_file import load_policy

    spec = ElasticSpec.from_dict(Manifest.load(elastic).elastic)
    chooser = ElasticPolicy.fit(load_policy(policy_zip), spec)
    on_phone = {c.name: sum(len(p.layers) for p in spec.pieces[: c.boundary]) for c in spec.candidates}
    agree, gaps = 0, []
    contexts = _contexts(200, seed=1)
    for context in contexts:
        got = chooser.decide(context)
        assert got.by == "rl" and got.to_dict()["chosen_by"] == "rl"
        nearest = min(abs(n - got.policy_layers) for n in on_phone.values())
        assert abs(on_phone[got.candidate.name] - got.policy_layers) == nearest
        assert got.predicted_ms == pytest.approx(predict_ms(spec, got.candidate, context))
        exact = decide(spec, context)
        agree += got.candidate.name == exact.candidate.name
        gaps.append(got.predicted_ms / exact.predicted_ms - 1)
    # A 4096-step policy on this 3-cut split: it is the exact choice in most contexts, and close where not.
    assert agree >= 0.8 * len(contexts), (agree, float(np.mean(gaps)))
    assert float(np.mean(gaps)) < 0.1
    assert chooser.decide(contexts[0], allowed=[len(spec.pieces)]).candidate.name == "all-local"


def test_the_client_runs_the_policys_cut_and_infer_says_so(
    cli, elastic: Path, policy_zip: Path, whole, sample: np.ndarray, tmp_path: Path
) -> None:
    from dnnsplit.partition.network import LinkSpec
    from dnnsplit.runtime.elastic import ElasticClient, ElasticSettings
    from dnnsplit.runtime.server import ServeSettings, serving

    fast = LinkSpec(100.0, 100.0, 2.0, name="fast")
    with serving(elastic, ServeSettings(tier="edge")) as edge:
        settings = ElasticSettings(policy=str(policy_zip))
        with ElasticClient(elastic, edge.url, link=fast, settings=settings) as client:
            frames = [client.infer(sample) for _ in range(4)]
        np.save(tmp_path / "frames.npy", np.repeat(sample, 2, axis=0))
        code, stdout, stderr = cli(
            "infer", elastic, "--edge", edge.url, "--frames", tmp_path / "frames.npy", "--policy", policy_zip,
            "--format", "json",
        )  # fmt: skip
    for f in frames:
        assert f.decision.by == "rl" and f.result.fallback is None
        assert f.cut == client.chooser.decide(f.decision.context, client.allowed()).candidate.name
        np.testing.assert_allclose(f.result.outputs["logits"], whole(sample), rtol=1e-5, atol=1e-6)
    assert code == 0, stderr
    rows = json.loads(stdout)["frames"]
    assert len(rows) == 2 and {r["chosen_by"] for r in rows} == {"rl"}
    assert all(isinstance(r["policy_layers_on_phone"], int) for r in rows)


def test_a_policy_for_another_model_or_a_plain_split_is_one_clear_error(
    cli, elastic: Path, policy_zip: Path, edge_only: Path, sample: np.ndarray, tmp_path: Path
) -> None:
    from dnnsplit.partition.rl.policy_file import load_policy
    from tests.fixtures.profiles import chain_profile

    other = _train(chain_profile(), tmp_path / "chain.zip", timesteps=256)
    spec = ElasticSpec.from_dict(Manifest.load(elastic).elastic)
    with pytest.raises(UsageError, match="trained for another model or profile"):
        ElasticPolicy.fit(load_policy(other), spec)
    np.save(tmp_path / "x.npy", sample)
    code, _, stderr = cli("infer", elastic, "--edge", "http://127.0.0.1:9", "--input", tmp_path / "x.npy",
                          "--policy", other)  # fmt: skip
    assert code == 2 and "trained for another model or profile" in stderr and "Traceback" not in stderr
    code, _, stderr = cli("infer", elastic, "--edge", "http://127.0.0.1:9", "--input", tmp_path / "x.npy",
                          "--policy", tmp_path / "missing.zip")  # fmt: skip
    assert code == 2 and "policy file not found" in stderr
    code, _, stderr = cli("infer", edge_only, "--edge", "http://127.0.0.1:9", "--input", tmp_path / "x.npy",
                          "--policy", policy_zip)  # fmt: skip
    assert code == 2 and "--policy chooses among an elastic split's cuts" in stderr
