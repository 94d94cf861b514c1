// The binarized branch on XNOR/popcount kernels: bitkernels.wasm (WebAssembly SIMD128, built from
// web/kernels/bitkernels.c by `make wasm`) driven by the program that dnnsplit/branching/kernels.py
// compiles from the branch's mobile.onnx (format dnnsplit/bitkernels@1: a JSON header of tensors and
// kernel calls, then the parameters, the weights' packed bits among them as the branch file stores them).
// Every buffer lives in the module's memory, allocated once when the program loads; run() only computes.

const HERE = new URL('./', import.meta.url).href;
let compiled = null;

// The compiled module, once per page. It rejects where the browser lacks WebAssembly SIMD (the module
// uses i8x16.popcnt and v128 logic throughout): the caller then runs the branch in onnxruntime-web.
export function kernelModule() {
  compiled ??= (async () => {
    if (typeof WebAssembly !== 'object') throw new Error('no WebAssembly');
    const answer = await fetch(`${HERE}bitkernels.wasm`);
    if (!answer.ok) throw new Error(`GET bitkernels.wasm: ${answer.status}`);
    const bytes = await answer.arrayBuffer();
    if (!WebAssembly.validate(bytes)) throw new Error('this browser has no WebAssembly SIMD (bitkernels.wasm does not validate)');
    return WebAssembly.compile(bytes);
  })();
  return compiled;
}

export function parseProgram(buffer) {
  const bytes = new Uint8Array(buffer);
  const magic = String.fromCharCode(...bytes.subarray(0, 4));
  if (magic !== 'DNBK') throw new Error('not a bit-kernel program (no DNBK magic)');
  const view = new DataView(buffer instanceof ArrayBuffer ? buffer : bytes.buffer, bytes.byteOffset);
  const version = view.getUint32(4, true);
  if (version !== 1) throw new Error(`bit-kernel program version ${version}, expected 1`);
  const length = view.getUint32(8, true);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(12, 12 + length)));
  let start = 12 + length;
  start += (16 - (start % 16)) % 16;
  return { header, blob: bytes.subarray(start) };
}

const align = (n) => (n + 15) & ~15;
const prod = (shape) => shape.reduce((a, b) => a * b, 1);
const planes = (shape) => [shape.length > 1 ? shape[1] : 1, prod(shape.slice(2))];

export class BitBranch {
  static async create(programBytes) {
    const module = await kernelModule();
    const instance = await WebAssembly.instantiate(module, {});
    return new BitBranch(instance, parseProgram(programBytes));
  }

  constructor(instance, { header, blob }) {
    const k = instance.exports;
    this.k = k;
    this.header = header;
    this.memory = k.memory;
    let top = align(k.__heap_base.value);
    const alloc = (n) => {
      const p = top;
      top = align(top + Math.max(n, 1));
      const need = top - this.memory.buffer.byteLength;
      if (need > 0) this.memory.grow(Math.ceil(need / 65536));
      return p;
    };
    const base = alloc(blob.length);
    new Uint8Array(this.memory.buffer, base, blob.length).set(blob);
    const param = (i) => (i === null || i === undefined ? 0 : base + header.params[i].offset);
    const ptr = {};
    const tensors = header.tensors;
    for (const [name, t] of Object.entries(tensors)) {
      if (t.view) continue;
      if (t.kind === 'bits') {
        const [, , h = 1, w = 1] = t.shape.length === 4 ? t.shape : [1, t.shape[1], 1, 1];
        ptr[name] = alloc(h * w * t.cb + 16); // + 16: bk_binconv_dw reads whole 128-bit words of a pixel
      } else {
        ptr[name] = alloc(prod(t.shape) * 4);
      }
    }
    const resolve = (name) => {
      while (tensors[name]?.view) name = tensors[name].view;
      return ptr[name];
    };
    for (const name of Object.keys(tensors)) if (tensors[name].view) ptr[name] = resolve(name);
    const geometry = (t) => (t.shape.length === 4 ? t.shape.slice(1) : [t.shape[1], 1, 1]);
    let scratchBytes = 16;
    const steps = [];
    for (const op of header.ops) {
      if (op.op === 'binconv') {
        const xt = tensors[op.x];
        const [C, H, W] = geometry(xt);
        const kbytes = align(op.KH * op.KW * xt.cb);
        const rows = alloc(op.O * kbytes);
        if (op.repack === 'matmul') k.bk_repack_matmul(param(op.w), op.I, op.O, kbytes, rows);
        else k.bk_repack_conv(param(op.w), op.O, op.I, op.KH, op.KW, xt.cb, kbytes, rows);
        const ocb = (op.O + 7) >> 3;
        scratchBytes = Math.max(scratchBytes, 3 * kbytes + ocb);
        steps.push({ op, run: (s) => k.bk_binconv(ptr[op.x], C, H, W, xt.cb, rows, op.O, op.KH, op.KW, op.strides[0], op.strides[1], op.pads[0], op.pads[1], op.dil[0], op.dil[1], op.OH, op.OW, kbytes, param(op.scale), param(op.bias), op.relu, op.out ? ptr[op.out] : 0, param(op.othr), op.obits ? ptr[op.obits] : 0, ocb, s) });
      } else if (op.op === 'binconv_grouped') {
        const xt = tensors[op.x];
        const [C, H, W] = geometry(xt);
        const ocb = (op.O + 7) >> 3;
        const taps = op.KH * op.KW;
        if (op.group === C && op.O === C && op.I === 1 && taps <= 15) {
          // Depthwise: 128 channels at a time in bit planes (bk_binconv_dw), where the thresholds allow it.
          const cbw = align(xt.cb);
          const rows = alloc(taps * cbw);
          k.bk_repack_dw(param(op.w), C, op.KH, op.KW, cbw, rows);
          const table = op.obits ? alloc((taps + 1) * 5 * cbw) : 0;
          if (!op.obits || k.bk_prepare_dw(C, taps, param(op.scale), param(op.bias), op.relu, param(op.othr), cbw, table)) {
            scratchBytes = Math.max(scratchBytes, 8 * taps + 64);
            steps.push({ op, kernel: 'dw', run: (s) => k.bk_binconv_dw(ptr[op.x], C, H, W, xt.cb, rows, cbw, op.KH, op.KW, op.strides[0], op.strides[1], op.pads[0], op.pads[1], op.dil[0], op.dil[1], op.OH, op.OW, param(op.scale), param(op.bias), op.relu, op.out ? ptr[op.out] : 0, table, op.obits ? ptr[op.obits] : 0, s) });
            continue;
          }
        }
        steps.push({ op, run: () => k.bk_binconv_grouped(ptr[op.x], C, H, W, xt.cb, param(op.w), op.O, op.group, op.KH, op.KW, op.strides[0], op.strides[1], op.pads[0], op.pads[1], op.dil[0], op.dil[1], op.OH, op.OW, param(op.scale), param(op.bias), op.relu, op.out ? ptr[op.out] : 0, param(op.othr), op.obits ? ptr[op.obits] : 0, ocb) });
      } else if (op.op === 'binarize') {
        const [C, HW] = planes(tensors[op.x].shape);
        steps.push({ op, run: () => k.bk_binarize(ptr[op.x], param(op.t), C, HW, ptr[op.out], tensors[op.out].cb) });
      } else if (op.op === 'conv') {
        const [C, H, W] = geometry(tensors[op.x]);
        steps.push({ op, run: () => k.bk_conv(ptr[op.x], C, H, W, param(op.wf), param(op.wbits), op.O, op.group, op.KH, op.KW, op.strides[0], op.strides[1], op.pads[0], op.pads[1], op.dil[0], op.dil[1], op.OH, op.OW, param(op.bias), ptr[op.out]) });
      } else if (op.op === 'linear') {
        steps.push({ op, run: () => k.bk_linear(ptr[op.x], op.K, param(op.wf), param(op.wbits), op.layout, op.N, param(op.bias), ptr[op.out]) });
      } else if (op.op === 'pool') {
        const [C, H, W] = geometry(tensors[op.x]);
        steps.push({ op, run: () => k.bk_pool(ptr[op.x], C, H, W, op.mode, op.kernel[0], op.kernel[1], op.strides[0], op.strides[1], op.pads[0], op.pads[1], op.OH, op.OW, ptr[op.out]) });
      } else if (op.op === 'binary') {
        const b = op.b ? ptr[op.b] : param(op.bp);
        steps.push({ op, run: () => k.bk_binary(ptr[op.a], b, ptr[op.out], op.C, op.HW, op.code, op.bmode) });
      } else if (op.op === 'clip') {
        const lo = op.lo ?? -Infinity;
        const hi = op.hi ?? Infinity;
        steps.push({ op, run: () => k.bk_clip(ptr[op.x], ptr[op.out], op.n, lo, hi) });
      } else if (op.op === 'view') {
        continue;
      } else {
        throw new Error(`bit kernels: unknown op '${op.op}'`);
      }
    }
    this.scratch = alloc(scratchBytes);
    this.steps = steps;
    this.ptr = ptr;
    this.input = header.input;
    this.outputs = header.outputs;
    this.tensors = tensors;
    this.heapBytes = top;
  }

  get binaryLayers() {
    return this.steps.filter((s) => s.op.op.startsWith('binconv')).length;
  }

  // stem_output (Float32Array, NCHW) -> {branch_logits: Float32Array}. With times = [], each kernel
  // call's milliseconds are pushed onto it, in program order.
  run(input, times = null) {
    const n = prod(this.input.shape);
    if (input.length !== n) throw new Error(`bit kernels: ${this.input.name} has ${input.length} values, expected ${n}`);
    new Float32Array(this.memory.buffer, this.ptr[this.input.name], n).set(input);
    for (const step of this.steps) {
      if (times) {
        const t0 = performance.now();
        step.run(this.scratch);
        times.push(performance.now() - t0);
      } else {
        step.run(this.scratch);
      }
    }
    const result = {};
    for (const [name, tensor] of Object.entries(this.outputs)) {
      const t = this.tensors[tensor];
      result[name] = new Float32Array(this.memory.buffer, this.ptr[tensor], prod(t.shape)).slice();
    }
    return result;
  }

  // A float tensor of the last run by name (tests compare intermediate ones with onnxruntime's).
  tensor(name) {
    const t = this.tensors[name];
    if (!t) return null;
    if (t.kind === 'bits') {
      const [, C, H = 1, W = 1] = t.shape;
      const bytes = new Uint8Array(this.memory.buffer, this.ptr[name], H * W * t.cb);
      const out = new Float32Array(C * H * W); // back to NCHW +/-1, as onnxruntime's Where gives it
      for (let c = 0; c < C; c++) for (let p = 0; p < H * W; p++) out[c * H * W + p] = (bytes[p * t.cb + (c >> 3)] >> (c & 7)) & 1 ? 1 : -1;
      return out;
    }
    return new Float32Array(this.memory.buffer, this.ptr[name], prod(t.shape)).slice();
  }
}

// The rest of mobile.onnx after branch_logits, as its graph computes it (float32 at every step):
// normalised entropy of the softmax, and exit = entropy < threshold.
export function exitDecision(logits, threshold) {
  const f = Math.fround;
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  let sum = 0;
  for (const v of logits) sum = f(sum + f(Math.exp(f(v - max))));
  const logSum = f(Math.log(sum));
  let acc = 0;
  for (const v of logits) {
    const lp = f(f(v - max) - logSum);
    acc = f(acc + f(f(Math.exp(lp)) * lp));
  }
  const entropy = f(f(-acc) / f(Math.log(logits.length)));
  return { entropy, exit: entropy < f(threshold) };
}
