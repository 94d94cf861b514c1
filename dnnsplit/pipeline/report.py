"""OUT/report.md and the PNGs beside it, written from the artifacts the stages left in OUT.

The report reads the files (profile.json, branch/branch.yaml, variants/variants.yaml, plans/*.yaml,
segments/manifest.yaml), not the stages' in-memory results, so a run whose stages were all skipped
still reports the same figures. Each file is read by its own loader, the one the commands use, so a
damaged or foreign file fails here as it would there.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dnnsplit import __version__
from dnnsplit.fileio import atomic_path, write_text_atomic
from dnnsplit.partition.plan_file import PlanFile, load_plan, speedup
from dnnsplit.pipeline.budgets import BudgetResult
from dnnsplit.pipeline.config import PipelineConfig
from dnnsplit.pipeline.layout import Layout
from dnnsplit.pipeline.planning import network_label
from dnnsplit.pipeline.stages import StageOutcome

REPORT = "report.md"
TOP_LAYERS = 10


def write_report(
    config: PipelineConfig, layout: Layout, outcomes: list[StageOutcome], budgets: list[BudgetResult]
) -> Path:
    from dnnsplit.profiling.profile import Profile

    results = {o.name: o.result for o in outcomes}
    profile = Profile.load(layout.profile)
    plans = {
        network_label(link, i): load_plan(layout.plans / f"{network_label(link, i)}.yaml")
        for i, link in enumerate(config.plan.networks)
    }
    parts = [
        "# dnnsplit pipeline report",
        "",
        f"Config `{config.path}`, dnnsplit {__version__}, written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. "
        + (
            "**Every budget holds.**"
            if all(b.holds for b in budgets)
            else "**Budgets missed: " + ", ".join(b.name for b in budgets if not b.holds) + ".**"
        ),
        "",
        *_budgets_section(budgets),
        *_model_section(config, profile, results.get("train") or {}),
        *_profile_section(profile, layout),
        *_plans_section(plans, layout, config),
    ]
    if config.branch.enabled:
        parts += _branch_section(layout, plans[next(iter(plans))])
    if config.prune.enabled:
        parts += _prune_section(layout, config)
    parts += _split_section(layout)
    parts += _stages_section(outcomes)
    path = layout.root / REPORT
    write_text_atomic(path, "\n".join(parts) + "\n")
    return path


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _budgets_section(budgets: list[BudgetResult]) -> list[str]:
    rows = []
    for b in budgets:
        op = {"max": "<=", "min": ">=", "check": ""}[b.kind]
        if b.kind == "check":
            limit, verdict = "chained segments = whole model", "holds" if b.holds else "**MISSED**"
        elif b.limit is None:
            limit, verdict = "not enforced", "-"
        else:
            limit, verdict = f"{op} {b.limit:g} {b.unit}".strip(), "holds" if b.holds else "**MISSED**"
        actual = (
            "-"
            if b.actual is None
            else (f"{b.actual:.3g}" if b.kind == "check" else f"{b.actual:.4g} {b.unit}")
        )
        rows.append([b.name, limit, actual, verdict])
    return ["## Budgets", "", *_table(["budget", "limit", "actual", "verdict"], rows)]


def _model_section(config: PipelineConfig, profile: Any, train: dict[str, Any]) -> list[str]:
    m = config.model
    how = (
        f"trained here for {train.get('epochs')} epochs (best epoch {train.get('best_epoch')}, "
        f"val accuracy {_f(train.get('val_accuracy'), 4)})"
        if train.get("trained")
        else "weights given in the config"
    )
    rows = [
        ["model", f"`{m.source}`"],
        ["input", "x".join(str(v) for v in profile.input_shape)],
        ["classes", str(m.num_classes or "-")],
        ["data", f"`{train.get('data', config.data)}`"],
        ["weights", how],
        ["test accuracy", _f(train.get("test_accuracy"), 4)],
        ["parameters", f"{profile.total_params:,}"],
        ["MACs", f"{profile.total_macs / 1e6:.1f} M"],
        [
            "whole model on this host",
            f"{profile.latency_ms:.3f} ms ({profile.device.get('runtime')}, "
            f"{profile.device.get('threads')} threads, {profile.device.get('cpu')})",
        ],
    ]
    return ["## Model", "", *_table(["", ""], rows)]


def _profile_section(profile: Any, layout: Layout) -> list[str]:
    from dnnsplit.profiling.plot import plot_profile

    plot_profile(profile, layout.root / "profile.png")
    ranked = sorted(profile.layers, key=lambda r: -r.latency_ms)[:TOP_LAYERS]
    total = profile.latency_ms or 1.0
    rows = [
        [
            r.name,
            r.op,
            f"{r.latency_ms:.3f}",
            f"{100 * r.latency_ms / total:.1f}",
            f"{r.macs / 1e6:.1f}",
            f"{r.output_bytes / 1000:.1f}",
        ]
        for r in ranked
    ]
    return [
        "## Per-layer profile",
        "",
        f"{len(profile.layers)} {profile.group}s; their sum is {profile.measured_sum_ratio:.2f}x the whole "
        "model"
        + (
            "."
            if profile.calibration is None
            else f"; their times are scaled x{profile.calibration['scale']:.2f} to it (calibration)."
        ),
        "",
        "![per-layer latency and output size](profile.png)",
        "",
        f"The {len(rows)} slowest:",
        "",
        *_table(["layer", "op", "ms", "%", "MMACs", "output KB"], rows),
    ]


def _plans_section(plans: dict[str, PlanFile], layout: Layout, config: PipelineConfig) -> list[str]:
    _plot_plans(plans, layout.root / "plans.png")
    tiers = config.tier_names
    lines = [
        "## Chosen plan per network",
        "",
        f"Tiers {' -> '.join(f'{t} ({config.tiers[t]})' for t in tiers)}; "
        f"objective {config.objective.describe()}. "
        f"The plan shipped (split below) is the one for `{next(iter(plans))}`.",
        "",
        "![plan vs baselines per network](plans.png)",
        "",
    ]
    rows = []
    for label, file in plans.items():
        pred = file.plan.prediction
        layers = pred.layers_per_tier
        speed = speedup(file.plan)
        rows.append(
            [
                label,
                _f(pred.latency_ms),
                _f(pred.first_request_ms),
                _f(pred.steady_latency_ms),
                f"{pred.mobile_weight_bytes / 1e6:.2f}",
                _f(pred.energy_mj),
                " / ".join(str(layers.get(t, 0)) for t in tiers),
                "-" if speed is None else f"{speed.latency:.2f}x vs {speed.baseline}",
            ]
        )
    session = next(iter(plans.values())).plan.problem.session_requests
    lines += [
        (
            f"Latency is per request of a {session}-request session (`plan.session_requests`): it includes "
            f"1/{session} of the phone's download of its segments; the first request waits for all of it, "
            "a steady-state request for none."
        )
        if session
        else "The phone's download of its segments is not charged (`plan.session_requests: 0`).",
        "",
    ]
    lines += _table(
        [
            "network",
            "latency ms",
            "first request ms",
            "steady state ms",
            "phone download MB",
            "phone energy mJ",
            f"layers {'/'.join(tiers)}",
            "speed-up",
        ],
        rows,
    )
    names = list(next(iter(plans.values())).plan.baselines)
    base_rows = [
        [label, _f(file.plan.prediction.latency_ms), *[_f(file.plan.baselines[n].latency_ms) for n in names]]
        for label, file in plans.items()
    ]
    lines += ["Latency (ms) of the plan and of the baselines:", ""]
    lines += _table(["network", "dnnsplit", *names], base_rows)
    return lines


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _plot_plans(plans: dict[str, PlanFile], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    labels = list(plans)
    names = ["dnnsplit", *next(iter(plans.values())).plan.baselines]
    values = [
        [(file.plan.prediction if n == "dnnsplit" else file.plan.baselines[n]).latency_ms for n in names]
        for file in plans.values()
    ]
    x = np.arange(len(labels))
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(labels) * len(names) / 3), 4))
    for k, name in enumerate(names):
        ax.bar(x + k * width, [row[k] for row in values], width, label=name)
    ax.set_xticks(x + width * (len(names) - 1) / 2)
    ax.set_xticklabels(labels)
    ax.set_yscale("log")
    # bars start well below the fastest one: on a log axis the default limit hides the shortest bars
    ax.set_ylim(bottom=min(v for row in values for v in row if v > 0) / 3)
    ax.set_ylabel("predicted end-to-end latency (ms)")
    ax.set_title("optimal plan vs baselines per network")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _branch_section(layout: Layout, shipped: PlanFile) -> list[str]:
    from dnnsplit.branching.branch_file import load_branch
    from dnnsplit.branching.plot import plot_exit_curve

    doc = load_branch(layout.branch)
    plot_exit_curve(doc, layout.root / "exits.png")
    lines = [
        "## Early-exit branch",
        "",
        f"A binarized branch after `{doc.at}`: threshold {doc.threshold:.4g}, exit rate {doc.exit_rate:.1%}, "
        f"overall accuracy {doc.accuracy.overall:.4f} (backbone {doc.accuracy.backbone:.4f}); "
        f"mobile.onnx {doc.sizes.mobile_onnx_bytes / 1e6:.2f} MB.",
        "",
        "![exit curve](exits.png)",
        "",
    ]
    v = doc.validation
    if not v.get("passed", True):
        lines += [
            f"**Note:** onnxruntime and PyTorch disagree on {v.get('exit_mismatches')} exit decision(s) and "
            f"{v.get('answer_mismatches')} answer(s) of {v.get('samples')} test samples (binarized layers "
            "flip sign near zero); the branch is not in the shipped segments. More `branch.epochs` help.",
            "",
        ]
    block = shipped.document.get("branch")
    if block:
        plain = shipped.plan.prediction.latency_ms
        verdict = (
            f"saves {block['saves_latency_ms']:.2f} ms per request on average"
            if block["saves_latency_ms"] > 0
            else f"does not pay off here ({-block['saves_latency_ms']:.2f} ms slower than without it)"
        )
        lines += [
            f"Expected latency with the branch ({block['chosen']}): {block['latency_ms']:.2f} ms against "
            f"{plain:.2f} ms without it: the branch {verdict}.",
            "",
        ]
    return lines


def _prune_section(layout: Layout, config: PipelineConfig) -> list[str]:
    from dnnsplit.pruning.variants import VariantsFile

    doc = VariantsFile.load(layout.variants)
    net = doc.context.network.name
    points = []
    for v in doc.variants:
        plan = v.plans.get(net) or next(iter(v.plans.values()))
        points.append((v.name, v.method, plan.latency_ms, v.accuracy, v.size_bytes, v.macs))
    _plot_pareto(
        points, layout.root / "pareto.png", f"pruned variants for {doc.context.device.name} over {net}"
    )
    front = _front([(p[2], p[3]) for p in points])
    rows = [
        [
            name,
            method,
            f"{lat:.2f}",
            f"{acc:.4f}",
            f"{size / 1e6:.2f}",
            f"{macs / 1e6:.1f}",
            "yes" if k in front else "",
        ]
        for k, (name, method, lat, acc, size, macs) in enumerate(points)
    ]
    return [
        "## Pruning",
        "",
        f"Channel-pruned variants for the phone ({config.tiers['mobile']}) over {net}, each fine-tuned by "
        "distillation; latency is end to end over mobile and edge with the best partition for that variant, "
        f"from profiles measured with {config.prune.threads} onnxruntime thread(s).",
        "",
        "![accuracy vs latency](pareto.png)",
        "",
        *_table(["variant", "method", "latency ms", "test acc", "MB", "MMACs", "Pareto"], rows),
    ]


def _front(points: list[tuple[float, float]]) -> set[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    return {
        i
        for i, (lat, acc) in enumerate(points)
        if not any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc) for l2, a2 in points)
    }


def _plot_pareto(points: list[tuple[str, str, float, float, int, int]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    front = sorted((points[i][2], points[i][3]) for i in _front([(p[2], p[3]) for p in points]))
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="grey", label="Pareto front")
    for name, method, lat, acc, _size, _macs in points:
        ax.scatter([lat], [acc], marker="o" if method != "uniform" else "s")
        ax.annotate(name, (lat, acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("end-to-end latency (ms)")
    ax.set_ylabel("test accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def _split_section(layout: Layout) -> list[str]:
    from dnnsplit.splitting.manifest import Manifest

    manifest = Manifest.load(layout.segments)
    rows = [[s.index + 1, s.tier, f"`{s.file}`", s.layers, f"{s.bytes / 1e6:.2f}"] for s in manifest.segments]
    v = manifest.validation
    check = (
        "Validation was skipped (split.validate: 0)."
        if v is None
        else f"Validation on {v.inputs} inputs: max relative difference {v.max_rel_diff:.3g} "
        f"({'passed' if v.passed else 'FAILED'})."
    )
    return [
        "## Shipped segments",
        "",
        f"In `{layout.segments}`:",
        "",
        *_table(["#", "tier", "file", "layers", "MB"], rows),
        check,
        "",
    ]


def _stages_section(outcomes: list[StageOutcome]) -> list[str]:
    rows = [[o.name, o.status, f"{o.seconds:.1f}" if o.status == "ran" else "-", o.why] for o in outcomes]
    return ["## Stages of this run", "", *_table(["stage", "status", "s", "why"], rows)]
