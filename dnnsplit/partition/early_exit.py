"""Expected latency and mobile energy of a plan with a binarized early-exit branch (``plan --branch``).

With exit rate p (measured on the test split by ``dnnsplit branch``), per request:

- exited (p): mobile runs stem + branch; nothing is sent.
- not exited (1 - p), *sequential*: mobile stem + branch, upload the stem output, edge runs the rest,
  the logits come back.
- not exited, *speculative*: the stem output is uploaded while the branch runs; the answer is ready at
  stem + max(branch, upload + edge + return). Exited samples cost the same latency, but the radio
  works during the branch for every request and the edge computes every request (``edge_ms``).

Compute times are the branch's own measured host latencies scaled by each tier's device, as the plan
scales the profile; links and the phone's power come from the same Problem the plan solved, so the
figures compare directly with the plan without a branch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from dnnsplit.errors import UsageError
from dnnsplit.partition.problem import Problem

if TYPE_CHECKING:
    from dnnsplit.profiling.devices import DeviceSpec


@dataclass(frozen=True)
class BranchCosts:
    """What the planner needs of a branch from `dnnsplit branch` (``BranchFile.costs`` gives it).

    Times are the branch's median host latencies (batch 1), scaled by each tier's device here, as the plan
    scales the profile. ``model_sha256`` is the ONNX of the model the branch was built from: a plan checks
    it against its profile's, since a branch's exit rate and boundary say nothing about another model.
    """

    directory: str  # where branch.yaml was read from, recorded in the plan
    at: str  # the branch point
    exit_rate: float
    stem_ms: float
    branch_ms: float
    rest_ms: float
    boundary_bytes: int  # the stem output, per sample, as uploaded
    output_bytes: int  # the logits that come back, per sample
    model_sha256: str | None = None
    model_source: str | None = None
    mobile_sha256: str | None = None  # the branch's mobile.onnx: what a measured timing must be of
    mobile_bytes: int | None = None  # mobile.onnx's size: what the phone downloads (``session_requests``)
    # Measured on the mobile tier itself (``profile --runtime browser --branch``): these replace the host
    # times scaled by the mobile device; ``mobile_source`` says where they came from.
    mobile_stem_ms: float | None = None
    mobile_branch_ms: float | None = None
    mobile_source: str | None = None

    @property
    def time_source(self) -> str:
        if self.mobile_source is not None:
            return self.mobile_source
        return "branch.yaml host times x the mobile device's latency_scale"


def with_mobile_timing(costs: BranchCosts, timing: Any, source: str, scale: float = 1.0) -> BranchCosts:
    """``costs`` with the stem and branch times a profile measured (its ``branch`` block, a
    ``BranchTiming``) on the mobile tier: ``scale`` 1 for the mobile tier's own profile, the mobile
    device's latency_scale for a profile that stands for every tier. A timing of another branch is refused:
    its times say nothing about this one."""
    if timing.mobile_sha256 != costs.mobile_sha256:
        raise UsageError(
            f"{source} timed another branch ({timing.directory}) than {costs.directory}",
            f"profile again with --branch {costs.directory}, or plan with that profile's branch",
        )
    engine = "bit kernels" if timing.engine == "kernels" else timing.engine
    how = f"measured in {source} ({engine})" + (f", x{scale:g} for the mobile device" if scale != 1 else "")
    return replace(
        costs,
        mobile_stem_ms=timing.stem_ms * scale,
        mobile_branch_ms=timing.branch_ms * scale,
        mobile_source=how,
    )


@dataclass(frozen=True)
class Outcome:
    """One path through the branch: its latency, mobile energy (None without a power model), edge work."""

    latency_ms: float
    energy_mj: float | None
    edge_ms: float


@dataclass(frozen=True)
class BranchMode:
    """Expected figures of one way to run the branch (``sequential`` or ``speculative``)."""

    mode: str
    exited: Outcome
    not_exited: Outcome
    exit_rate: float

    def _expect(self, field_name: str) -> float | None:
        a, b = getattr(self.exited, field_name), getattr(self.not_exited, field_name)
        if a is None or b is None:
            return None
        return self.exit_rate * a + (1 - self.exit_rate) * b

    @property
    def latency_ms(self) -> float:
        value = self._expect("latency_ms")
        assert value is not None
        return value

    @property
    def energy_mj(self) -> float | None:
        return self._expect("energy_mj")

    @property
    def edge_ms(self) -> float:
        value = self._expect("edge_ms")
        assert value is not None
        return value


@dataclass(frozen=True)
class BranchEstimate:
    sequential: BranchMode
    speculative: BranchMode
    chosen: str  # the mode with the lower objective
    objective: dict[str, float]
    compute_ms: dict[str, float]  # stem, branch (mobile) and rest (edge) on this plan's devices
    download_share_ms: float = 0.0  # each request's 1/N of downloading mobile.onnx (``session_requests``)

    @property
    def best(self) -> BranchMode:
        return self.speculative if self.chosen == "speculative" else self.sequential

    def to_dict(self) -> dict[str, Any]:
        def mode(m: BranchMode) -> dict[str, Any]:
            return {
                "expected_latency_ms": m.latency_ms,
                "expected_energy_mj": m.energy_mj,
                "expected_edge_ms": m.edge_ms,
                "exited": asdict(m.exited),
                "not_exited": asdict(m.not_exited),
            }

        return {
            "exit_rate": self.sequential.exit_rate,
            "compute_ms": self.compute_ms,
            "download_share_ms": self.download_share_ms,
            "chosen": self.chosen,
            "objective": self.objective,
            "sequential": mode(self.sequential),
            "speculative": mode(self.speculative),
        }


def estimate_with_branch(
    problem: Problem, branch: BranchCosts, mobile: DeviceSpec, edge: DeviceSpec
) -> BranchEstimate:
    """Expected latency / energy of ``branch`` on ``problem``'s first two tiers and first link."""
    if len(problem.tiers) < 2:
        raise UsageError("a branch plan needs a tier after mobile", "use --tiers mobile,edge")
    link = problem.links[0]
    p = branch.exit_rate
    if not 0.0 <= p <= 1.0:
        raise UsageError(f"branch exit rate {p} is outside [0, 1]", "re-run dnnsplit branch")
    stem, side = branch.stem_ms * mobile.latency_scale, branch.branch_ms * mobile.latency_scale
    if branch.mobile_stem_ms is not None and branch.mobile_branch_ms is not None:
        stem, side = branch.mobile_stem_ms, branch.mobile_branch_ms
    rest = branch.rest_ms * edge.latency_scale
    up = link.up_ms(branch.boundary_bytes)
    down = link.down_ms(branch.output_bytes)
    half_rtt = link.rtt_ms / 2
    radio = link.radio_model
    power = problem.mobile_power

    def energy(compute: float, up_ms: float, down_ms: float, latency: float) -> float | None:
        if power is None:
            return None
        radio_mj, radio_ms = 0.0, 0.0
        if radio is not None:
            radio_mj = (
                radio.upload_power_w(link.up_mbps) * up_ms + radio.download_power_w(link.down_mbps) * down_ms
            )
            radio_ms = up_ms + down_ms
        # The radio and the CPU overlap when speculating: idle is the time neither works.
        idle = max(latency - compute - radio_ms, 0.0)
        return power.compute_w * compute + radio_mj + power.idle_w * idle

    # As the plan charges its mobile segments: every request pays 1/N of downloading mobile.onnx.
    share = 0.0
    if problem.session_requests and branch.mobile_bytes:
        share = link.down_ms(branch.mobile_bytes) / problem.session_requests
    local = stem + side
    exited = Outcome(local + share, energy(local, 0.0, share, local + share), 0.0)
    remote = up + half_rtt + rest + down + half_rtt
    seq_latency = local + remote + share
    sequential = BranchMode(
        "sequential", exited, Outcome(seq_latency, energy(local, up, down + share, seq_latency), rest), p
    )
    spec_latency = stem + max(side, remote) + share
    # An exited request stops its upload when the branch answers: the radio worked min(up, branch) ms.
    spec_exited_up = min(up, side)
    spec_exited = Outcome(
        local + share,
        energy(local, spec_exited_up, share, local + share),
        rest if up + half_rtt < side else 0.0,
    )
    speculative = BranchMode(
        "speculative",
        spec_exited,
        Outcome(spec_latency, energy(local, up, down + share, spec_latency), rest),
        p,
    )
    goal = problem.objective
    objective = {
        "sequential": goal.value(sequential.latency_ms, sequential.energy_mj),
        "speculative": goal.value(speculative.latency_ms, speculative.energy_mj),
    }
    chosen = "speculative" if objective["speculative"] < objective["sequential"] else "sequential"
    return BranchEstimate(
        sequential, speculative, chosen, objective, {"stem": stem, "branch": side, "rest": rest}, share
    )
