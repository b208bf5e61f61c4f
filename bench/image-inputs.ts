/**
 * @module
 * Benchmark inputs for the image path, generated with the jSquash encoders (Node only) and cached in
 * bench/results/image-inputs (git-ignored): 12-megapixel 4:2:0 JPEGs (4032x3024, a phone photo's size;
 * baseline and progressive),
 * a 1-megapixel PNG (1000x1000) and a 224x224 WebP. The picture is synthetic but photo-like (gradients,
 * soft blobs, edges, noise), so the codecs do realistic work. The service's workerd bench can post the
 * same bytes through the gateway via {@link imageBenchInputs}.
 */

import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import encodeJpeg, { init as initJpegEnc } from "@jsquash/jpeg/encode.js";
import encodePng, { init as initPngEnc } from "@jsquash/png/encode.js";
import encodeWebp, { init as initWebpEnc } from "@jsquash/webp/encode.js";

/** One encoded benchmark input. */
export interface BenchInput {
  name: string;
  format: "jpeg" | "png" | "webp";
  width: number;
  height: number;
  bytes: Uint8Array;
}

const CACHE = join(dirname(fileURLToPath(import.meta.url)), "results", "image-inputs");
const SPECS = [
  { name: "12mp.jpeg", format: "jpeg", width: 4032, height: 3024 },
  { name: "12mp-progressive.jpeg", format: "jpeg", width: 4032, height: 3024 },
  { name: "1mp.png", format: "png", width: 1000, height: 1000 },
  { name: "224.webp", format: "webp", width: 224, height: 224 },
] as const;

/** A photo-like RGBA picture (deterministic). */
export function syntheticPhoto(width: number, height: number, seed = 1): Uint8ClampedArray {
  const data = new Uint8ClampedArray(width * height * 4);
  let s = seed >>> 0;
  const rand = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
  const blobs = Array.from({ length: 8 }, () => ({
    x: rand() * width,
    y: rand() * height,
    r: (0.05 + rand() * 0.25) * Math.max(width, height),
    c: [rand() * 255, rand() * 255, rand() * 255],
  }));
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let r = 90 + (100 * x) / width;
      let g = 60 + (140 * y) / height;
      let b = 120 + 60 * Math.sin(x / 37) * Math.cos(y / 53);
      for (const bl of blobs) {
        const d2 = (x - bl.x) ** 2 + (y - bl.y) ** 2;
        const m = Math.exp(-d2 / (2 * bl.r * bl.r));
        r = r * (1 - m) + bl.c[0] * m;
        g = g * (1 - m) + bl.c[1] * m;
        b = b * (1 - m) + bl.c[2] * m;
      }
      if (((x >> 7) + (y >> 7)) % 5 === 0) r = 255 - r;
      const n = (rand() - 0.5) * 12;
      const o = (y * width + x) * 4;
      data[o] = r + n;
      data[o + 1] = g + n;
      data[o + 2] = b + n;
      data[o + 3] = 255;
    }
  }
  return data;
}

async function encode(spec: (typeof SPECS)[number]): Promise<Uint8Array> {
  const require = createRequire(import.meta.url);
  const compile = (WebAssembly as unknown as { compile(b: BufferSource): Promise<WebAssembly.Module> })
    .compile;
  const img = {
    data: syntheticPhoto(spec.width, spec.height),
    width: spec.width,
    height: spec.height,
    colorSpace: "srgb",
  };
  const image = img as unknown as Parameters<typeof encodeJpeg>[0];
  if (spec.format === "jpeg") {
    await initJpegEnc(
      await compile(await readFile(require.resolve("@jsquash/jpeg/codec/enc/mozjpeg_enc.wasm"))),
    );
    // Phones write baseline JPEGs; the web often serves progressive ones. Both are measured.
    const progressive = spec.name.includes("progressive");
    // 4:2:0 chroma, as phone cameras and most web JPEGs use.
    const opts = {
      quality: 90,
      baseline: !progressive,
      progressive,
      auto_subsample: false,
      chroma_subsample: 2,
    };
    return new Uint8Array(await encodeJpeg(image, opts));
  }
  if (spec.format === "webp") {
    await initWebpEnc(
      await compile(await readFile(require.resolve("@jsquash/webp/codec/enc/webp_enc_simd.wasm"))),
    );
    return new Uint8Array(await encodeWebp(image, { quality: 80 }));
  }
  await initPngEnc(
    await compile(await readFile(require.resolve("@jsquash/png/codec/pkg/squoosh_png_bg.wasm"))),
  );
  return new Uint8Array(await encodePng(image));
}

/**
 * The three benchmark inputs, encoded once and cached on disk.
 *
 * @example
 * for (const input of await imageBenchInputs()) await fetch(url, { method: "POST", body: input.bytes });
 */
export async function imageBenchInputs(): Promise<BenchInput[]> {
  await mkdir(CACHE, { recursive: true });
  const out: BenchInput[] = [];
  for (const spec of SPECS) {
    const file = join(CACHE, spec.name);
    let bytes: Uint8Array | null = await readFile(file)
      .then((b) => new Uint8Array(b))
      .catch(() => null);
    if (!bytes) {
      bytes = await encode(spec);
      await writeFile(file, bytes);
    }
    out.push({ ...spec, bytes });
  }
  return out;
}
