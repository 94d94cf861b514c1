"""What `dnnsplit rl eval` shows of an evaluation (``evaluate_context`` / ``evaluate_multiuser``), as text."""

from __future__ import annotations

from typing import Any

from dnnsplit.text import Summary, TextTable


def evaluation_summary(result: dict[str, Any]) -> Summary:
    """The headline and table of an evaluation result, with ``model`` and ``tiers`` added to it."""
    return _context(result) if result["scenario"] == "context" else _multiuser(result)


def _context(result: dict[str, Any]) -> Summary:
    headline = (
        f" over {' -> '.join(result['tiers'])}: {result['contexts']} held-out contexts, "
        f"{result['candidates']} candidate partitions; decision {result['decision_us']['median']:.0f} us "
        f"(p99 {result['decision_us']['p99']:.0f} us)"
    )
    rows = tuple(
        (
            name,
            f"{row['gap']:.3%}",
            f"{row['gap_p99']:.2%}",
            f"{row['optimal']:.1%}",
            f"{row['mean_objective_ratio']:.4f}",
        )
        for name, row in result["policies"].items()
    )
    table = TextTable(
        "Against the exact optimum (min-cut) per context",
        ("policy", "mean gap", "p99 gap", "exactly optimal", "mean objective / exact"),
        rows,
    )
    return Summary(str(result["model"]), headline, (table,))


def _multiuser(result: dict[str, Any]) -> Summary:
    headline = (
        f" over {' -> '.join(result['tiers'])}: {result['users']} users, "
        f"{result['seeds']} traces x {result['requests']} requests per load"
    )
    names = list(result["loads"][0]["policies"])
    rows = tuple(
        (
            f"{row['load']:g}",
            name,
            f"{p['mean_latency_ms']:.1f}",
            f"{p['p95_latency_ms']:.1f}",
            f"{p['edge_share']:.0%}",
            f"{p['mean_edge_wait_ms']:.1f}",
        )
        for row in result["loads"]
        for name in names
        for p in (row["policies"][name],)
    )
    table = TextTable(
        "Per request, after the system drains (ms)",
        ("load", "policy", "mean latency", "p95 latency", "on edge", "edge wait"),
        rows,
    )
    verdicts = tuple(
        f"load {row['load']:g}: rl vs myopic exact {row['rl_vs_myopic']:+.1%}, "
        f"vs load-aware exact {row['rl_vs_load_aware']:+.1%}"
        for row in result["loads"]
    )
    return Summary(str(result["model"]), headline, (table, *verdicts))
