"""What `dnnsplit plan` shows of a plan, as text: a headline, tables and lines that the CLI only draws.

Built from the typed plan (``PlannedDocument``), never from its file's dicts, so the table and the file
cannot disagree on a figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dnnsplit.partition.early_exit import BranchEstimate
from dnnsplit.partition.evaluate import Prediction
from dnnsplit.partition.feasibility import violations
from dnnsplit.partition.plan_file import speedup, stretches
from dnnsplit.partition.planner import Plan
from dnnsplit.partition.request import PlannedDocument
from dnnsplit.partition.sweep import SweepPoint, cut_changes, describe_cut
from dnnsplit.text import Summary, TextTable, human_bytes, ms

MAX_STRETCHES = 20
MAX_CUT_ROWS = 12


def plan_summary(planned: PlannedDocument, name: str) -> Summary:
    """The plan's headline and tables, then the branch's and the sweep's when the plan has them."""
    plan = planned.plan
    p = plan.problem
    links = ", ".join(
        f"{k} {link.up_mbps:g}/{link.down_mbps:g} Mbit/s rtt {link.rtt_ms:g} ms"
        for k, link in zip(p.link_names, p.links, strict=True)
    )
    c = p.constraints
    shown = [
        f"budget {c.budget_ms:g} ms" if c.budget_ms is not None else "",
        "private input" if c.private_input else "",
        f"<= {c.max_mobile_mb:g} MB on mobile" if c.max_mobile_mb is not None else "",
    ]
    headline = (
        f": {p.n} layers over {' -> '.join(p.tiers)}; {links}; objective {p.objective.describe()}; "
        f"constraints: {', '.join(s for s in shown if s) or 'none'}"
    )
    blocks: list[TextTable | str] = [_stretches(plan), _cuts(plan), _figures(plan)]
    blocks += _verdicts(planned)
    if planned.context.boundary_codec is not None:
        blocks += _codecs(planned.context.boundary_codec)
    if planned.branch is not None:
        blocks += _branch(plan, planned.branch.estimate)
    if planned.sweep is not None:
        blocks.append(sweep_table(planned.sweep))
    return Summary(name, headline, tuple(blocks))


def _stretches(plan: Plan) -> TextTable:
    p = plan.problem
    runs = stretches(p, plan.prediction.assignment)
    rows = [
        (s.tier, f"#{s.first}-#{s.last}", str(s.count), p.layers[s.first].name, p.layers[s.last].name)
        for s in runs[:MAX_STRETCHES]
    ]
    if len(runs) > MAX_STRETCHES:
        rows.append(("...", f"{len(runs) - MAX_STRETCHES} more", "", "", ""))
    return TextTable(
        "Assignment (contiguous stretches in topological order)",
        ("tier", "layers", "count", "from", "to"),
        tuple(rows),
        "lrrll",
    )


def _cuts(plan: Plan) -> TextTable:
    crossing = [
        (link.name, direction, t.name, human_bytes(t.bytes))
        for link in plan.prediction.links
        for direction, tensors in (("up", link.up_tensors), ("down", link.down_tensors))
        for t in tensors
    ]
    rows = crossing[:MAX_CUT_ROWS]
    if len(crossing) > MAX_CUT_ROWS:
        rows.append(("...", "", f"{len(crossing) - MAX_CUT_ROWS} more", ""))
    if not crossing:
        rows.append(("-", "", "nothing crosses a link: the plan runs on the phone alone", ""))
    return TextTable(
        "Cut tensors (sent once per link)", ("link", "dir", "tensor", "size"), tuple(rows), "lllr"
    )


def _figures(plan: Plan) -> TextTable:
    p = plan.problem
    own = "dnnsplit (rl)" if plan.solver == "rl" else "dnnsplit (optimal)"
    latency = plan.prediction.latency_ms
    session = p.session_requests

    def row(label: str, pred: Prediction, baseline: bool) -> tuple[str, ...]:
        traffic = {link.name: link for link in pred.links}
        ratio = pred.latency_ms / latency if latency > 0 else float("inf")
        return (
            label,
            ms(pred.latency_ms),
            *((ms(pred.first_request_ms), ms(pred.steady_latency_ms)) if session else ()),
            ms(pred.energy_mj),
            *[ms(v) for v in pred.compute_ms],
            *[ms(traffic[k].transfer_ms + traffic[k].return_ms) for k in p.link_names],
            f"{ratio:.2f}x" if baseline else "",
            ", ".join(v.split(":")[0] for v in violations(p, pred)) or "-",
        )

    rows = [row(own, plan.prediction, False)]
    rows += [row(label, pred, True) for label, pred in plan.baselines.items()]
    columns = (
        "plan",
        "latency",
        *(("first request", "steady state") if session else ()),
        "energy",
        *[f"compute {t}" for t in p.tiers],
        *[f"{k} up+down" for k in p.link_names],
        "speed-up",
        "violates",
    )
    title = "Predicted, one request (ms; energy of the phone in mJ)"
    if session:
        title = (
            f"Predicted, one request (ms; energy of the phone in mJ); latency includes 1/{session} of the "
            "phone's download of its segments (first request: all of it; steady state: none)"
        )
    return TextTable(title, columns, tuple(rows))


def _codecs(block: dict[str, Any]) -> list[TextTable | str]:
    """The codecs weighed with measured boundaries, and the one chosen."""
    rows = tuple(
        (
            o["codec"] + ("" if o["lossless"] == "identity" else f"+{o['lossless']}"),
            ms(o["latency_ms"]),
            ms(o["first_request_ms"]),
            ms(o["steady_latency_ms"]),
            "/".join(str(v) for v in o["layers"].values()),
            "*" if (o["codec"], o["lossless"]) == (block["codec"], block["lossless"]) else "",
        )
        for o in block["options"]
    )
    table = TextTable(
        "Boundary codecs weighed (measured bytes and times; the best plan with each)",
        ("codec", "latency", "first request", "steady state", "layers per tier", "chosen"),
        rows,
        "lrrrrl",
    )
    sent = [
        f"{b['tensor']} as {b['codec']}"
        + ("" if b["lossless"] == "identity" else f"+{b['lossless']}")
        + f" ({human_bytes(b['bytes'])})"
        for b in block["boundaries"]
    ]
    shown = f"; sent: {', '.join(sent[:4])}" if sent else ""
    line = (
        f"codec: {block['codec']} + {block['lossless']} (accuracy drop at most "
        f"{block['max_accuracy_drop']:g} points per boundary{shown})"
    )
    lines: list[TextTable | str] = [table, line]
    bottleneck = block.get("bottleneck")
    if bottleneck:  # plan --bottleneck: what it was, and why it is not in the plan
        b = bottleneck
        why = (
            "chosen"
            if b["chosen"]
            else f"refused: {b['refused']}"
            if b["refused"]
            else "weighed, not chosen (no plan with it is faster)"
        )
        lines.append(
            f"bottleneck {b['directory']} after {b['at']}: code {b['bytes']['mean']:.0f} B "
            f"(float32 {human_bytes(b['bytes']['float32'])}), "
            f"drop {b['accuracy']['drop_points']:.2f} points; {why}"
        )
    return lines


def _verdicts(planned: PlannedDocument) -> list[str]:
    plan = planned.plan
    lines = []
    proof = "proven optimal" if plan.proven_optimal else "not proven optimal"
    if planned.decision is not None:
        proof += f"; {planned.decision.gap:.2%} above the exact optimum"
    gain = speedup(plan)
    if gain is not None:
        energy = "" if gain.energy is None else f", {gain.energy:.2f}x less energy"
        lines.append(
            f"speed-up over the best baseline ({gain.baseline}): {gain.latency:.2f}x{energy}; "
            f"solver {plan.solver} ({proof})"
        )
    budget = plan.problem.constraints.budget_ms
    if budget is not None:
        verdict = "meets" if plan.meets_budget else f"MISSES by {plan.over_budget_ms:.3f} ms"
        lines.append(f"budget {budget:g} ms: {verdict}")
    return lines


def _branch(plan: Plan, estimate: BranchEstimate) -> list[TextTable | str]:
    plain = plan.prediction
    rows = [("best plan, no branch", ms(plain.latency_ms), ms(plain.energy_mj), "")]
    rows += [
        (f"branch, {m.mode}", ms(m.latency_ms), ms(m.energy_mj), "*" if m.mode == estimate.chosen else "")
        for m in (estimate.sequential, estimate.speculative)
    ]
    c = estimate.compute_ms
    table = TextTable(
        f"Early exit (exit rate {estimate.sequential.exit_rate:.1%}; stem {c['stem']:.2f} ms + branch "
        f"{c['branch']:.2f} ms on mobile, rest {c['rest']:.2f} ms on {plan.problem.tiers[1]})",
        ("", "expected latency ms", "expected energy mJ", "chosen"),
        tuple(rows),
    )
    best = estimate.best
    if best.latency_ms < plain.latency_ms:
        saved = plain.latency_ms - best.latency_ms
        verdict = f"the branch ({best.mode}) saves {saved:.2f} ms per request on average"
    else:
        verdict = (
            "the branch does not pay off here: the best plan without it is "
            f"{best.latency_ms - plain.latency_ms:.2f} ms faster "
            "(onnxruntime runs the binary layers as float convolutions)"
        )
    return [table, verdict]


def sweep_table(points: Sequence[SweepPoint]) -> TextTable:
    changes = set(cut_changes(points))
    names = list(points[0].plan.baselines)
    rows = [
        (
            f"{pt.up_mbps:.3g}",
            ms(pt.plan.prediction.latency_ms),
            "/".join(str(v) for v in pt.plan.prediction.layers_per_tier.values()),
            ("* " if i in changes else "") + describe_cut(pt.plan),
            *[ms(pt.plan.baselines[n].latency_ms if n in pt.plan.baselines else None) for n in names],
        )
        for i, pt in enumerate(points)
    ]
    return TextTable(
        f"Bandwidth sweep on the {points[0].plan.problem.link_names[0]} uplink "
        "(latency in ms; * = the cut moved)",
        ("up Mbit/s", "plan", "layers per tier", "where the cut falls", *names),
        tuple(rows),
        "rrrl" + "r" * len(names),
    )
