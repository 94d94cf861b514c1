// The early-exit branch's cost in this browser, as the page runs it: the stem in onnxruntime-web, then the
// branch on the bit kernels (bitkernels.wasm) with its exit decision, and, for comparison, the same branch in
// onnxruntime-web. The three run in turns within each round, so a load drift or a phone that throttles
// hits them alike. Where the kernels cannot run (no WebAssembly SIMD, or no program: a layer they lack)
// the branch is timed in onnxruntime-web only and `engine` says so, with the reason: what the page would run.
import { BitBranch, exitDecision, kernelModule } from './bitkernels.js';
import { createSessions, run } from './runtime.js';

function input(shape, seed = 1) {
  // Fixed pseudo-random values: the branch's time does not depend on them (no data-dependent control flow).
  let state = seed >>> 0;
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    state = (state * 1664525 + 1013904223) >>> 0;
    data[i] = state / 4294967296 - 0.5;
  }
  return data;
}

// config: {stem, branch, program (ArrayBuffer or null: no program), unavailable (why there is none),
//          inputShape, threshold, warmup, repeat, threads}
export async function profileBranch({ stem, branch, program = null, unavailable = '', inputShape, threshold, warmup = 5, repeat = 20, threads = 1 }) {
  const stemRt = await createSessions([stem], { prefer: 'wasm', threads });
  const branchRt = await createSessions([branch], { prefer: 'wasm', threads });
  let bits = null;
  let reason = unavailable;
  if (program) {
    try {
      await kernelModule();
      bits = await BitBranch.create(program);
    } catch (err) {
      reason = `no bit kernels here: ${err.message || err}`;
    }
  }
  const stemSession = stemRt.sessions[0];
  const feeds = { [stemSession.inputNames[0]]: { dtype: 'float32', shape: inputShape, data: input(inputShape) } };
  const times = { stem: [], kernels: [], onnxruntime: [] };
  for (let i = 0; i < warmup + repeat; i++) {
    let t0 = performance.now();
    const features = await run(stemRt.ort, stemSession, feeds);
    const stemMs = performance.now() - t0;
    const name = Object.keys(features)[0];
    let kernelMs = null;
    if (bits) {
      t0 = performance.now();
      const logits = bits.run(features[name].data).branch_logits;
      exitDecision(logits, threshold);
      kernelMs = performance.now() - t0;
    }
    t0 = performance.now();
    await run(branchRt.ort, branchRt.sessions[0], features);
    const ortMs = performance.now() - t0;
    if (i >= warmup) {
      times.stem.push(stemMs);
      times.onnxruntime.push(ortMs);
      if (kernelMs !== null) times.kernels.push(kernelMs);
    }
  }
  return {
    times,
    engine: bits ? 'kernels' : 'onnxruntime-web',
    reason: bits ? '' : reason,
    binary_layers: bits ? bits.binaryLayers : 0,
    onnxruntime_web: stemRt.version,
    threads: stemRt.threads,
  };
}
