/**
 * @module
 * GIF first-frame decoder in TypeScript (LZW, interlacing, global/local colour tables). There is no
 * jSquash GIF codec, and GIF's LZW is small enough that plain TypeScript is fast for the one frame the
 * classifier needs. It reproduces what Pillow gives for `Image.open(gif).convert("RGB")`: the canvas
 * is the logical screen grown to hold the first frame, pixels outside the frame take the transparent
 * index (or index 0), and indices map through the frame's colour table, whose missing entries are the
 * grey ramp (i, i, i). A frame whose LZW data ends before its last pixel is refused, as Pillow does.
 */

import { AppError } from "../shared/errors.ts";
import { undecodable } from "./errors.ts";

/** Decoded first frame: RGB, 3 bytes per pixel. */
export interface GifFrame {
  width: number;
  height: number;
  data: Uint8Array;
}

const corrupt = (what: string): AppError => undecodable("gif", what);

/** Canvas size (logical screen grown to contain the first frame) without decoding pixels. */
export function gifCanvasSize(bytes: Uint8Array): { width: number; height: number } {
  const f = locateFirstFrame(bytes);
  return { width: f.canvasW, height: f.canvasH };
}

interface FrameLocation {
  canvasW: number;
  canvasH: number;
  x: number;
  y: number;
  w: number;
  h: number;
  interlaced: boolean;
  palette: Uint8Array | null;
  transparent: number | null;
  minCodeSize: number;
  dataStart: number;
}

function locateFirstFrame(b: Uint8Array): FrameLocation {
  if (b.length < 13) throw corrupt("header shorter than 13 bytes");
  const screenW = b[6] | (b[7] << 8);
  const screenH = b[8] | (b[9] << 8);
  let at = 13;
  let global: Uint8Array | null = null;
  if (b[10] & 0x80) {
    const n = 3 * (1 << ((b[10] & 7) + 1));
    if (at + n > b.length) throw corrupt("global colour table runs past the end");
    global = b.subarray(at, at + n);
    at += n;
  }
  let transparent: number | null = null;
  while (at < b.length) {
    const tag = b[at];
    if (tag === 0x21) {
      const label = b[at + 1];
      at += 2;
      if (label === 0xf9 && b[at] >= 4 && at + 5 <= b.length) {
        transparent = b[at + 1] & 1 ? b[at + 4] : null;
      }
      at = skipSubBlocks(b, at);
    } else if (tag === 0x2c) {
      if (at + 10 > b.length) throw corrupt("image descriptor runs past the end");
      const x = b[at + 1] | (b[at + 2] << 8);
      const y = b[at + 3] | (b[at + 4] << 8);
      const w = b[at + 5] | (b[at + 6] << 8);
      const h = b[at + 7] | (b[at + 8] << 8);
      const flags = b[at + 9];
      at += 10;
      let palette = global;
      if (flags & 0x80) {
        const n = 3 * (1 << ((flags & 7) + 1));
        if (at + n > b.length) throw corrupt("local colour table runs past the end");
        palette = b.subarray(at, at + n);
        at += n;
      }
      if (at >= b.length) throw corrupt("no image data");
      const minCodeSize = b[at];
      return {
        canvasW: Math.max(screenW, x + w),
        canvasH: Math.max(screenH, y + h),
        x,
        y,
        w,
        h,
        interlaced: (flags & 0x40) !== 0,
        palette,
        transparent,
        minCodeSize,
        dataStart: at + 1,
      };
    } else if (tag === 0x3b) {
      break;
    } else {
      throw corrupt(`unknown block 0x${tag.toString(16)}`);
    }
  }
  throw corrupt("no image frame");
}

function skipSubBlocks(b: Uint8Array, at: number): number {
  while (at < b.length) {
    const n = b[at];
    if (n === 0) return at + 1;
    at += n + 1;
  }
  throw corrupt("data sub-blocks run past the end");
}

/**
 * Decodes the first frame of a GIF to RGB.
 *
 * @param deadline `performance.now()` value after which decoding stops with "decode-timeout".
 * @throws AppError "undecodable-image" for corrupt or truncated data, "decode-timeout" past the deadline.
 * @example
 * const { width, height, data } = decodeGifFirstFrame(bytes, performance.now() + 1000);
 */
export function decodeGifFirstFrame(bytes: Uint8Array, deadline = Number.POSITIVE_INFINITY): GifFrame {
  const f = locateFirstFrame(bytes);
  const { canvasW: W, canvasH: H } = f;
  if (f.minCodeSize < 1 || f.minCodeSize > 11) throw corrupt(`LZW code size ${f.minCodeSize}`);
  const indices = new Uint8Array(W * H);
  if (f.transparent !== null) indices.fill(f.transparent);

  // Row order of the frame (interlaced GIFs store rows in four passes).
  const rowOrder = new Int32Array(f.h);
  if (f.interlaced) {
    let r = 0;
    for (const [start, step] of [
      [0, 8],
      [4, 8],
      [2, 4],
      [1, 2],
    ]) {
      for (let y = start; y < f.h; y += step) rowOrder[r++] = y;
    }
  } else {
    for (let y = 0; y < f.h; y++) rowOrder[y] = y;
  }

  const total = f.w * f.h;
  const clear = 1 << f.minCodeSize;
  const eoi = clear + 1;
  const prefix = new Int16Array(4096);
  const suffix = new Uint8Array(4096);
  const firstByte = new Uint8Array(4096);
  const lengths = new Uint16Array(4096);
  for (let i = 0; i < clear; i++) {
    suffix[i] = i;
    firstByte[i] = i;
    lengths[i] = 1;
    prefix[i] = -1;
  }
  const stack = new Uint8Array(4097);
  let codeSize = f.minCodeSize + 1;
  let next = eoi + 1;
  let prev = -1;
  let written = 0;
  let bitBuf = 0;
  let bitCount = 0;
  let at = f.dataStart;
  let blockLeft = 0;
  let ended = false;
  let checks = 0;

  const emit = (code: number): void => {
    const len = lengths[code];
    let c = code;
    for (let i = len - 1; i >= 0; i--) {
      stack[i] = suffix[c];
      c = prefix[c];
    }
    for (let i = 0; i < len && written < total; i++, written++) {
      const fy = rowOrder[Math.floor(written / f.w)];
      const fx = written % f.w;
      indices[(f.y + fy) * W + f.x + fx] = stack[i];
    }
  };

  while (written < total && !ended) {
    while (bitCount < codeSize) {
      if (blockLeft === 0) {
        if (at >= bytes.length) throw corrupt("image data is truncated");
        blockLeft = bytes[at++];
        if (blockLeft === 0) {
          ended = true;
          break;
        }
      }
      if (at >= bytes.length) throw corrupt("image data is truncated");
      bitBuf |= bytes[at++] << bitCount;
      bitCount += 8;
      blockLeft--;
    }
    if (ended) break;
    const code = bitBuf & ((1 << codeSize) - 1);
    bitBuf >>>= codeSize;
    bitCount -= codeSize;
    if (code === clear) {
      codeSize = f.minCodeSize + 1;
      next = eoi + 1;
      prev = -1;
      continue;
    }
    if (code === eoi) break;
    if (prev === -1) {
      if (code >= clear) throw corrupt("invalid first LZW code");
      emit(code);
      prev = code;
      continue;
    }
    let entry: number;
    if (code < next) {
      entry = code;
      if (next < 4096) {
        prefix[next] = prev;
        suffix[next] = firstByte[code];
        firstByte[next] = firstByte[prev];
        lengths[next] = lengths[prev] + 1;
        next++;
      }
    } else if (code === next && next < 4096) {
      prefix[next] = prev;
      suffix[next] = firstByte[prev];
      firstByte[next] = firstByte[prev];
      lengths[next] = lengths[prev] + 1;
      entry = next;
      next++;
    } else {
      throw corrupt("invalid LZW code");
    }
    emit(entry);
    prev = code;
    if (next === 1 << codeSize && codeSize < 12) codeSize++;
    if ((++checks & 0xffff) === 0 && performance.now() > deadline) {
      throw new AppError(
        "decode-timeout",
        503,
        "Decoding the GIF took longer than the time limit; send a smaller image.",
      );
    }
  }

  // Pillow refuses a frame whose data ends early ("image file is truncated"); so do we.
  if (written < total) throw corrupt(`image data ends after ${written} of ${total} pixels`);

  // Colour table: missing entries keep the grey ramp, as in Pillow's palette.
  const pal = new Uint8Array(768);
  for (let i = 0; i < 256; i++) pal[i * 3] = pal[i * 3 + 1] = pal[i * 3 + 2] = i;
  if (f.palette) pal.set(f.palette.subarray(0, Math.min(768, f.palette.length)));
  const rgb = new Uint8Array(W * H * 3);
  for (let i = 0, o = 0; i < indices.length; i++, o += 3) {
    const p = indices[i] * 3;
    rgb[o] = pal[p];
    rgb[o + 1] = pal[p + 1];
    rgb[o + 2] = pal[p + 2];
  }
  return { width: W, height: H, data: rgb };
}
