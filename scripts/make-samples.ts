/**
 * @module
 * Makes the sample images every example in the README, docs/ and `npm start`'s banner uses
 * (samples/, committed): drawn here from a few formulas, no outside source, so they carry the
 * project's licence. Rerun after changing a picture: `npx tsx scripts/make-samples.ts`; the output
 * is byte-for-byte the same on every run (fixed seeds, fixed encoder settings).
 */
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { sampleJpeg } from "../bench/lib/sample-images.ts";
import { encodePng } from "../test/helpers/png.ts";

const OUT = resolve(import.meta.dirname, "../samples");

/** RGBA pixels from a function of (x, y) returning [r, g, b]. */
function draw(
  w: number,
  h: number,
  f: (x: number, y: number) => [number, number, number],
): Uint8ClampedArray {
  const data = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const [r, g, b] = f(x, y);
      data.set([r, g, b, 255], (y * w + x) * 4);
    }
  return data;
}

function rgbOf(rgba: Uint8ClampedArray): Uint8Array {
  const rgb = new Uint8Array((rgba.length / 4) * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) rgb.set(rgba.subarray(i, i + 3), j);
  return rgb;
}

/** A sunset: a sky from orange to purple, a sun disc, dark hills. */
function sunset(w: number, h: number): Uint8ClampedArray {
  return draw(w, h, (x, y) => {
    const t = y / h;
    const hill = h * (0.72 + 0.06 * Math.sin(x / 57) + 0.03 * Math.sin(x / 13));
    if (y > hill) return [30 + 10 * Math.sin(x / 7), 40, 35];
    const d = Math.hypot(x - w * 0.62, y - h * 0.6);
    if (d < h * 0.11) return [255, 225 - d * 0.6, 120];
    const glow = Math.max(0, 1 - d / (h * 0.6));
    return [250 - 90 * t + 5 * glow, 140 - 80 * t + 60 * glow, 70 + 90 * t];
  });
}

/** Concentric rings in two colours. */
function rings(w: number, h: number): Uint8ClampedArray {
  return draw(w, h, (x, y) => {
    const d = Math.hypot(x - w / 2, y - h / 2);
    return Math.floor(d / 12) % 2 ? [20, 90, 200] : [240, 200, 40];
  });
}

/** A black-and-white checkerboard of 32-pixel squares. */
function checkerboard(w: number, h: number): Uint8ClampedArray {
  return draw(w, h, (x, y) => (((x >> 5) + (y >> 5)) % 2 ? [250, 250, 250] : [15, 15, 15]));
}

async function main(): Promise<void> {
  const files: Record<string, Uint8Array> = {
    "sunset.jpg": await sampleJpegOf(sunset(640, 480), 640, 480),
    "blobs.jpg": await sampleJpeg(1, 640, 480),
    "rings.png": encodePng(256, 256, rgbOf(rings(256, 256))),
    "checkerboard.png": encodePng(256, 256, rgbOf(checkerboard(256, 256))),
  };
  for (const [name, bytes] of Object.entries(files)) {
    await writeFile(join(OUT, name), bytes);
    process.stdout.write(`samples/${name}: ${bytes.length} bytes\n`);
  }
}

async function sampleJpegOf(rgba: Uint8ClampedArray, w: number, h: number): Promise<Uint8Array> {
  return sampleJpeg(0, w, h, rgba);
}

await main();
