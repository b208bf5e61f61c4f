/**
 * @module
 * The image path in one call: bytes -> decoded RGB -> `pixel_values`. Used by the gateway Worker and the
 * classify CLI. Call `initCodecs` (Worker) or `initNodeCodecs` (Node) first.
 */

import type { PreprocessSpec } from "../shared/manifest.ts";
import { type DecodeOptions, decodeImage } from "./decode.ts";
import type { SupportedFormat } from "./header.ts";
import { preprocess } from "./preprocess.ts";

export { CODEC_WASM_PATHS, type CodecModules, initCodecs } from "./codecs.ts";
export { type DecodeOptions, decodeImage, type RgbImage, sniffFormat } from "./decode.ts";
export { DEFAULT_LIMITS, type ImageLimits } from "./limits.ts";
export { BEIT_BASE_PREPROCESS, preprocess } from "./preprocess.ts";

/** Result of {@link imageToPixelValues}. */
export interface PixelValues {
  /** NCHW float32 [1, 3, H, W]. */
  pixels: Float32Array;
  /** Size of the decoded (upright) image, before resizing. */
  width: number;
  height: number;
  format: SupportedFormat;
  /** Milliseconds spent decoding (incl. EXIF orientation) and preprocessing. */
  timings: { decodeMs: number; preprocessMs: number };
}

/**
 * Decodes and preprocesses an encoded image.
 *
 * @throws AppError from {@link decodeImage}.
 * @example
 * const { pixels } = await imageToPixelValues(bytes, manifest.preprocess);
 */
export async function imageToPixelValues(
  bytes: Uint8Array,
  spec: PreprocessSpec,
  opts: DecodeOptions = {},
): Promise<PixelValues> {
  const t0 = performance.now();
  const img = await decodeImage(bytes, opts);
  const t1 = performance.now();
  const pixels = preprocess(img, spec);
  const t2 = performance.now();
  return {
    pixels,
    width: img.width,
    height: img.height,
    format: img.format,
    timings: { decodeMs: t1 - t0, preprocessMs: t2 - t1 },
  };
}
