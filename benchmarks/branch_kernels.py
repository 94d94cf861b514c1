"""The branch on the bit kernels (static/bitkernels.wasm) against the same branch in onnxruntime-web.

Untrained branches (random weights, thresholds calibrated on random images: the time does not depend on
the values) of resnet18 and mobilenet_v2 (binary activations) at 32x32 and 224x224, from the same code
as `dnnsplit branch` (prepare_branch + export_branch). In one headless Chromium page per branch, in turns:
the kernels; onnxruntime-web (wasm, 1 thread) on the branch as mobile.onnx stores it (packed bits,
unpacked by its graph); and on the same branch with the unpacking folded into float weights (what
onnxruntime-web costs at best). Prints the whole-branch medians (and the spread: min-max over the
rounds) and the kernels' per-binary-layer medians.

    .venv/bin/python benchmarks/branch_kernels.py [--rounds 10] [--sizes 32,224] [--models resnet18,mobilenet_v2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def build(name: str, size: int, directory: Path) -> Path:
    import torch
    import torchvision

    from dnnsplit.branching.builder import prepare_branch
    from dnnsplit.branching.export import export_branch
    from dnnsplit.branching.points import resolve_point, split_at, trace

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    gm = trace(model)
    stem, rest = split_at(gm, resolve_point(gm, None))
    with torch.no_grad():
        branch, _ = prepare_branch(rest, stem(torch.randn(8, 3, size, size)), True)
    export_branch(stem, branch.eval(), rest, 0.5, (1, 3, size, size), directory)
    return directory / "mobile.onnx"


def folded(model_bytes: bytes, directory: Path) -> bytes:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(directory / "folded.onnx")
    ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    return (directory / "folded.onnx").read_bytes()


PAGE = """async ([rounds, warmup]) => {
  const { BitBranch } = await import('./bitkernels.js');
  const { createSessions } = await import('./runtime.js');
  const get = async (u) => (await fetch(u)).arrayBuffer();
  const x = new Float32Array(await get('/input.bin'));
  const bits = await BitBranch.create(await get('/branch.dnbk'));
  const packed = await createSessions([await get('/packed.onnx')], { prefer: 'wasm', threads: 1 });
  const fold = await createSessions([await get('/folded.onnx')], { prefer: 'wasm', threads: 1 });
  const feeds = { stem_output: new packed.ort.Tensor('float32', x, bits.input.shape) };
  const t = { kernels: [], packed: [], folded: [] }, layers = [];
  for (let i = 0; i < warmup + rounds; i++) {
    let t0 = performance.now(); const times = []; bits.run(x, times); const k = performance.now() - t0;
    t0 = performance.now(); await packed.sessions[0].run(feeds); const p = performance.now() - t0;
    t0 = performance.now(); await fold.sessions[0].run(feeds); const f = performance.now() - t0;
    if (i >= warmup) { t.kernels.push(k); t.packed.push(p); t.folded.push(f); layers.push(times); }
  }
  const ops = bits.steps.map((s) => s.op);
  return { t, layers, ops, ortVersion: packed.version };
}"""


def measure(mobile: Path, rounds: int, warmup: int) -> dict:
    from dnnsplit.branching.kernels import branch_model, compile_branch
    from dnnsplit.browser.chromium import chromium_page
    from dnnsplit.profiling.browser_runtime import local_page_server

    program = compile_branch(mobile)
    packed = branch_model(mobile).SerializeToString()
    x = np.abs(np.random.default_rng(0).standard_normal(program.header["input"]["shape"])).astype(np.float32)
    files = {
        "/branch.dnbk": program.to_bytes(),
        "/packed.onnx": packed,
        "/folded.onnx": folded(packed, mobile.parent),
        "/input.bin": x.tobytes(),
    }
    with local_page_server(b"", files) as url, chromium_page(timeout_s=1200) as (page, _console):
        page.goto(f"{url}/profile.html")
        return page.evaluate(PAGE, [rounds, warmup])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sizes", default="32,224")
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    args = parser.parse_args()
    rows, layer_rows = [], []
    for name in args.models.split(","):
        for size in [int(s) for s in args.sizes.split(",")]:
            with tempfile.TemporaryDirectory() as tmp:
                result = measure(build(name, size, Path(tmp)), args.rounds, args.warmup)
            t = {k: np.array(v) for k, v in result["t"].items()}
            med = {k: float(np.median(v)) for k, v in t.items()}
            spread = {k: f"{v.min():.2f}-{v.max():.2f}" for k, v in t.items()}
            rows.append(
                f"| {name} | {size}x{size} | {med['kernels']:.2f} ({spread['kernels']}) | "
                f"{med['packed']:.2f} ({spread['packed']}) | {med['folded']:.2f} ({spread['folded']}) | "
                f"{med['packed'] / med['kernels']:.1f}x | {med['folded'] / med['kernels']:.1f}x |"
            )
            layers = np.median(np.array(result["layers"]), axis=0)
            for op, ms in zip(result["ops"], layers, strict=True):
                if op["op"].startswith("binconv"):
                    shape = f"{op['I']}->{op['O']} {op['KH']}x{op['KW']}/{op['strides'][0]} at {op['OH']}x{op['OW']}"
                    layer_rows.append(f"| {name} | {size} | {op['op']} | {shape} | {ms:.3f} |")
            print(rows[-1], flush=True)
    print(f"\nonnxruntime-web {result['ortVersion']}, wasm, 1 thread; medians over {args.rounds} rounds (min-max)\n")
    print("| model | input | kernels ms | ort-web packed ms | ort-web folded ms | vs packed | vs folded |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n| model | input | kernel | layer | ms (median) |\n|---|---|---|---|---|")
    print("\n".join(layer_rows))


if __name__ == "__main__":
    main()
