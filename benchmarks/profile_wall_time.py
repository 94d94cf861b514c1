"""Wall time of `dnnsplit profile` (first call with a cold export cache, then cached) on 2 threads.

Target: resnet50 with 20 repeats under 30 s end to end on 2 cores; the cached call under 15 s.
Writes docs/benchmarks/profile.{md,json}.

    python benchmarks/profile_wall_time.py [--models resnet18,resnet50] [--repeat 20]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import machine, run_cli, write_results

MODELS = ["resnet18", "resnet50", "mobilenet_v3_small", "vit_b_16"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="dnnsplit-bench-") as tmp:
        env = {"DNNSPLIT_CACHE": str(Path(tmp) / "cache")}
        for name in args.models.split(","):
            out = Path(tmp) / f"{name}.json"
            common = ["profile", f"torchvision:{name}", "--threads", "2", "--repeat", str(args.repeat)]
            first, _ = run_cli([*common, "--output", str(out)], env)
            first_ratio = json.loads(out.read_text())["total"]["layer_sum_ratio"]
            cached, _ = run_cli([*common, "--output", str(out)], env)
            data = json.loads(out.read_text())
            rows.append(
                {
                    "model": name,
                    "first_call_s": round(first, 2),
                    "cached_call_s": round(cached, 2),
                    "latency_ms": round(data["total"]["latency_ms"], 3),
                    "layer_sum_ratio_first": round(first_ratio, 3),
                    "layer_sum_ratio_cached": round(data["total"]["layer_sum_ratio"], 3),
                    "layers": data["total"]["layers"],
                }
            )
            print(rows[-1], flush=True)
    lines = [
        "# `dnnsplit profile` wall time",
        "",
        f"Machine: {machine()['cpu']}, {machine()['cores']} cores; `--threads 2 --repeat {args.repeat}` "
        "(warmup 5), onnxruntime. First call: empty export cache (export + measure); cached: export reused.",
        "Targets: resnet50 first call < 30 s, cached < 15 s. Reproduce: `python benchmarks/profile_wall_time.py`.",
        "",
        "| model | first call (s) | cached call (s) | whole-model latency (ms) | per-layer sum / whole (first, cached) | layers |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['first_call_s']} | {r['cached_call_s']} | {r['latency_ms']} | "
            f"{r['layer_sum_ratio_first']}, {r['layer_sum_ratio_cached']} | {r['layers']} |"
        )
    write_results("profile", {"machine": machine(), "repeat": args.repeat, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
