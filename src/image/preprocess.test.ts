import { createHash } from "node:crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { expected, fixture, patternImage } from "../../test/helpers/image-fixtures.ts";
import type { PreprocessSpec } from "../shared/manifest.ts";
import { initNodeCodecs } from "./codecs-node.ts";
import { imageToPixelValues } from "./index.ts";
import { BEIT_BASE_PREPROCESS, centerCrop, preprocess } from "./preprocess.ts";

beforeAll(() => initNodeCodecs());

const identity = (w: number, h: number): PreprocessSpec => ({
  ...BEIT_BASE_PREPROCESS,
  do_resize: false,
  size: { height: h, width: w },
});

describe("rescale + normalize match transformers (float64 rescale cast to float32, float32 normalize)", () => {
  it.each(Object.entries(expected.normalize))(
    "%s mean/std: all 256 levels bit-identical to numpy",
    (_, n) => {
      const src = { width: 256, height: 1, data: new Uint8Array(256 * 3) };
      for (let v = 0; v < 256; v++) src.data.fill(v, v * 3, v * 3 + 3);
      const spec: PreprocessSpec = {
        ...identity(256, 1),
        image_mean: n.mean as [number, number, number],
        image_std: n.std as [number, number, number],
      };
      const out = preprocess({ ...src, format: "png" }, spec);
      for (let c = 0; c < 3; c++) {
        expect(Array.from(out.subarray(c * 256, (c + 1) * 256))).toEqual(n.values[c]);
        for (let v = 0; v < 256; v++) {
          // float64 reference of the same formula: float32 rounding stays within 1e-6.
          const ref = (v / 255 - n.mean[c]) / n.std[c];
          expect(Math.abs(out[c * 256 + v] - ref)).toBeLessThanOrEqual(1e-6);
        }
      }
    },
  );

  it("do_rescale / do_normalize off pass values through as float32", () => {
    const img = { width: 2, height: 1, data: new Uint8Array([0, 128, 255, 7, 8, 9]), format: "png" as const };
    const out = preprocess(img, { ...identity(2, 1), do_rescale: false, do_normalize: false });
    expect(Array.from(out)).toEqual([0, 7, 128, 8, 255, 9]);
  });
});

describe("pixel_values for BEiT equal BeitImageProcessor on Pillow", () => {
  it.each(Object.entries(expected.pixel_values))("%s", async (name, e) => {
    const r = await imageToPixelValues(fixture(name), BEIT_BASE_PREPROCESS);
    expect(r.pixels.length).toBe(3 * 224 * 224);
    // Tolerance from the spec: one uint8 level after normalisation (1/255/std) plus 1e-6.
    const tol = 1 / 255 / 0.5 + 1e-6;
    e.samples.forEach((v, i) => {
      expect(Math.abs(r.pixels[i * e.step] - v)).toBeLessThanOrEqual(tol);
    });
    // Lossless sources are bit-identical to Pillow + numpy; JPEG may differ by the decoder's 1 LSB.
    if (!name.endsWith(".jpeg")) {
      const bytes = new Uint8Array(r.pixels.buffer, r.pixels.byteOffset, r.pixels.byteLength);
      expect(createHash("sha256").update(bytes).digest("hex")).toBe(e.sha256);
    }
  });
});

/**
 * Independent model of transformers' center_crop: output (y, x) is input (y + top, x + left) with
 * top/left = floor((in - crop) / 2), and 0 where that falls outside (its zero padding lands exactly there).
 */
function cropReference(img: { width: number; height: number; data: Uint8Array }, ch: number, cw: number) {
  const top = Math.floor((img.height - ch) / 2);
  const left = Math.floor((img.width - cw) / 2);
  const out: number[] = [];
  for (let y = 0; y < ch; y++)
    for (let x = 0; x < cw; x++)
      for (let c = 0; c < 3; c++) {
        const sy = y + top;
        const sx = x + left;
        const inside = sy >= 0 && sy < img.height && sx >= 0 && sx < img.width;
        out.push(inside ? img.data[(sy * img.width + sx) * 3 + c] : 0);
      }
  return out;
}

describe("center crop (do_center_crop) follows transformers' center_crop", () => {
  it.each([
    [10, 8, 4, 4],
    [11, 9, 4, 5],
    [5, 4, 8, 8],
    [6, 3, 4, 7],
    [7, 7, 7, 7],
  ])("%ix%i cropped to %ix%i", (w, h, cw, ch) => {
    const img = patternImage(w, h);
    const out = centerCrop(img, ch, cw);
    expect([out.width, out.height]).toEqual([cw, ch]);
    expect(Array.from(out.data)).toEqual(cropReference(img, ch, cw));
  });

  it("a config with do_center_crop resizes then crops", () => {
    const spec: PreprocessSpec = {
      ...BEIT_BASE_PREPROCESS,
      size: { height: 256, width: 256 },
      do_center_crop: true,
      crop_size: { height: 224, width: 224 },
    };
    const out = preprocess({ ...patternImage(300, 200), format: "png" }, spec);
    expect(out.length).toBe(3 * 224 * 224);
  });
});
