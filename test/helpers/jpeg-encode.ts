/**
 * @module
 * Large JPEG inputs made at test time (never committed) with jSquash's MozJPEG encoder. Encoders are
 * not the codec boundary (src/image/codecs.ts owns the decoders); biome.json allows this file.
 */
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import encodeJpeg, { init as initJpegEnc } from "@jsquash/jpeg/encode.js";

/** A baseline 4:2:0 JPEG of a smooth gradient, encoded with MozJPEG (as phones write them). */
export async function bigJpeg(width: number, height: number): Promise<Uint8Array> {
  const require = createRequire(import.meta.url);
  const compile = (WebAssembly as unknown as { compile(b: BufferSource): Promise<WebAssembly.Module> })
    .compile;
  await initJpegEnc(
    await compile(await readFile(require.resolve("@jsquash/jpeg/codec/enc/mozjpeg_enc.wasm"))),
  );
  const data = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    data[4 * i] = i % 251;
    data[4 * i + 1] = (i / width) % 253;
    data[4 * i + 2] = 90;
    data[4 * i + 3] = 255;
  }
  const image = { data, width, height, colorSpace: "srgb" } as unknown as Parameters<typeof encodeJpeg>[0];
  return new Uint8Array(
    await encodeJpeg(image, { quality: 80, baseline: true, auto_subsample: false, chroma_subsample: 2 }),
  );
}
