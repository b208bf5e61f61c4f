import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { expected, patternImage } from "../../test/helpers/image-fixtures.ts";
import { Resample, type ResampleCode, resizeRgb } from "./resample.ts";

describe("resizeRgb reproduces Pillow's Image.resize", () => {
  it.each(expected.resize.map((c) => [`${c.src.join("x")} -> ${c.dst.join("x")} ${c.filter}`, c] as const))(
    "%s",
    (_, c) => {
      const out = resizeRgb(patternImage(c.src[0], c.src[1]), c.dst[0], c.dst[1], c.resample as ResampleCode);
      expect([out.width, out.height]).toEqual(c.dst);
      let max = 0;
      c.samples.forEach((v, i) => {
        max = Math.max(max, Math.abs(v - out.data[i * c.step]));
      });
      // Spec: at most 1 LSB from Pillow. In practice every case is bit-identical, which the hash pins.
      expect(max).toBeLessThanOrEqual(1);
      expect(createHash("sha256").update(out.data).digest("hex")).toBe(c.sha256);
    },
  );
});

/** Textbook float64 separable convolution with Pillow's tap placement, no fixed point, one final rounding. */
function float64Bilinear(
  src: { width: number; height: number; data: Uint8Array },
  ow: number,
  oh: number,
): Float64Array {
  const weights = (inSize: number, outSize: number) => {
    const scale = inSize / outSize;
    const fs = Math.max(scale, 1);
    return Array.from({ length: outSize }, (_, o) => {
      const center = (o + 0.5) * scale;
      const taps: [number, number][] = [];
      for (let i = 0; i < inSize; i++) {
        const w = Math.max(0, 1 - Math.abs((i + 0.5 - center) / fs));
        if (w > 0) taps.push([i, w]);
      }
      const sum = taps.reduce((s, [, w]) => s + w, 0);
      return taps.map(([i, w]) => [i, w / sum] as [number, number]);
    });
  };
  const wx = weights(src.width, ow);
  const wy = weights(src.height, oh);
  const tmp = new Float64Array(ow * src.height * 3);
  for (let y = 0; y < src.height; y++)
    for (let x = 0; x < ow; x++)
      for (let c = 0; c < 3; c++)
        tmp[(y * ow + x) * 3 + c] = wx[x].reduce(
          (s, [i, w]) => s + w * src.data[(y * src.width + i) * 3 + c],
          0,
        );
  const out = new Float64Array(ow * oh * 3);
  for (let y = 0; y < oh; y++)
    for (let x = 0; x < ow; x++)
      for (let c = 0; c < 3; c++)
        out[(y * ow + x) * 3 + c] = wy[y].reduce((s, [i, w]) => s + w * tmp[(i * ow + x) * 3 + c], 0);
  return out;
}

describe("against a float64 reference", () => {
  it.each([
    [301, 199, 224, 224],
    [97, 61, 224, 224],
    [640, 31, 37, 23],
  ])("bilinear %ix%i -> %ix%i stays within 1 of exact arithmetic", (sw, sh, dw, dh) => {
    const src = patternImage(sw, sh);
    const ours = resizeRgb(src, dw, dh, Resample.BILINEAR);
    const ref = float64Bilinear(src, dw, dh);
    let max = 0;
    for (let i = 0; i < ref.length; i++)
      max = Math.max(max, Math.abs(ours.data[i] - Math.min(255, Math.max(0, ref[i]))));
    // Two uint8 roundings (after each pass) and 22-bit fixed-point taps: bounded by 1 level.
    expect(max).toBeLessThanOrEqual(1);
  });
});

describe("edge cases", () => {
  it("same size returns an equal copy, not the same buffer", () => {
    const src = patternImage(5, 4);
    const out = resizeRgb(src, 5, 4, Resample.BILINEAR);
    expect(out.data).toEqual(src.data);
    expect(out.data).not.toBe(src.data);
  });

  it("a constant image stays constant under every filter", () => {
    const src = { width: 13, height: 7, data: new Uint8Array(13 * 7 * 3).fill(200) };
    for (const r of [0, 1, 2, 3, 4, 5] as ResampleCode[]) {
      expect(resizeRgb(src, 224, 224, r).data.every((v) => v === 200)).toBe(true);
      expect(resizeRgb(src, 3, 2, r).data.every((v) => v === 200)).toBe(true);
    }
  });

  it("refuses nonsense sizes and codes", () => {
    const src = patternImage(4, 4);
    expect(() => resizeRgb(src, 0, 4, Resample.BILINEAR)).toThrow(RangeError);
    expect(() => resizeRgb(src, 8, 8, 9 as ResampleCode)).toThrow(RangeError);
  });
});
