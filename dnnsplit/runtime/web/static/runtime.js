// onnxruntime-web, from this package's vendor/ folder (no CDN): WebGPU when the browser has a usable
// adapter, else WebAssembly. Each backend is a separate build (the WebGPU one is larger), so only the
// chosen one is downloaded.

const VENDOR = new URL('./vendor/', import.meta.url).href;

async function hasWebGPU() {
  if (!('gpu' in navigator)) return false;
  try {
    return !!(await navigator.gpu.requestAdapter());
  } catch {
    return false;
  }
}

async function importOrt(backend) {
  const ort = await import(`${VENDOR}${backend === 'webgpu' ? 'ort.webgpu.min.mjs' : 'ort.wasm.min.mjs'}`);
  ort.env.wasm.wasmPaths = VENDOR;
  // Threads need SharedArrayBuffer, which needs a cross-origin isolated page (the server sends COOP/COEP).
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
  return ort;
}

// Sessions for the given models (ArrayBuffers), on the first backend that loads them all.
// prefer: 'auto' | 'webgpu' | 'wasm'. Returns {ort, backend, sessions, note}.
export async function createSessions(models, { prefer = 'auto', threads = 0, options = {} } = {}) {
  const order = prefer === 'wasm' ? ['wasm'] : prefer === 'webgpu' ? ['webgpu', 'wasm'] : (await hasWebGPU()) ? ['webgpu', 'wasm'] : ['wasm'];
  let note = '';
  for (const backend of order) {
    try {
      const ort = await importOrt(backend);
      if (threads > 0) ort.env.wasm.numThreads = self.crossOriginIsolated ? threads : 1;
      const sessions = [];
      for (const bytes of models) {
        sessions.push(await ort.InferenceSession.create(new Uint8Array(bytes), {
          // Only the chosen provider: were WebGPU to fail, onnxruntime would quietly run everything on wasm
          // while the page said WebGPU. Nodes the WebGPU provider lacks still run on its CPU fallback.
          executionProviders: [backend],
          graphOptimizationLevel: 'all',
          ...options,
        }));
      }
      return { ort, backend, sessions, threads: ort.env.wasm.numThreads, version: ort.env.versions?.web || '', note };
    } catch (err) {
      note += `${backend} failed (${err.message || err}); `;
    }
  }
  throw new Error(`no onnxruntime-web backend could load the model: ${note}`);
}

// Run one session on named tensors ({name: {dtype, shape, data}}); returns the same form.
export async function run(ort, session, feeds) {
  const inputs = {};
  for (const name of session.inputNames) {
    const t = feeds[name];
    if (!t) throw new Error(`no tensor '${name}' for this segment`);
    inputs[name] = new ort.Tensor(t.dtype, t.data, t.shape);
  }
  const outputs = await session.run(inputs);
  const result = {};
  for (const [name, value] of Object.entries(outputs)) {
    const data = value.location && value.location !== 'cpu' ? await value.getData() : value.data;
    result[name] = { dtype: value.type === 'bool' ? 'bool' : value.type, shape: value.dims.slice(), data };
  }
  return result;
}
