/**
 * @module
 * Size and time limits for the image path. Every limit is checked from the encoded header before any
 * pixel buffer is allocated, so a decompression bomb is refused for the cost of reading a few bytes.
 */

/** Limits applied by {@link decodeImage}. */
export interface ImageLimits {
  /** Largest accepted encoded body, bytes. */
  maxBytes: number;
  /** Largest accepted width, pixels (as declared in the header). */
  maxWidth: number;
  /** Largest accepted height, pixels (as declared in the header). */
  maxHeight: number;
  /** Largest accepted width x height, pixels (as declared in the header). */
  maxPixels: number;
  /**
   * Time budget for decoding, milliseconds. The TypeScript GIF decoder checks it while it runs; the wasm
   * codecs cannot be interrupted, so for them it is checked after each step (decode, orientation) and
   * their worst case is bounded by `maxPixels` instead.
   */
  maxDecodeMs: number;
}

/**
 * Defaults sized for a 128 MB Workers isolate that never holds model weights. The largest image
 * accepted is 24 megapixels (e.g. 6000x4000); see the README section "Image limits" for the measured
 * memory cost of a 12 MP and a 24 MP JPEG.
 */
export const DEFAULT_LIMITS: Readonly<ImageLimits> = Object.freeze({
  maxBytes: 20 * 1024 * 1024,
  maxWidth: 16_384,
  maxHeight: 16_384,
  maxPixels: 24_000_000,
  maxDecodeMs: 10_000,
});

/**
 * Merges partial limits over {@link DEFAULT_LIMITS}, refusing non-positive or non-finite values.
 *
 * @example
 * const limits = resolveLimits({ maxPixels: 4_000_000 });
 */
export function resolveLimits(partial: Partial<ImageLimits> = {}): ImageLimits {
  const out: ImageLimits = { ...DEFAULT_LIMITS, ...partial };
  for (const [k, v] of Object.entries(out)) {
    if (typeof v !== "number" || !(v > 0)) throw new TypeError(`image limit ${k} must be a positive number`);
  }
  return out;
}
