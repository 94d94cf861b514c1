// An image as the model's input tensor, exactly as dnnsplit/images.py makes it with Pillow:
// short side resized to H * 256/224 (Pillow's BILINEAR: a separable, antialiased triangle filter in 22-bit
// fixed point, horizontal pass then vertical, each rounded to 8 bits), centre crop, /255, ImageNet mean/std,
// all in float32. The same steps as Pillow's Resample.c, so a PNG gives the same tensor to the bit.

const MEAN = [0.485, 0.456, 0.406].map(Math.fround);
const STD = [0.229, 0.224, 0.225].map(Math.fround);
const RESIZE_RATIO = 256 / 224;
const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;

function bilinear(x) {
  x = Math.abs(x);
  return x < 1 ? 1 - x : 0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for one axis: per output pixel, the first input pixel,
// how many it reads, and their fixed-point weights.
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 1 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Float64Array(outSize * ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = bilinear((x + xmin - center + 0.5) * ss);
      kk[xx * ksize + x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) if (ww !== 0) kk[xx * ksize + x] /= ww;
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  const fixed = new Float64Array(kk.length);
  for (let i = 0; i < kk.length; i++) fixed[i] = Math.trunc(kk[i] < 0 ? -0.5 + kk[i] * ONE : 0.5 + kk[i] * ONE);
  return { bounds, kk: fixed, ksize };
}

function clip8(v) {
  if (v >= ONE * 256) return 255;
  if (v <= 0) return 0;
  return Math.floor(v / ONE);
}

// rgb: Uint8Array of width*height*3. Returns the resized Uint8Array (outW*outH*3).
function resample(rgb, width, height, outW, outH) {
  const horiz = coefficients(width, outW);
  const vert = coefficients(height, outH);
  let src = rgb, w = width;
  const needH = outW !== width, needV = outH !== height;
  let firstRow = 0;
  if (needH) {
    // Only the rows the vertical pass reads, as Pillow does.
    firstRow = vert.bounds[0];
    const lastRow = vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1];
    const rows = needV ? lastRow - firstRow : height;
    if (!needV) firstRow = 0;
    const tmp = new Uint8Array(outW * rows * 3);
    for (let y = 0; y < rows; y++) {
      for (let xx = 0; xx < outW; xx++) {
        const xmin = horiz.bounds[xx * 2], xmax = horiz.bounds[xx * 2 + 1], k = xx * horiz.ksize;
        let s0 = ONE / 2, s1 = ONE / 2, s2 = ONE / 2;
        for (let x = 0; x < xmax; x++) {
          const p = ((y + firstRow) * width + x + xmin) * 3, c = horiz.kk[k + x];
          s0 += src[p] * c; s1 += src[p + 1] * c; s2 += src[p + 2] * c;
        }
        const q = (y * outW + xx) * 3;
        tmp[q] = clip8(s0); tmp[q + 1] = clip8(s1); tmp[q + 2] = clip8(s2);
      }
    }
    src = tmp; w = outW;
  }
  if (!needV) return src;
  const out = new Uint8Array(outW * outH * 3);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = vert.bounds[yy * 2] - (needH ? firstRow : 0), ymax = vert.bounds[yy * 2 + 1];
    const k = yy * vert.ksize;
    for (let xx = 0; xx < w; xx++) {
      let s0 = ONE / 2, s1 = ONE / 2, s2 = ONE / 2;
      for (let y = 0; y < ymax; y++) {
        const p = ((y + ymin) * w + xx) * 3, c = vert.kk[k + y];
        s0 += src[p] * c; s1 += src[p + 1] * c; s2 += src[p + 2] * c;
      }
      const q = (yy * outW + xx) * 3;
      out[q] = clip8(s0); out[q + 1] = clip8(s1); out[q + 2] = clip8(s2);
    }
  }
  return out;
}

// rgba: ImageData.data of a width x height image; shape: the model input [N, 3, H, W].
// Returns a Float32Array of 3*H*W (one sample).
export function toTensor(rgba, width, height, shape) {
  const H = shape[2], W = shape[3];
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  // Python: short = round(min(H, W) * 256/224); scale = short / min(image size); sizes rounded (half to even).
  const short = roundHalfEven(Math.min(H, W) * RESIZE_RATIO);
  const scale = short / Math.min(width, height);
  const newW = Math.max(W, roundHalfEven(width * scale)), newH = Math.max(H, roundHalfEven(height * scale));
  const resized = (newW === width && newH === height) ? rgb : resample(rgb, width, height, newW, newH);
  const left = roundHalfEven((newW - W) / 2), top = roundHalfEven((newH - H) / 2);
  const out = new Float32Array(3 * H * W);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const v = Math.fround(resized[((y + top) * newW + x + left) * 3 + c] / 255);
        out[(c * H + y) * W + x] = Math.fround(Math.fround(v - MEAN[c]) / STD[c]);
      }
    }
  }
  return out;
}

// Python's round(): halves go to the even neighbour.
export function roundHalfEven(x) {
  const f = Math.floor(x), d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// The RGBA pixels of an image file or a video frame, without colour management or premultiplication
// (Pillow reads the stored values).
export async function pixels(source) {
  const bitmap = await createImageBitmap(source, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const data = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  return { data, width: bitmap.width, height: bitmap.height };
}
