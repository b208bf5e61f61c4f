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
   * Largest estimated peak memory of one decode, bytes: codec wasm heap + the RGBA copy handed to
   * JavaScript (+ the EXIF rotation copy), from {@link estimateDecodeBytes}. Guards the 128 MB isolate.
   */
  maxDecodeBytes: number;
  /**
   * Time budget for decoding, milliseconds. The TypeScript GIF decoder checks it while it runs; the wasm
   * codecs cannot be interrupted, so for them it is checked after each step (decode, orientation) and
   * their worst case is bounded by `maxPixels` instead.
   */
  maxDecodeMs: number;
  /**
   * Most chunks in a PNG or WebP file (IDAT and every other chunk; a WebP animation frame is one).
   * Counted from the chunk headers before decoding, so a file of a million tiny chunks is refused cheaply.
   */
  maxChunks: number;
  /**
   * Most scans (SOS markers) in a JPEG, counted before decoding: each scan of a progressive JPEG makes
   * the decoder pass over every coefficient block again, so scans multiply the decode time (libjpeg's
   * tools cap them the same way). Ordinary progressive JPEGs have about 10.
   */
  maxScans: number;
}

/**
 * Defaults sized for a 128 MB Workers isolate that never holds model weights. A 12 MP baseline JPEG
 * (4032x3024) is estimated at 101 MB and accepted (measured: 51.4 MB wasm heap + 48.8 MB RGBA copy).
 * Progressive JPEGs cost more in the wasm build (libjpeg keeps every coefficient: a 12 MP 4:2:0 one
 * measured 88 MB of wasm heap), so any JPEG whose wasm estimate is over budget goes to the TypeScript
 * decoder (3 bytes per coefficient + 3 per pixel): a 12 MP 4:2:0 progressive JPEG is accepted (~93 MB);
 * the largest accepted JPEGs are about 14.4 MP at 4:2:0, 9.0 MP at 4:4:4 and 7.2 MP for CMYK. 8-bit RGB
 * PNG (TypeScript decoder, inflating exactly the declared rows) and GIF are bounded by maxPixels.
 */
export const DEFAULT_LIMITS: Readonly<ImageLimits> = Object.freeze({
  maxBytes: 20 * 1024 * 1024,
  maxWidth: 16_384,
  maxHeight: 16_384,
  maxPixels: 16_777_216,
  maxDecodeBytes: 104 * 1024 * 1024,
  maxDecodeMs: 10_000,
  maxChunks: 65_536,
  maxScans: 100,
});

/** What {@link estimateDecodeBytes} needs from the header. */
export interface DecodeCostInput {
  format: "jpeg" | "png" | "webp" | "avif" | "gif";
  width: number;
  height: number;
  encodedBytes: number;
  progressive?: boolean;
  samples?: number;
  components?: number;
  /** JPEG only: which decoder the estimate is for ("ts" is forced for 4 components). Default "wasm". */
  decoder?: "wasm" | "ts";
  bitDepth?: number;
  colorType?: number;
  rotated?: boolean;
  /**
   * Wasm memory the codec's live instance already holds (src/image/codecs.ts keeps instances up to
   * RELEASE_AFTER_BYTES between decodes; memory never shrinks), counted when it exceeds this
   * decode's own wasm need. Ignored for the TypeScript decoders, which drop large instances first.
   */
  retainedWasmBytes?: number;
}

const MB = 1_000_000;

/**
 * Estimated peak bytes of one decode, calibrated on measurements (bench/image-decode.ts, Node 20,
 * jSquash 2026 builds): the codec's wasm heap at its largest (input copy + output RGBA + codec buffers,
 * + every DCT coefficient for progressive JPEG) plus the RGBA copy returned to
 * JavaScript, or the JavaScript buffers plus an EXIF rotation copy, whichever is larger.
 *
 * @example
 * estimateDecodeBytes({ format: "jpeg", width: 4032, height: 3024, encodedBytes: 1.3e6 }); // ~101e6
 */
export function estimateDecodeBytes(h: DecodeCostInput): number {
  const px = h.width * h.height;
  const n = h.encodedBytes;
  let wasm: number;
  let js = 4 * px;
  switch (h.format) {
    case "jpeg":
      if (h.components === 4 || h.decoder === "ts") {
        // TypeScript decoder (jpeg-ts.ts): int16 coefficients + uint8 sample planes + RGB output, counted
        // as if nothing were collected before the end (its released coefficient rows may not be yet).
        wasm = 0;
        js = 3 * (h.samples ?? 3 * px) + 3 * px + n;
        break;
      }
      // Progressive: libjpeg keeps every coefficient (2 bytes per sample) for the whole decode.
      wasm = 4 * px + n + 2 * MB + (h.progressive ? 2 * (h.samples ?? 3 * px) : 0);
      break;
    case "png": {
      // TypeScript decoder: the RGB output plus the inflated rows (inflate.ts fills a buffer of exactly
      // the declared rows, never more).
      const channels = [1, 0, 3, 1, 2, 0, 4][h.colorType ?? 6] || 4;
      const raw = h.height * (1 + Math.ceil((h.width * channels * (h.bitDepth ?? 8)) / 8));
      wasm = 0;
      js = 3 * px + raw;
      break;
    }
    case "webp":
      wasm = 6 * px + n + 2 * MB;
      break;
    case "avif":
      wasm = 10 * px + n + 4 * MB;
      break;
    case "gif":
      wasm = 0;
      js = 4 * px;
      break;
  }
  if (wasm > 0) wasm = Math.max(wasm, h.retainedWasmBytes ?? 0);
  const rotation = h.rotated ? 3 * px : 0;
  return Math.ceil(Math.max(wasm + js, js + rotation));
}

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
