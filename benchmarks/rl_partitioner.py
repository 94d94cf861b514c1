"""The deep-RL partitioner (issue 7) against the exact solver and the baselines.

Context scenario: resnet18 and mobilenet_v3_small over 2 and 3 tiers; PPO with the default timesteps;
1,000 held-out contexts. Targets: mean objective within 1% of the exact optimum, >= 95% of decisions exactly
optimal, decision < 1 ms, training < 5 min on 2 cores.
Multiuser scenario: resnet18, mobile + edge, 20 users, camera frames as 30 KB JPEGs; every rule on the same
traces at each offered load. Target: at heavy load (1.5) mean latency >= 10% below myopic exact; the distance
to load-aware exact is reported as it falls.
Writes docs/benchmarks/rl.{md,json} and docs/benchmarks/rl_multiuser.png. Timings share the CPU with whatever
else runs: wrap the run in `flock /tmp/dnnsplit-timing.lock` on a shared machine.

    python benchmarks/rl_partitioner.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from _common import RESULTS, machine, write_results
from plan_solver import profile_of

from dnnsplit.partition import problem_from_profile
from dnnsplit.partition.rl.evaluate import evaluate_context, evaluate_multiuser
from dnnsplit.partition.rl.multiuser import MultiUserConfig
from dnnsplit.partition.rl.train import DEFAULT_TIMESTEPS, Scenario, default_space, train_policy

CONTEXT_MODELS = ["resnet18", "mobilenet_v3_small"]
TIER_SETS = [("mobile", "edge"), ("mobile", "edge", "cloud")]
LOADS = [0.2, 0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 2.0]
LIGHT, HEAVY = 0.3, 1.5
JPEG_BYTES = 30_000


def context_rows(quick: bool) -> list[dict[str, Any]]:
    rows = []
    for name in CONTEXT_MODELS:
        profile = profile_of(name, False)
        for tiers in TIER_SETS:
            base = problem_from_profile(profile, tiers=tiers)
            start = time.perf_counter()
            policy = train_policy(
                base,
                Scenario("context", default_space(base)),
                timesteps=10_000 if quick else None,
                seed=0,
                model={"name": name},
            )
            train_s = time.perf_counter() - start
            result = evaluate_context(policy, 200 if quick else 1000)
            rows.append(
                {
                    "model": name,
                    "tiers": list(tiers),
                    "layers": base.n,
                    "candidates": len(policy.candidates),
                    "timesteps": policy.meta["training"]["timesteps"],
                    "train_s": train_s,
                    "candidate_search_s": policy.meta["training"]["candidate_search"]["seconds"],
                    **{k: result[k] for k in ("gap", "optimal", "mean_objective_ratio", "decision_us")},
                    "baselines": result["policies"],
                }
            )
            print(
                f"context {name} {len(tiers)} tiers: gap {result['gap']:.4%}, optimal {result['optimal']:.1%}, "
                f"train {train_s:.0f} s",
                flush=True,
            )
    return rows


def multiuser_result(quick: bool) -> dict[str, Any]:
    base = problem_from_profile(
        profile_of("resnet18", False), tiers=("mobile", "edge"), input_bytes=JPEG_BYTES
    )
    config = MultiUserConfig(users=20)
    start = time.perf_counter()
    policy = train_policy(
        base,
        Scenario("multiuser", default_space(base), config),
        timesteps=20_000 if quick else None,
        seed=0,
        model={"name": "resnet18"},
    )
    train_s = time.perf_counter() - start
    result = evaluate_multiuser(policy, LOADS, seeds=1 if quick else 3, requests=1000 if quick else 3000)
    result["train_s"] = train_s
    result["timesteps"] = policy.meta["training"]["timesteps"]
    return result


def plot(result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    loads = [row["load"] for row in result["loads"]]
    styles = {
        "rl": "-o",
        "myopic-exact": "--s",
        "load-aware-exact": "-.^",
        "all-local": ":v",
        "all-edge": ":x",
    }
    for name, style in styles.items():
        ax.plot(
            loads, [row["policies"][name]["mean_latency_ms"] for row in result["loads"]], style, label=name
        )
    ax.set_yscale("log")
    ax.set_xlabel("offered load (edge utilisation if every request ran on the edge)")
    ax.set_ylabel("mean latency per request (ms)")
    ax.set_title(f"resnet18, {result['users']} users sharing one edge: latency vs offered load")
    ax.axvline(HEAVY, color="grey", lw=0.5)
    ax.axvline(LIGHT, color="grey", lw=0.5)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "rl_multiuser.png", dpi=110)
    plt.close(fig)


def markdown(rows: list[dict[str, Any]], mu: dict[str, Any], quick: bool) -> str:
    lines = [
        "# Deep-RL partitioner (`dnnsplit rl`)",
        "",
        "Produced by `python benchmarks/rl_partitioner.py`"
        + (" --quick (NOT the reported figures)" if quick else "")
        + f" on {machine()['cpu']} ({machine()['cores']} cores, shared with other work: timings are upper bounds). "
        "PPO (stable-baselines3), seed 0, default timesteps; profiles: onnxruntime, 2 threads, per node; "
        "devices: the presets (phone 6x, edge 0.4x, cloud 0.1x the host).",
        "",
        "## Context scenario: 1,000 held-out contexts",
        "",
        "Contexts: phone uplink 0.1-200 Mbit/s, downlink 1-8x it, RTT 2-150 ms; backhaul 50-2000 Mbit/s, "
        "4-80 ms; phone speed 0.5-2x, edge load 1-8x; half the contexts weigh energy (0.05-5 per mJ). "
        "Targets: mean objective within 1% of exact, >= 95% exactly optimal, decision < 1 ms, training < 5 min.",
        "",
        "| model | tiers | layers | candidates | steps | training (s) | mean objective / exact | mean gap "
        "| exactly optimal | decision median / p99 (us) | nominal-exact gap | best single-tier gap |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        single = min(v["gap"] for k, v in r["baselines"].items() if k.startswith("all-"))
        lines.append(
            f"| {r['model']} | {len(r['tiers'])} | {r['layers']} | {r['candidates']} | {r['timesteps']} "
            f"| {r['train_s']:.0f} | {r['mean_objective_ratio']:.4f} | {r['gap']:.3%} | {r['optimal']:.1%} "
            f"| {r['decision_us']['median']:.0f} / {r['decision_us']['p99']:.0f} "
            f"| {r['baselines']['nominal-exact']['gap']:.2%} | {single:.2%} |"
        )
    lines += [
        "",
        "Training time includes the candidate search (exact solves over sampled contexts until two batches of "
        "250 add no new optimum). Decision time: encoding the context and the policy network in numpy, per "
        "context. nominal-exact: the exact plan of the middle context used everywhere (a plan made once).",
        "",
        f"## Multiuser scenario: resnet18, mobile + edge, {mu['users']} users, 30 KB JPEG frames",
        "",
        f"PPO {mu['timesteps']} steps ({mu['train_s']:.0f} s). {mu['seeds']} traces x {mu['requests']} requests "
        "per load; every rule on the same traces. Offered load = arrival rate x the edge time of an all-edge "
        "request (the edge's utilisation if everything went there). Mean latency per request (ms):",
        "",
        "| load | rl | myopic exact | load-aware exact | all-local | all-edge | rl vs myopic | rl vs load-aware |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in mu["loads"]:
        p = row["policies"]
        lines.append(
            f"| {row['load']:g} | "
            + " | ".join(
                f"{p[n]['mean_latency_ms']:.1f}"
                for n in ("rl", "myopic-exact", "load-aware-exact", "all-local", "all-edge")
            )
            + f" | {row['rl_vs_myopic']:+.1%} | {row['rl_vs_load_aware']:+.1%} |"
        )
    lines += ["", "![latency vs offered load](rl_multiuser.png)", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--quick", action="store_true", help="short runs to check the script, not the figures"
    )
    args = parser.parse_args()
    rows = context_rows(args.quick)
    mu = multiuser_result(args.quick)
    plot(mu)
    data = {
        "machine": machine(),
        "quick": args.quick,
        "default_timesteps": DEFAULT_TIMESTEPS,
        "context": rows,
        "multiuser": mu,
    }
    write_results("rl", data, markdown(rows, mu, args.quick))


if __name__ == "__main__":
    main()
