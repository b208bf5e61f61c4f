/**
 * @module
 * JPEG decoder in TypeScript for what the MozJPEG wasm build cannot do within the isolate's budget:
 * 4-component (CMYK, Adobe YCCK) JPEGs, which libjpeg-turbo refuses to convert to RGB, and progressive
 * JPEGs, whose full-coefficient buffering costs the wasm build ~10 bytes per pixel plus a second RGBA
 * copy. Baseline and progressive Huffman scans, restart markers, 1x1, 2x1 and 2x2 chroma sampling.
 * The arithmetic is libjpeg-turbo's, so the result equals what Pillow gets: the ISLOW integer IDCT
 * (13-bit constants, 2 extra bits in the first pass), "fancy" triangle upsampling with libjpeg's
 * rounding biases and edge replication, YCbCr/YCCK conversion with its 16-bit fixed-point tables; then
 * Pillow's steps: CMYK read as "CMYK;I" (every CMYK JPEG is treated as Adobe-inverted) and converted
 * with R = clip(nk - nk*c/255), nk = 255 - k, rounded as Pillow's MULDIV255.
 */

import { AppError } from "../shared/errors.ts";
import { undecodable } from "./errors.ts";

/** Decoded image: RGB, 3 bytes per pixel. */
export interface JpegImage {
  width: number;
  height: number;
  data: Uint8Array;
}

const corrupt = (what: string): AppError => undecodable("jpeg", what);

const unsupported = (what: string): AppError =>
  new AppError(
    "unsupported-format",
    415,
    `Detected a JPEG with ${what}, which this server cannot decode; convert it to a baseline RGB JPEG or PNG and resend.`,
    { detected: "jpeg" },
  );

/** Zigzag index -> natural (row-major) index. */
const ZIGZAG = Int32Array.from([
  0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7,
  14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46,
  53, 60, 61, 54, 47, 55, 62, 63,
]);

interface Huffman {
  /** For each code length 1..16: largest code of that length (-1 when none). */
  maxcode: Int32Array;
  /** For each length: index into `values` of the first code minus that code. */
  valptr: Int32Array;
  values: Uint8Array;
  /** 9-bit lookahead: (code length << 8) | value for codes up to 9 bits, 0 otherwise. */
  lut: Uint16Array;
}

function buildHuffman(counts: Uint8Array, values: Uint8Array): Huffman {
  const maxcode = new Int32Array(18).fill(-1);
  const valptr = new Int32Array(17);
  let code = 0;
  let k = 0;
  for (let len = 1; len <= 16; len++) {
    const n = counts[len - 1];
    if (n) {
      valptr[len] = k - code;
      code += n;
      k += n;
      maxcode[len] = code - 1;
    }
    code <<= 1;
  }
  maxcode[17] = 0x7fffffff;
  const lut = new Uint16Array(512);
  code = 0;
  k = 0;
  for (let len = 1; len <= 9; len++) {
    for (let i = 0; i < counts[len - 1]; i++, k++, code++) {
      const shift = 9 - len;
      const v = values[k];
      if (v === undefined) break;
      for (let j = 0; j < 1 << shift; j++) lut[(code << shift) | j] = (len << 8) | v;
    }
    code <<= 1;
  }
  return { maxcode, valptr, values, lut };
}

interface Component {
  id: number;
  h: number;
  v: number;
  tq: number;
  /** Allocated block grid (whole MCUs) and the component's real block grid. */
  allocW: number;
  allocH: number;
  realW: number;
  realH: number;
  /** Downsampled size in samples (libjpeg's downsampled_width/height). */
  dw: number;
  dh: number;
  /** Quantized coefficients, one array per block row (released row by row after the IDCT). */
  rows: Int16Array[];
  pred: number;
  dc: Huffman | null;
  ac: Huffman | null;
}

/**
 * Decodes a JPEG to RGB exactly as Pillow (libjpeg-turbo) does.
 *
 * @throws AppError "undecodable-image" for corrupt data, "unsupported-format" for layouts not handled
 *   (12-bit, arithmetic-coded, sampling other than 1x1/2x1/2x2), "decode-timeout" past `deadline`.
 */
export function decodeJpegTs(b: Uint8Array, deadline = Number.POSITIVE_INFINITY): JpegImage {
  const qt: Int32Array[] = [];
  const dcTables: Huffman[] = [];
  const acTables: Huffman[] = [];
  let comps: Component[] = [];
  let width = 0;
  let height = 0;
  let mcusX = 0;
  let mcusY = 0;
  let hmax = 1;
  let vmax = 1;
  let progressive = false;
  let adobeTransform = -1;
  let jfif = false;
  let restartInterval = 0;
  let at = 2;
  let sawFrame = false;
  let sawEnd = false;

  const u16 = (i: number): number => (b[i] << 8) | b[i + 1];
  while (at + 2 <= b.length && !sawEnd) {
    if (b[at] !== 0xff) throw corrupt(`expected a marker at byte ${at}`);
    const m = b[at + 1];
    if (m === 0xff) {
      at++;
      continue;
    }
    if (m === 0xd9) {
      sawEnd = true;
      break;
    }
    if (m >= 0xd0 && m <= 0xd8) {
      at += 2;
      continue;
    }
    if (at + 4 > b.length) break;
    const len = u16(at + 2);
    const seg = at + 4;
    const end = at + 2 + len;
    if (len < 2 || end > b.length) throw corrupt("segment runs past the end");
    if (m === 0xdb) {
      for (let p = seg; p < end; ) {
        const pq = b[p] >> 4;
        const id = b[p] & 3;
        const t = new Int32Array(64);
        for (let i = 0; i < 64; i++) t[ZIGZAG[i]] = pq ? u16(p + 1 + 2 * i) : b[p + 1 + i];
        qt[id] = t;
        p += 1 + (pq ? 128 : 64);
      }
    } else if (m === 0xc4) {
      for (let p = seg; p < end; ) {
        const cls = b[p] >> 4;
        const id = b[p] & 3;
        const counts = b.subarray(p + 1, p + 17);
        let total = 0;
        for (const c of counts) total += c;
        if (p + 17 + total > end) throw corrupt("Huffman table runs past its segment");
        const table = buildHuffman(counts, b.subarray(p + 17, p + 17 + total));
        (cls ? acTables : dcTables)[id] = table;
        p += 17 + total;
      }
    } else if (m === 0xe0 && len >= 7 && String.fromCharCode(...b.subarray(seg, seg + 5)) === "JFIF\0") {
      jfif = true;
    } else if (m === 0xee && len >= 14 && String.fromCharCode(...b.subarray(seg, seg + 5)) === "Adobe") {
      adobeTransform = b[seg + 11];
    } else if (m === 0xdd) {
      restartInterval = u16(seg);
    } else if (m >= 0xc0 && m <= 0xcf && m !== 0xc4 && m !== 0xc8 && m !== 0xcc) {
      // One frame only: the size checked against the limits is the first frame header's.
      if (sawFrame) throw corrupt("more than one frame header");
      if (m !== 0xc0 && m !== 0xc1 && m !== 0xc2) throw unsupported("arithmetic or lossless coding");
      if (b[seg] !== 8) throw unsupported(`${b[seg]}-bit samples`);
      progressive = m === 0xc2;
      height = u16(seg + 1);
      width = u16(seg + 3);
      const n = b[seg + 5];
      if (n !== 1 && n !== 3 && n !== 4) throw corrupt(`unsupported component count ${n}`);
      if (width < 1 || height < 1) throw corrupt("zero width or height");
      if (len < 8 + 3 * n) throw corrupt("short frame header");
      const raw = Array.from({ length: n }, (_, c) => {
        const o = seg + 6 + 3 * c;
        return { id: b[o], h: b[o + 1] >> 4, v: b[o + 1] & 15, tq: b[o + 2] & 3 };
      });
      hmax = Math.max(...raw.map((c) => c.h));
      vmax = Math.max(...raw.map((c) => c.v));
      for (const c of raw) {
        if (c.h < 1 || c.v < 1 || c.h > 4 || c.v > 4) throw corrupt("bad sampling factors");
        const fh = hmax / c.h;
        const fv = vmax / c.v;
        const ok = (fh === 1 && fv === 1) || (fh === 2 && fv === 1) || (fh === 2 && fv === 2);
        if (!ok) throw unsupported(`${c.h}x${c.v} sampling against ${hmax}x${vmax}`);
      }
      mcusX = Math.ceil(width / (8 * hmax));
      mcusY = Math.ceil(height / (8 * vmax));
      comps = raw.map((c) => {
        const dw = Math.ceil((width * c.h) / hmax);
        const dh = Math.ceil((height * c.v) / vmax);
        const allocW = mcusX * c.h;
        const allocH = mcusY * c.v;
        return {
          ...c,
          allocW,
          allocH,
          realW: Math.ceil(dw / 8),
          realH: Math.ceil(dh / 8),
          dw,
          dh,
          rows: Array.from({ length: allocH }, () => new Int16Array(allocW * 64)),
          pred: 0,
          dc: null,
          ac: null,
        };
      });
      sawFrame = true;
    } else if (m === 0xda) {
      if (!sawFrame) throw corrupt("scan before frame header");
      const ns = b[seg];
      if (ns < 1 || ns > 4 || len < 6 + 2 * ns) throw corrupt("bad scan header");
      const scomps: Component[] = [];
      for (let i = 0; i < ns; i++) {
        const cid = b[seg + 1 + 2 * i];
        const c = comps.find((x) => x.id === cid);
        if (!c) throw corrupt(`scan names unknown component ${cid}`);
        c.dc = dcTables[b[seg + 2 + 2 * i] >> 4] ?? null;
        c.ac = acTables[b[seg + 2 + 2 * i] & 15] ?? null;
        scomps.push(c);
      }
      const p = seg + 1 + 2 * ns;
      const ss = b[p];
      const se = b[p + 1];
      const ah = b[p + 2] >> 4;
      const al = b[p + 2] & 15;
      if (ss > 63 || se > 63 || ss > se || (!progressive && (ss !== 0 || se !== 63)))
        throw corrupt("bad spectral selection");
      if (progressive && ss > 0 && ns !== 1) throw corrupt("interleaved AC scan");
      at = decodeScan(b, end, scomps, {
        mcusX,
        mcusY,
        progressive,
        ss,
        se,
        ah,
        al,
        restartInterval,
        deadline,
      });
      continue;
    }
    at = end;
  }
  if (!sawFrame) throw corrupt("no frame header");
  if (!sawEnd) throw corrupt("the file is truncated: no end-of-image marker");

  // IDCT every block into one plane per component (block-padded, as libjpeg's buffers are), releasing
  // each block row of coefficients as soon as it is transformed: peak memory stays near the larger of
  // the coefficients (2 bytes per sample) and the planes plus the RGB output.
  const EMPTY = new Int16Array(0);
  const planes = comps.map((c) => {
    const q = qt[c.tq];
    if (!q) throw corrupt("missing quantization table");
    const stride = c.allocW * 8;
    const plane = new Uint8Array(stride * c.allocH * 8);
    const ws = new Int32Array(64);
    for (let by = 0; by < c.allocH; by++) {
      const row = c.rows[by];
      for (let bx = 0; bx < c.allocW; bx++)
        idctIslow(row, bx * 64, q, ws, plane, by * 8 * stride + bx * 8, stride);
      c.rows[by] = EMPTY;
    }
    return { plane, stride };
  });
  const out = new Uint8Array(width * height * 3);
  const rowBufs = comps.map(() => new Uint8Array(Math.max(width, 2 * Math.ceil(width / 2)) + 16));
  const lines: Uint8Array[] = new Array(comps.length);
  const offs = new Int32Array(comps.length);
  const rgbIds = comps.length === 3 && comps[0].id === 82 && comps[1].id === 71 && comps[2].id === 66;
  const transform =
    comps.length === 3
      ? jfif
        ? 1
        : adobeTransform >= 0
          ? adobeTransform
          : rgbIds
            ? 0
            : 1
      : adobeTransform === 2
        ? 2
        : 0;
  for (let y = 0; y < height; y++) {
    for (let i = 0; i < comps.length; i++) {
      const c = comps[i];
      const { plane, stride } = planes[i];
      if (c.h === hmax && c.v === vmax) {
        lines[i] = plane;
        offs[i] = y * stride;
      } else {
        upsampleRow(c, plane, stride, y, hmax / c.h, vmax / c.v, rowBufs[i]);
        lines[i] = rowBufs[i];
        offs[i] = 0;
      }
    }
    const o0 = y * width * 3;
    if (comps.length === 1) {
      const l = lines[0];
      const b0 = offs[0];
      for (let x = 0, o = o0; x < width; x++, o += 3) out[o] = out[o + 1] = out[o + 2] = l[b0 + x];
      continue;
    }
    const [l0, l1, l2] = lines;
    const [b0, b1, b2] = offs;
    if (comps.length === 3) {
      for (let x = 0, o = o0; x < width; x++, o += 3) {
        const a = l0[b0 + x];
        const cb = l1[b1 + x];
        const cr = l2[b2 + x];
        if (transform === 0) {
          out[o] = a;
          out[o + 1] = cb;
          out[o + 2] = cr;
        } else {
          out[o] = clamp255(a + CR_R[cr]);
          out[o + 1] = clamp255(a + ((CB_G[cb] + CR_G[cr]) >> 16));
          out[o + 2] = clamp255(a + CB_B[cb]);
        }
      }
      continue;
    }
    const l3 = lines[3];
    const b3 = offs[3];
    for (let x = 0, o = o0; x < width; x++, o += 3) {
      const a = l0[b0 + x];
      const bb = l1[b1 + x];
      const cc = l2[b2 + x];
      const k = l3[b3 + x];
      let c0 = a;
      let m0 = bb;
      let y0 = cc;
      if (transform === 2) {
        c0 = clamp255(255 - (a + CR_R[cc]));
        m0 = clamp255(255 - (a + ((CB_G[bb] + CR_G[cc]) >> 16)));
        y0 = clamp255(255 - (a + CB_B[bb]));
      }
      // Pillow reads CMYK JPEGs inverted ("CMYK;I"): C' = 255 - c, K' = 255 - k, so nk = 255 - K' = k.
      out[o] = clamp255(k - mulDiv255(255 - c0, k));
      out[o + 1] = clamp255(k - mulDiv255(255 - m0, k));
      out[o + 2] = clamp255(k - mulDiv255(255 - y0, k));
    }
  }
  return { width, height, data: out };
}

/**
 * One full-resolution row `y` of a subsampled component, with libjpeg-turbo's fancy upsampling (h2v1:
 * 3/4 + 1/4 with biases 1 and 2; h2v2: 9/16, 3/16, 3/16, 1/16 with biases 8 and 7; first and last
 * columns special; the rows above the first and below the last replicate them). Components at most 2
 * samples wide are replicated instead, as libjpeg-turbo does.
 */
function upsampleRow(
  c: Component,
  plane: Uint8Array,
  stride: number,
  y: number,
  fh: number,
  fv: number,
  out: Uint8Array,
): void {
  const dw = c.dw;
  const r = fv === 2 ? y >> 1 : y;
  const in0 = r * stride;
  if (dw <= 2) {
    for (let x = 0; x < out.length - 16; x++) out[x] = plane[in0 + Math.floor(x / fh)];
    return;
  }
  if (fv === 1) {
    let v = plane[in0];
    out[0] = v;
    out[1] = (v * 3 + plane[in0 + 1] + 2) >> 2;
    for (let x = 1; x < dw - 1; x++) {
      v = plane[in0 + x] * 3;
      out[2 * x] = (v + plane[in0 + x - 1] + 1) >> 2;
      out[2 * x + 1] = (v + plane[in0 + x + 1] + 2) >> 2;
    }
    v = plane[in0 + dw - 1];
    out[2 * dw - 2] = (v * 3 + plane[in0 + dw - 2] + 1) >> 2;
    out[2 * dw - 1] = v;
    return;
  }
  const nr = (y & 1) === 0 ? Math.max(r - 1, 0) : Math.min(r + 1, c.dh - 1);
  const in1 = nr * stride;
  let last = plane[in0] * 3 + plane[in1];
  let cur = last;
  let next = plane[in0 + 1] * 3 + plane[in1 + 1];
  out[0] = (cur * 4 + 8) >> 4;
  out[1] = (cur * 3 + next + 7) >> 4;
  last = cur;
  cur = next;
  for (let x = 1; x < dw - 1; x++) {
    next = plane[in0 + x + 1] * 3 + plane[in1 + x + 1];
    out[2 * x] = (cur * 3 + last + 8) >> 4;
    out[2 * x + 1] = (cur * 3 + next + 7) >> 4;
    last = cur;
    cur = next;
  }
  out[2 * dw - 2] = (cur * 3 + last + 8) >> 4;
  out[2 * dw - 1] = (cur * 4 + 7) >> 4;
}

const clamp255 = (v: number): number => (v < 0 ? 0 : Math.min(v, 255));
const mulDiv255 = (a: number, b: number): number => {
  const t = a * b + 128;
  return ((t >> 8) + t) >> 8;
};

// libjpeg's YCC tables (jdcolor.c build_ycc_rgb_table), SCALEBITS = 16.
const FIX = (x: number): number => Math.trunc(x * 65536 + 0.5);
const CR_R = new Int32Array(256);
const CB_B = new Int32Array(256);
const CR_G = new Int32Array(256);
const CB_G = new Int32Array(256);
for (let i = 0; i < 256; i++) {
  const x = i - 128;
  CR_R[i] = (FIX(1.402) * x + 32768) >> 16;
  CB_B[i] = (FIX(1.772) * x + 32768) >> 16;
  CR_G[i] = -FIX(0.71414) * x;
  CB_G[i] = -FIX(0.34414) * x + 32768;
}

interface ScanParams {
  mcusX: number;
  mcusY: number;
  progressive: boolean;
  ss: number;
  se: number;
  ah: number;
  al: number;
  restartInterval: number;
  deadline: number;
}

/** Decodes one scan's entropy-coded data starting at `start`; returns the offset of the next marker. */
function decodeScan(b: Uint8Array, start: number, comps: Component[], s: ScanParams): number {
  let pos = start;
  let bitBuf = 0;
  let bitCnt = 0;
  let hitMarker = false;
  const fill = (): void => {
    while (bitCnt <= 24) {
      let byte = 0;
      if (!hitMarker && pos < b.length) {
        byte = b[pos];
        if (byte === 0xff) {
          const nxt = b[pos + 1];
          if (nxt === 0) pos += 2;
          else {
            hitMarker = true; // libjpeg feeds zeros past a marker
            byte = 0;
          }
        } else pos++;
      }
      bitBuf = ((bitBuf << 8) | byte) >>> 0;
      bitCnt += 8;
    }
  };
  const bits = (n: number): number => {
    if (n === 0) return 0;
    if (bitCnt < n) fill();
    bitCnt -= n;
    return (bitBuf >>> bitCnt) & ((1 << n) - 1);
  };
  const bit = (): number => bits(1);
  const decode = (h: Huffman | null): number => {
    if (!h) throw corrupt("scan uses a missing Huffman table");
    if (bitCnt < 9) fill();
    const e = h.lut[(bitBuf >>> (bitCnt - 9)) & 511];
    if (e) {
      bitCnt -= e >> 8;
      return e & 255;
    }
    let code = bit();
    let len = 1;
    while (code > h.maxcode[len]) {
      code = (code << 1) | bit();
      if (++len > 16) throw corrupt("bad Huffman code");
    }
    const v = h.values[code + h.valptr[len]];
    if (v === undefined) throw corrupt("bad Huffman code");
    return v;
  };
  const extend = (v: number, t: number): number => (v < 1 << (t - 1) ? v - (1 << t) + 1 : v);

  let eobrun = 0;
  const { ss, se, ah, al } = s;
  const decodeBlock = (c: Component, co: Int16Array, off: number): void => {
    if (!s.progressive) {
      const t = decode(c.dc);
      c.pred += t ? extend(bits(t), t) : 0;
      co[off] = c.pred;
      for (let k = 1; k < 64; k++) {
        const rs = decode(c.ac);
        const r = rs >> 4;
        const sz = rs & 15;
        if (sz) {
          k += r;
          if (k > 63) throw corrupt("AC coefficient index past 63");
          co[off + ZIGZAG[k]] = extend(bits(sz), sz);
        } else if (r === 15) k += 15;
        else break;
      }
      return;
    }
    if (ss === 0) {
      if (ah === 0) {
        const t = decode(c.dc);
        c.pred += t ? extend(bits(t), t) : 0;
        co[off] = c.pred * (1 << al);
      } else if (bit()) co[off] |= 1 << al;
      return;
    }
    if (ah === 0) {
      if (eobrun > 0) {
        eobrun--;
        return;
      }
      for (let k = ss; k <= se; k++) {
        const rs = decode(c.ac);
        const r = rs >> 4;
        const sz = rs & 15;
        if (sz) {
          k += r;
          if (k > 63) throw corrupt("AC coefficient index past 63");
          co[off + ZIGZAG[k]] = extend(bits(sz), sz) * (1 << al);
        } else if (r < 15) {
          eobrun = (1 << r) - 1 + bits(r);
          break;
        } else k += 15;
      }
      return;
    }
    // AC refinement (libjpeg's decode_mcu_AC_refine).
    const p1 = 1 << al;
    const m1 = -1 << al;
    let k = ss;
    if (eobrun === 0) {
      for (; k <= se; k++) {
        const rs = decode(c.ac);
        let r = rs >> 4;
        let sz = rs & 15;
        if (sz) {
          sz = bit() ? p1 : m1;
        } else if (r !== 15) {
          eobrun = (1 << r) + bits(r);
          break;
        }
        while (k <= se) {
          const idx = off + ZIGZAG[k];
          const v = co[idx];
          if (v !== 0) {
            if (bit() && (v & p1) === 0) co[idx] = v >= 0 ? v + p1 : v + m1;
          } else if (--r < 0) break;
          k++;
        }
        if (sz && k <= se) co[off + ZIGZAG[k]] = sz;
      }
    }
    if (eobrun > 0) {
      for (; k <= se; k++) {
        const idx = off + ZIGZAG[k];
        const v = co[idx];
        if (v !== 0 && bit() && (v & p1) === 0) co[idx] = v >= 0 ? v + p1 : v + m1;
      }
      eobrun--;
    }
  };

  const single = comps.length === 1;
  const c0 = comps[0];
  const total = single ? c0.realW * c0.realH : s.mcusX * s.mcusY;
  let sinceRestart = 0;
  for (let i = 0; i < total; i++) {
    if (s.restartInterval && sinceRestart === s.restartInterval) {
      // Byte-align, expect RSTn, reset predictions.
      bitCnt = 0;
      bitBuf = 0;
      hitMarker = false;
      while (pos + 1 < b.length && !(b[pos] === 0xff && b[pos + 1] >= 0xd0 && b[pos + 1] <= 0xd7)) pos++;
      pos += 2;
      for (const c of comps) c.pred = 0;
      eobrun = 0;
      sinceRestart = 0;
    }
    if (single) {
      // Non-interleaved: the component's real blocks in raster order.
      const by = Math.floor(i / c0.realW);
      const bx = i % c0.realW;
      decodeBlock(c0, c0.rows[by], bx * 64);
    } else {
      const my = Math.floor(i / s.mcusX);
      const mx = i % s.mcusX;
      for (const c of comps) {
        for (let v = 0; v < c.v; v++) {
          for (let h = 0; h < c.h; h++) decodeBlock(c, c.rows[my * c.v + v], (mx * c.h + h) * 64);
        }
      }
    }
    sinceRestart++;
    if ((i & 1023) === 0 && performance.now() > s.deadline) {
      throw new AppError(
        "decode-timeout",
        503,
        "Decoding the JPEG took longer than the time limit; send a smaller image.",
      );
    }
  }
  // Skip to the next marker (past any padding bits and fill bytes).
  while (
    pos + 1 < b.length &&
    !(b[pos] === 0xff && b[pos + 1] !== 0 && !(b[pos + 1] >= 0xd0 && b[pos + 1] <= 0xd7))
  )
    pos++;
  return pos;
}

// ISLOW IDCT constants (jidctint.c), CONST_BITS = 13, PASS1_BITS = 2.
const F0_298 = 2446;
const F0_390 = 3196;
const F0_541 = 4433;
const F0_765 = 6270;
const F0_899 = 7373;
const F1_175 = 9633;
const F1_501 = 12299;
const F1_847 = 15137;
const F1_961 = 16069;
const F2_053 = 16819;
const F2_562 = 20995;
const F3_072 = 25172;

/** First IDCT pass: DESCALE by CONST_BITS - PASS1_BITS. */
function descale11(x: number): number {
  return (x + 1024) >> 11;
}

/** Second IDCT pass: DESCALE by CONST_BITS + PASS1_BITS + 3, level shift and range limit. */
function descale18(x: number): number {
  return clamp255(((x + 131072) >> 18) + 128);
}

function idctIslow(
  co: Int16Array,
  off: number,
  q: Int32Array,
  ws: Int32Array,
  out: Uint8Array,
  outOff: number,
  stride: number,
): void {
  // Pass 1: columns, results scaled up by 2^PASS1_BITS.
  for (let c = 0; c < 8; c++) {
    const i = off + c;
    if (
      co[i + 8] === 0 &&
      co[i + 16] === 0 &&
      co[i + 24] === 0 &&
      co[i + 32] === 0 &&
      co[i + 40] === 0 &&
      co[i + 48] === 0 &&
      co[i + 56] === 0
    ) {
      const dc = (co[i] * q[c]) << 2;
      for (let r = 0; r < 8; r++) ws[r * 8 + c] = dc;
      continue;
    }
    let z2 = co[i + 16] * q[c + 16];
    let z3 = co[i + 48] * q[c + 48];
    let z1 = (z2 + z3) * F0_541;
    let t2 = z1 + z3 * -F1_847;
    let t3 = z1 + z2 * F0_765;
    z2 = co[i] * q[c];
    z3 = co[i + 32] * q[c + 32];
    let t0 = (z2 + z3) * 8192;
    let t1 = (z2 - z3) * 8192;
    const t10 = t0 + t3;
    const t13 = t0 - t3;
    const t11 = t1 + t2;
    const t12 = t1 - t2;
    t0 = co[i + 56] * q[c + 56];
    t1 = co[i + 40] * q[c + 40];
    t2 = co[i + 24] * q[c + 24];
    t3 = co[i + 8] * q[c + 8];
    z1 = t0 + t3;
    z2 = t1 + t2;
    z3 = t0 + t2;
    let z4 = t1 + t3;
    const z5 = (z3 + z4) * F1_175;
    t0 *= F0_298;
    t1 *= F2_053;
    t2 *= F3_072;
    t3 *= F1_501;
    z1 *= -F0_899;
    z2 *= -F2_562;
    z3 = z3 * -F1_961 + z5;
    z4 = z4 * -F0_390 + z5;
    t0 += z1 + z3;
    t1 += z2 + z4;
    t2 += z2 + z3;
    t3 += z1 + z4;
    ws[c] = descale11(t10 + t3);
    ws[56 + c] = descale11(t10 - t3);
    ws[8 + c] = descale11(t11 + t2);
    ws[48 + c] = descale11(t11 - t2);
    ws[16 + c] = descale11(t12 + t1);
    ws[40 + c] = descale11(t12 - t1);
    ws[24 + c] = descale11(t13 + t0);
    ws[32 + c] = descale11(t13 - t0);
  }
  // Pass 2: rows, descale by 2^(CONST_BITS + PASS1_BITS + 3), level shift +128, clamp.
  for (let r = 0; r < 8; r++) {
    const w = r * 8;
    const o = outOff + r * stride;
    let z2 = ws[w + 2];
    let z3 = ws[w + 6];
    let z1 = (z2 + z3) * F0_541;
    let t2 = z1 + z3 * -F1_847;
    let t3 = z1 + z2 * F0_765;
    let t0 = (ws[w] + ws[w + 4]) * 8192;
    let t1 = (ws[w] - ws[w + 4]) * 8192;
    const t10 = t0 + t3;
    const t13 = t0 - t3;
    const t11 = t1 + t2;
    const t12 = t1 - t2;
    t0 = ws[w + 7];
    t1 = ws[w + 5];
    t2 = ws[w + 3];
    t3 = ws[w + 1];
    z1 = t0 + t3;
    z2 = t1 + t2;
    z3 = t0 + t2;
    let z4 = t1 + t3;
    const z5 = (z3 + z4) * F1_175;
    t0 *= F0_298;
    t1 *= F2_053;
    t2 *= F3_072;
    t3 *= F1_501;
    z1 *= -F0_899;
    z2 *= -F2_562;
    z3 = z3 * -F1_961 + z5;
    z4 = z4 * -F0_390 + z5;
    t0 += z1 + z3;
    t1 += z2 + z4;
    t2 += z2 + z3;
    t3 += z1 + z4;
    out[o] = descale18(t10 + t3);
    out[o + 7] = descale18(t10 - t3);
    out[o + 1] = descale18(t11 + t2);
    out[o + 6] = descale18(t11 - t2);
    out[o + 2] = descale18(t12 + t1);
    out[o + 5] = descale18(t12 - t1);
    out[o + 3] = descale18(t13 + t0);
    out[o + 4] = descale18(t13 - t0);
  }
}
