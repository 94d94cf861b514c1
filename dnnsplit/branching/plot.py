"""The exit curve as a PNG: exit rate and accuracies against the entropy threshold."""

from __future__ import annotations

from pathlib import Path

from dnnsplit.branching.branch_file import BranchFile
from dnnsplit.fileio import atomic_path


def plot_exit_curve(doc: BranchFile, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [c["threshold"] for c in doc.curve]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(xs, [c["exit_rate"] for c in doc.curve], marker="o", label="exit rate")
    ax.plot(xs, [c["overall_accuracy"] for c in doc.curve], marker="s", label="overall accuracy")
    exited = [
        (x, c["branch_exited_accuracy"])
        for x, c in zip(xs, doc.curve, strict=True)
        if c["branch_exited_accuracy"] is not None
    ]
    if exited:
        ax.plot(*zip(*exited, strict=True), marker="^", label="accuracy of exited samples")
    ax.axhline(doc.accuracy.backbone, color="grey", linestyle=":", label="backbone accuracy")
    ax.axvline(doc.threshold, color="black", linestyle="--", label=f"chosen threshold {doc.threshold:.3g}")
    ax.set_xscale("log")
    ax.set_xlabel("normalised entropy threshold")
    ax.set_ylabel("rate / accuracy (test split)")
    ax.set_title(f"early exit after {doc.at} ({doc.model.get('name')}, {doc.data})")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
