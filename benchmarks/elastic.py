"""Elastic partitioning: the candidate cuts of real models, and what one per-request decision costs.

For each model: its profile (onnxruntime, per node; kept under .cache/bench-profiles/), the plan's problem
(mobile-web phone, edge preset, 4g), the sweep of ``split --elastic`` (768 contexts: uplink 0.1-200 Mbit/s,
rtt 2-150 ms, phone 0.5-2x, edge load 1-8x) timed, its candidates, and ``decide`` timed over random
contexts (target: p99 < 1 ms), checked against ``evaluate`` of every candidate on the rescaled problem.

Not measured here yet: the phased tbf-link run (elastic client against every static cut); see
docs/benchmarks/elastic.md.

    python benchmarks/elastic.py [--models resnet18,mobilenet_v3_small] [--decisions 20000]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from _common import ROOT, machine, write_results

from dnnsplit.partition import evaluate, problem_from_profile
from dnnsplit.partition.elastic import Context, decide, in_context, piece_of_layer, sweep_candidates
from dnnsplit.profiling.profile import Profile

PROFILES = ROOT / ".cache" / "bench-profiles"


def profile_of(model: str) -> Profile:
    path = PROFILES / f"{model}.json"
    if path.is_file():
        return Profile.load(path)
    from dnnsplit.models import ModelOptions
    from dnnsplit.profiling import prepare_model
    from dnnsplit.profiling.run import ProfileSettings, profile_prepared

    prepared = prepare_model(f"torchvision:{model}", ModelOptions())
    profile = profile_prepared(prepared, ProfileSettings(threads=2, repeat=10, warmup=3))
    PROFILES.mkdir(parents=True, exist_ok=True)
    profile.save(path)
    return profile


def bench_model(model: str, decisions: int, seed: int) -> dict[str, Any]:
    problem = problem_from_profile(profile_of(model).calibrated(), links={"mobile-edge": "4g"})
    start = time.perf_counter()
    spec = sweep_candidates(problem)
    sweep_s = time.perf_counter() - start
    rng = np.random.default_rng(seed)
    contexts = [
        Context(
            float(np.exp(rng.uniform(np.log(0.1), np.log(200)))),
            float(np.exp(rng.uniform(np.log(0.5), np.log(400)))),
            float(rng.uniform(2, 150)),
            float(np.exp(rng.uniform(np.log(0.5), np.log(2)))),
            float(rng.uniform(1, 8)),
        )
        for _ in range(decisions)
    ]
    times = np.empty(decisions)
    chosen = []
    current = None
    for i, context in enumerate(contexts):
        t0 = time.perf_counter()
        decision = decide(spec, context, current=current, hysteresis=0.1)
        times[i] = (time.perf_counter() - t0) * 1000
        current = decision.candidate.boundary
        chosen.append(decision)
    # The decision's prediction is the cost model's: checked on a sample against evaluate on the problem.
    piece = piece_of_layer(problem, spec)
    worst = 0.0
    for context in contexts[:200]:
        exact = {
            c.name: evaluate(
                in_context(problem, context),
                [0 if piece[la.name] < c.boundary else 1 for la in problem.layers],
            ).latency_ms
            for c in spec.candidates
        }
        got = decide(spec, context)
        worst = max(worst, abs(got.predicted_ms - min(exact.values())) / min(exact.values()))
    return {
        "model": model,
        "layers": problem.n,
        "sweep_contexts": spec.grid["contexts"],
        "sweep_s": sweep_s,
        "pieces": len(spec.pieces),
        "candidates": [
            {**c.to_dict(), "phone_ms": spec.phone_ms(c.boundary), "edge_ms": spec.edge_ms(c.boundary)}
            for c in spec.candidates
        ],
        "dropped": list(spec.dropped),
        "decision_ms": {
            "p50": float(np.percentile(times, 50)),
            "p99": float(np.percentile(times, 99)),
            "max": float(times.max()),
            "n": decisions,
        },
        "chosen": {c.name: sum(1 for d in chosen if d.candidate.name == c.name) for c in spec.candidates},
        "max_rel_gap_to_evaluate": worst,
    }


def markdown(results: list[dict[str, Any]], info: dict[str, Any], load: str) -> str:
    lines = [
        "# Elastic partitioning: candidate cuts and the per-request decision",
        "",
        f"Machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}; load average at the start: "
        f"{load} (shared with other jobs). Reproduce: `python benchmarks/elastic.py`.",
        "",
        "Per model: the plan's problem (host profile, mobile-web phone 6x, edge 0.4x, 4g), swept over the "
        "768 contexts of `split --elastic` (uplink 0.1-200 Mbit/s x rtt 2-150 ms x phone 0.5-2x x edge "
        "load 1-8x; the downlink follows the uplink in 4g's ratio); the distinct exact optima plus "
        "all-local and all-edge are the candidates. Then `decide` (exact optimum over the candidates, 10% "
        "hysteresis) on random contexts (uplink 0.1-200, downlink 0.5-400 Mbit/s, rtt 2-150 ms, phone "
        "0.5-2x, edge load 1-8x).",
        "",
        "| model | layers | sweep | pieces | candidates | decision p50 | decision p99 | max | gap to evaluate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        d = r["decision_ms"]
        names = ", ".join(c["name"] for c in r["candidates"])
        lines.append(
            f"| {r['model']} | {r['layers']} | {r['sweep_s']:.1f} s | {r['pieces']} | {names} | "
            f"{d['p50'] * 1000:.1f} us | {d['p99'] * 1000:.1f} us | {d['max'] * 1000:.0f} us | "
            f"{r['max_rel_gap_to_evaluate']:.1e} |"
        )
    for r in results:
        lines += [
            "",
            f"## {r['model']}: candidates",
            "",
            "| cut | pieces on the phone | phone ms (profile) | edge ms (profile) | sends up | optimal in (of 768) "
            "| chosen (random contexts) |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in r["candidates"]:
            lines.append(
                f"| {c['name']} | {c['boundary']} | {c['phone_ms']:.1f} | {c['edge_ms']:.1f} | "
                f"{c['up_bytes'] / 1e3:.1f} kB | {c['optimal_in']} | {r['chosen'][c['name']]} |"
            )
        if r["dropped"]:
            lines.append(f"\nOptima dropped (not nested with the others): {len(r['dropped'])}.")
    lines += [
        "",
        "Decision p99 target: < 1 ms. The decision evaluates each candidate's closed-form latency "
        "(compute / phone speed, compute x edge load, rtt, bytes / bandwidth), which equals the cost model's "
        "`evaluate` on the rescaled problem (last column: the largest relative difference on 200 contexts).",
        "",
        "Not run yet: the phased run on a tbf-shaped link in a network namespace (30 -> 1 -> 8 -> 0.2 -> 30 "
        "Mbit/s; the elastic client against every static candidate, all-local and all-edge, in turns; the "
        "estimator's error and settling time). The end-to-end behaviour on an emulated link is covered by "
        "tests/runtime/test_elastic_runtime.py (the cut follows a link that slows mid-stream).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="resnet18,mobilenet_v3_small")
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load = open("/proc/loadavg").read().split()[:3]
    results = [bench_model(m, args.decisions, args.seed) for m in args.models.split(",")]
    info = machine()
    write_results(
        "elastic",
        {"machine": info, "load": load, "results": results},
        markdown(results, info, " ".join(load)),
    )


if __name__ == "__main__":
    main()
