/**
 * @module
 * Sample images for the tagging demo (`npm start`), the tagging e2e test and the backfill
 * benchmark: photo-like pictures (bench/image-inputs.ts syntheticPhoto: gradients, soft blobs,
 * edges, noise) encoded as baseline 4:2:0 JPEGs with jSquash's MozJPEG encoder, one seed each, so
 * every file has different bytes. Written once into `dir` and reused.
 */
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { join } from "node:path";
import encodeJpeg, { init as initJpegEnc } from "@jsquash/jpeg/encode.js";
import { syntheticPhoto } from "../image-inputs.ts";

let encoderReady: Promise<void> | null = null;

async function encoder(): Promise<void> {
  encoderReady ??= (async () => {
    const require = createRequire(import.meta.url);
    const wasm = await readFile(require.resolve("@jsquash/jpeg/codec/enc/mozjpeg_enc.wasm"));
    // Node's WebAssembly.compile (the Workers types in tsconfig leave it out: Workers forbid it).
    const compile = (WebAssembly as unknown as { compile(b: BufferSource): Promise<WebAssembly.Module> })
      .compile;
    await initJpegEnc(await compile(wasm));
  })();
  return encoderReady;
}

/** One photo-like JPEG of `width` x `height` from `seed` (or of the RGBA `pixels` given). */
export async function sampleJpeg(
  seed: number,
  width = 640,
  height = 480,
  pixels?: Uint8ClampedArray,
): Promise<Uint8Array> {
  await encoder();
  const image = { data: pixels ?? syntheticPhoto(width, height, seed), width, height, colorSpace: "srgb" };
  const opts = {
    quality: 85,
    baseline: true,
    progressive: false,
    auto_subsample: false,
    chroma_subsample: 2,
  };
  return new Uint8Array(await encodeJpeg(image as unknown as Parameters<typeof encodeJpeg>[0], opts));
}

/**
 * `count` sample JPEGs `<prefix>-000.jpg` ... in `dir` (existing files are kept); returns their
 * file names.
 */
export async function writeSampleImages(
  dir: string,
  count: number,
  opts: { prefix?: string; width?: number; height?: number; firstSeed?: number } = {},
): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const name = `${opts.prefix ?? "sample"}-${String(i).padStart(3, "0")}.jpg`;
    const path = join(dir, name);
    const exists = await stat(path).then(
      () => true,
      () => false,
    );
    if (!exists) await writeFile(path, await sampleJpeg((opts.firstSeed ?? 1) + i, opts.width, opts.height));
    names.push(name);
  }
  return names;
}
