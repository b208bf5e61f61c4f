/**
 * @module
 * Calibration for int8 bias correction: runs the fp32 graph of the whole model (onnxruntime-web in
 * Node, the runtime the Workers use) on a fixed set of synthetic calibration pictures and returns,
 * for every linear layer, the mean of its input per channel over all tokens and pictures.
 *
 * The pictures are deterministic (half smooth photo-like fields of gradients and soft blobs, half
 * uniform random pixels) and come from a generator of their own, so benchmarks that evaluate on
 * other pictures do not test on the calibration set.
 */
import { mulberry32 } from "../../src/shared/random.ts";
import type { BeitConfig, StateDict } from "../checkpoint/types.ts";
import { webSession, wholeModelGraph } from "./whole-model.ts";

/** Calibration pictures used by the converter (pixel_values, normalized to [-1, 1]). */
export const CALIBRATION_IMAGES = 8;

/** The `index`-th calibration picture, [C, S, S] in [-1, 1]. */
export function calibrationPixels(config: BeitConfig, index: number): Float32Array {
  const S = config.image_size;
  const C = config.num_channels;
  const r = mulberry32(0xca11b000 + index);
  const out = new Float32Array(C * S * S);
  if (index % 2 === 1) {
    for (let i = 0; i < out.length; i++) out[i] = r() * 2 - 1;
    return out;
  }
  const blobs = Array.from({ length: 6 }, () => ({
    x: r() * S,
    y: r() * S,
    rad: (0.05 + r() * 0.3) * S,
    c: Array.from({ length: C }, () => r() * 2 - 1),
  }));
  const tilt = Array.from({ length: C }, () => [r() - 0.5, r() - 0.5, r() * 0.6 - 0.3]);
  for (let y = 0; y < S; y++)
    for (let x = 0; x < S; x++) {
      for (let c = 0; c < C; c++) {
        let v = tilt[c][2] + (tilt[c][0] * x + tilt[c][1] * y) / S;
        for (const b of blobs) {
          const m = Math.exp(-((x - b.x) ** 2 + (y - b.y) ** 2) / (2 * b.rad * b.rad));
          v = v * (1 - m) + b.c[c] * m;
        }
        out[(c * S + y) * S + x] = Math.max(-1, Math.min(1, v + (r() - 0.5) * 0.05));
      }
    }
  return out;
}

/** What calibration measures of one linear layer's input, per channel. */
export interface ChannelStats {
  /** Mean over tokens and pictures. */
  mean: Float32Array;
  /** Mean of x^2 over tokens and pictures. */
  meanSquare: Float32Array;
  /** Largest |x| over tokens and pictures. */
  absMax: Float32Array;
}

/**
 * Per linear layer (graph prefix, e.g. "l3_fc2"), per-channel statistics of its input over
 * `images` calibration pictures, from the fp32 graph.
 *
 * @example
 * const stats = await calibrateInputs(config, tensors);
 * const outliers = chooseOutliers(config, tensors, stats);
 */
export async function calibrateInputs(
  config: BeitConfig,
  tensors: StateDict,
  images = CALIBRATION_IMAGES,
): Promise<Map<string, ChannelStats>> {
  const sg = wholeModelGraph(config, tensors, { precision: "fp32", probeInputMeans: true });
  const session = await webSession(sg.graph);
  const sum = new Float64Array(sg.output.shape[0]);
  const max = new Float64Array(sg.output.shape[0]);
  try {
    for (let n = 0; n < images; n++) {
      const out = await session.run(calibrationPixels(config, n), sg.input, sg.output);
      for (let i = 0; i < sum.length; i++) {
        sum[i] += out[i];
        max[i] = Math.max(max[i], out[i]);
      }
    }
    // Per probe: mean, mean of squares (both averaged over pictures), max |x| (the max of maxes).
  } finally {
    await session.release();
  }
  const stats = new Map<string, ChannelStats>();
  let at = 0;
  for (const p of sg.probes) {
    const n = p.length;
    stats.set(p.prefix, {
      mean: Float32Array.from(sum.subarray(at, at + n), (v) => v / images),
      meanSquare: Float32Array.from(sum.subarray(at + n, at + 2 * n), (v) => v / images),
      absMax: Float32Array.from(max.subarray(at + 2 * n, at + 3 * n)),
    });
    at += 3 * n;
  }
  return stats;
}

/**
 * Per linear layer, the per-channel mean of its input (for bias correction).
 *
 * @example
 * const inputMeans = await calibrateInputMeans(config, tensors);
 * buildStageGraph({ ..., precision: "int8", quant: { ...DEFAULT_QUANT, inputMeans } });
 */
export async function calibrateInputMeans(
  config: BeitConfig,
  tensors: StateDict,
  images = CALIBRATION_IMAGES,
): Promise<Map<string, Float32Array>> {
  const stats = await calibrateInputs(config, tensors, images);
  return new Map([...stats].map(([k, v]) => [k, v.mean]));
}
