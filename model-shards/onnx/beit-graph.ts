/**
 * @module
 * Builds the ONNX graph of one pipeline stage of BeitForImageClassification (transformers
 * semantics, opset 17): optional patch embedding + CLS token (stage 0), encoder layers
 * [from, to), optional head (mean pooling over patch tokens, pooler layer norm, classifier).
 *
 * Build-time folds, all exact in real arithmetic: Q, K and V are one [H, 3H] MatMul (key bias 0);
 * the 1/sqrt(head_dim) scale is folded into the query weight and bias; layer scale lambda_1 and
 * lambda_2 are folded into the attention output and MLP output projections. The relative position
 * bias stays a table: each layer stores it transposed, [heads, (2w-1)^2 + 3] (35 KiB for base),
 * and one relative_position_index [T, T] (int32) per stage (shared by every layer whose index is equal)
 * gathers it at run time into [heads, T, T]; a constant [heads, T, T] per layer would cost
 * 1.8 MiB per layer (21 MiB for base) of weights, wasm heap and R2 transfer.
 *
 * The graph comes already fused much as onnxruntime's own optimizer would leave it (q, k, v by one
 * Split, q k^T as com.microsoft FusedMatMul with transB, the exact erf GELU x/2 (1 + erf(x/sqrt 2))
 * as com.microsoft Gelu; ORT would also fold the bias Add into BiasGelu and one more Transpose per
 * layer), so that the Workers open it with graph optimisation disabled
 * (`Manifest.graphOptimization`): session create skips the optimizer's passes, and constant
 * folding can no longer turn the bias table back into a constant [heads, T, T] per layer in the
 * wasm heap (bench/README.md, "Session create").
 */

import { AppError } from "../../src/shared/errors.ts";
import type { Precision, TensorSpec } from "../../src/shared/manifest.ts";
import type { BeitConfig, StateDict, Tensor } from "../checkpoint/types.ts";
import { attr, GraphBuilder } from "./builder.ts";
import { DataType, type GraphDef } from "./proto.ts";
import {
  chooseOutlierChannels,
  DEFAULT_QUANT,
  MAX_OUTLIERS,
  type QuantOptions,
  quantizedLinear,
} from "./quantize.ts";

/** What to put in one stage. */
export interface StageGraphOptions {
  config: BeitConfig;
  tensors: StateDict;
  /** Encoder layers, half open. */
  layers: [number, number];
  embeddings: boolean;
  head: boolean;
  precision: Precision;
  quant?: QuantOptions;
  /**
   * Calibration graph: the output is not the stage's but, for every linear layer's input, its
   * per-channel mean over tokens, its per-channel mean of x^2 and its per-channel max |x| over
   * tokens (3 x inp values),
   * concatenated in the order of {@link StageGraph.probes}.
   */
  probeInputMeans?: boolean;
  /**
   * How the LayerNorm before attention and before the MLP meets its Linear (default: int8 builds
   * take quant.smoothLayerNorm, fp32 builds nothing). "fold" (a benchmark lever): gamma and beta go
   * into the Linear (W diag(gamma), b + W beta) and the LayerNorm only normalizes; a number alpha:
   * SmoothQuant's migration, s_j = a_j^alpha / max|W_:,j|^(1 - alpha) from the calibrated range a_j
   * of channel j (quant.inputStats), gamma and beta divided by s, W's columns multiplied by it.
   * Exact in real arithmetic either way. Those layers then take all their channels in one int8
   * product (no outlier channels).
   */
  layerNormMigration?: "fold" | number;
}

export interface StageGraph {
  graph: GraphDef;
  input: TensorSpec;
  output: TensorSpec;
  /** Sum of initializer bytes. */
  weightBytes: number;
  /** With probeInputMeans: which linear layer each slice (3 x length values) of the output belongs to. */
  probes: { prefix: string; length: number }[];
}

/** Tokens per image: patches + CLS. */
export function tokenCount(config: BeitConfig): number {
  const w = config.image_size / config.patch_size;
  return w * w + 1;
}

/** The stage input/output specs the pipeline uses. */
export function stageSpecs(
  config: BeitConfig,
  embeddings: boolean,
  head: boolean,
): { input: TensorSpec; output: TensorSpec } {
  const T = tokenCount(config);
  const H = config.hidden_size;
  const input: TensorSpec = embeddings
    ? {
        name: "pixel_values",
        shape: [1, config.num_channels, config.image_size, config.image_size],
        dtype: "float32",
      }
    : { name: "hidden_states", shape: [1, T, H], dtype: "float32" };
  const output: TensorSpec = head
    ? { name: "logits", shape: [1, config.labels.length], dtype: "float32" }
    : { name: "next_hidden_states", shape: [1, T, H], dtype: "float32" };
  return { input, output };
}

function need(tensors: StateDict, key: string, shape: number[]): Tensor {
  const t = tensors.get(key);
  if (!t)
    throw new AppError(
      "checkpoint-missing-tensor",
      422,
      `The checkpoint has no tensor "${key}". Is this a BeitForImageClassification checkpoint?`,
    );
  if (t.shape.join("x") !== shape.join("x"))
    throw new AppError(
      "checkpoint-bad-shape",
      422,
      `Tensor "${key}" has shape [${t.shape.join(", ")}], expected [${shape.join(", ")}] from config.json.`,
    );
  return t;
}

function f32(t: Tensor): Float32Array {
  if (!(t.data instanceof Float32Array))
    throw new AppError("checkpoint-bad-dtype", 422, "expected a float tensor");
  return t.data;
}

/** Transposes a row-major [rows, cols] matrix. */
export function transpose(m: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = m[r * cols + c];
  return out;
}

/** Refuses configs the graph cannot express. */
export function checkSupported(config: BeitConfig): void {
  const bad: string[] = [];
  if (config.use_absolute_position_embeddings) bad.push("use_absolute_position_embeddings=true");
  if (!config.use_relative_position_bias) bad.push("use_relative_position_bias=false");
  if (config.use_shared_relative_position_bias) bad.push("use_shared_relative_position_bias=true");
  if (!config.use_mean_pooling) bad.push("use_mean_pooling=false");
  if (config.hidden_act !== "gelu") bad.push(`hidden_act=${config.hidden_act}`);
  if (config.image_size % config.patch_size !== 0) bad.push("image_size not a multiple of patch_size");
  if (config.hidden_size % config.num_attention_heads !== 0) bad.push("hidden_size not a multiple of heads");
  if (bad.length)
    throw new AppError(
      "unsupported-config",
      422,
      `The graph builder does not support ${bad.join(", ")}; it handles BEiT with per-layer relative position bias and mean pooling (like microsoft/beit-base-patch16-224-pt22k-ft22k).`,
    );
}

/**
 * Gathers a layer's relative position bias: out[h, i, j] = table[index[i, j], h].
 */
export function gatherRelativeBias(
  table: Float32Array,
  index: BigInt64Array,
  heads: number,
  T: number,
): Float32Array {
  const out = new Float32Array(heads * T * T);
  const rows = table.length / heads;
  for (let i = 0; i < T * T; i++) {
    const r = Number(index[i]);
    if (r < 0 || r >= rows)
      throw new AppError(
        "checkpoint-bad-index",
        422,
        `relative_position_index has ${r}, table has ${rows} rows`,
      );
    for (let h = 0; h < heads; h++) out[h * T * T + i] = table[r * heads + h];
  }
  return out;
}

/**
 * Builds one stage's graph.
 *
 * @example
 * const { graph, input, output } = buildStageGraph({ config, tensors, layers: [0, 4], embeddings: true, head: false, precision: "int8" });
 */
export function buildStageGraph(opts: StageGraphOptions): StageGraph {
  const { config, tensors } = opts;
  checkSupported(config);
  const q = opts.quant ?? DEFAULT_QUANT;
  const H = config.hidden_size;
  const I = config.intermediate_size;
  const heads = config.num_attention_heads;
  const d = H / heads;
  const T = tokenCount(config);
  const P = config.patch_size;
  const C = config.num_channels;
  const W = config.image_size / P;
  const L = config.labels.length;
  const eps = config.layer_norm_eps;
  const g = new GraphBuilder();
  const int8 = opts.precision === "int8";
  const { input, output: stageOutput } = stageSpecs(config, opts.embeddings, opts.head);
  const probes: { prefix: string; length: number; value: string }[] = [];

  const linear = (
    x: string,
    w: Float32Array,
    b: Float32Array | null,
    out: number,
    inp: number,
    prefix: string,
    lq: QuantOptions = q,
  ) => {
    if (opts.probeInputMeans) {
      const rows = g.op1("Reshape", [x, g.i64(`${prefix}_probe_shape`, [-1, inp])]);
      const reduce = { axes: attr.ints([0]), keepdims: attr.int(0) };
      const mean = g.op1("ReduceMean", [rows], reduce);
      const meanSquare = g.op1("ReduceMean", [g.op1("Mul", [rows, rows])], reduce);
      const absMax = g.op1("ReduceMax", [g.op1("Abs", [rows])], reduce);
      probes.push({
        prefix,
        length: inp,
        value: g.op1("Concat", [mean, meanSquare, absMax], { axis: attr.int(0) }),
      });
    }
    if (int8 && !(prefix === "classifier" && q.headFloat) && (q.select?.(prefix) ?? true))
      return quantizedLinear(g, x, w, b, out, inp, lq, prefix);
    const y = g.op1("MatMul", [x, g.f32(`${prefix}_w`, transpose(w, out, inp), [inp, out])]);
    return b ? g.op1("Add", [y, g.f32(`${prefix}_b`, b, [out])]) : y;
  };
  const layerNorm = (
    x: string,
    prefix: string,
    key: string,
    affine = {
      gamma: f32(need(tensors, `${key}.weight`, [H])),
      beta: f32(need(tensors, `${key}.bias`, [H])),
    },
  ) =>
    g.op1(
      "LayerNormalization",
      [x, g.f32(`${prefix}_g`, affine.gamma, [H]), g.f32(`${prefix}_b`, affine.beta, [H])],
      { axis: attr.int(-1), epsilon: attr.float(eps) },
    );
  /**
   * A LayerNorm followed by a Linear ([out, H] weight `w`, bias `b`), with the benchmark's
   * {@link StageGraphOptions.layerNormMigration} applied.
   */
  const normThenLinear = (
    x: string,
    lnPrefix: string,
    key: string,
    w: Float32Array,
    b: Float32Array,
    out: number,
    prefix: string,
  ) => {
    const gamma = f32(need(tensors, `${key}.weight`, [H]));
    const beta = f32(need(tensors, `${key}.bias`, [H]));
    // The shipped migration applies only where calibration shows outlier channels (where the layer
    // would otherwise split some off): elsewhere it would only move rounding around.
    const migrate =
      int8 &&
      q.smoothLayerNorm !== undefined &&
      (q.select?.(prefix) ?? true) &&
      outlierChannelsOf(q, prefix, w, out, H).length > 0;
    const how = opts.layerNormMigration ?? (migrate ? q.smoothLayerNorm : undefined);
    if (how === undefined) return linear(layerNorm(x, lnPrefix, key), w, b, out, H, prefix);
    const range = q.inputStats?.get(prefix)?.absMax;
    const s = new Float32Array(H);
    for (let j = 0; j < H; j++) {
      if (how === "fold") s[j] = gamma[j];
      else {
        if (!range) throw new Error(`layerNormMigration ${how} needs calibrated ranges for ${prefix}`);
        let wMax = 0;
        for (let o = 0; o < out; o++) wMax = Math.max(wMax, Math.abs(w[o * H + j]));
        s[j] = range[j] > 0 && wMax > 0 ? range[j] ** how / wMax ** (1 - how) : 1;
      }
    }
    // LN'(x) = LN(x) / s (gamma / s, beta / s); W' = W diag(s). For "fold", s = gamma, so the new
    // gamma is 1 and the new beta beta / gamma, which is then moved into the bias: b + W beta.
    const w2 = Float32Array.from(w, (v, i) => v * s[i % H]);
    const b2 = Float32Array.from(b);
    let beta2 = Float32Array.from(beta, (v, j) => v / s[j]);
    if (how === "fold") {
      for (let o = 0; o < out; o++) for (let j = 0; j < H; j++) b2[o] += w[o * H + j] * beta[j];
      beta2 = new Float32Array(H);
    }
    const ln = layerNorm(x, lnPrefix, key, {
      gamma: Float32Array.from(gamma, (v, j) => v / s[j]),
      beta: beta2,
    });
    const noOutliers = { ...q, outliers: new Map([...(q.outliers ?? new Map()), [prefix, []]]) };
    return int8 && (q.select?.(prefix) ?? true)
      ? quantizedLinear(g, ln, w2, b2, out, H, noOutliers, prefix)
      : linear(ln, w2, b2, out, H, prefix);
  };

  let x = input.name;
  if (opts.embeddings) {
    const pw = f32(need(tensors, "beit.embeddings.patch_embeddings.projection.weight", [H, C, P, P]));
    const pb = f32(need(tensors, "beit.embeddings.patch_embeddings.projection.bias", [H]));
    const cls = f32(need(tensors, "beit.embeddings.cls_token", [1, 1, H]));
    const conv = g.op1("Conv", [x, g.f32("patch_w", pw, [H, C, P, P]), g.f32("patch_b", pb, [H])], {
      kernel_shape: attr.ints([P, P]),
      strides: attr.ints([P, P]),
    });
    const flat = g.op1("Reshape", [conv, g.i64("shape", [1, H, W * W])]);
    const tokens = g.op1("Transpose", [flat], { perm: attr.ints([0, 2, 1]) });
    x = g.op1("Concat", [g.f32("cls", cls, [1, 1, H]), tokens], { axis: attr.int(1) });
  }

  const [from, to] = opts.layers;
  if (from < 0 || to > config.num_hidden_layers || to < from)
    throw new AppError(
      "bad-stage",
      422,
      `Layer range [${from}, ${to}) is outside 0..${config.num_hidden_layers}.`,
    );
  const scale = 1 / Math.sqrt(d);
  const axis0 = g.i64("axis0", [0]);
  const qkvShape = g.i64("qkv_shape", [T, 3, heads, d]);
  const ctxShape = g.i64("ctx_shape", [1, T, H]);
  // relative_position_index initializers already emitted, so equal indices are stored once.
  const indexInits: { data: BigInt64Array; name: string }[] = [];
  for (let l = from; l < to; l++) {
    const k = `beit.encoder.layer.${l}`;
    const a = `${k}.attention.attention`;
    const lam1 = f32(need(tensors, `${k}.lambda_1`, [H]));
    const lam2 = f32(need(tensors, `${k}.lambda_2`, [H]));
    // Fused QKV weight [3H, H] in PyTorch layout; query rows pre-scaled by 1/sqrt(d).
    const wq = f32(need(tensors, `${a}.query.weight`, [H, H]));
    const bq = f32(need(tensors, `${a}.query.bias`, [H]));
    const wk = f32(need(tensors, `${a}.key.weight`, [H, H]));
    const wv = f32(need(tensors, `${a}.value.weight`, [H, H]));
    const bv = f32(need(tensors, `${a}.value.bias`, [H]));
    const wqkv = new Float32Array(3 * H * H);
    for (let i = 0; i < H * H; i++) wqkv[i] = wq[i] * scale;
    wqkv.set(wk, H * H);
    wqkv.set(wv, 2 * H * H);
    const bqkv = new Float32Array(3 * H);
    for (let i = 0; i < H; i++) bqkv[i] = bq[i] * scale;
    bqkv.set(bv, 2 * H);
    const rows = (2 * W - 1) * (2 * W - 1) + 3;
    const table = f32(
      need(tensors, `${a}.relative_position_bias.relative_position_bias_table`, [rows, heads]),
    );
    const indexT = need(tensors, `${a}.relative_position_bias.relative_position_index`, [T, T]);
    if (!(indexT.data instanceof BigInt64Array))
      throw new AppError(
        "checkpoint-bad-dtype",
        422,
        `${a}.relative_position_bias.relative_position_index must be int64`,
      );
    const index = indexT.data;
    for (let i = 0; i < index.length; i++)
      if (index[i] < 0n || index[i] >= BigInt(rows))
        throw new AppError(
          "checkpoint-bad-index",
          422,
          `relative_position_index has ${index[i]}, table has ${rows} rows`,
        );
    let indexName = indexInits.find((e) => e.data.every((v, i) => v === index[i]))?.name;
    if (!indexName) {
      indexName = g.i32(`l${l}_relpos_index`, Array.from(index, Number), [T, T]);
      indexInits.push({ data: index, name: indexName });
    }
    const relbias = g.op1(
      "Gather",
      [g.f32(`l${l}_relbias_table`, transpose(table, rows, heads), [heads, rows]), indexName],
      {
        axis: attr.int(1),
      },
    );

    const qkv = normThenLinear(x, `l${l}_ln1`, `${k}.layernorm_before`, wqkv, bqkv, 3 * H, `l${l}_qkv`);
    // [T, 3H] -> [3, heads, T, d] -> q, k, v [heads, T, d]; scores = q k^T with the transpose
    // done inside FusedMatMul (what ORT's own optimizer makes of a MatMul over a Transpose).
    const split = g.op1("Transpose", [g.op1("Reshape", [qkv, qkvShape])], { perm: attr.ints([1, 2, 0, 3]) });
    const [qh, kh, vh] = g
      .op("Split", [split], { axis: attr.int(0) }, 3)
      .map((t) => g.op1("Squeeze", [t, axis0]));
    const qk = g.op(
      "FusedMatMul",
      [qh, kh],
      { transB: attr.int(1), alpha: attr.float(1) },
      1,
      "com.microsoft",
    )[0];
    const scores = g.op1("Add", [qk, relbias]);
    const probs = g.op1("Softmax", [scores], { axis: attr.int(-1) });
    const ctx = g.op1("Transpose", [g.op1("MatMul", [probs, vh])], { perm: attr.ints([1, 0, 2]) });
    const ctxFlat = g.op1("Reshape", [ctx, ctxShape]);
    const wo = f32(need(tensors, `${k}.attention.output.dense.weight`, [H, H]));
    const bo = f32(need(tensors, `${k}.attention.output.dense.bias`, [H]));
    const wo2 = new Float32Array(H * H);
    for (let o = 0; o < H; o++) for (let i = 0; i < H; i++) wo2[o * H + i] = wo[o * H + i] * lam1[o];
    const bo2 = bo.map((v, o) => v * lam1[o]);
    x = g.op1("Add", [x, linear(ctxFlat, wo2, bo2, H, H, `l${l}_attn_out`)]);

    let w1 = f32(need(tensors, `${k}.intermediate.dense.weight`, [I, H]));
    let b1 = f32(need(tensors, `${k}.intermediate.dense.bias`, [I]));
    const w2 = f32(need(tensors, `${k}.output.dense.weight`, [H, I]));
    const b2 = f32(need(tensors, `${k}.output.dense.bias`, [H]));
    let w22: Float32Array = new Float32Array(H * I);
    for (let o = 0; o < H; o++) for (let i = 0; i < I; i++) w22[o * I + i] = w2[o * I + i] * lam2[o];
    const b22 = b2.map((v, o) => v * lam2[o]);
    // The MLP's hidden channels can be put in any order (fc1's rows and fc2's columns together,
    // exact): the MLP output projection's outlier channels go last, so its int8 product takes the
    // ordinary channels with one Slice instead of a Gather (which onnxruntime does one element at
    // a time: 17-19 ms on [197, 3072] here, against ~1 ms).
    const fc2 = `l${l}_fc2`;
    let fc2Quant = q;
    const fc2Outliers = int8 && (q.select?.(fc2) ?? true) ? outlierChannelsOf(q, fc2, w22, H, I) : [];
    if (fc2Outliers.length) {
      const perm = tailPermutation(fc2Outliers, I);
      w1 = permuteRows(w1, I, H, perm);
      b1 = Float32Array.from(perm, (p) => b1[p]);
      w22 = permuteColumns(w22, H, I, perm);
      fc2Quant = permutedQuant(q, fc2, perm, fc2Outliers.length);
    }
    const h1 = normThenLinear(x, `l${l}_ln2`, `${k}.layernorm_after`, w1, b1, I, `l${l}_fc1`);
    // Exact erf GELU, x/2 (1 + erf(x/sqrt 2)), as one kernel (ORT's contrib Gelu).
    const gelu = g.op("Gelu", [h1], {}, 1, "com.microsoft")[0];
    x = g.op1("Add", [x, linear(gelu, w22, b22, H, I, fc2, fc2Quant)]);
  }

  if (opts.head) {
    const patches = g.op1("Slice", [x, g.i64("start", [1]), g.i64("end", [T]), g.i64("axes", [1])]);
    const pooled = g.op1("ReduceMean", [patches], { axes: attr.ints([1]), keepdims: attr.int(0) });
    const pn = layerNorm(pooled, "pooler_ln", "beit.pooler.layernorm");
    const wc = f32(need(tensors, "classifier.weight", [L, H]));
    const bc = f32(need(tensors, "classifier.bias", [L]));
    x = linear(pn, wc, bc, L, H, "classifier");
  }
  let output = stageOutput;
  if (opts.probeInputMeans) {
    const total = probes.reduce((a, p) => a + 3 * p.length, 0);
    output = { name: "input_means", shape: [total], dtype: "float32" };
    x = probes.length
      ? g.op1(
          "Concat",
          probes.map((p) => p.value),
          { axis: attr.int(0) },
        )
      : g.op1("Identity", [x]);
  }
  if (x === input.name) x = g.op1("Identity", [x]);
  g.rename(x, output.name);
  const graph = g.graph(
    `beit_stage_${opts.embeddings ? "embed_" : ""}${from}_${to}${opts.head ? "_head" : ""}`,
    [{ name: input.name, elemType: DataType.FLOAT, shape: input.shape }],
    [{ name: output.name, elemType: DataType.FLOAT, shape: output.shape }],
  );
  return {
    graph,
    input,
    output,
    weightBytes: g.initializerBytes(),
    probes: probes.map(({ prefix, length }) => ({ prefix, length })),
  };
}

/** The outlier channels `quantizedLinear` would choose for a layer (none without calibration). */
function outlierChannelsOf(
  q: QuantOptions,
  prefix: string,
  w: Float32Array,
  out: number,
  inp: number,
): number[] {
  const given = q.outliers?.get(prefix);
  if (given) return [...given];
  const stats = q.inputStats?.get(prefix);
  if (!stats || q.simulate) return [];
  const precision = q.floatOutliers?.has(prefix) ? "fp32" : (q.outlierPrecision ?? "w8");
  const maxK = (q.maxOutliers ?? MAX_OUTLIERS) * (q.floatOutliers?.has(prefix) ? 2 : 1);
  return chooseOutlierChannels(w, out, inp, stats.absMax, maxK, precision);
}

/** The order [ordinary channels..., outlier channels...] of `n` channels. */
function tailPermutation(outliers: readonly number[], n: number): number[] {
  const isOutlier = new Uint8Array(n);
  for (const c of outliers) isOutlier[c] = 1;
  return [...Array.from({ length: n }, (_, i) => i).filter((i) => !isOutlier[i]), ...outliers];
}

function permuteRows(m: Float32Array, rows: number, cols: number, perm: number[]): Float32Array {
  const out = new Float32Array(rows * cols);
  for (const [r, p] of perm.entries()) out.set(m.subarray(p * cols, (p + 1) * cols), r * cols);
  return out;
}

function permuteColumns(m: Float32Array, rows: number, cols: number, perm: number[]): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (const [c, p] of perm.entries()) out[r * cols + c] = m[r * cols + p];
  return out;
}

/** `q` for a layer whose input channels were reordered by `perm`: statistics follow, outliers are the tail. */
function permutedQuant(q: QuantOptions, prefix: string, perm: number[], outliers: number): QuantOptions {
  const stats = q.inputStats?.get(prefix);
  const mean = q.inputMeans?.get(prefix);
  const tail = perm.length - outliers;
  const pick = (a: Float32Array) => Float32Array.from(perm, (p) => a[p]);
  return {
    ...q,
    outliers: new Map([...(q.outliers ?? []), [prefix, perm.slice(tail).map((_, k) => tail + k)]]),
    ...(stats
      ? {
          inputStats: new Map([
            ...(q.inputStats ?? []),
            [prefix, { absMax: pick(stats.absMax), meanSquare: pick(stats.meanSquare) }],
          ]),
        }
      : {}),
    ...(mean ? { inputMeans: new Map([...(q.inputMeans ?? []), [prefix, pick(mean)]]) } : {}),
  };
}
