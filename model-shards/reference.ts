/**
 * @module
 * A float64 forward pass of BeitForImageClassification written from the model's definition
 * (transformers' modeling_beit), independent of the ONNX graph builder: it folds nothing, gathers
 * the relative position bias itself, and computes in double precision from the checkpoint's
 * float32 weights. It is the yardstick the fp32 and int8 graphs are tested against.
 *
 * Loops run over contiguous rows (x row . W row), so the tiny model is instant and the full-size
 * base model takes tens of seconds.
 */
import type { BeitConfig, StateDict } from "./checkpoint/types.ts";

type Weights = Float32Array | Float64Array;

function get(sd: StateDict, key: string): Float32Array {
  const t = sd.get(key);
  if (!t || !(t.data instanceof Float32Array)) throw new Error(`reference: missing float tensor ${key}`);
  return t.data;
}

function getIndex(sd: StateDict, key: string): BigInt64Array {
  const t = sd.get(key);
  if (!t || !(t.data instanceof BigInt64Array)) throw new Error(`reference: missing int64 tensor ${key}`);
  return t.data;
}

/** y[r, o] = b[o] + sum_i x[r, i] w[o, i]  (PyTorch Linear). */
function linear(
  x: Float64Array,
  rows: number,
  inp: number,
  w: Weights,
  b: Weights | null,
  out: number,
): Float64Array {
  const y = new Float64Array(rows * out);
  for (let r = 0; r < rows; r++) {
    const xo = r * inp;
    for (let o = 0; o < out; o++) {
      const wo = o * inp;
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      let i = 0;
      for (; i + 3 < inp; i += 4) {
        s0 += x[xo + i] * w[wo + i];
        s1 += x[xo + i + 1] * w[wo + i + 1];
        s2 += x[xo + i + 2] * w[wo + i + 2];
        s3 += x[xo + i + 3] * w[wo + i + 3];
      }
      for (; i < inp; i++) s0 += x[xo + i] * w[wo + i];
      y[r * out + o] = s0 + s1 + s2 + s3 + (b ? b[o] : 0);
    }
  }
  return y;
}

function layerNorm(
  x: Float64Array,
  rows: number,
  n: number,
  g: Weights,
  b: Weights,
  eps: number,
): Float64Array {
  const y = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let mean = 0;
    for (let i = 0; i < n; i++) mean += x[r * n + i];
    mean /= n;
    let v = 0;
    for (let i = 0; i < n; i++) {
      const d = x[r * n + i] - mean;
      v += d * d;
    }
    const inv = 1 / Math.sqrt(v / n + eps);
    for (let i = 0; i < n; i++) y[r * n + i] = (x[r * n + i] - mean) * inv * g[i] + b[i];
  }
  return y;
}

/** erf in double precision: Maclaurin series for |x| < 3, erfc continued fraction beyond. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    // erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
    let term = ax;
    let sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 200; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    const r = (2 / Math.sqrt(Math.PI)) * sum;
    return x < 0 ? -r : r;
  }
  // erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
  let f = ax;
  for (let n = 80; n >= 1; n--) f = ax + n / 2 / f;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return x < 0 ? erfc - 1 : 1 - erfc;
}

function gelu(v: number): number {
  return 0.5 * v * (1 + erf(v / Math.SQRT2));
}

/**
 * Logits of BeitForImageClassification for one image, in float64.
 *
 * @param pixels pixel_values [1, C, S, S] (already normalized)
 * @example
 * const logits = referenceForward(ck.config, ck.tensors, pixels); // Float64Array of num_labels
 */
export function referenceForward(
  config: BeitConfig,
  sd: StateDict,
  pixels: Float32Array | Float64Array,
): Float64Array {
  const H = config.hidden_size;
  const I = config.intermediate_size;
  const nh = config.num_attention_heads;
  const hd = H / nh;
  const P = config.patch_size;
  const C = config.num_channels;
  const S = config.image_size;
  const W = S / P;
  const N = W * W;
  const T = N + 1;
  const eps = config.layer_norm_eps;

  // Patch embedding: Conv2d(C, H, kernel P, stride P) as a dot product per patch.
  const pw = get(sd, "beit.embeddings.patch_embeddings.projection.weight");
  const pb = get(sd, "beit.embeddings.patch_embeddings.projection.bias");
  const K = C * P * P;
  const patches = new Float64Array(N * K);
  for (let py = 0; py < W; py++)
    for (let px = 0; px < W; px++) {
      const p = py * W + px;
      for (let c = 0; c < C; c++)
        for (let ky = 0; ky < P; ky++)
          for (let kx = 0; kx < P; kx++)
            patches[p * K + c * P * P + ky * P + kx] = pixels[c * S * S + (py * P + ky) * S + px * P + kx];
    }
  const emb = linear(patches, N, K, pw, pb, H);
  let x = new Float64Array(T * H);
  x.set(get(sd, "beit.embeddings.cls_token"), 0);
  x.set(emb, H);

  const qh = new Float64Array(T * hd);
  const kh = new Float64Array(T * hd);
  const vh = new Float64Array(T * hd);
  const scores = new Float64Array(T);
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const k = `beit.encoder.layer.${l}`;
    const a = `${k}.attention.attention`;
    const h = layerNorm(
      x,
      T,
      H,
      get(sd, `${k}.layernorm_before.weight`),
      get(sd, `${k}.layernorm_before.bias`),
      eps,
    );
    const q = linear(h, T, H, get(sd, `${a}.query.weight`), get(sd, `${a}.query.bias`), H);
    const kk = linear(h, T, H, get(sd, `${a}.key.weight`), null, H);
    const v = linear(h, T, H, get(sd, `${a}.value.weight`), get(sd, `${a}.value.bias`), H);
    const table = get(sd, `${a}.relative_position_bias.relative_position_bias_table`);
    const index = getIndex(sd, `${a}.relative_position_bias.relative_position_index`);
    const ctx = new Float64Array(T * H);
    const scale = 1 / Math.sqrt(hd);
    for (let head = 0; head < nh; head++) {
      for (let t = 0; t < T; t++)
        for (let e = 0; e < hd; e++) {
          qh[t * hd + e] = q[t * H + head * hd + e];
          kh[t * hd + e] = kk[t * H + head * hd + e];
          vh[t * hd + e] = v[t * H + head * hd + e];
        }
      for (let i = 0; i < T; i++) {
        let max = Number.NEGATIVE_INFINITY;
        for (let j = 0; j < T; j++) {
          let s = 0;
          for (let e = 0; e < hd; e++) s += qh[i * hd + e] * kh[j * hd + e];
          // bias[head, i, j] = table[index[i, j], head]
          s = s * scale + table[Number(index[i * T + j]) * nh + head];
          scores[j] = s;
          if (s > max) max = s;
        }
        let z = 0;
        for (let j = 0; j < T; j++) {
          scores[j] = Math.exp(scores[j] - max);
          z += scores[j];
        }
        const base = i * H + head * hd;
        for (let j = 0; j < T; j++) {
          const p = scores[j] / z;
          for (let e = 0; e < hd; e++) ctx[base + e] += p * vh[j * hd + e];
        }
      }
    }
    const attnOut = linear(
      ctx,
      T,
      H,
      get(sd, `${k}.attention.output.dense.weight`),
      get(sd, `${k}.attention.output.dense.bias`),
      H,
    );
    const lam1 = get(sd, `${k}.lambda_1`);
    const x1 = new Float64Array(T * H);
    for (let t = 0; t < T; t++)
      for (let e = 0; e < H; e++) x1[t * H + e] = x[t * H + e] + lam1[e] * attnOut[t * H + e];
    const h2 = layerNorm(
      x1,
      T,
      H,
      get(sd, `${k}.layernorm_after.weight`),
      get(sd, `${k}.layernorm_after.bias`),
      eps,
    );
    const inter = linear(
      h2,
      T,
      H,
      get(sd, `${k}.intermediate.dense.weight`),
      get(sd, `${k}.intermediate.dense.bias`),
      I,
    );
    for (let i = 0; i < inter.length; i++) inter[i] = gelu(inter[i]);
    const out = linear(
      inter,
      T,
      I,
      get(sd, `${k}.output.dense.weight`),
      get(sd, `${k}.output.dense.bias`),
      H,
    );
    const lam2 = get(sd, `${k}.lambda_2`);
    for (let t = 0; t < T; t++) for (let e = 0; e < H; e++) x1[t * H + e] += lam2[e] * out[t * H + e];
    x = x1;
  }
  // Pooler: mean over patch tokens (CLS excluded), then layer norm; then the classifier.
  const pooled = new Float64Array(H);
  for (let t = 1; t < T; t++) for (let e = 0; e < H; e++) pooled[e] += x[t * H + e];
  for (let e = 0; e < H; e++) pooled[e] /= N;
  const pn = layerNorm(
    pooled,
    1,
    H,
    get(sd, "beit.pooler.layernorm.weight"),
    get(sd, "beit.pooler.layernorm.bias"),
    eps,
  );
  return linear(pn, 1, H, get(sd, "classifier.weight"), get(sd, "classifier.bias"), config.labels.length);
}
