"""Elastic partitioning: the candidate cuts of real models, and what one per-request decision costs.

For each model: its profile (onnxruntime, per node; kept under .cache/bench-profiles/), the plan's problem
(mobile-web phone, edge preset, 4g), the sweep of ``split --elastic`` (768 contexts: uplink 0.1-200 Mbit/s,
rtt 2-150 ms, phone 0.5-2x, edge load 1-8x) timed, its candidates, and ``decide`` timed over random
contexts (target: p99 < 1 ms), checked against ``evaluate`` of every candidate on the rescaled problem.

Then the phased run (root only: two network namespaces and tbf, as benchmarks/runtime_bench.py): each model
of ``--phase-models`` split with ``--elastic`` from its 4g plan, the edge in one namespace, the phone's
client in the other (its compute stretched to the mobile-web preset's 6x, 20 ms RTT added in-process), the
link's rate changed by tbf in phases (30 -> 1 -> 8 -> 0.2 -> 30 Mbit/s). Every configuration (the elastic
client, every static candidate cut, all-local, all-edge) sends the same camera frame: its JPEG where the cut
starts at the input, the split's (coded) boundary otherwise. They run the whole schedule in turns, ROUNDS
times (order reversed every other round); per phase p50/p95/mean, the best static, the estimator's uplink
against the shaped rate, settling, abandoned requests, the decision's p99, and the issue's floors.

    python benchmarks/elastic.py [--models resnet18,mobilenet_v3_small] [--decisions 20000] [--phase-s 20]
        [--phase-models resnet18:2,mobilenet_v3_small:1] [--warmup-s 40] [--skip-phases]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, ROOT, machine, wait_healthy, write_results

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


def markdown(results: list[dict[str, Any]], info: dict[str, Any], load: str, phases: dict[str, Any]) -> str:
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
        "The end-to-end behaviour on an emulated link is also covered by tests/runtime/test_elastic_runtime.py "
        "(the cut follows a link that slows mid-stream).",
        "",
    ]
    return "\n".join(lines + phases_markdown(phases) + [""])


# -- the phased run on a tbf-shaped link ----------------------------------------------------------------------
PHASES = (30.0, 1.0, 8.0, 0.2, 30.0)
RTT_MS = 20.0
SETTLE_S = 2.0
SPLITS = ROOT / ".cache" / "bench-elastic"


def elastic_dir(model: str) -> Path:
    """``model`` split with --elastic from its 4g plan, made once under .cache/bench-elastic/."""
    directory = SPLITS / model
    if (directory / "manifest.yaml").is_file():
        return directory
    from dnnsplit.fileio import write_document
    from dnnsplit.models import ModelOptions
    from dnnsplit.partition.network import parse_link
    from dnnsplit.partition.plan_file import load_plan
    from dnnsplit.partition.request import PlanRequest, make_plan
    from dnnsplit.profiling import prepare_model
    from dnnsplit.splitting.elastic import split_elastic
    from dnnsplit.splitting.split import SplitSettings

    SPLITS.mkdir(parents=True, exist_ok=True)
    plan = SPLITS / f"{model}-plan.yaml"
    request = PlanRequest(profile_of(model), links={"mobile-edge": parse_link("4g")})
    write_document(plan, make_plan(request).to_dict())
    prepared = prepare_model(f"torchvision:{model}", ModelOptions())
    split_elastic(prepared, directory, SplitSettings(validate=2), plan, load_plan(plan))
    return directory


def frame_jpeg_bytes() -> bytes:
    """The benchmark's camera frame: a 320x240 synthetic scene (smooth shapes, sensor noise) as a
    quality-90 JPEG, the same bytes for every configuration."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:240, 0:320] / 240
    rgb = np.stack([np.sin(5 * x + c) * np.cos(3 * y - 2 * c) + 0.5 * np.sin(17 * x * y + c) for c in range(3)], -1)
    rgb = rgb * 70 + 128 + rng.normal(0, 4, rgb.shape)
    out = io.BytesIO()
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()


def phase_client(args: argparse.Namespace) -> None:
    """Inside the phone's namespace: requests back to back until the schedule ends; one JSON line out.
    Every configuration sends the same frame: its JPEG where a cut starts at the input, else the boundary
    (with the split's coding)."""
    import runtime_bench as rb

    from dnnsplit.images import load_image
    from dnnsplit.partition.network import LinkSpec
    from dnnsplit.runtime.client import CollaborativeClient
    from dnnsplit.runtime.elastic import ElasticClient
    from dnnsplit.splitting.manifest import Manifest

    url = f"http://{rb.EDGE_IP}:{rb.PORT}"
    wait_healthy(url)
    directory = Path(args.phase_client)
    manifest = Manifest.load(directory)
    rtt = LinkSpec(up_mbps=1e5, down_mbps=1e5, rtt_ms=RTT_MS, radio=None, name="rtt")
    pieces = len(manifest.segments)
    image = frame_jpeg_bytes()
    x = load_image(image, manifest.input.shape)
    common: dict[str, Any] = {"token": args.token, "link": rtt, "timeout_s": 600, "threads": 2}
    boundary = pieces
    if args.config == "elastic":
        client: Any = ElasticClient(directory, url, slowdown=args.slowdown, **common)
    else:
        boundary = {c["name"]: int(c["boundary"]) for c in manifest.elastic["candidates"]}[args.config]
        remote = url if boundary < pieces else None
        client = CollaborativeClient(directory, remote, slowdown=args.slowdown, split_at=boundary, **common)
        for i in range(pieces):
            client.chain.session(i)
        client.infer(x, emulate=False, split_at=boundary, metadata={"start": str(boundary)}, image=image)
    rows = []
    while time.time() < args.start:
        time.sleep(0.01)
    while time.time() < args.end:
        t = time.time() - args.start
        decision_ms = probe_ms = None
        if args.config == "elastic":
            frame = client.infer(x, image)
            result, cut, up = frame.result, frame.cut, frame.decision.context.up_mbps
            decision_ms, probe_ms, ms = frame.decision_ms, frame.probe_ms, frame.latency_ms  # (probe waits in)
        else:
            result = client.infer(x, split_at=boundary, metadata={"start": str(boundary)}, image=image)
            cut, up, ms = args.config, None, result.stages.total_ms
        rows.append(
            {
                "t": t,
                "ms": ms,
                "probe_ms": probe_ms,
                "cut": cut,
                "up_est": up,
                "up_bytes": result.stages.up_bytes,
                "abandoned": result.abandoned,
                "fallback": result.fallback is not None,
                "decision_ms": decision_ms,
            }
        )
    client.close()
    print(json.dumps(rows))


def serve_elastic(args: argparse.Namespace) -> None:
    import runtime_bench as rb

    from dnnsplit.runtime.server import ServeSettings, TierService, run_server
    from dnnsplit.splitting.manifest import Manifest

    directory = Path(args.serve)
    settings = ServeSettings(tier="edge", host=rb.EDGE_IP, port=rb.PORT, token=args.token, threads=2)
    run_server(TierService(Manifest.load(directory), directory, settings))


WARMUP_S = 40.0  # the client loads its sessions and runs every piece once before the schedule starts


def phased(model: str, phase_s: float, rounds: int, warmup_s: float = WARMUP_S) -> dict[str, Any]:
    import secrets
    import subprocess
    import sys

    import runtime_bench as rb

    from dnnsplit.partition.network import LinkSpec
    from dnnsplit.splitting.manifest import Manifest

    rb.NS_MOB, rb.NS_EDGE = "dnse-mob", "dnse-edge"  # our own: the runtime benchmark may run beside this
    directory = elastic_dir(model)
    names = [c["name"] for c in Manifest.load(directory).elastic["candidates"]]
    why = rb.netns_up()
    if why is not None:
        return {"skipped": why}
    token = secrets.token_hex(8)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    me = str(Path(__file__).resolve())
    runs: dict[str, list[dict[str, Any]]] = {}
    per_round: dict[str, list[float]] = {}
    server = subprocess.Popen(
        ["ip", "netns", "exec", rb.NS_EDGE, sys.executable, me, "--serve", str(directory), "--token", token],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        configs = ["elastic", *names]
        # In turns: every configuration runs the whole schedule once per round, the order reversed in every
        # other round, so that each one sees the machine's load of the same minutes.
        turns = [c for r in range(rounds) for c in (configs if r % 2 == 0 else configs[::-1])]
        for config in turns:
            rb.shape(LinkSpec(PHASES[0], PHASES[0], 0.0, radio=None))
            start = time.time() + warmup_s
            end = start + phase_s * len(PHASES)
            command = [
                "ip", "netns", "exec", rb.NS_MOB, sys.executable, me, "--phase-client", str(directory),
                "--config", config, "--token", token, "--slowdown", "6", "--start", str(start), "--end", str(end),
            ]  # fmt: skip
            client = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
            for k, rate in enumerate(PHASES):
                while time.time() < start + k * phase_s:
                    time.sleep(0.01)
                rb.shape(LinkSpec(rate, rate, 0.0, radio=None))
            stdout, _ = client.communicate(timeout=phase_s * len(PHASES) + 900)
            rows = json.loads(stdout.strip().splitlines()[-1])
            runs.setdefault(config, []).extend(rows)
            per_round.setdefault(config, []).append(float(np.mean([r["ms"] for r in rows])) if rows else None)
            print(f"  {model} {config}: {len(rows)} requests, mean {per_round[config][-1]}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        rb.netns_down()
    return {
        **summarize_phases(runs, phase_s),
        "model": model,
        "rounds": rounds,
        "round_means_ms": per_round,
        "jpeg_bytes": len(frame_jpeg_bytes()),
    }


def summarize_phases(runs: dict[str, list[dict[str, Any]]], phase_s: float) -> dict[str, Any]:
    phases = []
    for k, rate in enumerate(PHASES):
        lo, hi = k * phase_s, (k + 1) * phase_s
        row: dict[str, Any] = {"mbps": rate, "configs": {}}
        for config, rows in runs.items():
            ms = [r["ms"] for r in rows if lo + SETTLE_S <= r["t"] < hi]
            row["configs"][config] = {
                "requests": len(ms),
                "p50_ms": float(np.percentile(ms, 50)) if ms else None,
                "p95_ms": float(np.percentile(ms, 95)) if ms else None,
                "cuts": sorted({r["cut"] for r in rows if lo <= r["t"] < hi}),
            }
            row["configs"][config]["mean_ms"] = float(np.mean(ms)) if ms else None
            row["configs"][config]["abandoned"] = sum(1 for r in rows if lo <= r["t"] < hi and r.get("abandoned"))
        elastic = [r for r in runs.get("elastic", []) if lo <= r["t"] < hi]
        # Settled: the first request of the phase (pooled over rounds, by time into the phase) from which on
        # the estimate stays within 25% of the shaped rate in at least 80% of the requests.
        elastic.sort(key=lambda r: r["t"])
        close = [abs(r["up_est"] / rate - 1) <= 0.25 for r in elastic]
        settled = next(
            (elastic[i]["t"] - lo for i in range(len(close)) if close[i] and np.mean(close[i:]) >= 0.8), None
        )
        after = [r["up_est"] / rate - 1 for r in elastic if r["t"] >= lo + SETTLE_S]
        row["estimator"] = {"settling_s": settled, "median_error": float(np.median(after)) if after else None}
        statics = {c: v["mean_ms"] for c, v in row["configs"].items() if c != "elastic" and v["mean_ms"]}
        if statics and row["configs"].get("elastic", {}).get("mean_ms"):
            best = min(statics, key=statics.__getitem__)
            row["best_static"] = best
            row["elastic_vs_best"] = row["configs"]["elastic"]["mean_ms"] / statics[best] - 1
        phases.append(row)
    means = {c: float(np.mean([r["ms"] for r in rows])) if rows else None for c, rows in runs.items()}
    # every phase weighs the same (a slow phase has fewer requests, so the request mean favours it less)
    phase_means = {
        c: float(np.mean([p["configs"][c]["mean_ms"] for p in phases if p["configs"][c]["mean_ms"]]))
        for c in runs
    }
    decisions = [r["decision_ms"] for r in runs.get("elastic", []) if r.get("decision_ms") is not None]
    return {
        "phase_s": phase_s,
        "settle_s": SETTLE_S,
        "rtt_ms": RTT_MS,
        "phases": phases,
        "mean_ms": means,
        "phase_mean_ms": phase_means,
        "decision_ms_p99": float(np.percentile(decisions, 99)) if decisions else None,
        "abandoned": sum(1 for r in runs.get("elastic", []) if r.get("abandoned")),
        "fallbacks": sum(1 for r in runs.get("elastic", []) if r.get("fallback")),
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def phases_markdown(data: dict[str, Any]) -> list[str]:
    if "skipped" in data:
        return ["", f"Phased tbf run: skipped ({data['skipped']}).", ""]
    lines = []
    for run in data["runs"]:
        lines += phase_table(run)
    return lines


def phase_table(data: dict[str, Any]) -> list[str]:
    configs = list(data["mean_ms"])
    rates = " -> ".join(f"{p['mbps']:g}" for p in data["phases"])
    lines = [
        "",
        f"## Phased run: {data['model']} on a tbf-shaped link ({rates} Mbit/s, {data['phase_s']:g} s per phase, "
        f"rtt {data['rtt_ms']:g} ms)",
        "",
        f"Every configuration sends the same camera frame, a {data['jpeg_bytes'] / 1e3:.1f} kB JPEG (320x240, "
        "quality 90), where its cut starts at the input, and the split's boundaries otherwise; the phone's "
        f"compute is stretched 6x. {data['rounds']} round(s), in turns (each configuration runs the whole "
        "schedule once per round, the order reversed every other round); the rounds are pooled. "
        f"p50 / p95 / mean ms (requests) of the requests started in each phase after its first "
        f"{data['settle_s']:g} s. Elastic's abandoned requests (past 3x their predicted time, finished on the "
        "phone) are in its cells.",
        "",
        "| phase (Mbit/s) | " + " | ".join(configs) + " | best static | elastic vs best | estimate settles | "
        "estimate error |",
        "|---|" + "---|" * (len(configs) + 4),
    ]
    for p in data["phases"]:
        cells = []
        for c in configs:
            cell = p["configs"][c]
            extra = f", {cell['abandoned']} abandoned" if cell.get("abandoned") else ""
            cells.append(
                f"{_ms(cell['p50_ms'])} / {_ms(cell['p95_ms'])} / {_ms(cell['mean_ms'])} ({cell['requests']}{extra})"
            )
        e = p["estimator"]
        settle = "-" if e["settling_s"] is None else f"{e['settling_s']:.1f} s"
        error = "-" if e["median_error"] is None else f"{e['median_error']:+.0%}"
        vs = "-" if "elastic_vs_best" not in p else f"{p['elastic_vs_best']:+.0%}"
        lines.append(
            f"| {p['mbps']:g} | " + " | ".join(cells) + f" | {p.get('best_static', '-')} | {vs} | {settle} | {error} |"
        )
    lines.append("| mean over the run (requests) | " + " | ".join(_ms(data["mean_ms"][c]) for c in configs) + " | | | | |")
    lines.append(
        "| mean of the phase means | " + " | ".join(_ms(data["phase_mean_ms"][c]) for c in configs) + " | | | | |"
    )
    rounds = "; ".join(
        f"{c}: {', '.join(_ms(m) for m in ms)}" for c, ms in data["round_means_ms"].items()
    )
    statics = {c: m for c, m in data["mean_ms"].items() if c != "elastic" and m}
    best = min(statics, key=statics.__getitem__)
    ratio = statics[best] / data["mean_ms"]["elastic"]
    phase_best = min((m for c, m in data["phase_mean_ms"].items() if c != "elastic"))
    phase_ratio = phase_best / data["phase_mean_ms"]["elastic"]
    worst = max(p.get("elastic_vs_best", 0.0) for p in data["phases"])
    p99 = data["decision_ms_p99"]
    # The oracle: in every phase the static cut that was best there, switched for free at the phase's start
    # (after the settling time, which no configuration is charged). No per-request chooser beats it by
    # choosing, so best single static / oracle is the most the whole-run floor can get on this schedule.
    bests = [p["configs"][p["best_static"]]["mean_ms"] for p in data["phases"] if "best_static" in p]
    oracle_requests = len(bests) / sum(1 / m for m in bests)  # equal phase times: requests go as 1 / mean
    oracle_phases = float(np.mean(bests))
    if all(p.get("best_static") == "all-local" for p in data["phases"]):
        lines += [
            "",
            "all-local is the best static in every phase: the phone runs the model in less than any round "
            "trip, so the elastic client's probes measure only the round trip (no offloading cut would win at "
            "any uplink rate) and its uplink estimate is not kept up: the estimate columns say nothing here.",
        ]
    lines += [
        "",
        f"Per-round means (ms): {rounds}.",
        "",
        f"The per-phase oracle (each phase's best static, switched for free at its start): {oracle_requests:.0f} ms "
        f"over the run's requests, {oracle_phases:.0f} ms by the mean of the phase means; so on this schedule no "
        f"choice of cuts gets more than {statics[best] / oracle_requests:.2f}x over the best single static by "
        f"requests, {phase_best / oracle_phases:.2f}x by phases. Elastic against the oracle: "
        f"{data['mean_ms']['elastic'] / oracle_requests - 1:+.0%} by requests, "
        f"{data['phase_mean_ms']['elastic'] / oracle_phases - 1:+.0%} by phases.",
        "",
        f"Floors: whole-run mean {ratio:.2f}x lower than the best single static ({best}; floor 1.3x: "
        f"{'met' if ratio >= 1.3 else 'NOT met'}); by the mean of the phase means {phase_ratio:.2f}x; worst "
        f"phase {worst:+.0%} against that phase's best static (floor +10%: {'met' if worst <= 0.10 else 'NOT met'}); "
        f"decision p99 in the run {p99 * 1000:.0f} us (floor 1 ms: {'met' if p99 < 1 else 'NOT met'}); "
        f"{data['abandoned']} elastic request(s) abandoned, {data['fallbacks']} fallback(s) in all.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="resnet18,mobilenet_v3_small")
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--phase-s", type=float, default=20.0)
    parser.add_argument(
        "--phase-models", default="resnet18:2,mobilenet_v3_small:1", help="MODEL:ROUNDS,... for the tbf run"
    )
    parser.add_argument("--skip-phases", action="store_true")
    parser.add_argument(
        "--render", action="store_true", help="write elastic.md again from docs/benchmarks/elastic.json (no run)"
    )
    parser.add_argument("--warmup-s", type=float, default=WARMUP_S)
    for hidden in ("--phase-client", "--serve", "--config", "--token"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    for hidden in ("--slowdown", "--start", "--end"):
        parser.add_argument(hidden, type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase_client:
        phase_client(args)
        return
    if args.serve:
        serve_elastic(args)
        return
    if args.render:
        data = json.loads((RESULTS / "elastic.json").read_text())
        phases = data["phased"]
        text = markdown(data["results"], data["machine"], " ".join(data["load"]), phases)
        if "load_after" in phases:
            text += f"\nLoad average after the phased runs: {' '.join(phases['load_after'])}.\n"
        if "note" in phases:  # runs put together from several invocations say which is which
            text += f"\n{phases['note']}.\n"
        (RESULTS / "elastic.md").write_text(text)
        return
    load = open("/proc/loadavg").read().split()[:3]
    results = [bench_model(m, args.decisions, args.seed) for m in args.models.split(",")]
    if args.skip_phases:
        phases: dict[str, Any] = {"skipped": "--skip-phases"}
    else:
        runs = []
        for item in args.phase_models.split(","):
            model, _, rounds = item.partition(":")
            run = phased(model, args.phase_s, int(rounds or 1), args.warmup_s)
            if "skipped" in run:
                if not runs:
                    write(results, load, run)
                return
            runs.append(run)
            phases = {"runs": runs, "load_after": open("/proc/loadavg").read().split()[:3]}
            write(results, load, phases)  # after every model: a long run that is cut short keeps what it had
        return
    write(results, load, phases)


def write(results: list[dict[str, Any]], load: list[str], phases: dict[str, Any]) -> None:
    info = machine()
    text = markdown(results, info, " ".join(load), phases)
    if "load_after" in phases:
        text += f"\nLoad average after the phased runs: {' '.join(phases['load_after'])}.\n"
    write_results("elastic", {"machine": info, "load": load, "results": results, "phased": phases}, text)


if __name__ == "__main__":
    main()
