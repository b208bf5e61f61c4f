/**
 * The deflate decoder against node:zlib's encoder: every compression level and strategy, stored
 * blocks, many small inputs, outputs shorter than the stream (it stops), truncated and corrupted
 * streams (a clean undecodable-image, never another exception).
 */
import { constants, deflateSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { AppError } from "../shared/errors.ts";
import { mulberry32 } from "../shared/random.ts";
import { inflateZlibInto, MAX_DYNAMIC_BLOCKS } from "./inflate.ts";

function sample(n: number, seed: number, kind: "random" | "text" | "runs"): Uint8Array {
  const rand = mulberry32(seed);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    if (kind === "random") out[i] = Math.floor(rand() * 256);
    else if (kind === "text") out[i] = 97 + Math.floor(rand() * 6) + (i % 13 === 0 ? -65 : 0);
    else out[i] = i % 1000 < 700 ? 0 : Math.floor(rand() * 4);
  }
  return out;
}

function inflate(z: Uint8Array, size: number, pieces = 1): Uint8Array {
  const out = new Uint8Array(size);
  const step = Math.ceil(z.length / pieces);
  const parts = Array.from({ length: pieces }, (_, i) => z.subarray(i * step, (i + 1) * step));
  inflateZlibInto(parts, out);
  return out;
}

describe("inflateZlibInto", () => {
  it.each([0, 1, 6, 9])("round-trips zlib level %i (random, text-like and run-heavy data)", (level) => {
    for (const kind of ["random", "text", "runs"] as const) {
      const data = sample(150_000, level + 1, kind);
      const z = deflateSync(data, { level });
      expect(inflate(z, data.length)).toEqual(data);
      expect(inflate(z, data.length, 97)).toEqual(data);
    }
  });

  it("round-trips the Huffman-only, RLE and fixed-code strategies and tiny inputs", () => {
    const data = sample(60_000, 9, "text");
    for (const strategy of [constants.Z_HUFFMAN_ONLY, constants.Z_RLE, constants.Z_FIXED])
      expect(inflate(deflateSync(data, { strategy }), data.length)).toEqual(data);
    for (const n of [1, 2, 3, 257, 258, 259])
      expect(inflate(deflateSync(sample(n, n, "runs")), n)).toEqual(sample(n, n, "runs"));
  });

  it("stops when the output is full and ignores what follows", () => {
    const data = sample(100_000, 3, "runs");
    expect(inflate(deflateSync(data), 1234)).toEqual(data.subarray(0, 1234));
  });

  it("refuses truncated streams, a wrong Adler-32 and corrupted bytes with undecodable-image only", () => {
    const data = sample(20_000, 4, "text");
    const z = deflateSync(data);
    expect(() => inflate(z.subarray(0, z.length >> 1), data.length)).toThrow(/truncated/);
    const bad = z.slice();
    bad[bad.length - 1] ^= 1;
    expect(() => inflate(bad, data.length)).toThrow(/incorrect data check/);
    expect(() => inflate(z, data.length + 1)).toThrow(/truncated/);
    const rand = mulberry32(77);
    for (let trial = 0; trial < 300; trial++) {
      const m = z.slice();
      for (let k = 0; k < 1 + (trial % 5); k++) m[Math.floor(rand() * m.length)] = Math.floor(rand() * 256);
      try {
        inflate(m, data.length);
      } catch (e) {
        expect(e).toBeInstanceOf(AppError);
        expect((e as AppError).code).toBe("undecodable-image");
      }
    }
  });
});

/** A zlib stream of `n` dynamic-Huffman blocks, each holding one "A" (built bit by bit). */
function zlibTinyBlocks(n: number): Uint8Array {
  const bytes: number[] = [0x78, 0x01];
  let acc = 0;
  let nbits = 0;
  const put = (value: number, count: number) => {
    for (let i = 0; i < count; i++) {
      acc |= ((value >> i) & 1) << nbits;
      if (++nbits === 8) {
        bytes.push(acc);
        acc = 0;
        nbits = 0;
      }
    }
  };
  const code = (value: number, len: number) => {
    for (let i = len - 1; i >= 0; i--) put((value >> i) & 1, 1);
  };
  // Code length code: 18 -> "0", 0 -> "10", 1 -> "11". Literal/length code: 65 -> "0", 256 -> "1".
  const clLens: Record<number, number> = { 18: 1, 0: 2, 1: 2 };
  const order = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1];
  for (let b = 0; b < n; b++) {
    put(b === n - 1 ? 1 : 0, 1);
    put(2, 2);
    put(0, 5); // HLIT: 257
    put(0, 5); // HDIST: 1
    put(order.length - 4, 4);
    for (const sym of order) put(clLens[sym] ?? 0, 3);
    code(0, 1); // 18: 65 zeros
    put(65 - 11, 7);
    code(3, 2); // 1: literal 65
    code(0, 1); // 18: 138 zeros
    put(127, 7);
    code(0, 1); // 18: 52 zeros
    put(52 - 11, 7);
    code(3, 2); // 1: end of block
    code(2, 2); // 0: the one distance code unused
    code(0, 1); // literal "A"
    code(1, 1); // end of block
  }
  if (nbits) bytes.push(acc);
  let a = 1;
  let s2 = 0;
  for (let i = 0; i < n; i++) {
    a = (a + 65) % 65521;
    s2 = (s2 + a) % 65521;
  }
  const sum = ((s2 << 16) | a) >>> 0;
  bytes.push(sum >>> 24, (sum >>> 16) & 255, (sum >>> 8) & 255, sum & 255);
  return Uint8Array.from(bytes);
}

describe("inflateZlibInto work bound", () => {
  it(`refuses a stream of more than ${MAX_DYNAMIC_BLOCKS} dynamic blocks (422): tiny blocks would cost seconds of table building`, () => {
    const few = new Uint8Array(500);
    inflateZlibInto([zlibTinyBlocks(500)], few);
    expect(few.every((v) => v === 65)).toBe(true);
    const many = MAX_DYNAMIC_BLOCKS + 10;
    try {
      inflateZlibInto([zlibTinyBlocks(many)], new Uint8Array(many));
      throw new Error("expected a refusal");
    } catch (e) {
      expect(e).toBeInstanceOf(AppError);
      expect([(e as AppError).code, (e as AppError).status]).toEqual(["image-too-complex", 422]);
    }
  });
});
