/**
 * @module
 * The classification core: image bytes (one or a batch) -> predictions, the model identity and
 * timings. Every Worker that classifies (the gateway's POST /v1/classify today; a queue consumer or
 * a proxy next) calls {@link createClassifier} with its env and its invocation's `waitUntil`, then
 * `classify()`; no HTTP sits in between. It owns: the active model (pointer -> manifest -> labels),
 * warming every stage while the first image decodes, the decode loop, the stage pipeline pinned to
 * one model version, top-k and the timings.
 *
 * Errors are thrown as AppError with the statuses /v1/classify answers with: 400
 * undecodable-image, 415 unsupported-format, 413 payload-too-large / image limits, 422
 * invalid-parameter (top_k), 503 model-unavailable (with retryAfter), 504 deadline-exceeded. A
 * queue consumer treats 503/504 as retryable and every 4xx as final.
 *
 * @example
 * import { createClassifier } from "../../classify/index.ts";
 * import { defaultDecoder } from "../../classify/decoder.ts";
 * const classifier = createClassifier(env, { decode: defaultDecoder, keepAlive: (p) => ctx.waitUntil(p) });
 * const { predictions, model } = await classifier.classify([bytes], { topK: 3 });
 */
import { configOf } from "../edge/config.ts";
import type { ClassifierEnv } from "../edge/env.ts";
import { Deadline } from "../edge/limits.ts";
import { topK as topKOf } from "../inference/pipeline.ts";
import type { KeepAlive } from "../shards/store.ts";
import { AppError } from "../shared/errors.ts";
import type { PreprocessSpec } from "../shared/manifest.ts";
import { activeModel, identityOf, type ModelIdentity, type ModelView } from "./model-state.ts";
import { StagePipeline, type StageReport } from "./pipeline.ts";

export type { ClassifierEnv } from "../edge/env.ts";
export type { ModelIdentity, ModelView } from "./model-state.ts";
export { modelHeaders } from "./model-state.ts";
export type { StageReport } from "./pipeline.ts";

/** Decodes image bytes into NCHW float32 pixel_values for the model's preprocessing. */
export type PixelDecoder = (
  bytes: Uint8Array,
  spec: PreprocessSpec,
  opts: { exifTranspose: boolean },
) => Promise<{
  pixels: Float32Array;
  width: number;
  height: number;
  format: string;
  /** Of the decode's time, the preprocessing (resize + normalize), when the decoder measures it. */
  preprocessMs?: number;
}>;

/** One label and its softmax score, the shape of the Hugging Face Inference API. */
export interface Prediction {
  label: string;
  score: number;
}

/** Default number of predictions per image (capped at the label count). */
export const DEFAULT_TOP_K = 5;

export interface ClassifyOptions {
  /** Predictions per image: an integer from 1 to the label count (else 422); default 5, capped. */
  topK?: number;
  /** Apply the EXIF orientation before preprocessing; default true. */
  exifTranspose?: boolean;
  /** Default: a fresh deadline of the config's REQUEST_DEADLINE_MS. */
  deadline?: Deadline;
  /**
   * Pin this model (from {@link Classifier.model}) instead of resolving the active one, e.g. when
   * the caller validated parameters against its label count first.
   */
  model?: ModelView;
}

export interface ImageInfo {
  width: number;
  height: number;
  format: string;
}

export interface ClassifyTimings {
  /** Decode + preprocessing, summed over the images. */
  decodeMs: number;
  /** Of decodeMs, the preprocessing (resize + normalize) as the decoder measured it. */
  preprocessMs: number;
  /** Round trip of each stage (index = stage), summed over the images. */
  stageMs: number[];
  /** session.run time each stage reported (index = stage), summed over the images. */
  runMs: number[];
  /** Time waiting for this isolate's earlier pipeline runs to finish, summed over the images. */
  queueMs: number;
  /** From the start of classify() to the last prediction. */
  totalMs: number;
  /** Set when this call caused (or waited on) stage loads: `<stage>:<origin>:<ms>ms ...`. */
  warm?: string;
  /** Time the warm-up took, when {@link warm} is set. */
  warmMs?: number;
}

export interface ClassifyOutcome {
  /** One array per input image, in input order, each sorted by score (highest first). */
  predictions: Prediction[][];
  images: ImageInfo[];
  model: ModelIdentity;
  timings: ClassifyTimings;
}

export interface Classifier {
  classify(images: Uint8Array[], opts?: ClassifyOptions): Promise<ClassifyOutcome>;
  /** The active model: manifest, labels, version (for /v1/model and /v1/labels). */
  model(): Promise<ModelView>;
  /** Every stage's status for `model` (default: the active one). Never throws for a down stage. */
  status(model?: ModelView): Promise<StageReport[]>;
  /**
   * Whether a classification of `model` (default: the active one) can succeed now (for /healthz):
   * every stage reachable and holding the version, warming the ones that do not (cheap once warm).
   * Throws the AppError a classify would get (503 model-unavailable with retryAfter, 504).
   */
  ready(model?: ModelView, deadline?: Deadline): Promise<StageReport[]>;
}

export interface ClassifierDeps {
  decode: PixelDecoder;
  /** The invocation's waitUntil (HTTP request, queue batch or scheduled event); default: none. */
  keepAlive?: KeepAlive;
}

/**
 * The one top_k rule: undefined means {@link DEFAULT_TOP_K} (capped at the label count); anything
 * but an integer from 1 to `labelCount` is a 422. `given` is how the caller's input is echoed in
 * the message (the gateway passes the raw, capped text it parsed `k` from).
 */
export function checkTopK(k: number | undefined, labelCount: number, given = String(k)): number {
  if (k === undefined) return Math.min(DEFAULT_TOP_K, labelCount);
  if (!Number.isInteger(k) || k < 1 || k > labelCount)
    throw new AppError(
      "invalid-parameter",
      422,
      `top_k must be an integer from 1 to ${labelCount} (the label count), got ${given}.`,
      { parameter: "top_k", max: labelCount },
    );
  return k;
}

/**
 * The classifier of one invocation (cheap to build: the model, label and warm caches live per
 * isolate in model-state.ts and pipeline.ts).
 */
export function createClassifier(env: ClassifierEnv, deps: ClassifierDeps): Classifier {
  const keepAlive: KeepAlive = deps.keepAlive ?? (() => undefined);
  return {
    model: () => activeModel(env, keepAlive),
    async status(model) {
      const m = model ?? (await activeModel(env, keepAlive));
      return new StagePipeline(env, m.manifest, keepAlive).status();
    },
    async ready(model, deadline) {
      const m = model ?? (await activeModel(env, keepAlive));
      return new StagePipeline(env, m.manifest, keepAlive).ready(deadline);
    },
    async classify(images, opts = {}) {
      const started = Date.now();
      const deadline = opts.deadline ?? new Deadline(configOf(env).limits.deadlineMs);
      const maxBatch = configOf(env).limits.maxBatch;
      if (images.length === 0)
        throw new AppError("no-image", 400, "Nothing to classify: no images were given.");
      if (images.length > maxBatch)
        throw new AppError(
          "too-many-images",
          422,
          `A batch may hold at most ${maxBatch} images; this one has ${images.length}. Split it.`,
          { maxBatch },
        );
      // One version for the whole call: every stage call below carries it.
      const model = opts.model ?? (await deadline.race(activeModel(env, keepAlive)));
      const k = checkTopK(opts.topK, model.labels.length);
      const exifTranspose = opts.exifTranspose ?? true;
      const pipeline = new StagePipeline(env, model.manifest, keepAlive);
      // Cold isolates: load every stage at once while the first image decodes. `prime: false` asks
      // the stages to skip the run on zeros, which they honour only under STAGE_PRIME=on-request.
      const warmStart = Date.now();
      let warmMs = 0;
      const warm = pipeline.warm(deadline, { prime: false }).then((reports) => {
        warmMs = Date.now() - warmStart;
        return reports;
      });
      warm.catch(() => undefined);
      const timings: ClassifyTimings = {
        decodeMs: 0,
        preprocessMs: 0,
        queueMs: 0,
        stageMs: [],
        runMs: [],
        totalMs: 0,
      };
      const predictions: Prediction[][] = [];
      const infos: ImageInfo[] = [];
      for (const image of images) {
        const t0 = Date.now();
        const { pixels, width, height, format, preprocessMs } = await deadline.race(
          deps.decode(image, model.manifest.preprocess, { exifTranspose }),
        );
        timings.decodeMs += Date.now() - t0;
        timings.preprocessMs += preprocessMs ?? 0;
        infos.push({ width, height, format });
        const reports = await warm;
        // Loads this call caused (or waited on), with where each stage's shard came from.
        if (reports?.some((r) => r.origin !== "memory") && timings.warm === undefined) {
          timings.warm = reports.map((r) => `${r.stage}:${r.origin}:${r.loadMs}ms`).join(" ");
          timings.warmMs = warmMs;
        }
        const run = await pipeline.run(pixels, deadline);
        timings.queueMs += run.queueMs;
        for (const t of run.timings) {
          timings.stageMs[t.stage] = (timings.stageMs[t.stage] ?? 0) + t.ms;
          timings.runMs[t.stage] = (timings.runMs[t.stage] ?? 0) + t.runMs;
        }
        predictions.push(
          topKOf(run.logits, model.labels, k).map((p) => ({ label: p.label, score: p.score })),
        );
      }
      timings.totalMs = Date.now() - started;
      return { predictions, images: infos, model: identityOf(model), timings };
    },
  };
}
