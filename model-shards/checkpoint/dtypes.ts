/**
 * @module
 * Element types of checkpoint files: sizes, and exact conversions between the stored 16-bit float
 * formats (IEEE half, bfloat16) and the Float32Array every floating tensor is widened to.
 */
import type { StoredDType, Tensor } from "./types.ts";

/** Bytes per element of each stored type. */
export const ITEM_SIZE: Record<StoredDType, number> = { F32: 4, F16: 2, BF16: 2, I64: 8 };

/** Whether `s` names a stored type this project reads. */
export function isStoredDType(s: unknown): s is StoredDType {
  return s === "F32" || s === "F16" || s === "BF16" || s === "I64";
}

/** Number of elements of a shape (src/shared/manifest.ts, shared with the Workers). */
export { numel } from "../../src/shared/manifest.ts";

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** Widens one IEEE half (bits in a uint16) to a float, exactly. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? Number.NaN : sign * Number.POSITIVE_INFINITY;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/** Narrows a float to IEEE half bits, round to nearest even (overflow to infinity). */
export function floatToHalf(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let h = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
  return sign | h;
}

/** Narrows a float to bfloat16 bits, round to nearest even (NaN stays NaN). */
export function floatToBf16(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  if ((bits & 0x7f800000) === 0x7f800000 && bits & 0x7fffff) return ((bits >>> 16) | 0x40) & 0xffff;
  const rounded = bits + 0x7fff + ((bits >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/**
 * Decodes `count` little-endian elements of `dtype` starting at `bytes[0]`: Float32Array for
 * floating types (16-bit types widened exactly), BigInt64Array for I64. With `view`, F32 and I64
 * data that is suitably aligned is returned as a view of `bytes` instead of a copy (the caller
 * must then own `bytes` and not change it).
 */
export function decodeElements(
  bytes: Uint8Array,
  dtype: StoredDType,
  count: number,
  view = false,
): Float32Array | BigInt64Array {
  const len = count * ITEM_SIZE[dtype];
  if (view && bytes.byteOffset % ITEM_SIZE[dtype] === 0 && bytes.byteLength >= len) {
    if (dtype === "F32") return new Float32Array(bytes.buffer, bytes.byteOffset, count);
    if (dtype === "I64") return new BigInt64Array(bytes.buffer, bytes.byteOffset, count);
  }
  // slice() copies into a fresh, aligned ArrayBuffer.
  const buf = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + len);
  if (dtype === "F32") return new Float32Array(buf);
  if (dtype === "I64") return new BigInt64Array(buf);
  const src = new Uint16Array(buf);
  const out = new Float32Array(count);
  if (dtype === "BF16") {
    const outBits = new Uint32Array(out.buffer);
    for (let i = 0; i < count; i++) outBits[i] = src[i] << 16;
  } else {
    for (let i = 0; i < count; i++) out[i] = halfToFloat(src[i]);
  }
  return out;
}

/**
 * The bytes of a tensor as its `dtype` stores them (little-endian). F32/I64 return a view without
 * copying; F16/BF16 narrow the Float32Array (round to nearest even).
 */
export function encodeTensor(t: Tensor): Uint8Array {
  const { data, dtype } = t;
  if (dtype === "I64") {
    if (!(data instanceof BigInt64Array)) throw new TypeError("I64 tensor needs BigInt64Array data");
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  if (!(data instanceof Float32Array)) throw new TypeError(`${dtype} tensor needs Float32Array data`);
  if (dtype === "F32") return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint16Array(data.length);
  const narrow = dtype === "F16" ? floatToHalf : floatToBf16;
  for (let i = 0; i < data.length; i++) out[i] = narrow(data[i]);
  return new Uint8Array(out.buffer);
}
