/**
 * @module
 * int8 linear layers for onnxruntime-web's wasm backend.
 *
 * Weights: symmetric, per output channel, zero point 0, stored int8 as [in, out]. `weightBits` 8
 * uses [-127, 127]; 7 uses [-63, 63] ("reduce range"), which native onnxruntime on AVX2 CPUs
 * without VNNI computes exactly (its u8 x s8 pair sums saturate int16 with full-range weights);
 * onnxruntime-web is exact either way.
 *
 * Activations, quantized at run time, two schemes:
 * - "per-tensor": DynamicQuantizeLinear (asymmetric uint8, one scale and zero point per tensor),
 *   MatMulInteger, then one float multiply by activation scale x weight scale per column.
 * - "per-row": one symmetric scale per token row, max|x| / 127, built from Abs, ReduceMax, Div,
 *   Round, Add 128, Clip, Cast to uint8 with a scalar zero point 128; MatMulInteger, then multiply
 *   by the row scales and the column scales. Outlier tokens no longer coarsen every other row.
 */
import { attr, type GraphBuilder } from "./builder.ts";
import { DataType } from "./proto.ts";

export type ActivationScheme = "per-tensor" | "per-row";

/** How linear layers are quantized. */
export interface QuantOptions {
  activation: ActivationScheme;
  weightBits: 7 | 8;
  /** Keep the classifier in float32 (default false: it is the largest tensor, int8 it). */
  headFloat?: boolean;
  /**
   * Per-row activations only: which linear inputs get an asymmetric per-token range (scale
   * (max - min) / 255, zero point round(-min / scale)) instead of the symmetric max|x| / 127.
   * "gelu": the MLP output projection, whose input (GELU output, >= -0.17) is one-sided, so the
   * symmetric grid wastes half its codes; "all": every linear. Default "none".
   * MatMulInteger in onnxruntime takes only a scalar activation zero point, so the graph feeds
   * the codes with zero point 0 and subtracts zp_row x colsum(Wq) afterwards (exact in integers).
   */
  asymmetric?: "none" | "gelu" | "all";
  /**
   * Benchmarks only (per-layer error attribution): "weights" quantizes and dequantizes the
   * weights and runs a float MatMul on float activations; "activations" rounds the activations to
   * their int8 grid and keeps float weights; "both" does both (the int8 result up to float
   * accumulation order). Default: the real int8 graph.
   */
  simulate?: "weights" | "activations" | "both";
  /**
   * Bias correction: per linear layer (by prefix), the mean of its input per channel over tokens
   * and calibration images, measured on the fp32 graph ({@link calibrateInputMeans} in
   * calibrate.ts). The int8 weight error then adds no systematic shift: the bias becomes
   * b - (W_q - W) mean(x). Matters where inputs have a large common mean (after GELU).
   */
  inputMeans?: ReadonlyMap<string, Float32Array>;
  /**
   * Which layers the converter bias-corrects (it calibrates and fills `inputMeans`): "mlp-output"
   * (the MLP output projections, whose GELU inputs have a large common mean), "all", or "none".
   */
  biasCorrection?: "none" | "mlp-output" | "all";
  /** Which linear layers (by prefix, e.g. "l3_fc2", "classifier") to quantize; the rest stay float32. */
  select?: (prefix: string) => boolean;
  /**
   * Outlier channels, per linear layer (by prefix): input channels whose range dwarfs the others'
   * (chosen from calibration, {@link chooseOutlierChannels}). They are gathered out of the input and
   * multiplied on their own ({@link outlierPrecision}), so the per-token scale of the int8 product
   * is set by the ordinary channels and the weight scales by the ordinary columns.
   */
  outliers?: ReadonlyMap<string, readonly number[]>;
  /** How the outlier channels are multiplied (default "w8"; see {@link OutlierPrecision}). */
  outlierPrecision?: OutlierPrecision;
  /**
   * Per linear layer (by prefix), the calibrated statistics of each input channel (largest |x|,
   * mean of x^2). Where given and `outliers` names nothing for the layer, its outlier channels are
   * chosen from them ({@link chooseOutlierChannels}).
   */
  inputStats?: ReadonlyMap<string, { absMax: Float32Array; meanSquare: Float32Array }>;
  /**
   * Whether the converter calibrates outlier channels ("calibrated": it fills `inputStats`) or
   * builds one product per layer ("none").
   */
  outlierChannels?: "none" | "calibrated";
  /**
   * LayerNorm-fed layers (Q/K/V, MLP input) where calibration shows outlier channels: SmoothQuant's
   * migration strength alpha, folded into the LayerNorm's gain and offset (free at run time; see
   * StageGraphOptions.layerNormMigration); those layers then multiply every channel in one int8
   * product. Needs `inputStats`; unset: none (outlier channels are split off there too).
   */
  smoothLayerNorm?: number;
  /** At most this many outlier channels per layer (default {@link MAX_OUTLIERS}). */
  maxOutliers?: number;
  /**
   * Layers (by prefix) whose outlier channels are multiplied in float32 whatever
   * `outlierPrecision` says, with up to twice `maxOutliers` channels (the build's first tightening
   * step).
   */
  floatOutliers?: ReadonlySet<string>;
  /** Told about each quantized layer as the graph is built (for reports and tightening). */
  onLayer?: (info: LayerReport) => void;
}

/** What the graph builder did with one linear layer. */
export interface LayerReport {
  prefix: string;
  /** Input channels multiplied apart. */
  outliers: readonly number[];
  outlierPrecision: OutlierPrecision;
  /**
   * Estimated rounding noise of the layer's output relative to its signal (from the calibrated
   * input statistics; NaN without them): how the build ranks layers when it tightens.
   */
  noiseToSignal: number;
}

/**
 * The layer's output rounding noise relative to its signal, estimated from calibration: activation
 * rounding (a / 127)^2 / 12 per channel (a: its group's largest |x|) and weight rounding
 * (per output channel, (max |W_o,:| / 127)^2 / 12 per weight) carried through, against
 * sum_j ||W_:,j||^2 E[x_j^2]. A ranking, not a prediction: channels are taken as uncorrelated.
 */
export function noiseToSignal(
  w: Float32Array,
  out: number,
  inp: number,
  stats: { absMax: Float32Array; meanSquare: Float32Array },
  outliers: readonly number[],
  outlierPrecision: OutlierPrecision,
  weightBits: 7 | 8,
): number {
  const qmax = weightBits === 8 ? 127 : 63;
  const isOutlier = new Uint8Array(inp);
  for (const c of outliers) isOutlier[c] = 1;
  let aN = 0;
  let aO = 0;
  let msN = 0;
  let msO = 0;
  for (let i = 0; i < inp; i++)
    if (isOutlier[i]) {
      aO = Math.max(aO, stats.absMax[i]);
      msO += stats.meanSquare[i];
    } else {
      aN = Math.max(aN, stats.absMax[i]);
      msN += stats.meanSquare[i];
    }
  if (outlierPrecision !== "int8") aO = 0;
  if (outlierPrecision === "fp32") msO = 0;
  let signal = 0;
  let actNoise = 0;
  let weightNoise = 0;
  for (let o = 0; o < out; o++) {
    let maxN = 0;
    let maxO = 0;
    for (let i = 0; i < inp; i++) {
      const v = w[o * inp + i];
      signal += v * v * stats.meanSquare[i];
      actNoise += v * v * (isOutlier[i] ? aO * aO : aN * aN);
      if (isOutlier[i]) maxO = Math.max(maxO, Math.abs(v));
      else maxN = Math.max(maxN, Math.abs(v));
    }
    weightNoise += (maxN / qmax) ** 2 * msN + (maxO / qmax) ** 2 * msO;
  }
  return (actNoise / (127 * 127) + weightNoise) / 12 / Math.max(signal, 1e-30);
}

/**
 * How a layer's outlier channels are multiplied:
 * - "w8": "w8a16": their weights stay int8 (per output channel, scales of their own, each column
 *   migrated by a_j^alpha) and their activations are rounded to 16 bits per token row, multiplied
 *   as two exact int8 products ({@link int16RowProduct}); no extra weight bytes;
 * - "int8": a second int8 product with its own per-token and per-column scales, the channels
 *   evened out by a SmoothQuant-style migration inside the group;
 * - "fp32": float weights and activations (4 bytes per weight): the floor the benchmarks report.
 */
export type OutlierPrecision = "w8" | "int8" | "fp32";

/** Migration strengths tried per layer for the outlier channels' weights ("w8"). */
export const MIGRATION_STRENGTHS = [0, 0.25, 0.5, 0.75, 1];

/**
 * Per-column scales s_j = a_j^alpha for an [out, K] block of weights multiplied by float inputs of
 * range a_j and mean square m_j: the alpha of {@link MIGRATION_STRENGTHS} whose per-output-channel
 * int8 rounding of W s, divided back by s, leaves the least error sum_o,j (dW_oj)^2 m_j.
 */
export function migrationScales(
  w: Float32Array,
  out: number,
  K: number,
  absMax: readonly number[],
  meanSquare: readonly number[],
  weightBits: 7 | 8,
): Float32Array {
  let best: { err: number; s: Float32Array } | null = null;
  for (const alpha of MIGRATION_STRENGTHS) {
    const s = Float32Array.from(absMax, (a) => (a > 0 ? a ** alpha : 1));
    const ws = Float32Array.from(w, (v, i) => v * s[i % K]);
    const { q, scales } = quantizeWeight(ws, out, K, weightBits);
    let err = 0;
    for (let o = 0; o < out; o++)
      for (let k = 0; k < K; k++)
        err += ((q[k * out + o] * scales[o]) / s[k] - w[o * K + k]) ** 2 * meanSquare[k];
    if (!best || err < best.err) best = { err, s };
  }
  return best?.s ?? new Float32Array(K).fill(1);
}

/** Default cap on outlier channels per linear layer. */
export const MAX_OUTLIERS = 32;

/**
 * Picks the input channels of one linear layer to multiply apart, from their calibrated ranges
 * and the weights. With per-token scales, a token's activation rounding error is about
 * (max_j |x_j| / 127)^2 / 12 per channel, carried into the output through that channel's weight
 * column; so the layer's activation noise is proportional to a^2 sum_j ||W_:,j||^2, with a the
 * largest range in the group. Splitting off the K widest channels leaves
 *   a_K^2 sum_{normal} ||W_:,j||^2  +  a_0^2 sum_{outliers} ||W_:,j||^2   (int8 outlier product)
 *   a_K^2 sum_{normal} ||W_:,j||^2                                        (fp32 outlier product)
 * (a_K: the (K+1)-th widest range; the "w8" product's 16-bit activations count as free). K <= maxK
 * is the last K whose own channel still cuts the noise by 10%, and none is taken unless the split
 * at least halves the noise, so layers without outliers keep one product.
 * `w` is [out, inp].
 */
export function chooseOutlierChannels(
  w: Float32Array,
  out: number,
  inp: number,
  absMax: Float32Array,
  maxK = MAX_OUTLIERS,
  precision: OutlierPrecision = "w8",
): number[] {
  if (absMax.length !== inp) throw new Error(`input ranges have ${absMax.length} channels, the layer ${inp}`);
  const colNorm = new Float64Array(inp);
  for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) colNorm[i] += w[o * inp + i] * w[o * inp + i];
  const order = Array.from({ length: inp }, (_, i) => i).sort((a, b) => absMax[b] - absMax[a] || a - b);
  let normal = colNorm.reduce((a, v) => a + v, 0);
  let outl = 0;
  const a0 = absMax[order[0]] ** 2;
  const noise: number[] = [];
  const limit = Math.min(maxK, inp - 1);
  for (let k = 0; k <= limit; k++) {
    if (k > 0) {
      normal -= colNorm[order[k - 1]];
      outl += colNorm[order[k - 1]];
    }
    noise.push(absMax[order[k]] ** 2 * normal + (precision === "int8" ? a0 * outl : 0));
  }
  // K: up to the last channel whose own split still cut the noise by 10% or more. Channels in a
  // flat tail cut it by a percent or two each; they would cost a gather and product time for
  // almost nothing.
  let k = 0;
  for (let i = 1; i < noise.length; i++) if (noise[i] <= 0.9 * noise[i - 1]) k = i;
  if (!(noise[k] <= 0.5 * noise[0])) return [];
  return order.slice(0, k).sort((a, b) => a - b);
}

/** The scheme the converter ships (chosen by measurement; see the README section). */
export const DEFAULT_QUANT: QuantOptions = {
  activation: "per-row",
  weightBits: 8,
  asymmetric: "gelu",
  biasCorrection: "mlp-output",
  outlierChannels: "calibrated",
  smoothLayerNorm: 0.5,
};

/** Keeps the calibrated means of the layers `q.biasCorrection` names. */
export function selectBiasCorrection(
  q: QuantOptions,
  means: ReadonlyMap<string, Float32Array>,
): Map<string, Float32Array> {
  const which = q.biasCorrection ?? "none";
  return new Map(
    [...means].filter(([k]) => which === "all" || (which === "mlp-output" && k.endsWith("_fc2"))),
  );
}

/** Human-readable description for manifest.quantization. */
export function describeQuant(q: QuantOptions): string {
  const range = q.weightBits === 8 ? "[-127,127]" : "[-63,63] (7-bit)";
  const asym = q.asymmetric ?? "none";
  const act =
    q.activation === "per-row"
      ? asym === "all"
        ? "activations dynamic per token row (asymmetric uint8, scale (max-min)/255)"
        : asym === "gelu"
          ? "activations dynamic per token row (symmetric uint8, zero point 128, scale max|x|/127; asymmetric, scale (max-min)/255, for the MLP output projection's GELU input)"
          : "activations dynamic per token row (symmetric uint8, zero point 128, scale max|x|/127)"
      : "activations dynamic per tensor (DynamicQuantizeLinear, asymmetric uint8)";
  const bc = q.biasCorrection ?? "none";
  const corr =
    bc === "none"
      ? ""
      : `; bias correction (${bc === "all" ? "all linears" : "MLP output projections"}) from input means on calibration pictures`;
  const head = q.headFloat ? "classifier in float32" : "classifier int8 like the encoder";
  return `int8 MatMulInteger: weights symmetric per output channel ${range}; ${act}${corr}; ${head}; patch-embedding Conv, layer norms, attention score/context products, softmax and GELU in float32`;
}

/** Per-output-channel symmetric quantization of a [out, in] weight, returned transposed [in, out]. */
export function quantizeWeight(
  w: Float32Array,
  out: number,
  inp: number,
  bits: 7 | 8,
): { q: Int8Array; scales: Float32Array } {
  const qmax = bits === 8 ? 127 : 63;
  const q = new Int8Array(out * inp);
  const scales = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    let m = 0;
    const row = o * inp;
    for (let i = 0; i < inp; i++) m = Math.max(m, Math.abs(w[row + i]));
    const s = m > 0 ? m / qmax : 1;
    scales[o] = s;
    for (let i = 0; i < inp; i++) {
      const v = Math.round(w[row + i] / s);
      q[i * out + o] = Math.min(qmax, Math.max(-qmax, v));
    }
  }
  return { q, scales };
}

/**
 * Emits y = x W^T + b with int8 weights; `w` is the PyTorch [out, in] weight. Returns y's name.
 * When `xq` is given (a previous call's quantized activation for the same x), it is reused.
 */
export function quantizedLinear(
  g: GraphBuilder,
  x: string,
  w: Float32Array,
  bias: Float32Array | null,
  out: number,
  inp: number,
  opts: QuantOptions,
  prefix: string,
): string {
  const mean = opts.inputMeans?.get(prefix);
  const asym =
    opts.activation === "per-row" &&
    (opts.asymmetric === "all" || (opts.asymmetric === "gelu" && prefix.endsWith("_fc2")));
  const stats = opts.inputStats?.get(prefix);
  const outlierPrecision: OutlierPrecision = opts.floatOutliers?.has(prefix)
    ? "fp32"
    : (opts.outlierPrecision ?? "w8");
  const maxK = (opts.maxOutliers ?? MAX_OUTLIERS) * (opts.floatOutliers?.has(prefix) ? 2 : 1);
  const outliers =
    opts.outliers?.get(prefix) ??
    (stats && !opts.simulate ? chooseOutlierChannels(w, out, inp, stats.absMax, maxK, outlierPrecision) : []);
  opts.onLayer?.({
    prefix,
    outliers,
    outlierPrecision,
    noiseToSignal: stats
      ? noiseToSignal(w, out, inp, stats, outliers, outlierPrecision, opts.weightBits)
      : Number.NaN,
  });
  if (opts.simulate) {
    if (outliers.length) throw new Error("simulate does not model outlier channels");
    const { q, scales } = quantizeWeight(w, out, inp, opts.weightBits);
    const b =
      mean && opts.simulate !== "activations" ? correctBias(w, q, scales, bias, mean, out, inp) : bias;
    const y = simulatedLinear(g, x, w, q, scales, out, inp, opts, asym, prefix);
    return b ? g.op1("Add", [y, g.f32(`${prefix}_b`, b, [out])]) : y;
  }
  // wDeq: the weights the graph multiplies by, [out, inp] (for bias correction).
  const wDeq = new Float64Array(out * inp);
  let y: string;
  if (!outliers.length) {
    y = int8Product(g, x, w, out, inp, opts, asym, prefix, wDeq);
  } else {
    const isOutlier = new Uint8Array(inp);
    for (const c of outliers) {
      if (!Number.isInteger(c) || c < 0 || c >= inp || isOutlier[c])
        throw new Error(`${prefix}: outlier channel ${c} is not a distinct channel of ${inp}`);
      isOutlier[c] = 1;
    }
    const normal = Array.from({ length: inp }, (_, i) => i).filter((i) => !isOutlier[i]);
    const pickColumns = (cols: readonly number[]) => {
      const m = new Float32Array(out * cols.length);
      for (let o = 0; o < out; o++)
        for (const [k, c] of cols.entries()) m[o * cols.length + k] = w[o * inp + c];
      return m;
    };
    // The channels of each part: a Slice when the outliers are the last channels (the graph
    // builder orders the MLP's hidden channels so), else a Gather, which onnxruntime performs one
    // element at a time on the last axis (~1.2 ms on [197, 768] here, against ~0.05 for a Slice).
    const tail = outliers.every((c, k) => c === inp - outliers.length + k);
    const gather = (cols: readonly number[], name: string) =>
      tail
        ? g.op1("Slice", [
            x,
            g.i64(`${name}_start`, [cols[0]]),
            g.i64(`${name}_end`, [cols[0] + cols.length]),
            g.i64(`${name}_axes`, [-1]),
          ])
        : g.op1("Gather", [x, g.i32(name, cols)], { axis: attr.int(-1) });
    const scatter = (part: ArrayLike<number>, cols: readonly number[]) => {
      for (let o = 0; o < out; o++)
        for (const [k, c] of cols.entries()) wDeq[o * inp + c] = part[o * cols.length + k];
    };
    const partN = new Float64Array(out * normal.length);
    const yN = int8Product(
      g,
      gather(normal, `${prefix}_cols`),
      pickColumns(normal),
      out,
      normal.length,
      opts,
      asym,
      prefix,
      partN,
    );
    scatter(partN, normal);
    const wO = pickColumns(outliers);
    const xO = gather(outliers, `${prefix}_outlier_cols`);
    let yO: string;
    if (outlierPrecision === "w8") {
      // int8 weights dequantized at run time, float activations. Each outlier column is first
      // multiplied by s_j = a_j^alpha (a_j its channel's calibrated range; the channel divided by
      // it, exact in real arithmetic), so that each output channel's weight scale follows the
      // columns' contributions rather than their raw size. alpha per layer: the one of
      // MIGRATION_STRENGTHS with the least weight rounding error weighted by E[x_j^2].
      const K = outliers.length;
      const smooth = stats
        ? migrationScales(
            wO,
            out,
            K,
            outliers.map((c) => stats.absMax[c]),
            outliers.map((c) => stats.meanSquare[c]),
            opts.weightBits,
          )
        : new Float32Array(K).fill(1);
      const wS = Float32Array.from(wO, (v, i) => v * smooth[i % K]);
      const { q, scales } = quantizeWeight(wS, out, K, opts.weightBits);
      const xS = divideChannels(g, xO, smooth, prefix);
      yO = int16RowProduct(g, xS, g.i8(`${prefix}_outlier_wq`, q, [K, out]), scales, prefix);
      const partO = new Float64Array(out * K);
      for (let o = 0; o < out; o++)
        for (let k = 0; k < K; k++) partO[o * K + k] = (q[k * out + o] * scales[o]) / smooth[k];
      scatter(partO, outliers);
    } else if (outlierPrecision === "fp32") {
      yO = g.op1("MatMul", [
        xO,
        g.f32(`${prefix}_outlier_w`, transposed(wO, out, outliers.length), [outliers.length, out]),
      ]);
      scatter(wO, outliers);
    } else {
      // The outlier channels' ranges still differ by several times among themselves: each is
      // divided by s_j = sqrt(a_j / max|W_:,j|) and its weight column multiplied by it (exact in
      // real arithmetic), which evens out the group's activation ranges and weight columns alike
      // (SmoothQuant's migration with strength 1/2, inside the group).
      const K = outliers.length;
      const smooth = new Float32Array(K).fill(1);
      if (stats)
        for (const [k, c] of outliers.entries()) {
          let wMax = 0;
          for (let o = 0; o < out; o++) wMax = Math.max(wMax, Math.abs(wO[o * K + k]));
          if (wMax > 0 && stats.absMax[c] > 0) smooth[k] = Math.sqrt(stats.absMax[c] / wMax);
        }
      const wS = Float32Array.from(wO, (v, i) => v * smooth[i % K]);
      const xS = divideChannels(g, xO, smooth, prefix);
      const partO = new Float64Array(out * K);
      yO = int8Product(g, xS, wS, out, K, opts, asym, `${prefix}_outlier`, partO);
      for (let i = 0; i < partO.length; i++) partO[i] /= smooth[i % K];
      scatter(partO, outliers);
    }
    y = g.op1("Add", [yN, yO]);
  }
  const b = mean ? correctBiasDequantized(w, wDeq, bias, mean, out, inp) : bias;
  return b ? g.op1("Add", [y, g.f32(`${prefix}_b`, b, [out])]) : y;
}

function transposed(m: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = m[r * cols + c];
  return t;
}

/**
 * x W^T in int8 (no bias), per the activation scheme; fills `wDeq` ([out, inp]) with the
 * dequantized weights the product uses.
 */
function int8Product(
  g: GraphBuilder,
  x: string,
  w: Float32Array,
  out: number,
  inp: number,
  opts: QuantOptions,
  asym: boolean,
  prefix: string,
  wDeq: Float64Array,
): string {
  const { q, scales } = quantizeWeight(w, out, inp, opts.weightBits);
  for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) wDeq[o * inp + i] = q[i * out + o] * scales[o];
  const wq = g.i8(`${prefix}_wq`, q, [inp, out]);
  if (opts.activation === "per-tensor") {
    const [xq, xs, xzp] = g.op("DynamicQuantizeLinear", [x], {}, 3);
    const acc = g.op1("MatMulInteger", [xq, wq, xzp]);
    const accf = g.op1("Cast", [acc], { to: attr.int(DataType.FLOAT) });
    const colScale = g.f32(`${prefix}_ws`, scales, [out]);
    const scale = g.op1("Mul", [xs, colScale]);
    return g.op1("Mul", [accf, scale]);
  }
  const { codes, rowScale, rowZero } = rowQuantize(g, x, asym);
  const acc = g.op1("MatMulInteger", asym ? [codes, wq] : [codes, wq, g.u8("zp128", [128], [])]);
  let accf = g.op1("Cast", [acc], { to: attr.int(DataType.FLOAT) });
  if (rowZero) {
    const colSum = new Float32Array(out);
    for (let i = 0; i < inp; i++) for (let o = 0; o < out; o++) colSum[o] += q[i * out + o];
    accf = g.op1("Sub", [accf, g.op1("Mul", [rowZero, g.f32(`${prefix}_wsum`, colSum, [out])])]);
  }
  const colScaled = g.op1("Mul", [accf, g.f32(`${prefix}_ws`, scales, [out])]);
  return g.op1("Mul", [colScaled, rowScale]);
}

/**
 * x W^T for int8 weights `wq` ([inp, out], column scales `scales`) and activations rounded to 16
 * bits per token row: codes c = round(x / s), s = max|x| / 32767, split into a high byte
 * h = floor(c / 256) (fed as uint8 h + 128 with zero point 128) and a low byte l = c - 256 h (uint8,
 * zero point 0); two MatMulInteger products are summed in int32 as 256 acc_h + acc_l, exact, then
 * scaled once. For the few outlier channels: their activations keep 16 bits where the ordinary
 * product keeps 8, at the cost of two small integer products (a float MatMul of run-time
 * dequantized weights measured slower: onnxruntime repacks a non-constant B on every run).
 */
function int16RowProduct(
  g: GraphBuilder,
  x: string,
  wq: string,
  scales: Float32Array,
  prefix: string,
): string {
  const axes = { axes: attr.ints([-1]), keepdims: attr.int(1) };
  const rowMax = g.op1("ReduceMax", [g.op1("Abs", [x])], axes);
  const rowScale = g.op1("Max", [g.op1("Div", [rowMax, g.scalar("c32767", 32767)]), g.scalar("tiny", 1e-30)]);
  const codes = g.op1("Round", [g.op1("Div", [x, rowScale])]);
  const high = g.op1("Floor", [g.op1("Div", [codes, g.scalar("c256", 256)])]);
  const low = g.op1("Sub", [codes, g.op1("Mul", [high, g.scalar("c256", 256)])]);
  const toU8 = (v: string) => g.op1("Cast", [v], { to: attr.int(DataType.UINT8) });
  const accHigh = g.op1("MatMulInteger", [
    toU8(g.op1("Add", [high, g.scalar("c128", 128)])),
    wq,
    g.u8("zp128", [128], []),
  ]);
  const accLow = g.op1("MatMulInteger", [toU8(low), wq]);
  const acc = g.op1("Add", [g.op1("Mul", [accHigh, g.i32(`${prefix}_c256i`, [256], [])]), accLow]);
  const accf = g.op1("Cast", [acc], { to: attr.int(DataType.FLOAT) });
  return g.op1("Mul", [
    g.op1("Mul", [accf, g.f32(`${prefix}_outlier_ws`, scales, [scales.length])]),
    rowScale,
  ]);
}

/** x / s per channel (the activation side of a migration by s), as one Mul by 1 / s. */
function divideChannels(g: GraphBuilder, x: string, s: Float32Array, prefix: string): string {
  return g.op1("Mul", [
    x,
    g.f32(
      `${prefix}_outlier_smooth`,
      s.map((v) => 1 / v),
      [s.length],
    ),
  ]);
}

/** b - (W_deq - W) mean, with the dequantized weights as [out, inp]. */
function correctBiasDequantized(
  w: Float32Array,
  wDeq: Float64Array,
  b: Float32Array | null,
  mean: Float32Array,
  out: number,
  inp: number,
): Float32Array {
  if (mean.length !== inp) throw new Error(`input means have ${mean.length} channels, the layer ${inp}`);
  const corrected = new Float32Array(out);
  for (let o = 0; o < out; o++) {
    let shift = 0;
    for (let i = 0; i < inp; i++) shift += (wDeq[o * inp + i] - w[o * inp + i]) * mean[i];
    corrected[o] = (b ? b[o] : 0) - shift;
  }
  return corrected;
}

/** b - (W_q - W) mean: removes the weight rounding's mean effect on y (bias correction). */
export function correctBias(
  w: Float32Array,
  q: Int8Array,
  scales: Float32Array,
  b: Float32Array | null,
  mean: Float32Array,
  out: number,
  inp: number,
): Float32Array {
  const wDeq = new Float64Array(out * inp);
  for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) wDeq[o * inp + i] = q[i * out + o] * scales[o];
  return correctBiasDequantized(w, wDeq, b, mean, out, inp);
}

/**
 * Per-token-row activation codes: symmetric (uint8 = round(x / s) + 128, s = max|x| / 127) or
 * asymmetric (uint8 = round(x / s) + zp, s = (max - min) / 255, zp = round(-min / s), returned as
 * a float [rows, 1] tensor so the caller can subtract zp x colsum(Wq)).
 */
function rowQuantize(
  g: GraphBuilder,
  x: string,
  asym: boolean,
  wantFloat = false,
): { codes: string; rowScale: string; rowZero: string | null; float: string | null } {
  const axes = { axes: attr.ints([-1]), keepdims: attr.int(1) };
  let rowScale: string;
  let offset: string;
  let rowZero: string | null = null;
  if (asym) {
    const hi = g.op1("Max", [g.op1("ReduceMax", [x], axes), g.scalar("zero", 0)]);
    const lo = g.op1("Min", [g.op1("ReduceMin", [x], axes), g.scalar("zero", 0)]);
    const range = g.op1("Div", [g.op1("Sub", [hi, lo]), g.scalar("c255", 255)]);
    rowScale = g.op1("Max", [range, g.scalar("tiny", 1e-30)]);
    rowZero = g.op1("Round", [g.op1("Div", [g.op1("Neg", [lo]), rowScale])]);
    offset = rowZero;
  } else {
    const rowMax = g.op1("ReduceMax", [g.op1("Abs", [x])], axes);
    rowScale = g.op1("Max", [g.op1("Div", [rowMax, g.scalar("c127", 127)]), g.scalar("tiny", 1e-30)]);
    offset = g.scalar("c128", 128);
  }
  const shifted = g.op1("Add", [g.op1("Round", [g.op1("Div", [x, rowScale])]), offset]);
  const clipped = g.op1("Clip", [shifted, g.scalar("lo", 0), g.scalar("hi", 255)]);
  if (wantFloat) {
    // The dequantized activation, for the float simulation: (code - offset) x scale.
    const float = g.op1("Mul", [g.op1("Sub", [clipped, offset]), rowScale]);
    return { codes: "", rowScale, rowZero, float };
  }
  const codes = g.op1("Cast", [clipped], { to: attr.int(DataType.UINT8) });
  return { codes, rowScale, rowZero, float: null };
}

/** Float graph that applies only the weight or only the activation rounding (see `simulate`). */
function simulatedLinear(
  g: GraphBuilder,
  x: string,
  w: Float32Array,
  q: Int8Array,
  scales: Float32Array,
  out: number,
  inp: number,
  opts: QuantOptions,
  asym: boolean,
  prefix: string,
): string {
  const wt = new Float32Array(inp * out);
  if (opts.simulate !== "activations") for (let i = 0; i < inp * out; i++) wt[i] = q[i] * scales[i % out];
  else for (let o = 0; o < out; o++) for (let i = 0; i < inp; i++) wt[i * out + o] = w[o * inp + i];
  let xin = x;
  if (opts.simulate !== "weights") {
    if (opts.activation === "per-row") xin = rowQuantize(g, x, asym, true).float as string;
    else xin = g.op1("DequantizeLinear", g.op("DynamicQuantizeLinear", [x], {}, 3));
  }
  return g.op1("MatMul", [xin, g.f32(`${prefix}_wf`, wt, [inp, out])]);
}
