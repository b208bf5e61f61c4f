/**
 * @module
 * Runs a local shard directory in Node with the same inference code the Workers use: the
 * directory as a model source (local-source.ts), every stage opened by the one stage loader
 * (src/inference/open-stage.ts: onnxruntime-web wasm, one session per stage), stages run in
 * pipeline order. Used by `npm run model -- run`, `npm run classify`, the workerd test setup and
 * the e2e test (their expected classifications), and the benchmarks.
 */
import { type OpenedStage, openStages } from "../src/inference/open-stage.ts";
import { type Prediction, runPipeline, topK } from "../src/inference/pipeline.ts";
import { readLabels } from "../src/shards/source.ts";
import { AppError } from "../src/shared/errors.ts";
import { type Manifest, numel } from "../src/shared/manifest.ts";
import { verifyShards } from "./build.ts";
import { localModelSource } from "./local-source.ts";

/** A model loaded from a shard directory. */
export interface LocalModel {
  manifest: Manifest;
  labels: string[];
  /** The open stages, in pipeline order. */
  stages: OpenedStage<"disk">[];
  /** Logits for one image's pixel_values [1, 3, S, S]. */
  run(pixels: Float32Array): Promise<Float32Array>;
  /** Top-k predictions (softmax scores) for one image. */
  classify(pixels: Float32Array, k?: number): Promise<Prediction[]>;
  /** Frees all sessions. */
  release(): Promise<void>;
}

/**
 * Verifies `dir` (verifyShards: manifest, sizes, hashes, graphs, labels) and opens every stage.
 *
 * @example
 * const model = await loadLocalModel("model-shards/out/tiny");
 * console.log(await model.classify(pixels, 5));
 */
export async function loadLocalModel(dir: string): Promise<LocalModel> {
  const source = localModelSource(dir);
  const manifest = await verifyShards(source);
  const labels = await readLabels(source, manifest);
  const stages = await openStages(source, manifest);
  const input = manifest.stages[0].inputs[0];
  const expected = numel(input.shape);
  const run = async (pixels: Float32Array) => {
    if (pixels.length !== expected)
      throw new AppError(
        "bad-pixels",
        422,
        `pixel_values must hold ${expected} float32 values (shape [${input.shape.join(", ")}]), got ${pixels.length}.`,
      );
    return runPipeline(stages, pixels);
  };
  return {
    manifest,
    labels,
    stages,
    run,
    async classify(pixels, k = 5) {
      return topK(await run(pixels), labels, k);
    },
    async release() {
      for (const s of stages) await s.release();
    },
  };
}
