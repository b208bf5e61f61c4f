/**
 * @module
 * Test helpers for the image path: loads the committed fixtures (test/fixtures/images, made by
 * scripts/make-image-fixtures.py with Pillow), generates the resize pattern both sides share, and
 * says how decodeImage refuses an input.
 */

import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { gunzipSync } from "node:zlib";
import { type DecodeOptions, decodeImage } from "../../src/image/decode.ts";
import { AppError } from "../../src/shared/errors.ts";

export const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "images");

export interface ExpectedImage {
  width?: number;
  height?: number;
  rawWidth?: number;
  rawHeight?: number;
  sha256?: string;
  refusal?: string;
  pillowMode?: string;
  note?: string;
}

export interface ExpectedResize {
  src: [number, number];
  dst: [number, number];
  resample: number;
  filter: string;
  sha256: string;
  step: number;
  samples: number[];
}

export interface Expected {
  pillow: string;
  images: Record<string, ExpectedImage>;
  resize: ExpectedResize[];
  normalize: Record<string, { mean: number[]; std: number[]; values: number[][] }>;
  pixel_values: Record<string, { sha256: string; step: number; samples: number[] }>;
}

export const expected: Expected = JSON.parse(readFileSync(join(FIXTURES, "expected.json"), "utf8"));

/** The fixture's encoded bytes. */
export function fixture(name: string): Uint8Array {
  return new Uint8Array(readFileSync(join(FIXTURES, name)));
}

/** The RGB bytes Pillow produced for exif_transpose(open(name)).convert("RGB"). */
export function pillowRgb(name: string): Uint8Array {
  return new Uint8Array(gunzipSync(readFileSync(join(FIXTURES, `${name}.rgb.gz`))));
}

/** Same formula as `pattern()` in scripts/make-image-fixtures.py (uint32 arithmetic). */
export function patternImage(w: number, h: number): { width: number; height: number; data: Uint8Array } {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < 3; c++) {
        const hsh = (Math.imul(x, 73856093) ^ Math.imul(y, 19349663) ^ Math.imul(c, 83492791)) >>> 0;
        const smooth = Math.floor((x * 3 + y * 2 + c * 60) / 2);
        data[(y * w + x) * 3 + c] = (smooth + (hsh >>> 27)) & 255;
      }
    }
  }
  return { width: w, height: h, data };
}

/** Largest absolute difference between two byte arrays of equal length. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** The AppError decodeImage refuses `bytes` with; anything else (a decode, another error) fails. */
export async function refusal(bytes: Uint8Array, opts: DecodeOptions = {}): Promise<AppError> {
  try {
    await decodeImage(bytes, opts);
  } catch (e) {
    if (e instanceof AppError) return e;
    throw e;
  }
  throw new Error("expected decodeImage to refuse the input");
}
