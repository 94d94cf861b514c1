"""The profile picture: per-layer latency over per-layer output size, where a cheap cut shows."""

from __future__ import annotations

from pathlib import Path

from dnnsplit.fileio import atomic_path
from dnnsplit.profiling.profile import Profile


def plot_profile(profile: Profile, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = profile.layers
    xs = list(range(len(rows)))
    latency = [r.latency_ms for r in rows]
    size_kb = [max(r.output_bytes, 1) / 1000.0 for r in rows]
    width = min(24.0, max(8.0, 0.12 * len(rows)))
    fig, (ax_lat, ax_size) = plt.subplots(2, 1, figsize=(width, 7), sharex=True)
    ax_lat.bar(xs, latency, color="#3b6ea8", width=0.85)
    ax_lat.set_ylabel("latency (ms, median)")
    ax_lat.set_title(
        f"{profile.model.get('name', '')}: {profile.latency_ms:.2f} ms whole model "
        f"({profile.device.get('runtime')}, {profile.device.get('threads')} threads); "
        f"per-{profile.group} sum {profile.layer_sum_ratio:.2f}x"
    )
    ax_size.bar(xs, size_kb, color="#c0692b", width=0.85)
    ax_size.axhline(profile.input.bytes / 1000.0, color="k", linestyle="--", linewidth=1, label="model input")
    ax_size.set_yscale("log")
    ax_size.set_ylabel("output size (KB, per sample)")
    ax_size.legend(loc="upper right")
    if len(rows) <= 80:
        ax_size.set_xticks(xs)
        ax_size.set_xticklabels([r.name for r in rows], rotation=90, fontsize=7)
    else:
        ax_size.set_xlabel(f"{len(rows)} {profile.group}s in topological order")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
