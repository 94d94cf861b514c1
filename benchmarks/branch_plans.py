"""The plan with and without the early-exit branch, charged with the branch's measured browser cost.

The branch is timed in headless Chromium as the browser client runs it (`dnnsplit profile --runtime
browser --branch DIR`: the stem in onnxruntime-web, the branch on the bit kernels and, in turns, in
onnxruntime-web). That browser profile is the mobile tier's own (`--profile mobile=browser.json`); the
edge scales the host's onnxruntime profile by its preset. Per network preset, the exact plan without
the branch against the same plan with the branch, its mobile times taken (a) from the kernels, (b) from
onnxruntime-web on the same branch, (c) as before this benchmark: branch.yaml's host times x the
mobile-web preset's latency_scale.

Inputs are a pipeline's outputs (`make demo` writes them: resnet18 for digits at 32x32, its branch):

    .venv/bin/python benchmarks/branch_plans.py [--run demo-out] [--repeat 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from dataclasses import replace
from pathlib import Path

import yaml
from _common import machine, run_cli, write_results

NETWORKS = ("cat1", "3g", "4g", "5g", "wifi")


def plans(host: Path, browser: Path, branch_dir: Path, session_requests: int | None) -> list[dict]:
    from dnnsplit.branching.branch_file import load_branch
    from dnnsplit.partition.network import NETWORK_PRESETS
    from dnnsplit.partition.request import PlanRequest, TierProfile, make_plan
    from dnnsplit.profiling.profile import Profile

    profile, measured = Profile.load(host), Profile.load(browser)
    assert measured.branch is not None, f"{browser} has no branch block"
    costs = load_branch(branch_dir).costs(branch_dir)
    on_ort = replace(measured.branch, engine="onnxruntime-web", branch_ms=measured.branch.onnxruntime_branch_ms)
    timings = {
        "kernels": measured,
        "onnxruntime-web": replace(measured, branch=on_ort),
        "host x preset": replace(measured, branch=None),
    }
    rows = []
    for network in NETWORKS:
        base = PlanRequest(
            profile,
            str(host),
            tiers=("mobile", "edge"),
            links={"mobile-edge": NETWORK_PRESETS[network]},
            session_requests=session_requests,
        )
        plain = make_plan(replace(base, tier_profiles={"mobile": TierProfile(measured, str(browser))}))
        row = {
            "network": network,
            "without_ms": plain.plan.prediction.latency_ms,
            "mobile_layers": sum(1 for t in plain.plan.prediction.assignment if t == 0),
        }
        for name, tier_profile in timings.items():
            outcome = make_plan(
                replace(base, tier_profiles={"mobile": TierProfile(tier_profile, str(browser))}, branch=costs)
            ).branch
            assert outcome is not None
            row[name] = {
                "latency_ms": outcome.latency_ms,
                "mode": outcome.estimate.chosen,
                "branch_ms": outcome.estimate.compute_ms["branch"],
                "stem_ms": outcome.estimate.compute_ms["stem"],
            }
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", type=Path, default=Path("demo-out"), help="a pipeline's output directory")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="keep RUN/browser-profile.json if it exists")
    args = parser.parse_args()
    run = args.run.resolve()
    model, branch_dir, host = run / "model.pt", run / "branch", run / "profile.json"
    for needed in (model, branch_dir / "branch.yaml", host):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: run `make demo` first (or pass --run OUT of a pipeline)")
    browser = run / "browser-profile.json"
    shape = "x".join(str(d) for d in json.loads(host.read_text())["input"]["shape"])
    seconds = 0.0
    if not (args.reuse and browser.is_file()):
        seconds, _ = run_cli(
            [
                "profile", str(model), "--input-shape", shape, "--runtime", "browser", "--threads", "1",
                "--warmup", str(args.warmup), "--repeat", str(args.repeat), "--branch", str(branch_dir),
                "--output", str(browser), "--format", "json",
            ]  # fmt: skip
        )
    from dnnsplit.profiling.profile import Profile

    measured = Profile.load(browser)
    timing = measured.branch
    assert timing is not None
    sessions = {"not charged": None, "100 requests": 100}
    tables = {name: plans(host, browser, branch_dir, n) for name, n in sessions.items()}
    load = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    lines = [
        "# The plan with the early-exit branch, charged with its measured browser cost",
        "",
        f"Model: the `make demo` pipeline's resnet18 for digits at {shape} and its branch (`{run.name}/branch`,"
        f" exit rate {yaml.safe_load((branch_dir / 'branch.yaml').read_text())['exit_rate']:.1%}"
        " on the test split). Mobile tier: its own profile, measured in headless Chromium with "
        f"onnxruntime-web {measured.device['versions']['onnxruntime-web']} (wasm, 1 thread): whole model "
        f"{measured.latency_ms:.2f} ms. Edge: the host's onnxruntime profile x the edge preset.",
        "",
        f"The branch in the same page ({timing.repeat} rounds, in turns, median (p90)): stem "
        f"{timing.stem_ms:.3f} ms ({timing.stem_p90_ms:.3f}) in onnxruntime-web; branch "
        f"{timing.branch_ms:.3f} ms ({timing.branch_p90_ms:.3f}) on the bit kernels ({timing.binary_layers} "
        f"binary layers) against {timing.onnxruntime_branch_ms:.3f} ms in onnxruntime-web "
        f"({timing.onnxruntime_branch_ms / timing.branch_ms:.1f}x).",
        "",
        "Expected latency per request. The phone's download of its segments (the plan's mobile layers; the",
        "branch's mobile.onnx) either not charged, or amortised over a session of 100 requests over the",
        "downlink (`--session-requests 100`, plan's default).",
    ]
    for name, rows in tables.items():
        lines += [
            "",
            f"Download {name}:",
            "",
            "| network | plan without branch ms (layers on the phone) | with branch, kernels ms | "
            "with branch, onnxruntime-web ms | with branch, host x preset ms (before) | kernels vs without |",
            "|---|---|---|---|---|---|",
        ]
        for r in rows:
            k, o, h = r["kernels"], r["onnxruntime-web"], r["host x preset"]
            lines.append(
                f"| {r['network']} | {r['without_ms']:.2f} ({r['mobile_layers']}) | {k['latency_ms']:.2f} "
                f"({k['mode']}) | {o['latency_ms']:.2f} | {h['latency_ms']:.2f} | "
                f"{r['without_ms'] / k['latency_ms']:.2f}x |"
            )
    lines += [
        "",
        f"Machine: {machine()['cpu']}, {machine()['cores']} cores; `{load}` when it finished (other work "
        f"shared the cores)." + (f" Profiling took {seconds:.0f} s." if seconds else ""),
        "`.venv/bin/python benchmarks/branch_plans.py` reproduces it after `make demo`.",
        "",
    ]
    data = {"machine": machine(), "load": load, "timing": timing.to_dict(), "browser_whole_ms": measured.latency_ms,
            "tables": tables}  # fmt: skip
    write_results("branch-plans", data, "\n".join(lines))


if __name__ == "__main__":
    main()
