/**
 * @module
 * Bytes to RGB the way the Hugging Face pipeline loads images: format from magic bytes, limits checked
 * from the header before any pixel buffer exists, decode through the codec boundary, EXIF orientation
 * (`ImageOps.exif_transpose`), then `Image.convert("RGB")` semantics: alpha dropped without compositing,
 * grayscale and palette expanded, 16-bit grayscale PNG clipped to 0..255 (Pillow's "I" -> "RGB").
 * JPEG, WebP and AVIF go through the wasm codecs; PNG, GIF and CMYK/YCCK JPEG through TypeScript decoders.
 * Every failure is an {@link AppError} with a stable code; codec exceptions and wasm traps never leak.
 */

import { AppError, isAppError } from "../shared/errors.ts";
import {
  decodeAvifRgba,
  decodeJpegRgba,
  decodeWebpRgba,
  hasCodec,
  type RgbaRaster,
  releaseLargeCodecs,
  retainedCodecBytes,
} from "./codecs.ts";
import { undecodable } from "./errors.ts";
import { applyOrientation, effectiveOrientation } from "./exif.ts";
import { decodeGifFirstFrame, gifCanvasSize } from "./gif.ts";
import {
  countJpegScans,
  type DetectedFormat,
  FORMAT_NAMES,
  type ImageHeader,
  readHeader,
  SUPPORTED_FORMATS,
  type SupportedFormat,
  sniffFormat,
} from "./header.ts";
import { decodeJpegTs } from "./jpeg-ts.ts";
import { estimateDecodeBytes, type ImageLimits, resolveLimits } from "./limits.ts";
import { decodePng } from "./png.ts";
import { composeFirstFrame, firstAnimationFrame } from "./webp-anim.ts";

export { type DetectedFormat, type SupportedFormat, sniffFormat } from "./header.ts";

/** A decoded image: RGB, 3 bytes per pixel, row-major, upright when EXIF orientation was applied. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
  format: SupportedFormat;
}

/** Options for {@link decodeImage}. */
export interface DecodeOptions {
  /** Overrides of {@link DEFAULT_LIMITS}. */
  limits?: Partial<ImageLimits>;
  /**
   * Apply the EXIF orientation like the Hugging Face pipeline (`ImageOps.exif_transpose`). Default true.
   * Set false to match `Image.open` + processor, as in the model card's example.
   */
  exifTranspose?: boolean;
}

const SUPPORTED_LIST = SUPPORTED_FORMATS.map((f) => FORMAT_NAMES[f]).join(", ");

/**
 * Names the detected format for an error message, or says nothing was recognised.
 */
function unsupported(detected: DetectedFormat | null): AppError {
  const what = detected ? `detected ${FORMAT_NAMES[detected]}` : "the bytes match no known image format";
  return new AppError(
    "unsupported-format",
    415,
    `Unsupported image format: ${what}; supported: ${SUPPORTED_LIST}. The format is read from the file's bytes, not its Content-Type or name.`,
    { detected },
  );
}

/**
 * Checks the encoded size, format and header dimensions against the limits without decoding.
 *
 * @returns the format and header, ready for {@link decodeImage}.
 * @throws AppError empty-body, image-too-large, unsupported-format, undecodable-image, image-too-small.
 */
export function inspectImage(bytes: Uint8Array, limits: ImageLimits): ImageHeader {
  if (bytes.length === 0) {
    throw new AppError(
      "empty-body",
      400,
      "The request body is empty; send the image file's bytes as the body.",
    );
  }
  if (bytes.length > limits.maxBytes) {
    throw new AppError(
      "image-too-large",
      413,
      `The image is ${bytes.length} bytes; the limit is ${limits.maxBytes} bytes. Send a smaller or more compressed file.`,
      { limit: "maxBytes", value: bytes.length, max: limits.maxBytes },
    );
  }
  const detected = sniffFormat(bytes);
  if (!detected || !(SUPPORTED_FORMATS as readonly string[]).includes(detected)) throw unsupported(detected);
  const format = detected as SupportedFormat;
  const header = readHeader(bytes, format);
  if (format === "gif") Object.assign(header, gifCanvasSize(bytes));
  if (format === "jpeg") checkJpegCoding(header);
  if ((header.chunks ?? 0) > limits.maxChunks)
    throw tooComplex(format, `${header.chunks} chunks`, "maxChunks", header.chunks!, limits.maxChunks);
  if (format === "jpeg") {
    const scans = countJpegScans(bytes, limits.maxScans);
    if (scans > limits.maxScans)
      throw tooComplex(format, `more than ${limits.maxScans} scans`, "maxScans", scans, limits.maxScans);
  }
  // What the codec allocates for: a WebP's bitstream may be larger than its canvas or frame header
  // claims (refused as undecodable in readHeader when they disagree; the larger one counts here).
  const width = Math.max(header.width, header.bitstreamWidth ?? 0);
  const height = Math.max(header.height, header.bitstreamHeight ?? 0);
  if (width < 1 || height < 1) {
    throw new AppError(
      "image-too-small",
      422,
      `The ${FORMAT_NAMES[format]} header declares ${width}x${height} pixels; an image needs at least 1x1.`,
      { width, height },
    );
  }
  const over =
    width > limits.maxWidth
      ? `width ${width} exceeds the limit of ${limits.maxWidth}`
      : height > limits.maxHeight
        ? `height ${height} exceeds the limit of ${limits.maxHeight}`
        : width * height > limits.maxPixels
          ? `${width}x${height} = ${width * height} pixels exceeds the limit of ${limits.maxPixels}`
          : null;
  if (over) {
    throw new AppError(
      "image-too-large",
      413,
      `The image is too large: ${over}. Downscale it before sending.`,
      {
        limit: "pixels",
        width,
        height,
        maxWidth: limits.maxWidth,
        maxHeight: limits.maxHeight,
        maxPixels: limits.maxPixels,
      },
    );
  }
  const costInput = {
    ...header,
    width,
    height,
    encodedBytes: bytes.length,
    rotated: effectiveOrientation(header.exif, header.xmp) > 1,
    retainedWasmBytes:
      format === "jpeg" || format === "webp" || format === "avif" ? retainedCodecBytes(format) : 0,
  };
  let cost = estimateDecodeBytes(costInput);
  if (format === "jpeg" && header.components !== 4 && cost > limits.maxDecodeBytes) {
    // A JPEG over the wasm budget (progressive ones above all): the TypeScript decoder needs less memory.
    const ts = estimateDecodeBytes({ ...costInput, decoder: "ts" });
    if (ts < cost) {
      cost = ts;
      header.decoder = "ts";
    }
  }
  if (format === "jpeg" && header.components === 4) header.decoder = "ts";
  if (cost > limits.maxDecodeBytes) {
    const hint =
      format === "jpeg" && header.progressive
        ? " Progressive JPEGs cost the most; a baseline JPEG or a downscaled image will fit."
        : " Downscale it before sending.";
    throw new AppError(
      "image-too-large",
      413,
      `Decoding this ${width}x${height} ${FORMAT_NAMES[format]} would need about ${Math.round(cost / 1e6)} MB; the limit is ${Math.round(limits.maxDecodeBytes / 1e6)} MB.${hint}`,
      { limit: "maxDecodeBytes", estimate: cost, max: limits.maxDecodeBytes, width, height },
    );
  }
  return header;
}

/**
 * Decodes an image to upright RGB.
 *
 * @throws AppError with codes empty-body (400), image-too-large (413), unsupported-format (415),
 *   undecodable-image (400), image-too-small (422), decode-timeout (503),
 *   codec-unavailable (500, a deployment error: the codec's wasm was not passed to initCodecs).
 * @example
 * await initNodeCodecs(); // or initCodecs({ jpeg, png, webp, avif }) in a Worker
 * const img = await decodeImage(bytes, { exifTranspose: true });
 */
export async function decodeImage(bytes: Uint8Array, opts: DecodeOptions = {}): Promise<RgbImage> {
  const limits = resolveLimits(opts.limits);
  const started = performance.now();
  const header = inspectImage(bytes, limits);
  const { format } = header;
  const deadline = started + limits.maxDecodeMs;

  let img: RgbImage;
  // A TypeScript decode needs its memory in JavaScript: no large codec heap stays alive beside it.
  if (format === "gif" || format === "png" || (format === "jpeg" && header.decoder === "ts"))
    releaseLargeCodecs();
  if (format === "gif") {
    img = { ...decodeGifFirstFrame(bytes, deadline), format };
  } else if (format === "jpeg" && header.decoder === "ts") {
    img = { ...decodeJpegTs(bytes, deadline), format };
    if (img.width !== header.width || img.height !== header.height)
      throw undecodable(format, "inconsistent frame size");
  } else if (format === "webp" && header.animated) {
    img = await decodeAnimatedWebp(bytes, header);
  } else if (format === "png") {
    img = { ...(await decodePng(bytes, deadline)), format };
  } else {
    if (!hasCodec(format)) throw codecUnavailable(format);
    if (format === "jpeg" && !jpegHasEnd(bytes))
      throw undecodable(format, "the file is truncated: no end-of-image marker");
    let raster: RgbaRaster | null;
    try {
      raster = await runCodec(format, bytes);
    } catch (e) {
      if (isAppError(e)) throw e;
      throw undecodable(format, describe(e));
    }
    if (!raster) throw undecodable(format, "the decoder rejected the data");
    if (raster.width !== header.width || raster.height !== header.height) {
      throw undecodable(
        format,
        `decoded ${raster.width}x${raster.height} but the header says ${header.width}x${header.height}`,
      );
    }
    img = { width: raster.width, height: raster.height, data: rgbaToRgb(raster), format };
  }
  checkTime(started, limits.maxDecodeMs, format);
  if (opts.exifTranspose !== false && (header.exif || header.xmp)) {
    img = applyOrientation(img, effectiveOrientation(header.exif, header.xmp));
    checkTime(started, limits.maxDecodeMs, format);
  }
  return img;
}

/** First frame of an animated WebP on its canvas, as Pillow's WebPAnimDecoder gives it. */
async function decodeAnimatedWebp(bytes: Uint8Array, header: ImageHeader): Promise<RgbImage> {
  if (!hasCodec("webp")) throw codecUnavailable("webp");
  const frame = firstAnimationFrame(bytes);
  let raster: RgbaRaster | null;
  try {
    raster = await decodeWebpRgba(frame.still);
  } catch (e) {
    throw undecodable("webp", describe(e));
  }
  if (!raster || raster.width !== frame.width || raster.height !== frame.height) {
    throw undecodable("webp", "the first animation frame could not be decoded");
  }
  const data = composeFirstFrame(header.width, header.height, frame, raster.data);
  return { width: header.width, height: header.height, data, format: "webp" };
}

/** 422 image-too-complex: a structural count over its limit (work grows with it, not with pixels). */
function tooComplex(
  format: SupportedFormat,
  what: string,
  limit: string,
  value: number,
  max: number,
): AppError {
  return new AppError(
    "image-too-complex",
    422,
    `The ${FORMAT_NAMES[format]} file has ${what}; the limit is ${max}. Re-save it with a common encoder (its defaults stay far below this).`,
    { limit, value, max },
  );
}

/** JPEG codings the decoders cannot handle are unsupported formats (415), refused before decoding. */
function checkJpegCoding(h: ImageHeader): void {
  const sof = h.sof ?? 0xc0;
  const why =
    h.precision !== undefined && h.precision !== 8
      ? `${h.precision}-bit samples`
      : [0xc3, 0xc7, 0xcb, 0xcf].includes(sof)
        ? "lossless coding"
        : [0xc5, 0xc6, 0xc7, 0xcd, 0xce, 0xcf].includes(sof)
          ? "hierarchical coding"
          : null;
  if (why)
    throw new AppError(
      "unsupported-format",
      415,
      `Detected a JPEG with ${why}, which this server cannot decode; convert it to an 8-bit baseline JPEG or PNG and resend.`,
      { detected: "jpeg" },
    );
}

function codecUnavailable(format: SupportedFormat): AppError {
  return new AppError(
    "codec-unavailable",
    500,
    `The ${FORMAT_NAMES[format]} decoder was not initialised on this server; pass its wasm module to initCodecs().`,
  );
}

function checkTime(started: number, maxMs: number, format: SupportedFormat): void {
  if (performance.now() - started > maxMs) {
    throw new AppError(
      "decode-timeout",
      503,
      `Decoding the ${FORMAT_NAMES[format]} image took longer than ${maxMs} ms; send a smaller image or retry later.`,
    );
  }
}

function describe(e: unknown): string {
  if (e instanceof WebAssembly.RuntimeError) return `decoder trapped: ${e.message}`;
  if (e && typeof e === "object" && "name" in e && (e as { name: string }).name === "ExitStatus")
    return "decoder error";
  if (e instanceof Error) return e.message;
  return String(e);
}

async function runCodec(format: "jpeg" | "webp" | "avif", bytes: Uint8Array): Promise<RgbaRaster | null> {
  switch (format) {
    case "jpeg":
      return decodeJpegRgba(bytes);
    case "webp":
      return decodeWebpRgba(bytes);
    case "avif":
      return decodeAvifRgba(bytes);
  }
}

/** RGBA to packed RGB, compacted in place so the codec's output buffer is reused. */
function rgbaToRgb(r: RgbaRaster): Uint8Array {
  const n = r.width * r.height;
  const src = r.data;
  if (src.length < n * 4)
    throw new AppError("undecodable-image", 400, "The decoder returned too few pixels.");
  const u8 = new Uint8Array(src.buffer, src.byteOffset, n * 4);
  for (let i = 0, o = 0, s = 0; i < n; i++, o += 3, s += 4) {
    u8[o] = u8[s];
    u8[o + 1] = u8[s + 1];
    u8[o + 2] = u8[s + 2];
  }
  return u8.subarray(0, n * 3);
}

/** True when an end-of-image marker follows the first start-of-scan (entropy data never holds FF D9). */
function jpegHasEnd(b: Uint8Array): boolean {
  let at = 2;
  while (at + 4 <= b.length) {
    if (b[at] !== 0xff) return false;
    const marker = b[at + 1];
    if (marker === 0xff || marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) {
      at += marker === 0xff ? 1 : 2;
      continue;
    }
    if (marker === 0xd9) return false;
    const len = (b[at + 2] << 8) | b[at + 3];
    if (marker === 0xda) {
      for (let i = at + 2 + len; i + 1 < b.length; i++) if (b[i] === 0xff && b[i + 1] === 0xd9) return true;
      return false;
    }
    at += 2 + len;
  }
  return false;
}
