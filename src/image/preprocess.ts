/**
 * @module
 * `BeitImageProcessor` steps on an RGB image: resize with the configured PIL filter (Pillow-exact),
 * optional center crop with transformers' zero padding, rescale (float64 product cast to float32) and
 * normalize ((x - mean) / std in float32), returned as NCHW float32 [1, 3, H, W].
 */

import type { PreprocessSpec } from "../shared/manifest.ts";
import type { RgbImage } from "./decode.ts";
import { type ResampleCode, type Rgb8, resizeRgb } from "./resample.ts";

export type { PreprocessSpec } from "../shared/manifest.ts";

/** preprocessor_config.json of microsoft/beit-base-patch16-224-pt22k-ft22k. */
export const BEIT_BASE_PREPROCESS: Readonly<PreprocessSpec> = Object.freeze({
  do_resize: true,
  size: { height: 224, width: 224 },
  resample: 2,
  do_center_crop: false,
  crop_size: { height: 224, width: 224 },
  do_rescale: true,
  rescale_factor: 1 / 255,
  do_normalize: true,
  image_mean: [0.5, 0.5, 0.5] as [number, number, number],
  image_std: [0.5, 0.5, 0.5] as [number, number, number],
  do_reduce_labels: false,
});

/**
 * transformers' `center_crop`: crop (height, width) around the centre, top/left = floor((in - crop) / 2);
 * when the image is smaller, pad with zeros first (ceil of half the shortfall on the top/left).
 */
export function centerCrop(img: Rgb8, cropH: number, cropW: number): Rgb8 {
  const { width: W, height: H } = img;
  let top = Math.floor((H - cropH) / 2);
  let left = Math.floor((W - cropW) / 2);
  // Pad offsets (0 when the crop fits).
  const fits = top >= 0 && left >= 0 && top + cropH <= H && left + cropW <= W;
  let padTop = 0;
  let padLeft = 0;
  let nh = H;
  let nw = W;
  if (!fits) {
    nh = Math.max(cropH, H);
    nw = Math.max(cropW, W);
    padTop = Math.ceil((nh - H) / 2);
    padLeft = Math.ceil((nw - W) / 2);
    top += padTop;
    left += padLeft;
  }
  const y0 = Math.max(0, top);
  const y1 = Math.min(nh, top + cropH);
  const x0 = Math.max(0, left);
  const x1 = Math.min(nw, left + cropW);
  const oh = y1 - y0;
  const ow = x1 - x0;
  const res = new Uint8Array(ow * oh * 3);
  for (let y = 0; y < oh; y++) {
    const py = y + y0 - padTop;
    if (py < 0 || py >= H) continue;
    for (let x = 0; x < ow; x++) {
      const px = x + x0 - padLeft;
      if (px < 0 || px >= W) continue;
      const s = (py * W + px) * 3;
      const d = (y * ow + x) * 3;
      res[d] = img.data[s];
      res[d + 1] = img.data[s + 1];
      res[d + 2] = img.data[s + 2];
    }
  }
  return { width: ow, height: oh, data: res };
}

/**
 * Turns an RGB image into `pixel_values` exactly as `BeitImageProcessor` does with Pillow underneath.
 *
 * @returns NCHW float32 [1, 3, H, W] (H, W from size or crop_size).
 * @example
 * const pixels = preprocess(await decodeImage(bytes), BEIT_BASE_PREPROCESS); // length 3 * 224 * 224
 */
export function preprocess(img: RgbImage | Rgb8, spec: PreprocessSpec): Float32Array {
  let r: Rgb8 = img;
  if (spec.do_resize) r = resizeRgb(r, spec.size.width, spec.size.height, spec.resample as ResampleCode);
  if (spec.do_center_crop) r = centerCrop(r, spec.crop_size.height, spec.crop_size.width);
  const { width: W, height: H, data } = r;
  const plane = W * H;
  const out = new Float32Array(3 * plane);
  const f = Math.fround;
  const lut = new Float32Array(256 * 3);
  for (let c = 0; c < 3; c++) {
    const mean = f(spec.image_mean[c]);
    const std = f(spec.image_std[c]);
    for (let v = 0; v < 256; v++) {
      let x = spec.do_rescale ? f(v * spec.rescale_factor) : v;
      if (spec.do_normalize) x = f(f(x - mean) / std);
      lut[c * 256 + v] = x;
    }
  }
  for (let i = 0, s = 0; i < plane; i++, s += 3) {
    out[i] = lut[data[s]];
    out[plane + i] = lut[256 + data[s + 1]];
    out[2 * plane + i] = lut[512 + data[s + 2]];
  }
  return out;
}
