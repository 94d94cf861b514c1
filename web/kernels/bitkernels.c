// XNOR/popcount kernels for dnnsplit's binarized early-exit branch, for wasm32 with SIMD128.
//
// Built by `make wasm` (clang --target=wasm32, wasm-ld; no libc) into
// dnnsplit/runtime/web/static/bitkernels.wasm; driven by static/bitkernels.js, which allocates every
// buffer in the exported memory (from __heap_base up) and runs the program that
// dnnsplit/branching/kernels.py compiles from a branch's mobile.onnx.
//
// Layouts. Float tensors: NCHW, batch 1 (as onnxruntime). Binary activations: HWC bits, `cb` bytes per
// pixel (channel c is bit c%8 of byte c/8, 1 = +1, the padding bits 0). Binary weights as the branch file
// stores them: the flat OIHW tensor, 8 weights per byte, most significant bit first, 1 = +1
// (dnnsplit/branching/packing.py). bk_repack_conv reorders those bits (bits to bits) into one row per
// output channel in the patch order (kh, kw, channel), padded to whole 128-bit words.
//
// Binary convolution: dot(x, w) over the taps inside the image = n - 2 * popcount((x XOR w) & mask), with
// n = inside taps * channels. Zero padding (as the branch's Conv has) is the mask: a tap outside the image
// is 0, neither +1 nor -1; a patch with every tap inside needs none (the padding bits are 0 in both). The epilogue applies the same float operations as the ONNX graph, in
// its order (y = d * scale, y = y + bias, relu), and either stores y (NCHW float) or thresholds it for
// the next binary layer (y >= t: the folded batch-norm threshold) straight into HWC bits.
#include <stdint.h>
#include <wasm_simd128.h>

#define EXPORT(name) __attribute__((export_name(#name))) name

static inline int min_i(int a, int b) { return a < b ? a : b; }
static inline int max_i(int a, int b) { return a > b ? a : b; }

static void zero_bytes(uint8_t* p, int n) {
  for (int i = 0; i < n; i++) p[i] = 0;
}

static inline int get_bit_msb(const uint8_t* bits, int index) {
  return (bits[index >> 3] >> (7 - (index & 7))) & 1;
}

// float NCHW (C planes of HW) -> HWC bits: bit c of pixel p = x[c, p] >= t[c]. Four pixels at a time:
// the 8 channels of one output byte are compared lane-wise and OR-ed into one i32x4, then its 4 bytes go
// to the 4 pixels (the padding bits of the last byte stay 0).
void EXPORT(bk_binarize)(const float* x, const float* t, int C, int HW, uint8_t* out, int cb) {
  for (int b = 0; b < cb; b++) {
    const int c0 = 8 * b, c1 = min_i(C, c0 + 8);
    int p = 0;
    for (; p + 4 <= HW; p += 4) {
      v128_t acc = wasm_i32x4_splat(0);
      for (int c = c0; c < c1; c++) {
        const v128_t ge = wasm_f32x4_ge(wasm_v128_load(x + c * HW + p), wasm_f32x4_splat(t[c]));
        acc = wasm_v128_or(acc, wasm_v128_and(ge, wasm_i32x4_splat(1 << (c - c0))));
      }
      out[p * cb + b] = (uint8_t)wasm_i32x4_extract_lane(acc, 0);
      out[(p + 1) * cb + b] = (uint8_t)wasm_i32x4_extract_lane(acc, 1);
      out[(p + 2) * cb + b] = (uint8_t)wasm_i32x4_extract_lane(acc, 2);
      out[(p + 3) * cb + b] = (uint8_t)wasm_i32x4_extract_lane(acc, 3);
    }
    for (; p < HW; p++) {
      uint8_t byte = 0;
      for (int c = c0; c < c1; c++)
        if (x[c * HW + p] >= t[c]) byte |= (uint8_t)(1u << (c - c0));
      out[p * cb + b] = byte;
    }
  }
}

// Conv weights, packed OIHW (MSB first) -> rows of kbytes (patch order kh, kw, channel; LSB first).
void EXPORT(bk_repack_conv)(const uint8_t* src, int O, int I, int KH, int KW, int cb, int kbytes,
                            uint8_t* dst) {
  zero_bytes(dst, O * kbytes);
  int j = 0;
  for (int o = 0; o < O; o++)
    for (int i = 0; i < I; i++)
      for (int kh = 0; kh < KH; kh++)
        for (int kw = 0; kw < KW; kw++, j++)
          if (get_bit_msb(src, j)) dst[o * kbytes + (kh * KW + kw) * cb + (i >> 3)] |= (uint8_t)(1u << (i & 7));
}

// MatMul weights [K, N], packed (MSB first) -> N rows of kbytes (a 1x1 convolution's rows).
void EXPORT(bk_repack_matmul)(const uint8_t* src, int K, int N, int kbytes, uint8_t* dst) {
  zero_bytes(dst, N * kbytes);
  for (int k = 0; k < K; k++)
    for (int n = 0; n < N; n++)
      if (get_bit_msb(src, k * N + n)) dst[n * kbytes + (k >> 3)] |= (uint8_t)(1u << (k & 7));
}

// The horizontal sums of 4 i16x8 counters as one i32x4, sharing their shuffles. Lanes stay below 2^15 for
// any row below 2^18 bits.
static inline v128_t hsum4(v128_t a0, v128_t a1, v128_t a2, v128_t a3) {
  const v128_t ones = wasm_i16x8_splat(1);
  const v128_t d0 = wasm_i32x4_dot_i16x8(a0, ones), d1 = wasm_i32x4_dot_i16x8(a1, ones);
  const v128_t d2 = wasm_i32x4_dot_i16x8(a2, ones), d3 = wasm_i32x4_dot_i16x8(a3, ones);
  const v128_t t0 = wasm_i32x4_add(wasm_i32x4_shuffle(d0, d1, 0, 4, 1, 5), wasm_i32x4_shuffle(d0, d1, 2, 6, 3, 7));
  const v128_t t1 = wasm_i32x4_add(wasm_i32x4_shuffle(d2, d3, 0, 4, 1, 5), wasm_i32x4_shuffle(d2, d3, 2, 6, 3, 7));
  return wasm_i32x4_add(wasm_i32x4_shuffle(t0, t1, 0, 1, 4, 5), wasm_i32x4_shuffle(t0, t1, 2, 3, 6, 7));
}

// Mismatches (the popcount of XOR) of one patch against 4 weight rows, 128 bits at a time. Where every tap
// of the patch is inside the image (M = 0) no mask is needed: the padding bits of the patch and of the
// rows are all 0 and never differ. A patch with taps outside (zeros in the patch) is masked to the taps
// inside. dot(x, w) = n - 2 * mismatches, with n = inside taps * channels.
static inline v128_t mism4(const uint8_t* P8, const uint8_t* M8, const uint8_t* w8, int Kw) {
  const v128_t* P = (const v128_t*)P8;
  const v128_t* M = (const v128_t*)M8;
  const v128_t* w0 = (const v128_t*)w8;
  const v128_t* w1 = w0 + Kw;
  const v128_t* w2 = w0 + 2 * Kw;
  const v128_t* w3 = w0 + 3 * Kw;
  v128_t a0 = wasm_i16x8_splat(0), a1 = a0, a2 = a0, a3 = a0;
  const v128_t all = wasm_i8x16_splat(-1);
  int k = 0;
  while (k < Kw) {
    const int end = min_i(Kw, k + 31);
    v128_t b0 = wasm_i8x16_splat(0), b1 = b0, b2 = b0, b3 = b0;
    for (; k < end; k++) {
      const v128_t p = wasm_v128_load(P + k), mk = M ? wasm_v128_load(M + k) : all;
      b0 = wasm_i8x16_add(b0, wasm_i8x16_popcnt(wasm_v128_and(mk, wasm_v128_xor(p, wasm_v128_load(w0 + k)))));
      b1 = wasm_i8x16_add(b1, wasm_i8x16_popcnt(wasm_v128_and(mk, wasm_v128_xor(p, wasm_v128_load(w1 + k)))));
      b2 = wasm_i8x16_add(b2, wasm_i8x16_popcnt(wasm_v128_and(mk, wasm_v128_xor(p, wasm_v128_load(w2 + k)))));
      b3 = wasm_i8x16_add(b3, wasm_i8x16_popcnt(wasm_v128_and(mk, wasm_v128_xor(p, wasm_v128_load(w3 + k)))));
    }
    a0 = wasm_i16x8_add(a0, wasm_u16x8_extadd_pairwise_u8x16(b0));
    a1 = wasm_i16x8_add(a1, wasm_u16x8_extadd_pairwise_u8x16(b1));
    a2 = wasm_i16x8_add(a2, wasm_u16x8_extadd_pairwise_u8x16(b2));
    a3 = wasm_i16x8_add(a3, wasm_u16x8_extadd_pairwise_u8x16(b3));
  }
  return hsum4(a0, a1, a2, a3);
}

static inline int mism1(const uint8_t* P8, const uint8_t* M8, const uint8_t* w8, int Kw) {
  const uint64_t* P = (const uint64_t*)P8;
  const uint64_t* M = (const uint64_t*)M8;
  const uint64_t* w = (const uint64_t*)w8;
  int a = 0;
  for (int k = 0; k < 2 * Kw; k++) a += __builtin_popcountll((P[k] ^ w[k]) & (M ? M[k] : ~0ull));
  return a;
}

// The mask bits of one tap that lies inside the image: the C real channels, not the padding bits.
static void tap_mask(uint8_t* dst, int C, int cb) {
  for (int b = 0; b < cb; b++) {
    const int left = C - 8 * b;
    dst[b] = left >= 8 ? 0xFF : (uint8_t)((1u << left) - 1u);
  }
}

static inline float epilogue(int d, int o, const float* scale, const float* bias, int relu) {
  float y = (float)d;
  if (scale) y = y * scale[o];
  if (bias) y = y + bias[o];
  if (relu) y = y > 0.0f ? y : 0.0f;
  return y;
}

// Binary convolution, groups = 1. x: HWC bits (C channels, cb bytes per pixel); w: rows from
// bk_repack_conv (kbytes each, a multiple of 16). Writes `out` (NCHW float, may be 0) and/or `obits`
// (HWC bits of y >= othr[o], ocb bytes per pixel; both may be 0). scratch: 3 * kbytes + ocb bytes,
// 16-byte aligned.
void EXPORT(bk_binconv)(const uint8_t* x, int C, int H, int W, int cb, const uint8_t* w, int O, int KH,
                        int KW, int sh, int sw, int ph, int pw, int dh, int dw, int OH, int OW, int kbytes,
                        const float* scale, const float* bias, int relu, float* out, const float* othr,
                        uint8_t* obits, int ocb, uint8_t* scratch) {
  uint8_t* patch = scratch;
  uint8_t* full = scratch + kbytes;      // the mask of a patch with every tap inside
  uint8_t* border = scratch + 2 * kbytes;  // the mask of this patch when some tap is outside
  uint8_t* obyte = scratch + 3 * kbytes;
  const int taps = KH * KW;
  const int Kw = kbytes >> 4;
  const int OHW = OH * OW;
  zero_bytes(patch, 3 * kbytes);
  for (int t = 0; t < taps; t++) tap_mask(full + t * cb, C, cb);
  const int wide = (cb & 7) == 0;
  for (int oy = 0; oy < OH; oy++) {
    for (int ox = 0; ox < OW; ox++) {
      int inside = 0;
      for (int kh = 0; kh < KH; kh++) {
        const int iy = oy * sh - ph + kh * dh;
        for (int kw = 0; kw < KW; kw++) {
          const int ix = ox * sw - pw + kw * dw;
          uint8_t* dst = patch + (kh * KW + kw) * cb;
          if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
            const uint8_t* src = x + (iy * W + ix) * cb;
            if (wide) {
              for (int b = 0; b < cb; b += 8) *(uint64_t*)(dst + b) = *(const uint64_t*)(src + b);
            } else {
              for (int b = 0; b < cb; b++) dst[b] = src[b];
            }
            inside++;
          } else {
            for (int b = 0; b < cb; b++) dst[b] = 0;
          }
        }
      }
      const uint8_t* mask = 0;  // every tap inside: no mask (see mism4)
      if (inside != taps) {
        for (int kh = 0; kh < KH; kh++) {
          const int iy = oy * sh - ph + kh * dh;
          for (int kw = 0; kw < KW; kw++) {
            const int ix = ox * sw - pw + kw * dw;
            const int t = kh * KW + kw;
            const int in = iy >= 0 && iy < H && ix >= 0 && ix < W;
            for (int b = 0; b < cb; b++) border[t * cb + b] = in ? full[t * cb + b] : 0;
          }
        }
        mask = border;
      }
      const int n = inside * C;
      const int p = oy * OW + ox;
      if (obits) zero_bytes(obyte, ocb);
      int o = 0;
      const v128_t nv = wasm_i32x4_splat(n);
      for (; o + 4 <= O; o += 4) {
        const v128_t m = mism4(patch, mask, w + o * kbytes, Kw);
        // The epilogue of 4 outputs at once: the same float operations as epilogue(), lane by lane.
        v128_t y = wasm_f32x4_convert_i32x4(wasm_i32x4_sub(nv, wasm_i32x4_shl(m, 1)));
        if (scale) y = wasm_f32x4_mul(y, wasm_v128_load(scale + o));
        if (bias) y = wasm_f32x4_add(y, wasm_v128_load(bias + o));
        if (relu) y = wasm_f32x4_max(y, wasm_f32x4_splat(0.0f));
        if (out) {
          out[o * OHW + p] = wasm_f32x4_extract_lane(y, 0);
          out[(o + 1) * OHW + p] = wasm_f32x4_extract_lane(y, 1);
          out[(o + 2) * OHW + p] = wasm_f32x4_extract_lane(y, 2);
          out[(o + 3) * OHW + p] = wasm_f32x4_extract_lane(y, 3);
        }
        if (obits)
          obyte[o >> 3] |= (uint8_t)(wasm_i32x4_bitmask(wasm_f32x4_ge(y, wasm_v128_load(othr + o))) << (o & 7));
      }
      for (; o < O; o++) {
        const int mo = mism1(patch, mask, w + o * kbytes, Kw);
        const float y = epilogue(n - 2 * mo, o, scale, bias, relu);
        if (out) out[o * OHW + p] = y;
        if (obits && y >= othr[o]) obyte[o >> 3] |= (uint8_t)(1u << (o & 7));
      }
      if (obits)
        for (int b = 0; b < ocb; b++) obits[p * ocb + b] = obyte[b];
    }
  }
}

// Binary convolution with groups > 1 (depthwise ones: few taps per output), bit by bit, reading the
// weights as packed (OIHW, MSB first). Same epilogue as bk_binconv.
void EXPORT(bk_binconv_grouped)(const uint8_t* x, int C, int H, int W, int cb, const uint8_t* wbits, int O,
                                int G, int KH, int KW, int sh, int sw, int ph, int pw, int dh, int dw, int OH,
                                int OW, const float* scale, const float* bias, int relu, float* out,
                                const float* othr, uint8_t* obits, int ocb) {
  const int Cg = C / G, Og = O / G, OHW = OH * OW;
  if (obits) zero_bytes(obits, OHW * ocb);
  for (int o = 0; o < O; o++) {
    const int c0 = (o / Og) * Cg;
    for (int oy = 0; oy < OH; oy++)
      for (int ox = 0; ox < OW; ox++) {
        int d = 0;
        for (int ic = 0; ic < Cg; ic++) {
          const int c = c0 + ic;
          for (int kh = 0; kh < KH; kh++) {
            const int iy = oy * sh - ph + kh * dh;
            if (iy < 0 || iy >= H) continue;
            for (int kw = 0; kw < KW; kw++) {
              const int ix = ox * sw - pw + kw * dw;
              if (ix < 0 || ix >= W) continue;
              const int xb = (x[(iy * W + ix) * cb + (c >> 3)] >> (c & 7)) & 1;
              const int wb = get_bit_msb(wbits, ((o * Cg + ic) * KH + kh) * KW + kw);
              d += xb == wb ? 1 : -1;
            }
          }
        }
        const int p = oy * OW + ox;
        const float y = epilogue(d, o, scale, bias, relu);
        if (out) out[o * OHW + p] = y;
        if (obits && y >= othr[o]) obits[p * ocb + (o >> 3)] |= (uint8_t)(1u << (o & 7));
      }
  }
}

// Depthwise binary convolution (groups = channels = outputs), 128 channels at a time. The weights of tap t
// are one row of `cbw` bytes (bit c = channel c, 1 = +1; cbw = cb rounded up to 16), from bk_repack_dw.
// Per pixel and 128 channels, the mismatches over the taps inside the image are counted in 4 bit planes
// (a ripple-carry adder per tap: every channel's count at once, no popcount, no per-channel loop); then
// the bit output is a bit-sliced comparison with the per-channel thresholds of bk_prepare_dw, and the
// float output (if any) reads each channel's count from the planes. x: HWC bits with at least 16 bytes
// readable past the tensor (bitkernels.js allocates them so); the lanes of channels >= C are masked off.
void EXPORT(bk_repack_dw)(const uint8_t* src, int C, int KH, int KW, int cbw, uint8_t* dst) {
  zero_bytes(dst, KH * KW * cbw);
  for (int c = 0; c < C; c++)
    for (int t = 0; t < KH * KW; t++)
      if (get_bit_msb(src, c * KH * KW + t)) dst[t * cbw + (c >> 3)] |= (uint8_t)(1u << (c & 7));
}

// For every count of inside taps n (0..taps) and channel c: the output bit as a function of the mismatches
// m is [m <= K] XOR flip (epilogue() is monotone in m: float multiply-add and relu round monotonically),
// found by evaluating epilogue(n - 2m) >= othr[c] for every m, as bk_binconv would. Table: for each n,
// 5 planes of cbw bytes: K bits 0-3, flip. Returns 0 where taps > 15 or an output is not monotone in m
// (then the caller runs bk_binconv_grouped).
int EXPORT(bk_prepare_dw)(int C, int taps, const float* scale, const float* bias, int relu, const float* othr,
                          int cbw, uint8_t* table) {
  if (taps > 15) return 0;
  zero_bytes(table, (taps + 1) * 5 * cbw);
  for (int n = 0; n <= taps; n++) {
    uint8_t* planes = table + n * 5 * cbw;
    for (int c = 0; c < C; c++) {
      int ones = 0, first = -1, last = -1, rises = 0, falls = 0, prev = -1;
      for (int m = 0; m <= n; m++) {
        const int bit = epilogue(n - 2 * m, c, scale, bias, relu) >= othr[c];
        if (bit) { ones++; if (first < 0) first = m; last = m; }
        if (prev >= 0 && bit > prev) rises++;
        if (prev >= 0 && bit < prev) falls++;
        prev = bit;
      }
      int K, flip;
      if (rises == 0 && (ones == 0 || first == 0)) {  // 1 for m <= last (or never)
        flip = ones == 0;
        K = ones == 0 ? 15 : last;
      } else if (falls == 0 && last == n) {  // 0 for m < first, 1 from there: NOT (m <= first - 1)
        flip = 1;
        K = first - 1;
      } else {
        return 0;
      }
      for (int b = 0; b < 4; b++)
        if ((K >> b) & 1) planes[b * cbw + (c >> 3)] |= (uint8_t)(1u << (c & 7));
      if (flip) planes[4 * cbw + (c >> 3)] |= (uint8_t)(1u << (c & 7));
    }
  }
  return 1;
}

void EXPORT(bk_binconv_dw)(const uint8_t* x, int C, int H, int W, int cb, const uint8_t* wdw, int cbw, int KH,
                           int KW, int sh, int sw, int ph, int pw, int dh, int dw, int OH, int OW,
                           const float* scale, const float* bias, int relu, float* out, const uint8_t* table,
                           uint8_t* obits, uint8_t* scratch) {
  const int OHW = OH * OW, blocks = cbw >> 4;
  int* offs = (int*)scratch;  // byte offsets of the inside taps' pixels, and their tap index
  int* tidx = offs + KH * KW;
  uint8_t* tmp = (uint8_t*)(tidx + KH * KW);  // 16-byte aligned by the caller's layout: 5 planes of 16 bytes
  v128_t valid[64];  // the lanes of real channels per block (cbw <= 1024 bytes)
  for (int blk = 0; blk < blocks && blk < 64; blk++) {
    uint8_t lanes[16];
    for (int b = 0; b < 16; b++) {
      const int left = C - 8 * (16 * blk + b);
      lanes[b] = left >= 8 ? 0xFF : left <= 0 ? 0 : (uint8_t)((1u << left) - 1u);
    }
    valid[blk] = wasm_v128_load(lanes);
  }
  for (int oy = 0; oy < OH; oy++)
    for (int ox = 0; ox < OW; ox++) {
      int n = 0;
      for (int kh = 0; kh < KH; kh++) {
        const int iy = oy * sh - ph + kh * dh;
        if (iy < 0 || iy >= H) continue;
        for (int kw = 0; kw < KW; kw++) {
          const int ix = ox * sw - pw + kw * dw;
          if (ix < 0 || ix >= W) continue;
          offs[n] = (iy * W + ix) * cb;
          tidx[n] = kh * KW + kw;
          n++;
        }
      }
      const int p = oy * OW + ox;
      const uint8_t* planes = table ? table + n * 5 * cbw : 0;
      for (int blk = 0; blk < blocks; blk++) {
        v128_t s0 = wasm_i8x16_splat(0), s1 = s0, s2 = s0, s3 = s0;
        for (int j = 0; j < n; j++) {
          const v128_t e = wasm_v128_xor(wasm_v128_load(x + offs[j] + 16 * blk), wasm_v128_load(wdw + tidx[j] * cbw + 16 * blk));
          const v128_t c0 = wasm_v128_and(s0, e);
          s0 = wasm_v128_xor(s0, e);
          const v128_t c1 = wasm_v128_and(s1, c0);
          s1 = wasm_v128_xor(s1, c0);
          const v128_t c2 = wasm_v128_and(s2, c1);
          s2 = wasm_v128_xor(s2, c1);
          s3 = wasm_v128_xor(s3, c2);
        }
        const int nbytes = min_i(16, cb - 16 * blk);
        if (obits) {
          const uint8_t* pl = planes + 16 * blk;
          const v128_t k0 = wasm_v128_load(pl), k1 = wasm_v128_load(pl + cbw), k2 = wasm_v128_load(pl + 2 * cbw);
          const v128_t k3 = wasm_v128_load(pl + 3 * cbw), flip = wasm_v128_load(pl + 4 * cbw);
          // m > K, from the least significant plane up (the higher planes decide last)
          v128_t gt = wasm_v128_andnot(s0, k0);
          gt = wasm_v128_or(wasm_v128_andnot(s1, k1), wasm_v128_andnot(gt, wasm_v128_xor(s1, k1)));
          gt = wasm_v128_or(wasm_v128_andnot(s2, k2), wasm_v128_andnot(gt, wasm_v128_xor(s2, k2)));
          gt = wasm_v128_or(wasm_v128_andnot(s3, k3), wasm_v128_andnot(gt, wasm_v128_xor(s3, k3)));
          const v128_t bits = wasm_v128_and(wasm_v128_xor(wasm_v128_not(gt), flip), valid[blk]);
          wasm_v128_store(tmp, bits);
          for (int b = 0; b < nbytes; b++) obits[p * cb + 16 * blk + b] = tmp[b];
        }
        if (out) {
          wasm_v128_store(tmp, s0);
          wasm_v128_store(tmp + 16, s1);
          wasm_v128_store(tmp + 32, s2);
          wasm_v128_store(tmp + 48, s3);
          for (int b = 0; b < nbytes; b++)
            for (int i = 0; i < 8; i++) {
              const int c = 8 * (16 * blk + b) + i;
              if (c >= C) break;
              const int m = ((tmp[b] >> i) & 1) | (((tmp[16 + b] >> i) & 1) << 1) | (((tmp[32 + b] >> i) & 1) << 2) |
                            (((tmp[48 + b] >> i) & 1) << 3);
              out[c * OHW + p] = epilogue(n - 2 * m, c, scale, bias, relu);
            }
        }
      }
    }
}

// Float convolution (the branch's real-valued layers), NCHW, any groups. Weights: float OIHW (wf), or
// the +/-1 weights of a binary-weight layer over real inputs straight from their packed bits (wbits).
void EXPORT(bk_conv)(const float* x, int C, int H, int W, const float* wf, const uint8_t* wbits, int O,
                     int G, int KH, int KW, int sh, int sw, int ph, int pw, int dh, int dw, int OH, int OW,
                     const float* bias, float* out) {
  const int Cg = C / G, Og = O / G, OHW = OH * OW;
  for (int o = 0; o < O; o++) {
    float* plane = out + o * OHW;
    const float b = bias ? bias[o] : 0.0f;
    for (int p = 0; p < OHW; p++) plane[p] = b;
    const int c0 = (o / Og) * Cg;
    for (int ic = 0; ic < Cg; ic++) {
      const float* xp = x + (c0 + ic) * H * W;
      for (int kh = 0; kh < KH; kh++)
        for (int kw = 0; kw < KW; kw++) {
          const int widx = ((o * Cg + ic) * KH + kh) * KW + kw;
          const float wv = wf ? wf[widx] : (get_bit_msb(wbits, widx) ? 1.0f : -1.0f);
          // ox range with ix = ox*sw - pw + kw*dw inside [0, W)
          const int off = kw * dw - pw;
          int ox0 = off >= 0 ? 0 : (-off + sw - 1) / sw;
          int ox1 = (W - 1 - off) >= 0 ? min_i(OW, (W - 1 - off) / sw + 1) : 0;
          if (ox1 <= ox0) continue;
          for (int oy = 0; oy < OH; oy++) {
            const int iy = oy * sh - ph + kh * dh;
            if (iy < 0 || iy >= H) continue;
            const float* xr = xp + iy * W + off;
            float* orow = plane + oy * OW;
            if (sw == 1) {
              for (int ox = ox0; ox < ox1; ox++) orow[ox] += wv * xr[ox];
            } else {
              for (int ox = ox0; ox < ox1; ox++) orow[ox] += wv * xr[ox * sw];
            }
          }
        }
    }
  }
}

// y[n] = sum_k x[k] w(k, n) + bias[n]: layout 0 = w[n*K+k] (Gemm transB=1), 1 = w[k*N+n] (MatMul);
// wf float, or wbits (+/-1 packed, MSB first) over real inputs.
void EXPORT(bk_linear)(const float* x, int K, const float* wf, const uint8_t* wbits, int layout, int N,
                       const float* bias, float* out) {
  for (int n = 0; n < N; n++) {
    float acc = 0.0f;
    for (int k = 0; k < K; k++) {
      const int idx = layout == 0 ? n * K + k : k * N + n;
      const float wv = wf ? wf[idx] : (get_bit_msb(wbits, idx) ? 1.0f : -1.0f);
      acc += x[k] * wv;
    }
    out[n] = bias ? acc + bias[n] : acc;
  }
}

// Pools over NCHW. mode 0: max (padding never wins); 1: average, count_include_pad; 2: average over the
// taps inside.
void EXPORT(bk_pool)(const float* x, int C, int H, int W, int mode, int KH, int KW, int sh, int sw, int ph,
                     int pw, int OH, int OW, float* out) {
  for (int c = 0; c < C; c++) {
    const float* xp = x + c * H * W;
    float* op = out + c * OH * OW;
    for (int oy = 0; oy < OH; oy++)
      for (int ox = 0; ox < OW; ox++) {
        const int y0 = oy * sh - ph, x0 = ox * sw - pw;
        const int ya = max_i(y0, 0), yb = min_i(y0 + KH, H), xa = max_i(x0, 0), xb = min_i(x0 + KW, W);
        float acc = mode == 0 ? -__builtin_inff() : 0.0f;
        for (int iy = ya; iy < yb; iy++)
          for (int ix = xa; ix < xb; ix++) {
            const float v = xp[iy * W + ix];
            if (mode == 0) acc = v > acc ? v : acc;
            else acc += v;
          }
        if (mode == 1) acc = acc / (float)(KH * KW);
        if (mode == 2) acc = acc / (float)((yb - ya) * (xb - xa));
        op[oy * OW + ox] = acc;
      }
  }
}

// Elementwise a (op) b over C planes of HW. bmode 0: b has a's shape; 1: one b per channel; 2: scalar
// b. op 0: add, 1: mul, 2: sub, 3: div, 4: b - a (a constant on the left of Sub), 5: b / a. One plain
// loop per (op, bmode), which clang vectorizes; a switch inside the element loop it did not.
#define BK_ELEMENTWISE(EXPR)                                                  \
  do {                                                                        \
    if (bmode == 0) {                                                         \
      for (int i = 0; i < C * HW; i++) {                                      \
        const float u = a[i], v = b[i];                                       \
        out[i] = EXPR;                                                        \
      }                                                                       \
    } else {                                                                  \
      for (int c = 0; c < C; c++) {                                           \
        const float v = bmode == 1 ? b[c] : b[0];                             \
        const float* ap = a + c * HW;                                         \
        float* op = out + c * HW;                                             \
        for (int p = 0; p < HW; p++) {                                        \
          const float u = ap[p];                                              \
          op[p] = EXPR;                                                       \
        }                                                                     \
      }                                                                       \
    }                                                                         \
  } while (0)

void EXPORT(bk_binary)(const float* a, const float* b, float* out, int C, int HW, int op, int bmode) {
  switch (op) {
    case 0: BK_ELEMENTWISE(u + v); break;
    case 1: BK_ELEMENTWISE(u * v); break;
    case 2: BK_ELEMENTWISE(u - v); break;
    case 3: BK_ELEMENTWISE(u / v); break;
    case 4: BK_ELEMENTWISE(v - u); break;
    default: BK_ELEMENTWISE(v / u); break;
  }
}

// Clip to [lo, hi] (Relu: lo = 0, hi = +inf; NaN stays NaN as in onnxruntime).
void EXPORT(bk_clip)(const float* x, float* out, int n, float lo, float hi) {
  for (int i = 0; i < n; i++) {
    const float v = x[i];
    out[i] = v < lo ? lo : v > hi ? hi : v;
  }
}
