/**
 * @module
 * Runs a local shard directory in Node with the same inference code the Workers use
 * (src/inference: onnxruntime-web wasm, one session per stage, stages in pipeline order).
 * Used by `npm run model -- run` and `npm run classify`.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createStageSession } from "../src/inference/ort.ts";
import { type PipelineStage, type Prediction, runPipeline, topK } from "../src/inference/pipeline.ts";
import { AppError } from "../src/shared/errors.ts";
import type { Manifest } from "../src/shared/manifest.ts";
import { verifyShards } from "./build.ts";

/** A model loaded from a shard directory. */
export interface LocalModel {
  manifest: Manifest;
  labels: string[];
  /** Logits for one image's pixel_values [1, 3, S, S]. */
  run(pixels: Float32Array): Promise<Float32Array>;
  /** Top-k predictions (softmax scores) for one image. */
  classify(pixels: Float32Array, k?: number): Promise<Prediction[]>;
  /** Frees all sessions. */
  release(): Promise<void>;
}

/**
 * Verifies `dir` (sizes, hashes, manifest) and creates one session per stage.
 *
 * @example
 * const model = await loadLocalModel("model-shards/out/tiny");
 * console.log(await model.classify(pixels, 5));
 */
export async function loadLocalModel(dir: string): Promise<LocalModel> {
  const manifest = await verifyShards(dir);
  const labels = JSON.parse(await readFile(join(dir, manifest.labels.file), "utf8")) as string[];
  const stages: PipelineStage[] = [];
  for (const s of manifest.stages) {
    const graph = new Uint8Array(await readFile(join(dir, s.graph.file)));
    const weights =
      s.weights && s.externalDataPath
        ? { path: s.externalDataPath, data: new Uint8Array(await readFile(join(dir, s.weights.file))) }
        : null;
    stages.push({
      session: await createStageSession(graph, weights),
      input: s.inputs[0],
      output: s.outputs[0],
    });
  }
  const expected = manifest.stages[0].inputs[0].shape.reduce((a, b) => a * b, 1);
  const run = async (pixels: Float32Array) => {
    if (pixels.length !== expected)
      throw new AppError(
        "bad-pixels",
        422,
        `pixel_values must hold ${expected} float32 values (shape [${manifest.stages[0].inputs[0].shape.join(", ")}]), got ${pixels.length}.`,
      );
    return runPipeline(stages, pixels);
  };
  return {
    manifest,
    labels,
    run,
    async classify(pixels, k = 5) {
      return topK(await run(pixels), labels, k);
    },
    async release() {
      for (const s of stages) await s.session.release();
    },
  };
}
