"""The context scenario as a gymnasium environment: each step one request in a freshly drawn context.

Observation: the context's features (``ContextSpace.features``). Action: a candidate partition. Reward:
minus the cost model's objective of that partition in that context (``reward="objective"``, the issue's
definition). Episodes are one decision long: contexts are independent, so this is a contextual bandit.

``reward="relative"`` is what training uses: minus the objective divided by the best candidate's in the same
context, plus one (0 for an optimal pick, clipped at -``RELATIVE_CLIP``). Dividing each context's rewards by
a positive number of that context leaves the best action of every context unchanged, and it keeps a 40 s
upload over CAT1 from drowning out the 1 ms differences that decide a Wi-Fi context.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from dnnsplit.errors import UsageError
from dnnsplit.partition.rl.candidates import CandidateSet
from dnnsplit.partition.rl.contexts import Context, ContextSpace

REWARDS = ("objective", "relative")
RELATIVE_CLIP = 5.0


class ContextEnv(gym.Env[np.ndarray, np.int64]):
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, candidates: CandidateSet, space: ContextSpace, reward: str = "objective") -> None:
        if reward not in REWARDS:
            raise UsageError(f"unknown reward '{reward}'", f"use one of {', '.join(REWARDS)}")
        self.candidates = candidates
        self.space = space
        self.reward_kind = reward
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(space.n_features,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(candidates))
        self.context: Context | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self.context = (options or {}).get("context") or self.space.sample(self.np_random)
        return self.space.features(self.context), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self.context is not None, "call reset() first"
        costs = self.candidates.costs(self.context)
        a = int(action)
        value, best = float(costs.objective[a]), float(costs.objective.min())
        if self.reward_kind == "objective":
            reward = -value
        else:
            reward = 1.0 - min(value / best, RELATIVE_CLIP) if best > 0 else 0.0
        info = {
            "objective": value,
            "best_objective": best,
            "latency_ms": float(costs.latency_ms[a]),
            "optimal": value <= best * (1 + 1e-9),
        }
        obs = self.space.features(self.context)
        return obs, float(reward), True, False, info
