// Elastic partitioning in the browser: the same decision and the same estimate trackers as the Python
// client (dnnsplit/partition/elastic.py: predict_ms, decide; dnnsplit/runtime/estimate.py: Tracker), written
// operation for operation alike so both pick the same cut from the same context. tests/vectors/
// elastic_decisions.json holds cases both are checked against (tests/runtime/test_elastic_vectors.py).

// spec: the manifest's `elastic` block; context: {up_mbps, down_mbps, rtt_ms, phone_speed, edge_load}.
export function phoneMs(spec, boundary) {
  let total = 0;
  for (const piece of spec.pieces.slice(0, boundary)) total += piece.mobile_ms;
  return total;
}

export function edgeMs(spec, boundary) {
  let total = 0;
  for (const piece of spec.pieces.slice(boundary)) total += piece.edge_ms;
  return total;
}

export function predictMs(spec, candidate, context) {
  const k = candidate.boundary;
  let total = phoneMs(spec, k) / context.phone_speed;
  if (k < spec.pieces.length) {
    total += edgeMs(spec, k) * context.edge_load + context.rtt_ms / 2;
    total += (candidate.up_bytes * 8.0) / (context.up_mbps * 1000.0);
    if (candidate.returns ?? true) {
      total += context.rtt_ms / 2 + (candidate.down_bytes * 8.0) / (context.down_mbps * 1000.0);
    }
  }
  return total;
}

// The fastest candidate among the `allowed` boundaries (null: all); with `current` and `hysteresis` h, the
// current cut is kept unless the best is predicted more than h faster.
export function decide(spec, context, allowed = null, current = null, hysteresis = 0) {
  const pool = spec.candidates.filter((c) => allowed === null || allowed.includes(c.boundary));
  if (!pool.length) throw new Error('no candidate cut is available');
  const costs = Object.fromEntries(pool.map((c) => [c.name, predictMs(spec, c, context)]));
  let best = pool[0];
  for (const c of pool.slice(1)) {
    const [a, b] = [costs[c.name], costs[best.name]];
    if (a < b || (a === b && c.boundary < best.boundary)) best = c;
  }
  if (current !== null && hysteresis > 0) {
    const held = pool.find((c) => c.boundary === current);
    if (held && held !== best && costs[held.name] <= costs[best.name] * (1 + hysteresis)) {
      return { candidate: held, predicted_ms: costs[held.name], costs, kept: true };
    }
  }
  return { candidate: best, predicted_ms: costs[best.name], costs, kept: false };
}

// One positive quantity: an EWMA in log space with change detection (estimate.py's Tracker).
export class Tracker {
  constructor(value, { alpha = 0.3, change_ratio = 1.6, change_count = 2 } = {}, floor = 0) {
    Object.assign(this, { value, alpha, change_ratio, change_count, floor, samples: 0, steps: 0, held: [] });
  }

  log(x) {
    return Math.log(x + this.floor);
  }

  update(sample) {
    if (!(Number.isFinite(sample) && sample + this.floor > 0 && sample >= 0)) return false;
    this.samples += 1;
    if (this.samples === 1) {
      this.value = sample;
      return false;
    }
    const off = this.log(sample) - this.log(this.value);
    if (Math.abs(off) > Math.log(this.change_ratio)) {
      if (this.held.length && this.held[this.held.length - 1] > this.value !== off > 0) this.held = [];
      this.held.push(sample);
      if (this.held.length < this.change_count) return false;
      let sum = 0;
      for (const x of this.held) sum += this.log(x);
      this.value = Math.max(Math.exp(sum / this.held.length) - this.floor, 0);
      this.held = [];
      this.steps += 1;
      return true;
    }
    this.held = [];
    const a = this.alpha;
    this.value = Math.max(Math.exp((1 - a) * this.log(this.value) + a * this.log(sample)) - this.floor, 0);
    return false;
  }
}
