"""``evaluate``: the cost model applied to one assignment; the single source of truth every solver must match.

Formulas (docs/cost-model.md has the long form):

* compute: sum over layers of the layer's time on its tier;
* link k is used upward when any layer runs beyond it; then it costs rtt_k / 2 once, plus
  bytes * 8 / up_k for every tensor crossing it (a tensor crosses every link between its producer's tier
  and the farthest tier that consumes it, once per link however many layers consume it there);
* each model output comes back over every link between its producer's tier and mobile: its returned
  bytes * 8 / down_k (the float32 size even with a boundary codec), plus rtt_k / 2 once per link that
  carries any output back;
* a tensor sent with a boundary codec also costs the codec's time on every link it crosses (``codec_ms``);
* with ``session_requests`` N, the phone downloads the mobile layers' weights over the first link's
  downlink once per N requests: each request is charged 1/N of that download (steady state excludes it,
  the first request pays it whole);
* latency = compute + uploads + returns (+ the download share) (one request, no pipelining);
* mobile energy = P_compute * mobile compute + P_up * upload time on the mobile link
  + P_down * download time on the mobile link + P_idle * the rest of the latency (waiting).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dnnsplit.partition.problem import Problem


@dataclass(frozen=True)
class CutTensor:
    """A tensor that crosses a link (once), with its size per sample."""

    name: str
    bytes: int


@dataclass(frozen=True)
class LinkTraffic:
    """What one link carries: tensors up (``up_*``) and model outputs back down (``down_*``).

    ``*_rtt_ms`` is the fixed rtt/2 charged when that direction carries anything; ``*_ms`` the transfer time.
    """

    name: str
    up_tensors: tuple[CutTensor, ...]
    up_ms: float
    up_rtt_ms: float
    down_tensors: tuple[CutTensor, ...]
    down_ms: float
    down_rtt_ms: float
    codec_ms: float = 0.0  # encoding and decoding what goes up (boundary codecs)

    @property
    def up_bytes(self) -> int:
        return sum(t.bytes for t in self.up_tensors)

    @property
    def down_bytes(self) -> int:
        return sum(t.bytes for t in self.down_tensors)

    @property
    def transfer_ms(self) -> float:
        return self.up_ms + self.up_rtt_ms + self.codec_ms

    @property
    def return_ms(self) -> float:
        return self.down_ms + self.down_rtt_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "link": self.name,
            "transfer_ms": self.transfer_ms,
            "return_ms": self.return_ms,
            "up_bytes": self.up_bytes,
            "down_bytes": self.down_bytes,
            "codec_ms": self.codec_ms,
            "up_tensors": [{"name": t.name, "bytes": t.bytes} for t in self.up_tensors],
            "down_tensors": [{"name": t.name, "bytes": t.bytes} for t in self.down_tensors],
        }


@dataclass(frozen=True)
class EnergyParts:
    """The phone's energy (mJ) by what it was doing, and the times (ms) behind the radio and idle parts."""

    compute_mj: float
    radio_mj: float
    idle_mj: float
    radio_ms: float
    waiting_ms: float

    @property
    def total_mj(self) -> float:
        return self.compute_mj + self.radio_mj + self.idle_mj


@dataclass(frozen=True)
class Prediction:
    assignment: tuple[int, ...]  # tier index per layer, in layer order
    latency_ms: float
    energy_mj: float | None  # None when the mobile device has no power figures
    objective: float
    compute_ms: tuple[float, ...]  # per tier
    links: tuple[LinkTraffic, ...]
    energy: EnergyParts | None
    mobile_weight_bytes: int
    tiers: tuple[str, ...]
    download_ms: float = 0.0  # the phone's whole download of its segments (paid by a session's first request)
    session_requests: int | None = None  # requests the download is amortised over (None: not charged)

    @property
    def download_share_ms(self) -> float:
        """What one request is charged of the download (its 1/N share)."""
        return self.download_ms / self.session_requests if self.session_requests else 0.0

    @property
    def steady_latency_ms(self) -> float:
        """A request once the segments are on the phone."""
        return self.latency_ms - self.download_share_ms

    @property
    def first_request_ms(self) -> float:
        """A session's first request: it waits for the whole download."""
        return self.steady_latency_ms + (self.download_ms if self.session_requests else 0.0)

    @property
    def transfer_ms(self) -> float:
        return sum(link.transfer_ms for link in self.links)

    @property
    def return_ms(self) -> float:
        return sum(link.return_ms for link in self.links)

    @property
    def layers_per_tier(self) -> dict[str, int]:
        return {tier: sum(1 for t in self.assignment if t == k) for k, tier in enumerate(self.tiers)}

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "latency_ms": self.latency_ms,
            "energy_mj": self.energy_mj,
            "objective": self.objective,
            "layers": self.layers_per_tier,
            "compute_ms": dict(zip(self.tiers, self.compute_ms, strict=True)),
            "transfer_ms": self.transfer_ms,
            "return_ms": self.return_ms,
            "links": [link.to_dict() for link in self.links],
            "mobile_weight_mb": self.mobile_weight_bytes / 1e6,
        }
        if self.session_requests is not None:
            data["download"] = {
                "session_requests": self.session_requests,
                "download_ms": self.download_ms,
                "per_request_ms": self.download_share_ms,
                "first_request_ms": self.first_request_ms,
                "steady_latency_ms": self.steady_latency_ms,
            }
        if self.energy is not None:
            data["energy"] = {
                "compute_mj": self.energy.compute_mj,
                "radio_mj": self.energy.radio_mj,
                "idle_mj": self.energy.idle_mj,
                "radio_ms": self.energy.radio_ms,
                "waiting_ms": self.energy.waiting_ms,
            }
        return data


def evaluate(problem: Problem, assignment: Mapping[str, str] | Sequence[int]) -> Prediction:
    """Latency, mobile energy and their breakdown for one assignment (layer name -> tier, or tier indices)."""
    tiers = problem.tiers_of(assignment)
    n_links = len(problem.links)

    compute = [0.0] * len(problem.tiers)
    for layer, t in zip(problem.layers, tiers, strict=True):
        compute[t] += layer.compute_ms[t]

    up: list[list[CutTensor]] = [[] for _ in range(n_links)]
    codec = [0.0] * n_links
    for x in problem.tensors:
        if not x.consumers:
            continue
        src = 0 if x.producer is None else tiers[x.producer]
        far = max(tiers[c] for c in x.consumers)
        for k in range(src, far):  # every link between the producer and the farthest consumer, once
            up[k].append(CutTensor(x.name, x.bytes))
            codec[k] += x.codec_ms_on(k)

    down: list[list[CutTensor]] = [[] for _ in range(n_links)]
    for o in problem.outputs:
        x = problem.tensors[o]
        src = 0 if x.producer is None else tiers[x.producer]
        for k in range(src):
            down[k].append(CutTensor(x.name, x.returned_bytes))

    top = max(tiers, default=0)
    links = []
    for k, spec in enumerate(problem.links):
        # "Used upward" = some layer runs beyond the link; with every layer reading at least one tensor that
        # is exactly "some tensor crosses it", and for an input-less layer it is the request that must cross.
        links.append(
            LinkTraffic(
                name=problem.link_names[k],
                up_tensors=tuple(up[k]),
                up_ms=sum(spec.up_ms(t.bytes) for t in up[k]),
                up_rtt_ms=spec.rtt_ms / 2 if top > k else 0.0,
                down_tensors=tuple(down[k]),
                down_ms=sum(spec.down_ms(t.bytes) for t in down[k]),
                down_rtt_ms=spec.rtt_ms / 2 if down[k] else 0.0,
                codec_ms=codec[k],
            )
        )
    mobile_weights = sum(la.weight_bytes for la, t in zip(problem.layers, tiers, strict=True) if t == 0)
    download_ms = problem.links[0].down_ms(mobile_weights) if problem.session_requests else 0.0
    share_ms = download_ms / problem.session_requests if problem.session_requests else 0.0
    latency = sum(compute) + sum(link.transfer_ms + link.return_ms for link in links) + share_ms

    energy = None
    power = problem.mobile_power
    radio = problem.links[0].radio_model
    if power is not None:
        first = problem.links[0]
        radio_ms = links[0].up_ms + links[0].down_ms + share_ms
        radio_mj = 0.0
        if radio is not None:
            radio_mj = radio.upload_power_w(first.up_mbps) * links[0].up_ms
            radio_mj += radio.download_power_w(first.down_mbps) * (links[0].down_ms + share_ms)
        else:
            radio_ms = 0.0  # a wired first link: the phone just waits
        waiting = max(latency - compute[0] - radio_ms, 0.0)
        energy = EnergyParts(
            compute_mj=power.compute_w * compute[0],
            radio_mj=radio_mj,
            idle_mj=power.idle_w * waiting,
            radio_ms=radio_ms,
            waiting_ms=waiting,
        )
    energy_mj = None if energy is None else energy.total_mj
    return Prediction(
        assignment=tiers,
        latency_ms=latency,
        energy_mj=energy_mj,
        objective=problem.objective.value(latency, energy_mj),
        compute_ms=tuple(compute),
        links=tuple(links),
        energy=energy,
        mobile_weight_bytes=mobile_weights,
        tiers=problem.tiers,
        download_ms=download_ms,
        session_requests=problem.session_requests,
    )
