/**
 * @module
 * Pillow-exact `Image.resize(size, resample)` for 8-bit RGB (no box, reducing_gap None), written from
 * Pillow's documented algorithm: a separable convolution, horizontal pass first (only over the source
 * rows the vertical pass will read) then vertical, each pass skipped when that dimension is unchanged.
 * The filter support is scaled by max(scale, 1) on downscale, taps are normalised in float64 then turned
 * into fixed point with 22 fractional bits (rounded half away from zero), and each pass rounds and clips
 * to uint8. NEAREST follows Pillow's affine nearest path (pixel centres, accumulated offsets).
 */

/** PIL resample codes, as stored in preprocessor_config.json. */
export const Resample = {
  NEAREST: 0,
  LANCZOS: 1,
  BILINEAR: 2,
  BICUBIC: 3,
  BOX: 4,
  HAMMING: 5,
} as const;

/** A PIL resample code 0..5. */
export type ResampleCode = (typeof Resample)[keyof typeof Resample];

/** An 8-bit RGB raster, 3 bytes per pixel, row-major. */
export interface Rgb8 {
  width: number;
  height: number;
  data: Uint8Array;
}

interface Filter {
  support: number;
  weight(x: number): number;
}

const sinc = (x: number): number => {
  if (x === 0) return 1;
  const px = x * Math.PI;
  return Math.sin(px) / px;
};

const FILTERS: Record<Exclude<ResampleCode, 0>, Filter> = {
  [Resample.BOX]: { support: 0.5, weight: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  [Resample.BILINEAR]: {
    support: 1,
    weight: (x) => {
      const a = Math.abs(x);
      return a < 1 ? 1 - a : 0;
    },
  },
  [Resample.HAMMING]: {
    support: 1,
    weight: (x) => {
      const a = Math.abs(x);
      if (a === 0) return 1;
      if (a >= 1) return 0;
      const px = a * Math.PI;
      return (Math.sin(px) / px) * (0.54 + 0.46 * Math.cos(px));
    },
  },
  [Resample.BICUBIC]: {
    support: 2,
    weight: (x) => {
      const a = -0.5;
      const t = Math.abs(x);
      if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
      if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
      return 0;
    },
  },
  [Resample.LANCZOS]: { support: 3, weight: (x) => (x >= -3 && x < 3 ? sinc(x) * sinc(x / 3) : 0) },
};

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;
const HALF = 2 ** (PRECISION_BITS - 1);

interface Taps {
  /** Taps per output sample (the kernel's stride in `k`). */
  ksize: number;
  /** Per output sample: first input index and number of taps. */
  start: Int32Array;
  count: Int32Array;
  /** Fixed-point weights, `ksize` per output sample. */
  k: Int32Array;
}

/** Computes the taps mapping `inSize` samples onto `outSize`, as Pillow's precompute + normalise step. */
function taps(inSize: number, outSize: number, filter: Filter): Taps {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filter.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const k = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const inv = 1 / filterScale;
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    let lo = Math.trunc(center - support + 0.5);
    if (lo < 0) lo = 0;
    let hi = Math.trunc(center + support + 0.5);
    if (hi > inSize) hi = inSize;
    const n = hi - lo;
    let sum = 0;
    for (let i = 0; i < n; i++) {
      w[i] = filter.weight((i + lo - center + 0.5) * inv);
      sum += w[i];
    }
    for (let i = 0; i < n; i++) {
      const v = sum !== 0 ? w[i] / sum : w[i];
      k[o * ksize + i] = v < 0 ? Math.trunc(-0.5 + v * ONE) : Math.trunc(0.5 + v * ONE);
    }
    start[o] = lo;
    count[o] = n;
  }
  return { ksize, start, count, k };
}

const clip8 = (acc: number): number => {
  const v = Math.floor(acc / ONE);
  return v < 0 ? 0 : Math.min(v, 255);
};

/**
 * clip8 for an int32 accumulator, as Pillow's (`int ss`): an arithmetic shift is floor division by
 * 2^22. The horizontal pass sums at most 255 * (sum of positive taps) < 2^31 for every filter here
 * (Pillow relies on the same bound), so int32 arithmetic gives its exact values.
 */
const clip8i = (acc: number): number => {
  const v = acc >> PRECISION_BITS;
  return v < 0 ? 0 : Math.min(v, 255);
};

function horizontal(src: Rgb8, rowFirst: number, rows: number, outW: number, t: Taps): Rgb8 {
  const out = new Uint8Array(outW * rows * 3);
  const { ksize, start, count, k } = t;
  const inStride = src.width * 3;
  const s = src.data;
  for (let y = 0; y < rows; y++) {
    const row = (y + rowFirst) * inStride;
    let o = y * outW * 3;
    for (let x = 0; x < outW; x++, o += 3) {
      let r = HALF;
      let g = HALF;
      let b = HALF;
      const kb = x * ksize;
      let p = row + start[x] * 3;
      for (let i = 0, n = count[x]; i < n; i++, p += 3) {
        const w = k[kb + i];
        r = (r + s[p] * w) | 0;
        g = (g + s[p + 1] * w) | 0;
        b = (b + s[p + 2] * w) | 0;
      }
      out[o] = clip8i(r);
      out[o + 1] = clip8i(g);
      out[o + 2] = clip8i(b);
    }
  }
  return { width: outW, height: rows, data: out };
}

function vertical(src: Rgb8, outH: number, t: Taps, shift: number): Rgb8 {
  const w3 = src.width * 3;
  const out = new Uint8Array(w3 * outH);
  const { ksize, start, count, k } = t;
  const s = src.data;
  const acc = new Float64Array(w3);
  for (let y = 0; y < outH; y++) {
    acc.fill(HALF);
    const kb = y * ksize;
    const first = start[y] - shift;
    for (let i = 0, n = count[y]; i < n; i++) {
      const w = k[kb + i];
      const row = (first + i) * w3;
      for (let c = 0; c < w3; c++) acc[c] += s[row + c] * w;
    }
    const o = y * w3;
    for (let c = 0; c < w3; c++) out[o + c] = clip8(acc[c]);
  }
  return { width: src.width, height: outH, data: out };
}

function nearest(src: Rgb8, outW: number, outH: number): Rgb8 {
  // Pillow: affine scale with a[0] = in/out, offsets started at half a step and accumulated in float64.
  const ax = src.width / outW;
  const ay = src.height / outH;
  const xs = new Int32Array(outW);
  let xo = ax * 0.5;
  for (let x = 0; x < outW; x++, xo += ax) xs[x] = Math.min(Math.trunc(xo), src.width - 1);
  const out = new Uint8Array(outW * outH * 3);
  let yo = ay * 0.5;
  for (let y = 0; y < outH; y++, yo += ay) {
    const sy = Math.min(Math.trunc(yo), src.height - 1);
    const row = sy * src.width * 3;
    for (let x = 0; x < outW; x++) {
      const p = row + xs[x] * 3;
      const o = (y * outW + x) * 3;
      out[o] = src.data[p];
      out[o + 1] = src.data[p + 1];
      out[o + 2] = src.data[p + 2];
    }
  }
  return { width: outW, height: outH, data: out };
}

/**
 * Resizes 8-bit RGB exactly like Pillow's `Image.resize((outW, outH), resample)`.
 * Same size returns a copy, as Pillow does.
 *
 * @example
 * const small = resizeRgb(img, 224, 224, Resample.BILINEAR);
 */
export function resizeRgb(src: Rgb8, outW: number, outH: number, resample: ResampleCode): Rgb8 {
  if (!Number.isInteger(outW) || !Number.isInteger(outH) || outW < 1 || outH < 1) {
    throw new RangeError(`resize target must be positive integers, got ${outW}x${outH}`);
  }
  if (outW === src.width && outH === src.height) return { width: outW, height: outH, data: src.data.slice() };
  if (resample === Resample.NEAREST) return nearest(src, outW, outH);
  const filter = FILTERS[resample];
  if (!filter) throw new RangeError(`unknown PIL resample code ${resample}`);
  const needH = outW !== src.width;
  const needV = outH !== src.height;
  const tv = taps(src.height, outH, filter);
  let img = src;
  let shift = 0;
  if (needH) {
    const th = taps(src.width, outW, filter);
    const first = tv.start[0];
    const last = tv.start[outH - 1] + tv.count[outH - 1];
    img = horizontal(src, first, last - first, outW, th);
    shift = first;
  }
  if (needV) img = vertical(img, outH, tv, shift);
  return img;
}
