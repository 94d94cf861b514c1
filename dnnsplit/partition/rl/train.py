"""Training a partitioning policy with stable-baselines3's PPO (a discrete action over candidate partitions).

PPO rather than DQN: both fit a small discrete action space; PPO reached the context targets in fewer wall
seconds in our runs and its deterministic policy is a plain argmax over logits (see policy_net.Actor).
Runs are reproducible: one seed fixes the candidate search, the environment's draws and SB3's own
(``PPO(seed=...)``), and training uses one torch thread (the same result on any machine, and it leaves the
other core to the simulator on a 2-core box).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.partition.problem import Problem
from dnnsplit.partition.rl.candidates import build_candidates, idle_edge_assignment
from dnnsplit.partition.rl.context_env import ContextEnv
from dnnsplit.partition.rl.contexts import ContextSpace
from dnnsplit.partition.rl.multiuser import MultiUserConfig
from dnnsplit.partition.rl.multiuser_env import MultiUserEnv
from dnnsplit.partition.rl.policy_file import SCENARIOS, PolicyFile, policy_meta
from dnnsplit.partition.rl.policy_net import from_sb3
from dnnsplit.progress import ProgressFn

# Enough for the targets on resnet18 and mobilenet_v3_small (docs/benchmarks/rl.md).
DEFAULT_TIMESTEPS = {"context": 60_000, "multiuser": 200_000}

HYPERPARAMS: dict[str, dict[str, Any]] = {
    # A contextual bandit: one-step episodes, so the discount does not matter; a large step size is safe
    # because the relative reward is bounded.
    "context": {"n_steps": 1024, "batch_size": 256, "n_epochs": 10, "gamma": 0.0, "learning_rate": 1e-3},
    # Queues carry a decision's cost into the next hundreds of requests: a long horizon.
    "multiuser": {
        "n_steps": 2048,
        "batch_size": 256,
        "n_epochs": 10,
        "gamma": 0.9,
        "gae_lambda": 0.95,
        "learning_rate": 3e-4,
        "ent_coef": 0.01,
    },
}
NET_ARCH = [64, 64]


@dataclass(frozen=True)
class Scenario:
    name: str
    space: ContextSpace
    config: MultiUserConfig | None = None


def check_scenario(name: str) -> str:
    if name not in SCENARIOS:
        raise UsageError(f"unknown scenario '{name}'", f"use one of: {', '.join(SCENARIOS)}")
    return name


def default_space(base: Problem) -> ContextSpace:
    """The default context space for ``base``; energy is only weighed when the phone's power is known."""
    radio = base.links[0].radio
    share = 0.5 if base.mobile_power is not None and radio is not None else 0.0
    return ContextSpace(tiers=base.tiers, radio=radio, energy_share=share)


def make_env(scenario: Scenario, candidates: Any, *, training: bool) -> Any:
    if scenario.name == "context":
        return ContextEnv(candidates, scenario.space, reward="relative" if training else "objective")
    assert scenario.config is not None
    return MultiUserEnv(candidates, scenario.config)


def find_candidates(
    base: Problem, scenario: Scenario, seed: int, progress: ProgressFn | None = None, **options: Any
) -> Any:
    """The candidate set and its build report; ``options`` go to ``build_candidates`` (batch sizes)."""
    if scenario.name == "context":
        return build_candidates(base, scenario.space, seed, progress=progress, **options)
    config = scenario.config
    assert config is not None
    if "edge" not in base.tiers:
        raise UsageError("the multiuser scenario needs an edge tier", "use --tiers mobile,edge[,cloud]")
    return build_candidates(
        base,
        scenario.space,
        seed,
        sample=lambda rng: config.sample_context(rng, base.tiers),
        extra=lambda ctx: idle_edge_assignment(base, ctx),
        progress=progress,
        **options,
    )


def train_policy(
    base: Problem,
    scenario: Scenario,
    *,
    timesteps: int | None = None,
    seed: int = 0,
    model: dict[str, Any] | None = None,
    profile: dict[str, Any] | None = None,
    progress: ProgressFn | None = None,
    candidate_options: dict[str, Any] | None = None,
) -> PolicyFile:
    """Find the candidates, train PPO for ``timesteps`` steps and return the policy (not yet saved)."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.logger import Logger

    check_scenario(scenario.name)
    steps = DEFAULT_TIMESTEPS[scenario.name] if timesteps is None else timesteps
    if steps < 1:
        raise UsageError(f"--timesteps must be at least 1 (got {steps})", "pass --timesteps 60000, say")
    if scenario.name == "multiuser" and "edge" not in base.tiers:
        raise UsageError("the multiuser scenario needs an edge tier", "use --tiers mobile,edge[,cloud]")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        candidates, report = find_candidates(base, scenario, seed, progress, **(candidate_options or {}))
        search_s = time.perf_counter() - start
        env = make_env(scenario, candidates, training=True)
        env.reset(seed=seed)
        params = dict(HYPERPARAMS[scenario.name])
        if scenario.name == "multiuser":
            from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

            # Queue latencies span 50 ms to seconds: scaling rewards by a running return deviation keeps the
            # value targets of light and heavy episodes on one scale (training only; decisions unaffected).
            env = VecNormalize(
                DummyVecEnv([lambda: env]), norm_obs=False, norm_reward=True, gamma=params["gamma"]
            )
            env.seed(seed)
        params["n_steps"] = min(params["n_steps"], max(steps, params["batch_size"]))
        agent = PPO(
            "MlpPolicy",
            env,
            seed=seed,
            verbose=0,
            device="cpu",
            policy_kwargs={"net_arch": NET_ARCH},
            **params,
        )
        # Without a logger of its own, every learn() leaves an empty /tmp/SB3-<time> folder behind.
        agent.set_logger(Logger(folder=None, output_formats=[]))

        class _Report(BaseCallback):
            def _on_step(self) -> bool:
                if progress is not None and self.num_timesteps % 256 == 0:
                    progress("training", self.num_timesteps, steps)
                return True

        agent.learn(total_timesteps=steps, callback=_Report())
        train_s = time.perf_counter() - start
        network, weights = from_sb3(agent.policy)
    finally:
        torch.set_num_threads(threads)
    import stable_baselines3

    training = {
        "algorithm": "PPO",
        "library": f"stable-baselines3 {stable_baselines3.__version__}",
        "timesteps": steps,
        "seed": seed,
        "hyperparameters": {**params, "net_arch": NET_ARCH},
        "reward": "relative objective (see context_env)" if scenario.name == "context" else "time in system",
        "candidate_search": {
            "contexts_solved": report.contexts,
            "converged": report.converged,
            "seconds": round(search_s, 3),
        },
        "seconds": round(train_s, 3),
    }
    meta = policy_meta(
        scenario.name,
        base,
        candidates,
        model=model or {},
        profile=profile or {},
        space=scenario.space,
        config=scenario.config,
        training=training,
        network=network,
    )
    return PolicyFile(meta, base, candidates, weights)
