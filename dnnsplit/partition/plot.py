"""Latency against uplink bandwidth: the optimal plan, each baseline, and where the cut moves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dnnsplit.fileio import atomic_path
from dnnsplit.partition.sweep import SweepPoint, cut_changes, describe_cut

_BASELINE_STYLE = {
    "all-mobile": ":",
    "all-edge": "--",
    "all-cloud": "-.",
    "best-single-cut": (0, (5, 1, 1, 1)),
}


def plot_sweep(points: Sequence[SweepPoint], path: str | Path, title: str = "") -> None:
    """Write a PNG: latency vs the phone's uplink (both log), marking wherever the optimal cut changes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p.up_mbps for p in points]
    fig, ax = plt.subplots(figsize=(10, 6))
    names = sorted({name for p in points for name in p.plan.baselines})
    for name in names:
        ys = [p.plan.baselines[name].latency_ms if name in p.plan.baselines else float("nan") for p in points]
        ax.plot(xs, ys, linestyle=_BASELINE_STYLE.get(name, "--"), linewidth=1.4, label=name)
    ax.plot(
        xs,
        [p.plan.prediction.latency_ms for p in points],
        color="k",
        linewidth=2.4,
        marker="o",
        markersize=3,
        label="dnnsplit plan (optimal)",
    )
    top = max(p.plan.prediction.latency_ms for p in points)
    for i in cut_changes(points):
        x = (points[i - 1].up_mbps * points[i].up_mbps) ** 0.5  # between the two points, on a log axis
        ax.axvline(x, color="#999999", linewidth=0.8, linestyle="--")
        ax.annotate(
            describe_cut(points[i].plan),
            xy=(x, top),
            xytext=(3, 0),
            textcoords="offset points",
            rotation=90,
            fontsize=7,
            va="top",
            color="#555555",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"uplink of {points[0].plan.problem.link_names[0]} (Mbit/s)")
    ax.set_ylabel("end-to-end latency (ms, one request)")
    first = describe_cut(points[0].plan)
    ax.set_title(title or f"Optimal split vs bandwidth (at {xs[0]:g} Mbit/s: {first})", fontsize=10)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
