"""The plan file, ``dnnsplit/plan@1``: a plan with everything needed to recompute its prediction by hand.

``plan_document`` writes it from a ``Plan`` and the context it came from (model identity, the profile, the
devices); ``load_plan`` reads it back into a ``PlanFile`` whose ``problem`` is rebuilt from the file alone,
so ``evaluate(file.problem, file.assignment)`` reproduces ``predicted`` (the split command relies on it).

Layout (docs/cost-model.md explains the formulas):

* ``model``: source, name, ONNX path and ``sha256``: which graph the layer and tensor names refer to;
* ``tiers``, ``compress`` (the boundary codec the tensor bytes assume, or null), ``devices`` (per tier:
  where its compute times came from), ``links`` (with the radio model's
  coefficients), ``mobile_power``, ``objective``, ``constraints``;
* ``layers``: per layer its ``tier``, its ``compute_ms`` on every tier and its ``weight_bytes``;
* ``tensors``: name, bytes, producer and consumers (layer names; producer null for the model input), and
  ``return_bytes`` for a model output that comes back at another size than it would cross upward (its
  float32 size when ``compress`` shrinks the boundaries); ``outputs``: the tensors that return to mobile;
* ``stretches``: the assignment as contiguous runs of layers on one tier, in topological order;
* ``cut_tensors``: per link, the tensors sent up it (each once) and the outputs sent back down;
* ``predicted``: ``latency_ms``, ``energy_mj``, ``objective`` and ``breakdown`` (and ``first_request_ms`` /
  ``steady_latency_ms``); ``baselines``: name -> the same figures; ``speedup``: the plan against the best
  baseline that meets the hard constraints;
* ``download`` (added compatibly, null when not charged): ``session_requests`` N, the phone's download of its
  segments (``download_mb``, ``download_ms`` over the first link's downlink) and its 1/N share per request,
  which ``latency_ms`` includes; ``tensors[].codec_ms``: a codec's encode + decode time per link crossed;
* ``boundary_codec`` (null without measured boundaries): the codec chosen (``codec``, ``lossless``), per
  boundary tensor what it is sent with and its measured bytes, and every option weighed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.fileio import read_document, write_document
from dnnsplit.partition.evaluate import Prediction
from dnnsplit.partition.feasibility import hard_violations, violations
from dnnsplit.partition.network import RADIO_MODELS, LinkSpec
from dnnsplit.partition.objective import Constraints, parse_objective
from dnnsplit.partition.planner import Plan, plan_for
from dnnsplit.partition.problem import LayerCost, MobilePower, Problem, Tensor, link_names

SCHEMA = "dnnsplit/plan@1"


@dataclass(frozen=True)
class Stretch:
    """Layers ``first..last`` (topological positions, inclusive) all on ``tier``."""

    tier: str
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class Speedup:
    """The plan against ``baseline``, the best (by objective) baseline meeting the hard constraints."""

    baseline: str
    latency: float  # baseline latency / plan latency
    energy: float | None  # baseline energy / plan energy


@dataclass(frozen=True)
class PlanContext:
    """Where a plan's numbers came from: written beside them so a reader can trace every figure."""

    model: dict[str, Any] = field(default_factory=dict)  # source, name, onnx, sha256
    profile: dict[str, Any] = field(default_factory=dict)  # path, device, runtime, group, latency_ms
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)  # tier -> device and time source
    compress: str | None = None  # boundary codec the tensor bytes assume (fp16, int8), as split will use
    # With measured boundaries: the codec chosen, per boundary tensor, and the alternatives weighed
    boundary_codec: dict[str, Any] | None = None


def device_block(spec: Any, measured: str | None = None) -> dict[str, Any]:
    """A tier's device in plan.yaml (plain data), with where its compute times came from."""
    block: dict[str, Any] = {"name": spec.name, "latency_scale": spec.latency_scale}
    block["compute"] = f"measured: {measured}" if measured else f"host profile x {spec.latency_scale:g}"
    if spec.compute_power_w is not None:
        block["compute_power_w"] = spec.compute_power_w
    if spec.idle_power_w is not None:
        block["idle_power_w"] = spec.idle_power_w
    return block


def stretches(problem: Problem, assignment: tuple[int, ...]) -> list[Stretch]:
    """The assignment as maximal runs of consecutive layers (topological order) on the same tier."""
    runs: list[Stretch] = []
    for i, t in enumerate(assignment):
        if runs and runs[-1].tier == problem.tiers[t] and runs[-1].last == i - 1:
            runs[-1] = Stretch(runs[-1].tier, runs[-1].first, i)
        else:
            runs.append(Stretch(problem.tiers[t], i, i))
    return runs


def speedup(plan: Plan) -> Speedup | None:
    """Speed-up over the best baseline that meets private_input and max_mobile_mb (None if none does)."""
    allowed = {name: pred for name, pred in plan.baselines.items() if not hard_violations(plan.problem, pred)}
    if not allowed:
        return None
    name = min(allowed, key=lambda k: (allowed[k].objective, allowed[k].latency_ms))
    best = allowed[name]
    pred = plan.prediction
    energy = None
    if best.energy_mj is not None and pred.energy_mj:
        energy = best.energy_mj / pred.energy_mj
    latency = best.latency_ms / pred.latency_ms if pred.latency_ms > 0 else float("inf")
    return Speedup(name, latency, energy)


def figures(problem: Problem, prediction: Prediction) -> dict[str, Any]:
    """``latency_ms``, ``energy_mj``, ``objective`` and their ``breakdown``: one plan's or one baseline's."""
    breakdown: dict[str, Any] = {
        "compute_ms": dict(zip(problem.tiers, prediction.compute_ms, strict=True)),
        "transfer_ms": {link.name: link.transfer_ms for link in prediction.links},
        "return_ms": {link.name: link.return_ms for link in prediction.links},
        "links": [link.to_dict() for link in prediction.links],
    }
    if prediction.energy is not None:
        e = prediction.energy
        breakdown["energy_mj"] = {"compute": e.compute_mj, "radio": e.radio_mj, "idle": e.idle_mj}
        breakdown["radio_ms"] = e.radio_ms
        breakdown["waiting_ms"] = e.waiting_ms
    return {
        "latency_ms": prediction.latency_ms,
        "energy_mj": prediction.energy_mj,
        "objective": prediction.objective,
        "layers": prediction.layers_per_tier,
        "mobile_weight_mb": prediction.mobile_weight_bytes / 1e6,
        "violations": violations(problem, prediction),
        "breakdown": breakdown,
        "first_request_ms": prediction.first_request_ms,
        "steady_latency_ms": prediction.steady_latency_ms,
    }


def plan_document(plan: Plan, context: PlanContext | None = None) -> dict[str, Any]:
    """The plan as plain data, schema ``dnnsplit/plan@1`` (see the module doc)."""
    ctx = context or PlanContext()
    p = plan.problem
    pred = plan.prediction
    names = [la.name for la in p.layers]
    gain = speedup(plan)
    c = p.constraints
    return {
        "schema": SCHEMA,
        "model": dict(ctx.model),
        "profile": dict(ctx.profile),
        "tiers": list(p.tiers),
        "compress": ctx.compress,
        "devices": {tier: dict(ctx.devices.get(tier, {})) for tier in p.tiers},
        "links": {name: _link_dict(link) for name, link in zip(p.link_names, p.links, strict=True)},
        "mobile_power": None
        if p.mobile_power is None
        else {"compute_w": p.mobile_power.compute_w, "idle_w": p.mobile_power.idle_w},
        "objective": p.objective.describe(),
        "constraints": {
            "budget_ms": c.budget_ms,
            "private_input": c.private_input,
            "max_mobile_mb": c.max_mobile_mb,
        },
        "solver": {"name": plan.solver, "proven_optimal": plan.proven_optimal},
        "status": {
            "feasible": plan.feasible,
            "meets_budget": plan.meets_budget,
            "over_budget_ms": plan.over_budget_ms,
            "violations": violations(p, pred),
        },
        "predicted": figures(p, pred),
        "baselines": {name: figures(p, b) for name, b in plan.baselines.items()},
        "speedup": None
        if gain is None
        else {"vs": gain.baseline, "latency": gain.latency, "energy": gain.energy},
        "stretches": [
            {
                "tier": s.tier,
                "first": s.first,
                "last": s.last,
                "layers": s.count,
                "from": names[s.first],
                "to": names[s.last],
            }
            for s in stretches(p, pred.assignment)
        ],
        "cut_tensors": {
            link.name: {
                "up": [{"name": t.name, "bytes": t.bytes} for t in link.up_tensors],
                "down": [{"name": t.name, "bytes": t.bytes} for t in link.down_tensors],
            }
            for link in pred.links
        },
        "layers": [
            {
                "name": la.name,
                "tier": p.tiers[t],
                "compute_ms": dict(zip(p.tiers, la.compute_ms, strict=True)),
                "weight_bytes": la.weight_bytes,
            }
            for la, t in zip(p.layers, pred.assignment, strict=True)
        ],
        "tensors": [
            {
                "name": x.name,
                "bytes": x.bytes,
                "producer": None if x.producer is None else names[x.producer],
                "consumers": [names[i] for i in x.consumers],
                **({} if x.return_bytes is None else {"return_bytes": x.return_bytes}),
                **({"codec_ms": list(x.codec_ms)} if x.codec_ms else {}),
            }
            for x in p.tensors
        ],
        "outputs": [p.tensors[o].name for o in p.outputs],
        "download": None
        if p.session_requests is None
        else {
            "session_requests": p.session_requests,
            "download_mb": pred.mobile_weight_bytes / 1e6,
            "download_ms": pred.download_ms,
            "per_request_ms": pred.download_share_ms,
            "first_request_ms": pred.first_request_ms,
            "steady_latency_ms": pred.steady_latency_ms,
        },
        "boundary_codec": ctx.boundary_codec,
        "notes": list(plan.notes),
    }


def _link_dict(link: LinkSpec) -> dict[str, Any]:
    data: dict[str, Any] = link.to_dict()
    model = link.radio_model
    if model is not None:
        data["radio_model"] = {
            "a_up_mw_per_mbps": model.a_up_mw_per_mbps,
            "a_down_mw_per_mbps": model.a_down_mw_per_mbps,
            "base_mw": model.base_mw,
        }
    return data


def save_plan(path: str | Path, plan: Plan, context: PlanContext | None = None) -> dict[str, Any]:
    """Write plan.yaml (or .json), atomically; returns the document written."""
    document = plan_document(plan, context)
    write_document(path, document)
    return document


@dataclass(frozen=True)
class PlanFile:
    """A plan read back: the problem rebuilt from the file alone, and the tier of every layer."""

    path: str
    document: dict[str, Any]
    problem: Problem
    assignment: dict[str, str]  # layer name -> tier

    @property
    def model_sha256(self) -> str | None:
        return self.document.get("model", {}).get("sha256")

    @cached_property
    def plan(self) -> Plan:
        """The plan recomputed from the file alone: its prediction and baselines are the file's figures."""
        solver = self.document.get("solver") or {}
        return plan_for(
            self.problem,
            self.assignment,
            solver=str(solver.get("name", "given")),
            proven_optimal=bool(solver.get("proven_optimal", False)),
            notes=[str(n) for n in self.document.get("notes") or []],
        )


def load_plan(path: str | Path) -> PlanFile:
    """Read a ``dnnsplit/plan@1`` file; a file missing a field or inconsistent with itself is a UsageError."""
    doc = read_document(path, SCHEMA)
    try:
        problem = problem_from_document(doc)
        assignment = {str(la["name"]): str(la["tier"]) for la in doc["layers"]}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(
            f"{path} is not a complete plan (missing or bad field: {exc})", "re-run dnnsplit plan"
        ) from exc
    problem.tiers_of(assignment)  # every layer assigned, to a known tier, data flowing forward
    return PlanFile(str(path), doc, problem, assignment)


def problem_fields(problem: Problem) -> dict[str, Any]:
    """The fields ``problem_from_document`` rebuilds a problem from (a plan file's, without assignment)."""
    names = [la.name for la in problem.layers]
    c = problem.constraints
    power = problem.mobile_power
    return {
        "tiers": list(problem.tiers),
        "links": {name: link.to_dict() for name, link in zip(problem.link_names, problem.links, strict=True)},
        "mobile_power": None if power is None else {"compute_w": power.compute_w, "idle_w": power.idle_w},
        "objective": problem.objective.describe(),
        "constraints": {
            "budget_ms": c.budget_ms,
            "private_input": c.private_input,
            "max_mobile_mb": c.max_mobile_mb,
        },
        "layers": [
            {
                "name": la.name,
                "compute_ms": dict(zip(problem.tiers, la.compute_ms, strict=True)),
                "weight_bytes": la.weight_bytes,
            }
            for la in problem.layers
        ],
        "tensors": [
            {
                "name": x.name,
                "bytes": x.bytes,
                "producer": None if x.producer is None else names[x.producer],
                "consumers": [names[i] for i in x.consumers],
                **({} if x.return_bytes is None else {"return_bytes": x.return_bytes}),
            }
            for x in problem.tensors
        ],
        "outputs": [problem.tensors[o].name for o in problem.outputs],
    }


def problem_from_document(doc: Mapping[str, Any]) -> Problem:
    tiers = tuple(str(t) for t in doc["tiers"])
    layers = tuple(
        LayerCost(
            str(la["name"]),
            tuple(float(la["compute_ms"][t]) for t in tiers),
            int(la.get("weight_bytes", 0)),
        )
        for la in doc["layers"]
    )
    index = {la.name: i for i, la in enumerate(layers)}

    def layer_index(name: str) -> int:
        if name not in index:
            raise ValueError(f"tensor refers to unknown layer '{name}'")
        return index[name]

    tensors = tuple(
        Tensor(
            str(x["name"]),
            int(x["bytes"]),
            None if x.get("producer") is None else layer_index(str(x["producer"])),
            tuple(sorted({layer_index(str(c)) for c in x.get("consumers", [])})),
            None if x.get("return_bytes") is None else int(x["return_bytes"]),
            tuple(float(ms) for ms in x.get("codec_ms", ())),
        )
        for x in doc["tensors"]
    )
    position = {x.name: j for j, x in enumerate(tensors)}
    outputs = tuple(position[str(name)] for name in doc["outputs"])
    links_doc = doc["links"]
    links = []
    for name in link_names(tiers):
        entry = links_doc[name]
        radio = entry.get("radio")
        if radio is not None and radio not in RADIO_MODELS:
            raise ValueError(f"link {name} has unknown radio '{radio}'")
        links.append(
            LinkSpec(
                up_mbps=float(entry["up_mbps"]),
                down_mbps=float(entry["down_mbps"]),
                rtt_ms=float(entry["rtt_ms"]),
                radio=radio,
                name=str(entry.get("name", "custom")),
            )
        )
    power = doc.get("mobile_power")
    cons = doc.get("constraints") or {}
    return Problem(
        tiers=tiers,
        layers=layers,
        tensors=tensors,
        outputs=outputs,
        links=tuple(links),
        mobile_power=None
        if power is None
        else MobilePower(float(power["compute_w"]), float(power["idle_w"])),
        objective=parse_objective(str(doc.get("objective", "latency"))),
        constraints=Constraints(
            budget_ms=cons.get("budget_ms"),
            private_input=bool(cons.get("private_input", False)),
            max_mobile_mb=cons.get("max_mobile_mb"),
        ),
        session_requests=None
        if (doc.get("download") or {}).get("session_requests") is None
        else int(doc["download"]["session_requests"]),
    )
