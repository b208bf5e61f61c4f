/**
 * @module
 * A zlib (RFC 1950) / deflate (RFC 1951) decoder that writes into a caller-sized buffer and stops
 * when it is full: the PNG decoder sizes it to the image's declared rows, so a stream that would
 * inflate to gigabytes costs the declared size and no more (as in Pillow, data past the image is
 * ignored). Input is read from a list of views (the IDAT chunks) without joining them.
 *
 * Huffman codes are read through a 10-bit lookup table; longer codes (rare symbols) are decoded
 * bit by bit from the canonical code counts, so building a table costs at most 1024 entries however
 * long its codes are. When the buffer fills exactly at the end of the stream, the Adler-32 check
 * value is verified; when more data follows the image, it is not read.
 */
import { AppError } from "../shared/errors.ts";
import { undecodable } from "./errors.ts";

const corrupt = (what: string): AppError => undecodable("png", `zlib data is corrupt: ${what}`);

/**
 * Most deflate blocks with their own Huffman tables (dynamic blocks) in one stream. Each costs a few
 * thousand table entries to build however little it holds, so a stream of tiny blocks would cost far
 * more than its size suggests; encoders write one per 16-64 KiB or so (a 20 MiB PNG: ~1,000).
 */
export const MAX_DYNAMIC_BLOCKS = 16_384;

const LENGTH_BASE = [
  3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195,
  227, 258,
];
const LENGTH_EXTRA = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
const DIST_BASE = [
  1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097,
  6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA = [
  0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13,
];
/** Order of the code length code lengths in a dynamic block header. */
const CL_ORDER = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];
const FAST_BITS = 10;

/** A canonical Huffman code: counts per length, symbols by code order, and a lookup table. */
interface Huffman {
  counts: Uint16Array;
  symbols: Uint16Array;
  /** Index = next FAST_BITS input bits; value = symbol << 4 | length, or -1 for longer codes. */
  fast: Int32Array;
}

function huffman(lengths: Uint8Array): Huffman {
  const counts = new Uint16Array(16);
  for (const l of lengths) counts[l]++;
  counts[0] = 0;
  let left = 1;
  for (let len = 1; len <= 15; len++) {
    left = (left << 1) - counts[len];
    if (left < 0) throw corrupt("over-subscribed Huffman code");
  }
  const offs = new Uint16Array(16);
  for (let len = 1; len < 15; len++) offs[len + 1] = offs[len] + counts[len];
  const symbols = new Uint16Array(lengths.length);
  for (let s = 0; s < lengths.length; s++) if (lengths[s]) symbols[offs[lengths[s]]++] = s;
  const fast = new Int32Array(1 << FAST_BITS).fill(-1);
  let code = 0;
  let index = 0;
  for (let len = 1; len <= FAST_BITS; len++) {
    for (let k = 0; k < counts[len]; k++) {
      let rev = 0;
      for (let b = 0; b < len; b++) rev |= ((code >> b) & 1) << (len - 1 - b);
      const entry = (symbols[index + k] << 4) | len;
      for (let i = rev; i < 1 << FAST_BITS; i += 1 << len) fast[i] = entry;
      code++;
    }
    index += counts[len];
    code <<= 1;
  }
  return { counts, symbols, fast };
}

let fixedLit: Huffman | null = null;
let fixedDist: Huffman | null = null;
function fixedCodes(): [Huffman, Huffman] {
  if (!fixedLit || !fixedDist) {
    const l = new Uint8Array(288);
    l.fill(8, 0, 144);
    l.fill(9, 144, 256);
    l.fill(7, 256, 280);
    l.fill(8, 280, 288);
    fixedLit = huffman(l);
    fixedDist = huffman(new Uint8Array(30).fill(5));
  }
  return [fixedLit, fixedDist];
}

/** Adler-32 of `b`. */
function adler32(b: Uint8Array): number {
  let a = 1;
  let s = 0;
  for (let i = 0; i < b.length; ) {
    const end = Math.min(b.length, i + 5552);
    for (; i < end; i++) {
      a += b[i];
      s += a;
    }
    a %= 65521;
    s %= 65521;
  }
  return ((s << 16) | a) >>> 0;
}

/** Thrown inside the decoder when the input ends; turned into "truncated" or a clean stop. */
const END_OF_INPUT = Symbol("end of input");

/**
 * Bit reader over a list of views. The bit buffer holds up to 24 bits, least significant first; the
 * hot loop in {@link inflateZlibInto} works on the same fields (no closures: bundlers wrap them).
 */
class BitReader {
  part = 0;
  cur: Uint8Array;
  pos = 0;
  buf = 0;
  count = 0;
  constructor(readonly parts: readonly Uint8Array[]) {
    this.cur = parts[0] ?? new Uint8Array(0);
  }
  /**
   * Tops the buffer up to at least 17 bits while input lasts (at most 24, so it stays a small
   * integer for V8, never a heap number); false when the input has run out.
   */
  refill(): boolean {
    while (this.count <= 16) {
      if (this.pos >= this.cur.length) {
        if (this.part + 1 >= this.parts.length) return false;
        this.cur = this.parts[++this.part];
        this.pos = 0;
        continue;
      }
      this.buf |= this.cur[this.pos++] << this.count;
      this.count += 8;
    }
    return true;
  }
  bits(n: number): number {
    if (n === 0) return 0;
    if (this.count < n && !this.refill() && this.count < n) throw END_OF_INPUT;
    const v = this.buf & ((1 << n) - 1);
    this.buf >>= n;
    this.count -= n;
    return v;
  }
  /** Skips to a byte boundary. */
  align(): void {
    this.bits(this.count & 7);
  }
  /** The next whole byte (after {@link align}). */
  byte(): number {
    return this.bits(8);
  }
  decode(h: Huffman): number {
    if (this.count < FAST_BITS) this.refill();
    const e = h.fast[this.buf & FAST_MASK];
    if (e >= 0 && (e & 15) <= this.count) {
      this.buf >>= e & 15;
      this.count -= e & 15;
      return e >> 4;
    }
    // Bit by bit from the canonical counts.
    let code = 0;
    let first = 0;
    let index = 0;
    for (let len = 1; len <= 15; len++) {
      code |= this.bits(1);
      const count = h.counts[len];
      if (code - first < count) return h.symbols[index + code - first];
      index += count;
      first = (first + count) << 1;
      code <<= 1;
    }
    throw corrupt("invalid Huffman code");
  }
}

const FAST_MASK = (1 << FAST_BITS) - 1;

/**
 * Inflates the zlib stream in `parts` into `out` until `out` is full.
 *
 * @throws AppError "undecodable-image" when the stream is corrupt or ends before `out` is full.
 * @example
 * const raw = new Uint8Array(rowsBytes);
 * inflateZlibInto(idatViews, raw);
 */
export function inflateZlibInto(parts: readonly Uint8Array[], out: Uint8Array): void {
  const r = new BitReader(parts);
  let o = 0;
  const n = out.length;
  try {
    const cmf = r.bits(8);
    const flg = r.bits(8);
    if ((cmf & 15) !== 8 || cmf >> 4 > 7 || ((cmf << 8) | flg) % 31 !== 0) throw corrupt("bad zlib header");
    if (flg & 0x20) throw corrupt("preset dictionary");
    let final = false;
    let dynamicBlocks = 0;
    while (!final && o < n) {
      final = r.bits(1) === 1;
      const type = r.bits(2);
      if (type === 0) {
        r.align();
        const len = r.byte() | (r.byte() << 8);
        const nlen = r.byte() | (r.byte() << 8);
        if ((len ^ 0xffff) !== nlen) throw corrupt("stored block length check");
        for (let i = 0; i < len && o < n; i++) out[o++] = r.byte();
        continue;
      }
      let lit: Huffman;
      let dist: Huffman;
      if (type === 1) [lit, dist] = fixedCodes();
      else if (type === 2) {
        if (++dynamicBlocks > MAX_DYNAMIC_BLOCKS)
          throw new AppError(
            "image-too-complex",
            422,
            `The PNG's compressed data has more than ${MAX_DYNAMIC_BLOCKS} deflate blocks with their own code tables; re-save it with a common encoder.`,
            { limit: "maxDynamicBlocks", max: MAX_DYNAMIC_BLOCKS },
          );
        [lit, dist] = dynamicCodes(r);
      } else throw corrupt("reserved block type");
      const litFast = lit.fast;
      const distFast = dist.fast;
      // The hot loop keeps the bit buffer in locals and refills from the current view inline while
      // it has 4 bytes left; anything unusual (view boundary, long code, end) goes through `r`.
      let buf = r.buf;
      let cnt = r.count;
      let pos = r.pos;
      let cur = r.cur;
      for (;;) {
        if (o >= n) {
          r.buf = buf;
          r.count = cnt;
          r.pos = pos;
          // The image is complete. If the stream ends right here, check its Adler-32.
          if (final && r.decode(lit) === 256) {
            r.align();
            const sum = ((r.byte() << 24) | (r.byte() << 16) | (r.byte() << 8) | r.byte()) >>> 0;
            if (sum !== adler32(out)) throw corrupt("incorrect data check");
          }
          return;
        }
        if (cnt < 15) {
          if (pos + 4 <= cur.length) {
            while (cnt <= 16) {
              buf |= cur[pos++] << cnt;
              cnt += 8;
            }
          } else {
            r.buf = buf;
            r.count = cnt;
            r.pos = pos;
            r.refill();
            buf = r.buf;
            cnt = r.count;
            pos = r.pos;
            cur = r.cur;
          }
        }
        let sym: number;
        const e = litFast[buf & FAST_MASK];
        if (e >= 0 && (e & 15) <= cnt) {
          buf >>= e & 15;
          cnt -= e & 15;
          sym = e >> 4;
          if (sym < 256) {
            out[o++] = sym;
            continue;
          }
        } else {
          r.buf = buf;
          r.count = cnt;
          r.pos = pos;
          sym = r.decode(lit);
          buf = r.buf;
          cnt = r.count;
          pos = r.pos;
          cur = r.cur;
          if (sym < 256) {
            out[o++] = sym;
            continue;
          }
        }
        if (sym === 256) {
          r.buf = buf;
          r.count = cnt;
          r.pos = pos;
          break;
        }
        const li = sym - 257;
        if (li >= 29) throw corrupt("invalid length code");
        // Length extra bits, distance code and distance extra bits: at most 5 + 15 + 13 bits.
        r.buf = buf;
        r.count = cnt;
        r.pos = pos;
        const length = LENGTH_BASE[li] + r.bits(LENGTH_EXTRA[li]);
        let di: number;
        if (r.count < FAST_BITS) r.refill();
        const d = distFast[r.buf & FAST_MASK];
        if (d >= 0 && (d & 15) <= r.count) {
          r.buf >>= d & 15;
          r.count -= d & 15;
          di = d >> 4;
        } else di = r.decode(dist);
        if (di >= 30) throw corrupt("invalid distance code");
        const distance = DIST_BASE[di] + r.bits(DIST_EXTRA[di]);
        buf = r.buf;
        cnt = r.count;
        pos = r.pos;
        cur = r.cur;
        if (distance > o) throw corrupt("distance too far back");
        const end = Math.min(n, o + length);
        if (distance >= length && end - o > 16) {
          out.copyWithin(o, o - distance, end - distance);
          o = end;
        } else for (; o < end; o++) out[o] = out[o - distance];
      }
    }
  } catch (e) {
    if (e === END_OF_INPUT) {
      if (o >= n) return; // complete image, the check value is cut off: nothing more to read
      throw undecodable("png", "image data is truncated");
    }
    throw e;
  }
  if (o < n) throw undecodable("png", "image data is truncated");
}

function dynamicCodes(r: BitReader): [Huffman, Huffman] {
  const bits = (k: number) => r.bits(k);
  const hlit = bits(5) + 257;
  const hdist = bits(5) + 1;
  const hclen = bits(4) + 4;
  if (hlit > 286 || hdist > 30) throw corrupt("too many length or distance codes");
  const clLengths = new Uint8Array(19);
  for (let i = 0; i < hclen; i++) clLengths[CL_ORDER[i]] = bits(3);
  const cl = huffman(clLengths);
  const lengths = new Uint8Array(hlit + hdist);
  for (let i = 0; i < hlit + hdist; ) {
    const sym = r.decode(cl);
    if (sym < 16) {
      lengths[i++] = sym;
      continue;
    }
    let repeat: number;
    let value = 0;
    if (sym === 16) {
      if (i === 0) throw corrupt("repeat with no previous length");
      value = lengths[i - 1];
      repeat = 3 + bits(2);
    } else if (sym === 17) repeat = 3 + bits(3);
    else repeat = 11 + bits(7);
    if (i + repeat > hlit + hdist) throw corrupt("too many code lengths");
    lengths.fill(value, i, i + repeat);
    i += repeat;
  }
  if (lengths[256] === 0) throw corrupt("no end-of-block code");
  return [huffman(lengths.subarray(0, hlit)), huffman(lengths.subarray(hlit))];
}
