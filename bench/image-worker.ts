/**
 * @module
 * A minimal Worker around the image path, for bench/image-workerd.ts: POST image bytes, get the decode
 * and preprocess timings measured inside workerd (local workerd's clock advances during compute; the
 * production runtime's does not, so these numbers are local-only).
 */
import avif from "@jsquash/avif/codec/dec/avif_dec.wasm";
import jpeg from "@jsquash/jpeg/codec/dec/mozjpeg_dec.wasm";
import webp from "@jsquash/webp/codec/dec/webp_dec.wasm";
import { BEIT_BASE_PREPROCESS, imageToPixelValues, initCodecs } from "../src/image/index.ts";
import { isAppError } from "../src/shared/errors.ts";

export default {
  async fetch(req: Request): Promise<Response> {
    await initCodecs({ jpeg, webp, avif });
    const bytes = new Uint8Array(await req.arrayBuffer());
    try {
      // Default limits, as the service runs: the 12 MP progressive input goes to the TypeScript decoder.
      const r = await imageToPixelValues(bytes, BEIT_BASE_PREPROCESS);
      let sum = 0;
      for (const v of r.pixels) sum += v;
      return Response.json({ width: r.width, height: r.height, sum, timings: r.timings });
    } catch (e) {
      if (isAppError(e)) return Response.json({ code: e.code, detail: e.detail }, { status: e.status });
      throw e;
    }
  },
};
