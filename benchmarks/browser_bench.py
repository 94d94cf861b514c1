"""The mobile web tier: onnxruntime-web in headless Chromium against native onnxruntime, and what a phone
downloads.

1. Per-op-type latency, browser (onnxruntime-web, wasm backend) / native onnxruntime (CPU provider), the
   same model and the same number of threads, both measured with `dnnsplit profile` (the browser with
   `--runtime browser`): where WebAssembly costs most.
2. Download size of the mobile part (raw and gzip, as `serve --web` sends it): the whole model, the mobile
   segment of a split at the branch point, the bit-packed branch `mobile.onnx` (stem + binary branch), and
   the mobile segment of the 4G plan; plus the onnxruntime-web runtime itself (vendor/, once per phone).

Writes docs/benchmarks/browser.{md,json}.

    python benchmarks/browser_bench.py [--models resnet18,mobilenet_v3_small] [--threads 1] [--work DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from _common import machine, run_cli, write_results

from dnnsplit.browser import VENDOR, ort_web_version

SHAPE = "1x3x224x224"
WASM_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
WEBGPU_FILES = (
    "ort.webgpu.min.mjs",
    "ort-wasm-simd-threaded.asyncify.mjs",
    "ort-wasm-simd-threaded.asyncify.wasm",
)


def sizes(path: Path) -> dict[str, int]:
    raw = path.read_bytes()
    return {"bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, compresslevel=6, mtime=0))}


def profile(model: str, runtime: str, threads: int, repeat: int, work: Path) -> dict[str, Any]:
    out = work / f"{model.split(':')[-1]}-{runtime}.json"
    if out.exists():  # a rerun with the same --work keeps what it measured
        return json.loads(out.read_text())
    run_cli(
        [
            "profile",
            model,
            "--input-shape",
            SHAPE,
            "--runtime",
            runtime,
            "--threads",
            str(threads),
            "--repeat",
            str(repeat),
            "--output",
            str(out),
            "--format",
            "json",
        ]
    )
    return json.loads(out.read_text())


def by_op(doc: dict[str, Any]) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for layer in doc["layers"]:
        totals[layer["op"]] += layer["latency_ms"]
    return dict(totals)


def compare(model: str, threads: int, repeat: int, work: Path) -> dict[str, Any]:
    native = profile(model, "onnxruntime", threads, repeat, work)
    browser = profile(model, "browser", threads, repeat, work)
    n_ops, b_ops = by_op(native), by_op(browser)
    # Per-layer sums can fall short of the whole model on a busy host (medians of noisy layers); scaled to
    # each profile's whole-model time, the ratios compare the same thing: the op's part of a real run.
    n_scale = native["total"]["latency_ms"] / max(native["total"]["layer_sum_ms"], 1e-9)
    b_scale = browser["total"]["latency_ms"] / max(browser["total"]["layer_sum_ms"], 1e-9)
    rows = [
        {
            "op": op,
            "native_ms": n_ops[op],
            "browser_ms": b_ops.get(op, 0.0),
            "ratio": b_ops.get(op, 0.0) / n_ops[op] if n_ops[op] > 0 else None,
            "ratio_scaled": b_ops.get(op, 0.0) * b_scale / (n_ops[op] * n_scale) if n_ops[op] > 0 else None,
        }
        for op in sorted(n_ops, key=lambda o: -b_ops.get(o, 0.0))
    ]
    return {
        "model": model,
        "input_shape": SHAPE,
        "threads": threads,
        "native": {
            "latency_ms": native["total"]["latency_ms"],
            "layer_sum_ratio": native["total"]["layer_sum_ratio"],
            "device": native["device"],
        },
        "browser": {
            "latency_ms": browser["total"]["latency_ms"],
            "layer_sum_ratio": browser["total"]["layer_sum_ratio"],
            "device": browser["device"],
        },
        "ratio": browser["total"]["latency_ms"] / native["total"]["latency_ms"],
        "ops": rows,
    }


def downloads(work: Path) -> dict[str, Any]:
    """resnet18 for the 10 digits at 32x32 (the demo's model): what the phone downloads per design."""
    model = ["torchvision:resnet18", "--num-classes", "10", "--input-shape", "1x3x32x32"]
    branch = work / "branch"
    # Sizes do not depend on the weights' values: one epoch of branch training is enough to write the files.
    if not (branch / "branch.yaml").exists():
        run_cli(["branch", *model, "--data", "digits", "--epochs", "1", "--at", "maxpool", "--output", str(branch),
                 "--force", "--max-accuracy-drop", "1", "--threads", "1", "--format", "json"])  # fmt: skip
    import yaml

    at = yaml.safe_load((branch / "branch.yaml").read_text())["at"]
    # The single cut right after the branch point's module (``layer1.0`` -> nodes under /layer1/layer1.0/).
    parts = at.split(".")
    prefix = "/" + "/".join(".".join(parts[: i + 1]) for i in range(len(parts))) + "/"
    _, proc = run_cli(["cuts", *model, "--single", "--format", "json"])
    cut = [c for c in json.loads(proc.stdout)["cuts"] if c["after"].startswith(prefix)][-1]["tensors"][0]
    at_branch = work / "split-at-branch"
    run_cli(["split", *model, "--cut", cut, "--output", str(at_branch), "--force"])
    profile_file, plan_file, planned = work / "r18.json", work / "plan.yaml", work / "split-4g"
    # At 32x32 resnet18 is small enough that the 4G plan keeps it all on the phone; at most 5 MB of weights
    # there makes the planner cut it.
    if not profile_file.exists():
        run_cli(["profile", *model, "--threads", "1", "--output", str(profile_file)])
    run_cli(
        ["plan", str(profile_file), "--network", "4g", "--max-mobile-mb", "5", "--output", str(plan_file)]
    )
    run_cli(["split", *model, "--plan", str(plan_file), "--output", str(planned), "--force"])
    whole = Path(yaml.safe_load((at_branch / "manifest.yaml").read_text())["model"]["onnx"])
    first_planned = yaml.safe_load((planned / "manifest.yaml").read_text())["segments"][0]
    rows = {
        "whole model (float32)": sizes(whole),
        f"mobile segment, cut at the branch point ({cut})": sizes(at_branch / "01-mobile.onnx"),
        "branch mobile.onnx (stem + bit-packed binary branch)": sizes(branch / "mobile.onnx"),
    }
    if first_planned["tier"] == "mobile":
        rows[f"mobile segment of the 4G plan with --max-mobile-mb 5 ({first_planned['layers']} nodes)"] = (
            sizes(planned / first_planned["file"])
        )
    else:
        rows["mobile segment of the 4G plan"] = {"bytes": 0, "gzip_bytes": 0}
    return {"model": "torchvision:resnet18, 10 classes, 1x3x32x32", "files": rows}


def runtime_sizes() -> dict[str, Any]:
    files = {name: sizes(VENDOR / name) for name in (*WASM_FILES, *WEBGPU_FILES)}
    total = lambda names: {k: sum(files[n][k] for n in names) for k in ("bytes", "gzip_bytes")}  # noqa: E731
    return {
        "version": ort_web_version(),
        "files": files,
        "wasm_backend": total(WASM_FILES),
        "webgpu_backend": total(WEBGPU_FILES),
    }


def mb(n: int) -> str:
    return f"{n / 1e6:.3f} MB" if n < 1e5 else f"{n / 1e6:.2f} MB"


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        "# Mobile web tier: onnxruntime-web in the browser vs native onnxruntime",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; headless Chromium ({data['browser']}), onnxruntime-web "
        f"{data['runtime']['version']} (wasm backend, SIMD, {data['threads']} thread(s)) vs onnxruntime "
        f"{data['onnxruntime']} (CPU provider, same threads). Both profiled with `dnnsplit profile` "
        f"(median of {data['repeat']} runs). Other work may have shared the CPU while this ran.",
        "",
        "Reproduce: `make web && .venv/bin/python benchmarks/browser_bench.py`",
        "",
        "Per op type: the sum of its layers' median times in each profile. The last column scales each "
        "profile's layers to its own whole-model median first: on a busy host the per-layer medians can add "
        "up to less than the whole model's, and the scaled ratio then compares "
        "each op's part of a real run.",
        "",
    ]
    for c in data["compare"]:
        lines += [
            f"## {c['model']} at {c['input_shape']}: browser / native = {c['ratio']:.2f}x",
            "",
            f"Whole model: native {c['native']['latency_ms']:.2f} ms, browser {c['browser']['latency_ms']:.2f} ms "
            f"(per-layer sum / whole: native {c['native']['layer_sum_ratio']:.2f}, browser "
            f"{c['browser']['layer_sum_ratio']:.2f}).",
            "",
            "| op type | native ms | browser ms | browser / native | scaled to each whole model |",
            "|---|---|---|---|---|",
        ]
        for r in c["ops"]:
            ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
            scaled = f"{r['ratio_scaled']:.2f}x" if r["ratio_scaled"] is not None else "-"
            lines.append(f"| {r['op']} | {r['native_ms']:.3f} | {r['browser_ms']:.3f} | {ratio} | {scaled} |")
        lines.append("")
    d = data["downloads"]
    lines += [
        f"## What the phone downloads: {d['model']}",
        "",
        "| file | raw | gzip (as served) |",
        "|---|---|---|",
    ]
    for name, s in d["files"].items():
        lines.append(f"| {name} | {mb(s['bytes'])} | {mb(s['gzip_bytes'])} |")
    rt = data["runtime"]
    lines += [
        "",
        f"## The runtime (onnxruntime-web {rt['version']}, `dnnsplit/runtime/web/static/vendor/`, cached by the browser)",
        "",
        "| file | raw | gzip (as served) |",
        "|---|---|---|",
    ]
    for name, s in rt["files"].items():
        lines.append(f"| {name} | {mb(s['bytes'])} | {mb(s['gzip_bytes'])} |")
    lines += [
        f"| **wasm backend, all files** | {mb(rt['wasm_backend']['bytes'])} | {mb(rt['wasm_backend']['gzip_bytes'])} |",
        f"| **WebGPU backend, all files** | {mb(rt['webgpu_backend']['bytes'])} | "
        f"{mb(rt['webgpu_backend']['gzip_bytes'])} |",
        "",
        "The page downloads one backend: WebGPU's when the browser has an adapter, else wasm's.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="resnet18,mobilenet_v3_small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="dnnsplit-browser-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        compared = [
            compare(f"torchvision:{m}", args.threads, args.repeat, work) for m in args.models.split(",")
        ]
        data = {
            "machine": machine(),
            "threads": args.threads,
            "repeat": args.repeat,
            "onnxruntime": onnxruntime.__version__,
            "browser": compared[0]["browser"]["device"].get("browser", ""),
            "compare": compared,
            "downloads": downloads(work),
            "runtime": runtime_sizes(),
        }
    write_results("browser", data, markdown(data))


if __name__ == "__main__":
    main()
