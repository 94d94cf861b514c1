"""A discrete-event simulation of phones sharing one edge server: where a myopic plan stops being optimal.

Model (every time in ms):

* ``users`` phones; requests arrive as one Poisson process of rate ``users * rate`` with the user drawn
  uniformly (so each user's arrivals are Poisson too). The rate comes from the offered ``load``: arrivals per
  ms times the edge time of an all-edge request, i.e. the edge's utilisation if every request went there.
* each user keeps a device speed scale for the episode and a link that changes at exponential times (mean
  ``link_change_s``): a preset (``link_presets``, drawn with ``link_weights``) with its bandwidths scaled by
  a log-normal factor (sigma ``link_jitter``). Arrivals and link changes are drawn from their own random
  streams, never from decisions, so every policy meets the very same trace for a seed.
* a request's chosen partition splits its cost-model latency into stages: the phone (its compute, then the
  upload over its link, rtt/2 included), a FIFO queue on the phone (one request at a time); the edge (its
  compute), one FIFO server shared by everyone; then the backhaul and cloud (no queue: the cloud scales) and
  the return. With empty queues a request takes exactly the cost model's latency (tests check it).
* the edge serves in order of arrival at the edge; an arrival's place is fixed once the clock passes its
  arrival time (no later decision can reach the edge earlier), which is when its completion becomes known.
  At dispatch the simulator predicts the request's latency from the arrivals already known (exact unless a
  later request overtakes it on the way to the edge) and books the difference as a ``correction`` when the
  completion is known: the predictions plus the corrections add up to the true latencies.

``SimState`` is what a policy may observe at a decision: the requesting user's context, the wait the edge
queue would impose on a request arriving now, the edge work already on its way (uploading), the phone's own
backlog, and the arrival rate over the last second.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dnnsplit.errors import UsageError
from dnnsplit.partition.network import BACKHAUL, NETWORK_PRESETS, LinkSpec
from dnnsplit.partition.objective import Objective
from dnnsplit.partition.rl.candidates import CandidateSet
from dnnsplit.partition.rl.contexts import Context, Range

RATE_WINDOW_MS = 1000.0


@dataclass(frozen=True)
class MultiUserConfig:
    users: int = 20
    load_range: tuple[float, float] = (0.2, 2.0)  # training draws the offered load log-uniformly from here
    link_presets: tuple[str, ...] = ("3g", "4g", "5g", "wifi")
    link_weights: tuple[float, ...] = (0.15, 0.35, 0.2, 0.3)
    link_change_s: float = 10.0
    link_jitter: float = 0.3
    device_scale: Range = Range(0.5, 2.0)
    objective: Objective = field(default_factory=Objective)
    episode_requests: int = 512

    def __post_init__(self) -> None:
        if self.users < 1:
            raise UsageError(f"--users must be at least 1 (got {self.users})", "pass --users 20, say")
        unknown = [p for p in self.link_presets if p not in NETWORK_PRESETS]
        if unknown:
            raise UsageError(f"unknown link preset '{unknown[0]}'", f"use {', '.join(NETWORK_PRESETS)}")
        if len(self.link_weights) != len(self.link_presets) or min(self.link_weights) < 0:
            raise UsageError("link weights must be >= 0, one per preset", "fix the scenario")
        low, high = self.load_range
        if not 0 < low <= high:
            raise UsageError(f"bad load range {self.load_range}", "use 0 < low <= high")

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users,
            "load_range": list(self.load_range),
            "link_presets": list(self.link_presets),
            "link_weights": list(self.link_weights),
            "link_change_s": self.link_change_s,
            "link_jitter": self.link_jitter,
            "device_scale": {"low": self.device_scale.low, "high": self.device_scale.high},
            "objective": self.objective.describe(),
            "episode_requests": self.episode_requests,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MultiUserConfig:
        from dnnsplit.partition.objective import parse_objective

        scale = data["device_scale"]
        return cls(
            users=int(data["users"]),
            load_range=(float(data["load_range"][0]), float(data["load_range"][1])),
            link_presets=tuple(data["link_presets"]),
            link_weights=tuple(float(w) for w in data["link_weights"]),
            link_change_s=float(data["link_change_s"]),
            link_jitter=float(data["link_jitter"]),
            device_scale=Range(float(scale["low"]), float(scale["high"])),
            objective=parse_objective(str(data["objective"])),
            episode_requests=int(data["episode_requests"]),
        )

    def draw_link(self, rng: np.random.Generator) -> LinkSpec:
        weights = np.asarray(self.link_weights, dtype=float)
        preset = NETWORK_PRESETS[self.link_presets[int(rng.choice(len(weights), p=weights / weights.sum()))]]
        factor = float(math.exp(rng.normal(0.0, self.link_jitter))) if self.link_jitter > 0 else 1.0
        return LinkSpec(
            preset.up_mbps * factor, preset.down_mbps * factor, preset.rtt_ms, preset.radio, preset.name
        )

    def user_context(self, link: LinkSpec, scale: float, tiers: tuple[str, ...]) -> Context:
        """A user's context: its link (and the wired backhaul) and phone speed; edge load is the queue."""
        links = (link,) + ((BACKHAUL,) if len(tiers) == 3 else ())
        scales = tuple(scale if t == "mobile" else 1.0 for t in tiers)
        return Context(links, scales, self.objective)

    def sample_context(self, rng: np.random.Generator, tiers: tuple[str, ...]) -> Context:
        return self.user_context(self.draw_link(rng), self.device_scale.sample(rng), tiers)


@dataclass
class Request:
    id: int
    user: int
    arrival: float
    action: int = -1
    done: float = math.nan
    edge_wait: float = 0.0
    phone_wait: float = 0.0
    energy_mj: float = 0.0

    @property
    def latency(self) -> float:
        return self.done - self.arrival


@dataclass
class _User:
    scale: float
    link: LinkSpec
    next_change: float
    phone_free: float = 0.0
    rng: np.random.Generator | None = None


@dataclass(frozen=True)
class SimState:
    """What a policy sees at a decision (times in ms)."""

    now: float
    user: int
    context: Context
    edge_wait_ms: float  # a request reaching the edge now would wait this long
    edge_inbound_ms: float  # edge work dispatched but still on its way (on phones or uplinks)
    phone_wait_ms: float  # this user's phone is busy for this long
    arrival_rate: float  # requests per ms over the last second


class Simulator:
    """One episode of the multi-user system at a fixed offered ``load``; ``seed`` fixes its whole trace."""

    def __init__(self, candidates: CandidateSet, config: MultiUserConfig, load: float, seed: int) -> None:
        if "edge" not in candidates.base.tiers:
            raise UsageError("the multiuser scenario needs an edge tier", "use --tiers mobile,edge[,cloud]")
        self.candidates = candidates
        self.config = config
        self.tiers = candidates.base.tiers
        self.edge = self.tiers.index("edge")
        self.load = load
        self.edge_ms = float(candidates.compute[candidates.single_tier(self.edge), self.edge])
        if not self.edge_ms > 0:
            raise UsageError("the model takes no time on the edge", "profile a model with measurable layers")
        self.rate = load / self.edge_ms  # requests per ms, all users together
        streams = np.random.SeedSequence(seed).spawn(config.users + 1)
        self._arrivals = np.random.default_rng(streams[0])
        self.users: list[_User] = []
        for s in streams[1:]:
            rng = np.random.default_rng(s)
            scale = config.device_scale.sample(rng)
            link = config.draw_link(rng)
            self.users.append(_User(scale, link, rng.exponential(config.link_change_s * 1000.0), rng=rng))
        self.requests: list[Request] = []
        self.now = 0.0
        self._next_arrival = self._arrivals.exponential(1.0 / self.rate)
        self._edge_queue: list[tuple[float, int, float, float]] = []  # (arrival at edge, id, service, after)
        self._edge_free = 0.0
        self._inbound = 0.0
        self._completions: list[float] = []
        self._alive = 0
        self._area = 0.0  # integral of requests in the system over time (ms * requests)
        self._recent: deque[float] = deque()
        self._predicted: dict[int, float] = {}
        self._correction = 0.0

    # --- the trace ---

    def _user_link(self, user: _User, t: float) -> LinkSpec:
        while user.next_change <= t:
            assert user.rng is not None
            user.link = self.config.draw_link(user.rng)
            user.next_change += user.rng.exponential(self.config.link_change_s * 1000.0)
        return user.link

    def next_request(self) -> tuple[Request, SimState]:
        """Advance the clock to the next arrival; the request and what a policy sees then."""
        t = self._next_arrival
        self._next_arrival = t + self._arrivals.exponential(1.0 / self.rate)
        u = int(self._arrivals.integers(self.config.users))
        self._advance(t)
        self._alive += 1
        self._recent.append(t)
        while self._recent and self._recent[0] < t - RATE_WINDOW_MS:
            self._recent.popleft()
        request = Request(len(self.requests), u, t)
        self.requests.append(request)
        user = self.users[u]
        ctx = self.config.user_context(self._user_link(user, t), user.scale, self.tiers)
        state = SimState(
            now=t,
            user=u,
            context=ctx,
            edge_wait_ms=max(self._edge_free - t, 0.0),
            edge_inbound_ms=self._inbound,
            phone_wait_ms=max(user.phone_free - t, 0.0),
            arrival_rate=len(self._recent) / min(RATE_WINDOW_MS, max(t, 1.0)),
        )
        return request, state

    def dispatch(self, request: Request, state: SimState, action: int) -> float:
        """Run ``request`` with candidate ``action``: its phone stage now, its edge stage when it gets there.

        Returns its predicted latency (see the module doc)."""
        c = self.candidates
        ctx = state.context
        costs = c.costs(ctx)
        compute = c.compute[action] * np.asarray(ctx.scales)
        up = [c.up_bytes[action, k] * 8.0 / (link.up_mbps * 1000.0) for k, link in enumerate(ctx.links)]
        down = [c.down_bytes[action, k] * 8.0 / (link.down_mbps * 1000.0) for k, link in enumerate(ctx.links)]
        half = [link.rtt_ms / 2 for link in ctx.links]
        phone = compute[0] + up[0] + half[0] * c.up_used[action, 0]
        # Past the edge: the backhaul up and the cloud (with three tiers), then every return trip.
        after = sum(compute[k] for k in range(len(compute)) if k not in (0, self.edge))
        after += sum(up[k] + half[k] * c.up_used[action, k] for k in range(1, len(up)))
        after += sum(down[k] + half[k] * c.down_used[action, k] for k in range(len(down)))
        user = self.users[request.user]
        start = max(state.now, user.phone_free)
        request.phone_wait = start - state.now
        user.phone_free = start + phone
        request.action = action
        request.energy_mj = float(costs.energy_mj[action])
        service = float(compute[self.edge])
        if service > 0:
            arrival = user.phone_free
            free = self._edge_free
            for known, _, work, _ in sorted(self._edge_queue):
                if known > arrival:
                    break
                free = max(known, free) + work
            predicted = max(arrival, free) + service + after - request.arrival
            self._predicted[request.id] = predicted
            heapq.heappush(self._edge_queue, (arrival, request.id, service, after))
            self._inbound += service
            return predicted
        request.done = user.phone_free + after
        heapq.heappush(self._completions, request.done)
        return request.latency

    def _advance(self, t: float) -> None:
        """Move the clock to ``t``: place edge arrivals up to ``t`` in the FIFO, count requests in system."""
        self._place_edge_arrivals(t)
        self._complete_until(t)
        self._area += self._alive * (t - self.now)
        self.now = t

    def _place_edge_arrivals(self, t: float) -> None:
        while self._edge_queue and self._edge_queue[0][0] <= t:
            arrival, rid, service, after = heapq.heappop(self._edge_queue)
            self._inbound -= service
            start = max(arrival, self._edge_free)
            self._edge_free = start + service
            request = self.requests[rid]
            request.edge_wait = start - arrival
            request.done = self._edge_free + after
            self._correction += request.latency - self._predicted.pop(rid)
            heapq.heappush(self._completions, request.done)

    def _complete_until(self, t: float) -> None:
        while self._completions and self._completions[0] <= t:
            done = heapq.heappop(self._completions)
            self._area += self._alive * (done - self.now)
            self.now = done
            self._alive -= 1

    def take_area(self) -> float:
        """Time requests spent in the system since the last call (ms * requests); it sums to sum(latency)."""
        area, self._area = self._area, 0.0
        return area

    def take_correction(self) -> float:
        """Latency booked since the last call beyond the predictions made at dispatch (ms)."""
        value, self._correction = self._correction, 0.0
        return value

    def drain(self) -> None:
        """Run until every dispatched request has completed (no new arrivals)."""
        self._place_edge_arrivals(math.inf)
        self._complete_until(math.inf)

    @property
    def in_system(self) -> int:
        return self._alive
