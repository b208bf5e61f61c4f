/**
 * @module
 * PNG decoder in TypeScript: the IDAT chunks (views, not copied) are inflated by inflate.ts into a buffer
 * of exactly the declared rows, which stops there (a zlib bomb behind a small IHDR costs its declared
 * size), rows are unfiltered in place and written to RGB, so peak memory is the encoded file plus the
 * declared raw rows plus the RGB output. It replaces the
 * Rust/wasm-bindgen codec on the request path because that instance cannot be re-created: its heap would
 * stay at the largest PNG's size for the isolate's life.
 *
 * Conversion follows Pillow's `Image.open(png).convert("RGB")`: alpha dropped without compositing;
 * 1/2/4-bit grayscale scaled to 0..255; 16-bit RGB, RGBA and gray+alpha keep the high byte; 16-bit
 * grayscale opens as a 32-bit integer image whose conversion clips to 0..255; palette indices past the
 * PLTE map to the grey ramp (i, i, i). APNG: the default image (IDAT) is decoded.
 */

import { AppError } from "../shared/errors.ts";
import { undecodable } from "./errors.ts";
import { inflateZlibInto } from "./inflate.ts";

/** Decoded PNG: RGB, 3 bytes per pixel. */
export interface PngImage {
  width: number;
  height: number;
  data: Uint8Array;
}

const corrupt = (what: string): AppError => undecodable("png", what);

const CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const DEPTHS: Record<number, number[]> = {
  0: [1, 2, 4, 8, 16],
  2: [8, 16],
  3: [1, 2, 4, 8],
  4: [8, 16],
  6: [8, 16],
};
/** Adam7 passes: first column, first row, column step, row step. */
const ADAM7 = [
  { x0: 0, y0: 0, dx: 8, dy: 8 },
  { x0: 4, y0: 0, dx: 8, dy: 8 },
  { x0: 0, y0: 4, dx: 4, dy: 8 },
  { x0: 2, y0: 0, dx: 4, dy: 4 },
  { x0: 0, y0: 2, dx: 2, dy: 4 },
  { x0: 1, y0: 0, dx: 2, dy: 2 },
  { x0: 0, y0: 1, dx: 1, dy: 2 },
];

const u32 = (b: Uint8Array, at: number): number =>
  ((b[at] << 24) >>> 0) + ((b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]);

/**
 * Decodes a PNG to RGB.
 *
 * @param deadline `performance.now()` value after which decoding stops with "decode-timeout".
 * @throws AppError "undecodable-image" for corrupt or truncated files, "decode-timeout" past the deadline.
 * @example
 * const { width, height, data } = await decodePng(bytes);
 */
export async function decodePng(bytes: Uint8Array, deadline = Number.POSITIVE_INFINITY): Promise<PngImage> {
  if (bytes.length < 33 || u32(bytes, 8) !== 13) throw corrupt("missing IHDR");
  const width = u32(bytes, 16);
  const height = u32(bytes, 20);
  const [depth, colorType, compression, filter, interlace] = bytes.subarray(24, 29);
  if (!DEPTHS[colorType]?.includes(depth)) throw corrupt(`bit depth ${depth} with colour type ${colorType}`);
  if (compression !== 0 || filter !== 0 || interlace > 1)
    throw corrupt("unknown compression, filter or interlace method");
  if (width < 1 || height < 1) throw corrupt("zero width or height");

  // Collect IDAT chunks (zero-copy views) and the palette.
  const idat: Uint8Array[] = [];
  let palette: Uint8Array | null = null;
  let at = 8;
  while (at + 12 <= bytes.length) {
    const len = u32(bytes, at);
    const type = String.fromCharCode(bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]);
    const end = at + 12 + len;
    if (end > bytes.length) {
      if (type === "IDAT") idat.push(bytes.subarray(at + 8, bytes.length));
      break;
    }
    if (type === "IDAT") {
      idat.push(bytes.subarray(at + 8, at + 8 + len));
    } else if (type === "PLTE" && !palette) {
      palette = bytes.subarray(at + 8, at + 8 + len);
    } else if (type === "IEND") {
      break;
    }
    at = end;
  }
  if (idat.length === 0) throw corrupt("no image data (IDAT)");
  if (colorType === 3 && !palette) throw corrupt("palette image without PLTE");

  const out = new Uint8Array(width * height * 3);
  const bpp = CHANNELS[colorType] * depth; // bits per pixel
  const filterBytes = Math.max(1, bpp >> 3);
  const pal = new Uint8Array(768);
  for (let i = 0; i < 256; i++) pal[i * 3] = pal[i * 3 + 1] = pal[i * 3 + 2] = i;
  if (palette) pal.set(palette.subarray(0, Math.min(768, palette.length - (palette.length % 3))));

  const passes = interlace ? ADAM7 : [{ x0: 0, y0: 0, dx: 1, dy: 1 }];
  // Inflate exactly the declared rows (filter byte + stride per row, every pass) and no more: a
  // stream that would inflate past them is not read further (Pillow ignores it too), so memory is
  // the declared raw size plus the RGB output, whatever the IDAT holds.
  const geometry = passes.map((p) => {
    const pw = Math.ceil((width - p.x0) / p.dx);
    const ph = Math.ceil((height - p.y0) / p.dy);
    return { ...p, pw, ph, stride: pw > 0 && ph > 0 ? Math.ceil((pw * bpp) / 8) : 0 };
  });
  const rawBytes = geometry.reduce((n, g) => n + (g.stride ? g.ph * (g.stride + 1) : 0), 0);
  const raw = new Uint8Array(rawBytes);
  inflateZlibInto(idat, raw);
  if (performance.now() > deadline)
    throw new AppError(
      "decode-timeout",
      503,
      "Decoding the PNG took longer than the time limit; send a smaller image.",
    );
  let row = 0;
  for (const g of geometry) {
    if (!g.stride) continue;
    let prev = new Uint8Array(g.stride);
    for (let ry = 0; ry < g.ph; ry++) {
      const cur = raw.subarray(row + 1, row + 1 + g.stride);
      unfilter(raw[row], cur, prev, filterBytes);
      writeRow(cur, g.pw, (g.y0 + ry * g.dy) * width, g.x0, g.dx, out, depth, colorType, pal);
      prev = cur;
      row += g.stride + 1;
    }
  }
  return { width, height, data: out };
}

function unfilter(type: number, cur: Uint8Array, prev: Uint8Array, bpp: number): void {
  const n = cur.length;
  switch (type) {
    case 0:
      return;
    case 1:
      for (let i = bpp; i < n; i++) cur[i] = (cur[i] + cur[i - bpp]) & 255;
      return;
    case 2:
      for (let i = 0; i < n; i++) cur[i] = (cur[i] + prev[i]) & 255;
      return;
    case 3:
      for (let i = 0; i < n; i++) cur[i] = (cur[i] + (((i >= bpp ? cur[i - bpp] : 0) + prev[i]) >> 1)) & 255;
      return;
    case 4:
      for (let i = 0; i < n; i++) {
        const a = i >= bpp ? cur[i - bpp] : 0;
        const b = prev[i];
        const c = i >= bpp ? prev[i - bpp] : 0;
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        cur[i] = (cur[i] + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c)) & 255;
      }
      return;
    default:
      throw corrupt(`unknown row filter ${type}`);
  }
}

/** Writes one unfiltered row of `pw` pixels to RGB at row offset `rowBase`, columns x0, x0+dx, ... */
function writeRow(
  row: Uint8Array,
  pw: number,
  rowBase: number,
  x0: number,
  dx: number,
  out: Uint8Array,
  depth: number,
  colorType: number,
  pal: Uint8Array,
): void {
  for (let i = 0; i < pw; i++) {
    const o = (rowBase + x0 + i * dx) * 3;
    let r: number;
    let g: number;
    let b: number;
    if (depth < 8) {
      const bit = i * depth;
      const v = (row[bit >> 3] >> (8 - depth - (bit & 7))) & ((1 << depth) - 1);
      if (colorType === 3) {
        r = pal[v * 3];
        g = pal[v * 3 + 1];
        b = pal[v * 3 + 2];
      } else {
        r = g = b = depth === 1 ? v * 255 : depth === 2 ? v * 85 : v * 17;
      }
    } else if (depth === 8) {
      switch (colorType) {
        case 0:
        case 4:
          r = g = b = row[i * (colorType === 0 ? 1 : 2)];
          break;
        case 3: {
          const v = row[i] * 3;
          r = pal[v];
          g = pal[v + 1];
          b = pal[v + 2];
          break;
        }
        default: {
          const s = i * (colorType === 2 ? 3 : 4);
          r = row[s];
          g = row[s + 1];
          b = row[s + 2];
        }
      }
    } else if (colorType === 0) {
      const v = (row[i * 2] << 8) | row[i * 2 + 1];
      r = g = b = Math.min(v, 255);
    } else if (colorType === 4) {
      r = g = b = row[i * 4];
    } else {
      const s = i * (colorType === 2 ? 6 : 8);
      r = row[s];
      g = row[s + 2];
      b = row[s + 4];
    }
    out[o] = r;
    out[o + 1] = g;
    out[o + 2] = b;
  }
}
