/**
 * @module
 * Entry of the gateway Worker: the Hono app of {@link createApp} wired to the image path. The
 * codec wasm files are imported statically (compiled modules, as Workers require) and handed to
 * the codec boundary once per isolate.
 */
import avif from "@jsquash/avif/codec/dec/avif_dec.wasm";
import jpeg from "@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm";
// @ts-expect-error: the package types this file as its wasm exports; Workers import it as a compiled module.
import png from "@jsquash/png/codec/pkg/squoosh_png_bg.wasm";
import webp from "@jsquash/webp/codec/dec/webp_dec.wasm";
import { imageToPixelValues, initCodecs } from "../image/index.ts";
import { createApp } from "./app.ts";

let codecs: Promise<void> | null = null;

const app = createApp({
  async decode(bytes, spec) {
    codecs ??= initCodecs({ jpeg, png, webp, avif });
    await codecs;
    const r = await imageToPixelValues(bytes, spec);
    return { pixels: r.pixels, width: r.width, height: r.height, format: r.format };
  },
});

export default app;
