/**
 * @module
 * Entry of the gateway Worker: the Hono app of {@link createApp} wired to the image path. The
 * codec wasm files are imported statically (compiled modules, as Workers require) and handed to
 * the codec boundary once per isolate. PNG and GIF are decoded in TypeScript, so they need no wasm.
 *
 * Decodes run one at a time per isolate. One isolate may serve several requests at once, and a
 * 12 MP decode peaks near 100 MB (limits.ts), so two at the same instant would not fit the 128 MB
 * isolate. Decoding is CPU-bound on the isolate's single thread, so queueing costs no throughput.
 */
import avif from "@jsquash/avif/codec/dec/avif_dec.wasm";
import jpeg from "@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm";
import webp from "@jsquash/webp/codec/dec/webp_dec.wasm";
import { imageToPixelValues, initCodecs } from "../image/index.ts";
import { createApp } from "./app.ts";
import { serialize } from "./serialize.ts";

let codecs: Promise<void> | null = null;
const oneDecodeAtATime = serialize();

const app = createApp({
  decode: (bytes, spec, opts) =>
    oneDecodeAtATime(async () => {
      codecs ??= initCodecs({ jpeg, webp, avif });
      await codecs;
      const r = await imageToPixelValues(bytes, spec, { exifTranspose: opts.exifTranspose });
      return { pixels: r.pixels, width: r.width, height: r.height, format: r.format };
    }),
});

export default app;
