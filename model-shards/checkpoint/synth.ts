/**
 * @module
 * Synthetic BEiT checkpoints: random weights in exactly the Hugging Face layout and naming of
 * BeitForImageClassification (keys, shapes, config.json, preprocessor_config.json), so that the
 * converter, the Worker and the benchmarks can run where the hub cannot be reached. `base` has the
 * real model's shapes (21,841 labels, ~102.6M parameters); `tiny` is a 4-layer, 64-wide model
 * made in milliseconds. Weights come from a seeded PRNG and are scaled so that activations stay
 * O(1) and logits are spread (std across classes of a few units), so top-k comparisons mean
 * something. config.json carries `"beit_edge_synthetic": true`.
 */
import { mkdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { AppError } from "../../src/shared/errors.ts";
import { Prng } from "../../src/shared/random.ts";
import { parseCommandLine } from "../args.ts";
import { parseBeitConfig } from "./config.ts";
import { numel } from "./dtypes.ts";
import { expectedTensorShapes, gridSide, isIndexKey, relativePositionIndex } from "./layout.ts";
import { writePytorchBin } from "./pytorch.ts";
import { writeSafetensors } from "./safetensors.ts";
import type { BeitConfig, StateDict } from "./types.ts";

/** A synthesized checkpoint, in memory. */
export interface SynthCheckpoint {
  /** The config.json object. */
  config: Record<string, unknown>;
  /** The preprocessor_config.json object. */
  preprocessor: Record<string, unknown>;
  tensors: StateDict;
}

export type SynthSize = "tiny" | "base";

export interface SynthOptions {
  size: SynthSize;
  /** PRNG seed (default 0). Same seed, same bytes. */
  seed?: number;
  /** Override the number of classes (default 21841 for base, 16 for tiny). */
  numLabels?: number;
  /**
   * Weight family (default "synth"). "synth": scaled so logits are spread and input-dependent
   * (see the module header). "torch": what a freshly constructed PyTorch BeitForImageClassification
   * holds before `_init_weights`: Linear and Conv2d weights and biases uniform in
   * +-1/sqrt(fan_in) (kaiming_uniform with a=sqrt(5)), LayerNorm weight 1 and bias 0, layer scale
   * lambda = config.layer_scale_init_value, CLS token and relative position bias tables 0 (both are
   * created with torch.zeros). A second family with different statistics for the int8 fidelity
   * benchmarks.
   *
   * "outlier": the "synth" weights with the channel statistics trained ViTs show (see
   * {@link injectOutliers}): a few residual-stream channels with large offsets and large LayerNorm
   * gains and offsets in every layer, a few more LayerNorm channels with large gains, and a few MLP
   * channels that fire far above the rest. "massive": the "synth" weights with a few massive
   * residual values on one token (the CLS token), a large layer scale and a large-magnitude
   * classifier (logits spread over +-100). Both are families for testing int8 on statistics the
   * scheme was not tuned to; `strength` scales their departures from "synth".
   */
  init?: SynthInit;
  /** "outlier" and "massive" only: how strong the outliers are (default 1; 2 doubles them). */
  strength?: number;
}

export const SYNTH_INITS = ["synth", "torch", "outlier", "massive"] as const;
export type SynthInit = (typeof SYNTH_INITS)[number];

const SIZES: Record<
  SynthSize,
  { hidden: number; layers: number; heads: number; mlp: number; labels: number }
> = {
  base: { hidden: 768, layers: 12, heads: 12, mlp: 3072, labels: 21841 },
  tiny: { hidden: 64, layers: 4, heads: 4, mlp: 128, labels: 16 },
};

export { Prng } from "../../src/shared/random.ts";

const SYLLABLES = [
  "ka",
  "lo",
  "mi",
  "ne",
  "ru",
  "ta",
  "vi",
  "so",
  "pe",
  "du",
  "ga",
  "ri",
  "zo",
  "fe",
  "bu",
  "hi",
];

/**
 * Deterministic, obviously synthetic class names: "synthetic-<pseudo-word>-<id>".
 */
export function syntheticLabel(i: number): string {
  let h = Math.imul(i + 1, 0x9e3779b1) >>> 0;
  let word = "";
  for (let k = 0; k < 3; k++) {
    word += SYLLABLES[h & 15];
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
  }
  return `synthetic-${word}-${String(i).padStart(5, "0")}`;
}

/** The preprocessor_config.json the real hub repo ships (old feature-extractor style). */
export function hubPreprocessorConfig(image: number): Record<string, unknown> {
  return {
    crop_size: image,
    do_center_crop: false,
    do_normalize: true,
    do_resize: true,
    feature_extractor_type: "BeitFeatureExtractor",
    image_mean: [0.5, 0.5, 0.5],
    image_std: [0.5, 0.5, 0.5],
    reduce_labels: false,
    resample: 2,
    size: image,
  };
}

/**
 * The config.json of a synthetic checkpoint: the real checkpoint's options with synthetic labels
 * and the `beit_edge_synthetic` marker.
 */
export function synthConfig(opts: SynthOptions): Record<string, unknown> {
  const dims = SIZES[opts.size];
  if (!dims)
    throw new AppError(
      "invalid-arguments",
      400,
      `unknown size ${JSON.stringify(opts.size)}; use tiny or base.`,
    );
  const numLabels = opts.numLabels ?? dims.labels;
  if (!Number.isInteger(numLabels) || numLabels < 1)
    throw new AppError("invalid-arguments", 400, `numLabels must be a positive integer, got ${numLabels}.`);
  const id2label: Record<string, string> = {};
  const label2id: Record<string, number> = {};
  for (let i = 0; i < numLabels; i++) {
    const name = syntheticLabel(i);
    id2label[String(i)] = name;
    label2id[name] = i;
  }
  const config: Record<string, unknown> = {
    _name_or_path: `beit-edge/synthetic-beit-${opts.size}`,
    architectures: ["BeitForImageClassification"],
    attention_probs_dropout_prob: 0.0,
    auxiliary_channels: 256,
    drop_path_rate: 0.1,
    hidden_act: "gelu",
    hidden_dropout_prob: 0.0,
    hidden_size: dims.hidden,
    id2label,
    image_size: 224,
    initializer_range: 0.02,
    intermediate_size: dims.mlp,
    label2id,
    layer_norm_eps: 1e-12,
    layer_scale_init_value: 0.1,
    model_type: "beit",
    num_attention_heads: dims.heads,
    num_channels: 3,
    num_hidden_layers: dims.layers,
    out_indices: [3, 5, 7, 11],
    patch_size: 16,
    semantic_loss_ignore_index: 255,
    torch_dtype: "float32",
    use_absolute_position_embeddings: false,
    use_auxiliary_head: true,
    use_mask_token: false,
    use_mean_pooling: true,
    use_relative_position_bias: true,
    use_shared_relative_position_bias: false,
    vocab_size: 8192,
    beit_edge_synthetic: true,
    beit_edge_seed: opts.seed ?? 0,
    beit_edge_init: opts.init ?? "synth",
    ...(opts.init === "outlier" || opts.init === "massive" ? { beit_edge_strength: opts.strength ?? 1 } : {}),
  };
  return config;
}

/**
 * Makes a random-weight BeitForImageClassification checkpoint.
 *
 * @example
 * const ck = synthesize({ size: "tiny", seed: 1 });
 * await writeCheckpoint("/tmp/tiny", ck, "both");
 */
export function synthesize(opts: SynthOptions): SynthCheckpoint {
  const dims = SIZES[opts.size];
  const config = synthConfig(opts);
  const parsed = parseBeitConfig(config);
  const rng = new Prng(opts.seed ?? 0);
  const init = opts.init ?? "synth";
  if (!SYNTH_INITS.includes(init))
    throw new AppError(
      "invalid-arguments",
      400,
      `unknown init ${JSON.stringify(init)}; use ${SYNTH_INITS.join(", ")}.`,
    );
  const strength = opts.strength ?? 1;
  if (!(Number.isFinite(strength) && strength > 0 && strength <= 10))
    throw new AppError("invalid-arguments", 400, `strength must be a number in (0, 10], got ${strength}.`);
  if (init === "torch")
    return { config, preprocessor: hubPreprocessorConfig(224), tensors: torchInit(parsed, rng) };
  const H = dims.hidden;
  const I = dims.mlp;
  const g = gridSide(parsed);
  const tensors: StateDict = new Map();
  for (const [key, shape] of expectedTensorShapes(parsed)) {
    if (isIndexKey(key)) {
      tensors.set(key, { dtype: "I64", shape, data: relativePositionIndex(g) });
      continue;
    }
    const n = numel(shape);
    const data = new Float32Array(n);
    const normal = (std: number, mean = 0) => {
      for (let i = 0; i < n; i++) data[i] = mean + std * rng.normal();
    };
    const leaf = key.slice(key.lastIndexOf(".") + 1);
    if (key === "beit.embeddings.cls_token") normal(1);
    else if (key.includes("patch_embeddings.projection.weight")) normal(Math.sqrt(3 / (3 * 16 * 16)));
    else if (leaf === "lambda_1" || leaf === "lambda_2")
      for (let i = 0; i < n; i++) data[i] = 0.1 + 0.4 * rng.next();
    else if (key.endsWith("relative_position_bias_table")) normal(1);
    else if (key.includes("layernorm") && leaf === "weight") normal(0.1, 1);
    else if (key.includes("layernorm") && leaf === "bias") normal(0.02);
    else if (key === "classifier.weight") normal(4 / Math.sqrt(H));
    else if (key === "classifier.bias") normal(0.5);
    else if (key.endsWith("output.dense.weight") && !key.includes("attention")) {
      normal(Math.sqrt(2 / I));
      // Zero-mean rows: GELU's positive mean would otherwise add the same vector to every token
      // and image, and the pooled features (hence the top classes) would hardly depend on the input.
      for (let r = 0; r < H; r++) {
        let m = 0;
        for (let c = 0; c < I; c++) m += data[r * I + c];
        m /= I;
        for (let c = 0; c < I; c++) data[r * I + c] -= m;
      }
    } else if (leaf === "weight") normal(1 / Math.sqrt(H));
    else normal(0.02); // biases
    tensors.set(key, { dtype: "F32", shape, data });
  }
  // The outlier families draw from a generator of their own, so their base weights are exactly
  // the "synth" family's of the same seed.
  const extra = new Prng(((opts.seed ?? 0) ^ 0x5eed0017) >>> 0);
  if (init === "outlier") injectOutliers(parsed, tensors, extra, strength);
  if (init === "massive") injectMassive(parsed, tensors, extra, strength);
  return { config, preprocessor: hubPreprocessorConfig(224), tensors };
}

/** `count` distinct indices in [0, n), drawn from `rng`. */
function pick(rng: Prng, n: number, count: number): number[] {
  const out = new Set<number>();
  while (out.size < Math.min(count, n)) out.add(Math.floor(rng.next() * n));
  return [...out];
}

/**
 * The "outlier" family's departures from "synth", per the statistics reported for trained ViTs
 * (LayerNorm-input channel ranges differing by 10-100x, a few residual channels with large offsets
 * and gains, a few MLP channels far above the rest). At strength s:
 * - max(2, H/128) residual channels carry an offset of +-8s from the embeddings on (patch bias and
 *   CLS token), topped up by +-s in every MLP output bias;
 * - in every LayerNorm before attention and MLP, those channels and max(2, H/96) others get a gain
 *   of 1 + (14..39) s and an offset of +-2s; the next Linear's columns for them are divided by
 *   sqrt(gain), so they carry weight in the output without drowning it;
 * - max(2, I/256) MLP channels per layer have their fc1 rows scaled by 1 + 7s and bias +2s (they
 *   fire ~8x above the rest after GELU), their fc2 columns halved.
 */
export function injectOutliers(config: BeitConfig, tensors: StateDict, rng: Prng, s: number): void {
  const H = config.hidden_size;
  const I = config.intermediate_size;
  const t = (key: string) => tensors.get(key)?.data as Float32Array;
  const residual = pick(rng, H, Math.max(2, Math.round(H / 128)));
  const sign = residual.map(() => (rng.next() < 0.5 ? -1 : 1));
  const pb = t("beit.embeddings.patch_embeddings.projection.bias");
  const cls = t("beit.embeddings.cls_token");
  for (const [k, c] of residual.entries()) {
    pb[c] += 8 * s * sign[k];
    cls[c] += 8 * s * sign[k];
  }
  for (let l = 0; l < config.num_hidden_layers; l++) {
    const k = `beit.encoder.layer.${l}`;
    const b2 = t(`${k}.output.dense.bias`);
    for (const [j, c] of residual.entries()) b2[c] += s * sign[j];
    for (const [ln, next] of [
      [
        "layernorm_before",
        ["attention.attention.query", "attention.attention.key", "attention.attention.value"],
      ],
      ["layernorm_after", ["intermediate.dense"]],
    ] as const) {
      const gain = t(`${k}.${ln}.weight`);
      const bias = t(`${k}.${ln}.bias`);
      for (const c of [...residual, ...pick(rng, H, Math.max(2, Math.round(H / 96)))]) {
        const g = 1 + (14 + 25 * rng.next()) * s;
        gain[c] *= g;
        bias[c] += 2 * s * (rng.next() < 0.5 ? -1 : 1);
        for (const name of next) {
          const w = t(`${k}.${name}.weight`);
          const out = w.length / H;
          for (let o = 0; o < out; o++) w[o * H + c] /= Math.sqrt(g);
        }
      }
    }
    const w1 = t(`${k}.intermediate.dense.weight`);
    const b1 = t(`${k}.intermediate.dense.bias`);
    const w2 = t(`${k}.output.dense.weight`);
    for (const c of pick(rng, I, Math.max(2, Math.round(I / 256)))) {
      for (let i = 0; i < H; i++) w1[c * H + i] *= 1 + 7 * s;
      b1[c] += 2 * s;
      for (let o = 0; o < H; o++) w2[o * I + c] *= 0.5;
    }
  }
}

/**
 * The "massive" family's departures from "synth" at strength s: two residual channels of the CLS
 * token hold +-40s (a token whose values dwarf every other token's, as trained ViTs show on a few
 * tokens), layer scale lambda in 0.5..1.5 (instead of 0.1..0.5), and a classifier 6x larger
 * (logits over +-100).
 */
export function injectMassive(config: BeitConfig, tensors: StateDict, rng: Prng, s: number): void {
  const t = (key: string) => tensors.get(key)?.data as Float32Array;
  const cls = t("beit.embeddings.cls_token");
  for (const c of pick(rng, config.hidden_size, 2)) cls[c] += 40 * s * (rng.next() < 0.5 ? -1 : 1);
  for (let l = 0; l < config.num_hidden_layers; l++)
    for (const name of ["lambda_1", "lambda_2"]) {
      const lam = t(`beit.encoder.layer.${l}.${name}`);
      for (let i = 0; i < lam.length; i++) lam[i] = 0.5 + rng.next();
    }
  for (const key of ["classifier.weight", "classifier.bias"]) {
    const w = t(key);
    for (let i = 0; i < w.length; i++) w[i] *= 6 * Math.min(s, 2);
  }
}

/** The "torch" family of {@link SynthOptions.init}. */
function torchInit(config: ReturnType<typeof parseBeitConfig>, rng: Prng): StateDict {
  const tensors: StateDict = new Map();
  const g = gridSide(config);
  const H = config.hidden_size;
  const I = config.intermediate_size;
  const fanIn = (key: string): number => {
    if (key.includes("patch_embeddings.projection")) return config.num_channels * config.patch_size ** 2;
    if (key.endsWith("output.dense.weight") || key.endsWith("output.dense.bias"))
      return key.includes("attention") ? H : I;
    return H;
  };
  for (const [key, shape] of expectedTensorShapes(config)) {
    if (isIndexKey(key)) {
      tensors.set(key, { dtype: "I64", shape, data: relativePositionIndex(g) });
      continue;
    }
    const data = new Float32Array(numel(shape));
    const leaf = key.slice(key.lastIndexOf(".") + 1);
    if (leaf === "lambda_1" || leaf === "lambda_2") data.fill(config.layer_scale_init_value);
    else if (key.includes("layernorm")) data.fill(leaf === "weight" ? 1 : 0);
    else if (key === "beit.embeddings.cls_token" || key.endsWith("relative_position_bias_table"))
      data.fill(0);
    else {
      const bound = 1 / Math.sqrt(fanIn(key));
      for (let i = 0; i < data.length; i++) data[i] = (rng.next() * 2 - 1) * bound;
    }
    tensors.set(key, { dtype: "F32", shape, data });
  }
  return tensors;
}

export type CheckpointFormat = "bin" | "safetensors" | "both";

/**
 * Writes a checkpoint directory: config.json, preprocessor_config.json, and pytorch_model.bin
 * and/or model.safetensors. Tensor bytes are streamed, never concatenated in memory.
 */
export async function writeCheckpoint(
  dir: string,
  ck: SynthCheckpoint,
  format: CheckpointFormat,
): Promise<void> {
  if (format !== "bin" && format !== "safetensors" && format !== "both")
    throw new AppError(
      "invalid-arguments",
      400,
      `unknown format ${JSON.stringify(format)}; use bin, safetensors or both.`,
    );
  await mkdir(dir, { recursive: true });
  // Each file is written under a temporary name and renamed when complete, so an interrupted
  // run never leaves a truncated file that looks like a checkpoint.
  const atomic = async (name: string, write: (tmp: string) => Promise<void>) => {
    const tmp = join(dir, `.${name}.${process.pid}.partial`);
    try {
      await write(tmp);
      await rename(tmp, join(dir, name));
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  };
  await atomic("config.json", (p) => writeFile(p, `${JSON.stringify(ck.config, null, 2)}\n`));
  await atomic("preprocessor_config.json", (p) =>
    writeFile(p, `${JSON.stringify(ck.preprocessor, null, 2)}\n`),
  );
  if (format !== "safetensors") await atomic("pytorch_model.bin", (p) => writePytorchBin(p, ck.tensors));
  if (format !== "bin")
    await atomic("model.safetensors", (p) => writeSafetensors(p, ck.tensors, { format: "pt" }));
}

function usage(what: string): AppError {
  return new AppError(
    "invalid-arguments",
    400,
    `${what}. Usage: npm run model -- synth --size tiny|base --out DIR [--seed N] [--format bin|safetensors|both] [--init ${SYNTH_INITS.join("|")}] [--strength S]`,
  );
}

/**
 * `model synth`: parses argv (the words after "synth"), synthesizes and writes the checkpoint,
 * and prints one line saying what was written.
 */
export async function synthCommand(argv: string[]): Promise<void> {
  const names = ["size", "out", "seed", "format", "labels", "init", "strength"] as const;
  const { values: opts } = parseCommandLine(
    { args: argv, options: Object.fromEntries(names.map((n) => [n, { type: "string" as const }])) },
    usage,
  );
  if (opts.size !== "tiny" && opts.size !== "base") throw usage("--size must be tiny or base");
  if (!opts.out) throw usage("--out DIR is required");
  const seed = opts.seed === undefined ? 0 : Number(opts.seed);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
    throw usage(`--seed must be an integer 0..2^32-1, got ${opts.seed}`);
  const format = (opts.format ?? "both") as CheckpointFormat;
  if (!["bin", "safetensors", "both"].includes(format))
    throw usage("--format must be bin, safetensors or both");
  const numLabels = opts.labels === undefined ? undefined : Number(opts.labels);
  const init = (opts.init ?? "synth") as SynthInit;
  if (!SYNTH_INITS.includes(init)) throw usage(`--init must be one of ${SYNTH_INITS.join(", ")}`);
  const strength = opts.strength === undefined ? undefined : Number(opts.strength);
  if (strength !== undefined && !(Number.isFinite(strength) && strength > 0 && strength <= 10))
    throw usage(`--strength must be a number in (0, 10], got ${opts.strength}`);
  if (strength !== undefined && init !== "outlier" && init !== "massive")
    throw usage("--strength applies to --init outlier or massive only");
  const t0 = performance.now();
  const ck = synthesize({ size: opts.size, seed, numLabels, init, strength });
  await writeCheckpoint(opts.out, ck, format);
  let params = 0;
  for (const t of ck.tensors.values()) if (t.dtype !== "I64") params += t.data.length;
  const files: string[] = [];
  for (const f of ["pytorch_model.bin", "model.safetensors"]) {
    const s = await stat(join(opts.out, f)).catch(() => null);
    if (s && (format === "both" || (format === "bin") === (f === "pytorch_model.bin")))
      files.push(`${f} ${(s.size / 1e6).toFixed(1)} MB`);
  }
  process.stdout.write(
    `synthetic ${opts.size} checkpoint (${init} init${strength ? ` strength ${strength}` : ""}, seed ${seed}, ${(params / 1e6).toFixed(1)}M parameters, ${numLabels ?? SIZES[opts.size].labels} labels) written to ${opts.out}: ${files.join(", ")} in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`,
  );
}
