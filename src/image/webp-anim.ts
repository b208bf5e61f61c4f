/**
 * @module
 * First frame of an animated WebP, as Pillow's `WebPAnimDecoder` yields it: the first frame is always a
 * key frame, so it is decoded onto a canvas cleared to transparent black without blending. We rewrap the
 * first ANMF frame's data (ALPH + VP8, or VP8L) as a still WebP for the codec, then place the decoded
 * RGBA at the frame's offset on a zeroed canvas.
 */

import type { AppError } from "../shared/errors.ts";
import { undecodable } from "./errors.ts";

const corrupt = (what: string): AppError => undecodable("webp", what);

const ascii = (b: Uint8Array, at: number): string =>
  String.fromCharCode(b[at], b[at + 1], b[at + 2], b[at + 3]);
const u24 = (b: Uint8Array, at: number): number => b[at] | (b[at + 1] << 8) | (b[at + 2] << 16);
const u32 = (b: Uint8Array, at: number): number =>
  (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;

/** The first frame's placement and a standalone still WebP holding its pixels. */
export interface FirstFrame {
  x: number;
  y: number;
  width: number;
  height: number;
  still: Uint8Array;
}

/**
 * Finds the first ANMF frame and rewraps it as a still WebP.
 *
 * @throws AppError "undecodable-image" when there is no usable frame.
 */
export function firstAnimationFrame(b: Uint8Array): FirstFrame {
  let at = 12;
  while (at + 8 <= b.length) {
    const type = ascii(b, at);
    const len = u32(b, at + 4);
    const body = at + 8;
    if (body + len > b.length) throw corrupt("a chunk runs past the end");
    if (type === "ANMF") {
      if (len < 16 + 8) throw corrupt("frame header too short");
      const x = u24(b, body) * 2;
      const y = u24(b, body + 3) * 2;
      const width = u24(b, body + 6) + 1;
      const height = u24(b, body + 9) + 1;
      const parts: Uint8Array[] = [];
      let alpha = false;
      for (let p = body + 16; p + 8 <= body + len; ) {
        const t = ascii(b, p);
        const n = u32(b, p + 4);
        const size = 8 + n + (n & 1);
        if (p + 8 + n > body + len) throw corrupt("frame data runs past the frame");
        if (t === "ALPH" || t === "VP8 " || t === "VP8L")
          parts.push(b.subarray(p, Math.min(p + size, body + len)));
        if (t === "ALPH") alpha = true;
        p += size;
      }
      if (!parts.some((c) => ascii(c, 0) !== "ALPH")) throw corrupt("first frame has no image data");
      const chunks: Uint8Array[] = [];
      if (alpha) {
        const vp8x = new Uint8Array(18);
        vp8x.set([0x56, 0x50, 0x38, 0x58, 10, 0, 0, 0, 0x10]);
        vp8x.set([(width - 1) & 255, ((width - 1) >> 8) & 255, ((width - 1) >> 16) & 255], 12);
        vp8x.set([(height - 1) & 255, ((height - 1) >> 8) & 255, ((height - 1) >> 16) & 255], 15);
        chunks.push(vp8x);
      }
      chunks.push(...parts);
      const total = chunks.reduce((s, c) => s + c.length, 0);
      const still = new Uint8Array(12 + total);
      still.set([0x52, 0x49, 0x46, 0x46]);
      new DataView(still.buffer).setUint32(4, 4 + total, true);
      still.set([0x57, 0x45, 0x42, 0x50], 8);
      let o = 12;
      for (const c of chunks) {
        still.set(c, o);
        o += c.length;
      }
      return { x, y, width, height, still };
    }
    at = body + len + (len & 1);
  }
  throw corrupt("no animation frame");
}

/**
 * Places a decoded RGBA frame on a zeroed RGB canvas (alpha dropped, as `convert("RGB")` does).
 */
export function composeFirstFrame(
  canvasW: number,
  canvasH: number,
  f: { x: number; y: number; width: number; height: number },
  rgba: Uint8Array | Uint8ClampedArray,
): Uint8Array {
  if (f.x + f.width > canvasW || f.y + f.height > canvasH)
    throw corrupt("first frame lies outside the canvas");
  const out = new Uint8Array(canvasW * canvasH * 3);
  for (let y = 0; y < f.height; y++) {
    for (let x = 0; x < f.width; x++) {
      const s = (y * f.width + x) * 4;
      const d = ((f.y + y) * canvasW + f.x + x) * 3;
      out[d] = rgba[s];
      out[d + 1] = rgba[s + 1];
      out[d + 2] = rgba[s + 2];
    }
  }
  return out;
}
