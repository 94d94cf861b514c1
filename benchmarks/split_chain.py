"""`dnnsplit split`: chained-segment latency against the whole model, split wall time, int8 boundary savings.

Targets (2 cores): the chain of 3 segments (2 cuts) at most 5% slower than the whole model in onnxruntime;
`dnnsplit split` + validation of resnet50 under 30 s end to end.
Writes docs/benchmarks/split.{md,json}.

    python benchmarks/split_chain.py [--runs 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import RESULTS, machine, run_cli, write_results

from dnnsplit.onnxrt import ort_session
from dnnsplit.profiling import prepare_model
from dnnsplit.splitting.chain import SegmentChain
from dnnsplit.splitting.cuts import prefix_cuts
from dnnsplit.splitting.split import SplitSettings, segments_from_cut_lists, split_model

MODELS = ["resnet18", "resnet50", "mobilenet_v3_small"]
THREADS = 2
# Other cut rules and thread counts for the same chains: (rule, threads).
VARIANTS = [("thirds", 1), ("adds", 2), ("adds", 1)]


def two_cuts(graph: Any, rule: str = "thirds") -> list[list[str]]:
    """The single-tensor cuts nearest to 1/3 and 2/3 of the layers: typical mobile/edge/cloud boundaries.

    ``rule="adds"``: among the cuts right after a residual Add only (a block's output), so no fusion
    inside a block is broken by the boundary."""
    single = [c for c in prefix_cuts(graph) if len(c.tensors) == 1]
    if rule == "adds":
        single = [c for c in single if graph.producer[c.tensors[0]].endswith("/Add")]
    n = len(graph.layers)
    picks = [min(single, key=lambda c, f=f: abs(c.position - f * n)) for f in (1 / 3, 2 / 3)]
    return [list(c.tensors) for c in picks]


def paired_ms(first: Any, second: Any, runs: int) -> tuple[float, float, float]:
    """Medians of two calls timed in alternation, and the median of their per-pair ratio second/first.

    Alternating pairs cancel the machine's slow drifts (other load, clock changes), which on a 2 ms model
    are as large as the overhead being measured.
    """
    for _ in range(10):
        first()
        second()
    a, b = [], []
    for _ in range(runs):
        start = time.perf_counter()
        first()
        middle = time.perf_counter()
        second()
        end = time.perf_counter()
        a.append((middle - start) * 1000)
        b.append((end - middle) * 1000)
    ratio = statistics.median(y / x for x, y in zip(a, b, strict=True))
    return statistics.median(a), statistics.median(b), ratio


def chain_row(name: str, runs: int, tmp: Path, rule: str = "thirds", threads: int = THREADS) -> dict[str, Any]:
    prepared = prepare_model(f"torchvision:{name}")
    cuts = two_cuts(prepared.graph, rule)
    segment_of, tiers = segments_from_cut_lists(prepared.graph, cuts)
    out = tmp / f"{name}-{rule}-{threads}"
    split_model(prepared.exported.path, prepared.graph, segment_of, tiers, {}, {"cuts": cuts}, out)
    chain = SegmentChain.load(out, threads=threads)
    whole = ort_session(prepared.exported.path, threads=threads)
    x = np.random.default_rng(0).standard_normal(prepared.exported.input_shape).astype(np.float32)
    w, c, ratio = paired_ms(lambda: whole.run(None, {"input": x}), lambda: chain.run(x), runs)
    row = {
        "model": name,
        "rule": rule,
        "threads": threads,
        "cut_tensors": cuts,
        "cut_after": [prepared.graph.producer[c[0]] for c in cuts],
        "whole_ms": round(w, 3),
        "chain_ms": round(c, 3),
        "overhead_pct": round(100 * (ratio - 1), 2),
    }
    print(row, flush=True)
    return row


def split_wall_time(tmp: Path) -> dict[str, Any]:
    prepared = prepare_model("torchvision:resnet50")
    cuts = two_cuts(prepared.graph)
    args = ["split", "torchvision:resnet50", *[a for c in cuts for a in ("--cut", ",".join(c))]]
    cached, _ = run_cli([*args, "--output", str(tmp / "r50-cached")])
    cold, _ = run_cli([*args, "--output", str(tmp / "r50-cold")], env={"DNNSPLIT_CACHE": str(tmp / "cold-cache")})
    row = {"model": "resnet50", "cached_export_s": round(cached, 2), "cold_export_s": round(cold, 2)}
    print(row, flush=True)
    return row


def compression_rows(tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for name in MODELS:
        prepared = prepare_model(f"torchvision:{name}")
        cuts = two_cuts(prepared.graph)
        segment_of, tiers = segments_from_cut_lists(prepared.graph, cuts)
        sent = {}
        for mode in (None, "fp16", "int8"):
            result = split_model(
                prepared.exported.path,
                prepared.graph,
                segment_of,
                tiers,
                {},
                {},
                tmp / f"{name}-{mode}",
                SplitSettings(compress=mode, validate=20),
            )
            m = result.manifest
            sent[mode] = (
                sum(t.bytes for s in m.segments for t in s.outputs if any(x != "result" for x in s.targets[t.name])),
                m.validation,
            )
        for mode in ("fp16", "int8"):
            rows.append(
                {
                    "model": name,
                    "compress": mode,
                    "sent_bytes": sent[mode][0],
                    "float32_bytes": sent[None][0],
                    "saved_pct": round(100 * (1 - sent[mode][0] / sent[None][0]), 1),
                    "top1_agreement": sent[mode][1].top1_agreement,
                    "max_rel_diff": float(f"{sent[mode][1].max_rel_diff:.3g}"),
                }
            )
            print(rows[-1], flush=True)
    return rows


DIGITS_MODELS = ["resnet18", "mobilenet_v3_small"]
DIGITS_SHAPE = "1x3x32x32"


def digits_rows(tmp: Path, work: Path) -> list[dict[str, Any]]:
    """Trained on the bundled digits (32x32): bytes each codec sends and the top-1 agreement with the
    uncompressed chain on all 360 test images, and the test accuracy of each."""
    from dnnsplit.training.data import load_data

    shape = tuple(int(v) for v in DIGITS_SHAPE.split("x"))
    data = load_data("digits", shape, augment=False)
    images, labels = [], []
    for x, y in data.loader("test", 64):
        images.append(x.numpy())
        labels.append(y.numpy())
    x_test, y_test = np.concatenate(images).astype(np.float32), np.concatenate(labels)
    inputs = tmp / "digits-test.npy"
    np.save(inputs, x_test)
    rows = []
    for name in DIGITS_MODELS:
        ckpt = work / f"{name}-digits.pt"
        if not ckpt.is_file():
            run_cli(
                ["train", f"torchvision:{name}", "--num-classes", "10", "--input-shape", DIGITS_SHAPE]
                + ["--data", "digits", "--output", str(ckpt), "--format", "json"]
            )
        prepared = prepare_model(str(ckpt))
        cuts = two_cuts(prepared.graph)
        segment_of, tiers = segments_from_cut_lists(prepared.graph, cuts)
        found = {}
        for mode in (None, "fp16", "int8"):
            out = tmp / f"{name}-digits-{mode}"
            settings = SplitSettings(compress=mode, validate=len(x_test), inputs=str(inputs), min_agreement=0.0)
            m = split_model(prepared.exported.path, prepared.graph, segment_of, tiers, {}, {}, out, settings).manifest
            chain = SegmentChain.load(out, threads=THREADS)
            predicted = np.array([int(np.argmax(next(iter(chain.run(x_test[i : i + 1])[0].values())))) for i in range(len(x_test))])
            sent = sum(t.bytes for s in m.segments for t in s.outputs if any(x != "result" for x in s.targets[t.name]))
            found[mode] = (sent, m.validation, float(np.mean(predicted == y_test)))
        for mode in ("fp16", "int8"):
            rows.append(
                {
                    "model": name,
                    "compress": mode,
                    "cut_after": [prepared.graph.producer[c[0]] for c in cuts],
                    "sent_bytes": found[mode][0],
                    "float32_bytes": found[None][0],
                    "saved_pct": round(100 * (1 - found[mode][0] / found[None][0]), 1),
                    "test_images": len(x_test),
                    "top1_agreement": found[mode][1].top1_agreement,
                    "accuracy_float32": found[None][2],
                    "accuracy": found[mode][2],
                }
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--work", type=Path, default=None, help="Keeps the digits-trained checkpoints.")
    parser.add_argument("--only-digits", action="store_true", help="Only the digits section (the rest kept).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dnnsplit-bench-split-work-"))
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dnnsplit-bench-split-") as name:
        tmp = Path(name)
        if args.only_digits:
            kept = json.loads((RESULTS / "split.json").read_text())
            chains, wall, packed = kept["chain"], kept["wall"], kept["compress"]
            variants = kept.get("chain_variants", [])
            args.runs = kept["runs"]
        else:
            chains = [chain_row(m, args.runs, tmp) for m in MODELS]
            variants = [chain_row(m, args.runs, tmp, r, t) for m in MODELS for r, t in VARIANTS]
            wall = split_wall_time(tmp)
            packed = compression_rows(tmp)
        digits = digits_rows(tmp, work)
    m = machine()
    lines = [
        "# `dnnsplit split`: chain overhead, wall time, compressed boundaries",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores. onnxruntime CPU, {THREADS} threads, batch 1. "
        "Reproduce: `python benchmarks/split_chain.py`.",
        "",
        "## Chained segments vs the whole model (2 cuts: the single-tensor cuts nearest 1/3 and 2/3 of the layers)",
        "",
        f"{args.runs} alternating pairs (whole, chain); medians, and the overhead as the median per-pair ratio. "
        "The chain runs its 3 segments one after another in one process (tensors handed over in memory), "
        "so the overhead is the cut itself: lost cross-segment fusions and 3 session calls instead of 1 "
        "(~0.1 ms). Both sessions with idle threads sleeping, not spinning (see `dnnsplit/onnxrt.py`). "
        "Target: at most 5%.",
        "",
        "| model | cut after | whole (ms) | chain (ms) | overhead |",
        "|---|---|---|---|---|",
    ]
    for r in chains:
        lines.append(
            f"| {r['model']} | {' / '.join(r['cut_after'])} | {r['whole_ms']} | {r['chain_ms']} | "
            f"{r['overhead_pct']:+.1f}% |"
        )
    lines += [
        "",
        "Where the overhead comes from: onnxruntime's optimised segments hold 3 more `ReorderInput` and 3 more "
        "`ReorderOutput` nodes than the optimised whole model (each boundary leaves and re-enters the NCHWc "
        "layout) and one HardSwish and one Add that a boundary keeps from fusing (mobilenet_v3_small). Call "
        "overhead is negligible (5 us a `run`). On resnet18/50 that is 2-5%; on the 1.3-2 ms "
        "mobilenet_v3_small the same 0.15-0.35 ms is 7-20% by cut rule, thread count and run (next table; "
        "one thread each session avoids waking a second pool thread per segment): the 5% target is met for "
        "resnet18 and resnet50 and missed for mobilenet_v3_small. In a deployment each segment runs on its "
        "own tier, where the network, not this, dominates.",
        "",
        "The same chains with other cut rules and thread counts (*adds*: the cuts right after a residual Add "
        "nearest 1/3 and 2/3, a block's output, so the boundary breaks no fusion inside a block):",
        "",
        "| model | rule | threads | cut after | whole (ms) | chain (ms) | overhead |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in [*[{**c, "rule": "thirds", "threads": THREADS} for c in chains], *variants]:
        lines.append(
            f"| {r['model']} | {r['rule']} | {r['threads']} | {' / '.join(r['cut_after'])} | {r['whole_ms']} | "
            f"{r['chain_ms']} | {r['overhead_pct']:+.1f}% |"
        )
    lines += [
        "",
        "## Split + validate wall time (resnet50, 2 cuts, onnxsim, 3 validation inputs, one process start)",
        "",
        f"- export cached: **{wall['cached_export_s']} s**; with an empty export cache: **{wall['cold_export_s']} s** "
        "(target < 30 s).",
        "",
        "## Compressed boundaries (same cuts; 20 random-normal validation inputs)",
        "",
        "| model | codec | bytes sent (all boundaries) | float32 | saved | top-1 agreement | max rel diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in packed:
        lines.append(
            f"| {r['model']} | {r['compress']} | {r['sent_bytes']:,} | {r['float32_bytes']:,} | {r['saved_pct']}% | "
            f"{r['top1_agreement']:.0%} | {r['max_rel_diff']} |"
        )
    lines += [
        "",
        "Random weights and random inputs: the agreement says the codecs keep the argmax of these networks.",
        "",
        f"## Compressed boundaries on real images (trained on digits at {DIGITS_SHAPE}, same cut rule)",
        "",
        "Each model trained with `dnnsplit train ... --data digits` (the bundled scikit-learn digits), split "
        "three ways (float32, fp16, int8) and validated on every test image (`--inputs` a .npy of the test "
        "split): top-1 agreement with the whole model, and each chain's own test accuracy.",
        "",
        "| model | cut after | codec | bytes sent | float32 | saved | test images | top-1 agreement | "
        "accuracy (float32 chain) | accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in digits:
        lines.append(
            f"| {r['model']} | {' / '.join(r['cut_after'])} | {r['compress']} | {r['sent_bytes']:,} | "
            f"{r['float32_bytes']:,} | {r['saved_pct']}% | {r['test_images']} | {r['top1_agreement']:.2%} | "
            f"{r['accuracy_float32']:.2%} | {r['accuracy']:.2%} |"
        )
    data = {
        "machine": m,
        "threads": THREADS,
        "runs": args.runs,
        "chain": chains,
        "chain_variants": variants,
        "wall": wall,
        "compress": packed,
        "digits": digits,
    }
    write_results("split", data, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
