"""The deep-RL partitioner's library: contexts, candidates, environments, simulator, policy file, training."""

from __future__ import annotations

import base64
import io
import json
import math
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

from dnnsplit.errors import UsageError
from dnnsplit.partition import evaluate, problem_from_profile, solve
from dnnsplit.partition.rl import rules
from dnnsplit.partition.rl.candidates import (
    CandidateSet,
    build_candidates,
    exact_assignment,
    idle_edge_assignment,
)
from dnnsplit.partition.rl.context_env import ContextEnv
from dnnsplit.partition.rl.contexts import Context, apply_context, context_of
from dnnsplit.partition.rl.decide import plan_with_policy
from dnnsplit.partition.rl.evaluate import evaluate_context
from dnnsplit.partition.rl.multiuser import MultiUserConfig, Simulator
from dnnsplit.partition.rl.multiuser_env import MultiUserEnv
from dnnsplit.partition.rl.policy_file import load_policy, save_policy
from dnnsplit.partition.rl.train import Scenario, default_space, find_candidates, train_policy
from tests.fixtures.profiles import chain_profile, residual_profile

SMALL_SEARCH = {"batch": 100, "min_contexts": 200, "max_contexts": 1000}


def _base(profile=None, tiers=("mobile", "edge"), **kwargs):
    return problem_from_profile(profile or chain_profile(), tiers=tiers, **kwargs)


@pytest.fixture(
    scope="module", params=[("mobile", "edge"), ("mobile", "edge", "cloud")], ids=["2-tier", "3-tier"]
)
def context_setup(request):
    base = _base(tiers=request.param)
    space = default_space(base)
    candidates, report = build_candidates(base, space, seed=0, **SMALL_SEARCH)
    assert report.converged
    return base, space, candidates


@pytest.fixture(scope="module")
def multiuser_setup():
    # A 30 kB frame: offloading pays on fast links and not on 3G, so the edge both helps and queues.
    base = _base(chain_profile(20.0), input_bytes=30_000)
    config = MultiUserConfig(users=20, episode_requests=64)
    scenario = Scenario("multiuser", default_space(base), config)
    candidates, _ = find_candidates(base, scenario, seed=0, **SMALL_SEARCH)
    return base, config, candidates


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short context-scenario training on the chain model, saved and read back."""
    base = _base()
    policy = train_policy(
        base,
        Scenario("context", default_space(base)),
        timesteps=4096,
        seed=3,
        model={"name": "chain", "sha256": "0" * 64},
        candidate_options=SMALL_SEARCH,
    )
    path = tmp_path_factory.mktemp("rl") / "policy.zip"
    save_policy(path, policy.meta, policy.weights)
    return load_policy(path)


# --- contexts and candidates ---


def test_apply_context_scales_compute_and_replaces_links(context_setup) -> None:
    base, space, _ = context_setup
    ctx = space.sample(np.random.default_rng(1))
    problem = apply_context(base, ctx)
    for la, lb in zip(base.layers, problem.layers, strict=True):
        assert lb.compute_ms == pytest.approx([c * s for c, s in zip(la.compute_ms, ctx.scales, strict=True)])
    assert problem.links == ctx.links and problem.objective.energy == ctx.objective.energy
    back = context_of(base, problem)
    assert back.scales == pytest.approx(ctx.scales) and back.links == ctx.links


def test_features_are_in_the_unit_box_and_clip_outside_the_ranges(context_setup) -> None:
    base, space, _ = context_setup
    rng = np.random.default_rng(0)
    for _ in range(50):
        f = space.features(space.sample(rng))
        assert f.shape == (space.n_features,) and f.dtype == np.float32
        assert np.all(f >= -1) and np.all(f <= 1)
    ctx = space.sample(rng)
    slow = Context(
        (type(ctx.links[0])(0.001, 0.002, 1000.0, radio="lte"),) + ctx.links[1:], ctx.scales, ctx.objective
    )
    assert space.features(slow)[0] == -1.0 and space.features(slow)[2] == 1.0


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_candidate_costs_equal_the_cost_model(context_setup, seed: int) -> None:
    base, space, candidates = context_setup
    ctx = space.sample(np.random.default_rng(seed))
    costs = candidates.costs(ctx)
    problem = apply_context(base, ctx)
    for i, assignment in enumerate(candidates.assignments):
        pred = evaluate(problem, assignment)
        assert costs.latency_ms[i] == pytest.approx(pred.latency_ms, rel=1e-12)
        assert costs.objective[i] == pytest.approx(pred.objective, rel=1e-12)
        assert costs.energy_mj[i] == pytest.approx(pred.energy_mj, rel=1e-12)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_candidate_set_contains_the_exact_optimum(context_setup, seed: int) -> None:
    base, space, candidates = context_setup
    ctx = space.sample(np.random.default_rng(seed))
    exact = solve(apply_context(base, ctx), with_baselines=False).prediction.objective
    assert candidates.costs(ctx).objective.min() == pytest.approx(exact, rel=1e-9)
    assert rules.exact(candidates, ctx) == int(np.argmin(candidates.costs(ctx).objective))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_candidate_set_of_a_residual_dag_contains_the_exact_optimum(seed: int) -> None:
    base = _base(residual_profile(), tiers=("mobile", "edge", "cloud"))
    candidates = _residual_candidates(base)
    space = default_space(base)
    ctx = space.sample(np.random.default_rng(seed))
    _, exact = exact_assignment(base, ctx)
    assert candidates.costs(ctx).objective.min() == pytest.approx(exact, rel=1e-9)


_CACHE: dict[str, CandidateSet] = {}


def _residual_candidates(base) -> CandidateSet:
    if "residual" not in _CACHE:
        _CACHE["residual"] = build_candidates(base, default_space(base), seed=0, **SMALL_SEARCH)[0]
    return _CACHE["residual"]


def test_candidates_always_hold_every_single_tier_plan(context_setup) -> None:
    base, _, candidates = context_setup
    for k in range(len(base.tiers)):
        assert candidates.assignments[candidates.single_tier(k)] == (k,) * base.n
    edge = base.tiers.index("edge")
    assert (
        candidates.uses_edge[candidates.single_tier(edge)]
        and not candidates.uses_edge[candidates.single_tier(0)]
    )


def test_idle_edge_assignment_computes_nothing_on_the_edge() -> None:
    base = _base(tiers=("mobile", "edge", "cloud"))
    ctx = default_space(base).sample(np.random.default_rng(5))
    assignment = idle_edge_assignment(base, ctx)
    assert assignment is not None and 1 not in assignment


# --- the context environment ---


def test_context_env_passes_the_gymnasium_checker(context_setup) -> None:
    _, space, candidates = context_setup
    check_env(ContextEnv(candidates, space), skip_render_check=True)
    check_env(ContextEnv(candidates, space, reward="relative"), skip_render_check=True)


def test_context_reward_is_minus_the_cost_model_objective(context_setup) -> None:
    base, space, candidates = context_setup
    env = ContextEnv(candidates, space)
    rng = np.random.default_rng(7)
    for _ in range(5):
        ctx = space.sample(rng)
        for action, assignment in enumerate(candidates.assignments):
            obs, _ = env.reset(options={"context": ctx})
            assert np.array_equal(obs, space.features(ctx))
            _, reward, terminated, truncated, info = env.step(action)
            assert reward == pytest.approx(
                -evaluate(apply_context(base, ctx), assignment).objective, rel=1e-12
            )
            assert terminated and not truncated
            exact = solve(apply_context(base, ctx), with_baselines=False).prediction.objective
            assert info["best_objective"] == pytest.approx(exact, rel=1e-9)


def test_relative_reward_is_zero_exactly_for_the_optimum(context_setup) -> None:
    _, space, candidates = context_setup
    env = ContextEnv(candidates, space, reward="relative")
    ctx = space.sample(np.random.default_rng(11))
    values = candidates.costs(ctx).objective
    for action in range(len(candidates)):
        env.reset(options={"context": ctx})
        _, reward, *_ = env.step(action)
        assert reward == pytest.approx(1.0 - min(values[action] / values.min(), 5.0))
        assert (reward == 0.0) == bool(values[action] == values.min())


def test_unknown_reward_is_a_usage_error(context_setup) -> None:
    _, space, candidates = context_setup
    with pytest.raises(UsageError, match="unknown reward"):
        ContextEnv(candidates, space, reward="speed")


# --- the multi-user simulator and environment ---


def _run(candidates, config, load, seed, requests, choose):
    sim = Simulator(candidates, config, load, seed)
    predicted = corrections = 0.0
    for _ in range(requests):
        request, state = sim.next_request()
        predicted += sim.dispatch(request, state, choose(state))
        corrections += sim.take_correction()
    sim.drain()
    return sim, predicted + corrections + sim.take_correction()


@pytest.mark.parametrize("rule", ["myopic", "all-edge", "load-aware"])
def test_simulator_conserves_requests(multiuser_setup, rule: str) -> None:
    _, config, candidates = multiuser_setup
    choose = {
        "myopic": lambda s: rules.exact(candidates, s.context),
        "all-edge": lambda s: candidates.single_tier(1),
        "load-aware": lambda s: rules.load_aware(candidates, s.context, s.edge_wait_ms),
    }[rule]
    sim, booked = _run(candidates, config, 1.2, seed=4, requests=600, choose=choose)
    assert len(sim.requests) == 600 and [r.id for r in sim.requests] == list(range(600))
    assert sim.in_system == 0  # every arrival completed, once: the counter went up and down once each
    latencies = np.array([r.latency for r in sim.requests])
    assert np.all(np.isfinite(latencies)) and np.all(latencies >= 0)
    assert all(r.edge_wait >= 0 and r.phone_wait >= 0 for r in sim.requests)
    # Predictions plus corrections are the true latencies; the area under "requests in system" is their sum.
    assert booked == pytest.approx(latencies.sum(), rel=1e-9)
    assert sim.take_area() == pytest.approx(latencies.sum(), rel=1e-9)


def test_an_unloaded_request_takes_the_cost_model_latency(multiuser_setup) -> None:
    base, config, candidates = multiuser_setup
    for action in range(len(candidates)):
        sim = Simulator(candidates, config, 1e-3, seed=action)  # one request in a long while: no queue
        request, state = sim.next_request()
        sim.dispatch(request, state, action)
        sim.drain()
        expected = evaluate(apply_context(base, state.context), candidates.assignments[action]).latency_ms
        assert request.latency == pytest.approx(expected, rel=1e-9)
        assert request.edge_wait == 0 and request.phone_wait == 0


def test_queue_delay_grows_with_load(multiuser_setup) -> None:
    _, config, candidates = multiuser_setup
    waits = []
    for load in (0.2, 0.6, 0.9, 1.3):
        sim, _ = _run(
            candidates, config, load, seed=9, requests=1500, choose=lambda s: candidates.single_tier(1)
        )
        waits.append(np.mean([r.edge_wait for r in sim.requests]))
    assert waits == sorted(waits) and waits[0] < 0.2 * waits[-1]


def test_traces_do_not_depend_on_decisions(multiuser_setup) -> None:
    _, config, candidates = multiuser_setup
    a, _ = _run(candidates, config, 0.8, seed=2, requests=200, choose=lambda s: candidates.single_tier(0))
    b, _ = _run(candidates, config, 0.8, seed=2, requests=200, choose=lambda s: candidates.single_tier(1))
    assert [(r.arrival, r.user) for r in a.requests] == [(r.arrival, r.user) for r in b.requests]


def test_load_aware_is_myopic_with_an_empty_queue_and_local_with_a_long_one(multiuser_setup) -> None:
    _, config, candidates = multiuser_setup
    rng = np.random.default_rng(0)
    for _ in range(20):
        ctx = config.sample_context(rng, ("mobile", "edge"))
        assert rules.load_aware(candidates, ctx, 0.0) == rules.exact(candidates, ctx)
        assert not candidates.uses_edge[rules.load_aware(candidates, ctx, 1e7)]


def test_multiuser_env_passes_the_gymnasium_checker(multiuser_setup) -> None:
    _, config, candidates = multiuser_setup
    check_env(MultiUserEnv(candidates, config), skip_render_check=True)


def test_multiuser_episode_return_is_minus_the_latencies(multiuser_setup) -> None:
    _, config, candidates = multiuser_setup
    env = MultiUserEnv(candidates, config, load=0.9)
    env.reset(seed=1)
    total, steps, truncated = 0.0, 0, False
    while not truncated:
        _, reward, terminated, truncated, _ = env.step(rules.exact(candidates, env.state.context))
        assert not terminated
        total += reward
        steps += 1
    assert steps == config.episode_requests
    sim = env.sim
    placed = sim.requests[: config.episode_requests]
    pending = sim.take_correction()
    sim.drain()
    pending += sim.take_correction()
    expected = sum(r.latency for r in placed) / env.reference_ms
    assert -total + pending / env.reference_ms == pytest.approx(expected, rel=1e-9)


# --- policy file, training, evaluation ---


def test_actor_matches_sb3_predict(trained) -> None:
    model = trained.sb3_policy()  # rebuilt from the recorded architecture and the safetensors weights
    rng = np.random.default_rng(0)
    for _ in range(50):
        obs = rng.uniform(-1, 1, size=trained.space.n_features).astype(np.float32)
        assert trained.act(obs) == int(model.predict(obs, deterministic=True)[0])


def test_policy_file_round_trip(trained, tmp_path: Path) -> None:
    assert trained.scenario == "context" and trained.tiers == ("mobile", "edge")
    assert trained.meta["model"]["sha256"] == "0" * 64
    assert trained.meta["training"]["algorithm"] == "PPO" and trained.meta["training"]["seed"] == 3
    assert [la.name for la in trained.base.layers] == ["conv1", "conv2", "pool", "fc"]
    path = tmp_path / "again.zip"
    save_policy(path, trained.meta, trained.weights)
    again = load_policy(path)
    assert again.candidates.assignments == trained.candidates.assignments
    assert again.space == trained.space


def test_bad_policy_files_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        load_policy(tmp_path / "missing.zip")
    junk = tmp_path / "junk.zip"
    junk.write_text("not a zip")
    with pytest.raises(UsageError, match="not a policy zip"):
        load_policy(junk)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("data", "{}")
    with pytest.raises(UsageError, match="not a dnnsplit policy"):
        load_policy(other)
    with pytest.raises(UsageError, match=r"\.zip"):
        save_policy(tmp_path / "policy.bin", {}, {})


class _Touch:
    """Unpickling this creates ``path``: proof that reading a file ran code the file chose."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # noqa: ANN204
        return (open, (self.path, "w"))


def _old_policy(trained, path: Path, sb3_zip: bytes) -> Path:
    """A policy in the old layout (rl-policy@1): the meta and stable-baselines3's own (pickling) zip."""
    meta = {k: v for k, v in trained.meta.items() if k != "network"}
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("dnnsplit.json", json.dumps({**meta, "schema": "dnnsplit/rl-policy@1"}))
        zf.writestr("sb3.zip", sb3_zip)
    return path


def _payload_sb3_zip(marker: Path) -> bytes:
    """An SB3 zip whose observation space unpickles ``_Touch``, as PPO.load deserializes it."""
    serialized = base64.b64encode(pickle.dumps(_Touch(marker))).decode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("data", json.dumps({"observation_space": {":type:": "Box", ":serialized:": serialized}}))
    return buffer.getvalue()


def test_policy_file_holds_no_pickle(trained, tmp_path: Path) -> None:
    path = tmp_path / "p.zip"
    save_policy(path, trained.meta, trained.weights)
    with zipfile.ZipFile(path) as zf:
        assert set(zf.namelist()) == {"dnnsplit.json", "policy.safetensors"}
        meta = json.loads(zf.read("dnnsplit.json"))
    assert meta["schema"] == "dnnsplit/rl-policy@2"
    assert meta["network"] == {
        "library": "stable-baselines3",
        "policy": "ActorCriticPolicy",
        "observation_size": trained.space.n_features,
        "actions": len(trained.candidates),
        "net_arch": {"pi": [64, 64], "vf": [64, 64]},
        "activation": "tanh",
    }


def test_old_pickled_policy_is_refused_without_running_it(trained, tmp_path: Path) -> None:
    marker = tmp_path / "PAYLOAD_RAN"
    path = _old_policy(trained, tmp_path / "old.zip", _payload_sb3_zip(marker))
    with pytest.raises(UsageError, match="pickled") as info:
        load_policy(path)
    assert "train it again" in info.value.one_line() and "--trust-pickle" in info.value.one_line()
    assert not marker.exists()


def test_old_policy_reads_with_trust_pickle(trained, tmp_path: Path) -> None:
    """The opt-in path for a policy trained before rl-policy@2: PPO.load, then the same decisions."""
    import torch
    from stable_baselines3 import PPO

    from dnnsplit.partition.rl.context_env import ContextEnv

    agent = PPO(
        "MlpPolicy", ContextEnv(trained.candidates, trained.space), policy_kwargs={"net_arch": [64, 64]}
    )
    agent.policy.load_state_dict({k: torch.from_numpy(v) for k, v in trained.weights.items()})
    buffer = io.BytesIO()
    agent.save(buffer)
    path = _old_policy(trained, tmp_path / "old.zip", buffer.getvalue())
    with pytest.raises(UsageError, match="--trust-pickle"):
        load_policy(path)
    old = load_policy(path, trust_pickle=True)
    assert old.network == trained.network
    rng = np.random.default_rng(2)
    for _ in range(20):
        obs = rng.uniform(-1, 1, size=trained.space.n_features)
        assert old.act(obs) == trained.act(obs)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda m, w: w.pop("action_net.bias"), "lack action_net.bias"),
        (lambda m, w: w.update({"action_net.weight": w["action_net.weight"][:, :3]}), "action_net.weight is"),
        (lambda m, w: w["action_net.weight"].fill(np.nan), "NaN"),
        (lambda m, w: m["network"].update(activation="gelu"), "activation 'gelu'"),
        (lambda m, w: m["network"]["net_arch"].update(pi="64"), "net_arch.pi"),
        (lambda m, w: m["network"].update(actions=99), "99 actions"),
        (lambda m, w: m.pop("network"), "network"),
    ],
)
def test_damaged_policy_network_is_a_usage_error(trained, tmp_path: Path, change, needle: str) -> None:
    meta = json.loads(json.dumps(trained.meta))
    weights = {k: v.copy() for k, v in trained.weights.items()}
    change(meta, weights)
    path = tmp_path / "bad.zip"
    save_policy(path, meta, weights)
    with pytest.raises(UsageError, match="not a complete policy") as info:
        load_policy(path)
    assert needle in info.value.one_line()


def test_damaged_weights_file_is_a_usage_error(trained, tmp_path: Path) -> None:
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("dnnsplit.json", json.dumps(trained.meta))
        zf.writestr("policy.safetensors", b"\xff" * 64)
    with pytest.raises(UsageError, match="damaged weights"):
        load_policy(path)


def test_short_training_beats_a_random_policy(trained) -> None:
    result = evaluate_context(trained, contexts=200)
    rows = result["policies"]
    assert result["gap"] < 0.05 and result["optimal"] >= 0.9
    assert result["gap"] < rows["random"]["gap"] / 10
    assert result["decision_us"]["median"] < 1000


def test_training_is_reproducible(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where SB3's default logger makes its folder
    base = _base()
    runs = [
        train_policy(
            base,
            Scenario("context", default_space(base)),
            timesteps=512,
            seed=8,
            candidate_options=SMALL_SEARCH,
        )
        for _ in range(2)
    ]
    a, b = (r.actor.weights for r in runs)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b, strict=True))
    assert runs[0].candidates.assignments == runs[1].candidates.assignments
    assert not list(tmp_path.glob("SB3-*"))  # training leaves no empty log folder behind


def test_plan_with_policy_records_its_gap(trained) -> None:
    problem = _base(links={"mobile-edge": "4g"}, objective="latency=1,energy=0.5")
    plan, info = plan_with_policy(trained, problem)
    exact = solve(problem, with_baselines=False).prediction.objective
    assert plan.solver == "rl" and info["exact_objective"] == pytest.approx(exact)
    assert info["gap"] == pytest.approx(plan.prediction.objective / exact - 1) and info["gap"] >= -1e-12
    other = _base(residual_profile())
    with pytest.raises(UsageError, match="another model or profile"):
        plan_with_policy(trained, other)
    with pytest.raises(UsageError, match="tiers mobile,edge"):
        plan_with_policy(trained, _base(tiers=("mobile", "edge", "cloud")))
    with pytest.raises(UsageError, match="tensor sizes"):
        plan_with_policy(trained, _base(input_bytes=1000))
    assert math.isfinite(info["gap"])
