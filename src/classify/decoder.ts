/**
 * @module
 * The default {@link PixelDecoder} of every Worker that classifies: the image path
 * (src/image) with the codec wasm imported statically (compiled modules, as Workers require) and
 * handed to the codec boundary once per isolate. PNG and GIF are decoded in TypeScript, so they
 * need no wasm. Import it from a Worker entry only (Node has no static .wasm imports).
 *
 * Decodes run one at a time per isolate. One isolate may serve several requests at once, and a
 * 12 MP decode peaks near 100 MB (src/image/limits.ts), so two at the same instant would not fit
 * the 128 MB isolate. Decoding is CPU-bound on the isolate's single thread, so queueing costs no
 * throughput.
 */
import avif from "@jsquash/avif/codec/dec/avif_dec.wasm";
import jpeg from "@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm";
import webp from "@jsquash/webp/codec/dec/webp_dec.wasm";
import { imageToPixelValues, initCodecs } from "../image/index.ts";
import type { PixelDecoder } from "./index.ts";
import { serialize } from "./serialize.ts";

let codecs: Promise<void> | null = null;
const oneDecodeAtATime = serialize();

export const defaultDecoder: PixelDecoder = (bytes, spec, opts) =>
  oneDecodeAtATime(async () => {
    codecs ??= initCodecs({ jpeg, webp, avif });
    await codecs;
    const r = await imageToPixelValues(bytes, spec, { exifTranspose: opts.exifTranspose });
    return {
      pixels: r.pixels,
      width: r.width,
      height: r.height,
      format: r.format,
      preprocessMs: r.timings.preprocessMs,
    };
  });
