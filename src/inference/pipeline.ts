/**
 * @module
 * Platform-neutral helpers around stage sessions: softmax, top-k with labels, and running a chain
 * of stages in pipeline order. Used by the stage Workers, the gateway and the Node runner.
 */
import { AppError } from "../shared/errors.ts";
import type { TensorSpec } from "../shared/manifest.ts";
import type { StageSession } from "./ort.ts";

/** One classification result. */
export interface Prediction {
  index: number;
  label: string;
  /** Softmax probability. */
  score: number;
}

/** Numerically stable softmax (computed in float64, returned as float64). */
export function softmax(logits: ArrayLike<number>): Float64Array {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < logits.length; i++) if (logits[i] > max) max = logits[i];
  const out = new Float64Array(logits.length);
  let z = 0;
  for (let i = 0; i < logits.length; i++) {
    out[i] = Math.exp(logits[i] - max);
    z += out[i];
  }
  for (let i = 0; i < out.length; i++) out[i] /= z;
  return out;
}

/**
 * The k most probable classes, sorted by score descending; ties keep the lower index first.
 *
 * @example
 * topK(new Float32Array([1, 3, 2]), ["a", "b", "c"], 2); // [{index:1,label:"b",...},{index:2,...}]
 */
export function topK(logits: ArrayLike<number>, labels: readonly string[], k: number): Prediction[] {
  const probs = softmax(logits);
  const n = Math.max(0, Math.min(Math.floor(k), probs.length));
  // Partial selection keeps this O(N k) for 21,841 classes and small k.
  const best: number[] = [];
  for (let i = 0; i < probs.length; i++) {
    if (best.length === n && (n === 0 || probs[i] <= probs[best[n - 1]])) continue;
    let pos = best.length;
    while (pos > 0 && probs[best[pos - 1]] < probs[i]) pos--;
    best.splice(pos, 0, i);
    if (best.length > n) best.pop();
  }
  return best.map((index) => ({ index, label: labels[index] ?? String(index), score: probs[index] }));
}

/** A stage session with its manifest tensor specs. */
export interface PipelineStage {
  session: StageSession;
  input: TensorSpec;
  output: TensorSpec;
}

/**
 * Runs the stages in order: pixels into the first, each output into the next; returns the last
 * stage's output (the logits).
 */
export async function runPipeline(
  stages: readonly PipelineStage[],
  pixels: Float32Array,
): Promise<Float32Array> {
  if (stages.length === 0) throw new AppError("model-unavailable", 503, "The model has no stages loaded.");
  let x = pixels;
  for (const s of stages) x = await s.session.run(x, s.input, s.output);
  return x;
}
