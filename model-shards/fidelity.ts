/**
 * @module
 * How closely an int8 build follows the fp32 graph of the same checkpoint: held-out inputs (never
 * the calibration pictures), the fp32 logits to compare with, and the agreement measures the
 * build writes into manifest.fidelity and the benches print.
 */
import type { Fidelity } from "../src/shared/manifest.ts";
import type { BeitConfig, StateDict } from "./checkpoint/types.ts";
import { argmax, relL2, topKOverlap } from "./metrics.ts";
import { calibrationPixels } from "./onnx/calibrate.ts";
import { webSession, wholeModelGraph } from "./onnx/whole-model.ts";

/** How many held-out inputs the build measures int8 on by default. */
export const FIDELITY_INPUTS = 8;

/** The first calibration-generator seed of the held-out inputs (calibration uses 0..7). */
const HELD_OUT_SEED = 1000;

/**
 * `n` held-out pixel_values: pictures from the calibration generator with seeds it never uses
 * for calibration, alternately smooth photo-like fields and uniform random pixels.
 */
export function heldOutInputs(config: BeitConfig, n = FIDELITY_INPUTS): Float32Array[] {
  return Array.from({ length: n }, (_, i) => calibrationPixels(config, HELD_OUT_SEED + i));
}

/** Agreement of int8 logits with their fp32 references, one pair per input. */
export interface Agreement {
  inputs: number;
  relL2Mean: number;
  relL2Max: number;
  top1Agreement: number;
  top5OverlapMean: number;
}

/**
 * @example
 * const a = agreement(int8Logits, fp32Logits); // a.relL2Mean, a.top1Agreement
 */
export function agreement(outs: Float32Array[], refs: Float32Array[]): Agreement {
  if (outs.length !== refs.length || refs.length === 0)
    throw new Error(`agreement needs one output per reference, got ${outs.length} and ${refs.length}`);
  let sum = 0;
  let max = 0;
  let top1 = 0;
  let overlap = 0;
  for (const [i, ref] of refs.entries()) {
    const e = relL2(outs[i], ref);
    sum += e;
    max = Math.max(max, e);
    if (argmax(outs[i]) === argmax(ref)) top1++;
    overlap += topKOverlap(outs[i], ref, 5);
  }
  return {
    inputs: refs.length,
    relL2Mean: sum / refs.length,
    relL2Max: max,
    top1Agreement: top1,
    top5OverlapMean: overlap / refs.length,
  };
}

/** The fp32 graph's logits for each input (the whole model as one onnxruntime-web session). */
export async function fp32Logits(
  config: BeitConfig,
  tensors: StateDict,
  inputs: Float32Array[],
): Promise<Float32Array[]> {
  const sg = wholeModelGraph(config, tensors, { precision: "fp32" });
  const session = await webSession(sg.graph);
  try {
    const outs: Float32Array[] = [];
    for (const x of inputs) outs.push(await session.run(x, sg.input, sg.output));
    return outs;
  } finally {
    await session.release();
  }
}

/** One paragraph for the build's report. */
export function formatFidelity(f: Fidelity): string {
  const target = f.target === null ? "" : ` (target ${f.target}: met)`;
  const outliers = `${f.outlierChannels} outlier channels in ${f.outlierLayers} linear layers`;
  const floats = f.floatLayers.length ? `; float32 layers: ${f.floatLayers.join(", ")}` : "";
  return `int8 vs fp32 on ${f.inputs} held-out inputs: rel L2 mean ${f.relL2Mean.toFixed(4)}, max ${f.relL2Max.toFixed(4)}${target}; top-1 ${f.top1Agreement}/${f.inputs}; top-5 overlap ${f.top5OverlapMean.toFixed(2)}; ${outliers}${floats}`;
}
