"""Every plan a variant might use in a network, as a line in the phone's slowness: precomputed for `select`.

With the plan fixed, end-to-end latency is linear in the device scale S (only the phone's compute
grows with it): ``latency(S) = mobile_ms * S + rest_ms``; so is the phone's energy. The fastest plan at
S is the lowest of these lines, and the lower envelope over S in [1/16, 16] is found exactly by solving
at the ends and wherever two envelope lines cross (Eisner-Severance): a handful of solves per variant.
The energy-optimal plan at S = 1 and everything-on-the-phone are kept too, so a budget with slack can
be met at lower energy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from dnnsplit.partition.evaluate import Prediction, evaluate
from dnnsplit.partition.network import LinkSpec
from dnnsplit.partition.objective import Objective
from dnnsplit.partition.planner import solve
from dnnsplit.profiling.profile import Profile
from dnnsplit.pruning.context import Context

SCALE_RANGE = (1 / 16, 16.0)
_MAX_DEPTH = 10


@dataclass(frozen=True)
class PlanLine:
    mobile_ms: float  # the phone's compute at device scale 1
    rest_ms: float  # everything else: edge compute, uploads, returns
    radio_mj: float
    radio_ms: float
    mobile_layers: int
    cut: tuple[str, ...]  # tensors sent from the phone to the edge

    def key(self) -> tuple[Any, ...]:
        """Equal for the same plan, whatever scale it was solved at (floats differ in the last bits)."""
        return (round(self.mobile_ms, 9), round(self.rest_ms, 9), self.mobile_layers, self.cut)

    def latency(self, scale: float) -> float:
        return self.mobile_ms * scale + self.rest_ms

    def energy(self, scale: float, compute_w: float, idle_w: float) -> float:
        return (
            compute_w * self.mobile_ms * scale
            + self.radio_mj
            + idle_w * max(self.rest_ms - self.radio_ms, 0.0)
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cut"] = list(self.cut)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanLine:
        return cls(
            float(data["mobile_ms"]),
            float(data["rest_ms"]),
            float(data["radio_mj"]),
            float(data["radio_ms"]),
            int(data["mobile_layers"]),
            tuple(str(c) for c in data.get("cut", [])),
        )


def line_of(prediction: Prediction, scale: float) -> PlanLine:
    mobile = prediction.compute_ms[0]
    parts = prediction.energy
    return PlanLine(
        mobile_ms=mobile / scale,
        rest_ms=prediction.latency_ms - mobile,
        radio_mj=0.0 if parts is None else parts.radio_mj,
        radio_ms=0.0 if parts is None else parts.radio_ms,
        mobile_layers=prediction.layers_per_tier.get("mobile", 0),
        cut=tuple(t.name for t in prediction.links[0].up_tensors) if prediction.links else (),
    )


def plan_lines(context: Context, profile: Profile, network: LinkSpec) -> list[PlanLine]:
    """The candidate plans of ``profile`` in ``network``: the fastest for every scale, plus two more."""
    lo, hi = SCALE_RANGE
    problem = context.problem(profile, network, 1.0)
    lines = [line_of(evaluate(problem, [0] * problem.n), 1.0)]  # all on the phone
    if context.edge is None:
        return lines

    def fastest(scale: float) -> PlanLine:
        return line_of(context.best(profile, network, scale), scale)

    def between(a: PlanLine, b: PlanLine, depth: int) -> None:
        if a.key() == b.key() or depth > _MAX_DEPTH or a.mobile_ms == b.mobile_ms:
            return
        cross = (b.rest_ms - a.rest_ms) / (a.mobile_ms - b.mobile_ms)
        if not lo < cross < hi:
            return
        c = fastest(cross)
        if c.latency(cross) >= min(a.latency(cross), b.latency(cross)) * (1 - 1e-9):
            return  # nothing beats the two lines where they cross: they are the envelope here
        lines.append(c)
        between(a, c, depth + 1)
        between(c, b, depth + 1)

    low, high = fastest(lo), fastest(hi)
    lines += [low, high]
    between(low, high, 0)
    power = problem.mobile_power
    if power is not None and network.radio is not None:
        energy = solve(problem.with_objective(Objective(0.0, 1.0)), with_baselines=False).prediction
        lines.append(line_of(energy, 1.0))
    unique: dict[tuple[Any, ...], PlanLine] = {}
    for line in lines:
        unique.setdefault(line.key(), line)
    return list(unique.values())
