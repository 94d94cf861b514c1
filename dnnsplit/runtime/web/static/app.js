// The phone's side of collaborative inference in the browser: download the mobile segment(s), run them on
// an image, stop there when the early-exit branch is confident, else send the boundary tensors to the edge
// (POST /v1/infer, the Python client's wire format) and show the top-5 with the time of every stage.

import { verifySegment } from './integrity.js';
import { createSessions, run } from './runtime.js';
import { BitBranch, exitDecision, kernelModule } from './bitkernels.js';
import { pixels, toTensor } from './preprocess.js';
import { CONTENT_TYPE, decode, encode, pack } from './wire.js';
import { Tracker, decide, edgeMs, phoneMs } from './elastic.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const state = { config: null, rt: null, bits: null, stages: {} };

const size = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(2)} MB` : `${(n / 1e3).toFixed(1)} kB`);

function setStatus(text, kind = 'busy') {
  const el = $('status');
  el.textContent = text;
  el.dataset.state = kind;
}

async function download(url) {
  const t0 = performance.now();
  const answer = await fetch(url);
  if (!answer.ok) throw new Error(`GET ${url}: ${answer.status}`);
  const bytes = await answer.arrayBuffer();
  return { bytes, ms: performance.now() - t0 };
}

async function load() {
  setStatus('loading the split…');
  const answer = await fetch('config.json');
  if (!answer.ok) throw new Error(`GET config.json: ${answer.status}`);
  const config = await answer.json();
  state.config = config;
  const prefer = params.get('backend') || 'auto';
  const bits = await loadBitKernels(config, prefer);
  if (!bits.ok) {
    const files = await Promise.all(config.mobile.map((seg) => download(seg.url)));
    await Promise.all(config.mobile.map((seg, i) => verifySegment(seg, files[i].bytes)));
    state.stages.download_ms = files.reduce((a, f) => a + f.ms, 0);
    state.stages.download_bytes = files.reduce((a, f) => a + f.bytes.byteLength, 0);
    state.rt = await createSessions(files.map((f) => f.bytes), { prefer });
  }
  const engine = $('branch-engine');
  if (engine) {
    engine.textContent = bits.ok ? `bit kernels (WebAssembly SIMD: XNOR/popcount, ${state.bits.binaryLayers} binary layers)` : config.early_exit ? `onnxruntime-web (${bits.reason})` : '-';
    engine.dataset.engine = bits.ok ? 'kernels' : config.early_exit ? 'onnxruntime' : 'none';
  }
  $('backend').textContent = `${state.rt.backend} (onnxruntime-web ${state.rt.version}, ${state.rt.threads} thread(s))${state.rt.note ? ' — ' + state.rt.note : ''}`;
  $('backend').dataset.backend = state.rt.backend;
  $('split').textContent = `split ${config.split}: ${config.mobile.map((s) => s.file).join(', ')} here (${size(state.stages.download_bytes)}), the rest on the edge${config.early_exit ? '; early exit when the branch is confident' : ''}`;
  setStatus('ready: pick an image or use the camera', 'ready');
}

// A branch split on the bit kernels: the stem in onnxruntime-web, the branch in bitkernels.wasm. Not
// where the server offers no program (not a branch, or a layer the kernels lack), where WebAssembly SIMD
// is missing, or with ?kernels=off: {ok: false, reason} says which, and the page runs the whole mobile
// segment in onnxruntime-web.
async function loadBitKernels(config, prefer) {
  const spec = config.kernels;
  if (!config.early_exit) return { ok: false, reason: 'no branch' };
  if (!spec) return { ok: false, reason: 'the server offers no bit-kernel program' };
  if (spec.unavailable) return { ok: false, reason: `the bit kernels lack a layer of this branch: ${spec.unavailable}` };
  if (params.get('kernels') === 'off') return { ok: false, reason: 'bit kernels turned off (?kernels=off)' };
  try {
    await kernelModule();
  } catch (err) {
    return { ok: false, reason: `no bit kernels here: ${err.message || err}` };
  }
  const parts = [spec.stem, spec.program];
  const files = await Promise.all(parts.map((p) => download(p.url)));
  await Promise.all(parts.map((p, i) => verifySegment(p, files[i].bytes)));
  state.stages.download_ms = files.reduce((a, f) => a + f.ms, 0);
  state.stages.download_bytes = files.reduce((a, f) => a + f.bytes.byteLength, 0);
  state.rt = await createSessions([files[0].bytes], { prefer });
  state.bits = await BitBranch.create(files[1].bytes);
  return { ok: true };
}

// The mobile segments on one input tensor; every tensor made so far, by name.
async function runMobile(x) {
  const { config, rt } = state;
  const available = { [config.input.name]: { dtype: 'float32', shape: config.input.shape, data: x } };
  const t0 = performance.now();
  for (let i = 0; i < rt.sessions.length; i++) Object.assign(available, await run(rt.ort, rt.sessions[i], available));
  if (state.bits) {
    const { bits } = state;
    const features = available[bits.input.name];
    const logits = bits.run(features.data).branch_logits;
    const { entropy, exit } = exitDecision(logits, config.early_exit.threshold);
    available[config.early_exit.logits] = { dtype: 'float32', shape: [1, logits.length], data: logits };
    available.entropy = { dtype: 'float32', shape: [1], data: new Float32Array([entropy]) };
    available[config.early_exit.flag] = { dtype: 'bool', shape: [1], data: new Uint8Array([exit ? 1 : 0]) };
  }
  return { available, ms: performance.now() - t0 };
}

function exitsEarly(available) {
  const spec = state.config.early_exit;
  if (!spec || !(spec.flag in available)) return null;
  if (!available[spec.flag].data.every((v) => v)) return null;
  return { [spec.answers]: available[spec.logits] };
}

async function offload(available, crossing = null, extra = {}) {
  const { config } = state;
  const boundary = Object.fromEntries((crossing || config.boundary).map((t) => [t.name, available[t.name]]));
  const message = encode(boundary, { manifest: config.split, ...extra });
  const coded = await pack(message, params.get('coding') || config.coding || 'identity');
  const body = coded.body;
  const headers = { 'content-type': CONTENT_TYPE, ...coded.headers };
  const token = params.get('token') || $('token').value;
  if (token) headers.authorization = `Bearer ${token}`;
  // A URL of its own per request, so its Resource Timing entry is found by name.
  const url = new URL(config.infer_url, location.href).href + `?r=${Date.now()}`;
  const t0 = performance.now();
  const answer = await fetch(url, { method: 'POST', body, headers });
  const raw = await answer.arrayBuffer();
  const t1 = performance.now();
  if (!answer.ok) {
    let reason = '';
    try { reason = JSON.parse(new TextDecoder().decode(raw)).error; } catch { reason = answer.statusText; }
    throw new Error(`the edge answered ${answer.status}: ${reason}`);
  }
  const { tensors, metadata } = decode(raw);
  if (metadata.complete === 'false') throw new Error('the edge has no next tier for the rest of the split (--next)');
  // Stages from Resource Timing (same origin, so every mark is there) and the edge's Server-Timing.
  const entry = performance.getEntriesByName(url).pop();
  performance.clearResourceTimings(); // the buffer holds 250 entries: a long camera session would fill it
  // What the edge spent: its own compute, plus its round trip to the tiers behind it when there are some.
  const timing = Object.fromEntries((entry?.serverTiming || []).map((s) => [s.name, s.duration]));
  const edgeMs = (timing[`compute-${config.tier}`] || 0) + (timing.forward || 0);
  const waited = entry ? entry.responseStart - entry.requestStart : t1 - t0;
  return {
    tensors,
    edge: parseEdgeHeader(answer.headers.get('x-dnnsplit-edge') || ''),
    stages: {
      upload_ms: Math.max(0, waited - edgeMs),
      edge_ms: edgeMs,
      return_ms: entry ? entry.responseEnd - entry.responseStart : 0,
      request_ms: t1 - t0,
      up_bytes: body.byteLength,
      up_coding: coded.headers['content-encoding'] || 'identity',
      down_bytes: raw.byteLength,
    },
  };
}

function softmaxTop(logits, k) {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const exps = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((p, i) => ({ class: i, probability: p / sum, logit: logits[i] }))
    .sort((a, b) => b.probability - a.probability).slice(0, k);
}

function show(result) {
  const { config } = state;
  const rows = result.top.map((c) => `<tr><td>${c.class}</td><td>${config.labels ? config.labels[c.class] : '-'}</td><td>${c.probability.toFixed(4)}</td></tr>`);
  $('top').innerHTML = `<tr><th>class</th><th>name</th><th>probability</th></tr>${rows.join('')}`;
  $('top1').textContent = String(result.top[0].class);
  $('path').textContent = result.path === 'early-exit' ? 'early exit on this device (the edge was not asked)' : result.path === 'local' ? `all on this device (cut ${result.cut})` : result.cut ? `offloaded to the edge (cut ${result.cut})` : 'offloaded to the edge';
  $('path').dataset.path = result.path;
  const s = result.stages;
  const fmt = (v) => (v === undefined ? '-' : `${v.toFixed(2)} ms`);
  $('stages').innerHTML = [
    ['download of the model (once)', fmt(s.download_ms) + ` (${size(s.download_bytes)})`],
    ['mobile compute', fmt(s.mobile_ms)],
    ['upload', result.path === 'edge' ? fmt(s.upload_ms) + ` (${size(s.up_bytes)})` : '-'],
    ['edge', result.path === 'edge' ? fmt(s.edge_ms) : '-'],
    ['return', result.path === 'edge' ? fmt(s.return_ms) + ` (${size(s.down_bytes)})` : '-'],
    ['total (this image)', fmt(s.total_ms)],
  ].map(([a, b]) => `<tr><td>${a}</td><td>${b}</td></tr>`).join('');
  window.dnnsplitResult = result;
}

// One image (a File, Blob or video frame) through the split; the result is also left in window.dnnsplitResult.
export async function classify(source) {
  const { config } = state;
  setStatus('running…');
  const t0 = performance.now();
  const image = await pixels(source);
  const x = toTensor(image.data, image.width, image.height, config.input.shape);
  if (config.elastic) {
    const frame = await runElastic(x);
    const stages = { download_ms: state.stages.download_ms, download_bytes: state.stages.download_bytes, ...frame.stages, total_ms: performance.now() - t0 };
    const logits = frame.outputs[config.first_output].data;
    const path = frame.boundary < config.elastic.pieces.length ? 'edge' : 'local';
    const result = { path, cut: frame.cut, estimate: frame.estimate, top: softmaxTop(logits, 5), logits: Array.from(logits), stages, backend: state.rt.backend, branch: null };
    show(result);
    setStatus('done', 'done');
    return result;
  }
  const { available, ms } = await runMobile(x);
  const stages = { download_ms: state.stages.download_ms, download_bytes: state.stages.download_bytes, mobile_ms: ms };
  let outputs = exitsEarly(available);
  let path = 'early-exit';
  if (!outputs) {
    const remote = await offload(available);
    outputs = remote.tensors;
    Object.assign(stages, remote.stages);
    path = 'edge';
  }
  stages.total_ms = performance.now() - t0;
  const logits = outputs[config.first_output].data;
  const result = { path, top: softmaxTop(logits, 5), logits: Array.from(logits), stages, backend: state.rt.backend, branch: state.bits ? 'kernels' : config.early_exit ? 'onnxruntime' : null };
  show(result);
  setStatus('done', 'done');
  return result;
}

// --- elastic splits: a cut per frame, from the page's own estimate (docs/elastic.md) -------------------

function parseEdgeHeader(value) {
  const found = {};
  for (const item of value.split(',')) {
    const [key, raw] = item.trim().split('=');
    if (key && raw !== undefined && Number.isFinite(Number(raw))) found[key] = Number(raw);
  }
  return found;
}

function estimator(spec) {
  const ref = spec.reference;
  return {
    up: new Tracker(ref.up_mbps), rtt: new Tracker(ref.rtt_ms, {}, 5), phone: new Tracker(1), edge: new Tracker(1),
    downPerUp: ref.down_mbps / ref.up_mbps,
    context() {
      const up = Math.max(this.up.value, 1e-3);
      return { up_mbps: up, down_mbps: up * this.downPerUp, rtt_ms: Math.max(this.rtt.value, 0), phone_speed: Math.max(this.phone.value, 1e-3), edge_load: Math.max(this.edge.value, 1e-3) };
    },
  };
}

// The uplink from the edge's header: the body's second half where it took 2 ms (past a shaper's burst),
// else all but its first chunk (estimate.py: uplink_sample); true when it measured.
function sampleUplink(est, e) {
  let measured = true;
  if (e['tail-bytes'] > 0 && e['tail-ms'] >= 2) est.up.update((e['tail-bytes'] * 8) / (e['tail-ms'] * 1000));
  else if (e['read-ms'] >= 2) est.up.update((e['read-bytes'] * 8) / (e['read-ms'] * 1000));
  else measured = false;
  if (measured) est.lastUplink = performance.now();
  return measured;
}

// The idle probe (docs/elastic.md): when no request has measured the link for 1 s, POST /v1/probe a body
// of 100 ms at the estimated uplink (16 kB to 256 kB) beside the frames kept on the phone; the network
// stack sends it while the page computes. A frame that would offload waits for it (runElastic).
const PROBE_IDLE_MS = Number(params.get('probe_idle_ms') ?? 1000); // ?probe_idle_ms=0: every local frame
function startProbe(est) {
  const c = est.context();
  const size = Math.min(Math.max(Math.round((c.up_mbps * 1000 / 8) * 100), 16384), 262144);
  const body = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(body.subarray(i, Math.min(i + 65536, size)));
  const headers = { 'content-type': 'application/octet-stream' };
  const token = params.get('token') || $('token').value;
  if (token) headers.authorization = `Bearer ${token}`;
  const t0 = performance.now();
  est.probe = (async () => {
    try {
      const answer = await fetch(new URL('/v1/probe', location.href).href, { method: 'POST', body, headers });
      await answer.arrayBuffer();
      const e = parseEdgeHeader(answer.headers.get('x-dnnsplit-edge') || '');
      if (answer.ok && e['total-ms'] !== undefined) {
        sampleUplink(est, e);
        const now = est.context();
        const wire = (Math.max(size - (e['read-bytes'] || 0), 0) * 8) / (now.up_mbps * 1000);
        est.rtt.update(Math.max(performance.now() - t0 - e['total-ms'] - wire, 0));
      }
      est.probes = (est.probes || 0) + 1;
    } catch {
      // an edge that is down shows in the next offloaded frame (its fallback); the probe just ends
    } finally {
      est.lastUplink = performance.now();
      est.probe = null;
    }
  })();
}

// One frame at the cut that is fastest for the current estimate; the estimate learns from what it measured.
async function runElastic(x) {
  const { config } = state;
  const spec = config.elastic;
  const est = (state.estimate ||= estimator(spec));
  est.lastUplink ??= performance.now();
  // ?phone_speed=S pins the phone's speed (x its profile) instead of measuring it: a slower phone, emulated.
  const pinned = params.get('phone_speed');
  if (pinned) est.phone.value = Number(pinned);
  let context = est.context();
  let decision = decide(spec, context, null, state.current ?? null, 0.1);
  if (decision.candidate.boundary < spec.pieces.length && est.probe) {
    await est.probe; // the link is the probe's; then decide again on what it measured
    context = est.context();
    decision = decide(spec, context, null, state.current ?? null, 0.1);
  }
  const k = decision.candidate.boundary;
  if (k === spec.pieces.length && !est.probe && params.get('probe') !== '0' && performance.now() - est.lastUplink >= PROBE_IDLE_MS) startProbe(est);
  const available = { [config.input.name]: { dtype: 'float32', shape: config.input.shape, data: x } };
  const t0 = performance.now();
  for (let i = 0; i < k; i++) Object.assign(available, await run(state.rt.ort, state.rt.sessions[i], available));
  const stages = { mobile_ms: performance.now() - t0, upload_ms: 0, edge_ms: 0, return_ms: 0, up_bytes: 0, down_bytes: 0 };
  if (!pinned && k > 0 && stages.mobile_ms > 0.05) est.phone.update(phoneMs(spec, k) / stages.mobile_ms);
  let outputs = available;
  if (k < spec.pieces.length) {
    const estimate = JSON.stringify(Object.fromEntries(Object.entries(context).map(([a, b]) => [a, Math.round(b * 1e4) / 1e4])));
    const remote = await offload(available, spec.crossings[String(k)], { start: String(k), cut: decision.candidate.name, estimate });
    outputs = { ...available, ...remote.tensors };
    Object.assign(stages, remote.stages);
    const e = remote.edge;
    sampleUplink(est, e);
    if (e['total-ms'] !== undefined) {
      const c = est.context();
      const wire = (remote.stages.down_bytes * 8) / (c.down_mbps * 1000) + (Math.max(remote.stages.up_bytes - (e['read-bytes'] || 0), 0) * 8) / (c.up_mbps * 1000);
      est.rtt.update(Math.max(remote.stages.request_ms - e['total-ms'] - wire, 0));
    }
    const profiled = edgeMs(spec, k);
    if (profiled > 0 && remote.stages.edge_ms > 0.05) est.edge.update((remote.stages.edge_ms / profiled) * (1 + (e.queued || 0) / Math.max(e.concurrency || 1, 1)));
  }
  state.current = k;
  return { outputs, stages, cut: decision.candidate.name, boundary: k, predicted_ms: decision.predicted_ms, estimate: context, probes: est.probes || 0 };
}

// Continuous mode (AR-like): the camera if it is on, else the picked image, else looped sample frames;
// live fps, the estimated uplink, the cut and every stage's time. ?frames=N stops after N frames.
const SAMPLES = [0, 1, 2, 3].map((seed) => {
  const data = new Uint8ClampedArray(96 * 96 * 4);
  for (let i = 0; i < data.length; i++) data[i] = i % 4 === 3 ? 255 : (i * (seed + 3) * 2654435761) >>> 24;
  return new ImageData(data, 96, 96);
});

async function stream() {
  if (state.streaming) { state.streaming = false; return; }
  if (!state.config.elastic) throw new Error('continuous mode re-cuts every frame: serve a split made with --elastic');
  state.streaming = true;
  $('stream').textContent = 'Stop';
  const limit = Number(params.get('frames') || 0);
  const results = (window.dnnsplitStream = []);
  const times = [];
  while (state.streaming && (!limit || results.length < limit)) {
    // A task boundary per frame: a frame can finish in promise callbacks alone, and a loop of them would
    // hold off the page's other tasks (a probe's answer, the live table's repaint, the Stop button).
    await new Promise((resolve) => { const channel = new MessageChannel(); channel.port1.onmessage = resolve; channel.port2.postMessage(0); });
    const video = $('video');
    const source = !video.hidden ? video : $('preview').src ? $('preview') : SAMPLES[results.length % SAMPLES.length];
    const t0 = performance.now();
    const image = await pixels(source);
    const x = toTensor(image.data, image.width, image.height, state.config.input.shape);
    const frame = await runElastic(x);
    frame.stages.total_ms = performance.now() - t0;
    times.push(performance.now());
    while (times.length && times[0] < performance.now() - 1000) times.shift();
    const logits = frame.outputs[state.config.first_output].data;
    results.push({ cut: frame.cut, boundary: frame.boundary, predicted_ms: frame.predicted_ms, estimate: frame.estimate, stages: frame.stages, probes: frame.probes, top1: softmaxTop(logits, 1)[0].class, logits: Array.from(logits) });
    const s = frame.stages;
    $('live').innerHTML = [
      ['fps', String(times.length)],
      ['estimated uplink', `${frame.estimate.up_mbps.toFixed(2)} Mbit/s (rtt ${frame.estimate.rtt_ms.toFixed(1)} ms, phone ${frame.estimate.phone_speed.toFixed(2)}x, edge load ${frame.estimate.edge_load.toFixed(2)}x)`],
      ['cut', `${frame.cut} (${frame.boundary} of ${state.config.elastic.pieces.length} pieces here; predicted ${frame.predicted_ms.toFixed(1)} ms)`],
      ['stages', `phone ${s.mobile_ms.toFixed(1)} ms, upload ${s.upload_ms.toFixed(1)} ms, edge ${s.edge_ms.toFixed(1)} ms, return ${s.return_ms.toFixed(1)} ms; total ${s.total_ms.toFixed(1)} ms`],
    ].map(([a, b]) => `<tr><td>${a}</td><td data-live="${a}">${b}</td></tr>`).join('');
    $('top1').textContent = String(results[results.length - 1].top1);
  }
  state.streaming = false;
  $('stream').textContent = 'Run continuously';
  setStatus(`streamed ${results.length} frames`, 'done');
}

async function startCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error('the camera needs a secure page (HTTPS or localhost): browsers allow getUserMedia only there; pick a file instead');
  }
  const video = $('video');
  video.srcObject = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
  video.hidden = false;
  await video.play();
  $('snap').hidden = false;
}

function guard(fn) {
  return async (...args) => {
    try {
      await fn(...args);
    } catch (err) {
      setStatus(`error: ${err.message || err}`, 'error');
      console.error(err);
    }
  };
}

$('file').addEventListener('change', guard(async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  $('preview').src = URL.createObjectURL(file);
  await classify(file);
}));
$('camera').addEventListener('click', guard(startCamera));
$('stream').addEventListener('click', guard(stream));
$('snap').addEventListener('click', guard(async () => classify($('video'))));
// The profiling page needs the same token to post its profile.
if (params.get('token')) $('profile-link').search = `?token=${encodeURIComponent(params.get('token'))}`;
window.dnnsplit = { classify, stream, ready: guard(load)() };
