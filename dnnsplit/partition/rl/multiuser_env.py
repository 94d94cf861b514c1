"""The multi-user scenario as a gymnasium environment: each step is one request's decision in the simulator.

Observation (``observe``, in [-1, 1]): the requesting user's link (uplink, down/up ratio, RTT) and phone
speed, the edge queue's wait, the edge work still on its way, the phone's own backlog, the offered load seen
over the last second, then for every candidate its latency for this user with empty queues (the cost
model's, what the exact solver knows) and the same plus the edge queue's current wait for plans that compute
on the edge (what load-aware exact knows). Times are in units of one all-edge request's edge time, log-
scaled. Without the per-candidate latencies PPO had to learn the cost model from the noisy queue reward too:
after 100k steps it still offloaded 3G users at light load (worse than myopic exact). With the unloaded
latencies alone it matched myopic exact and ignored the queue (resnet18, load 1.5: 943 ms against load-
aware's 411 ms); with the waited ones too it matches load-aware exact (410 ms). The network then has to
learn when a plan's effect on the queue behind it outweighs its own gain.

Reward: minus the latency of the request just placed as the simulator predicts it at dispatch, plus the
corrections booked since the last decision (a request overtaken on its way to the edge waits longer than
predicted), plus its weighted energy; in units of the model's all-local latency. Predictions plus
corrections are the true latencies, so an episode's return is minus the sum of its requests' latencies
(up to the corrections still pending at its end). A decision's own cost comes back at once, and what it
does to the queue comes back in the later requests' rewards: that is what load-aware exact misses.
(A first version rewarded minus the time all requests spent in the system between decisions, Little's
law's form of the same sum; 100k PPO steps did not learn to respond to the queue from that signal.)
Episodes end by truncation after ``episode_requests`` decisions (the system keeps running: no flush).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np

from dnnsplit.partition.rl.candidates import CandidateSet
from dnnsplit.partition.rl.contexts import Range
from dnnsplit.partition.rl.multiuser import MultiUserConfig, Request, SimState, Simulator

_UP = Range(0.1, 200.0)
_DOWN_RATIO = Range(1.0, 8.0)
_RTT = Range(2.0, 150.0)
_LOAD = Range(0.05, 5.0)
_WAIT_UNITS = 500.0  # waits beyond 500 edge services read as full scale
N_STATE_FEATURES = 8


def _wait(ms: float, unit: float) -> float:
    return float(min(2.0 * math.log1p(ms / unit) / math.log1p(_WAIT_UNITS) - 1.0, 1.0))


def n_features(candidates: CandidateSet) -> int:
    return N_STATE_FEATURES + 2 * len(candidates)


def observe(state: SimState, config: MultiUserConfig, edge_ms: float, candidates: CandidateSet) -> np.ndarray:
    link = state.context.links[0]
    latency = candidates.costs(state.context).latency_ms
    waited = latency + state.edge_wait_ms * candidates.uses_edge
    scaled = 2.0 * np.log1p(np.concatenate([latency, waited]) / edge_ms) / math.log1p(_WAIT_UNITS) - 1.0
    head = np.asarray(
        [
            _UP.encode(link.up_mbps),
            _DOWN_RATIO.encode(link.down_mbps / link.up_mbps),
            _RTT.encode(max(link.rtt_ms, 1e-3)),
            config.device_scale.encode(state.context.scales[0]),
            _wait(state.edge_wait_ms, edge_ms),
            _wait(state.edge_inbound_ms, edge_ms),
            _wait(state.phone_wait_ms, edge_ms),
            _LOAD.encode(max(state.arrival_rate * edge_ms, 1e-6)),
        ],
        dtype=np.float32,
    )
    return np.concatenate([head, np.minimum(scaled, 1.0).astype(np.float32)])


class MultiUserEnv(gym.Env[np.ndarray, np.int64]):
    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, candidates: CandidateSet, config: MultiUserConfig, load: float | None = None) -> None:
        self.candidates = candidates
        self.config = config
        self.fixed_load = load
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(n_features(candidates),), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(len(candidates))
        edge = candidates.base.tiers.index("edge")
        self.edge_ms = float(candidates.compute[candidates.single_tier(edge), edge])
        self.reference_ms = float(candidates.compute[candidates.single_tier(0), 0])
        self.sim: Simulator | None = None
        self._request: Request | None = None
        self._state: SimState | None = None
        self._steps = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        load = (options or {}).get("load", self.fixed_load)
        if load is None:
            low, high = self.config.load_range
            load = Range(low, high).sample(self.np_random)
        self.sim = Simulator(self.candidates, self.config, float(load), int(self.np_random.integers(2**31)))
        self._request, self._state = self.sim.next_request()
        self._steps = 0
        return observe(self._state, self.config, self.edge_ms, self.candidates), {"load": load}

    @property
    def state(self) -> SimState:
        assert self._state is not None, "call reset() first"
        return self._state

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        assert self.sim is not None and self._request is not None and self._state is not None
        a = int(action)
        predicted = self.sim.dispatch(self._request, self._state, a)
        energy = self._request.energy_mj
        self._request, self._state = self.sim.next_request()
        latency = predicted + self.sim.take_correction()
        cost = self.config.objective.latency * latency + self.config.objective.energy * energy
        self._steps += 1
        truncated = self._steps >= self.config.episode_requests
        obs = observe(self._state, self.config, self.edge_ms, self.candidates)
        return obs, -cost / self.reference_ms, False, truncated, {"latency_ms": latency, "energy_mj": energy}
