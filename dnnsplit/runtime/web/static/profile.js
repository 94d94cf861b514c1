// Per-layer latency of a whole model inside this browser, with onnxruntime-web's own profiler: the same
// Chrome-trace events as native onnxruntime (one "model_run" per run, one "<node>_kernel_time" per kernel),
// which the Python side maps to layers exactly as for the native profile. onnxruntime-web prints the trace
// through console.log when profiling ends; we catch those lines instead of letting them reach the console.
// Its WebAssembly module binds console.log once, when it starts, so the tap goes in before that: at import.

let sink = null;
const originalLog = console.log;
console.log = (...args) => (sink ? sink.push(args.join(' ')) : originalLog.apply(console, args));

import { createSessions } from './runtime.js';

function randomInput(shape, seed = 0) {
  // A fixed pseudo-random normal input (latency does not depend on the values for these models).
  let state = seed + 0x9e3779b9;
  const uniform = () => {
    state = (state * 1664525 + 1013904223) >>> 0;
    return (state + 1) / 4294967297;
  };
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
  return data;
}

async function captureTrace(session) {
  const lines = [];
  sink = lines;
  try {
    await session.endProfiling();
    await new Promise((resolve) => setTimeout(resolve, 0));
  } finally {
    sink = null;
  }
  const events = lines.map((l) => l.trim()).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l.replace(/,$/, '')));
  if (!events.some((e) => e.name === 'model_run')) throw new Error('onnxruntime-web printed no profiler trace');
  return events;
}

// "Chromium 156.0.8078.114": the user agent string says only "156.0.0.0"; Chromium-based browsers tell
// the full version through User-Agent Client Hints. '' elsewhere (the Python side then reads the UA).
async function fullBrowserVersion() {
  try {
    const { fullVersionList } = await navigator.userAgentData.getHighEntropyValues(['fullVersionList']);
    const brand = fullVersionList.find((b) => !/Not.?A.?Brand/i.test(b.brand) && b.brand !== 'Chromium') || fullVersionList.find((b) => b.brand === 'Chromium');
    return brand ? `${brand.brand} ${brand.version}` : '';
  } catch {
    return '';
  }
}

// config: {model: ArrayBuffer, inputShape: [N,C,H,W], warmup, repeat, threads (0: the default), backend}
export async function profileModel({ model, inputShape, warmup = 5, repeat = 20, threads = 0, backend = 'wasm', onProgress = () => {} }) {
  const total = 2 * (warmup + repeat);
  let done = 0;
  const tick = (stage) => onProgress(stage, ++done, total);
  // Two sessions of the model, one with the profiler, run in turns: the whole-model times (no profiler,
  // as a user's session runs) and the trace see the same conditions, even on a phone that heats up and
  // throttles or a machine whose load changes halfway (measured one after the other, a loaded 2-core host
  // gave layer sums of 0.37x the whole model).
  const plain = await createSessions([model], { prefer: backend, threads });
  const { ort } = plain;
  const traced = await createSessions([model], { prefer: plain.backend, threads, options: { enableProfiling: true } });
  const rt = traced;
  const session = traced.sessions[0];
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', randomInput(inputShape), inputShape) };
  const whole = [];
  for (let i = 0; i < warmup + repeat; i++) {
    const t0 = performance.now();
    await plain.sessions[0].run(feeds);
    if (i >= warmup) whole.push(performance.now() - t0);
    tick('measuring the whole model');
    await session.run(feeds);
    tick('measuring per layer');
  }
  await plain.sessions[0].release();
  const events = await captureTrace(session);
  await session.release();
  return {
    events,
    whole_ms: whole,
    warmup,
    repeat,
    device: {
      backend: rt.backend,
      threads: rt.threads,
      onnxruntime_web: rt.version,
      user_agent: navigator.userAgent,
      browser: await fullBrowserVersion(),
      cores: navigator.hardwareConcurrency || 0,
      cross_origin_isolated: self.crossOriginIsolated,
    },
  };
}
