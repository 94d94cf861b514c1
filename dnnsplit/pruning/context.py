"""The context a variant is pruned for and chosen in: the phone, its network, an optional edge server.

Latency is end to end as ``dnnsplit plan`` computes it: the best partition of the model between the
phone and the edge over the network (or everything on the phone when there is no edge tier).
``scale`` multiplies the phone's latency_scale: 2 is a phone twice as slow as the one pruned for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.partition.evaluate import Prediction, evaluate
from dnnsplit.partition.from_profile import problem_from_profile
from dnnsplit.partition.network import NETWORK_PRESETS, LinkSpec, as_link, parse_link
from dnnsplit.partition.planner import solve
from dnnsplit.partition.problem import Problem
from dnnsplit.profiling.devices import DeviceSpec, load_device
from dnnsplit.profiling.profile import Profile

# The presets every variant is planned for, so `select` answers them without solving anything.
PLANNED_NETWORKS = tuple(NETWORK_PRESETS)


@dataclass(frozen=True)
class Context:
    device: DeviceSpec  # the phone at scale 1
    network: LinkSpec
    edge: DeviceSpec | None  # None: the whole model runs on the phone

    @classmethod
    def parse(cls, device: str, network: LinkSpec | str, edge: str | None) -> Context:
        edge_spec = None if edge is None or edge.lower() == "none" else load_device(edge)
        spec = load_device(device)
        if spec.compute_power_w is None or spec.idle_power_w is None:
            raise UsageError(
                f"device '{spec.name}' has no compute_power_w / idle_power_w",
                "selection breaks ties by mobile energy: add both to the device file",
            )
        return cls(spec, as_link(network), edge_spec)

    def to_dict(self) -> dict[str, Any]:
        return {
            "device": self.device.to_dict(),
            "network": self.network.to_dict(),
            "edge": None if self.edge is None else self.edge.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Context:
        from dnnsplit.profiling.devices import _from_dict

        edge = data.get("edge")
        net = dict(data["network"])
        return cls(
            _from_dict(dict(data["device"]), "variants.yaml device"),
            LinkSpec(
                up_mbps=float(net["up_mbps"]),
                down_mbps=float(net["down_mbps"]),
                rtt_ms=float(net["rtt_ms"]),
                radio=net.get("radio"),
                name=str(net.get("name", "custom")),
            ),
            None if edge is None else _from_dict(dict(edge), "variants.yaml edge"),
        )

    def problem(self, profile: Profile, network: LinkSpec | None = None, scale: float = 1.0) -> Problem:
        mobile = replace(self.device, latency_scale=self.device.latency_scale * scale)
        devices = {"mobile": mobile}
        if self.edge is not None:
            devices["edge"] = self.edge
        return problem_from_profile(
            profile,
            tiers=("mobile", "edge"),
            devices=devices,
            links={"mobile-edge": network or self.network},
        )

    def best(self, profile: Profile, network: LinkSpec | None = None, scale: float = 1.0) -> Prediction:
        """The fastest plan's prediction (all on the phone without an edge tier)."""
        problem = self.problem(profile, network, scale)
        if self.edge is None:
            return evaluate(problem, [0] * problem.n)
        return solve(problem, with_baselines=False).prediction


def network_of(name: str) -> LinkSpec:
    return parse_link(name)
