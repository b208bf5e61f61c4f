/**
 * @module
 * The shard planner: splits BEiT's encoder layers into pipeline stages so that each stage's
 * estimated isolate peak stays under a budget. Needs the config only (shapes), never weights.
 *
 * Peak model of one stage isolate (all figures in bytes), two phases that do not overlap:
 *   create     = WASM_BASE + weightBytes        (ORT's runtime and its copy of the weights)
 *              + weightBytes                    (the .weights body read from R2, held by
 *                                                onnxruntime-web until the session exists)
 *              + JS_HEAP_ALLOWANCE              (worker code, ORT glue, request buffers)
 *   run        = wasm heap + JS_HEAP_ALLOWANCE, where
 *   wasm heap  = WASM_BASE + weightBytes + activations (a run's scratch, measured per layer)
 *   peak       = max(create, run)
 * They do not overlap because the stage loader frees the shard bytes the moment the session
 * exists (ArrayBuffer transfer(0), src/inference/open-stage.ts) and only then grows the wasm heap
 * to the planned `wasm heap` in one step (the manifest's wasmHeapBytes, reserved before the first
 * run: src/inference/ort.ts reserveWasmHeap), so the heap ends at the plan, not at Emscripten's
 * next 20% growth step. The budget is the isolate limit (ISOLATE_LIMIT_BYTES in src/topology.ts,
 * 128 MiB) minus DEFAULT_MARGIN. The constants are calibrated against the smallest heap each
 * full-size stage's runs fit in (bench/stage-memory.ts: bisection over the reservation, fresh
 * process each) and checked by plan.test.ts.
 */

import { AppError } from "../src/shared/errors.ts";
import type { Precision } from "../src/shared/manifest.ts";
import { ISOLATE_LIMIT_BYTES } from "../src/topology.ts";
import { gridSide, numRelativeDistance } from "./checkpoint/layout.ts";
import type { BeitConfig } from "./checkpoint/types.ts";
import { MAX_OUTLIERS } from "./onnx/quantize.ts";

export const MiB = 1024 * 1024;
/** Cloudflare Workers' memory limit per isolate (the topology's one value). */
export const ISOLATE_LIMIT = ISOLATE_LIMIT_BYTES;
/** Safety margin below the isolate limit (estimate error, wasm growth steps, GC slack). */
export const DEFAULT_MARGIN = 16 * MiB;
/**
 * ORT's initial wasm memory (16 MiB: its runtime, graph and allocator state live inside it) plus
 * what session create leaves above the weights: measured 10.3-12.4 MiB above the weights after
 * create on the full-size stages, 16.4 for the one with the 16 MiB classifier (bench/stage-memory.ts).
 */
export const WASM_BASE = 16 * MiB;
/**
 * Wasm heap bytes per weight byte: ORT copies each initializer once (external data); int8
 * MatMulInteger weights are not prepacked on the wasm SIMD build, fp32 MatMul weights are (MLAS
 * packs B), so fp32 stages hold a second copy.
 */
export const WASM_WEIGHT_FACTOR: Record<Precision, number> = { int8: 1.0, fp32: 2.0 };
/**
 * A run's scratch, per encoder layer up to SCRATCH_LAYERS_CAP layers. Measured on full-size base
 * (bench/stage-memory.ts: the smallest heap two runs fit in, minus the weights, WASM_BASE and the
 * stage's input and output): 14.4 MiB for 2 layers + head, 16.5 for embed + 3 layers, 17.4 for 4,
 * 16.8 for 5, 17.0 for embed + 5. It does not keep growing with the layers (a run frees each
 * layer's buffers), so the estimate counts at most two layers' worth.
 */
export const SCRATCH_PER_LAYER = 9.5 * MiB;
export const SCRATCH_LAYERS_CAP = 2;
/** The classifier's scratch beside its logits (gathered input channels, int32 products). */
export const SCRATCH_HEAD = 3 * MiB;
/** The patch embedding's extra scratch (Conv on the pixels). */
export const SCRATCH_EMBED = 3 * MiB;
/** JS heap allowance of a stage isolate. */
export const JS_HEAP_ALLOWANCE = 8 * MiB;

/** Bytes of one stage's initializers, per part. */
export interface StageWeightParts {
  embeddings: number;
  perLayer: number;
  head: number;
  /** Shared by the stage's encoder layers (relative_position_index). */
  perStage: number;
  /**
   * int8: what splitting off outlier channels may add to a layer at most (gather indices, the
   * outlier product's column and migration scales, and for the MLP output projection column
   * sums); the outlier weights themselves move out of the ordinary product, so they add nothing. Counted in every estimate: which layers get outliers is known only after calibration.
   */
  perLayerOutliers: number;
  /** The same for the classifier. */
  headOutliers: number;
}

/** Initializer bytes as the graph builder lays them out (within a few hundred bytes of constants). */
export function weightParts(config: BeitConfig, precision: Precision): StageWeightParts {
  const H = config.hidden_size;
  const I = config.intermediate_size;
  const heads = config.num_attention_heads;
  const w = gridSide(config);
  const T = w * w + 1;
  const L = config.labels.length;
  const C = config.num_channels;
  const P = config.patch_size;
  // A linear [out, in]: fp32 weight + bias; int8 weight + float scale and bias per column.
  const lin = (out: number, inp: number, bias = true) =>
    precision === "fp32" ? 4 * out * inp + (bias ? 4 * out : 0) : out * inp + 4 * out + (bias ? 4 * out : 0);
  const rows = numRelativeDistance(w);
  // int8: the MLP output projection's asymmetric input codes also store colsum(Wq), float [H].
  const asymColSum = precision === "int8" ? 4 * H : 0;
  const perLayer =
    4 * 4 * H + lin(3 * H, H) + 4 * heads * rows + lin(H, H) + lin(I, H) + lin(H, I) + asymColSum;
  const embeddings = 4 * (H * C * P * P + H + H);
  const head = 4 * 2 * H + lin(L, H);
  // One relative_position_index [T, T] int32 per stage with encoder layers.
  const perStage = 4 * T * T;
  // Per split layer: gather indices (int32, every input channel once), the outlier product's
  // column scales and its channels' migration scales; an int8 outlier product of the MLP output
  // projection also stores column sums.
  const split = (out: number, inp: number, colSums = false) =>
    4 * inp + 4 * out + 4 * MAX_OUTLIERS + (colSums ? 4 * out : 0);
  const perLayerOutliers =
    precision === "int8" ? split(3 * H, H) + split(H, H) + split(I, H) + split(H, I, true) : 0;
  const headOutliers = precision === "int8" ? split(L, H) : 0;
  return { embeddings, perLayer, head, perStage, perLayerOutliers, headOutliers };
}

/**
 * Estimated scratch bytes a run needs inside the wasm heap for a stage: input and output, the
 * encoder layers' working buffers (scaled from full-size base by the widest activations, [T,
 * max(I, 3H)] floats and the attention scores), the patch embedding's, and the classifier's.
 */
export function activationBytes(
  config: BeitConfig,
  layers: number,
  head: boolean,
  embeddings = false,
): number {
  const H = config.hidden_size;
  const I = config.intermediate_size;
  const heads = config.num_attention_heads;
  const w = gridSide(config);
  const T = w * w + 1;
  const input = 4 * config.num_channels * config.image_size * config.image_size;
  let bytes = input + 2 * 4 * T * H;
  // Per layer, in proportion to the layer's widest activations: base (T 197, I 3072, 12 heads)
  // gives SCRATCH_PER_LAYER, smaller configs proportionally less.
  const widest = (c: { T: number; I: number; H: number; heads: number }) =>
    4 * c.T * Math.max(c.I, 3 * c.H) + 4 * c.heads * c.T * c.T;
  const perLayer =
    (SCRATCH_PER_LAYER * widest({ T, I, H, heads })) / widest({ T: 197, I: 3072, H: 768, heads: 12 });
  bytes += Math.min(layers, SCRATCH_LAYERS_CAP) * perLayer;
  // The Conv's im2col buffer and output, [C x P x P + H, T], relative to base's.
  const P = config.patch_size;
  if (embeddings)
    bytes += (SCRATCH_EMBED * T * (config.num_channels * P * P + H)) / (197 * (3 * 16 * 16 + 768));
  if (head) bytes += 4 * 4 * config.labels.length + (SCRATCH_HEAD * config.labels.length * H) / (21841 * 768);
  return Math.ceil(bytes);
}

/** One stage as planned. */
export interface PlannedStage {
  layers: [number, number];
  embeddings: boolean;
  head: boolean;
  weightBytes: number;
  wasmHeapBytes: number;
  estimatedPeakBytes: number;
}

export interface Plan {
  precision: Precision;
  stageBudgetBytes: number;
  marginBytes: number;
  stages: PlannedStage[];
}

/** The estimate for one stage; `head` defaults to "this stage ends at the last layer". */
export function estimateStage(
  config: BeitConfig,
  precision: Precision,
  from: number,
  to: number,
  head = to === config.num_hidden_layers,
  extra: ExtraBytes = {},
): PlannedStage {
  const parts = weightParts(config, precision);
  const embeddings = from === 0;
  let extraBytes = head ? (extra.head ?? 0) : 0;
  for (let l = from; l < to; l++) extraBytes += extra.layer?.(l) ?? 0;
  const weightBytes =
    extraBytes +
    (embeddings ? parts.embeddings : 0) +
    (to - from) * (parts.perLayer + parts.perLayerOutliers) +
    (to > from ? parts.perStage : 0) +
    (head ? parts.head + parts.headOutliers : 0);
  const resident = WASM_BASE + WASM_WEIGHT_FACTOR[precision] * weightBytes;
  // Whole MiB: the reservation the loader makes (a multiple of wasm's 64 KiB pages).
  const wasmHeapBytes =
    Math.ceil((resident + activationBytes(config, to - from, head, embeddings)) / MiB) * MiB;
  const create = resident + weightBytes + JS_HEAP_ALLOWANCE;
  const run = wasmHeapBytes + JS_HEAP_ALLOWANCE;
  return {
    layers: [from, to],
    embeddings,
    head,
    weightBytes,
    wasmHeapBytes,
    estimatedPeakBytes: Math.ceil(Math.max(create, run)),
  };
}

/**
 * The wasm heap to reserve for a built stage, from its actual weight bytes (the plan's estimate
 * holds the outlier-channel allowance, which calibration may not use): what the manifest's
 * `wasmHeapBytes` says.
 */
export function plannedWasmHeap(
  config: BeitConfig,
  precision: Precision,
  stage: PlannedStage,
  weightBytes: number,
): number {
  const { layers, head, embeddings } = stage;
  const bytes = WASM_BASE + WASM_WEIGHT_FACTOR[precision] * weightBytes;
  return Math.ceil((bytes + activationBytes(config, layers[1] - layers[0], head, embeddings)) / MiB) * MiB;
}

/** Weight bytes a build adds beyond {@link weightParts} (linear layers kept in float32). */
export interface ExtraBytes {
  /** Extra bytes of encoder layer `l`. */
  layer?: (l: number) => number;
  /** Extra bytes of the head. */
  head?: number;
}

export interface PlanOptions {
  /** Weight bytes beyond the int8 layout, per layer and for the head. */
  extra?: ExtraBytes;
  /** Per-stage budget; default ISOLATE_LIMIT - DEFAULT_MARGIN. */
  stageBudgetBytes?: number;
  /**
   * At most this many encoder layers per stage (default: no limit). The tiny test model's layers
   * are too small for a budget to split them, so its builds use 1 to exercise a multi-stage
   * pipeline.
   */
  maxLayersPerStage?: number;
}

interface Score {
  count: number;
  max: number;
}
const better = (a: Score, b: Score) => a.count < b.count || (a.count === b.count && a.max < b.max);

/**
 * Splits the layers into the fewest stages whose estimates fit the budget, and among those the
 * split whose largest stage is smallest (balanced). Stage 0 carries the embeddings, the last stage
 * the head; the head gets a stage of its own only when it fits with no encoder layer beside it.
 *
 * @example
 * const plan = planStages(config, "int8"); // plan.stages[i].layers, .estimatedPeakBytes
 */
export function planStages(config: BeitConfig, precision: Precision, opts: PlanOptions = {}): Plan {
  const budget = opts.stageBudgetBytes ?? ISOLATE_LIMIT - DEFAULT_MARGIN;
  const marginBytes = Math.max(0, ISOLATE_LIMIT - budget);
  const N = config.num_hidden_layers;
  const maxLayers = opts.maxLayersPerStage ?? N;
  // best[j]: head-less stages covering [0, j); prev[j]: where its last stage starts.
  const best: Score[] = Array.from({ length: N + 1 }, () => ({ count: Infinity, max: Infinity }));
  const prev = new Array<number>(N + 1).fill(-1);
  best[0] = { count: 0, max: 0 };
  for (let j = 1; j <= N; j++)
    for (let i = 0; i < j; i++) {
      if (!Number.isFinite(best[i].count) || j - i > maxLayers) continue;
      const est = estimateStage(config, precision, i, j, false, opts.extra).estimatedPeakBytes;
      if (est > budget) continue;
      const cand = { count: best[i].count + 1, max: Math.max(best[i].max, est) };
      if (better(cand, best[j])) {
        best[j] = cand;
        prev[j] = i;
      }
    }
  // The last stage: layers [i, N) plus the head, or the head alone after [0, N).
  let final: { from: number; score: Score } | null = null;
  for (let i = 0; i <= N; i++) {
    if (!Number.isFinite(best[i].count) || N - i > maxLayers) continue;
    const est = estimateStage(config, precision, i, N, true, opts.extra).estimatedPeakBytes;
    if (est > budget) continue;
    const cand = { count: best[i].count + 1, max: Math.max(best[i].max, est) };
    if (!final || better(cand, final.score)) final = { from: i, score: cand };
  }
  if (!final) {
    const one = estimateStage(config, precision, 0, Math.min(1, N), N <= 1);
    const head = estimateStage(config, precision, N, N, true);
    throw new AppError(
      "stage-budget-too-small",
      422,
      `No split fits a stage budget of ${(budget / MiB).toFixed(1)} MiB: a one-layer stage needs about ${(one.estimatedPeakBytes / MiB).toFixed(1)} MiB and the head alone ${(head.estimatedPeakBytes / MiB).toFixed(1)} MiB. Raise --stage-budget-mb or use --precision int8.`,
    );
  }
  const stages: PlannedStage[] = [estimateStage(config, precision, final.from, N, true, opts.extra)];
  for (let j = final.from; j > 0; j = prev[j])
    stages.unshift(estimateStage(config, precision, prev[j], j, false, opts.extra));
  return { precision, stageBudgetBytes: budget, marginBytes, stages };
}

/** A plan as a text table for the CLI. */
export function formatPlan(plan: Plan): string {
  const mb = (b: number) => (b / MiB).toFixed(1).padStart(7);
  const lines = [
    `precision ${plan.precision}, stage budget ${(plan.stageBudgetBytes / MiB).toFixed(1)} MiB (${ISOLATE_LIMIT / MiB} MiB - ${(plan.marginBytes / MiB).toFixed(1)} MiB margin)`,
    "stage  layers     parts             weights MiB  wasm heap MiB  est. peak MiB",
  ];
  plan.stages.forEach((s, i) => {
    const parts = [s.embeddings ? "embed" : "", `${s.layers[1] - s.layers[0]} layers`, s.head ? "head" : ""]
      .filter(Boolean)
      .join("+");
    lines.push(
      `${String(i).padStart(5)}  [${String(s.layers[0]).padStart(2)},${String(s.layers[1]).padStart(3)})  ${parts.padEnd(17)} ${mb(s.weightBytes)}      ${mb(s.wasmHeapBytes)}        ${mb(s.estimatedPeakBytes)}`,
    );
  });
  return lines.join("\n");
}
