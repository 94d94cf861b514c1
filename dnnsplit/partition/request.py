"""One way to a plan: a typed ``PlanRequest`` in, the complete ``dnnsplit/plan@1`` document out.

`dnnsplit plan`, the pipeline's plan stage and any library caller come through ``make_plan``, so a plan
file has one shape whichever path wrote it, and every path checks that what it combines was made for the
profiled model: a branch built from another model's ONNX, or a policy trained on another model, is a
usage error before anything is solved. (The split checks the third pairing, a plan given for another
model: ``splitting.split.segments_from_plan``.) ``profile_context`` is the provenance a plan records
(the model's identity and where its profile came from); `rl train` records the same in its policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from dnnsplit.errors import UsageError
from dnnsplit.partition.bottleneck_option import CODINGS as BOTTLENECK_CODINGS
from dnnsplit.partition.bottleneck_option import (
    BottleneckCosts,
    check_bottleneck_model,
    cut_tensor,
    resolved,
    with_bottleneck,
)
from dnnsplit.partition.early_exit import (
    BranchCosts,
    BranchEstimate,
    estimate_with_branch,
    with_mobile_timing,
)
from dnnsplit.partition.from_profile import problem_from_profile, tensor_codecs, tier_devices
from dnnsplit.partition.network import LinkSpec
from dnnsplit.partition.objective import Constraints, Objective
from dnnsplit.partition.plan_file import PlanContext, device_block, plan_document
from dnnsplit.partition.planner import Plan, solve
from dnnsplit.partition.problem import DEFAULT_TIERS, Problem, check_tiers
from dnnsplit.partition.sweep import SweepPoint, sweep_bandwidth
from dnnsplit.progress import ProgressFn, no_progress

if TYPE_CHECKING:  # importing dnnsplit.profiling pulls in torch; a plan only needs the types
    from dnnsplit.partition.boundary_costs import BoundaryCosts
    from dnnsplit.partition.rl.policy_file import PolicyFile
    from dnnsplit.profiling.devices import DeviceSpec
    from dnnsplit.profiling.profile import Profile

MODEL_KEYS = ("source", "name", "onnx", "sha256")
# A phone session: the segments are downloaded once, then this many requests share that cost (--session-
# requests). 100 requests is a few minutes of a camera app classifying a frame every few seconds.
DEFAULT_SESSION_REQUESTS = 100
DEFAULT_MAX_ACCURACY_DROP = 1.0  # points of test top-1 a codec may cost (--max-accuracy-drop)


@dataclass(frozen=True)
class TierProfile:
    """A profile measured on one tier, and the file it was read from (recorded as that tier's time source)."""

    profile: Profile
    path: str


@dataclass(frozen=True)
class PlanRequest:
    """Everything a plan is made from. ``profile_path``: where the profile is on disk (None: measured now
    and not saved). ``devices`` and ``links`` not given default as in ``problem_from_profile``."""

    profile: Profile
    profile_path: str | None = None
    tiers: tuple[str, ...] = DEFAULT_TIERS
    devices: Mapping[str, DeviceSpec] = field(default_factory=dict)
    tier_profiles: Mapping[str, TierProfile] = field(default_factory=dict)
    links: Mapping[str, LinkSpec] = field(default_factory=dict)
    objective: Objective = field(default_factory=Objective)
    constraints: Constraints = field(default_factory=Constraints)
    input_bytes: int | None = None  # what the raw input costs on the wire (default: its tensor's size)
    compress: str | None = None  # the boundary codec split will use (fp16, int8)
    branch: BranchCosts | None = None
    policy: PolicyFile | None = None  # a context policy from `rl train`: it makes the plan, not the solver
    bandwidths: tuple[float, ...] | None = None  # a sweep of the phone's uplink, Mbit/s
    # Measured boundary costs (`dnnsplit boundaries`): the planner charges them and chooses the codec
    boundaries: BoundaryCosts | None = None
    lossless: str | None = None  # the lossless coding (identity, zstd, deflate); None: chosen
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    session_requests: int | None = DEFAULT_SESSION_REQUESTS  # None: the download is not charged
    # A trained bottleneck (`dnnsplit bottleneck`): one more codec, at its own cut (plan --bottleneck)
    bottleneck: BottleneckCosts | None = None


@dataclass(frozen=True)
class BranchOutcome:
    """The plan with the branch: the estimate and what it saves against the same plan without it."""

    costs: BranchCosts
    estimate: BranchEstimate
    plain_latency_ms: float  # the plan without the branch

    @property
    def latency_ms(self) -> float:
        return self.estimate.best.latency_ms

    @property
    def saves_latency_ms(self) -> float:
        return self.plain_latency_ms - self.latency_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": self.costs.directory,
            "at": self.costs.at,
            "mobile_times": self.costs.time_source,
            **self.estimate.to_dict(),
            "latency_ms": self.latency_ms,
            "saves_latency_ms": self.saves_latency_ms,
        }


@dataclass(frozen=True)
class PolicyDecision:
    """What a policy chose (candidate partition ``candidate``) and its relative gap to the exact optimum."""

    policy: str  # the policy file
    candidate: int
    gap: float
    exact_objective: float


@dataclass(frozen=True)
class PlannedDocument:
    """A plan and all that its file records; ``to_dict`` is the complete ``dnnsplit/plan@1`` document."""

    plan: Plan
    context: PlanContext
    branch: BranchOutcome | None = None
    decision: PolicyDecision | None = None
    sweep: tuple[SweepPoint, ...] | None = None
    calibration_notes: tuple[str, ...] = ()  # per profile scaled to its whole model: which, and why

    def to_dict(self) -> dict[str, Any]:
        document = plan_document(self.plan, self.context)
        if self.branch is not None:
            document["branch"] = self.branch.to_dict()
        if self.decision is not None:
            # Which solver made the plan, and how far it is from the exact optimum in this very context.
            document["solver"].update(
                policy=self.decision.policy,
                gap=self.decision.gap,
                exact_objective=self.decision.exact_objective,
            )
        return document


def profile_context(
    profile: Profile, path: str | None, input_bytes: int | None = None, compress: str | None = None
) -> PlanContext:
    """The model's identity and where ``profile`` came from, as a plan (or a policy) records them."""
    return PlanContext(
        model={k: profile.model.get(k) for k in MODEL_KEYS},
        profile={
            "path": path,
            "input_bytes_on_wire": input_bytes or profile.input.bytes,
            "device": profile.device,
            "group": profile.group,
            "latency_ms": profile.latency_ms,
            "calibration": profile.calibration,
        },
        compress=compress,
    )


def check_policy_options(bandwidths: Sequence[float] | None, constraints: Constraints) -> None:
    """A policy plans one context under no hard constraints: what else is asked of it is refused."""
    if bandwidths is not None:
        raise UsageError("--solver rl plans one context; it has no bandwidth sweep or plot", "drop them")
    if constraints.private_input or constraints.max_mobile_mb is not None:
        raise UsageError(
            "--solver rl does not handle --private-input or --max-mobile-mb", "use the exact solver for those"
        )


def check_branch_model(branch: BranchCosts, profiled_sha256: str | None) -> None:
    if profiled_sha256 and branch.model_sha256 != profiled_sha256:
        raise UsageError(
            f"the branch in {branch.directory} was built for another model ({branch.model_source}) "
            "than the profile's",
            "profile the same checkpoint and input shape that `dnnsplit branch` used",
        )


def check_policy_model(policy: PolicyFile, profiled_sha256: str | None) -> None:
    trained = (policy.meta.get("model") or {}).get("sha256")
    if trained and profiled_sha256 and trained != profiled_sha256:
        raise UsageError(
            f"{policy.path or 'the policy'} was trained for another model or profile ({policy.model_name}, "
            f"sha256 {trained[:12]}..., this profile's {profiled_sha256[:12]}...)",
            "train a policy on this profile with `dnnsplit rl train`",
        )


def _branch_on_mobile(request: PlanRequest, mobile: str, scale: float) -> BranchCosts:
    """The branch's costs, with the mobile times a profile measured when one did: the mobile tier's own
    profile (as is), else the profile every tier scales (scaled like its layers)."""
    assert request.branch is not None
    own = request.tier_profiles.get(mobile)
    if own is not None:
        timing, source, factor = own.profile.branch, own.path, 1.0
    else:
        timing, source, factor = request.profile.branch, request.profile_path or "the profile", scale
    if timing is None:
        return request.branch
    return with_mobile_timing(request.branch, timing, source, factor)


def make_plan(request: PlanRequest, progress: ProgressFn = no_progress) -> PlannedDocument:
    """The plan for ``request`` (exact, or the policy's), with its branch estimate and sweep if asked."""
    tiers = check_tiers(request.tiers)
    if request.policy is not None:
        check_policy_options(request.bandwidths, request.constraints)
    # A profile whose layers do not add up to its whole model is priced scaled to it (and says so).
    profile = request.profile.calibrated()
    sha256 = profile.model.get("sha256")
    if request.branch is not None:
        check_branch_model(request.branch, sha256)
    if request.policy is not None:
        check_policy_model(request.policy, sha256)
    if request.boundaries is not None:
        check_boundaries_model(request.boundaries, sha256)
    bottleneck = None
    if request.bottleneck is not None:
        check_bottleneck_options(request)
        check_bottleneck_model(request.bottleneck, sha256)
        tensor = cut_tensor(profile, request.bottleneck)
        bottleneck = BottleneckChoice(resolved(request.bottleneck, profile, tensor), tensor)
    input_bytes = request.input_bytes
    if input_bytes is None and request.boundaries is not None and request.boundaries.input is not None:
        input_bytes = max(1, round(request.boundaries.input.jpeg_mean))  # the measured JPEG frames

    def problem_with(compress: str | None, lossless: str) -> Problem:
        return problem_from_profile(
            profile,
            tiers=tiers,
            devices=request.devices,
            tier_profiles={t: tp.profile for t, tp in request.tier_profiles.items()},
            links=request.links,
            objective=request.objective,
            constraints=request.constraints,
            input_bytes=input_bytes,
            compress=compress,
            boundaries=request.boundaries,
            lossless=lossless,
            max_accuracy_drop=request.max_accuracy_drop,
            session_requests=request.session_requests,
        )

    scales = tuple(tier_devices(tiers, request.devices)[t].latency_scale for t in tiers)

    def bottleneck_problem(lossless: str) -> Problem:
        assert bottleneck is not None
        return with_bottleneck(
            problem_with(None, lossless), bottleneck.costs, bottleneck.tensor, lossless, scales
        )

    compress, lossless, weighed = request.compress, request.lossless or "identity", None
    if (request.boundaries is not None or bottleneck is not None) and request.policy is None:
        progress("choosing the boundary codec", 0, 1)
        compress, lossless, weighed = choose_codec(request, problem_with, bottleneck, bottleneck_problem)
    if compress not in (None, BOTTLENECK) and request.boundaries is not None and request.boundaries.tensors:
        sent = tensor_codecs(request.boundaries, compress, lossless, request.max_accuracy_drop)
        if all(o.name == "none" for o in sent.values()):  # every boundary over the bound goes uncoded
            compress = None
    if compress == BOTTLENECK:
        problem = bottleneck_problem(lossless)
        compress = None
        if bottleneck is not None:
            bottleneck = replace(bottleneck, chosen=True)
    else:
        problem = problem_with(compress, lossless)
    progress("solving", 0, 1)
    decision = None
    if request.policy is None:
        plan = solve(problem)
    else:
        from dnnsplit.partition.rl.decide import plan_with_policy

        plan, info = plan_with_policy(request.policy, problem)
        decision = PolicyDecision(
            str(request.policy.path),
            int(info["candidate"]),
            float(info["gap"]),
            float(info["exact_objective"]),
        )
    points: list[SweepPoint] | None = None
    if request.bandwidths is not None:
        points = []
        for i, b in enumerate(request.bandwidths):
            progress("sweeping bandwidth", i, len(request.bandwidths))
            points.extend(sweep_bandwidth(problem, [b]))
    devices = tier_devices(tiers, request.devices)
    measured = {t: tp.path for t, tp in request.tier_profiles.items()}
    context = replace(
        profile_context(profile, request.profile_path, input_bytes, compress),
        devices={t: device_block(spec, measured.get(t)) for t, spec in devices.items()},
        boundary_codec=None
        if request.boundaries is None and bottleneck is None
        else codec_block(request, plan, compress, lossless, weighed or [], bottleneck),
    )
    branch = None
    if request.branch is not None:
        costs = _branch_on_mobile(request, tiers[0], devices[tiers[0]].latency_scale)
        estimate = estimate_with_branch(problem, costs, devices[tiers[0]], devices[tiers[1]])
        branch = BranchOutcome(costs, estimate, plan.prediction.latency_ms)
    labelled = [
        ("profile", profile),
        *((f"{t} profile", tp.profile) for t, tp in request.tier_profiles.items()),
    ]
    notes = tuple(
        f"{label}: {p.calibrated().calibration['reason']}"
        for label, p in labelled
        if p.calibrated().calibration is not None
    )
    return PlannedDocument(plan, context, branch, decision, None if points is None else tuple(points), notes)


def check_boundaries_model(boundaries: BoundaryCosts, profiled_sha256: str | None) -> None:
    measured = boundaries.model.get("sha256")
    if measured and profiled_sha256 and measured != profiled_sha256:
        raise UsageError(
            f"the boundaries file was measured on another model ({boundaries.model.get('source')}) than the "
            "profile's",
            "run `dnnsplit boundaries` on the same MODEL and --input-shape as `dnnsplit profile`",
        )


@dataclass(frozen=True)
class CodecOption:
    """One (codec, lossless) the planner weighed, and the best plan with it."""

    codec: str
    lossless: str
    plan: Plan

    def to_dict(self) -> dict[str, Any]:
        pred = self.plan.prediction
        return {
            "codec": self.codec,
            "lossless": self.lossless,
            "objective": pred.objective,
            "latency_ms": pred.latency_ms,
            "first_request_ms": pred.first_request_ms,
            "steady_latency_ms": pred.steady_latency_ms,
            "feasible": self.plan.feasible,
            "layers": pred.layers_per_tier,
        }


BOTTLENECK = "bottleneck"


@dataclass(frozen=True)
class BottleneckChoice:
    """The bottleneck the planner weighed, the profile tensor it replaces, and whether the plan uses it."""

    costs: BottleneckCosts
    tensor: str
    chosen: bool = False

    def refusal(self, max_accuracy_drop: float) -> str | None:
        drop = self.costs.accuracy_drop
        if drop > max_accuracy_drop:
            return f"its accuracy drop, {drop:.2f} points, is over --max-accuracy-drop {max_accuracy_drop:g}"
        return None


def check_bottleneck_options(request: PlanRequest) -> None:
    if request.policy is not None:
        raise UsageError("--solver rl does not weigh a bottleneck", "use the exact solver with --bottleneck")
    if request.compress is not None:
        raise UsageError(
            f"--compress {request.compress} fixes the codec, and --bottleneck is another one",
            "drop --compress (the planner weighs the codecs) or --bottleneck",
        )
    if request.lossless is not None and request.lossless not in BOTTLENECK_CODINGS:
        raise UsageError(
            f"the bottleneck's code was measured raw and with zstd, not with --coding {request.lossless}",
            "pass --coding zstd or identity, or leave the coding to the planner",
        )


def choose_codec(
    request: PlanRequest,
    problem_with: Any,
    bottleneck: BottleneckChoice | None = None,
    bottleneck_problem: Any = None,
) -> tuple[str | None, str, list[CodecOption]]:
    """The (codec, lossless) whose exact optimum is best, over every pair the boundaries file measured (the
    one ``--compress`` / ``--coding`` fix, when given) and the bottleneck's (raw and zstd code) when there
    is one within the accuracy bound. Ties go to the simpler one (none before fp16 before int8 before the
    bottleneck, identity before zstd before deflate): the same cost for less machinery."""
    if request.boundaries is not None:
        pairs = [
            (codec, lossless)
            for codec, lossless in request.boundaries.codecs
            if (request.compress is None or codec == request.compress)
            and (request.lossless is None or lossless == request.lossless)
            and codec in ("none", "fp16", "int8")
        ]
        if not pairs:
            raise UsageError(
                f"the boundaries file measured no '{request.compress or 'any'}' codec with "
                f"'{request.lossless or 'any'}' coding",
                "re-run `dnnsplit boundaries`, or drop --compress / --coding",
            )
    else:  # the profile's own sizes: the plain plan is the option the bottleneck competes with
        pairs = [(request.compress or "none", request.lossless or "identity")]
    weighed = [CodecOption(c, ll, solve(problem_with(None if c == "none" else c, ll))) for c, ll in pairs]
    if bottleneck is not None and bottleneck.refusal(request.max_accuracy_drop) is None:
        weighed += [
            CodecOption(BOTTLENECK, ll, solve(bottleneck_problem(ll)))
            for ll in BOTTLENECK_CODINGS
            if request.lossless is None or ll == request.lossless
        ]
    feasible = [o for o in weighed if o.plan.feasible] or weighed
    best = min(feasible, key=lambda o: o.plan.prediction.objective)  # min keeps the first of equals
    return (None if best.codec == "none" else best.codec), best.lossless, weighed


def codec_block(
    request: PlanRequest,
    plan: Plan,
    compress: str | None,
    lossless: str,
    weighed: Sequence[CodecOption],
    bottleneck: BottleneckChoice | None = None,
) -> dict[str, Any]:
    """What plan.yaml records of the codec: the choice, per crossing tensor what it goes as, the options."""
    boundaries = request.boundaries
    chosen = (
        {} if boundaries is None else tensor_codecs(boundaries, compress, lossless, request.max_accuracy_drop)
    )
    used = bottleneck is not None and bottleneck.chosen
    per_tensor = []
    for link in plan.prediction.links:
        for t in link.up_tensors:
            option = chosen.get(t.name)
            entry = {
                "link": link.name,
                "tensor": t.name,
                "codec": option.name if option else "none",
                "lossless": option.lossless if option else lossless if boundaries is None else "identity",
                "bytes": t.bytes,
                "bytes_p95": None if option is None else option.bytes_p95,
                "accuracy_drop": None if option is None else option.accuracy_drop,
            }
            if t.name == request.profile.input.name and boundaries is not None and boundaries.input:
                entry["codec"] = "jpeg"
            if used and bottleneck is not None and t.name == bottleneck.costs.code_name:
                entry.update(
                    codec=BOTTLENECK,
                    lossless=lossless,
                    bytes_p95=bottleneck.costs.bytes_with(lossless)[1],
                    accuracy_drop=bottleneck.costs.accuracy_drop,
                )
            per_tensor.append(entry)
    block: dict[str, Any] = {
        "codec": BOTTLENECK if used else compress or "none",
        "lossless": lossless,
        "max_accuracy_drop": request.max_accuracy_drop,
        "accuracy_scope": "bottleneck: test split" if boundaries is None else boundaries.accuracy_scope,
        "boundaries": per_tensor,
        "options": [o.to_dict() for o in weighed],
    }
    if bottleneck is not None:
        block["bottleneck"] = {
            **bottleneck.costs.to_dict(lossless if lossless in BOTTLENECK_CODINGS else "zstd"),
            "tensor": bottleneck.tensor,
            "chosen": used,
            "refused": bottleneck.refusal(request.max_accuracy_drop),
        }
    return block
